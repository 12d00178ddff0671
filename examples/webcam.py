"""The webcam loop, done right: tracked faces, smoothed labels, FPS, q or Esc to quit.

    python examples/webcam.py [--camera 0] [--model int8]
    python examples/webcam.py --camera clip.mp4      (replay a video file instead)

Needs a camera and a display, and OpenCV with windows: pip install fer-onnx brings the
headless wheel, so swap it first:
    pip uninstall -y opencv-python-headless && pip install 'opencv-python>=4.8,<5'
Capture, inference and drawing stay separate; the recognizer and camera are always released.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable

import cv2
import numpy as np

from fer_onnx import EmotionRecognizer, VideoError, VideoRecognizer, draw_faces
from fer_onnx.live import DisplayError, check_display, open_camera, parse_camera


def run(
    camera: int | str,
    model: str,
    show: Callable[[np.ndarray], bool],
    max_frames: int | None = None,
) -> int:
    """Process frames until ``show`` returns False (or ``max_frames``); returns frames shown.

    ``camera`` is a camera index, or the path of a video file to replay.
    """
    cap, _ = open_camera(camera)
    shown = 0
    try:
        with EmotionRecognizer(model) as rec:
            video = VideoRecognizer(rec)
            last, fps = time.perf_counter(), 0.0
            while max_frames is None or shown < max_frames:
                ok, frame = cap.read()
                if not ok:
                    break
                image = draw_faces(frame, video.process(frame), copy=False)
                now = time.perf_counter()
                fps = (
                    1.0 / max(now - last, 1e-6)
                    if not fps
                    else 0.9 * fps + 0.1 / max(now - last, 1e-6)
                )
                last = now
                cv2.putText(
                    image,
                    f"{fps:.1f} FPS",
                    (8, 24),
                    cv2.FONT_HERSHEY_SIMPLEX,
                    0.7,
                    (255, 255, 255),
                    2,
                )
                shown += 1
                if not show(image):
                    break
    finally:
        cap.release()
    return shown


def window(title: str = "fer-onnx (q or Esc quits)") -> Callable[[np.ndarray], bool]:
    """A ``show`` for :func:`run`: each frame in a window; False when q or Esc is pressed.

    The first frame checks that a window can open at all (DisplayError says why not: headless
    OpenCV or no display, with the fix).
    """
    checked = False

    def show(image: np.ndarray) -> bool:
        nonlocal checked
        if not checked:
            check_display()
            checked = True
        cv2.imshow(title, image)
        return cv2.waitKey(1) & 0xFF not in (ord("q"), 27)

    return show


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--camera", default="0", help="camera index, or a video file to replay")
    parser.add_argument(
        "--model", default="default", help="'default', 'fp32', 'int8' or an .onnx path"
    )
    args = parser.parse_args(argv)
    try:
        run(parse_camera(args.camera), args.model, window())
    except (VideoError, DisplayError) as e:
        print(f"error: {e}")
        return 2
    except cv2.error as e:
        print(
            f"error: cannot open a window ({e.msg.strip()}); install opencv-python with GUI support"
        )
        return 2
    finally:
        with contextlib.suppress(cv2.error):  # headless OpenCV: there were no windows
            cv2.destroyAllWindows()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
