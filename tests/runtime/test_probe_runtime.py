"""Issue 25's hostile probe of the runtime (items 1, 5, 10, 11, 12, 14) and issue 26 item 4.

One test per item, each a reproduction from the issue: it failed (or crashed) before the fix.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import LABELS, build_tiny_model

import fer_onnx
from fer_onnx import Box, Detection, EmotionRecognizer, FerOnnxError, YuNetDetector
from fer_onnx.alignment import KEY_CROP_TEMPLATE, CropTemplate, align_face, crop_to_template
from fer_onnx.cli import main as cli_main
from fer_onnx.errors import (
    DetectorError,
    InvalidImageError,
    InvalidOptionError,
    InvalidTypeError,
    ModelLoadError,
)
from fer_onnx.metadata import ModelInfo
from fer_onnx.model_tools import stamp_model
from fer_onnx.preprocessing import InputSpec

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

TEMPLATE = CropTemplate(
    ((0.32, 0.37), (0.68, 0.37), (0.5, 0.59), (0.36, 0.75), (0.64, 0.75)),
    (0.015, 0.0016, 0.97, 0.97),
)
GOOD_TEMPLATE = TEMPLATE.to_json()
IMAGE = np.random.default_rng(0).integers(0, 256, (661, 1126, 3), dtype=np.uint8)


def build_any_size_model(path: Path, metadata: dict[str, str], classes: int = len(LABELS)) -> Path:
    """A classifier whose input height, width and channels are all symbolic (any size fits).

    Softmax of (mean of the face) x weights: cheap for any metadata, so what is tested is what
    the runtime does with the metadata, not the network.
    """
    weight = np.linspace(-1.0, 1.0, classes, dtype=np.float32).reshape(1, classes) / 64
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["faces"], ["mean"], axes=[1, 2, 3], keepdims=1),
            helper.make_node("Flatten", ["mean"], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "W"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        ],
        "any_size",
        [helper.make_tensor_value_info("faces", TensorProto.FLOAT, ["N", "H", "W", "C"])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", classes])],
        initializer=[numpy_helper.from_array(weight, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    helper.set_model_props(model, metadata)
    onnx.save(model, str(path))
    return path


def good_metadata(**change: str) -> dict[str, str]:
    props = ModelInfo(LABELS, InputSpec(48, 48, "gray"), (0.0, 255.0), {}, TEMPLATE).to_metadata()
    return {**props, **change}


@pytest.fixture(scope="module")
def template_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("probe") / "template.onnx"
    return build_tiny_model(path, metadata=good_metadata())


class Returns:
    """A custom detector that returns whatever it was given."""

    def __init__(self, value: object) -> None:
        self.value = value

    def detect(self, image: np.ndarray) -> Any:
        return self.value


# -- item 1: boxes outside the image ------------------------------------------------------------


def test_item01_box_outside_the_image_is_refused_never_a_crash(template_model: Path) -> None:
    """Box(5000, 5000, 50, 50) on a 1126x661 image killed the process (SIGSEGV in
    cv2.copyMakeBorder); boxes wholly outside on the other sides got an emotion."""
    script = textwrap.dedent(
        f"""
        import numpy as np
        from fer_onnx import Box, EmotionRecognizer, FerOnnxError
        image = np.zeros((661, 1126, 3), np.uint8)
        class Far:
            def detect(self, image):
                return [Box(5000, 5000, 50, 50)]
        with EmotionRecognizer({str(template_model)!r}, detector=Far()) as rec:
            try:
                rec.recognize(image)
            except FerOnnxError as e:
                print(type(e).__name__)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(Path(fer_onnx.__file__).parents[1])}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "DetectorError"

    for box in (Box(-100, -100, 50, 50), Box(1126, 0, 5, 5), Box(0, 661, 10, 10)):
        with (
            EmotionRecognizer(template_model, detector=Returns([box])) as rec,
            pytest.raises(DetectorError, match="outside the 1126x661 image"),
        ):
            rec.recognize(IMAGE)
        with (
            EmotionRecognizer(template_model, detector=None) as rec,
            pytest.raises(InvalidOptionError, match="outside"),
        ):
            rec.cut_faces(IMAGE, [Detection(box)])
        with pytest.raises(InvalidImageError, match="outside"):
            crop_to_template(IMAGE, box, TEMPLATE)
    # partly outside: clipped, and the result's box is the part that can be seen
    with EmotionRecognizer(template_model, detector=Returns([Box(1100, -20, 100, 60)])) as rec:
        (face,) = rec.recognize(IMAGE)
    assert face.box == Box(1100, 0, 26, 40)


