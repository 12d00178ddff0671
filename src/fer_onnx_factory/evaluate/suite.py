"""Score classifiers on the validation suite: every choice of a release is made here.

    fer-onnx-factory suite --model src/fer_onnx/models/int8.onnx --model runs/x/int8.onnx \\
        [--fer] [--shared ../shared] [--json runs/suite.json]

Sets (all under ``--shared``, default ``$FER_ONNX_SHARED`` or ``../shared``):

* ``fer2013`` — FER2013 ``PublicTest`` (3,589 faces, already cropped 48x48): each face classified.
* ``ferplus`` — the same faces with FER+'s majority label (rows whose votes are mostly
  unknown / not a face / contempt are left out, as in training; the count is reported).
* ``sfew-crop`` — ``sfew2/val`` (405 film-frame crops): each crop classified whole.
* ``sfew-pipeline`` — the same crops through the whole pipeline (detect, frame, classify).
* ``taiwanese`` and ``nimstim`` — posed portraits through the whole pipeline.

Pipeline sets classify the face nearest the photo's centre; a photo where no face is found
counts as wrong (``missed``). Each set reports accuracy, macro F1 and per-class recall.
``--fer`` scores the ``fer`` package (25.10.3, if installed) the same way: its own Haar
detector and 64-px mini-Xception; crops classified whole are passed as one face rectangle.

``--private`` also reads FER2013 and FER+ ``PrivateTest``: once per shipped model, never to
choose anything.

Choices are made on the mean accuracy of five sets, :data:`MEAN_SETS` (all but
``sfew-pipeline``, whose photos are ``sfew-crop``'s). Given two models or more, the command also
prints each later model's difference from the first, set by set and on that mean, with a 95%
paired-bootstrap interval (:func:`paired_differences`): an interval that holds 0 says the suite
cannot tell the two apart.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from fer_onnx_factory.cli import command
from fer_onnx_factory.data.datasets import (
    FER2013_LABELS,
    DataError,
    ferplus_seven_votes,
    load_fer2013_csv,
    read_ferplus_votes,
)
from fer_onnx_factory.data.framing import central
from fer_onnx_factory.errors import PipelineError

log = logging.getLogger(__name__)

LABELS = FER2013_LABELS
SETS = ("fer2013", "ferplus", "sfew-crop", "sfew-pipeline", "taiwanese", "nimstim")
MEAN_SETS = ("fer2013", "ferplus", "sfew-crop", "taiwanese", "nimstim")
"""The sets whose mean accuracy chooses between models (the five-set mean)."""
PRIVATE_SETS = ("fer2013-private", "ferplus-private")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}
ALIASES = {"anger": "angry", "happiness": "happy", "sadness": "sad", "surprised": "surprise"}

Crops = Callable[[list[np.ndarray]], np.ndarray]
"""Crops (BGR or grey uint8) -> ``(N, 7)`` probabilities in :data:`LABELS` order."""
Pipeline = Callable[[np.ndarray], "np.ndarray | None"]
"""A whole photo -> the probabilities (in :data:`LABELS` order) of the face nearest its
centre, or ``None`` when no face is found."""


@dataclass
class Scorer:
    """One classifier as the suite sees it."""

    name: str
    crops: Crops
    pipeline: Pipeline
    close: Callable[[], None]


def default_shared() -> Path:
    """``$FER_ONNX_SHARED``, else ``../shared`` of the working directory."""
    return Path(os.environ.get("FER_ONNX_SHARED", "../shared"))


def _reorder(probs: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    index = [list(labels).index(name) for name in LABELS]
    return np.asarray(probs, dtype=np.float64)[:, index]


def onnx_scorer(model: str, batch: int = 256) -> Scorer:
    """The library's own path: ``EmotionRecognizer`` (YuNet, aligned) on the CPU."""
    from fer_onnx import EmotionRecognizer, SessionConfig

    rec = EmotionRecognizer(model, device="cpu", session_config=SessionConfig(intra_op_threads=0))

    def crops(images: list[np.ndarray]) -> np.ndarray:
        out = [rec.predict(images[i : i + batch]) for i in range(0, len(images), batch)]
        return _reorder(np.concatenate(out), rec.labels)

    def pipeline(image: np.ndarray) -> np.ndarray | None:
        faces = rec.recognize(image)
        boxes = [(f.box.x, f.box.y, f.box.width, f.box.height) for f in faces]
        i = central(boxes, image.shape[1], image.shape[0])
        if i is None:
            return None
        return np.array([faces[i].probabilities[name] for name in LABELS])

    return Scorer(model, crops, pipeline, rec.close)


