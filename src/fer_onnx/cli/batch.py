"""The ``fer-onnx batch`` command: every face of a collection of photos and videos, to a table.

    fer-onnx batch INPUT... --out faces.parquet [--every N] [--engine local|ray]

Inputs are files, folders (searched recursively), glob patterns, or ``--files-from LIST`` text
files of paths. The same command run again resumes: files already done are skipped. Exit codes:
0 every input read; 1 some inputs could not be read (see the errors table); 2 bad usage;
130 interrupted (what was finished is kept: run the same command again to go on).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fer_onnx.batch import (
    BatchError,
    BatchProgress,
    BatchSummary,
    MissingDependencyError,
    RayOptions,
    output_paths,
    run,
)
from fer_onnx.cli.options import add_model_options, positive_int
from fer_onnx.cli.signals import Terminated, terminating_signals
from fer_onnx.errors import FerOnnxError

__all__ = ["add_batch_parser", "main"]

_DESCRIPTION = """\
Every face of a collection of photos and videos, to a Parquet or CSV table: one row per face
(source, frame, timestamp, track, box, detection score, label, score, every probability),
plus NAME.errors.* (inputs that could not be read) and NAME.files.* (every input) beside it.

Inputs are files, folders (searched recursively), glob patterns, or --files-from lists. The
same command run again resumes: files already done (same path, size and modification time)
are skipped. Exit codes: 0 every input read; 1 some inputs could not be read, in this run
or an earlier one (see the errors table; --retry-errors reads them again); 2 bad usage; 3 some
videos were only partly analysed (frames that could not be decoded, counted in corrupt_frames
of the files table); 130 interrupted (what finished is kept: run the same command again);
128 + N signal N (SIGTERM, SIGHUP).
"""


def add_batch_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``batch`` subcommand on ``fer-onnx``'s subparsers (from ``add_subparsers``).

    Args:
        subparsers: The top-level parser's sub-command action.

    Returns:
        The sub-command's parser; its handler, ``args.func(args) -> int``, returns the exit
        code.
    """
    p: argparse.ArgumentParser = subparsers.add_parser(
        "batch",
        help="every face of many photos and videos, to a Parquet or CSV table (resumable)",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "inputs",
        nargs="*",
        metavar="INPUT",
        help="photos, videos, folders (searched recursively) or glob patterns such as "
        "'clips/**/*.mp4' (quote them)",
    )
    p.add_argument(
        "--out",
        required=True,
        type=Path,
        metavar="FILE",
        help="the faces table: NAME.parquet (needs pyarrow) or NAME.csv; NAME.errors.* and "
        "NAME.files.* are written beside it",
    )
    p.add_argument(
        "--files-from",
        action="append",
        default=[],
        type=Path,
        metavar="LIST",
        help="a text file of inputs, one per line (relative to its folder); repeatable",
    )
    p.add_argument(
        "--every",
        type=positive_int,
        default=1,
        metavar="N",
        help="read every N-th frame of videos",
    )
    p.add_argument(
        "--retry-errors",
        action="store_true",
        help="read again the inputs that failed in an earlier run with this output",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    g = p.add_argument_group("engines")
    g.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local: a process pool on this machine (default); ray: a Ray cluster "
        "(pip install 'fer-onnx[ray]')",
    )
    g.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="local: processes (default: one per core)",
    )
    g.add_argument(
        "--chunk-size",
        type=int,
        default=8,
        metavar="N",
        help="local: photos handed to a worker at a time",
    )
    g.add_argument(
        "--address",
        default=None,
        metavar="ADDR",
        help="ray: cluster address (e.g. auto, ray://head:10001); default: start a local one",
    )
    g.add_argument(
        "--actors",
        type=int,
        default=None,
        metavar="N",
        help="ray: actors, each with one recognizer (default: fill the cluster)",
    )
    g.add_argument(
        "--cpus-per-actor", type=float, default=1.0, metavar="N", help="ray: CPUs per actor"
    )
    g.add_argument(
        "--gpus-per-actor",
        type=float,
        default=None,
        metavar="N",
        help="ray: GPUs per actor, fractions share one (default: 1 with --device cuda, else 0)",
    )
    g.add_argument(
        "--ray-batch-size",
        type=int,
        default=64,
        metavar="N",
        help="ray: photos per actor call (default 64)",
    )

    m = add_model_options(p, workers=True)
    m.add_argument(
        "--smoothing",
        type=float,
        default=5.0,
        help="videos: EMA window (frames) of per-track probabilities (default 5)",
    )
    m.add_argument("--no-smoothing", action="store_true", help="videos: raw probabilities")
    p.set_defaults(func=_cmd_batch)
    return p


