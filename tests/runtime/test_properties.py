"""Property-based: whatever is thrown at the public API, the outcome is a result or a
``FerOnnxError`` (never another exception, a crash or a hang)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from test_probe_runtime import build_any_size_model, good_metadata

from fer_onnx import (
    Box,
    Detection,
    EmotionRecognizer,
    FaceEmotion,
    FerOnnxError,
    HaarDetector,
    SessionConfig,
    VideoRecognizer,
    YuNetDetector,
)
from fer_onnx.alignment import KEY_CROP_TEMPLATE, landmarks_problem
from fer_onnx.metadata import ModelInfo

DTYPES = st.sampled_from(
    [np.uint8, np.uint16, np.int8, np.int32, np.float16, np.float32, np.float64, np.bool_]
)
SHAPES = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=40)
NUMBERS = st.one_of(
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.none(),
    st.booleans(),
    st.text(max_size=3),
)


def arrays() -> st.SearchStrategy[Any]:
    base = hnp.arrays(DTYPES, SHAPES, elements=None)
    # non-contiguous views too: every other row / reversed columns
    return st.one_of(
        base,
        base.filter(lambda a: a.ndim >= 2).map(lambda a: a[::2, ::-1]),
        base.filter(lambda a: a.ndim >= 3).map(lambda a: np.moveaxis(a, -1, 0)),
    )


IMAGES = st.one_of(
    arrays(),
    hnp.arrays(
        np.uint8, st.tuples(st.integers(1, 80), st.integers(1, 80), st.sampled_from([1, 3, 4]))
    ),
    st.none(),
    st.integers(),
    st.text(max_size=5),
    st.lists(st.integers(), max_size=3),
)
BOXES = st.one_of(
    st.none(),
    st.integers(),
    st.lists(st.lists(NUMBERS, min_size=0, max_size=5), max_size=4),
    st.lists(st.tuples(*[st.floats(allow_nan=True, allow_infinity=True)] * 4), max_size=3),
)

SETTINGS = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def outcome(call: Callable[[], object]) -> None:
    with contextlib.suppress(FerOnnxError):
        call()


@pytest.fixture(scope="module")
def rec(tiny_model: Path) -> EmotionRecognizer:
    with EmotionRecognizer(tiny_model, device="cpu") as recognizer:
        yield recognizer


@SETTINGS
@given(image=IMAGES, boxes=BOXES)
def test_recognize_any_image_any_boxes(rec: EmotionRecognizer, image: Any, boxes: Any) -> None:
    outcome(lambda: rec.recognize(image))
    outcome(lambda: rec.recognize(image, boxes=boxes))


@SETTINGS
@given(crops=st.one_of(IMAGES, st.lists(IMAGES, max_size=3)))
def test_classify_and_predict_any_crops(rec: EmotionRecognizer, crops: Any) -> None:
    outcome(lambda: rec.classify(crops))
    outcome(lambda: rec.predict(crops))


@SETTINGS
@given(frames=st.lists(IMAGES, min_size=1, max_size=4), smoothing=NUMBERS, every=NUMBERS)
def test_video_mode_any_frames_any_options(
    rec: EmotionRecognizer, frames: list[Any], smoothing: Any, every: Any
) -> None:
    def run() -> None:
        video = VideoRecognizer(rec, smoothing=smoothing, redetect_every=every)
        for frame in frames:
            outcome(lambda frame=frame: video.process(frame))

    outcome(run)


@SETTINGS
@given(a=NUMBERS, b=NUMBERS, c=NUMBERS, d=NUMBERS)
def test_detector_and_session_options(a: Any, b: Any, c: Any, d: Any) -> None:
    outcome(lambda: HaarDetector(scale_factor=a, min_neighbors=b, min_size=c, detect_width=d))
    outcome(lambda: YuNetDetector(score_threshold=a, nms_threshold=b, top_k=c, detect_width=d))
    outcome(lambda: SessionConfig(intra_op_threads=a, inter_op_threads=b, log_severity=c))


@SETTINGS
@given(margin=NUMBERS, device=st.one_of(st.sampled_from(["auto", "cpu", "cuda", "tpu"]), NUMBERS))
def test_recognizer_options(tiny_model: Path, margin: Any, device: Any) -> None:
    def make() -> None:
        EmotionRecognizer(tiny_model, margin=margin, device=device, detector=None).close()

    outcome(make)


# -- custom detectors: boxes and landmarks anywhere, any return type -----------------------------

COORDS = st.one_of(
    st.integers(-60, 120), st.integers(-(10**4), 10**4), st.integers(-(10**12), 10**12)
)
SIDES = st.one_of(st.integers(1, 120), st.integers(1, 10**12))
BOXES_ANYWHERE = st.builds(Box, COORDS, COORDS, SIDES, SIDES)
FLOATS_ANYWHERE = st.one_of(
    st.floats(-100, 300),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, 1e9, -1e9, 1e300, -1e300]),
)
POINTS = st.tuples(FLOATS_ANYWHERE, FLOATS_ANYWHERE)
LANDMARKS_ANYWHERE = st.one_of(
    st.none(),
    st.lists(POINTS, min_size=5, max_size=5).map(tuple),
    POINTS.map(lambda p: (p,) * 5),  # 5 identical points
)
DETECTIONS = st.builds(
    Detection,
    BOXES_ANYWHERE,
    st.one_of(st.none(), st.floats(0, 1)),
    LANDMARKS_ANYWHERE,
)
ITEMS = st.one_of(DETECTIONS, BOXES_ANYWHERE, st.none(), st.integers(), st.text(max_size=3))
INSIDE = st.builds(Box, st.integers(-20, 35), st.integers(-20, 35), SIDES, SIDES)
PLAUSIBLE = st.lists(
    st.one_of(INSIDE, st.builds(Detection, INSIDE, st.none(), LANDMARKS_ANYWHERE)),
    min_size=1,
    max_size=3,
)
JUNK = st.one_of(
    st.lists(ITEMS, max_size=4),
    st.lists(ITEMS, max_size=4).map(tuple),
    st.none(),
    st.integers(),
    st.text(max_size=3),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
    DETECTIONS,
    BOXES_ANYWHERE,
)
# Half the time faces near the image (so that the crop and align stages run), else anything.
RETURNS = st.sampled_from([0, 0, 1, 2]).flatmap(
    lambda kind: (PLAUSIBLE, st.lists(st.one_of(DETECTIONS, BOXES_ANYWHERE), max_size=4), JUNK)[
        kind
    ]
)
SMALL_IMAGES = hnp.arrays(
    np.uint8,
    st.one_of(
        st.tuples(st.integers(36, 90), st.integers(36, 90), st.sampled_from([1, 3, 4])),
        st.tuples(st.integers(1, 90), st.integers(1, 90)),
    ),
)


class Returns:
    """A custom detector that returns whatever it was given."""

    def __init__(self) -> None:
        self.value: object = []

    def detect(self, image: np.ndarray) -> Any:
        return self.value


@pytest.fixture(scope="module")
def custom_recs(
    tiny_model: Path, model_factory: Callable[..., Path]
) -> tuple[Returns, list[EmotionRecognizer]]:
    """Recognizers around one custom detector: no template, a template, the template off."""
    detector = Returns()
    template = model_factory(metadata=good_metadata())
    recs = [
        EmotionRecognizer(tiny_model, detector=detector, device="cpu"),
        EmotionRecognizer(template, detector=detector, device="cpu"),
        EmotionRecognizer(template, detector=detector, device="cpu", align=False, margin=0.3),
    ]
    yield detector, recs
    for rec in recs:
        rec.close()


def check_faces(faces: list[FaceEmotion], image: np.ndarray) -> None:
    """A right result: every box inside the image, probabilities that sum to 1."""
    height, width = image.shape[:2]
    for face in faces:
        box = face.box
        assert 0 <= box.x < box.x2 <= width, (box, width)
        assert 0 <= box.y < box.y2 <= height, (box, height)
        assert abs(sum(face.probabilities.values()) - 1.0) < 1e-3
        if face.landmarks is not None:
            assert landmarks_problem(face.landmarks) is None


@SETTINGS
@given(image=SMALL_IMAGES, returned=RETURNS)
def test_custom_detector_returning_anything(
    custom_recs: tuple[Returns, list[EmotionRecognizer]], image: np.ndarray, returned: Any
) -> None:
    detector, recs = custom_recs
    detector.value = returned
    for rec in recs:
        with contextlib.suppress(FerOnnxError):
            faces = rec.recognize(image)
            check_faces(faces, image)
            event(f"{len(faces)} faces")
        with contextlib.suppress(FerOnnxError):
            crops = rec.cut_faces(image, returned)
            assert all(c.size > 0 and c.size <= 4 * image.size + 48 * 48 * 4 for c in crops)


# -- model metadata: every field anywhere --------------------------------------------------------

NUMBERS_ANYWHERE = st.one_of(
    st.integers(-5, 70_000),
    st.integers(-(10**30), 10**30),
    st.floats(-3, 3),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=2),
)
JSONISH = st.one_of(
    st.none(), NUMBERS_ANYWHERE, st.lists(NUMBERS_ANYWHERE, max_size=6), st.text(max_size=4)
)
GOOD = good_metadata()
EXTREMES = st.one_of(
    st.sampled_from([0.0, 1e-9, 1e-3, 0.05, 0.5, 1.0, 3.0, 1e12, -1e12, 1e300, -1e300]),
    st.floats(-3, 3),
)
SIDE_EXTREMES = st.sampled_from([-1, 0, 1, 2, 48, 1024, 1025, 60_000, 100_000])


def _one_changed(values: list[Any], replacement: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``values`` (a flat list) with one entry replaced."""
    return st.tuples(st.integers(0, len(values) - 1), replacement).map(
        lambda change: [change[1] if i == change[0] else v for i, v in enumerate(values)]
    )


