"""Model building: single networks and side-by-side ensembles (``--members``), and their export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import LABELS

keras = pytest.importorskip("keras")
pytest.importorskip("tensorflow")

from fer_onnx.preprocessing import InputSpec  # noqa: E402
from fer_onnx_factory.model.build import (  # noqa: E402
    OUTPUT_NAME,
    TTA_CHOICES,
    TTA_VIEWS,
    TTAViews,
    build_model,
    inference_model,
    member_count,
)

SPEC = InputSpec(48, 48, "gray")
SMALL = {"arch": "mobilenet", "alpha": 0.25, "image_size": 32, "weights": "none"}


def faces(n: int = 16) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (n, 48, 48, 1)).astype(np.float32)


def test_single_model_has_one_probabilities_output() -> None:
    model, bases = build_model(spec=SPEC, num_classes=len(LABELS), **SMALL)
    assert len(bases) == 1
    assert member_count(model) == 1
    assert model.output_names == [OUTPUT_NAME]
    assert inference_model(model) is model


def test_ensemble_members_are_independent_and_averaged() -> None:
    keras.utils.set_random_seed(0)
    model, bases = build_model(spec=SPEC, num_classes=len(LABELS), members=3, **SMALL)
    assert member_count(model) == 3
    assert len(bases) == 3
    assert len({b.name for b in bases}) == 3
    assert model.output_names == ["member_0", "member_1", "member_2"]
    # Independently initialised: the members' first kernels differ.
    first = [b.trainable_weights[0].numpy() for b in bases]
    assert not np.allclose(first[0], first[1])
    assert not np.allclose(first[1], first[2])
    # An untrained backbone can output ~constant features; distinct head biases make the
    # members' probabilities differ so that the average below is a real check.
    rng = np.random.default_rng(0)
    for i in range(3):
        layer = model.get_layer(f"member_{i}")
        layer.bias.assign(rng.normal(size=len(LABELS)).astype(np.float32))
    x = faces()
    members = [np.asarray(p) for p in model.predict(x, verbose=0)]
    assert not np.allclose(members[0], members[1], atol=1e-3)
    mean = inference_model(model)
    assert mean.output_names == [OUTPUT_NAME]
    probs = np.asarray(mean.predict(x, verbose=0))
    np.testing.assert_allclose(probs, np.mean(members, axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_members_must_be_positive() -> None:
    with pytest.raises(ValueError, match="members must be >= 1"):
        build_model(spec=SPEC, num_classes=len(LABELS), members=0, **SMALL)


def test_ensemble_exports_to_one_onnx_output(tmp_path: Path) -> None:
    pytest.importorskip("tf2onnx")
    from fer_onnx import EmotionRecognizer
    from fer_onnx_factory.export.onnx import export
    from fer_onnx_factory.export.parity import keras_onnx_parity

    keras.utils.set_random_seed(0)
    model, _ = build_model(spec=SPEC, num_classes=len(LABELS), members=2, **SMALL)
    path = tmp_path / "best.keras"
    inference_model(model).save(path)
    onnx_path = tmp_path / "ens.onnx"
    export(path, onnx_path, labels=LABELS, run_dir=tmp_path)
    parity = keras_onnx_parity(path, onnx_path, faces(32).astype(np.uint8))
    assert parity["passed"], parity
    with EmotionRecognizer(onnx_path, detector=None) as rec:
        assert rec.labels == LABELS
        assert rec.predict(list(faces(4).astype(np.uint8))).shape == (4, len(LABELS))


def position_sensitive_model() -> keras.Model:
    """Tiny classifier whose output depends on every pixel's position (flips/zooms change it)."""
    keras.utils.set_random_seed(3)
    inputs = keras.Input((48, 48, 1), name="faces")
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(len(LABELS), activation="softmax", name=OUTPUT_NAME)(x)
    return keras.Model(inputs, outputs)


def zoom_view(x: np.ndarray) -> np.ndarray:
    """The flip+zoom centre view computed independently with OpenCV (half-pixel bilinear)."""
    import cv2

    from fer_onnx_factory.model.build import ZOOM_CROP

    c = ZOOM_CROP
    return np.stack(
        [cv2.resize(f[c:-c, c:-c, 0], (48, 48), interpolation=cv2.INTER_LINEAR) for f in x]
    )[..., None]