def fer_scorer() -> Scorer:
    """The ``fer`` package (Haar + mini-Xception), scored like the library.

    Raises:
        PipelineError: ``fer`` is not installed.
    """
    try:
        from fer.fer import FER
    except ImportError as e:
        raise PipelineError(
            "--fer needs the fer package: pip install --no-deps fer==25.10.3 (with tensorflow, "
            f"opencv, pandas, Pillow, tqdm): {e}"
        ) from e
    detector = FER()

    def emotions(found: list[dict[str, Any]]) -> np.ndarray:
        return np.array([[f["emotions"][name] for name in LABELS] for f in found])

    def crops(images: list[np.ndarray]) -> np.ndarray:
        rows = []
        for image in images:
            bgr = image if image.ndim == 3 and image.shape[2] == 3 else _to_bgr(image)
            h, w = bgr.shape[:2]
            rows.append(emotions(detector.detect_emotions(bgr, face_rectangles=[(0, 0, w, h)]))[0])
        return np.array(rows)

    def pipeline(image: np.ndarray) -> np.ndarray | None:
        found = detector.detect_emotions(image)
        i = central([tuple(f["box"]) for f in found], image.shape[1], image.shape[0])
        return None if i is None else np.asarray(emotions([found[i]])[0], dtype=np.float64)

    return Scorer("fer 25.10.3", crops, pipeline, lambda: None)


def _to_bgr(image: np.ndarray) -> np.ndarray:
    grey = image[..., 0] if image.ndim == 3 else image
    return np.asarray(cv2.cvtColor(np.ascontiguousarray(grey), cv2.COLOR_GRAY2BGR))


def metrics(truth: np.ndarray, predicted: np.ndarray, missed: int = 0) -> dict[str, Any]:
    """Accuracy, macro F1 and per-class recall (``predicted`` -1 = no face: always wrong)."""
    k = len(LABELS)
    confusion = np.zeros((k, k + 1), dtype=np.int64)
    np.add.at(confusion, (truth, np.where(predicted < 0, k, predicted)), 1)
    support = confusion.sum(axis=1)
    hits = np.diag(confusion[:, :k])
    recall = hits / np.maximum(support, 1)
    precision = hits / np.maximum(confusion[:, :k].sum(axis=0), 1)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    present = support > 0
    return {
        "n": int(len(truth)),
        "accuracy": float((truth == predicted).mean()) if len(truth) else float("nan"),
        "macro_f1": float(f1[present].mean()) if present.any() else float("nan"),
        "recall": {LABELS[i]: float(recall[i]) for i in range(k) if present[i]},
        "missed": int(missed),
    }


def folder_items(root: Path) -> list[tuple[Path, int]]:
    """``<class>/*.jpg|png`` photos with their label index (folder names mapped to LABELS).

    Raises:
        DataError: ``root`` is missing or a folder names no known class.
    """
    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    items = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        name = ALIASES.get(folder.name, folder.name)
        if name not in LABELS:
            raise DataError(f"{folder}: folder name is not one of {LABELS}")
        items += [
            (f, LABELS.index(name))
            for f in sorted(folder.iterdir())
            if f.suffix.lower() in IMAGE_SUFFIXES
        ]
    return items


