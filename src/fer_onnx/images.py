"""Reading and validating the images users pass in, and cropping faces out of them."""

from __future__ import annotations

import errno
import os
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias, cast

import cv2
import numpy as np
import numpy.typing as npt

from fer_onnx.errors import ImageNotFoundError, InvalidImageError
from fer_onnx.types import Box

if TYPE_CHECKING:
    import PIL.Image

__all__ = [
    "MAX_PIXELS",
    "ImageInput",
    "ImageNotFoundError",
    "as_uint8",
    "crop_faces",
    "load_image",
    "to_box",
]

ImageInput: TypeAlias = "str | os.PathLike[str] | npt.NDArray[Any] | PIL.Image.Image"
"""A path, a numpy image (gray HxW, HxWx1, BGR HxWx3, BGRA HxWx4; uint8) or a PIL image."""

BoxLike: TypeAlias = "Box | Sequence[int] | Sequence[float] | npt.NDArray[Any]"

MAX_PIXELS = 1 << 28
"""Largest image (width x height, ~268 megapixels) a file may declare before it is decoded."""


def as_uint8(array: Any) -> npt.NDArray[np.uint8]:
    """Type an OpenCV result as a uint8 array (OpenCV keeps the input's dtype)."""
    return cast("npt.NDArray[np.uint8]", array)


_FIX_DTYPE = (
    "convert it first, e.g. np.clip(img * 255, 0, 255).astype(np.uint8) for floats in 0..1, "
    "or (img >> 8).astype(np.uint8) for 16-bit images"
)


def _from_pil(image: Any) -> npt.NDArray[np.uint8]:
    from PIL import ImageOps

    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        raise InvalidImageError(
            f"expected an 8-bit image, got a PIL image of mode {mode!r} (more than 8 bits per "
            f"sample); {_FIX_DTYPE} on np.asarray(image)"
        )
    try:
        image = ImageOps.exif_transpose(image)  # as the path loader does
        if mode in ("L", "1"):
            return np.asarray(image.convert("L"))
        if mode in ("RGBA", "LA") or (mode == "P" and "transparency" in image.info):
            rgba = np.asarray(image.convert("RGBA"))
            return np.ascontiguousarray(rgba[:, :, [2, 1, 0, 3]])
        return np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])
    except (OSError, ValueError, SyntaxError) as e:  # truncated, closed or corrupt files
        raise InvalidImageError(
            f"cannot read the PIL image ({type(e).__name__}: {e}); is the file complete and "
            "still open?"
        ) from e


def declared_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` a PNG, JPEG, GIF or BMP header declares, without decoding."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        width, height = struct.unpack(">II", data[16:24])
        return int(width), int(height)
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        width, height = struct.unpack("<HH", data[6:10])
        return int(width), int(height)
    if data[:2] == b"BM" and len(data) >= 26:
        width, height = struct.unpack("<ii", data[18:26])
        return abs(int(width)), abs(int(height))
    if data[:2] == b"\xff\xd8":
        i = 2
        while i + 9 < len(data):
            if data[i] != 0xFF:
                return None
            marker = data[i + 1]
            if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
                i += 2
                continue
            length = struct.unpack(">H", data[i + 2 : i + 4])[0]
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                height, width = struct.unpack(">HH", data[i + 5 : i + 9])
                return int(width), int(height)
            i += 2 + length
    return None


def _read_path(path: Path) -> npt.NDArray[np.uint8]:
    try:
        path.stat()
    except ValueError as e:  # e.g. an embedded NUL byte
        raise InvalidImageError(f"not a usable path: {os.fspath(path)!r} ({e})") from e
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise InvalidImageError(f"{path} is a symbolic link loop, not an image file") from e
        if e.errno == errno.ENOENT:
            raise ImageNotFoundError(f"image file not found: {path}") from e
        raise InvalidImageError(f"cannot read {path}: {e.strerror}") from e
    if path.is_dir():
        raise InvalidImageError(f"expected an image file, got a directory: {path}")
    if not path.is_file():
        raise InvalidImageError(
            f"expected a regular image file, got a special file (device, pipe or socket): {path}"
        )
    try:
        data = np.fromfile(path, dtype=np.uint8)  # works for non-ASCII paths too
    except OSError as e:
        raise InvalidImageError(f"cannot read {path}: {e}") from e
    if data.size == 0:
        raise InvalidImageError(f"{path} is empty (0 bytes), not an image")
    size = declared_size(data[:65536].tobytes())
    if size is not None and size[0] * size[1] > MAX_PIXELS:
        raise InvalidImageError(
            f"{path} declares {size[0]}x{size[1]} pixels, more than fer-onnx decodes "
            f"({MAX_PIXELS:,} pixels); shrink it first"
        )
    try:
        image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    except cv2.error as e:
        raise InvalidImageError(f"cannot decode {path}: {str(e).strip()}") from e
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
        if os.fspath(image) == "":
            raise InvalidImageError("expected the path of an image file, got an empty string")
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
        try:
            raw = np.asarray(box)
            numeric = raw.dtype.kind in "iuf"  # not text, bytes, None or booleans
            values = raw.astype(np.float64).reshape(-1) if numeric else np.array([np.nan])
        except (TypeError, ValueError, OverflowError):  # ragged nesting, 10**400
            values = np.array([np.nan])
        if values.size != 4 or not np.all(np.isfinite(values)):
            raise InvalidImageError(
                f"box {index}: expected four numbers (x, y, width, height), got {box!r}"
            )
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