def test_tta_views_average_the_documented_views() -> None:
    from fer_onnx_factory.model.build import with_tta

    model = position_sensitive_model()
    x = faces(8)
    assert with_tta(model, "none") is model

    def p(a: np.ndarray) -> np.ndarray:
        return np.asarray(model.predict(a, verbose=0))

    plain, mirrored = p(x), p(x[:, :, ::-1])
    zoomed = zoom_view(x)
    assert not np.allclose(plain, mirrored, atol=1e-3)
    assert not np.allclose(plain, p(zoomed), atol=1e-3)
    views = {
        "face": plain,
        "mirror": mirrored,
        "zoom": p(zoomed),
        "zoom-mirror": p(zoomed[:, :, ::-1]),
    }
    for choice, names in TTA_VIEWS.items():
        got = np.asarray(with_tta(model, choice).predict(x, verbose=0))
        expected = np.mean([views[n] for n in names], axis=0)
        np.testing.assert_allclose(got, expected, rtol=1e-3, atol=2e-4, err_msg=choice)
    with pytest.raises(ValueError, match="tta must be one of"):
        with_tta(model, "rotate")
    with pytest.raises(ValueError, match="views must be"):
        TTAViews(("face", "upside-down"))


def test_auto_tta_is_the_best_on_public_test_within_the_view_budget(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from fer_onnx_factory.export.bundle import choose_tta

    model = position_sensitive_model()
    path = tmp_path / "best.keras"
    model.save(path)
    x = faces(64)
    labels = np.random.default_rng(5).integers(0, len(LABELS), 64)
    public = SimpleNamespace(images=x.astype(np.uint8), labels=labels)
    dataset = {"PublicTest": public}
    _, info = choose_tta(path, dataset, "auto", tmp_path, max_views=2)
    acc = info["PublicTest"]
    assert set(acc) == set(TTA_CHOICES)
    affordable = [c for c in TTA_CHOICES if len(TTA_VIEWS[c]) <= 2]
    assert acc[info["chosen"]] == max(acc[c] for c in affordable)
    assert info["chosen"] != "flip+zoom"
    _, everything = choose_tta(path, dataset, "auto", tmp_path, max_views=4)
    assert everything["PublicTest"][everything["chosen"]] == max(acc.values())
    chosen_path, fixed = choose_tta(path, dataset, "flip+zoom", tmp_path)
    assert fixed["chosen"] == "flip+zoom"
    assert fixed["max_views"] is None
    assert chosen_path.name == "best_tta_flip_zoom.keras"


def test_tta_model_saves_loads_and_exports(tmp_path: Path) -> None:
    pytest.importorskip("tf2onnx")
    from fer_onnx_factory.export.onnx import export
    from fer_onnx_factory.export.parity import keras_onnx_parity
    from fer_onnx_factory.model.build import with_tta

    path = tmp_path / "tta.keras"
    with_tta(position_sensitive_model(), "flip+zoom").save(path)
    # Every choice's views survive a save/load round trip.
    loaded = keras.models.load_model(path)
    x = faces(8)
    np.testing.assert_allclose(
        np.asarray(loaded.predict(x, verbose=0)),
        np.asarray(with_tta(position_sensitive_model(), "flip+zoom").predict(x, verbose=0)),
        rtol=1e-5,
        atol=1e-6,
    )
    onnx_path = tmp_path / "tta.onnx"
    export(path, onnx_path, labels=LABELS, run_dir=tmp_path)
    parity = keras_onnx_parity(path, onnx_path, faces(64).astype(np.uint8))
    assert parity["passed"], parity


def test_evaluate_and_parity_commands_load_tta_models(tmp_path: Path) -> None:
    """Fresh processes (custom layers not yet registered) read a TTA-wrapped model."""
    import os
    import subprocess
    import sys

    from conftest import ROOT
    from test_training_data import good_rows, write_csv

    from fer_onnx_factory.model.build import with_tta

    data = write_csv(tmp_path / "fer.csv", good_rows())
    model = tmp_path / "tta.keras"
    with_tta(position_sensitive_model(), "zoomflip").save(model)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    cmd = [
        sys.executable,
        "-m",
        "fer_onnx_factory",
        "evaluate",
        "--model",
        str(model),
        "--data",
        str(data),
    ]
    result = subprocess.run(
        [*cmd, "--out", str(tmp_path / "eval")], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "PrivateTest: accuracy" in result.stdout
    assert (tmp_path / "eval" / "metrics.json").is_file()
    junk = tmp_path / "junk.keras"
    junk.write_bytes(b"not a model")
    bad = subprocess.run(
        [*cmd[:-4], "--model", str(junk), "--data", str(data)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2
    assert "cannot load" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_init_copies_a_trained_models_weights_and_refuses_another_network(
    tmp_path: Path,
) -> None:
    from fer_onnx_factory.errors import PipelineError
    from fer_onnx_factory.train.run import _initialise

    source, _ = build_model(spec=SPEC, num_classes=len(LABELS), **SMALL)
    source.set_weights([w + 0.5 for w in source.get_weights()])  # unlike any fresh network
    source.save(tmp_path / "trained.keras")
    # the same network at another working resolution: convolution weights do not depend on it
    target, _ = build_model(spec=SPEC, num_classes=len(LABELS), **{**SMALL, "image_size": 48})
    assert not np.allclose(target.get_weights()[0], source.get_weights()[0])
    _initialise(target, tmp_path / "trained.keras")
    for theirs, ours in zip(source.get_weights(), target.get_weights(), strict=True):
        np.testing.assert_array_equal(theirs, ours)
    wider, _ = build_model(spec=SPEC, num_classes=len(LABELS), **{**SMALL, "alpha": 0.5})
    with pytest.raises(PipelineError, match="same --arch, --alpha"):
        _initialise(wider, tmp_path / "trained.keras")
    with pytest.raises(PipelineError, match="--init"):
        _initialise(wider, tmp_path / "missing.keras")


def _pipeline_batch(
    n: int = 32, **options: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One training batch of the real tf.data pipeline, with only ``options`` augmenting."""
    from fer_onnx_factory.data.datasets import Dataset, Split
    from fer_onnx_factory.train.config import TrainConfig
    from fer_onnx_factory.train.run import _make_dataset

    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (n, 48, 48, 1)).astype(np.uint8)
    labels = np.arange(n) % len(LABELS)
    targets = np.eye(len(LABELS), dtype=np.float32)[labels]
    split = Split(images, labels.astype(np.int64), targets, np.arange(n, dtype=np.int64))
    data = Dataset({"Training": split}, LABELS, SPEC, "synthetic")
    cfg = TrainConfig(
        data=Path("x"),
        out=Path("r"),
        weights="none",
        batch_size=n,
        rotation=0,
        shift=0,
        zoom=0,
        no_flip=True,
        **options,
    )
    x, t = next(iter(_make_dataset(data, "Training", cfg, train=True)))
    return images, targets, np.asarray(x), np.asarray(t)


def test_random_erasing_changes_part_of_some_faces_only() -> None:
    images, _, x, t = _pipeline_batch(erasing=1.0)
    assert x.shape == images.shape
    assert x.min() >= 0
    assert x.max() <= 255
    # every face keeps most of its pixels: find each output face's source by its pixels
    kept = (x[:, None] == images[None].astype(np.float32)).mean(axis=(2, 3, 4))
    best = kept.max(axis=1)
    assert (best > 0.5).all(), "erasing replaced most of a face"
    assert (best < 1.0).mean() > 0.5, "erasing with probability 1 left most faces untouched"
    np.testing.assert_allclose(t.sum(axis=1), 1.0, atol=1e-6)
    _, _, plain, _ = _pipeline_batch()
    plain_kept = (plain[:, None] == images[None].astype(np.float32)).mean(axis=(2, 3, 4))
    assert (plain_kept.max(axis=1) == 1.0).all()


def test_cutmix_pastes_rectangles_and_mixes_targets_by_area() -> None:
    # one face per class, so that a face's label weight is the share of its own pixels
    images, targets, x, t = _pipeline_batch(len(LABELS), cutmix=1.0)
    np.testing.assert_allclose(t.sum(axis=1), 1.0, atol=1e-5)
    assert ((t > 0).sum(axis=1) >= 2).any(), "no face got a second class"
    # each face is made of two source faces; the larger share is its own label's weight
    share = (x[:, None] == images[None].astype(np.float32)).mean(axis=(2, 3, 4))
    own = share.argmax(axis=1)
    np.testing.assert_allclose(
        t[np.arange(len(t)), targets[own].argmax(axis=1)], share.max(axis=1), atol=0.05
    )
    from fer_onnx_factory.errors import PipelineError

    with pytest.raises(PipelineError, match="not both"):
        _pipeline_batch(cutmix=1.0, mixup=0.2)
    with pytest.raises(PipelineError, match=r"in \(0, 1\]"):
        _pipeline_batch(cutmix=2.0)