def _read(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DataError(f"{path}: not a readable image")
    return np.asarray(image)


def ferplus_majority(votes_csv: Path, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FER+ majority labels of ``rows``: ``(kept positions, labels)``.

    Rows are kept by the rule training uses
    (:func:`fer_onnx_factory.data.datasets.ferplus_seven_votes`).

    Raises:
        DataError: The vote file is malformed or not row-aligned with ``rows``.
    """
    votes = read_ferplus_votes(votes_csv)
    if len(votes) <= int(rows.max(initial=0)):
        raise DataError(f"{votes_csv}: {len(votes)} rows; it must be row-aligned with fer2013.csv")
    seven, keep = ferplus_seven_votes(votes, rows, LABELS)
    return np.flatnonzero(keep), seven[keep].argmax(axis=1)


def _fer_sets(shared: Path, private: bool) -> Iterator[tuple[str, list[np.ndarray], np.ndarray]]:
    splits = ("PublicTest", "PrivateTest") if private else ("PublicTest",)
    data = load_fer2013_csv(shared / "data" / "fer2013" / "fer2013.csv.gz", splits=splits)
    votes = shared / "data" / "ferplus" / "fer2013new.csv"
    for split in splits:
        suffix = "" if split == "PublicTest" else "-private"
        faces = data[split]
        yield f"fer2013{suffix}", list(faces.images), faces.labels
        if votes.is_file():
            kept, labels = ferplus_majority(votes, faces.rows)
            yield f"ferplus{suffix}", [faces.images[i] for i in kept], labels


def collect(scorer: Scorer, shared: Path, private: bool = False) -> dict[str, SetOutputs]:
    """Every set of the suite (those present under ``shared``): labels and probabilities.

    A pipeline set's row is NaN where no face was found.
    """
    out: dict[str, SetOutputs] = {}
    for name, faces, labels in _fer_sets(shared, private):
        t = time.time()
        out[name] = SetOutputs(labels, scorer.crops(faces), time.time() - t)
    folders = {
        "sfew": shared / "data" / "sfew2" / "val",
        "taiwanese": shared / "data" / "taiwanese",
        "nimstim": shared / "data" / "nimstim",
    }
    for key, root in folders.items():
        if not root.is_dir():
            log.warning("%s: absent, skipped", root)
            continue
        items = folder_items(root)
        truth = np.array([label for _, label in items])
        images = [_read(path) for path, _ in items]
        if key == "sfew":
            t = time.time()
            out["sfew-crop"] = SetOutputs(truth, scorer.crops(images), time.time() - t)
        t = time.time()
        rows = [scorer.pipeline(image) for image in images]
        probs = np.array([np.full(len(LABELS), np.nan) if r is None else r for r in rows])
        out["sfew-pipeline" if key == "sfew" else key] = SetOutputs(truth, probs, time.time() - t)
    return out


@dataclass
class SetOutputs:
    """One set's true labels and a classifier's probabilities (NaN rows: no face found)."""

    labels: np.ndarray
    probabilities: np.ndarray
    seconds: float = 0.0

    def predicted(self, weights: np.ndarray | None = None) -> np.ndarray:
        """Arg-max labels (after multiplying by class ``weights``), -1 where no face was found."""
        p = self.probabilities if weights is None else self.probabilities * weights
        missed = np.isnan(p).any(axis=1)
        return np.where(missed, -1, np.nan_to_num(p, nan=-1.0).argmax(axis=1))

    def metrics(self, weights: np.ndarray | None = None) -> dict[str, Any]:
        """:func:`metrics` of this set."""
        missed = int(np.isnan(self.probabilities).any(axis=1).sum())
        return metrics(self.labels, self.predicted(weights), missed) | {
            "seconds": round(self.seconds, 1)
        }


def _interval(difference: float, draws: np.ndarray) -> dict[str, float]:
    low, high = np.percentile(draws, [2.5, 97.5])
    return {"difference": float(difference), "low": float(low), "high": float(high)}


def paired_differences(
    base: dict[str, SetOutputs],
    other: dict[str, SetOutputs],
    resamples: int = 2000,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """``other``'s accuracy minus ``base``'s, with 95% paired-bootstrap intervals.

    Each resample draws the same photos (with replacement) for both models, set by set, so the
    interval is that of the difference itself. Besides every set both were scored on, the key
    ``"mean"`` holds the difference of the five-set mean (:data:`MEAN_SETS`) when every one of
    those sets was scored.

    Args:
        base: The reference model's outputs (:func:`collect`).
        other: The candidate's outputs on the same sets.
        resamples: Bootstrap resamples.
        seed: Seed of the resampling, so that a run can be repeated exactly.

    Returns:
        Per set (and ``"mean"``): ``difference``, ``low`` and ``high``, as fractions.

    Raises:
        PipelineError: The two models were scored on different photos of a set.
    """
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, float]] = {}
    draws: dict[str, np.ndarray] = {}
    for name in [s for s in base if s in other]:
        a, b = base[name], other[name]
        if not np.array_equal(a.labels, b.labels):
            raise PipelineError(f"set {name}: the two models were scored on different photos")
        gain = (b.predicted() == b.labels).astype(np.float64)
        gain -= a.predicted() == a.labels
        if not len(gain):  # a set folder without photos: nothing to compare
            continue
        picks = rng.integers(0, len(gain), (resamples, len(gain)), dtype=np.int32)
        draws[name] = gain[picks].mean(axis=1)
        out[name] = _interval(gain.mean(), draws[name])
    if all(s in draws for s in MEAN_SETS):
        mean = float(np.mean([out[s]["difference"] for s in MEAN_SETS]))
        out["mean"] = _interval(mean, np.mean([draws[s] for s in MEAN_SETS], axis=0))
    return out


def differences_table(first: str, differences: dict[str, dict[str, dict[str, float]]]) -> str:
    """A Markdown table: each later model's difference from ``first``, in points, with the
    95% interval, per set and on the five-set mean."""
    columns = [
        s for s in (*SETS, *PRIVATE_SETS, "mean") if any(s in d for d in differences.values())
    ]
    lines = [
        f"difference from {first}, points (95% paired-bootstrap interval):",
        "| model | " + " | ".join(columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for model, d in differences.items():
        cells = [
            "{difference:+.1f} [{low:+.1f}, {high:+.1f}]".format(
                **{k: 100 * v for k, v in d[c].items()}
            )
            if c in d
            else "—"
            for c in columns
        ]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def table(results: dict[str, dict[str, Any]]) -> str:
    """A Markdown table: one row per model, accuracy (macro F1) per set."""
    sets = [s for s in (*SETS, *PRIVATE_SETS) if any(s in r for r in results.values())]
    lines = [
        "| model | " + " | ".join(sets) + " |",
        "|---|" + "---:|" * len(sets),
    ]
    for model, r in results.items():
        cells = [
            f"{r[s]['accuracy']:.1%} ({r[s]['macro_f1']:.3f})" if s in r else "—" for s in sets
        ]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="fer-onnx-factory suite",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model",
        action="append",
        default=[],
        help="ONNX classifier (a path, or a bundled name: default, accurate, fast, fp32, "
        "int8); repeat to compare",
    )
    p.add_argument("--fer", action="store_true", help="also score the fer package")
    p.add_argument("--shared", type=Path, default=None, help="the shared data folder")
    p.add_argument("--private", action="store_true", help="also read PrivateTest (once!)")
    p.add_argument("--json", type=Path, default=None, help="write every figure here")
    args = p.parse_args(argv)
    if not args.model and not args.fer:
        p.error("name at least one --model (or --fer)")
    return args


@command(log_format="%(message)s")
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    shared = args.shared or default_shared()
    results: dict[str, dict[str, Any]] = {}
    outputs: dict[str, dict[str, SetOutputs]] = {}
    names: list[str | None] = [*args.model, *([None] if args.fer else [])]
    for name in names:
        scorer = fer_scorer() if name is None else onnx_scorer(name)
        try:
            outputs[scorer.name] = collect(scorer, shared, args.private)
        finally:
            scorer.close()
        results[scorer.name] = {s: out.metrics() for s, out in outputs[scorer.name].items()}
        log.info("%s: %s", scorer.name, json.dumps(results[scorer.name]))
    first, *later = outputs
    differences = {m: paired_differences(outputs[first], outputs[m]) for m in later}
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        record: dict[str, Any] = dict(results)
        if differences:
            record["paired_differences"] = {"from": first, "models": differences}
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    print(table(results))
    if differences:
        print()
        print(differences_table(first, differences))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
