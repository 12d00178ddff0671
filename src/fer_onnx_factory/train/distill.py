"""Knowledge distillation: a teacher's probabilities on the Training faces as soft targets.

``fer-onnx-factory train ... --teacher runs/a/best.keras src/fer_onnx/models/fp32.onnx``
averages the teachers' probabilities on every Training face and trains the student on

    (1 - w) * label + w * soften(teacher, T)

(``--teacher-weight`` w, ``--teacher-temperature`` T; ``soften`` raises the probabilities to
1/T and renormalises, i.e. a softmax of the logits divided by T). Evaluation splits keep their
FER2013 labels, so PublicTest still decides every choice.

The teachers run once, before the first epoch: a Keras teacher on the face and its mirror
image, an exported ONNX teacher as it ships (through the library, with its in-graph views). The
result is saved in the run folder (``teacher.npz``: probabilities, the Training rows they
belong to, the class names, each teacher's path, size and SHA-256, and the seconds the
labelling took, which the run's report adds to its wall time) so that ``--resume`` trains on
the same targets instead of re-running, and the record says exactly which files taught the run.

That file is also a *soft-target file*: ``--teacher runs/a/teacher.npz`` (alone) trains on the
probabilities it holds, without the models that wrote them, so a student can be distilled
again after its teacher has been replaced (commit a copy of the file for that). It must have
been written for the same Training faces (the same ``--data``, ``--ferplus`` and ``--limit``)
and name the data's classes; the new run's cache keeps the file's own record of its teachers
(``source``), and its ``seconds`` are the reading time, not the original labelling.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fer_onnx_factory.data.datasets import DataError, Dataset, Split
from fer_onnx_factory.errors import PipelineError

log = logging.getLogger(__name__)

TEACHER = "teacher.npz"
SOFT_TARGET_SUFFIX = ".npz"
"""The suffix of a soft-target file (a ``teacher.npz`` written by an earlier run)."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def describe(models: Sequence[Path]) -> list[dict[str, object]]:
    """Path, size and SHA-256 of each teacher file.

    Raises:
        PipelineError: A teacher file does not exist.
    """
    out: list[dict[str, object]] = []
    for m in models:
        if not m.is_file():
            raise PipelineError(
                f"teacher model not found: {m} (expected a .keras or .onnx model, or the "
                "teacher.npz soft-target file of an earlier run)"
            )
        out.append({"path": str(m), "bytes": m.stat().st_size, "sha256": _sha256(m)})
    return out


def teacher_labels(model: Path) -> tuple[str, ...]:
    """The class names of a teacher in output order.

    An ONNX model's from its fer-onnx metadata; a Keras model's from the ``contract.json`` of
    the run folder it sits in; a soft-target file's from the names it stores.

    Raises:
        PipelineError: The model cannot be loaded, or a Keras model has no contract beside it,
            or a soft-target file names no classes.
    """
    if model.suffix == SOFT_TARGET_SUFFIX:
        with _open_npz(model, _SOFT_HINT) as saved:
            if "labels" not in saved.files:
                raise PipelineError(
                    f"teacher {model} stores no class names (a teacher.npz written before they "
                    "were recorded); label the faces again with its teacher model"
                )
            return tuple(str(x) for x in saved["labels"])
    if model.suffix == ".onnx":
        from fer_onnx import EmotionRecognizer, FerOnnxError

        try:
            with EmotionRecognizer(model, detector=None, device="cpu") as rec:
                return tuple(rec.labels)
        except FerOnnxError as e:
            raise PipelineError(f"teacher {model} cannot be loaded: {e}") from e
    from fer_onnx_factory.train.config import CONTRACT, read_contract

    if (model.parent / CONTRACT).is_file():
        return read_contract(model.parent).labels
    raise PipelineError(
        f"teacher {model}: no {CONTRACT} beside it, so its classes cannot be checked; use the "
        "best.keras of a training run folder, or its ONNX export (fer-onnx-factory bundle)"
    )


def check_teachers(models: Sequence[Path], labels: Sequence[str]) -> None:
    """Refuse teachers whose classes are not ``labels`` in the same order.

    Raises:
        PipelineError: A teacher names other classes, or another order.
    """
    for model in models:
        theirs = teacher_labels(model)
        if tuple(theirs) != tuple(labels):
            raise PipelineError(
                f"teacher {model} predicts {list(theirs)}, the data has {list(labels)}; "
                "a teacher must predict the data's classes in the same order"
            )


