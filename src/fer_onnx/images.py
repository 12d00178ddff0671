"""Reading and validating the images users pass in, and cropping faces out of them."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeAlias, cast

import cv2
import numpy as np
import numpy.typing as npt

from fer_onnx.errors import InvalidImageError
from fer_onnx.types import Box

__all__ = ["ImageInput", "ImageNotFoundError", "as_uint8", "crop_faces", "load_image", "to_box"]

ImageInput: TypeAlias = "str | os.PathLike[str] | npt.NDArray[Any] | Any"
"""A path, a numpy image (gray HxW, HxWx1, BGR HxWx3, BGRA HxWx4; uint8) or a PIL image."""

BoxLike: TypeAlias = "Box | Sequence[int] | npt.NDArray[Any]"


def as_uint8(array: Any) -> npt.NDArray[np.uint8]:
    """Type an OpenCV result as a uint8 array (OpenCV keeps the input's dtype)."""
    return cast("npt.NDArray[np.uint8]", array)


class ImageNotFoundError(InvalidImageError, FileNotFoundError):
    """An image path does not exist."""


_FIX_DTYPE = (
    "convert it first, e.g. np.clip(img * 255, 0, 255).astype(np.uint8) for floats in 0..1, "
    "or (img >> 8).astype(np.uint8) for 16-bit images"
)


def _from_pil(image: Any) -> npt.NDArray[np.uint8]:
    mode = image.mode
    if mode in ("L", "1", "P", "I;16", "I", "F"):
        if mode == "P":
            return np.asarray(image.convert("RGB"))[:, :, ::-1].copy()
        return np.asarray(image.convert("L"))
    if mode == "RGBA" or mode == "LA" or (mode == "P" and "transparency" in image.info):
        rgba = np.asarray(image.convert("RGBA"))
        return np.ascontiguousarray(rgba[:, :, [2, 1, 0, 3]])
    return np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])


def _read_path(path: Path) -> npt.NDArray[np.uint8]:
    if not path.exists():
        raise ImageNotFoundError(f"image file not found: {path}")
    if not path.is_file():
        raise InvalidImageError(f"expected an image file, got a directory: {path}")
    data = np.fromfile(path, dtype=np.uint8)  # works for non-ASCII paths too
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise InvalidImageError(
            f"cannot decode {path} as an image; expected a file OpenCV reads "
            "(JPEG, PNG, BMP, TIFF, WebP, ...)"
        )
    return np.asarray(image, dtype=np.uint8)


def load_image(image: ImageInput) -> npt.NDArray[np.uint8]:
    """Turn any accepted image input into a validated uint8 numpy image.

    Args:
        image: A path (``str`` or ``os.PathLike``), a numpy array (HxW gray, HxWx1, HxWx3 BGR
            or HxWx4 BGRA, ``uint8``) or a ``PIL.Image.Image``.

    Returns:
        An HxW (gray), HxWx3 (BGR) or HxWx4 (BGRA) ``uint8`` array; arrays are not copied.

    Raises:
        ImageNotFoundError: The path does not exist.
        InvalidImageError: Anything else that is not a readable 8-bit image; the message
            says what was expected and how to fix it.
    """
    if image is None:
        raise InvalidImageError(
            "expected an image (path, numpy array or PIL image), got None; "
            "did cv2.imread or VideoCapture.read fail to read it?"
        )
    if isinstance(image, (str, os.PathLike)):
        return _read_path(Path(image))
    if type(image).__module__.startswith("PIL.") and hasattr(image, "convert"):
        image = _from_pil(image)
    if not isinstance(image, np.ndarray):
        raise InvalidImageError(
            f"expected a path, a numpy array or a PIL image, got {type(image).__name__}"
        )
    if image.size == 0:
        raise InvalidImageError(f"expected a non-empty image, got an array of shape {image.shape}")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
        raise InvalidImageError(
            "expected an image of shape HxW (gray), HxWx1, HxWx3 (BGR) or HxWx4 (BGRA), "
            f"got shape {image.shape}"
            + ("; for a batch of crops use classify()" if image.ndim == 4 else "")
        )
    if image.dtype != np.uint8:
        raise InvalidImageError(f"expected a uint8 image, got dtype {image.dtype}; {_FIX_DTYPE}")
    return image


def to_box(box: BoxLike, width: int, height: int, index: int = 0) -> Box:
    """Validate a caller's box ``(x, y, width, height)`` and clip it to the image.

    Raises:
        InvalidImageError: The box is malformed or lies entirely outside the image.
    """
    if isinstance(box, Box):
        x, y, w, h = box.to_tuple()
    else:
        values = np.asarray(box).reshape(-1)
        if values.size != 4 or not np.all(np.isfinite(values.astype(np.float64))):
            raise InvalidImageError(f"box {index}: expected (x, y, width, height), got {box!r}")
        x, y, w, h = (int(round(float(v))) for v in values)
    if w <= 0 or h <= 0:
        raise InvalidImageError(f"box {index}: width and height must be positive, got {w}x{h}")
    x1, y1 = max(x, 0), max(y, 0)
    x2, y2 = min(x + w, width), min(y + h, height)
    if x2 <= x1 or y2 <= y1:
        raise InvalidImageError(
            f"box {index} ({x}, {y}, {w}, {h}) lies outside the {width}x{height} image"
        )
    return Box(x1, y1, x2 - x1, y2 - y1)


def crop_faces(
    image: npt.NDArray[np.uint8], boxes: Sequence[Box], margin: float = 0.0
) -> list[npt.NDArray[np.uint8]]:
    """Cut each box out of ``image``, grown by ``margin`` (a fraction of its size) per side.

    The grown box is clipped to the image. Crops are views, not copies.
    """
    height, width = image.shape[:2]
    crops = []
    for box in boxes:
        dx, dy = int(round(box.width * margin)), int(round(box.height * margin))
        x1, y1 = max(box.x - dx, 0), max(box.y - dy, 0)
        x2, y2 = min(box.x2 + dx, width), min(box.y2 + dy, height)
        crops.append(image[y1:y2, x1:x2])
    return crops
