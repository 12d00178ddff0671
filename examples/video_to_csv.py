"""Write one CSV row per face per frame of a video, with track ids and smoothed probabilities.

    python examples/video_to_csv.py clip.mp4 faces.csv [--every 2]

Uses only the public API: VideoSource / VideoRecognizer / CsvSink. The CSV appears only when
the whole video was processed (Ctrl-C leaves nothing behind).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fer_onnx import CsvSink, EmotionRecognizer, VideoRecognizer, VideoSource, finish_all


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("video", type=Path, help="input video")
    parser.add_argument("csv", type=Path, help="output csv ('-' for standard output)")
    parser.add_argument("--every", type=int, default=1, help="process every N-th frame")
    parser.add_argument(
        "--model", default="default", help="'default', 'fp32', 'int8' or an .onnx path"
    )
    args = parser.parse_args(argv)
    rows = 0
    with (
        EmotionRecognizer(args.model) as rec,
        VideoSource(args.video, every=args.every) as source,
        CsvSink(args.csv, rec.labels) as sink,
    ):
        video = VideoRecognizer(rec)
        for frame in source:
            faces = video.process(frame.image)
            sink.write(frame, faces)
            rows += len(faces)
        finish_all([sink])
    print(f"{source.stats.summary()}; {rows} face rows -> {args.csv}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