def _teacher_predictor(model: Path) -> Callable[[np.ndarray], np.ndarray]:
    from fer_onnx_factory.model.predict import predictor

    run = predictor(model)
    if model.suffix == ".onnx":
        return run  # exported models carry their own test-time views

    def face_and_mirror(x: np.ndarray) -> np.ndarray:
        return np.asarray((run(x) + run(x[:, :, ::-1])) / 2.0)

    return face_and_mirror


def teacher_probabilities(models: Sequence[Path], images: np.ndarray) -> np.ndarray:
    """The teachers' mean probabilities, ``(N, K)`` float32.

    Raises:
        PipelineError: The teachers disagree on the number of classes or return something
            that is not a probability distribution per row.
    """
    if not models:
        raise PipelineError("distillation needs at least one teacher model")
    total: np.ndarray | None = None
    for model in models:
        t0 = time.time()
        p = np.asarray(_teacher_predictor(model)(images), dtype=np.float64)
        log.info("teacher %s labelled %d faces in %.0fs", model, len(images), time.time() - t0)
        if p.ndim != 2 or len(p) != len(images):
            raise PipelineError(f"teacher {model} returned shape {p.shape} for {len(images)} faces")
        # an int8 model's softmax output is quantized (steps of 1/255 per view), so its rows
        # sum to 1 within about 1%; they are renormalised below
        if not _is_distribution(p):
            raise PipelineError(f"teacher {model} does not return probabilities")
        p = p / p.sum(axis=1, keepdims=True)
        if total is not None and p.shape != total.shape:
            raise PipelineError(
                f"teacher {model} has {p.shape[1]} classes, the first teacher {total.shape[1]}"
            )
        total = p if total is None else total + p
    assert total is not None
    return (total / len(models)).astype(np.float32)


