"""Write one CSV row per face per frame of a video, with track ids and smoothed probabilities.

    python examples/video_to_csv.py clip.mp4 faces.csv [--every 2]

Uses only the public API: open_video / read_frames / VideoRecognizer.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from fer_onnx import EmotionRecognizer, VideoRecognizer, open_video, read_frames


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("video", type=Path, help="input video")
    parser.add_argument("csv", type=Path, help="output csv")
    parser.add_argument("--every", type=int, default=1, help="process every N-th frame")
    parser.add_argument(
        "--model", default="default", help="'default', 'fp32', 'int8' or an .onnx path"
    )
    args = parser.parse_args(argv)
    cap, stats = open_video(args.video)
    rows = 0
    try:
        with EmotionRecognizer(args.model) as rec, args.csv.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(
                [
                    "frame",
                    "timestamp",
                    "track_id",
                    "x",
                    "y",
                    "width",
                    "height",
                    "label",
                    "score",
                    *rec.labels,
                ]
            )
            video = VideoRecognizer(rec)
            for frame in read_frames(cap, stats, every=args.every):
                for face in video.process(frame.image):
                    writer.writerow(
                        [
                            frame.index,
                            f"{frame.timestamp:.3f}",
                            face.track_id,
                            *face.box.to_tuple(),
                            face.label,
                            f"{face.score:.4f}",
                            *(f"{p:.4f}" for p in face.probabilities.values()),
                        ]
                    )
                    rows += 1
    finally:
        cap.release()
    print(f"{stats.read} frames, {rows} face rows, {stats.corrupt} corrupt frames -> {args.csv}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
