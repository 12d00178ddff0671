"""Reading and validating the images users pass in, and cropping faces out of them."""

from __future__ import annotations

import errno
import math
import os
import re
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias, cast

import cv2
import numpy as np
import numpy.typing as npt

from fer_onnx._checks import _shown, is_real_number
from fer_onnx.errors import FerOnnxError, ImageNotFoundError, InvalidImageError
from fer_onnx.types import Box, Detection

if TYPE_CHECKING:
    import PIL.Image

__all__ = [
    "MAX_PIXELS",
    "EncodedImage",
    "ImageInput",
    "ImageNotFoundError",
    "as_uint8",
    "crop_faces",
    "declared_size",
    "decode_image",
    "load_image",
    "to_box",
]

ImageInput: TypeAlias = "str | os.PathLike[str] | npt.NDArray[Any] | PIL.Image.Image"
"""A path, a numpy image (gray HxW, HxWx1, BGR HxWx3, BGRA HxWx4; uint8) or a PIL image."""

BoxLike: TypeAlias = "Box | Detection | Sequence[int] | Sequence[float] | npt.NDArray[Any]"
"""A face box: ``(x, y, width, height)`` in pixels (numbers of any kind), a Box or a Detection."""

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
            "sample); convert it first, e.g. (np.asarray(image) >> 8).astype(np.uint8) for "
            "16-bit samples, or pass the file's path (16-bit files are read as 8-bit)"
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


def _png_size(data: bytes) -> tuple[int, int] | None:
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR" or len(data) < 24:
        return None
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def _gif_size(data: bytes) -> tuple[int, int] | None:
    # OpenCV sizes the image by the logical screen (and refuses frames that exceed it).
    if data[:6] not in (b"GIF87a", b"GIF89a") or len(data) < 10:
        return None
    width, height = struct.unpack("<HH", data[6:10])
    return int(width), int(height)


def _bmp_size(data: bytes) -> tuple[int, int] | None:
    if data[:2] != b"BM" or len(data) < 26:
        return None
    if struct.unpack("<I", data[14:18])[0] == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
        width, height = struct.unpack("<HH", data[18:22])
    else:
        width, height = struct.unpack("<ii", data[18:26])
    return abs(int(width)), abs(int(height))


_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # not DHT, JPG, DAC


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """The first frame header's size, wherever it is: walks the segments as libjpeg does.

    Bytes between segments are skipped up to the next ``0xFF`` (libjpeg warns and goes on), a
    run of ``0xFF`` is fill, ``0xFF00`` is not a marker. A scan or the end of the image before
    any frame header ends the walk: the decoder refuses such a file.
    """
    if data[:2] != b"\xff\xd8":
        return None
    i, n = 2, len(data)
    while True:
        i = data.find(b"\xff", i)
        if i < 0:
            return None
        while i < n and data[i] == 0xFF:
            i += 1
        if i + 3 > n:
            return None
        marker, i = data[i], i + 1
        if marker in (0xD9, 0xDA):  # EOI, SOS
            return None
        if marker == 0x00 or marker == 0x01 or 0xD0 <= marker <= 0xD8:  # no length field
            continue
        if marker in _JPEG_SOF:
            if i + 7 > n:
                return None
            height, width = struct.unpack(">HH", data[i + 3 : i + 7])
            return int(width), int(height)
        i += struct.unpack(">H", data[i : i + 2])[0]


_TIFF_INTEGERS = {3: "H", 4: "I", 16: "Q"}  # SHORT, LONG, LONG8
_TIFF_LAYOUTS = {42: ("I", 4, "H", "HHI"), 43: ("Q", 8, "Q", "HHQ")}
"""Classic TIFF and BigTIFF: directory offset (format, position), entry count, entry head."""


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    """ImageWidth and ImageLength of the first directory (the page OpenCV decodes)."""
    order = {b"II": "<", b"MM": ">"}.get(data[:2])
    if order is None or len(data) < 16:
        return None
    layout = _TIFF_LAYOUTS.get(struct.unpack(order + "H", data[2:4])[0])
    if layout is None:
        return None
    offset_fmt, offset_at, count_fmt, head_fmt = layout
    offset = struct.unpack_from(order + offset_fmt, data, offset_at)[0]
    count = struct.unpack_from(order + count_fmt, data, offset)[0]  # struct.error past the end
    head = struct.calcsize(order + head_fmt)
    entry = head + struct.calcsize(order + offset_fmt)  # the value field is as wide as an offset
    first = offset + struct.calcsize(order + count_fmt)
    found: dict[int, int] = {}
    for at in range(first, min(first + count * entry, len(data) - entry + 1), entry):
        tag, kind, _ = struct.unpack_from(order + head_fmt, data, at)
        if tag in (256, 257) and kind in _TIFF_INTEGERS:
            found[tag] = struct.unpack_from(order + _TIFF_INTEGERS[kind], data, at + head)[0]
    if 256 in found and 257 in found:
        return found[256], found[257]
    return None


