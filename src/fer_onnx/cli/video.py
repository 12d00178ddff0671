"""``fer-onnx video``: faces, tracks and expressions of a video file, to tables, video, plot.

    fer-onnx video clip.mp4 [--csv faces.csv] [--json faces.json] [--out annotated.mp4]
                            [--plot timeline.png] [--every N]

Exit codes: 0 every frame analysed; 2 not one frame could be decoded (a VideoError: no output is
written); 3 the video was only partly analysed (frames that could not be decoded; its outputs
are written).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from fer_onnx.cli.console import plural
from fer_onnx.cli.options import add_model_options, path_argument, positive_int, recognizer
from fer_onnx.errors import InvalidOptionError
from fer_onnx.outputs import STDOUT, check_outputs, deferred_signals
from fer_onnx.sinks import CsvSink, JsonSink, TimelineSink, VideoSink, finish_all
from fer_onnx.video import VideoRecognizer, VideoSource, require_frames

__all__ = ["add_video_parser"]


class _Progress:
    """A one-line progress bar on stderr: frames, fps, ETA."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.enabled = total, enabled
        self.start = time.perf_counter()
        self.last = 0.0

    def update(self, done: int, force: bool = False) -> None:
        now = time.perf_counter()
        if not self.enabled or (not force and now - self.last < 0.2):
            return
        self.last = now
        fps = done / max(now - self.start, 1e-9)
        if self.total:
            eta = (self.total - done) / fps if fps > 0 else 0.0
            bar = "#" * int(30 * done / self.total)
            line = f"\r[{bar:<30}] {done}/{self.total} frames {fps:6.1f} fps ETA {eta:5.1f}s"
        else:
            line = f"\r{done} frames {fps:6.1f} fps"
        sys.stderr.write(line)
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def _sinks(
    args: argparse.Namespace,
    labels: Sequence[str],
    source: VideoSource,
    stack: contextlib.ExitStack,
) -> list[Any]:
    """Open each requested sink and enter it at once, so a later failure discards it.

    Signals are held back while the sinks open: one that arrives meanwhile stops the run once
    every temporary file is registered for cleanup.
    """
    with deferred_signals():
        return _open_sinks(args, labels, source, stack)


def _open_sinks(
    args: argparse.Namespace,
    labels: Sequence[str],
    source: VideoSource,
    stack: contextlib.ExitStack,
) -> list[Any]:
    stats = source.stats
    sinks: list[Any] = []
    # the `source` column names the video as a batch table does: its absolute path
    name = os.path.abspath(os.path.expanduser(os.fspath(args.path)))
    if args.csv is not None:
        sinks.append(stack.enter_context(CsvSink(args.csv, labels, source=name)))
    if args.json is not None:
        sinks.append(stack.enter_context(JsonSink(args.json, source=name)))
    if args.out is not None:
        size = (stats.width, stats.height)
        sinks.append(stack.enter_context(VideoSink(args.out, stats.fps / args.every, size)))
    if args.plot is not None:
        title = f"{source.name}: expression probabilities per track"
        sinks.append(stack.enter_context(TimelineSink(args.plot, labels, title)))
    return sinks


def _cmd_video(args: argparse.Namespace) -> int:
    check_outputs((args.csv, args.json, args.out, args.plot), [args.path])
    with contextlib.ExitStack() as stack:
        source = stack.enter_context(VideoSource(args.path, every=args.every))
        if all(o is None for o in (args.csv, args.json, args.out, args.plot)):
            raise InvalidOptionError(
                "nothing to write: name at least one output, --csv FILE or --json FILE "
                "('-' for standard output), --out VIDEO or --plot IMAGE"
            )
        rec = stack.enter_context(recognizer(args))
        sinks = _sinks(args, rec.labels, source, stack)
        video = VideoRecognizer(
            rec,
            smoothing=0 if args.no_smoothing else args.smoothing,
            max_missed=args.max_missed,
            redetect_every=args.redetect_every,
        )
        stats = source.stats
        total = (stats.frame_count + args.every - 1) // args.every if stats.frame_count else 0
        progress = _Progress(total, not args.no_progress)
        faces_total, tracks = 0, set[int | None]()
        try:
            for frame in source:
                faces = video.process(frame.image)
                faces_total += len(faces)
                tracks.update(f.track_id for f in faces)
                for sink in sinks:
                    sink.write(frame, faces)
                progress.update(stats.read)
            progress.update(stats.read, force=True)
        except BaseException:
            progress.close()
            print(
                f"stopped at frame {source.last_index}; no output files were written",
                file=sys.stderr,
            )
            raise
        progress.close()
        # As `batch` says of such a video; the sinks are discarded.
        require_frames(stats, str(args.path), note="; no output was written")
        finish_all(sinks)
    print(
        f"{source.name}: {stats.summary()}; {plural(faces_total, 'face')}, "
        f"{plural(len(tracks), 'track')}",
        file=sys.stderr,
    )
    for name, path in (
        ("csv", args.csv),
        ("json", args.json),
        ("video", args.out),
        ("plot", args.plot),
    ):
        if path is not None and os.fspath(path) != STDOUT:
            print(f"wrote {name}: {path}", file=sys.stderr)
    return 0 if stats.complete else 3


def add_video_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``fer-onnx video`` on the CLI's subparsers (from ``add_subparsers``).

    Args:
        subparsers: The top-level parser's sub-command action.

    Returns:
        The sub-command's parser; its ``args.func(args)`` returns the exit code.
    """
    p: argparse.ArgumentParser = subparsers.add_parser(
        "video",
        help="faces, tracks and expressions in a video file",
        description="Process a video: per-face rows, annotated video, timeline.",
    )
    p.add_argument("path", type=path_argument, help="video file")
    p.add_argument(
        "--csv", type=path_argument, default=None, help="write one row per face per frame"
    )
    p.add_argument("--json", type=path_argument, default=None, help="write the same rows as JSON")
    p.add_argument(
        "--out",
        type=path_argument,
        default=None,
        help="write an annotated video: .mp4 (H.264), .webm, .mkv, .mov, .avi or .gif",
    )
    p.add_argument(
        "--plot",
        type=path_argument,
        default=None,
        help="write a timeline of probabilities per track: .png, .svg or .pdf (needs matplotlib)",
    )
    p.add_argument("--every", type=positive_int, default=1, help="process every N-th frame")
    p.add_argument(
        "--smoothing",
        type=float,
        default=5.0,
        help="EMA window (frames) for per-track probabilities (default 5)",
    )
    p.add_argument("--no-smoothing", action="store_true", help="report raw probabilities")
    p.add_argument("--max-missed", type=int, default=5, help="frames before a lost track ends")
    p.add_argument(
        "--redetect-every",
        type=int,
        default=None,
        help="full-frame detection every N processed frames, region searches in between "
        "(default: 1 with YuNet, 10 with Haar)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_model_options(p)
    p.set_defaults(func=_cmd_video)
    return p
