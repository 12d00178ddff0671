"""Writing annotated videos: the format follows the file's suffix, encoded with PyAV.

PyAV (``pip install 'fer-onnx[video]'``, FFmpeg's libraries in a wheel) writes every format
below. Without it, OpenCV's writer is the fallback for the suffixes it can serve, and a
:class:`VideoFallbackWarning` says what it writes instead; the others are refused.

Suffix: what PyAV writes / what the OpenCV fallback writes without PyAV.

* ``.mp4``, ``.m4v``, ``.mov``: H.264 (yuv420p, index first) / MPEG-4 Part 2 (``mp4v``),
  which browsers and most chat apps cannot play;
* ``.mkv``: H.264 / MPEG-4 Part 2 (``mp4v``);
* ``.webm``: VP9 / refused;
* ``.avi``: MPEG-4 Part 2 / Motion JPEG;
* ``.gif``: GIF (256 fixed colours) / refused.

A name without a suffix (``-`` for standard output, ``/dev/null``) gets MP4. Any other suffix
is refused with :class:`~fer_onnx.errors.OutputError` listing these. H.264 and VP9 store
4:2:0 colour, which needs even sizes: an odd last row or column is dropped.
"""

from __future__ import annotations

import contextlib
import logging
import math
import numbers
import operator
import os
import warnings
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal, Protocol

import cv2
import numpy as np
import numpy.typing as npt

from fer_onnx._checks import _shown
from fer_onnx.errors import InvalidOptionError, InvalidTypeError, OutputError

log = logging.getLogger(__name__)

__all__ = [
    "VIDEO_FORMATS",
    "VideoBackend",
    "VideoFallbackWarning",
    "VideoFormat",
    "count_video_frames",
    "open_video_writer",
    "video_format",
]

VideoBackend = Literal["auto", "pyav", "opencv"]
"""Which library encodes: ``auto`` is PyAV when installed, else OpenCV's fallback."""

PYAV_HINT = "pip install 'fer-onnx[video]' (PyAV)"


class VideoFallbackWarning(UserWarning):
    """PyAV is not installed, so OpenCV writes the video in a less playable codec."""


@dataclass(frozen=True)
class VideoFormat:
    """How one suffix is written.

    Attributes:
        suffix: The file suffix, lower case with the dot (``".mp4"``).
        container: FFmpeg's name of the container format (``"mp4"``).
        codec: The PyAV encoder (``"libx264"``).
        pix_fmt: The encoder's pixel format.
        description: What the file holds, in words.
        options: Encoder options.
        container_options: Muxer options (``movflags=+faststart`` puts the MP4 index first, so
            a browser can start playing before the whole file is there).
        fallback: OpenCV's FourCC without PyAV, or ``None`` when OpenCV cannot write it.
        fallback_description: What the fallback writes, in words.
    """

    suffix: str
    container: str
    codec: str
    pix_fmt: str
    description: str
    options: dict[str, str] = field(default_factory=dict)
    container_options: dict[str, str] = field(default_factory=dict)
    fallback: str | None = None
    fallback_description: str = ""

    @property
    def even_size(self) -> bool:
        """Whether the encoder needs an even width and height (4:2:0 chroma)."""
        return self.pix_fmt == "yuv420p"


_H264 = {"preset": "veryfast", "crf": "23"}
_MP4V = "MPEG-4 Part 2 (mp4v), which browsers and most chat apps cannot play"


def _h264(suffix: str, container: str, faststart: bool = True) -> VideoFormat:
    return VideoFormat(
        suffix,
        container,
        "libx264",
        "yuv420p",
        "H.264",
        options=dict(_H264),
        container_options={"movflags": "+faststart"} if faststart else {},
        fallback="mp4v",
        fallback_description=_MP4V,
    )


VIDEO_FORMATS: dict[str, VideoFormat] = {
    ".mp4": _h264(".mp4", "mp4"),
    ".m4v": _h264(".m4v", "mp4"),
    ".mov": _h264(".mov", "mov"),
    ".mkv": _h264(".mkv", "matroska", faststart=False),
    ".webm": VideoFormat(
        ".webm",
        "webm",
        "libvpx-vp9",
        "yuv420p",
        "VP9",
        options={"deadline": "realtime", "cpu-used": "8", "row-mt": "1", "crf": "32", "b": "0"},
    ),
    ".avi": VideoFormat(
        ".avi",
        "avi",
        "mpeg4",
        "yuv420p",
        "MPEG-4 Part 2",
        options={"qscale": "3"},
        fallback="MJPG",
        fallback_description="Motion JPEG",
    ),
    ".gif": VideoFormat(".gif", "gif", "gif", "rgb8", "GIF"),
}
"""Every suffix an annotated video may have (see the module docstring)."""


