"""Re-compute the evaluation report of any Keras (.keras/.h5) or ONNX model.

    python -m training.evaluate --model runs/ship/best.keras \\
        --data ../shared/data/fer2013/fer2013.csv.gz
    python -m training.evaluate --model src/fer_onnx/models/int8.onnx --data ... --out reports/int8

ONNX models run through the library itself (``EmotionRecognizer.predict``), so the figures are
those a user gets. Writes metrics.json, report.md and confusion-matrix PNGs into ``--out``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from training.data import Dataset, load
from training.errors import PipelineError
from training.report import write_report

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def predictor(model_path: Path, batch_size: int = 256) -> Callable[[np.ndarray], np.ndarray]:
    """A ``faces -> probabilities`` function for a Keras or ONNX model file."""
    if not model_path.is_file():
        raise FileNotFoundError(f"model not found: {model_path}")
    if model_path.suffix == ".onnx":
        from fer_onnx import EmotionRecognizer, SessionConfig

        rec = EmotionRecognizer(
            model_path,
            detector=None,
            device="cpu",
            session_config=SessionConfig(intra_op_threads=0),
        )

        def run_onnx(x: np.ndarray) -> np.ndarray:
            faces = list(x.astype(np.uint8))
            return np.concatenate(
                [rec.predict(faces[i : i + batch_size]) for i in range(0, len(faces), batch_size)]
            )

        return run_onnx
    from training.model import load_model

    model = load_model(model_path)

    def run_keras(x: np.ndarray) -> np.ndarray:
        return np.asarray(model.predict(x.astype(np.float32), batch_size=batch_size, verbose=0))

    return run_keras


def evaluate(model_path: Path, dataset: Dataset, out: Path, prefix: str = "") -> dict[str, object]:
    return write_report(
        out, predictor(model_path), dataset, model_name=str(model_path), prefix=prefix
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m training.evaluate",
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
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = args.out or args.model.parent / f"eval_{args.model.stem}"
    try:
        dataset = load(args.data)
        metrics = evaluate(args.model, dataset, out)
    except (PipelineError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for split, m in metrics["splits"].items():  # type: ignore[attr-defined]
        print(f"{split}: accuracy {m['accuracy']:.4f}  macro F1 {m['macro_f1']:.4f}  (n={m['n']})")
    print(f"report written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