_TEMPLATE = json.loads(GOOD[KEY_CROP_TEMPLATE])
_FLAT = [v for point in _TEMPLATE["landmarks"] for v in point] + list(_TEMPLATE["box"])
NEAR_TEMPLATES = st.one_of(
    _one_changed(_FLAT, EXTREMES),
    st.floats(0, 0.04).map(lambda d: [0.5 + d * (i % 3) for i in range(10)] + _FLAT[10:]),
).map(
    lambda flat: json.dumps(
        {"landmarks": [flat[i : i + 2] for i in range(0, 10, 2)], "box": flat[10:]}
    )
)
FIELDS = {
    "fer_onnx.labels": st.one_of(
        st.lists(st.text(max_size=8), min_size=1, max_size=9).map(json.dumps),
        JSONISH.map(json.dumps),
    ),
    "fer_onnx.input_size": st.one_of(
        st.lists(st.integers(-2, 1100), min_size=2, max_size=2).map(json.dumps),
        _one_changed([48, 48], SIDE_EXTREMES).map(json.dumps),
        st.lists(NUMBERS_ANYWHERE, min_size=0, max_size=3).map(json.dumps),
        st.text(max_size=6),
    ),
    "fer_onnx.color_mode": st.one_of(st.sampled_from(["gray", "rgb", "bgr"]), st.text(max_size=4)),
    "fer_onnx.value_range": st.one_of(
        st.lists(st.floats(-300, 300), min_size=2, max_size=2).map(json.dumps),
        _one_changed([0.0, 255.0], EXTREMES).map(json.dumps),
        st.lists(NUMBERS_ANYWHERE, max_size=3).map(json.dumps),
    ),
    KEY_CROP_TEMPLATE: st.one_of(
        NEAR_TEMPLATES,
        st.fixed_dictionaries(
            {
                "landmarks": st.one_of(
                    st.lists(
                        st.lists(st.floats(-1, 2), min_size=2, max_size=2), min_size=5, max_size=5
                    ),
                    st.lists(st.lists(NUMBERS_ANYWHERE, max_size=3), max_size=6),
                    JSONISH,
                ),
                "box": st.one_of(
                    st.none(),
                    st.lists(st.floats(-1.5, 2.5), min_size=4, max_size=4),
                    st.lists(NUMBERS_ANYWHERE, max_size=5),
                ),
            }
        ).map(json.dumps),
        JSONISH.map(json.dumps),
    ),
    "fer_onnx.output": st.one_of(st.sampled_from(["probabilities", "logits"]), st.text(max_size=4)),
}


