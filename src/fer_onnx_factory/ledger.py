"""What each recipe change gave: the committed ledger of training runs.

    fer-onnx-factory ledger add --run runs/r48 --name r48 --baseline ship64 \\
        --change "48 px instead of 64 px"
    fer-onnx-factory ledger table

``add`` reads a run's own record (``config.json``, ``state.json``, ``metrics.json`` when the
run finished, ``export/summary.json`` when it was bundled) and writes one entry into
``src/fer_onnx_factory/experiments.json``; nothing is typed in but the run's name, what it
changes against
its baseline, and an optional note. ``table`` renders the Markdown table that the README and
the model card show. Runs of earlier releases whose folders were not kept are entered with the
figures their reports recorded, and say so in ``source``.

PublicTest decides; PrivateTest appears only for finished runs, whose final report reads it
once.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fer_onnx_factory.cli import command
from fer_onnx_factory.errors import PipelineError
from fer_onnx_factory.report import write_json
from fer_onnx_factory.train.config import STATE, RunState, TrainConfig
from fer_onnx_factory.train.distill import labelling_seconds

LEDGER = Path(__file__).with_name("experiments.json")
"""The ledger as installed with the package (read-only for ``add``: see :func:`checkout_ledger`)."""

CHECKOUT_LEDGER = Path("src") / "fer_onnx_factory" / "experiments.json"
"""The committed ledger, relative to the repository root."""


def checkout_ledger() -> Path | None:
    """The committed ledger when the working directory is a checkout's root, else ``None``."""
    return CHECKOUT_LEDGER if CHECKOUT_LEDGER.is_file() else None


def default_ledger() -> Path:
    """The ledger to read: the checkout's (the committed file) if run from its root, else the
    copy installed with the package."""
    return checkout_ledger() or LEDGER


@dataclass(frozen=True)
class Experiment:
    """One training run (or a combination of runs) and what it gave.

    Attributes:
        name: Short name, unique in the ledger.
        change: What differs from ``baseline`` (the one change, where the budget allowed one).
        baseline: Name of the entry it is compared with, or ``None``.
        command: The training command.
        epochs_run: Epochs trained.
        epochs_planned: Epochs the command asked for.
        minutes: Training wall time on 2 CPU cores (teacher labelling included), or ``None``.
        public_test: Best PublicTest accuracy of the network alone (``None`` for an entry
            that only measured with views).
        public_test_views: PublicTest accuracy with test-time views (what the export chose,
            at most 2; the note says when an entry used more), or ``None`` when not measured.
        private_test: PrivateTest accuracy of the finished model (the final report's one
            reading; the shipped file's when exported), or ``None``.
        finished: Whether the run completed its schedule.
        source: Where the figures come from.
        note: Anything else a reader needs.
    """

    name: str
    change: str
    baseline: str | None
    command: str
    epochs_run: int
    epochs_planned: int
    minutes: float | None
    public_test: float | None
    public_test_views: float | None
    private_test: float | None
    finished: bool
    source: str
    note: str = ""


def from_run(run: Path, name: str, change: str, baseline: str | None, note: str = "") -> Experiment:
    """An entry from the record of the run in ``run``.

    Raises:
        PipelineError: ``run`` holds no run record.
    """
    cfg, record = TrainConfig.read(run)
    if not (run / STATE).is_file():
        raise PipelineError(f"{run} has no {STATE}: not a training run")
    state = RunState.read(run)
    planned = cfg.total_epochs
    try:
        metrics: dict[str, Any] = (
            json.loads((run / "metrics.json").read_text())
            if (run / "metrics.json").is_file()
            else {}
        )
        splits = metrics.get("splits", {})
        finished = bool(metrics) and (state.epoch >= planned or state.stopped_early)
        if finished:
            minutes = float(metrics.get("wall_time_s") or state.train_seconds) / 60.0
            public: float | None = float(splits["PublicTest"]["accuracy"])
            private = float(splits["PrivateTest"]["accuracy"]) if "PrivateTest" in splits else None
        else:
            minutes = (state.train_seconds + (labelling_seconds(run) or 0.0)) / 60.0
            public, private = (state.best if state.best >= 0 else None), None
    except (KeyError, TypeError, ValueError) as e:
        raise PipelineError(f"{run / 'metrics.json'} is malformed: {e}") from e
    views: float | None = None
    summary_path = run / "export" / "summary.json"
    if finished and summary_path.is_file():
        try:
            summary = json.loads(summary_path.read_text())
            shipped = "int8" if summary.get("int8_accepted") else "fp32"
            views = float(summary[shipped]["PublicTest_accuracy"])
            private = summary[shipped].get("PrivateTest_accuracy", private)
            note = note or f"{shipped} model with its `{summary['tta']['chosen']}` views"
        except (KeyError, TypeError, ValueError) as e:
            raise PipelineError(f"{summary_path} is malformed: {e}") from e
    return Experiment(
        name=name,
        change=change,
        baseline=baseline,
        command=str(record.get("command", "")),
        epochs_run=state.epoch,
        epochs_planned=planned,
        minutes=round(minutes, 1),
        public_test=None if public is None else round(public, 4),
        public_test_views=None if views is None else round(views, 4),
        private_test=None if private is None else round(private, 4),
        finished=finished,
        source=f"record of {run}",
        note=note,
    )