def soften(p: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log(p) / T)`` row by row: T > 1 flattens, T = 1 returns ``p``."""
    if not temperature > 0:
        raise PipelineError(f"teacher temperature must be > 0, got {temperature}")
    logp = np.log(np.clip(p.astype(np.float64), 1e-12, 1.0)) / temperature
    logp -= logp.max(axis=1, keepdims=True)
    e = np.exp(logp)
    return np.asarray(e / e.sum(axis=1, keepdims=True), dtype=np.float32)


def blend(targets: np.ndarray, teacher: np.ndarray, weight: float) -> np.ndarray:
    """``(1 - weight) * targets + weight * teacher``."""
    if not 0.0 <= weight <= 1.0:
        raise PipelineError(f"teacher weight must be in [0, 1], got {weight}")
    if targets.shape != teacher.shape:
        raise PipelineError(f"targets {targets.shape} and teacher {teacher.shape} differ")
    return ((1.0 - weight) * targets + weight * teacher).astype(np.float32)


_RELABEL = "move it away to label the faces again"
_SOFT_HINT = "pass a teacher.npz written by `fer-onnx-factory train --teacher MODEL`"


@contextlib.contextmanager
def _open_npz(path: Path, hint: str = _RELABEL) -> Iterator[Any]:
    """``np.load`` of ``path`` (no pickles); a failure, missing key or malformed entry while
    reading it is one :class:`PipelineError` ending in ``hint``."""
    try:
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as saved:
            yield saved
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as e:
        raise PipelineError(f"{path} cannot be read ({e}); {hint}") from e


def _load_cached(
    path: Path, rows: np.ndarray, teachers: list[dict[str, object]], labels: Sequence[str]
) -> np.ndarray:
    with _open_npz(path) as saved:
        cached_rows = saved["rows"]
        probs = np.asarray(saved["probabilities"])
        cached_teachers = json.loads(str(saved["teachers"]))
        cached_labels = [str(x) for x in saved["labels"]] if "labels" in saved.files else None
    if not np.array_equal(cached_rows, rows) or cached_teachers != teachers:
        raise PipelineError(
            f"{path} was made for other Training rows or other teacher files; {_RELABEL}"
        )
    if cached_labels is not None and cached_labels != list(labels):
        raise PipelineError(f"{path} names the classes {cached_labels}; {_RELABEL}")
    return probs


def read_soft_targets(path: Path, rows: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
    """The probabilities a soft-target file holds for the Training ``rows``, ``(N, K)``, and
    its own record of the teachers that wrote them (``teachers``, ``seconds``).

    Raises:
        PipelineError: The file cannot be read, was written for other Training faces (another
            ``--data``, ``--ferplus`` or ``--limit``), or does not hold one probability
            distribution per face.
    """
    with _open_npz(path, _SOFT_HINT) as saved:
        theirs = np.asarray(saved["rows"])
        probs = np.asarray(saved["probabilities"], dtype=np.float32)
        source = {
            "teachers": json.loads(str(saved["teachers"])) if "teachers" in saved.files else [],
            "seconds": float(saved["seconds"]) if "seconds" in saved.files else None,
        }
    if not np.array_equal(theirs, rows):
        raise PipelineError(
            f"{path} was written for other Training faces ({len(theirs)} rows; this run has "
            f"{len(rows)}); train with the --data, --ferplus and --limit it was written with"
        )
    if probs.ndim != 2 or len(probs) != len(rows) or not _is_distribution(probs):
        raise PipelineError(f"{path} does not hold one probability distribution per face")
    return probs, source


def _is_distribution(p: np.ndarray) -> bool:
    """Finite, non-negative rows summing to 1 within 2% (an int8 teacher's rounding)."""
    sums = p.sum(axis=1, keepdims=True)
    return bool(np.all(np.isfinite(p)) and p.min() >= 0 and np.abs(sums - 1.0).max() <= 0.02)


def labelling_seconds(out: Path) -> float | None:
    """Wall time the teachers took to label the Training faces of the run in ``out``."""
    path = out / TEACHER
    if not path.is_file():
        return None
    with _open_npz(path) as saved:
        return float(saved["seconds"]) if "seconds" in saved.files else None


def distil(
    dataset: Dataset, models: Sequence[Path], weight: float, temperature: float, out: Path
) -> Dataset:
    """The dataset with Training targets blended with the teachers' softened probabilities.

    The teachers' probabilities are cached in ``out/teacher.npz`` and reused when the rows and
    teacher files (by SHA-256) are the same. A teacher may be a soft-target file (an earlier
    run's ``teacher.npz``, passed alone): its probabilities are used as they are.

    Raises:
        PipelineError: Missing teachers, a soft-target file among other teachers, a
            mismatched cache, or bad teacher output.
    """
    cache = out / TEACHER
    soft = [m for m in models if m.suffix == SOFT_TARGET_SUFFIX]
    if soft and len(models) > 1:
        raise PipelineError(
            f"a soft-target file ({soft[0]}) stands for the teachers that wrote it: pass it "
            "alone, or pass teacher models only"
        )
    if soft and soft[0].resolve() == cache.resolve():
        raise PipelineError(
            f"{soft[0]} is this run's own cache; copy it elsewhere (e.g. next to the recipe) "
            "and pass the copy, or train into another --out"
        )
    train = dataset["Training"]
    teachers = describe(models)
    if cache.exists():
        probs = _load_cached(cache, train.rows, teachers, dataset.labels)
        log.info("teacher probabilities read from %s", cache)
    else:
        check_teachers(models, dataset.labels)
        t0 = time.time()
        source: dict[str, Any] | None = None
        if soft:
            log.info("teacher probabilities read from the soft-target file %s", soft[0])
            probs, source = read_soft_targets(soft[0], train.rows)
        else:
            probs = teacher_probabilities(models, train.images)
        seconds = time.time() - t0
        if probs.shape[1] != train.targets.shape[1]:
            raise DataError(
                f"the teachers have {probs.shape[1]} classes, the data {train.targets.shape[1]}"
            )
        fields: dict[str, Any] = {
            "rows": train.rows,
            "probabilities": probs,
            "labels": np.array(dataset.labels),
            "teachers": np.array(json.dumps(teachers)),
            "seconds": np.array(seconds),
        }
        if source is not None:
            fields["source"] = np.array(json.dumps(source))
        tmp = cache.with_name(f".{cache.name}.tmp.npz")
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **fields)
        tmp.replace(cache)
    agree = float((probs.argmax(axis=1) == train.labels).mean())
    targets = blend(train.targets, soften(probs, temperature), weight)
    splits = dict(dataset.splits)
    splits["Training"] = Split(train.images, train.labels, targets, train.rows)
    notes = [
        *dataset.notes,
        f"distilled: Training targets = {1 - weight:g} x labels + {weight:g} x teacher "
        f"(T={temperature:g}) from {[t['path'] for t in teachers]}; the teachers' top class "
        f"matches the label on {agree:.1%} of Training faces",
    ]
    return Dataset(
        splits, dataset.labels, dataset.spec, dataset.source, notes, template=dataset.template
    )
