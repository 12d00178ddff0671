"""The webcam loop, done right: tracked faces, smoothed labels, FPS, q or Esc to quit.

    python examples/webcam.py [--camera 0] [--model int8]

Needs a camera and a display (opencv-python with GUI rather than the headless wheel).
Capture, inference and drawing stay separate; the recognizer and camera are always released.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from collections.abc import Callable

import cv2
import numpy as np

from fer_onnx import EmotionRecognizer, VideoError, VideoRecognizer, draw_faces, open_video


def run(
    camera: int | str,
    model: str,
    show: Callable[[np.ndarray], bool],
    max_frames: int | None = None,
) -> int:
    """Process frames until ``show`` returns False (or ``max_frames``); returns frames shown."""
    cap, _ = open_video(camera)
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


def show_window(image: np.ndarray) -> bool:
    """Show a frame; False when q or Esc is pressed."""
    cv2.imshow("fer-onnx (q or Esc quits)", image)
    return cv2.waitKey(1) & 0xFF not in (ord("q"), 27)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--camera", default="0", help="camera index, or a video file to replay")
    parser.add_argument(
        "--model", default="default", help="'default', 'fp32', 'int8' or an .onnx path"
    )
    args = parser.parse_args(argv)
    camera: int | str = int(args.camera) if args.camera.isdigit() else args.camera
    try:
        run(camera, args.model, show_window)
    except VideoError as e:
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
