"""Should a candidate model replace the shipped one? Decided on PublicTest only, in every framing.

    fer-onnx-factory compare --candidate runs/ship55cal/candidate/int8.onnx \\
        --shipped src/fer_onnx/models/int8.onnx --protect disgust fear \\
        --data ../shared/data/fer2013/fer2013.csv.gz --data runs/fer2013-aligned.npz

Each ``--data`` is one way of framing the same kind of faces: FER2013's own crops, and the same
faces warped onto the crop template by ``fer-onnx-factory align`` (the runtime's own
``align_face``: how the library frames every face it is given). A network can gain in one
framing and lose in the other; users only ever see the second. The candidate replaces the
shipped model when, on the PublicTest split of **every** ``--data``, its accuracy is at least
the shipped model's and its recall of each ``--protect`` class is too. PrivateTest is never
read.

Prints one table per framing (accuracy, macro F1, per-class recall of both models) and the
verdict; ``--json`` writes them to a file. Exit code 0: replace; 1: keep the shipped model;
2: an error.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fer_onnx_factory.cli import command
from fer_onnx_factory.errors import PipelineError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SPLIT = "PublicTest"


@dataclass(frozen=True)
class Scores:
    """One model's PublicTest figures in one framing."""

    accuracy: float
    macro_f1: float
    recall: dict[str, float]


@dataclass(frozen=True)
class Framing:
    """Both models' figures on one ``--data``."""

    data: str
    faces: int
    candidate: Scores
    shipped: Scores


def scores(labels: np.ndarray, probs: np.ndarray, names: Sequence[str]) -> Scores:
    """Accuracy, macro F1 and per-class recall of ``probs`` against ``labels``."""
    from fer_onnx_factory.report import classification_metrics

    m = classification_metrics(labels, probs, names)
    return Scores(
        accuracy=float(m["accuracy"]),
        macro_f1=float(m["macro_f1"]),
        recall={name: float(c["recall"]) for name, c in m["per_class"].items()},
    )


def decide(framings: Sequence[Framing], protect: Sequence[str]) -> tuple[bool, list[str]]:
    """Whether the candidate replaces the shipped model, and every reason it does not.

    Raises:
        PipelineError: No framings, or a protected class that is not a label.
    """
    if not framings:
        raise PipelineError("nothing to compare: give at least one --data")
    reasons = []
    for f in framings:
        unknown = [c for c in protect if c not in f.candidate.recall]
        if unknown:
            raise PipelineError(f"--protect {unknown}: not labels of the models")
        if f.candidate.accuracy < f.shipped.accuracy:
            reasons.append(
                f"{f.data}: accuracy {f.candidate.accuracy:.2%} < {f.shipped.accuracy:.2%}"
            )
        for c in protect:
            if f.candidate.recall[c] < f.shipped.recall[c]:
                reasons.append(
                    f"{f.data}: {c} recall {f.candidate.recall[c]:.3f} < {f.shipped.recall[c]:.3f}"
                )
    return not reasons, reasons


def table(f: Framing) -> list[str]:
    """A markdown table of both models' figures in one framing."""
    names = list(f.candidate.recall)
    lines = [
        f"{f.data}: {SPLIT}, {f.faces} faces",
        "",
        "| model | accuracy | macro F1 | " + " | ".join(names) + " |",
        "|---|---:|---:|" + "---:|" * len(names),
    ]
    for who, s in (("candidate", f.candidate), ("shipped", f.shipped)):
        lines.append(
            f"| {who} | {s.accuracy:.2%} | {s.macro_f1:.3f} | "
            + " | ".join(f"{s.recall[n]:.3f}" for n in names)
            + " |"
        )
    return lines


def _public(path: Path) -> Any:
    from fer_onnx_factory.data.datasets import load, load_fer2013_csv

    name = path.name.lower()
    dataset = (
        load_fer2013_csv(path, splits=(SPLIT,))
        if name.endswith((".csv", ".csv.gz"))
        else load(path)
    )
    if SPLIT not in dataset.splits:
        raise PipelineError(f"{path} has no {SPLIT} split to compare on")
    return dataset


def compare(
    candidate: Path, shipped: Path, data: Sequence[Path], protect: Sequence[str]
) -> tuple[bool, list[str], list[Framing]]:
    """Measure both models on every ``data``'s PublicTest and decide (see the module doc).

    Returns:
        ``(replace, reasons it does not, the figures per framing)``.

    Raises:
        PipelineError: A dataset without PublicTest, a model with another number of outputs
            than the data has labels, or a protected class that is not a label.
        FileNotFoundError: A model or dataset is missing.
    """
    from fer_onnx_factory.model.predict import predictor

    run_candidate, run_shipped = predictor(candidate), predictor(shipped)
    framings = []
    for path in data:
        dataset = _public(path)
        public = dataset[SPLIT]
        faces = public.images.astype(np.float32)
        names = list(dataset.labels)
        got = [run(faces) for run in (run_candidate, run_shipped)]
        for model, probs in zip((candidate, shipped), got, strict=True):
            if probs.shape != (len(faces), len(names)):
                raise PipelineError(
                    f"{model} gives {probs.shape[1:]} scores per face; {path} has the "
                    f"{len(names)} labels {names}"
                )
        framings.append(
            Framing(
                data=str(path),
                faces=len(faces),
                candidate=scores(public.labels, got[0], names),
                shipped=scores(public.labels, got[1], names),
            )
        )
    replace, reasons = decide(framings, protect)
    return replace, reasons, framings


@command(OSError, ValueError)
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="fer-onnx-factory compare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--candidate", required=True, type=Path, help="the model that may ship")
    p.add_argument("--shipped", required=True, type=Path, help="the model it would replace")
    p.add_argument(
        "--data",
        required=True,
        type=Path,
        action="append",
        help="a dataset with a PublicTest split; repeat for each framing",
    )
    p.add_argument("--protect", nargs="*", default=[], help="classes whose recall must not fall")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = p.parse_args(argv)
    from fer_onnx.outputs import AtomicOutput, check_outputs

    if args.json is not None:
        check_outputs([args.json], [args.candidate, args.shipped, *args.data])
    replace, reasons, framings = compare(args.candidate, args.shipped, args.data, args.protect)
    if args.json is not None:
        record = {
            "candidate": str(args.candidate),
            "shipped": str(args.shipped),
            "protect": list(args.protect),
            "replace": replace,
            "reasons": reasons,
            "framings": [asdict(f) for f in framings],
        }
        with AtomicOutput(args.json) as out:  # never half-written
            out.tmp.write_text(json.dumps(record, indent=2) + "\n")
            out.commit()
    for f in framings:
        print("\n".join(table(f)), end="\n\n")
    if replace:
        print(f"verdict: replace {args.shipped} with {args.candidate}")
    else:
        print("verdict: keep the shipped model: " + "; ".join(reasons))
    return 0 if replace else 1


if __name__ == "__main__":
    raise SystemExit(main())
