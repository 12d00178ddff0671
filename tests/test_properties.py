"""Property-based: whatever is thrown at the public API, the outcome is a result or a
``FerOnnxError`` (never another exception, a crash or a hang)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fer_onnx import (
    EmotionRecognizer,
    FerOnnxError,
    HaarDetector,
    SessionConfig,
    VideoRecognizer,
    YuNetDetector,
)

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