def supported_suffixes() -> str:
    """The supported suffixes, for messages: ``.mp4, .m4v, ...``."""
    return ", ".join(VIDEO_FORMATS)


def video_format(path: str | os.PathLike[str]) -> VideoFormat:
    """The format a video output is written in, from its suffix (no suffix: MP4).

    Raises:
        OutputError: The suffix is not one of :data:`VIDEO_FORMATS`.
    """
    suffix = Path(os.fspath(path)).suffix.lower()
    if suffix == "":
        return VIDEO_FORMATS[".mp4"]
    fmt = VIDEO_FORMATS.get(suffix)
    if fmt is None:
        raise OutputError(
            f"cannot write a video as {os.fspath(path)!r}: the suffix {suffix!r} is not a video "
            f"format fer-onnx writes; use one of {supported_suffixes()} (.mp4 = H.264)"
        )
    return fmt


def _import_av() -> Any:
    try:
        import av
    except ImportError:
        return None
    return av


def pyav_available() -> bool:
    """Whether PyAV can be imported."""
    return _import_av() is not None


class FrameWriter(Protocol):
    """An open video file that takes BGR frames of one size."""

    description: str

    def write(self, image: npt.NDArray[np.uint8]) -> None:
        """Append one BGR frame of the writer's size."""
        ...

    def close(self) -> None:
        """Flush and close the file (safe to call twice)."""
        ...

    def abort(self) -> None:
        """Close without flushing, never raising (the file is to be discarded)."""
        ...


class _PyAVWriter:
    def __init__(self, path: Path, fmt: VideoFormat, fps: float, size: tuple[int, int]) -> None:
        av = _import_av()
        self._av = av
        self.description = f"{fmt.description} in {fmt.container.upper()} (PyAV)"
        width, height = size
        if fmt.even_size:
            width, height = max(2, width - width % 2), max(2, height - height % 2)
        self.size = (width, height)
        self.rate = Fraction(fps).limit_denominator(10_000)
        try:
            self._container: Any = av.open(
                str(path), mode="w", format=fmt.container, container_options=fmt.container_options
            )
            self._stream: Any = self._container.add_stream(
                fmt.codec, rate=self.rate, options=fmt.options
            )
            self._stream.width, self._stream.height = width, height
            self._stream.pix_fmt = fmt.pix_fmt
        except (av.FFmpegError, ValueError) as e:
            self.abort()
            raise OutputError(
                f"cannot write {fmt.description} ({fmt.codec}) with this PyAV build: {e}"
            ) from e
        self._count = 0

    def write(self, image: npt.NDArray[np.uint8]) -> None:
        width, height = self.size
        frame = self._av.VideoFrame.from_ndarray(
            np.ascontiguousarray(image[:height, :width]), format="bgr24"
        )
        frame.pts = self._count
        frame.time_base = 1 / self.rate
        self._count += 1
        try:
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        except self._av.FFmpegError as e:
            raise OutputError(f"encoding failed: {e}") from e

    def close(self) -> None:
        if self._container is None:
            return
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
        except self._av.FFmpegError as e:
            self.abort()
            raise OutputError(f"encoding failed: {e}") from e
        container, self._container = self._container, None
        try:
            container.close()
        except self._av.FFmpegError as e:
            raise OutputError(f"closing the file failed: {e}") from e

    def abort(self) -> None:
        container, self._container = getattr(self, "_container", None), None
        if container is not None:
            with contextlib.suppress(self._av.FFmpegError, OSError):
                container.close()


class _OpenCVWriter:
    def __init__(self, path: Path, fourcc: str, fps: float, size: tuple[int, int]) -> None:
        self.description = f"{fourcc.strip()} (OpenCV)"
        self.size = size
        self._writer: cv2.VideoWriter | None = cv2.VideoWriter(
            str(path), cv2.VideoWriter.fourcc(*fourcc), fps, size
        )
        if not self._writer.isOpened():
            self.close()
            raise OutputError(f"OpenCV cannot open a {fourcc} video writer; {PYAV_HINT}")

    def write(self, image: npt.NDArray[np.uint8]) -> None:
        if self._writer is not None:
            self._writer.write(image)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None

    def abort(self) -> None:
        self.close()


MAX_FPS = 1_000_000.0
MAX_SIDE = 65_535


