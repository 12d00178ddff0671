"""Whole-pipeline accuracy on labelled full photos (detect, frame, classify).

    python benchmarks/nimstim.py [--data ../shared/data/nimstim] [--model default]

The photos are ``<class>/*.jpg``; the face nearest the photo's centre is classified and a photo
where no face is found counts as wrong. Reports accuracy (and faces missed) for every pipeline:
Haar with a plain box crop, Haar cut to the model's template box, YuNet with a plain box crop,
YuNet aligned onto the model's template (the default), and ``fer`` 25.10.3 when it is installed.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from fer_onnx import EmotionRecognizer, FaceEmotion

# Folder names of other datasets mapped to the model's labels.
ALIASES = {"anger": "angry", "happiness": "happy", "sadness": "sad", "surprised": "surprise"}

PIPELINES: dict[str, dict[str, object]] = {
    "haar, plain crop": {"detector": "haar", "align": False},
    "haar, template box": {"detector": "haar", "align": True},
    "yunet, plain crop": {"detector": "yunet", "align": False},
    "yunet, aligned (default)": {"detector": "yunet", "align": True},
}


def photos(root: Path) -> list[tuple[Path, str]]:
    items = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        label = ALIASES.get(folder.name, folder.name)
        items += [
            (f, label)
            for f in sorted(folder.iterdir())
            if f.suffix.lower() in {".jpg", ".png", ".jpeg"}
        ]
    return items


def central(faces: list[FaceEmotion], width: int, height: int) -> FaceEmotion | None:
    if not faces:
        return None
    cx, cy = width / 2, height / 2
    return min(
        faces,
        key=lambda f: (
            (f.box.x + f.box.width / 2 - cx) ** 2 + (f.box.y + f.box.height / 2 - cy) ** 2
        ),
    )


def evaluate(
    items: list[tuple[Path, str]], predict: Callable[[np.ndarray], str | None]
) -> tuple[float, int, dict[str, float]]:
    """Accuracy, photos without a face, per-class recall."""
    right, missed = 0, 0
    per_class: dict[str, list[int]] = {}
    for path, label in items:
        image = cv2.imread(str(path))
        got = predict(image)
        missed += got is None
        ok = int(got == label)
        right += ok
        per_class.setdefault(label, []).append(ok)
    recall = {k: float(np.mean(v)) for k, v in sorted(per_class.items())}
    return right / len(items), missed, recall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    shared = Path(os.environ.get("FER_ONNX_SHARED", Path(__file__).resolve().parents[2] / "shared"))
    parser.add_argument("--data", type=Path, default=shared / "data" / "nimstim")
    parser.add_argument("--model", default="default")
    parser.add_argument(
        "--fer", action="store_true", help="also measure the fer package (needs it installed)"
    )
    args = parser.parse_args(argv)
    items = photos(args.data)
    print(f"{len(items)} photos in {args.data}, model {args.model}")
    print("| pipeline | accuracy | no face found | per-class recall |")
    print("|---|---:|---:|---|")
    for name, kwargs in PIPELINES.items():
        with EmotionRecognizer(args.model, device="cpu", **kwargs) as rec:  # type: ignore[arg-type]

            def predict(image: np.ndarray, rec: EmotionRecognizer = rec) -> str | None:
                face = central(rec.recognize(image), image.shape[1], image.shape[0])
                return None if face is None else face.label

            acc, missed, recall = evaluate(items, predict)
        print(
            f"| {name} | {acc:.1%} | {missed} | "
            + ", ".join(f"{k} {v:.0%}" for k, v in recall.items())
            + " |"
        )
    if args.fer:
        from fer.fer import FER

        detector = FER()

        def fer_predict(image: np.ndarray) -> str | None:
            found = detector.detect_emotions(image)
            if not found:
                return None
            h, w = image.shape[:2]
            best = min(
                found,
                key=lambda f: (
                    (f["box"][0] + f["box"][2] / 2 - w / 2) ** 2
                    + (f["box"][1] + f["box"][3] / 2 - h / 2) ** 2
                ),
            )
            emotions = best["emotions"]
            return str(max(emotions, key=emotions.get))

        acc, missed, recall = evaluate(items, fer_predict)
        print(
            f"| fer 25.10.3 | {acc:.1%} | {missed} | "
            + ", ".join(f"{k} {v:.0%}" for k, v in recall.items())
            + " |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
