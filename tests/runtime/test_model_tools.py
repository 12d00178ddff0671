"""fer-onnx model inspect / stamp: foreign classifiers (built with onnx.helper) made usable."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import LABELS, MEDIA, YUNET, shared_file

from fer_onnx import EmotionRecognizer
from fer_onnx.cli import main as cli_main
from fer_onnx.cli.model import add_model_parser
from fer_onnx.errors import InvalidOptionError, ModelLoadError, ModelOutputError, OutputError
from fer_onnx.metadata import KEY_COLOR, KEY_INPUT_SIZE, KEY_LABELS, KEY_OUTPUT, KEY_VALUE_RANGE
from fer_onnx.model_tools import KEY_STAMP, inspect_model, stamp_model
from fer_onnx.recognizer import bundled_model_path
from fer_onnx.yunet import bundled_yunet_path

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def foreign_classifier(
    path: Path,
    *,
    channels: int = 1,
    size: int = 48,
    classes: int = 7,
    softmax: bool = False,
    batch: int | str = "N",
    seed: int = 0,
) -> tuple[Path, np.ndarray, np.ndarray]:
    """An NCHW linear classifier as another framework would export it: no fer-onnx metadata.

    Returns the file and its weights (features x classes) and bias, for reference outputs.
    """
    features = channels * size * size
    rng = np.random.default_rng(seed)
    weight = rng.normal(0, 3 / np.sqrt(features), (features, classes)).astype(np.float32)
    bias = rng.normal(0, 0.5, classes).astype(np.float32)
    nodes = [
        helper.make_node("Flatten", ["input"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "W"], ["mm"]),
        helper.make_node("Add", ["mm", "B"], ["logits"]),
    ]
    output = "logits"
    if softmax:
        nodes.append(helper.make_node("Softmax", ["logits"], ["probs"], axis=1))
        output = "probs"
    graph = helper.make_graph(
        nodes,
        "torch_jit",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, channels, size, size])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, [batch, classes])],
        initializer=[numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "B")],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="pytorch"
    )
    model.ir_version = 8
    helper.set_model_props(model, {"author": "someone else"})
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path, weight, bias


def softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def stamp_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="fer-onnx")
    add_model_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["model", *argv])
    code: int = args.func(args)
    return code


def test_inspect_bundled_classifier_and_detector() -> None:
    report = inspect_model(bundled_model_path("default"))
    assert report.kind == "classifier"
    assert report.usable
    assert report.missing == ()
    assert report.layout == "NHWC"
    assert report.info is not None
    assert report.info.labels == LABELS
    assert report.info.template is not None
    text = report.format()
    assert "usable by EmotionRecognizer: yes" in text
    assert "fer_onnx.labels" in text

    detector = inspect_model(bundled_yunet_path())
    assert detector.kind == "detector"
    assert not detector.usable
    assert "YuNet" in detector.format()


def test_inspect_foreign_model_says_what_is_missing(tmp_path: Path) -> None:
    path, _, _ = foreign_classifier(tmp_path / "foreign.onnx")
    report = inspect_model(path)
    assert report.kind == "classifier"
    assert not report.usable
    assert report.missing == (KEY_LABELS, KEY_INPUT_SIZE, KEY_COLOR, KEY_VALUE_RANGE)
    assert report.metadata == {"author": "someone else"}
    assert report.inputs[0].shape == ("N", 1, 48, 48)
    assert "--input-size 48 48" in report.suggestions
    assert "--color gray" in report.suggestions
    text = report.format()
    assert "missing: fer_onnx.labels (fer-onnx model stamp --labels ...)" in text
    assert "usable by EmotionRecognizer: no" in text
    data = report.to_dict()
    assert data["usable"] is False
    assert data["fer_onnx"] is None
    json.dumps(data)
    with pytest.raises(ModelLoadError, match="lacks the metadata"):
        EmotionRecognizer(path, detector=None, device="cpu")


def test_inspect_rejects_a_file_onnxruntime_cannot_load(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(ModelLoadError, match="cannot load ONNX model"):
        inspect_model(bad)
    with pytest.raises(ModelLoadError, match="not found"):
        inspect_model(tmp_path / "missing.onnx")


def test_stamped_logits_model_gives_softmax_of_its_logits(tmp_path: Path) -> None:
    path, weight, bias = foreign_classifier(tmp_path / "foreign.onnx")
    out = tmp_path / "stamped.onnx"
    report = stamp_model(
        path,
        out,
        labels=LABELS,
        input_size=(48, 48),
        color="gray",
        value_range=(0.0, 1.0),
        softmax=True,
    )
    assert report.usable, report.problems
    assert report.layout == "NCHW"
    assert report.metadata[KEY_OUTPUT] == "logits"
    assert report.metadata["author"] == "someone else"  # other metadata kept
    assert json.loads(report.metadata[KEY_STAMP])["source"] == "foreign.onnx"

    rng = np.random.default_rng(1)
    crops = rng.integers(0, 256, (5, 48, 48), dtype=np.uint8)
    reference = softmax((crops.reshape(5, -1) / 255.0) @ weight + bias)
    with EmotionRecognizer(out, detector=None, device="cpu") as rec:
        assert rec.labels == LABELS
        probs = rec.predict(list(crops))
        emotions = rec.classify(list(crops))
    np.testing.assert_allclose(probs, reference, atol=1e-5)
    assert [e.label for e in emotions] == [LABELS[i] for i in reference.argmax(axis=1)]


def test_stamp_refuses_logits_without_softmax_and_probabilities_with_it(tmp_path: Path) -> None:
    logits, _, _ = foreign_classifier(tmp_path / "logits.onnx")
    probs, _, _ = foreign_classifier(tmp_path / "probs.onnx", softmax=True)
    out = tmp_path / "out.onnx"
    options = {"labels": LABELS, "input_size": (48, 48), "color": "gray", "value_range": (0, 1)}
    with pytest.raises(ModelOutputError, match="--softmax"):
        stamp_model(logits, out, **options)  # type: ignore[arg-type]
    assert not out.exists()
    with pytest.raises(ModelOutputError, match="without --softmax"):
        stamp_model(probs, out, softmax=True, **options)  # type: ignore[arg-type]
    assert not out.exists()
    assert not list(tmp_path.glob(".fer-onnx-*"))  # no temporary file left behind
    stamp_model(probs, out, **options)  # type: ignore[arg-type]
    assert inspect_model(out).usable


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"labels": LABELS[:5]}, InvalidOptionError, "7 classes but 5 labels"),
        ({"labels": ("a", "a", "b", "c", "d", "e", "f")}, InvalidOptionError, "distinct"),
        ({"input_size": (64, 64)}, ModelLoadError, "fits neither NHWC nor NCHW"),
        ({"color": "rgb"}, ModelLoadError, "fits neither NHWC nor NCHW"),
        ({"color": "hsv"}, InvalidOptionError, "color must be one of"),
        # The colour is checked before the size: the first bad option is the one reported.
        ({"color": "hsv", "input_size": "big"}, InvalidOptionError, "color must be one of"),
        ({"value_range": (1.0, 0.0)}, InvalidOptionError, "low < high"),
        ({"mean": [0.5]}, InvalidOptionError, "mean and std together"),
        ({"mean": [0.5, 0.5], "std": [0.5, 0.5]}, InvalidOptionError, "needs one finite value"),
        ({"mean": [0.5], "std": [0.0]}, InvalidOptionError, "std must be > 0"),
    ],
)
def test_stamp_rejects_options_that_do_not_fit(
    tmp_path: Path, change: dict[str, object], error: type[Exception], match: str
) -> None:
    path, _, _ = foreign_classifier(tmp_path / "foreign.onnx")
    options: dict[str, object] = {
        "labels": LABELS,
        "input_size": (48, 48),
        "color": "gray",
        "value_range": (0.0, 1.0),
        "softmax": True,
        **change,
    }
    with pytest.raises(error, match=match):
        stamp_model(path, tmp_path / "out.onnx", **options)  # type: ignore[arg-type]
    assert not (tmp_path / "out.onnx").exists()


def test_stamp_rejects_models_the_runtime_cannot_feed(tmp_path: Path) -> None:
    fixed, _, _ = foreign_classifier(tmp_path / "fixed.onnx", batch=1)
    options = {"labels": LABELS, "input_size": (48, 48), "color": "gray", "value_range": (0, 1)}
    with pytest.raises(ModelLoadError, match="batch dimension is fixed at 1"):
        stamp_model(fixed, tmp_path / "out.onnx", softmax=True, **options)  # type: ignore[arg-type]
    with pytest.raises(ModelLoadError, match="YuNet face detector"):
        stamp_model(bundled_yunet_path(), tmp_path / "out.onnx", **options)  # type: ignore[arg-type]
    with pytest.raises(OutputError, match="it is the input"):
        stamp_model(fixed, fixed, softmax=True, **options)  # type: ignore[arg-type]


def test_stamp_rgb_model_with_per_channel_normalisation(tmp_path: Path) -> None:
    path, weight, bias = foreign_classifier(tmp_path / "rgb.onnx", channels=3, size=32)
    out = tmp_path / "stamped.onnx"
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]  # torchvision's ImageNet values
    report = stamp_model(
        path,
        out,
        labels=LABELS,
        input_size=(32, 32),
        color="rgb",
        value_range=(0.0, 1.0),
        softmax=True,
        mean=mean,
        std=std,
    )
    assert report.usable, report.problems
    assert json.loads(report.metadata[KEY_STAMP])["mean"] == pytest.approx(mean)
    rng = np.random.default_rng(2)
    bgr = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    rgb = bgr[..., ::-1] / 255.0
    normalised = (rgb - np.array(mean)) / np.array(std)
    chw = normalised.transpose(0, 3, 1, 2).reshape(3, -1)  # the model's NCHW flattening
    reference = softmax(chw @ weight + bias)
    with EmotionRecognizer(out, detector=None, device="cpu") as rec:
        probs = rec.predict(list(bgr))
    np.testing.assert_allclose(probs, reference, atol=1e-5)
    with pytest.raises(InvalidOptionError, match=r"stamp the original file 'rgb\.onnx'"):
        stamp_model(
            out,
            tmp_path / "twice.onnx",
            labels=LABELS,
            input_size=(32, 32),
            color="rgb",
            value_range=(0.0, 1.0),
            softmax=True,
            mean=mean,
            std=std,
        )


def test_stamp_copies_a_crop_template(tmp_path: Path) -> None:
    path, _, _ = foreign_classifier(tmp_path / "foreign.onnx")
    out = tmp_path / "stamped.onnx"
    report = stamp_model(
        path,
        out,
        labels=LABELS,
        input_size=(48, 48),
        color="gray",
        value_range=(0.0, 255.0),
        softmax=True,
        crop_template="default",
    )
    bundled = inspect_model(bundled_model_path("default")).info
    assert report.info is not None
    assert bundled is not None
    assert report.info.template == bundled.template
    with pytest.raises(InvalidOptionError, match="no crop template"):
        stamp_model(
            path,
            tmp_path / "other.onnx",
            labels=LABELS,
            input_size=(48, 48),
            color="gray",
            value_range=(0.0, 255.0),
            softmax=True,
            crop_template=path,
        )


def test_cli_inspect_and_stamp(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, _, _ = foreign_classifier(tmp_path / "foreign.onnx")
    assert stamp_cli("inspect", str(path)) == 1
    assert "missing: fer_onnx.labels" in capsys.readouterr().out
    out = tmp_path / "stamped.onnx"
    code = stamp_cli(
        "stamp",
        str(path),
        str(out),
        "--labels",
        ",".join(LABELS),
        "--input-size",
        "48",
        "48",
        "--color",
        "gray",
        "--value-range",
        "0",
        "1",
        "--softmax",
        "--crop-template-from",
        "default",
    )
    assert code == 0
    assert "usable by EmotionRecognizer: yes" in capsys.readouterr().out
    assert stamp_cli("inspect", str(out), "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["fer_onnx"]["labels"] == list(LABELS)
    assert data["fer_onnx"]["output"] == "logits"
    assert data["fer_onnx"]["layout"] == "NCHW"
    assert stamp_cli("inspect", str(YUNET if YUNET.exists() else bundled_yunet_path())) == 0


def test_stamped_model_recognizes_photos_through_api_and_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = shared_file(MEDIA / "two_people.jpg")
    path, _, _ = foreign_classifier(tmp_path / "foreign.onnx")
    out = tmp_path / "stamped.onnx"
    stamp_model(
        path,
        out,
        labels=LABELS,
        input_size=(48, 48),
        color="gray",
        value_range=(0.0, 1.0),
        softmax=True,
        crop_template="default",
    )
    with EmotionRecognizer(out, device="cpu") as rec:
        faces = rec.recognize(photo)
    assert len(faces) == 2
    for face in faces:
        assert sum(face.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert cli_main(["image", str(photo), "--model", str(out), "--json", "--device", "cpu"]) == 0
    (printed,) = json.loads(capsys.readouterr().out)
    assert [f["label"] for f in printed["faces"]] == [f.label for f in faces]
    for row, face in zip(printed["faces"], faces, strict=True):
        assert row["probabilities"] == pytest.approx(face.probabilities, abs=1e-6)


def test_stamp_nhwc_model_replaces_earlier_fer_onnx_keys(tiny_model: Path, tmp_path: Path) -> None:
    """A TensorFlow-style NHWC model that outputs probabilities, stamped again with new labels."""
    labels = ("a", "b", "c", "d", "e", "f", "g")
    out = tmp_path / "restamped.onnx"
    report = stamp_model(
        tiny_model, out, labels=labels, input_size=(48, 48), color="gray", value_range=(0, 255)
    )
    assert report.usable, report.problems
    assert report.layout == "NHWC"
    assert report.info is not None
    assert report.info.labels == labels
    assert report.metadata[KEY_OUTPUT] == "probabilities"
    crops = np.random.default_rng(3).integers(0, 256, (2, 48, 48), dtype=np.uint8)
    with (
        EmotionRecognizer(tiny_model, detector=None, device="cpu") as before,
        EmotionRecognizer(out, detector=None, device="cpu") as after,
    ):
        np.testing.assert_array_equal(before.predict(list(crops)), after.predict(list(crops)))
        assert after.labels == labels