def _header_numbers(data: bytes, start: int, count: int) -> list[int] | None:
    """``count`` decimal numbers after ``start`` in a Netpbm text header (``#`` comments)."""
    numbers: list[int] = []
    i, end = start, len(data)
    while len(numbers) < count:
        while i < end and (data[i] == 0x23 or data[i] in b" \t\r\n\v\f"):
            if data[i] == 0x23:  # a comment runs to the end of its line
                line_end = data.find(b"\n", i)
                i = end if line_end < 0 else line_end + 1
            else:
                i += 1
        j = i
        while j < end and 0x30 <= data[j] <= 0x39:
            j += 1
        if j == i:
            return None
        numbers.append(int(data[i:j]))
        i = j
    return numbers


def _netpbm_size(data: bytes) -> tuple[int, int] | None:
    """PBM, PGM, PPM (``P1``..``P6``), PFM (``PF``, ``Pf``) and PAM (``P7``) headers."""
    kind = data[:2]
    if kind in (b"P1", b"P2", b"P3", b"P4", b"P5", b"P6", b"PF", b"Pf"):
        numbers = _header_numbers(data, 2, 2)
        return None if numbers is None else (numbers[0], numbers[1])
    if kind == b"P7":
        end = data.find(b"ENDHDR")
        fields = dict(
            line.split()[:2]
            for line in data[2 : max(end, 2)].splitlines()
            if len(line.split()) >= 2
        )
        width, height = fields.get(b"WIDTH", b""), fields.get(b"HEIGHT", b"")
        if width.isdigit() and height.isdigit():
            return int(width), int(height)
    return None


def _sunraster_size(data: bytes) -> tuple[int, int] | None:
    if data[:4] != b"\x59\xa6\x6a\x95" or len(data) < 12:
        return None
    width, height = struct.unpack(">II", data[4:12])
    return int(width), int(height)


_RADIANCE_SIZE = re.compile(rb"\n\n([-+])([XY]) (\d+) ([-+])([XY]) (\d+)")


def _radiance_size(data: bytes) -> tuple[int, int] | None:
    """A Radiance HDR header: lines, an empty line, then e.g. ``-Y 480 +X 640``."""
    if data[:2] != b"#?":
        return None
    found = _RADIANCE_SIZE.search(data)
    if found is None:
        return None
    first, second = int(found.group(3)), int(found.group(6))
    return (second, first) if found.group(2) == b"Y" else (first, second)


def _jpeg2000_size(data: bytes) -> tuple[int, int] | None:
    """A J2K codestream's SIZ (also inside a JP2 file) and a JP2 ``ihdr`` box: the larger."""
    sizes = []
    siz = data.find(b"\xff\x4f\xff\x51")
    if (
        siz >= 0
        and (data[:4] == b"\xff\x4f\xff\x51" or data[4:8] == b"jP  ")
        and siz + 24 <= len(data)
    ):
        x, y, x0, y0 = struct.unpack(">IIII", data[siz + 8 : siz + 24])
        sizes.append((max(x - x0, 0), max(y - y0, 0)))
    ihdr = data.find(b"ihdr")
    if data[4:8] == b"jP  " and ihdr >= 0 and ihdr + 12 <= len(data):
        height, width = struct.unpack(">II", data[ihdr + 4 : ihdr + 12])
        sizes.append((int(width), int(height)))
    return max(sizes, key=lambda s: s[0] * s[1], default=None)