def check_writer_options(
    fps: object, size: object, backend: object = "auto"
) -> tuple[float, tuple[int, int]]:
    """Check a video writer's frame rate, size and backend before any file is created.

    Returns:
        ``fps`` as a float and ``size`` as a (width, height) pair of ints.

    Raises:
        InvalidTypeError: ``size`` is not a pair of integers, or ``fps`` not a number.
        InvalidOptionError: ``fps`` is not finite and > 0, a side is not within 1..65535, or
            ``backend`` is not ``"auto"``, ``"pyav"`` or ``"opencv"``.
    """
    if isinstance(fps, bool) or not isinstance(fps, numbers.Real):
        raise InvalidTypeError(f"fps must be a number > 0, got {_shown(fps)}")
    try:
        rate = float(fps)
    except OverflowError:  # an int beyond float range
        rate = math.inf
    if not (math.isfinite(rate) and 0 < rate <= MAX_FPS):
        raise InvalidOptionError(
            f"fps must be a finite number in (0, {MAX_FPS:g}], got {_shown(fps)}"
        )
    if not isinstance(size, (tuple, list)) or len(size) != 2:
        raise InvalidTypeError(
            f"size must be a (width, height) pair of integers, got {_shown(size)}"
        )
    sides = []
    for name, side in zip(("width", "height"), size, strict=True):
        if isinstance(side, bool) or not isinstance(side, numbers.Integral):
            raise InvalidTypeError(
                f"size must be a (width, height) pair of integers, got {_shown(size)}"
            )
        if not 1 <= operator.index(side) <= MAX_SIDE:
            raise InvalidOptionError(f"the video's {name} must be within 1..{MAX_SIDE}, got {side}")
        sides.append(operator.index(side))
    if backend not in ("auto", "pyav", "opencv"):
        raise InvalidOptionError(
            f"video backend must be 'auto', 'pyav' or 'opencv', got {_shown(backend)}"
        )
    return rate, (sides[0], sides[1])


def open_video_writer(
    path: str | os.PathLike[str],
    fmt: VideoFormat,
    fps: float,
    size: tuple[int, int],
    backend: VideoBackend = "auto",
) -> FrameWriter:
    """Open ``path`` for writing BGR frames of ``size`` (width, height) in ``fmt``.

    Args:
        path: The file to create (its suffix does not matter: ``fmt`` decides).
        fmt: From :func:`video_format`.
        fps: Frames per second.
        size: Width and height of every frame written (odd sizes are cropped to even ones
            for 4:2:0 formats).
        backend: ``"auto"`` (PyAV, else OpenCV with a :class:`VideoFallbackWarning`),
            ``"pyav"`` or ``"opencv"``.

    Raises:
        InvalidTypeError: ``fps`` or ``size`` is of the wrong type.
        InvalidOptionError: ``fps``, ``size`` or ``backend`` is out of range
            (:func:`check_writer_options`).
        OutputError: The backend is missing or cannot write ``fmt``, or the file cannot be
            created.
    """
    fps, size = check_writer_options(fps, size, backend)
    if backend != "opencv" and pyav_available():
        return _PyAVWriter(Path(path), fmt, fps, size)
    if backend == "pyav" or fmt.fallback is None:
        raise OutputError(
            f"writing {fmt.suffix} ({fmt.description}) needs PyAV, which is not installed: "
            f"{PYAV_HINT}"
        )
    if backend == "auto":
        warnings.warn(
            f"PyAV is not installed, so {fmt.suffix} is written by OpenCV as "
            f"{fmt.fallback_description} instead of {fmt.description}; {PYAV_HINT}",
            VideoFallbackWarning,
            stacklevel=3,
        )
    return _OpenCVWriter(Path(path), fmt.fallback, fps, size)


def count_video_frames(path: str | os.PathLike[str]) -> int:
    """How many video frames ``path`` holds (-1 when it cannot be read).

    PyAV counts the video stream's packets (no decoding); without PyAV, OpenCV's frame count.
    """
    av = _import_av()
    if av is None:
        check = cv2.VideoCapture(os.fspath(path))
        try:
            return int(check.get(cv2.CAP_PROP_FRAME_COUNT)) if check.isOpened() else -1
        finally:
            check.release()
    try:
        with av.open(os.fspath(path)) as container:
            if not container.streams.video:
                return -1
            stream = container.streams.video[0]
            return sum(1 for packet in container.demux(stream) if packet.size)
    except (av.FFmpegError, OSError) as e:
        log.debug("cannot read back %s: %s", path, e)
        return -1