class _Bar:
    """A tqdm bar fed by :class:`BatchProgress`: files/s as its rate, faces/s beside it.

    The bar appears with the first progress report, once the job has started: a usage error
    is not preceded by an empty bar.
    """

    def __init__(self) -> None:
        try:
            self._tqdm = importlib.import_module("tqdm").tqdm
        except ImportError as e:
            raise MissingDependencyError(
                "the progress bar needs tqdm: pip install 'fer-onnx[batch]', or pass --no-progress"
            ) from e
        self.bar: Any = None

    def __call__(self, p: BatchProgress) -> None:
        if self.bar is None:
            self.bar = self._tqdm(
                total=p.total, unit="file", dynamic_ncols=True, smoothing=0.1, file=sys.stderr
            )
        if self.bar.total != p.total:
            self.bar.total = p.total
        faces_per_second = p.faces / p.seconds if p.seconds > 0 else 0.0
        self.bar.set_postfix_str(
            f"{p.faces} faces, {faces_per_second:.1f} faces/s, {p.errors} errors", refresh=False
        )
        self.bar.update(p.done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


_HAAR_ONLY = ("scale_factor", "min_neighbors", "min_size")


def _detector_options(args: argparse.Namespace) -> dict[str, Any]:
    """The detector settings given on the command line; one for the other detector is refused."""
    options: dict[str, Any] = {}
    haar = args.detector == "haar"
    if args.detect_width is not None:
        options["detect_width"] = args.detect_width or None  # 0: full size
    if args.score_threshold is not None:
        if haar:
            raise BatchError(
                "--score-threshold is a YuNet setting; the Haar detector has none (use "
                "--min-neighbors to make Haar stricter, or --detector yunet)"
            )
        options["score_threshold"] = args.score_threshold
    for name in _HAAR_ONLY:
        value = getattr(args, name)
        if value is not None:
            if not haar:
                flag = "--" + name.replace("_", "-")
                raise BatchError(f"{flag} is a Haar setting: add --detector haar, or drop it")
            options[name] = value
    return options


def _exit_code(summary: BatchSummary) -> int:
    if summary.unread:
        return 1
    return 3 if summary.incomplete else 0


def _cmd_batch(args: argparse.Namespace) -> int:
    bar = None if args.no_progress else _Bar()
    try:
        summary = run(
            args.inputs,
            args.out,
            files_from=args.files_from,
            engine=args.engine,
            every=args.every,
            model=args.model,
            detector=args.detector,
            device="auto" if args.providers else args.device,  # --providers overrides --device
            align=not args.no_align,
            margin=args.margin,
            smoothing=0.0 if args.no_smoothing else args.smoothing,
            workers=args.workers,
            chunk_size=args.chunk_size,
            retry_errors=args.retry_errors,
            ray=RayOptions(
                address=args.address,
                concurrency=args.actors,
                num_cpus=args.cpus_per_actor,
                num_gpus=args.gpus_per_actor,
                batch_size=args.ray_batch_size,
            ),
            progress=bar,
            providers=args.providers,
            detector_options=_detector_options(args),
        )
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
            bar = None
        out = output_paths(args.out)[0]
        print(
            f"\ninterrupted: the files finished so far are in {out}; run the same command "
            "again to go on",
            file=sys.stderr,
        )
        return 130
    finally:
        if bar is not None:
            bar.close()
    print(summary.describe(retry_hint="--retry-errors"), file=sys.stderr)
    print(
        f"wrote {summary.output} (faces), {summary.errors_output} (errors), "
        f"{summary.files_output} (files)",
        file=sys.stderr,
    )
    return _exit_code(summary)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``fer-onnx batch`` on its own (``python -m fer_onnx.cli.batch batch ...``).

    SIGTERM and SIGHUP stop the workers and keep what finished, as Ctrl-C does.

    Args:
        argv: The arguments, ``batch`` first; ``None`` reads ``sys.argv``.

    Returns:
        The exit code (see the module docstring).
    """
    parser = argparse.ArgumentParser(prog="fer-onnx")
    add_batch_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    with terminating_signals():
        try:
            code: int = args.func(args)
        except Terminated as e:
            print(f"\nstopped by signal {e.signum}", file=sys.stderr)
            return 128 + e.signum
        except FerOnnxError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    return code


if __name__ == "__main__":
    raise SystemExit(main())
