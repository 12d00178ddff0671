import json
import pickle

import pytest

from fer_onnx import Box, Emotion, FaceEmotion

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
