"""Live windows: which camera (or replayed file) to read, and whether OpenCV can show a window.

``fer-onnx webcam`` and ``examples/webcam.py`` share these, so they accept the same sources and
explain the same problems:

* :func:`parse_camera` reads ``--camera``: all digits is a camera index, anything else a video
  file to replay (write ``./2024`` for a file named ``2024``);
* :func:`open_camera` opens it, with advice about cameras (not codecs) when a camera is missing;
* :func:`check_display` raises :class:`DisplayError` when no window can be shown: the
  ``opencv-python-headless`` wheel (what ``pip install fer-onnx`` brings) has no GUI at all,
  and a Linux session without ``DISPLAY`` / ``WAYLAND_DISPLAY`` has no screen.
"""

from __future__ import annotations

import glob
import os
import sys
from importlib.metadata import PackageNotFoundError, version

import cv2

from fer_onnx.errors import FerOnnxError, VideoError
from fer_onnx.video import VideoStats, open_video

__all__ = [
    "GUI_FIX",
    "DisplayError",
    "check_display",
    "display_problems",
    "open_camera",
    "opencv_gui",
    "parse_camera",
]

GUI_FIX = "pip uninstall -y opencv-python-headless && pip install 'opencv-python>=4.8,<5'"
"""The command that swaps the headless OpenCV wheel for the one with windows (same ``cv2``)."""

_OPENCV_WHEELS = (
    "opencv-python-headless",
    "opencv-contrib-python-headless",
    "opencv-python",
    "opencv-contrib-python",
)


class DisplayError(FerOnnxError, RuntimeError):
    """No window can be shown: OpenCV is a headless build, or there is no display."""


def opencv_gui(build_information: str | None = None) -> str | None:
    """The GUI backend OpenCV was built with (``"GTK3"``, ``"QT5"``, ``"WIN32UI"``, ...).

    Args:
        build_information: ``cv2.getBuildInformation()`` (read when ``None``).

    Returns:
        The backend's name, or ``None`` for a headless build (``GUI: NONE``).
    """
    info = cv2.getBuildInformation() if build_information is None else build_information
    lines = info.splitlines()
    for i, line in enumerate(lines):
        key, _, value = line.strip().partition(":")
        if key != "GUI":
            continue
        value = value.strip()
        if value:
            return None if value.upper() == "NONE" else value
        # Older layout: "GUI:" then one indented "NAME: YES (...)" line per backend.
        indent = len(line) - len(line.lstrip())
        for sub in lines[i + 1 :]:
            if len(sub) - len(sub.lstrip()) <= indent:
                break
            name, _, answer = sub.strip().partition(":")
            if answer.strip().upper().startswith("YES"):
                return name.strip().rstrip("+")
        return None
    return None


def _opencv_wheel() -> str:
    for name in _OPENCV_WHEELS:
        try:
            return f"{name} {version(name)}"
        except PackageNotFoundError:
            continue
    return f"OpenCV {cv2.__version__}"


def display_problems() -> list[str]:
    """Why no window can be shown, each with its fix (empty when windows work)."""
    problems = []
    if opencv_gui() is None:
        problems.append(
            f"this OpenCV ({_opencv_wheel()}) is a headless build, which cannot open windows "
            f"(pip install fer-onnx brings the headless wheel); replace it: {GUI_FIX}"
        )
    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        problems.append(
            "no display available (DISPLAY and WAYLAND_DISPLAY are unset): run it in a desktop "
            "session, or over ssh -X"
        )
    if not problems:
        try:
            cv2.namedWindow("fer-onnx-probe", cv2.WINDOW_AUTOSIZE)
            cv2.destroyWindow("fer-onnx-probe")
        except cv2.error as e:
            problems.append(f"OpenCV cannot open a window: {e.msg.strip()}")
    return problems


def check_display() -> None:
    """Raise :class:`DisplayError` unless OpenCV can show a window here.

    Raises:
        DisplayError: The message lists every problem (headless OpenCV, no display) and its
            fix, and points to what works without a window.
    """
    problems = display_problems()
    if problems:
        raise DisplayError(
            "cannot show the webcam window: "
            + "; and ".join(problems)
            + ". Without a window: `fer-onnx video clip.mp4 --out annotated.mp4` on a "
            "recording, or `fer-onnx web` for the webcam in a browser."
        )


def parse_camera(text: str) -> int | str:
    """``--camera``'s value: all digits is a camera index, anything else a video file's path."""
    return int(text) if text.isdigit() else text


def _cameras_found() -> str:
    if not sys.platform.startswith("linux"):
        return ""
    devices = sorted(glob.glob("/dev/video*"))
    if not devices:
        return "; this machine has no /dev/video* device"
    return f"; video devices here: {', '.join(devices)}"


def open_camera(source: int | str) -> tuple[cv2.VideoCapture, VideoStats]:
    """Open camera ``source`` (an index) or, for a string, the video file it names.

    Raises:
        VideoError: No such camera (or it is busy, or not permitted), with camera advice; for
            a file, :func:`~fer_onnx.video.open_video`'s errors.
    """
    if isinstance(source, bool) or not isinstance(source, int) or source < 0:
        return open_video(source)  # a path, or the error for a negative index / wrong type
    try:
        return open_video(source)
    except VideoError as e:
        raise VideoError(
            f"cannot open camera {source}: there is no camera with that index, or another "
            f"program is using it, or this user may not read it{_cameras_found()}. Try "
            "another --camera index, or pass a video file to replay."
        ) from e
