"""Run folders derived from another run: the checks and the writing every tuning step shares.

A derived run (weights averaged, BatchNorm re-estimated, class biases baked in) is a run
folder of its own: the source run's record, its own ``best.keras`` and its report. It is
written into a hidden folder and renamed at the end, so a killed step leaves nothing
half-written.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from fer_onnx_factory.errors import PipelineError

log = logging.getLogger(__name__)

COPIED = ("config.json", "contract.json", "state.json", "history.csv", "teacher.npz")
"""The files of the source run copied into a derived run: its record and history."""


def check_new_folder(run: Path, out: Path) -> None:
    """Refuse an ``out`` that is ``run`` itself or a folder that already holds files.

    Raises:
        PipelineError: Either is the case.
    """
    if out.resolve() == run.resolve():
        raise PipelineError("--out must be a new folder, not the run itself")
    if out.exists() and any(out.iterdir()):
        raise PipelineError(f"{out} already holds files; choose a new --out")


def source_metrics(run: Path) -> dict[str, Any]:
    """The run's final report (``metrics.json``), or an empty dict when it has none."""
    path = run / "metrics.json"
    result: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    return result


def write_derived_run(
    run: Path, out: Path, model: Any, dataset: Any, extra: dict[str, Any]
) -> dict[str, Any]:
    """Write ``model``, derived from ``run``, as a run folder of its own with its report.

    The folder gets the source run's record (:data:`COPIED`), ``best.keras`` = ``model`` and
    its report on every split (``extra`` added to ``metrics.json``; the dataset notes are the
    source run's, which say how it was trained). Everything is written into
    a hidden folder first and renamed at the end: a killed step leaves no half-written run
    behind, and running it again starts afresh.

    Returns:
        The report (``out/metrics.json``).
    """
    from fer_onnx_factory.report import write_report

    partial = out.with_name(f".{out.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for name in COPIED:
        if (run / name).is_file():
            shutil.copyfile(run / name, partial / name)
    model.save(partial / "best.keras")

    def predict(x: np.ndarray) -> np.ndarray:
        return np.asarray(model.predict(x, batch_size=256, verbose=0))

    notes = source_metrics(run).get("dataset", {}).get("notes")
    if notes:  # how the source was trained (FER+ votes, teachers, --extra), not only its data
        extra = {**extra, "dataset": {**dataset.summary(), "notes": notes}}
    history = partial / "history.csv"
    metrics = write_report(
        partial,
        predict,
        dataset,
        model_name=str(out / "best.keras"),
        extra=extra,
        history_path=history if history.is_file() else None,
    )
    if out.exists():
        out.rmdir()  # empty (checked by check_new_folder)
    os.replace(partial, out)
    for split, m in metrics["splits"].items():
        log.info("%s accuracy: %.4f (macro F1 %.3f)", split, m["accuracy"], m["macro_f1"])
    return metrics