def _webp_size(data: bytes) -> tuple[int, int] | None:
    """The canvas of an extended WebP (simple ones cannot exceed 16384x16384)."""
    if data[:4] != b"RIFF" or data[8:16] != b"WEBPVP8X" or len(data) < 30:
        return None
    return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1


def _openexr_size(data: bytes) -> tuple[int, int] | None:
    """The ``dataWindow`` attribute of an OpenEXR header."""
    if data[:4] != b"\x76\x2f\x31\x01":
        return None
    at = data.find(b"dataWindow\x00box2i\x00", 8)
    if at < 0 or at + 37 > len(data):
        return None
    x0, y0, x1, y1 = struct.unpack("<iiii", data[at + 21 : at + 37])
    return max(x1 - x0 + 1, 0), max(y1 - y0 + 1, 0)


_HEADER_PARSERS = (
    _jpeg_size,
    _png_size,
    _gif_size,
    _bmp_size,
    _tiff_size,
    _netpbm_size,
    _sunraster_size,
    _radiance_size,
    _jpeg2000_size,
    _webp_size,
    _openexr_size,
)


def declared_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` an image file's header declares, read without decoding.

    Knows the formats OpenCV decodes whose size is not bounded by the format itself: JPEG
    (the frame header is found wherever it is, past segments of any size), PNG, GIF, BMP, TIFF
    and BigTIFF (first page), PBM/PGM/PPM/PAM/PFM, Sun raster, Radiance HDR, JPEG 2000 (J2K and
    JP2), extended WebP and OpenEXR. AVIF and simple WebP files cannot declare more than
    16384x16384 pixels.

    Args:
        data: The whole file (a header may lie anywhere in it).

    Returns:
        The declared size, or ``None`` for another format or a header that cannot be followed.
    """
    for parse in _HEADER_PARSERS:
        try:
            size = parse(data)
        except struct.error:  # a header cut short
            size = None
        if size is not None:
            return size
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
        raw = path.read_bytes()
    except OSError as e:
        raise InvalidImageError(f"cannot read {path}: {e}") from e
    return decode_image(raw, str(path))


EncodedImage: TypeAlias = "bytes | bytearray | memoryview | npt.NDArray[np.uint8]"
"""The bytes of an encoded image file: any bytes-like object, or a 1-D ``uint8`` array."""

_ENCODED = "bytes, bytearray, memoryview or a 1-D uint8 numpy array"


def _encoded_bytes(data: object, name: str) -> bytes:
    """``data`` as ``bytes``, if it is the bytes of a file; refuse anything else, saying why."""
    if isinstance(data, bytes):
        return data
    if data is None:
        raise InvalidImageError(
            f"expected the bytes of an image file ({_ENCODED}) as {name}, got None; did "
            "reading or downloading it fail?"
        )
    if isinstance(data, np.ndarray):
        if data.ndim == 1 and data.dtype == np.uint8:
            return data.tobytes()
        hint = (
            "; it looks like a decoded image already: pass it to recognize() or load_image()"
            if data.ndim in (2, 3) and data.dtype == np.uint8
            else "; the encoded file as np.frombuffer(data, np.uint8) is what cv2.imdecode takes"
        )
        raise InvalidImageError(
            f"expected the bytes of an image file ({_ENCODED}) as {name}, got a numpy array "
            f"of shape {data.shape} and dtype {data.dtype}{hint}"
        )
    if isinstance(data, (str, os.PathLike)):
        raise InvalidImageError(
            f"expected the bytes of an image file ({_ENCODED}) as {name}, got a "
            f"{type(data).__name__} ({_shown(data)}); to read a file by its path, use "
            "load_image(path)"
        )
    try:
        view = memoryview(cast("bytes", data))  # any object with the buffer protocol
    except TypeError:
        raise InvalidImageError(
            f"expected the bytes of an image file ({_ENCODED}) as {name}, got {type(data).__name__}"
        ) from None
    except ValueError as e:  # a released memoryview
        raise InvalidImageError(f"cannot read {name}: {e}") from e
    return view.tobytes()


def decode_image(data: EncodedImage, name: str = "the image data") -> npt.NDArray[np.uint8]:
    """Decode an encoded image (the bytes of a JPEG, PNG, ... file) to BGR, guarded.

    The size its header declares is checked first (:func:`declared_size`): a file that
    declares more than :data:`MAX_PIXELS` is refused before the decoder allocates anything.

    Args:
        data: The whole encoded file: ``bytes``, ``bytearray``, ``memoryview`` (any
            bytes-like object) or a 1-D ``uint8`` numpy array (what ``np.frombuffer(data,
            np.uint8)`` gives, the input of ``cv2.imdecode``).
        name: What to call it in error messages (a path, "the URL ...").

    Returns:
        An HxWx3 BGR ``uint8`` array.

    Raises:
        InvalidImageError: It is not bytes-like (``None``, a ``str`` or path, a decoded image,
            another type), is empty, declares too many pixels, or OpenCV cannot decode it.
    """
    data = _encoded_bytes(data, name)
    if not data:
        raise InvalidImageError(f"{name} is empty (0 bytes), not an image")
    size = declared_size(data)
    if size is not None and size[0] * size[1] > MAX_PIXELS:
        raise InvalidImageError(
            f"{name} declares {size[0]}x{size[1]} pixels, more than fer-onnx decodes "
            f"({MAX_PIXELS:,} pixels); shrink it first"
        )
    try:
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as e:
        raise InvalidImageError(f"cannot decode {name}: {str(e).strip()}") from e
    if image is None:
        raise InvalidImageError(
            f"cannot decode {name} as an image; expected a file OpenCV reads "
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


_BOX = "four numbers (x, y, width, height)"


def _box_numbers(box: object) -> list[int | float] | str:
    """The four values of a caller's box, or what is wrong with it (for the message)."""
    try:
        raw = np.asarray(box)
    except (TypeError, ValueError, OverflowError):  # ragged nesting
        return ""
    if raw.dtype.kind in "iuf":  # not text, bytes, None or booleans
        values: list[Any] = raw.reshape(-1).tolist()
    elif raw.dtype == object and raw.ndim == 1:  # ints beyond int64, mixed number types
        values = raw.tolist()
        if not all(is_real_number(v) for v in values):
            return ""
    else:
        return ""
    if len(values) != 4:
        return f" ({len(values)} values)"
    for v in values:
        try:
            finite = math.isfinite(v)
        except OverflowError:  # an int beyond float range, e.g. 10**400
            digits = int(v.bit_length() * math.log10(2)) + 1
            return f": an integer of about {digits} digits is too large to be a pixel coordinate"
        if not finite:
            return f": {v} is not a finite number"
    return values


def to_box(
    box: BoxLike,
    width: int,
    height: int,
    index: int = 0,
    *,
    error: type[FerOnnxError] = InvalidImageError,
) -> Box:
    """Validate a caller's box ``(x, y, width, height)`` and clip it to the image.

    Numbers of any size are taken (a box larger than the image is clipped to it); fractions
    are rounded to whole pixels. A :class:`Box` or a :class:`~fer_onnx.Detection` (its box)
    is taken as it is.

    Args:
        box: Four numbers (a tuple, list or array), a :class:`Box` or a ``Detection``.
        width: Image width in pixels.
        height: Image height in pixels.
        index: The box's place in the caller's list, for messages.
        error: The error class to raise.

    Raises:
        FerOnnxError: ``error`` (:class:`InvalidImageError` by default): the box is malformed
            (not four numbers, NaN or infinite values, a value too large for a float) or lies
            entirely outside the image.
    """
    if isinstance(box, Detection):
        box = box.box
    if isinstance(box, Box):
        x, y, w, h = box
    else:
        values = _box_numbers(box)
        if isinstance(values, str):
            raise error(f"box {index}: expected {_BOX}, got {_shown(box)}{values}")
        x, y, w, h = (v if isinstance(v, int) else int(round(v)) for v in values)
    if w <= 0 or h <= 0:
        raise error(f"box {index}: width and height must be positive, got {w}x{h}")
    x1, y1 = max(x, 0), max(y, 0)
    x2, y2 = min(x + w, width), min(y + h, height)
    if x2 <= x1 or y2 <= y1:
        raise error(
            f"box {index} ({_shown(x)}, {_shown(y)}, {_shown(w)}, {_shown(h)}) lies outside "
            f"the {width}x{height} image"
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
