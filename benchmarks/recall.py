"""Count the faces each detector setting finds on the real media, against the seeds' Haar.

    python benchmarks/recall.py [--shared ../shared]

"True" faces are YuNet's detections at full resolution (a CNN detector that finds turned and
small faces Haar cannot); a Haar box counts when it overlaps one with IoU > 0.3. Reports, per
image and per video (every frame), true faces found and false boxes for: the seeds' Haar
(scaleFactor 1.3, minNeighbors 5, full frame), our default HaarDetector, and video mode
(VideoRecognizer's region search) with the default detector.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import cv2

from fer_onnx import Box, EmotionRecognizer, HaarDetector, VideoRecognizer, YuNetDetector

PHOTOS = ("two_people.jpg", "obama_and_biden.jpg", "astronaut.png", "obama.jpg", "biden.jpg", "justin.jpg")
VIDEOS = ("woman2.mp4", "short_hamilton_clip.mp4")


def matched(found: list[Box], truth: list[Box]) -> tuple[int, int]:
    hits = sum(1 for t in truth if any(t.iou(f) > 0.3 for f in found))
    return hits, max(len(found) - hits, 0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_shared = Path(os.environ.get("FER_ONNX_SHARED", Path(__file__).resolve().parents[2] / "shared"))
    parser.add_argument("--shared", type=Path, default=default_shared, help="the shared data folder")
    args = parser.parse_args(argv)
    media, yunet = args.shared / "media", args.shared / "models" / "face_detection_yunet_2023mar.onnx"
    reference = YuNetDetector(yunet, detect_width=None)
    seed = HaarDetector(scale_factor=1.3, min_neighbors=5, min_size=1, detect_width=None)
    ours = HaarDetector()
    print("| media | reference faces | seed Haar 1.3/5 found (false) | default found (false) | video mode found (false) |")
    print("|---|---:|---:|---:|---:|")
    for name in PHOTOS:
        image = cv2.imread(str(media / name))
        truth = reference.detect(image)
        s, d = matched(seed.detect(image), truth), matched(ours.detect(image), truth)
        print(f"| {name} | {len(truth)} | {s[0]} ({s[1]}) | {d[0]} ({d[1]}) | - |")
    for name in VIDEOS:
        cap = cv2.VideoCapture(str(media / name))
        totals = {"truth": 0, "seed": [0, 0], "default": [0, 0], "video": [0, 0]}
        with EmotionRecognizer(detector=ours) as rec:
            video = VideoRecognizer(rec)
            while True:
                ok, frame = cap.read()
                if not ok:
                    break
                truth = reference.detect(frame)
                totals["truth"] += len(truth)  # type: ignore[operator]
                for key, boxes in (("seed", seed.detect(frame)), ("default", ours.detect(frame)),
                                   ("video", [f.box for f in video.process(frame)])):
                    hit, false = matched(boxes, truth)
                    totals[key][0] += hit  # type: ignore[index]
                    totals[key][1] += false  # type: ignore[index]
        cap.release()
        row = " | ".join(f"{totals[k][0]} ({totals[k][1]})" for k in ("seed", "default", "video"))  # type: ignore[index]
        print(f"| {name} (all frames) | {totals['truth']} | {row} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
