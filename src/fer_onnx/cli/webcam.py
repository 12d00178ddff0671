"""``fer-onnx webcam``: a live window with boxes, labels and FPS; q or Esc quits.

    fer-onnx webcam [--camera 0|clip.mp4]

It needs OpenCV with a GUI (``opencv-python``, not the headless wheel) and a display.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import cv2

from fer_onnx.cli.options import add_model_options, recognizer
from fer_onnx.draw import draw_faces, draw_text
from fer_onnx.errors import VideoError
from fer_onnx.images import as_uint8
from fer_onnx.live import check_display, open_camera, parse_camera
from fer_onnx.video import VideoRecognizer

__all__ = ["add_webcam_parser"]


def _has_gui() -> bool:
    check_display()  # DisplayError: headless OpenCV or no display, with the fix
    return True


def _cmd_webcam(args: argparse.Namespace) -> int:
    _has_gui()
    cap, _ = open_camera(args.camera)
    window = "fer-onnx (q or Esc quits)"
    try:
        with recognizer(args) as rec:
            video = VideoRecognizer(rec, smoothing=0 if args.no_smoothing else args.smoothing)
            last = time.perf_counter()
            fps = 0.0
            while True:
                ok, frame = cap.read()
                if not ok:
                    if isinstance(args.camera, str):
                        break  # the replayed file ended
                    raise VideoError(f"camera {args.camera} stopped delivering frames")
                faces = video.process(as_uint8(frame))
                image = draw_faces(as_uint8(frame), faces, copy=False)
                now = time.perf_counter()
                fps = 0.9 * fps + 0.1 / max(now - last, 1e-6) if fps else 1 / max(now - last, 1e-6)
                last = now
                draw_text(image, f"{fps:5.1f} FPS", (8, 24))
                cv2.imshow(window, image)
                if cv2.waitKey(1) & 0xFF in (ord("q"), 27):
                    break
    except KeyboardInterrupt:
        pass
    finally:
        cap.release()
        cv2.destroyAllWindows()
    return 0


def add_webcam_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``fer-onnx webcam`` on the CLI's subparsers (from ``add_subparsers``).

    Args:
        subparsers: The top-level parser's sub-command action.

    Returns:
        The sub-command's parser; its ``args.func(args)`` returns the exit code.
    """
    p: argparse.ArgumentParser = subparsers.add_parser(
        "webcam",
        help="live webcam window",
        description="Live window with boxes, labels and FPS; q or Esc quits.",
    )
    p.add_argument(
        "--camera",
        type=parse_camera,
        default=0,
        help="camera index (default 0), or a video file to replay",
    )
    p.add_argument("--smoothing", type=float, default=5.0, help="EMA window in frames")
    p.add_argument("--no-smoothing", action="store_true", help="report raw probabilities")
    add_model_options(p)
    p.set_defaults(func=_cmd_webcam)
    return p
