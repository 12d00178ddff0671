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
import os
import sys
from collections.abc import Sequence

import cv2

from fer_onnx.cli.batch import add_batch_parser
from fer_onnx.cli.console import stdout_gone
from fer_onnx.cli.image import add_image_parser
from fer_onnx.cli.model import add_model_parser
from fer_onnx.cli.signals import Terminated, terminating_signals
from fer_onnx.cli.video import add_video_parser
from fer_onnx.cli.web import add_web_parser
from fer_onnx.cli.webcam import add_webcam_parser
from fer_onnx.errors import FerOnnxError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``fer-onnx``, every sub-command registered.

    Returns:
        The parser; the parsed ``args.func(args)`` runs the chosen sub-command.
    """
    parser = argparse.ArgumentParser(
        prog="fer-onnx", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    from fer_onnx import __version__

    parser.add_argument("--version", action="version", version=f"fer-onnx {__version__}")
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="{image,video,webcam,batch,web,model}"
    )
    add_image_parser(sub)
    add_video_parser(sub)
    add_webcam_parser(sub)
    add_batch_parser(sub)
    add_web_parser(sub)
    add_model_parser(sub)
    return parser


def _flag_names(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Each option's ``dest`` (the library's argument name) and its flag, over every command."""
    names: dict[str, str] = {}
    parsers = [parser]
    while parsers:
        current = parsers.pop()
        for action in current._actions:
            if isinstance(action, argparse._SubParsersAction):
                parsers.extend(action.choices.values())
            flags = [o for o in action.option_strings if o.startswith("--")]
            if flags:
                names.setdefault(action.dest, flags[0])
    return names


def _in_flags(message: str, names: dict[str, str]) -> str:
    """``detect_width must be ...`` as ``--detect-width must be ...``: the name the user typed."""
    name, _, rest = message.partition(" ")
    if name in names and rest.startswith(("must ", "is ", "needs ")):
        return f"{names[name]} {rest}"
    return message


def _quiet_decoders() -> None:
    """Errors are one line each: FFmpeg's and OpenCV's own warning lines off, unless set.

    ``OPENCV_FFMPEG_LOGLEVEL`` (FFmpeg's level, read when the first video opens) and
    ``OPENCV_LOG_LEVEL`` set by the user are kept.
    """
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    if "OPENCV_LOG_LEVEL" not in os.environ:
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


def _run(args: argparse.Namespace, names: dict[str, str]) -> int:
    """Run the parsed sub-command; every expected failure becomes its exit code and one line."""
    try:
        code: int = args.func(args)
        sys.stdout.flush()
    except BrokenPipeError:  # the reader of standard output went away (`... | head`)
        stdout_gone()
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted (Ctrl-C)", file=sys.stderr)
        return 130
    except Terminated as e:
        print(f"\nstopped by signal {e.signum}", file=sys.stderr)
        return 128 + e.signum
    except (FerOnnxError, ValueError, OSError) as e:
        print(f"error: {_in_flags(str(e), names)}", file=sys.stderr)
        return 2
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``fer-onnx`` command line; returns the exit code.

    Exit codes: 0 success; 1 some images failed; 2 an error; 3 a video was only partly
    analysed (frames that could not be decoded); 130 Ctrl-C; 128 + N signal N (SIGTERM, SIGHUP).

    Args:
        argv: The arguments; ``None`` reads ``sys.argv``.

    Returns:
        The exit code.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    _quiet_decoders()
    with terminating_signals():
        return _run(args, _flag_names(parser))


if __name__ == "__main__":
    raise SystemExit(main())