def read(path: Path = LEDGER) -> list[Experiment]:
    """The ledger's entries in the order they were added.

    Raises:
        PipelineError: The file is malformed.
    """
    if not path.is_file():
        return []
    try:
        return [Experiment(**e) for e in json.loads(path.read_text())["experiments"]]
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise PipelineError(f"{path} is malformed: {e}") from e


def write(entries: list[Experiment], path: Path = LEDGER) -> None:
    """Write the ledger atomically."""
    write_json(path, {"experiments": [dataclasses.asdict(e) for e in entries]})


def add(entry: Experiment, path: Path = LEDGER) -> list[Experiment]:
    """Add ``entry``, replacing an entry of the same name in place.

    Raises:
        PipelineError: Its baseline is not in the ledger.
    """
    entries = read(path)
    names = {e.name for e in entries}
    if entry.baseline is not None and entry.baseline not in names - {entry.name}:
        raise PipelineError(f"baseline {entry.baseline!r} is not in {path}; known: {sorted(names)}")
    at = next((i for i, e in enumerate(entries) if e.name == entry.name), None)
    if at is None:
        entries.append(entry)
    else:
        entries[at] = entry
    write(entries, path)
    return entries


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x:.2%}"


def table(entries: list[Experiment]) -> str:
    """The Markdown table of the ledger, with each entry's gain over its baseline."""
    by_name = {e.name: e for e in entries}
    lines = [
        "| run | change (against baseline) | epochs | minutes | PublicTest, network | "
        "gain | PublicTest, with views | "
        "PrivateTest (read once; the shipped file where exported) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for e in entries:
        base = by_name.get(e.baseline) if e.baseline else None
        gain = (
            f"{(e.public_test - base.public_test) * 100:+.2f}"
            if base is not None
            and e.finished
            and base.finished
            and e.public_test is not None
            and base.public_test is not None
            else "—"
        )
        epochs = f"{e.epochs_run}" if e.finished else f"{e.epochs_run} of {e.epochs_planned}"
        change = e.change + (f" (vs {e.baseline})" if e.baseline else "")
        if not e.finished:
            change += "; not finished, best so far"
        if e.note:
            change += f"; {e.note}"
        change = change.replace("|", "\\|")
        minutes = "—" if e.minutes is None else f"{e.minutes:.0f}"
        lines.append(
            f"| {e.name} | {change} | {epochs} | {minutes} | {_pct(e.public_test)} | {gain} | "
            f"{_pct(e.public_test_views)} | {_pct(e.private_test)} |"
        )
    return "\n".join(lines)


@command()
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="fer-onnx-factory ledger",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--ledger",
        type=Path,
        default=None,
        help=f"ledger file (default: {CHECKOUT_LEDGER} when run from the repository root; "
        "`table` falls back on the copy installed with the package)",
    )
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("add", help="enter a run from its record")
    a.add_argument("--run", required=True, type=Path, help="training run folder")
    a.add_argument("--name", required=True, help="short unique name")
    a.add_argument("--change", required=True, help="what differs from the baseline")
    a.add_argument("--baseline", default=None, help="name of the entry it is compared with")
    a.add_argument("--note", default="", help="anything else a reader needs")
    sub.add_parser("table", help="print the Markdown table")
    args = p.parse_args(argv)
    if args.command == "add":
        ledger = args.ledger or checkout_ledger()
        if ledger is None:  # never into an installed package, where no commit would see it
            raise PipelineError(
                f"no {CHECKOUT_LEDGER} here: run `ledger add` from the repository root, or "
                "name the file with --ledger"
            )
        entry = from_run(args.run, args.name, args.change, args.baseline, args.note)
        entries = add(entry, ledger)
    else:
        entries = read(args.ledger or default_ledger())
    print(table(entries))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
