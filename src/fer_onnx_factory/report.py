"""Evaluation report: accuracy, per-class precision/recall/F1, confusion matrices, curves.

Used at the end of every training run and by ``fer-onnx-factory evaluate`` for any Keras or
ONNX model. Plots use matplotlib's non-interactive Agg backend.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fer_onnx_factory.data.datasets import Dataset

Predict = Callable[[np.ndarray], np.ndarray]
REPORT_SPLITS = ("PublicTest", "PrivateTest")


def versions() -> dict[str, str]:
    """Versions of everything that shapes a result."""
    out = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
    }
    for name in ("tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "cv2", "fer_onnx"):
        module = sys.modules.get(name)
        if module is None:
            try:
                module = __import__(name)
            except ImportError:
                continue
        out[name] = str(getattr(module, "__version__", "unknown"))
    return out


def classification_metrics(
    labels_true: np.ndarray, probs: np.ndarray, class_names: Sequence[str]
) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1/support, macro F1 and the confusion matrix.

    The confusion matrix has true classes as rows and predicted classes as columns.
    """
    k = len(class_names)
    if probs.ndim != 2 or probs.shape[1] != k or len(probs) != len(labels_true):
        raise ValueError(
            f"expected probabilities of shape ({len(labels_true)}, {k}), got {probs.shape}"
        )
    pred = probs.argmax(axis=1)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (labels_true, pred), 1)
    per_class: dict[str, dict[str, float]] = {}
    for c, name in enumerate(class_names):
        tp = float(confusion[c, c])
        predicted = float(confusion[:, c].sum())
        actual = float(confusion[c, :].sum())
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "support": int(actual),
        }
    return {
        "accuracy": float((pred == labels_true).mean()),
        "macro_f1": float(np.mean([m["f1"] for m in per_class.values()])),
        "n": len(labels_true),
        "per_class": per_class,
        "confusion": confusion.tolist(),
    }


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    _atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def plot_confusion(
    confusion: np.ndarray, class_names: Sequence[str], title: str, path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    confusion = np.asarray(confusion, dtype=np.float64)
    rows = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    im = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(len(class_names)):
        for j in range(len(class_names)):
            ax.text(
                j,
                i,
                f"{int(confusion[i, j])}\n{rows[i, j]:.0%}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if rows[i, j] > 0.5 else "black",
            )
    fig.colorbar(im, ax=ax, label="share of true class")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def read_history(path: Path) -> list[dict[str, float]]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


def plot_curves(history: Sequence[Mapping[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [int(h["epoch"]) + 1 for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for ax, key, title in (
        (axes[0], "loss", "loss"),
        (axes[1], "accuracy", "accuracy"),
    ):
        ax.plot(epochs, [h.get(key, np.nan) for h in history], label="Training")
        ax.plot(epochs, [h.get(f"val_{key}", np.nan) for h in history], label="PublicTest")
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    axes[2].plot(epochs, [h.get("learning_rate", np.nan) for h in history])
    axes[2].set_yscale("log")
    axes[2].set_xlabel("epoch")
    axes[2].set_title("learning rate")
    axes[2].grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _markdown(metrics: Mapping[str, Any]) -> str:
    lines = [f"# Report: {metrics.get('model', '')}", ""]
    for split in REPORT_SPLITS:
        m = metrics["splits"].get(split)
        if m is None:
            continue
        lines += [
            f"## {split}: accuracy {m['accuracy']:.2%} (n={m['n']}), macro F1 {m['macro_f1']:.3f}",
            "",
            "| class | precision | recall | F1 | support |",
            "|---|---|---|---|---|",
        ]
        for name, c in m["per_class"].items():
            lines.append(
                f"| {name} | {c['precision']:.3f} | {c['recall']:.3f} | "
                f"{c['f1']:.3f} | {c['support']} |"
            )
        lines.append("")
    for key in ("command", "wall_time_s", "seconds_per_epoch", "epochs_run"):
        if key in metrics:
            lines.append(f"- {key}: `{metrics[key]}`")
    return "\n".join(lines) + "\n"


def write_report(
    run_dir: Path,
    predict: Predict,
    dataset: Dataset,
    *,
    model_name: str,
    extra: Mapping[str, Any] | None = None,
    history_path: Path | None = None,
    prefix: str = "",
) -> dict[str, Any]:
    """Evaluate ``predict`` on PublicTest and PrivateTest and write the report files.

    Writes ``{prefix}metrics.json``, ``{prefix}report.md``, one confusion-matrix PNG per split
    and, when a history csv is given, ``{prefix}curves.png``.

    Returns:
        The metrics dictionary that was written.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    metrics: dict[str, Any] = {"model": model_name, "labels": list(dataset.labels), "splits": {}}
    for split in REPORT_SPLITS:
        if split not in dataset.splits:
            continue
        data = dataset.splits[split]
        probs = predict(data.images.astype(np.float32))
        m = classification_metrics(data.labels, probs, dataset.labels)
        metrics["splits"][split] = m
        plot_confusion(
            np.array(m["confusion"]),
            dataset.labels,
            f"{split}: accuracy {m['accuracy']:.2%}",
            run_dir / f"{prefix}confusion_{split}.png",
        )
    if history_path is not None:
        history = read_history(history_path)
        if history:
            plot_curves(history, run_dir / f"{prefix}curves.png")
    metrics["dataset"] = dataset.summary()
    metrics["versions"] = versions()
    if extra:
        metrics.update(extra)
    write_json(run_dir / f"{prefix}metrics.json", metrics)
    _atomic_write_text(run_dir / f"{prefix}report.md", _markdown(metrics))
    return metrics
