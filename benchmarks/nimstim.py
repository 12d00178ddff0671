"""Whole-pipeline accuracy on labelled full photos for every detector and framing.

    python benchmarks/nimstim.py [--data ../shared/data/nimstim] [--model default] [--fer]

The validation suite's photo set (``fer-onnx-factory suite``, set ``nimstim``) measured for
each pipeline instead of the default alone: Haar with a plain box crop, Haar cut to the
model's template box, YuNet with a plain box crop and YuNet aligned onto the model's template
(the default), and ``fer`` 25.10.3 when it is installed. The photos are listed, the face
nearest the centre chosen, and a photo without a face counted wrong exactly as the suite does
(:mod:`fer_onnx_factory.evaluate.suite`: ``folder_items``, ``central``, ``fer_scorer``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from fer_onnx import EmotionRecognizer
from fer_onnx_factory.evaluate.suite import LABELS, central, default_shared, folder_items

PIPELINES: dict[str, dict[str, object]] = {
    "haar, plain crop": {"detector": "haar", "align": False},
    "haar, template box": {"detector": "haar", "align": True},
    "yunet, plain crop": {"detector": "yunet", "align": False},
    "yunet, aligned (default)": {"detector": "yunet", "align": True},
}


def evaluate(
    items: list[tuple[Path, int]], predict: Callable[[np.ndarray], str | None]
) -> tuple[float, int, dict[str, float]]:
    """Accuracy, photos without a face, per-class recall."""
    right, missed = 0, 0
    per_class: dict[str, list[int]] = {}
    for path, index in items:
        label = LABELS[index]
        image = cv2.imread(str(path))
        if image is None:
            raise SystemExit(f"error: {path} is not a readable image")
        got = predict(image)
        missed += got is None
        ok = int(got == label)
        right += ok
        per_class.setdefault(label, []).append(ok)
    recall = {k: float(np.mean(v)) for k, v in sorted(per_class.items())}
    return right / len(items), missed, recall


def row(name: str, result: tuple[float, int, dict[str, float]]) -> str:
    acc, missed, recall = result
    per_class = ", ".join(f"{k} {v:.0%}" for k, v in recall.items())
    return f"| {name} | {acc:.1%} | {missed} | {per_class} |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=default_shared() / "data" / "nimstim")
    parser.add_argument("--model", default="default")
    parser.add_argument(
        "--fer", action="store_true", help="also measure the fer package (needs it installed)"
    )
    args = parser.parse_args(argv)
    items = folder_items(args.data)
    print(f"{len(items)} photos in {args.data}, model {args.model}")
    print("| pipeline | accuracy | no face found | per-class recall |")
    print("|---|---:|---:|---|")
    for name, kwargs in PIPELINES.items():
        with EmotionRecognizer(args.model, device="cpu", **kwargs) as rec:  # type: ignore[arg-type]

            def predict(image: np.ndarray, rec: EmotionRecognizer = rec) -> str | None:
                faces = rec.recognize(image)
                boxes = [(f.box.x, f.box.y, f.box.width, f.box.height) for f in faces]
                i = central(boxes, image.shape[1], image.shape[0])
                return None if i is None else faces[i].label

            print(row(name, evaluate(items, predict)))
    if args.fer:
        from fer.fer import FER

        detector = FER()

        def fer_predict(image: np.ndarray) -> str | None:
            found = detector.detect_emotions(image)
            i = central([tuple(f["box"]) for f in found], image.shape[1], image.shape[0])
            if i is None:
                return None
            emotions = found[i]["emotions"]
            return str(max(emotions, key=emotions.get))

        print(row("fer 25.10.3", evaluate(items, fer_predict)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
