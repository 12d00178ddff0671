import numpy as np
import pytest

from fer_onnx import InputSpec, InvalidImageError, prepare_faces
from fer_onnx.preprocessing import to_color_mode

GRAY = InputSpec(48, 48, "gray")


@pytest.mark.parametrize(
    "shape", [(48, 48), (48, 48, 1), (100, 80, 3), (30, 20, 4), (10, 200), (48, 48, 3)]
)
@pytest.mark.parametrize("color", ["gray", "rgb", "bgr"])
def test_prepare_faces_shapes(shape: tuple[int, ...], color: str) -> None:
    spec = InputSpec(48, 40, color)  # type: ignore[arg-type]
    rng = np.random.default_rng(0)
    faces = [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(3)]
    batch = prepare_faces(faces, spec)
    assert batch.shape == (3, 48, 40, spec.channels)
    assert batch.dtype == np.float32
    assert batch.min() >= 0
    assert batch.max() <= 255


def test_prepare_faces_identity_for_native_size() -> None:
    face = np.arange(48 * 48, dtype=np.uint32).reshape(48, 48).astype(np.uint8)
    np.testing.assert_array_equal(prepare_faces([face], GRAY)[0, :, :, 0], face)


def test_color_conversion_matches_opencv_conventions() -> None:
    bgr = np.zeros((2, 2, 3), dtype=np.uint8)
    bgr[..., 2] = 255  # pure red in BGR
    assert to_color_mode(bgr, "rgb")[0, 0].tolist() == [255, 0, 0]
    assert to_color_mode(bgr, "bgr")[0, 0].tolist() == [0, 0, 255]
    assert int(to_color_mode(bgr, "gray")[0, 0]) == 76  # 0.299 * 255


def test_prepare_faces_reuses_buffer() -> None:
    out = np.empty((2, 48, 48, 1), dtype=np.float32)
    faces = [np.full((60, 60), 7, np.uint8), np.full((30, 30), 9, np.uint8)]
    assert prepare_faces(faces, GRAY, out=out) is out
    assert out[0].max() == 7
    assert out[1].min() == 9


@pytest.mark.parametrize(
    ("face", "match"),
    [
        (np.zeros((48, 48), np.float32), "uint8"),
        (np.zeros((0, 48), np.uint8), "non-empty"),
        (np.zeros((4, 4, 2), np.uint8), "HxWx4"),
        ("face.png", "uint8 numpy array"),
    ],
)
def test_prepare_faces_rejects_bad_crops(face: object, match: str) -> None:
    with pytest.raises(InvalidImageError, match=match):
        prepare_faces([face], GRAY)  # type: ignore[list-item]


def test_input_spec_validates() -> None:
    with pytest.raises(ValueError, match="positive"):
        InputSpec(0, 48, "gray")
    with pytest.raises(ValueError, match="color"):
        InputSpec(48, 48, "hsv")  # type: ignore[arg-type]
