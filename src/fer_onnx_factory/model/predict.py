"""A ``faces -> probabilities`` function for any Keras (.keras/.h5) or ONNX model file.

ONNX models run through the library itself (``EmotionRecognizer.predict``), so the figures are
those a user gets; Keras models through :func:`fer_onnx_factory.model.build.load_model`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

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
    from fer_onnx_factory.model.build import load_model

    model = load_model(model_path)

    def run_keras(x: np.ndarray) -> np.ndarray:
        return np.asarray(model.predict(x.astype(np.float32), batch_size=batch_size, verbose=0))

    return run_keras
