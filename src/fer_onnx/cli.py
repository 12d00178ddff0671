"""The fer-onnx command line: images, videos and the webcam.

    fer-onnx image photo.jpg [more.jpg ...] [--json] [--out DIR]
    fer-onnx video clip.mp4 [--csv faces.csv] [--json faces.json] [--out annotated.mp4]
                            [--plot timeline.png] [--every N]
    fer-onnx webcam [--camera 0|clip.mp4]
    fer-onnx batch INPUT... --out faces.parquet [--every N] [--engine local|ray]
                            (photos and videos in bulk; resumable)
    fer-onnx web [--port 8000]                   (the browser demo, examples/web)
    fer-onnx model inspect model.onnx            (what fer-onnx knows of any ONNX file)
    fer-onnx model stamp in.onnx out.onnx --labels ... --input-size H W --color gray
                            --value-range 0 1 [--softmax]   (make a foreign classifier usable)

Outputs are written to a temporary file beside the target and renamed when complete, so an
interrupted run (Ctrl-C) leaves no half-written file, and a run with several outputs puts all of
them in place or none.

Exit codes: 0 success; 1 some input failed; 2 bad usage or unusable input/output; 3 a video
only partly analysed (frames that could not be decoded; its outputs are written); 130
interrupted (Ctrl-C); 128+N stopped by signal N (143 SIGTERM, 129 SIGHUP).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2

from fer_onnx.batch import VIDEO_EXTENSIONS
from fer_onnx.batch_cli import add_batch_parser, add_detector_options
from fer_onnx.detectors import HaarDetector
from fer_onnx.draw import draw_faces, draw_text
from fer_onnx.errors import (
    DetectorError,
    FerOnnxError,
    InvalidOptionError,
    OutputError,
    VideoError,
)
from fer_onnx.images import as_uint8, load_image
from fer_onnx.live import check_display, open_camera, parse_camera
from fer_onnx.model_tools import add_model_parser
from fer_onnx.outputs import STDOUT, AtomicOutput, check_outputs, deferred_signals
from fer_onnx.recognizer import EmotionRecognizer
from fer_onnx.session import Device
from fer_onnx.sinks import CsvSink, JsonSink, TimelineSink, VideoSink, finish_all
from fer_onnx.video import VideoRecognizer, VideoSource
from fer_onnx.web import add_web_parser
from fer_onnx.yunet import YuNetDetector

__all__ = ["main"]


# -- shared options ---------------------------------------------------------------------------


def _common(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("model and detector")
    g.add_argument(
        "--model",
        default="default",
        help="'default' (= 'accurate'), 'accurate', 'fast', 'fp32', 'int8' (= 'fast') or the "
        "path of an .onnx model (default: default)",
    )
    g.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="execution device (default: auto = CUDA when available)",
    )
    g.add_argument(
        "--providers",
        default=None,
        help="comma-separated onnxruntime providers, overrides --device",
    )
    add_detector_options(g)
    g.add_argument(
        "--no-align",
        action="store_true",
        help="crop boxes as they are instead of framing faces like the model's training data",
    )
    g.add_argument(
        "--margin", type=float, default=0.0, help="grow boxes by this fraction (plain crops)"
    )


_HAAR_OPTIONS = ("scale_factor", "min_neighbors", "min_size")


def _check_detector_options(args: argparse.Namespace) -> None:
    """Refuse options of the other detector: they would be silently ignored."""
    haar = [f"--{n.replace('_', '-')}" for n in _HAAR_OPTIONS if getattr(args, n) is not None]
    if args.detector == "haar" and args.score_threshold is not None:
        raise InvalidOptionError(
            "--score-threshold is a YuNet option, and --detector haar has no face score; "
            "tune Haar with --scale-factor, --min-neighbors or --min-size, or drop it"
        )
    if args.detector != "haar" and haar:
        raise InvalidOptionError(
            f"{', '.join(haar)} {'is a Haar option' if len(haar) == 1 else 'are Haar options'}, "
            f"and the detector is {args.detector!r}; add --detector haar, or drop "
            f"{'it' if len(haar) == 1 else 'them'} (YuNet takes --score-threshold)"
        )


def _recognizer(args: argparse.Namespace) -> EmotionRecognizer:
    _check_detector_options(args)
    kwargs: dict[str, Any] = {}
    if args.detect_width is not None:
        kwargs["detect_width"] = args.detect_width or None
    providers = args.providers.split(",") if args.providers else None
    detector: HaarDetector | YuNetDetector
    if args.detector == "haar":
        for name in _HAAR_OPTIONS:
            if getattr(args, name) is not None:
                kwargs[name] = getattr(args, name)
        detector = HaarDetector(**kwargs)
    else:
        if args.score_threshold is not None:
            kwargs["score_threshold"] = args.score_threshold
        model = None if args.detector == "yunet" else Path(args.detector)
        if model is not None and not model.is_file():
            raise DetectorError(
                f"--detector {args.detector!r}: expected 'yunet', 'haar' or the path of a YuNet "
                ".onnx file, and no such file exists"
            )
        device: Device = "auto" if providers else args.device
        detector = YuNetDetector(model, device=device, providers=providers, **kwargs)
    return EmotionRecognizer(
        args.model,
        detector=detector,
        device="auto" if providers else args.device,  # --providers overrides --device
        providers=providers,
        align=not args.no_align,
        margin=args.margin,
    )


# -- image ------------------------------------------------------------------------------------


def _annotated_name(path: Path, out: Path, taken: set[Path]) -> Path:
    """A new file in ``out`` for ``path``'s annotated copy: never an existing file, never twice.

    ``photo.jpg`` becomes ``photo_fer.jpg``; a suffix OpenCV cannot write (``.bak``) becomes
    ``.png``; a name already used (same stem in another folder, or a file already there) gets
    ``-2``, ``-3``, ...
    """
    suffix = path.suffix.lower()
    if not suffix or not cv2.haveImageWriter(f"x{suffix}"):
        suffix = ".png"
    stem = f"{path.stem if path.suffix.lower() == suffix else path.name}_fer"
    target = out / f"{stem}{suffix}"
    n = 2
    while target in taken or target.exists() or target.is_symlink():
        target = out / f"{stem}-{n}{suffix}"
        n += 1
    taken.add(target)
    return target


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _stdout_gone() -> None:
    """The reader of standard output went away (``| head``): send the rest nowhere."""
    with contextlib.suppress(OSError, ValueError):  # no real stdout (captured)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _emit(text: str) -> None:
    """Print ``text`` on standard output; once its reader has gone, go on without it."""
    try:
        print(text)
    except BrokenPipeError:
        _stdout_gone()


def _not_an_image_hint(path: Path) -> str:
    """Where to turn when ``path`` is a folder or a video rather than a photo."""
    if path.is_dir():
        return (
            f"; for every photo and video in a folder use "
            f"`fer-onnx batch {shlex.quote(str(path))} --out faces.parquet`"
        )
    if path.suffix.lower() in VIDEO_EXTENSIONS:
        return f"; for a video use `fer-onnx video {shlex.quote(str(path))} --csv faces.csv`"
    return ""


class _Table:
    """The image command's table, file column as wide as the longest name.

    The header comes before the first row: a run without rows prints none.
    """

    def __init__(self, paths: Sequence[Path]) -> None:
        self.width = max([len("file"), *(len(str(p)) for p in paths)])
        self.started = False

    def rows(self, path: Path, faces: Sequence[Any]) -> None:
        w = self.width
        if not self.started:
            self.started = True
            _emit(
                f"{'file':<{w}} {'face':>4} {'x':>5} {'y':>5} {'w':>5} {'h':>5}  {'label':<9} score"
            )
        if not faces:
            _emit(f"{path!s:<{w}} {'-':>4}  no face found")
        for i, f in enumerate(faces):
            b = f.box
            _emit(
                f"{path!s:<{w}} {i:>4} {b.x:>5} {b.y:>5} {b.width:>5} {b.height:>5}  "
                f"{f.label:<9} {f.score:.3f}"
            )


def _write_annotated(path: Path, faces: Sequence[Any], target: Path) -> None:
    ok, data = cv2.imencode(target.suffix, draw_faces(load_image(path), faces))
    if not ok:
        raise OutputError(f"cannot encode {target.suffix} images")
    with contextlib.ExitStack() as stack:
        with deferred_signals():
            output = stack.enter_context(AtomicOutput(target))
        output.tmp.write_bytes(data.tobytes())
        output.commit()


def _cmd_image(args: argparse.Namespace) -> int:
    if args.out is not None:
        if args.out.exists() and not args.out.is_dir():
            raise OutputError(f"--out {args.out}: expected a folder, and it is a file")
        args.out.mkdir(parents=True, exist_ok=True)
    failed = 0
    report = []
    taken: set[Path] = set()
    table = _Table(args.paths)
    with _recognizer(args) as rec:
        for path in args.paths:
            try:
                faces = rec.recognize(path)
            except FerOnnxError as e:
                print(f"error: {path}: {e}{_not_an_image_hint(path)}", file=sys.stderr)
                failed += 1
                continue
            report.append({"file": str(path), "faces": [f.to_dict() for f in faces]})
            if not args.json:
                table.rows(path, faces)
            if args.out is not None:
                target = _annotated_name(path, args.out, taken)
                try:
                    _write_annotated(path, faces, target)
                except (FerOnnxError, cv2.error, OSError) as e:
                    print(f"error: {path}: annotated copy not written: {e}", file=sys.stderr)
                    failed += 1
                    continue
                print(f"wrote {target}", file=sys.stderr)
    if args.json:
        _emit(json.dumps(report, indent=2))
    return 1 if failed else 0


# -- video ------------------------------------------------------------------------------------


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
    if args.csv is not None:
        sinks.append(stack.enter_context(CsvSink(args.csv, labels)))
    if args.json is not None:
        sinks.append(stack.enter_context(JsonSink(args.json)))
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
        rec = stack.enter_context(_recognizer(args))
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
        finish_all(sinks)
    print(
        f"{source.name}: {stats.summary()}; {_plural(faces_total, 'face')}, "
        f"{_plural(len(tracks), 'track')}",
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


# -- webcam -----------------------------------------------------------------------------------


def _has_gui() -> bool:
    check_display()  # DisplayError: headless OpenCV or no display, with the fix
    return True


def _cmd_webcam(args: argparse.Namespace) -> int:
    _has_gui()
    cap, _ = open_camera(args.camera)
    window = "fer-onnx (q or Esc quits)"
    try:
        with _recognizer(args) as rec:
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


# -- entry point ------------------------------------------------------------------------------


def _path(text: str) -> Path:
    """A path argument: ``Path("")`` would silently be the current folder."""
    if not text:
        raise argparse.ArgumentTypeError("an empty path; name a file")
    return Path(text)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``fer-onnx``."""
    parser = argparse.ArgumentParser(
        prog="fer-onnx", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    from fer_onnx import __version__

    parser.add_argument("--version", action="version", version=f"fer-onnx {__version__}")
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="{image,video,webcam,batch,web,model}"
    )

    p = sub.add_parser(
        "image",
        help="faces and expressions in images",
        description="Print each face (box, label, score) of each image.",
    )
    p.add_argument("paths", nargs="+", type=_path, help="image files")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--out", type=_path, default=None, help="folder for annotated copies")
    _common(p)
    p.set_defaults(func=_cmd_image)

    p = sub.add_parser(
        "video",
        help="faces, tracks and expressions in a video file",
        description="Process a video: per-face rows, annotated video, timeline.",
    )
    p.add_argument("path", type=_path, help="video file")
    p.add_argument("--csv", type=_path, default=None, help="write one row per face per frame")
    p.add_argument("--json", type=_path, default=None, help="write the same rows as JSON")
    p.add_argument(
        "--out",
        type=_path,
        default=None,
        help="write an annotated video: .mp4 (H.264), .webm, .mkv, .mov, .avi or .gif",
    )
    p.add_argument(
        "--plot",
        type=_path,
        default=None,
        help="write a timeline of probabilities per track: .png, .svg or .pdf (needs matplotlib)",
    )
    p.add_argument("--every", type=int, default=1, help="process every N-th frame")
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
    _common(p)
    p.set_defaults(func=_cmd_video)

    p = sub.add_parser(
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
    _common(p)
    p.set_defaults(func=_cmd_webcam)

    add_batch_parser(sub)
    add_web_parser(sub)
    add_model_parser(sub)
    return parser


class _Terminated(BaseException):
    """Raised in the main thread by SIGTERM / SIGHUP so that every ``with`` block cleans up."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _on_signal(signum: int, frame: Any) -> None:
    raise _Terminated(signum)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``fer-onnx`` command line; returns the exit code.

    Exit codes: 0 success; 1 some images failed; 2 an error; 3 a video was only partly
    analysed (frames that could not be decoded); 130 Ctrl-C; 128 + N signal N (SIGTERM, SIGHUP).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "every", 1) < 1:
        parser.error("--every must be >= 1")
    previous = {}
    for name in ("SIGTERM", "SIGHUP"):
        signum = getattr(signal, name, None)
        if signum is not None and threading.current_thread() is threading.main_thread():
            previous[signum] = signal.signal(signum, _on_signal)
    try:
        code: int = args.func(args)
        sys.stdout.flush()
    except BrokenPipeError:  # the reader of standard output went away (`... | head`)
        _stdout_gone()
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted (Ctrl-C)", file=sys.stderr)
        return 130
    except _Terminated as e:
        print(f"\nstopped by signal {e.signum}", file=sys.stderr)
        return 128 + e.signum
    except FerOnnxError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
