"""Re-compute the evaluation report of any Keras (.keras/.h5) or ONNX model.

    fer-onnx-factory evaluate --model runs/ship/best.keras \\
        --data ../shared/data/fer2013/fer2013.csv.gz
    fer-onnx-factory evaluate --model src/fer_onnx/models/int8.onnx --data ... --out reports/int8

ONNX models run through the library itself (``EmotionRecognizer.predict``), so the figures are
those a user gets. Writes metrics.json, report.md and confusion-matrix PNGs into ``--out``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from fer_onnx_factory.cli import command
from fer_onnx_factory.data.datasets import Dataset, load
from fer_onnx_factory.model.predict import predictor
from fer_onnx_factory.report import write_report

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def evaluate(model_path: Path, dataset: Dataset, out: Path, prefix: str = "") -> dict[str, object]:
    return write_report(
        out, predictor(model_path), dataset, model_name=str(model_path), prefix=prefix
    )


@command(ValueError, log_format="%(message)s")
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="fer-onnx-factory evaluate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, type=Path, help=".keras, .h5 or .onnx model")
    p.add_argument("--data", required=True, type=Path, help="fer2013.csv[.gz] or folder tree")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="report folder (default: <model folder>/eval_<model name>)",
    )
    args = p.parse_args(argv)
    out = args.out or args.model.parent / f"eval_{args.model.stem}"
    dataset = load(args.data)
    metrics = evaluate(args.model, dataset, out)
    for split, m in metrics["splits"].items():  # type: ignore[attr-defined]
        print(f"{split}: accuracy {m['accuracy']:.4f}  macro F1 {m['macro_f1']:.4f}  (n={m['n']})")
    print(f"report written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
