"""Check that an ONNX export computes what the Keras model computed.

    fer-onnx-factory parity --keras runs/ship/best.keras --onnx src/fer_onnx/models/fp32.onnx \\
        --data ../shared/data/fer2013/fer2013.csv.gz --n 1024

The ONNX side runs through the library (``EmotionRecognizer.predict``), so this checks the
whole runtime path. Passes when the maximum absolute probability difference is <= --atol and
every arg-max agrees; exits 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from fer_onnx_factory.cli import command

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ATOL = 1e-4


def onnx_probabilities(onnx_path: Path, faces: np.ndarray) -> np.ndarray:
    """Probabilities of an ONNX model through the library (the evaluation code path)."""
    from fer_onnx_factory.model.predict import predictor

    return predictor(onnx_path)(faces)


def compare(reference: np.ndarray, candidate: np.ndarray, atol: float = ATOL) -> dict[str, Any]:
    """Max abs difference and arg-max agreement of two probability arrays."""
    if reference.shape != candidate.shape:
        raise ValueError(f"shape mismatch: {reference.shape} vs {candidate.shape}")
    diff = float(np.abs(reference - candidate).max())
    agree = reference.argmax(axis=1) == candidate.argmax(axis=1)
    return {
        "n": len(reference),
        "max_abs_diff": diff,
        "argmax_agreement": float(agree.mean()),
        "argmax_mismatches": int((~agree).sum()),
        "atol": atol,
        "passed": bool(diff <= atol and agree.all()),
    }


def keras_onnx_parity(
    keras_path: Path, onnx_path: Path, faces: np.ndarray, atol: float = ATOL
) -> dict[str, Any]:
    from fer_onnx_factory.model.build import load_model

    model = load_model(keras_path)
    reference = np.asarray(model.predict(faces.astype(np.float32), batch_size=256, verbose=0))
    return compare(reference, onnx_probabilities(onnx_path, faces), atol)


@command(ValueError)
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="fer-onnx-factory parity",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--keras", required=True, type=Path, help="the Keras model")
    p.add_argument("--onnx", required=True, type=Path, help="its ONNX export")
    p.add_argument("--data", required=True, type=Path, help="fer2013.csv[.gz]")
    p.add_argument("--split", default="PublicTest", help="split to draw faces from")
    p.add_argument("--n", type=int, default=1024, help="number of faces (>= 512)")
    p.add_argument("--atol", type=float, default=ATOL, help="max abs probability difference")
    args = p.parse_args(argv)
    from fer_onnx_factory.data.datasets import load

    for path in (args.keras, args.onnx, args.data):
        if not path.exists():
            print(f"error: {path} not found", file=sys.stderr)
            return 2
    faces = load(args.data)[args.split].images[: args.n]
    result = keras_onnx_parity(args.keras, args.onnx, faces, args.atol)
    print(json.dumps(result, indent=2))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