def _field(key: str) -> st.SearchStrategy[str]:
    if key not in GOOD:
        return FIELDS[key]
    return st.one_of(st.just(GOOD[key]), FIELDS[key])


# Mostly a good model with one field anywhere (so that each field's bounds are what is
# tested), else every field anywhere and any key missing.
TARGETED = {
    "fer_onnx.input_size": _one_changed([48, 48], SIDE_EXTREMES).map(json.dumps),
    "fer_onnx.value_range": _one_changed([0.0, 255.0], EXTREMES).map(json.dumps),
    KEY_CROP_TEMPLATE: NEAR_TEMPLATES,
}
ONE_FIELD = st.sampled_from(sorted(FIELDS)).flatmap(
    lambda key: (
        st.sampled_from([key in TARGETED, False])
        .flatmap(lambda targeted: TARGETED[key] if targeted else FIELDS[key])
        .map(lambda value: {**GOOD, key: value})
    )
)
ANY_FIELDS = st.fixed_dictionaries({}, optional={key: _field(key) for key in FIELDS})
METADATA = st.sampled_from([True, True, True, False]).flatmap(
    lambda one: ONE_FIELD if one else ANY_FIELDS
)


@settings(SETTINGS, max_examples=250)
@given(props=METADATA, image=SMALL_IMAGES, landmarks=LANDMARKS_ANYWHERE)
def test_model_metadata_anywhere(
    tmp_path_factory: pytest.TempPathFactory,
    props: dict[str, str],
    image: np.ndarray,
    landmarks: Any,
) -> None:
    """A model loads only with plausible metadata, and a model that loads also runs: on any
    image, with a box and with landmarks anywhere, it gives a right result, never an error."""
    try:
        info = ModelInfo.from_metadata(props)
    except FerOnnxError:
        info = None
    path = tmp_path_factory.mktemp("meta") / "model.onnx"
    classes = len(info.labels) if info is not None else 3
    build_any_size_model(path, props, classes=classes)
    try:
        rec = EmotionRecognizer(path, detector=None, device="cpu")
    except FerOnnxError:
        assert info is None, "metadata that parses must load (the any-size model fits it)"
        event("refused")
        return
    assert info is not None, "a model whose metadata does not parse must not load"
    event("loaded")
    with rec:
        height, width = image.shape[:2]
        box = Box(0, 0, width, height)
        faces = [Detection(box), Detection(box, 0.5, landmarks)]
        check_faces(rec.recognize(image, boxes=[(0, 0, width, height)]), image)
        probabilities = rec.predict(rec.cut_faces(image, faces))
        assert probabilities.shape == (2, len(info.labels))
        assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-3)


ANY_VALUE = st.one_of(
    NUMBERS,
    st.binary(max_size=4),
    st.lists(st.integers(), max_size=2),
    st.builds(object),
    st.sampled_from(["default", "int8", "fp32", "yunet", "haar", "-", ""]),
)


@SETTINGS
@given(model=ANY_VALUE, detector=ANY_VALUE)
def test_model_and_detector_of_any_type(model: Any, detector: Any) -> None:
    def make() -> None:
        EmotionRecognizer(model, detector=detector, device="cpu").close()

    outcome(make)