# -- item 5: bounded memory ---------------------------------------------------------------------


class _CountingSession:
    """Wraps an onnxruntime session and records the batch size of every run."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.batches: list[int] = []

    def run(self, names: Any, feeds: dict[str, np.ndarray]) -> Any:
        self.batches += [len(v) for v in feeds.values()]
        return self.session.run(names, feeds)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.session, name)


def test_item05_many_faces_run_in_bounded_batches(template_model: Path) -> None:
    """10,000 boxes went through one session run (4.8 GB); 100,000 ended in a raw
    onnxruntime allocation failure; classify of 6k faces kept GBs until close()."""
    image = IMAGE[:200, :200]
    boxes = [(i % 150, (i * 7) % 150, 50, 50) for i in range(700)] + [(0, 0, 200, 200)] * 300
    with EmotionRecognizer(template_model, detector=None) as rec:
        expected = rec.recognize(image, boxes=boxes[:3])
        counting = _CountingSession(rec._session)
        rec._session = counting
        tracemalloc.start()
        try:
            faces = rec.recognize(image, boxes=boxes)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert len(faces) == len(boxes)
        assert faces[:3] == expected  # chunking changes nothing in the results
        assert max(counting.batches) <= 64
        # the crops of one chunk, not of all 1000 faces (~40 MB of padded crops and batch)
        assert peak < 16 << 20, f"peak {peak / 2**20:.1f} MiB"

        counting.batches.clear()
        crops = np.zeros((500, 30, 30, 1), np.uint8)
        assert len(rec.classify(crops)) == 500
        assert rec.predict(list(crops)).shape == (500, len(LABELS))
        assert max(counting.batches) <= 64
        kept = sum(b.nbytes for b in rec._buffers.__dict__.get("by_size", {}).values())
        assert kept <= 32 << 20


# -- item 10: plausibility bounds on model metadata ---------------------------------------------


BAD_METADATA = {
    "template box 1e-3 wide": {
        KEY_CROP_TEMPLATE: json.dumps({"landmarks": TEMPLATE.landmarks, "box": [0, 0, 1e-3, 1]})
    },
    "template box offset 1e12": {
        KEY_CROP_TEMPLATE: json.dumps({"landmarks": TEMPLATE.landmarks, "box": [1e12, 0, 1, 1]})
    },
    "template landmarks 1e300": {
        KEY_CROP_TEMPLATE: json.dumps(
            {"landmarks": [[1e300, -1e300], [-1e300, 1e300], [0.5, 0.5], [0.3, 0.7], [0.6, 0.7]]}
        )
    },
    "template landmarks nearly coincident": {
        KEY_CROP_TEMPLATE: json.dumps(
            {"landmarks": [[0.5, 0.5], [0.503, 0.5], [0.5, 0.501], [0.501, 0.501], [0.5, 0.502]]}
        )
    },
    "input size 60000x60000": {"fer_onnx.input_size": "[60000, 60000]"},
    "input size 1e400": {"fer_onnx.input_size": "[1e400, 48]"},
    "value range 1e300 wide": {"fer_onnx.value_range": "[-1e300, 1e300]"},
    "100000 labels": {"fer_onnx.labels": json.dumps([f"c{i}" for i in range(100_000)])},
}


@pytest.mark.parametrize("change", BAD_METADATA.values(), ids=list(BAD_METADATA))
def test_item10_implausible_metadata_is_refused_at_load(
    tmp_path: Path, change: dict[str, str]
) -> None:
    """Such models loaded, then broke at run time (raw cv2.error, MemoryError, one score for
    every face)."""
    path = build_any_size_model(tmp_path / "bad.onnx", good_metadata(**change))
    with pytest.raises(ModelLoadError, match="malformed fer-onnx metadata"):
        EmotionRecognizer(path, detector=None)


def test_item10_implausible_options_are_refused_at_stamp(tmp_path: Path) -> None:
    """`model stamp --input-size 100000 100000` was a MemoryError traceback, and
    `--crop-template-from` a model with an absurd template copied it on."""
    source = build_any_size_model(tmp_path / "foreign.onnx", {})
    options: dict[str, Any] = {
        "labels": LABELS,
        "input_size": (48, 48),
        "color": "gray",
        "value_range": (0.0, 255.0),
    }
    out = tmp_path / "out.onnx"
    with pytest.raises(InvalidOptionError, match="at most 1024"):
        stamp_model(source, out, **{**options, "input_size": (100_000, 100_000)})
    with pytest.raises(InvalidOptionError, match="value range"):
        stamp_model(source, out, **{**options, "value_range": (0.0, 1e-9)})
    for change in BAD_METADATA.values():
        if KEY_CROP_TEMPLATE in change:
            donor = build_any_size_model(tmp_path / "donor.onnx", good_metadata(**change))
            with pytest.raises(InvalidOptionError, match="crop template cannot be copied"):
                stamp_model(source, out, **options, crop_template=donor)
    assert not out.exists()
    code = cli_main(
        [
            "model",
            "stamp",
            str(source),
            str(out),
            "--labels",
            ",".join(LABELS),
            "--input-size",
            "100000",
            "100000",
            "--color",
            "gray",
            "--value-range",
            "0",
            "255",
        ]
    )
    assert code == 2
    assert not out.exists()
    # and a plausible stamp still works, template copied from a bundled model
    report = stamp_model(source, out, **options, crop_template="default")
    assert report.usable


# -- item 11: degenerate landmarks from a custom detector ---------------------------------------


@pytest.mark.parametrize(
    "landmarks",
    [((300.0, 200.0),) * 5, ((1e9, -1e9),) * 5, ((1e9, 1e9), (-1e9, 0), (0, 0), (1, 1), (2, 2))],
    ids=["identical", "far", "scattered far"],
)
def test_item11_degenerate_landmarks_fall_back_to_the_box(
    template_model: Path, landmarks: tuple[tuple[float, float], ...]
) -> None:
    """5 identical points, or points at +-1e9, were warped (a degenerate warp's result)."""
    box = Box(250, 150, 120, 120)
    with EmotionRecognizer(template_model, detector=Returns([Detection(box, 0.9)])) as rec:
        (plain,) = rec.recognize(IMAGE)
    found = [Detection(box, 0.9, landmarks)]
    with EmotionRecognizer(template_model, detector=Returns(found)) as rec:
        (face,) = rec.recognize(IMAGE)
        assert face.probabilities == plain.probabilities
        assert face.landmarks is None
        assert (rec.cut_faces(IMAGE, found)[0] == crop_to_template(IMAGE, box, TEMPLATE)).all()
    with pytest.raises(InvalidOptionError, match="cannot align"):
        align_face(IMAGE, landmarks, TEMPLATE, (48, 48))


# -- item 12: one typed error for every wrong-type argument -------------------------------------


def _wrong_type_calls(model: Path) -> dict[str, Callable[[], object]]:
    def recognize_with(detector: object) -> Callable[[], object]:
        def call() -> object:
            with EmotionRecognizer(model, detector=detector) as rec:  # type: ignore[arg-type]
                return rec.recognize(IMAGE)

        return call

    def cut(detections: object) -> Callable[[], object]:
        def call() -> object:
            with EmotionRecognizer(model, detector=None) as rec:
                return rec.cut_faces(IMAGE, detections)  # type: ignore[arg-type]

        return call

    return {
        "model=None": lambda: EmotionRecognizer(None),  # type: ignore[arg-type]
        "model=7": lambda: EmotionRecognizer(7),  # type: ignore[arg-type]
        "model=b'int8'": lambda: EmotionRecognizer(b"int8"),  # type: ignore[arg-type]
        "YuNet model=5": lambda: YuNetDetector(model=5),  # type: ignore[arg-type]
        "detector=object()": recognize_with(object()),
        "detector=5": recognize_with(5),
        "detector returns None": recognize_with(Returns(None)),
        "detector returns 7": recognize_with(Returns(7)),
        "detector returns a str": recognize_with(Returns("box")),
        "detector returns tuples": recognize_with(Returns([(1, 2, 3, 4)])),
        "cut_faces(img, [1, 2, 3])": cut([1, 2, 3]),
        "cut_faces(img, None)": cut(None),
        "cut_faces(None, [])": lambda: EmotionRecognizer(model, detector=None).cut_faces(
            None,  # type: ignore[arg-type]
            [],
        ),
        "Box(0.5, 0, 5, 5)": lambda: Box(0.5, 0, 5, 5),  # type: ignore[arg-type]
        "Detection(box=5)": lambda: Detection(5),  # type: ignore[arg-type]
        "Detection(landmarks=5)": lambda: Detection(Box(0, 0, 5, 5), None, 5),  # type: ignore[arg-type]
        "Detection(score='high')": lambda: Detection(Box(0, 0, 5, 5), "high"),  # type: ignore[arg-type]
        "InputSpec(48.5, 48)": lambda: InputSpec(48.5, 48, "gray"),  # type: ignore[arg-type]
        "YuNet.detect(None)": lambda: YuNetDetector().detect(None),  # type: ignore[arg-type]
    }


def test_item12_every_wrong_type_argument_is_one_typed_error(template_model: Path) -> None:
    """Raw pathlib TypeErrors, plain TypeErrors, AttributeError, cv2.error before."""
    for name, call in _wrong_type_calls(template_model).items():
        with pytest.raises(FerOnnxError) as caught:
            call()
        assert type(caught.value).__module__ == "fer_onnx.errors", name
    # a wrong type is also a TypeError, as the built-in error was
    with pytest.raises(TypeError, match="detect"):
        EmotionRecognizer(template_model, detector=object())  # type: ignore[arg-type]
    with pytest.raises(InvalidTypeError):
        EmotionRecognizer(None)  # type: ignore[arg-type]


def test_item12_huge_boxes_and_images_are_bounded(template_model: Path) -> None:
    """A box of 1e9 was a raw cv2.error; detect_width=None on a 20000x20000 image ran the
    network on 400 megapixels (raw onnxruntime / cv2 allocation errors)."""
    with EmotionRecognizer(template_model, detector=Returns([Box(0, 0, 10**9, 10**9)])) as rec:
        assert rec.recognize(IMAGE)[0].box == Box(0, 0, 1126, 661)
        assert rec.recognize(IMAGE, boxes=[(0, 0, 1e9, 1e9)])[0].box == Box(0, 0, 1126, 661)
    detector = YuNetDetector(detect_width=None, device="cpu")
    counting = _CountingSession(detector._session)
    shapes: list[tuple[int, ...]] = []

    def run(names: Any, feeds: dict[str, np.ndarray]) -> Any:
        shapes.extend(v.shape for v in feeds.values())
        return counting.session.run(names, feeds)

    counting.run = run  # type: ignore[method-assign]
    detector._session = counting
    big = np.zeros((3000, 4000), np.uint8)  # 12 megapixels, above the detector's bound
    assert detector.detect(big) == []
    ((_, _, height, width),) = shapes
    assert height * width <= 1.02 * (1 << 23)


# -- item 14 (first part): model stamp ... - ----------------------------------------------------


def test_item14_stamp_to_stdout_is_refused_before_writing(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    """`fer-onnx model stamp IN -` wrote the model to stdout, then failed "model file not
    found: -"."""
    source = build_any_size_model(tmp_path / "foreign.onnx", {})
    args = ["--labels", ",".join(LABELS), "--input-size", "48", "48", "--color", "gray"]
    code = cli_main(["model", "stamp", str(source), "-", *args, "--value-range", "0", "255"])
    captured = capsysbinary.readouterr()
    assert code == 2
    assert captured.out == b""
    assert b"standard output" in captured.err
    with pytest.raises(InvalidOptionError, match="standard output"):
        stamp_model(
            source, "-", labels=LABELS, input_size=(48, 48), color="gray", value_range=(0, 1)
        )


# -- issue 26 item 4: model inspect default -----------------------------------------------------


@pytest.mark.parametrize("name", ["default", "accurate", "fast", "fp32", "int8"])
def test_issue26_item04_inspect_takes_bundled_names(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`fer-onnx model inspect default` said "model file not found: default"."""
    assert cli_main(["model", "inspect", name, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["usable"] is True
    from fer_onnx.recognizer import bundled_model_path

    assert Path(report["path"]) == bundled_model_path(name)


def test_video_mode_checks_the_detector_like_recognize(template_model: Path) -> None:
    """VideoRecognizer goes through the same entry check as recognize (fit_detections)."""
    from fer_onnx import VideoRecognizer

    with (
        EmotionRecognizer(template_model, detector=Returns(None)) as rec,
        pytest.raises(DetectorError),
    ):
        VideoRecognizer(rec).process(IMAGE)
    with EmotionRecognizer(template_model, detector=Returns([Box(1100, -20, 100, 60)])) as rec:
        (face,) = VideoRecognizer(rec).process(IMAGE)
    assert face.box == Box(1100, 0, 26, 40)
    with (
        EmotionRecognizer(template_model, detector=Returns([Box(5000, 5000, 50, 50)])) as rec,
        pytest.raises(DetectorError, match="outside"),
    ):
        VideoRecognizer(rec).process(IMAGE)
