"""training.from_onnx: an exported fp32 network rebuilt as a trainable Keras model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import LABELS

pytest.importorskip("tf2onnx")
keras = pytest.importorskip("keras")

from export.onnx import export  # noqa: E402
from fer_onnx.preprocessing import InputSpec  # noqa: E402
from training.errors import PipelineError  # noqa: E402
from training.from_onnx import main, read_onnx, rebuild  # noqa: E402
from training.model import build_model, load_model, with_tta  # noqa: E402


def write_csv(path: Path, rng: np.random.Generator, counts: dict[str, int]) -> Path:
    lines = ["emotion,pixels,Usage"]
    for usage, n in counts.items():
        for i in range(n):
            pixels = " ".join(str(v) for v in rng.integers(0, 256, 48 * 48))
            lines.append(f"{i % len(LABELS)},{pixels},{usage}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, keras.Model]:
    """A small MobileNetV2 with non-trivial BatchNorm, exported with flip views, and its data."""
    keras.utils.set_random_seed(1)
    rng = np.random.default_rng(1)
    model, _ = build_model(
        spec=InputSpec(48, 48, "gray"),
        num_classes=len(LABELS),
        arch="mobilenetv2",
        alpha=0.35,
        image_size=32,
    )
    for layer in model.get_layer("mobilenetv2_0.35_32").layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 1.5, c).astype(np.float32))
            layer.beta.assign(rng.normal(0, 0.2, c).astype(np.float32))
            layer.moving_mean.assign(rng.normal(0, 0.5, c).astype(np.float32))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, c).astype(np.float32))
    dense = model.get_layer("probabilities")
    dense.bias.assign(rng.normal(0, 0.3, dense.bias.shape[0]).astype(np.float32))
    run = tmp_path_factory.mktemp("run")
    (run / "metrics.json").write_text(json.dumps({"labels": list(LABELS), "splits": {}}))
    (run / "config.json").write_text(
        json.dumps(
            {
                "args": {
                    "data": "x/fer2013.csv",
                    "arch": "mobilenetv2",
                    "alpha": 0.35,
                    "image_size": 32,
                    "weights": "none",
                },
                "command": "python -m training.train --tiny",
            }
        )
    )
    with_tta(model, "flip").save(run / "tta.keras")
    onnx_path = run / "fp32.onnx"
    export(run / "tta.keras", onnx_path, run_dir=run, extra={"tta": "flip"})
    data = write_csv(run / "faces.csv", rng, {"Training": 64, "PublicTest": 32, "PrivateTest": 8})
    return onnx_path, data, model


def test_rebuild_reproduces_the_network(
    source: tuple[Path, Path, keras.Model], tmp_path: Path
) -> None:
    onnx_path, data, original = source
    record = rebuild(onnx_path, data, tmp_path / "rebuilt")
    assert record["check"]["views"] == "flip"
    assert record["check"]["faces"] == 32
    assert record["check"]["agree"] == 32
    assert record["check"]["max_probability_gap"] < 1e-4
    assert json.loads((tmp_path / "rebuilt" / "from_onnx.json").read_text()) == record

    rebuilt = load_model(tmp_path / "rebuilt" / "best.keras")
    faces = np.random.default_rng(2).integers(0, 256, (16, 48, 48, 1)).astype(np.float32)
    ours = np.asarray(rebuilt.predict(faces, verbose=0))
    theirs = np.asarray(original.predict(faces, verbose=0))
    np.testing.assert_allclose(ours, theirs, atol=1e-4)
    # The moving statistics are the data's, not the identity the rebuild starts from, so
    # training mode (batch statistics) starts close to the inference function.
    bns = [
        layer
        for layer in rebuilt.get_layer("mobilenetv2_0.35_32").layers
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    assert all(np.abs(np.asarray(bn.moving_mean)).max() > 0 for bn in bns)
    # ... and they are the statistics of each layer's input over the Training faces: checked
    # on the first layer, whose input is the convolution of the faces themselves.
    from training.data import load

    train = load(data)["Training"].images.astype(np.float32)
    backbone = rebuilt.get_layer("mobilenetv2_0.35_32")
    front = keras.Model(rebuilt.input, rebuilt.get_layer("normalize").output)
    conv = keras.Model(backbone.input, backbone.get_layer("Conv1").output)
    z = np.asarray(conv(front(train)), np.float64).reshape(-1, bns[0].moving_mean.shape[0])
    np.testing.assert_allclose(bns[0].moving_mean, z.mean(0), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(bns[0].moving_variance, z.var(0), rtol=1e-3, atol=1e-4)
    train_mode = np.asarray(rebuilt(train[:32], training=True))
    inference = np.asarray(rebuilt(train[:32], training=False))
    assert np.abs(train_mode - inference).max() < 0.5


def test_a_rebuild_that_does_not_reproduce_the_file_writes_nothing(
    source: tuple[Path, Path, keras.Model], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    onnx_path, data, _ = source
    monkeypatch.setattr("training.from_onnx.MAX_PROBABILITY_GAP", -1.0)
    with pytest.raises(PipelineError, match="differs from"):
        rebuild(onnx_path, data, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".*partial"))


def test_refuses_a_folder_with_files(
    source: tuple[Path, Path, keras.Model], tmp_path: Path
) -> None:
    onnx_path, data, _ = source
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(PipelineError, match="already holds files"):
        rebuild(onnx_path, data, tmp_path)
    with pytest.raises(PipelineError, match="already holds files"):
        rebuild(onnx_path, data, tmp_path / "keep.txt")
    assert (tmp_path / "keep.txt").read_text() == "mine"
    with pytest.raises(PipelineError, match="--stat-faces must be at least 1"):
        rebuild(onnx_path, data, tmp_path / "new", stat_faces=0)
    assert not (tmp_path / "new").exists()


def test_refuses_a_file_it_cannot_rebuild(
    source: tuple[Path, Path, keras.Model], tiny_model: Path, tmp_path: Path
) -> None:
    _, data, _ = source
    # The conftest model is one dense layer with no record of how it was built.
    with pytest.raises(PipelineError, match="lacks architecture"):
        rebuild(tiny_model, data, tmp_path / "a")
    not_onnx = tmp_path / "x.onnx"
    not_onnx.write_bytes(b"not a model")
    with pytest.raises(PipelineError, match="cannot read it as ONNX"):
        read_onnx(not_onnx)
    assert not (tmp_path / "a").exists()


def test_refuses_data_of_another_format(
    source: tuple[Path, Path, keras.Model], tmp_path: Path
) -> None:
    onnx_path, _, _ = source
    other = tmp_path / "other.csv"
    other.write_text("emotion,pixels,Usage\n0," + " ".join(["0"] * 36 * 36) + ",Training\n")
    code = main(["--onnx", str(onnx_path), "--data", str(other), "--out", str(tmp_path / "o")])
    assert code == 2
    assert not (tmp_path / "o").exists()
