"""Count the faces each detector finds on the real media, against a reference.

    python benchmarks/recall.py [--shared ../shared]

"True" faces are YuNet's detections at full resolution through ``cv2.FaceDetectorYN`` with score
>= 0.7 (a CNN detector that finds turned and small faces Haar cannot). A detection is a hit when
it overlaps a true face with IoU > 0.3. A "false" box overlaps nothing the same full-resolution
pass finds even at score >= 0.5: a box the reference merely scored between 0.5 and 0.7 (dim,
turned or half-hidden faces, which a smaller detection width scores differently) is neither a
hit nor false. Reports, per photo and per video (every frame), true faces
found and false boxes for: the seeds' Haar (scaleFactor 1.3, minNeighbors 5, full frame), the
Haar default (320 px wide), YuNet through ``cv2.FaceDetectorYN`` at 320 px wide, the default
(bundled YuNet on onnxruntime, 320 px wide), and video mode with the default and with Haar.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from fer_onnx import Box, EmotionRecognizer, HaarDetector, VideoRecognizer, YuNetDetector
from fer_onnx.detectors import as_detection
from fer_onnx.yunet import bundled_yunet_path

PHOTOS = (
    "two_people.jpg",
    "obama_and_biden.jpg",
    "astronaut.png",
    "obama.jpg",
    "biden.jpg",
    "justin.jpg",
)
VIDEOS = ("woman2.mp4", "short_hamilton_clip.mp4")


class OpenCVYuNet:
    """YuNet through ``cv2.FaceDetectorYN`` (the reference implementation), boxes only."""

    def __init__(self, model: Path, detect_width: int | None, score_threshold: float) -> None:
        self.detector = cv2.FaceDetectorYN.create(
            str(model), "", (320, 320), score_threshold, 0.3, 5000
        )
        self.detect_width = detect_width

    def detect(self, image: np.ndarray) -> list[Box]:
        return [box for box, _ in self.detect_scored(image)]

    def detect_scored(self, image: np.ndarray) -> list[tuple[Box, float]]:
        h, w = image.shape[:2]
        scale = (
            1.0 if self.detect_width is None or w <= self.detect_width else self.detect_width / w
        )
        small = (
            image
            if scale == 1.0
            else cv2.resize(
                image, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA
            )
        )
        self.detector.setInputSize((small.shape[1], small.shape[0]))
        _, faces = self.detector.detect(small)
        boxes = []
        for row in [] if faces is None else faces:
            x, y, bw, bh = row[:4] / scale
            x1, y1 = max(int(round(x)), 0), max(int(round(y)), 0)
            x2, y2 = min(int(round(x + bw)), w), min(int(round(y + bh)), h)
            if x2 > x1 and y2 > y1:
                boxes.append((Box(x1, y1, x2 - x1, y2 - y1), float(row[14])))
        return boxes


TRUE_SCORE = 0.7


def matched(found: list[Box], reference: list[tuple[Box, float]]) -> tuple[int, int]:
    """True faces found, and false boxes (overlapping no reference face of score >= 0.5)."""
    truth = [b for b, score in reference if score >= TRUE_SCORE]
    hits = sum(1 for t in truth if any(t.iou(f) > 0.3 for f in found))
    false = sum(1 for f in found if not any(f.iou(b) > 0.3 for b, _ in reference))
    return hits, false


def boxes_of(detector: object) -> Callable[[np.ndarray], list[Box]]:
    return lambda image: [as_detection(d).box for d in detector.detect(image)]  # type: ignore[attr-defined]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    default_shared = Path(
        os.environ.get("FER_ONNX_SHARED", Path(__file__).resolve().parents[2] / "shared")
    )
    parser.add_argument(
        "--shared", type=Path, default=default_shared, help="the shared data folder"
    )
    args = parser.parse_args(argv)
    media = args.shared / "media"
    yunet_file = args.shared / "models" / "face_detection_yunet_2023mar.onnx"
    if not yunet_file.is_file():
        yunet_file = bundled_yunet_path()
    reference = OpenCVYuNet(yunet_file, None, 0.5)
    still: dict[str, Callable[[np.ndarray], list[Box]]] = {
        "seed Haar 1.3/5": boxes_of(
            HaarDetector(scale_factor=1.3, min_neighbors=5, min_size=1, detect_width=None)
        ),
        "Haar default": boxes_of(HaarDetector()),
        "cv2 YuNet 320": boxes_of(OpenCVYuNet(yunet_file, 320, 0.7)),
        "default (YuNet ORT 320)": boxes_of(YuNetDetector(device="cpu")),
    }
    columns = [*still, "video mode (default)", "video mode (Haar)"]
    print("| media | reference faces | " + " | ".join(f"{c} found (false)" for c in columns) + " |")
    print("|---|---:|" + "---:|" * len(columns))
    for name in PHOTOS:
        image = cv2.imread(str(media / name))
        truth = reference.detect_scored(image)
        cells = [matched(f(image), truth) for f in still.values()]
        n_true = sum(score >= TRUE_SCORE for _, score in truth)
        print(f"| {name} | {n_true} | " + " | ".join(f"{h} ({x})" for h, x in cells) + " | - | - |")
    for name in VIDEOS:
        cap = cv2.VideoCapture(str(media / name))
        totals = {c: [0, 0] for c in columns}
        n_truth = 0
        with (
            EmotionRecognizer(device="cpu") as rec,
            EmotionRecognizer(detector="haar", device="cpu") as haar,
        ):
            videos = {
                "video mode (default)": VideoRecognizer(rec),
                "video mode (Haar)": VideoRecognizer(haar),
            }
            while True:
                ok, frame = cap.read()
                if not ok:
                    break
                truth = reference.detect_scored(frame)
                n_truth += sum(score >= TRUE_SCORE for _, score in truth)
                found = {c: f(frame) for c, f in still.items()}
                found.update({c: [r.box for r in v.process(frame)] for c, v in videos.items()})
                for c in columns:
                    hit, false = matched(found[c], truth)
                    totals[c][0] += hit
                    totals[c][1] += false
        cap.release()
        print(
            f"| {name} (all frames) | {n_truth} | "
            + " | ".join(f"{totals[c][0]} ({totals[c][1]})" for c in columns)
            + " |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
