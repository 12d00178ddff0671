from pathlib import Path

import cv2
import numpy as np
import pytest

from fer_onnx import Box, ImageNotFoundError, InvalidImageError, load_image
from fer_onnx.images import crop_faces, to_box


def test_accepts_arrays_without_copying() -> None:
    for image in (
        np.zeros((5, 6), np.uint8),
        np.zeros((5, 6, 1), np.uint8),
        np.zeros((5, 6, 3), np.uint8),
        np.zeros((5, 6, 4), np.uint8),
    ):
        assert load_image(image) is image


def test_reads_paths_str_and_pathlib(tmp_path: Path) -> None:
    image = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    path = tmp_path / "ünïcode face.png"
    cv2.imencode(".png", image)[1].tofile(path)
    np.testing.assert_array_equal(load_image(path), image)
    np.testing.assert_array_equal(load_image(str(path)), image)


def test_reads_pil_images_as_bgr() -> None:
    pil = pytest.importorskip("PIL.Image")
    rgb = np.zeros((4, 4, 3), np.uint8)
    rgb[..., 0] = 200  # red
    out = load_image(pil.fromarray(rgb))
    assert out.shape == (4, 4, 3)
    assert out[0, 0].tolist() == [0, 0, 200]
    assert load_image(pil.fromarray(rgb[..., 0])).shape == (4, 4)
    rgba = np.zeros((4, 4, 4), np.uint8)
    assert load_image(pil.fromarray(rgba)).shape == (4, 4, 4)


@pytest.mark.parametrize(
    ("image", "error", "match"),
    [
        (None, InvalidImageError, "got None"),
        (np.zeros((0, 0, 3), np.uint8), InvalidImageError, "non-empty"),
        (
            np.zeros((4, 4, 3), np.float32),
            InvalidImageError,
            r"uint8 image, got dtype float32.*astype",
        ),
        (np.zeros((4, 4, 3), np.uint16), InvalidImageError, "uint16"),
        (np.zeros((4,), np.uint8), InvalidImageError, "HxW"),
        (np.zeros((2, 4, 4, 3), np.uint8), InvalidImageError, "classify"),
        (np.zeros((4, 4, 2), np.uint8), InvalidImageError, "HxWx3"),
        (12, InvalidImageError, "got int"),
        ("does/not/exist.jpg", ImageNotFoundError, "not found"),
    ],
)
def test_bad_inputs(image: object, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        load_image(image)


def test_missing_file_is_also_file_not_found() -> None:
    with pytest.raises(FileNotFoundError):
        load_image(Path("nope.png"))


def test_not_an_image_file(tmp_path: Path) -> None:
    text = tmp_path / "notes.jpg"
    text.write_text("hello")
    with pytest.raises(InvalidImageError, match="cannot decode"):
        load_image(text)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(InvalidImageError, match=r"empty \(0 bytes\)"):
        load_image(empty)
    with pytest.raises(InvalidImageError, match="directory"):
        load_image(tmp_path)


@pytest.mark.parametrize(
    ("box", "expected"),
    [
        ((10, 10, 20, 20), Box(10, 10, 20, 20)),
        ((-5, -5, 20, 20), Box(0, 0, 15, 15)),
        ((90, 40, 20, 20), Box(90, 40, 10, 10)),
        (np.array([1.4, 2.6, 10, 10]), Box(1, 3, 10, 10)),
        (Box(0, 0, 5, 5), Box(0, 0, 5, 5)),
    ],
)
def test_to_box_clips(box: object, expected: Box) -> None:
    assert to_box(box, 100, 50) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("box", "match"),
    [
        ((1, 2, 3), "expected four numbers"),
        ((0, 0, 0, ""), "expected four numbers"),  # found by hypothesis: was a ValueError
        ((0, 0, None, 5), "expected four numbers"),
        ((0, 0, float("nan"), 5), "expected four numbers"),
        ((0, 0, [1, 2], 5), "expected four numbers"),
        ((0, 0, 10**400, 5), "expected four numbers"),
        (("0", "0", "5", "5"), "expected four numbers"),
        ((0, 0, 0, 5), "positive"),
        ((200, 0, 5, 5), "outside"),
    ],
)
def test_to_box_errors(box: tuple, match: str) -> None:
    with pytest.raises(InvalidImageError, match=match):
        to_box(box, 100, 50)


def test_crop_with_margin_is_clipped() -> None:
    image = np.arange(100 * 100, dtype=np.uint32).reshape(100, 100).astype(np.uint8)
    (crop,) = crop_faces(image, [Box(10, 20, 40, 20)], margin=0.25)
    assert crop.shape == (30, 60)
    (edge,) = crop_faces(image, [Box(0, 0, 40, 40)], margin=0.5)
    assert edge.shape == (60, 60)
