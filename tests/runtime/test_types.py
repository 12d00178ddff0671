from __future__ import annotations

import json
import pickle
from collections.abc import Callable

import numpy as np
import pytest

from fer_onnx import Box, Detection, Emotion, FaceEmotion, FerOnnxError

PROBS = {"angry": 0.1, "happy": 0.7, "sad": 0.2}


@pytest.mark.parametrize(
    ("a", "b", "iou"),
    [
        (Box(0, 0, 10, 10), Box(0, 0, 10, 10), 1.0),
        (Box(0, 0, 10, 10), Box(10, 0, 10, 10), 0.0),
        (Box(0, 0, 10, 10), Box(5, 0, 10, 10), 50 / 150),
        (Box(0, 0, 10, 10), Box(2, 2, 5, 5), 25 / 100),
    ],
)
def test_box_iou(a: Box, b: Box, iou: float) -> None:
    assert a.iou(b) == pytest.approx(iou)
    assert b.iou(a) == pytest.approx(iou)


@pytest.mark.parametrize(
    ("args", "error"),
    [((0, 0, 0, 5), ValueError), ((0, 0, 5, -1), ValueError), ((0.5, 0, 5, 5), TypeError)],
)
def test_box_rejects_bad_values(args: tuple, error: type) -> None:
    with pytest.raises(error):
        Box(*args)


def test_box_helpers() -> None:
    box = Box(1, 2, 3, 4)
    assert (box.x2, box.y2, box.area) == (4, 6, 12)
    assert box.to_tuple() == (1, 2, 3, 4)
    assert box.to_dict() == {"x": 1, "y": 2, "width": 3, "height": 4}


def test_results_validate_probabilities() -> None:
    with pytest.raises(ValueError, match="sum to 1"):
        Emotion("happy", 0.7, {"happy": 0.7, "sad": 0.2})
    with pytest.raises(ValueError, match="not one of"):
        Emotion("fear", 0.7, PROBS)
    with pytest.raises(ValueError, match="differs"):
        Emotion("happy", 0.5, PROBS)


def test_results_are_frozen_json_ready_and_picklable() -> None:
    face = FaceEmotion(Box(1, 2, 3, 4), "happy", 0.7, PROBS, track_id=3)
    with pytest.raises(AttributeError):
        face.label = "sad"  # type: ignore[misc]
    data = json.loads(json.dumps(face.to_dict()))
    assert data["box"] == {"x": 1, "y": 2, "width": 3, "height": 4}
    assert data["track_id"] == 3
    assert list(data["probabilities"]) == list(PROBS)
    assert pickle.loads(pickle.dumps(face)) == face
    assert "happy" in repr(face)
    assert "0.700" in repr(face)
    assert face.emotion == Emotion("happy", 0.7, PROBS)


@pytest.mark.parametrize(
    ("box", "clipped"),
    [
        (Box(10, 10, 20, 20), Box(10, 10, 20, 20)),  # inside: the same box
        (Box(-5, -5, 20, 20), Box(0, 0, 15, 15)),
        (Box(90, 40, 50, 50), Box(90, 40, 10, 10)),
        (Box(0, 0, 10**9, 10**9), Box(0, 0, 100, 50)),
        (Box(100, 0, 5, 5), None),  # touches the right edge only
        (Box(-100, -100, 50, 50), None),
        (Box(5000, 5000, 50, 50), None),
    ],
)
def test_box_clip_to_a_100x50_image(box: Box, clipped: Box | None) -> None:
    assert box.clip(100, 50) == clipped


@pytest.mark.parametrize(
    "make",
    [
        lambda: Box(0.5, 0, 5, 5),
        lambda: Box(0, 0, 0, 5),
        lambda: Detection(5),
        lambda: Detection(Box(0, 0, 5, 5), 1.5),
        lambda: Detection(Box(0, 0, 5, 5), "high"),
        lambda: Detection(Box(0, 0, 5, 5), None, ((0, 0),) * 4),
        lambda: Detection(Box(0, 0, 5, 5), None, 5),
        lambda: Emotion("happy", 0.7, {"happy": "0.7", "sad": 0.3}),
    ],
)
def test_bad_result_values_are_typed_errors(make: Callable[[], object]) -> None:
    with pytest.raises(FerOnnxError):
        make()


def test_box_unpacks_like_the_tuple_its_repr_shows() -> None:
    """``x, y, w, h = face.box`` was a TypeError."""
    box = Box(1, 2, 3, 4)
    x, y, w, h = box
    assert (x, y, w, h) == (1, 2, 3, 4) == tuple(box) == box.to_tuple()
    assert list(box) == [box.x, box.y, box.width, box.height]
    # still one object to numpy (no __len__ / __getitem__): a list of boxes stays a list
    assert np.asarray([box, Box(5, 6, 7, 8)]).shape == (2,)
    with pytest.raises(AttributeError):
        box.x = 5  # type: ignore[misc]  # still frozen
    assert not hasattr(box, "__dict__")  # still slotted
