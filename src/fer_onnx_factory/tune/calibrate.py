"""Class-bias calibration: keep the rare classes' recall while choosing the most accurate model.

    fer-onnx-factory calibrate --run runs/ship55bn --out runs/ship55cal \\
        --reference src/fer_onnx/models/int8.onnx --protect disgust fear --tta flip

A network trained on FER2013's class frequencies favours the frequent classes; a newer, more
accurate network can recognise fewer of the rare ones (disgust is 1.5% of Training, and fear
is confused with sad and surprise) than the model it would replace. This step adds a constant
``b_c >= 0`` to the logit of each protected class ``c`` (post-hoc logit adjustment; Menon et al.
2021, "Long-tail learning via logit adjustment") and bakes it into the bias of the final Dense
layer, so the exported model, its test-time views and its int8 copy all carry it.

The biases are chosen on **PublicTest only**: over a grid (``0, --step, ..., --max-bias`` for
each protected class), the most accurate setting whose recall of every protected class is at
least the ``--reference`` model's recall of that class (ties: the smallest total bias). The
evaluation averages the same test-time views (``--tta``) the export will use: run
``fer-onnx-factory bundle`` with the same ``--tta``. ``--framing A B`` chooses on the
PublicTest of several framings of the run's PublicTest faces at once (FER2013's csv and its
aligned copy from ``fer-onnx-factory align``, which is how the runtime frames faces): the
floors hold in each framing (measured on the reference in each, or the ``--floor`` values in
all), and the highest mean accuracy over the framings decides. ``--choose-on
runs/X/candidate/int8.onnx`` chooses on the per-view probabilities of that export of the run
(the shipped file is int8, and its rounding moves a few faces of a rare class across its floor)
instead of the Keras model's. The result is a run folder of
its own, like
``fer-onnx-factory average``'s (the source run's record, ``best.keras`` the calibrated model,
its report on every split: PrivateTest is read there once, and never used to choose).
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import shlex
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fer_onnx_factory.cli import command
from fer_onnx_factory.errors import PipelineError
from fer_onnx_factory.tune.average import AVERAGE_RECORD

if TYPE_CHECKING:
    from fer_onnx_factory.data.datasets import Dataset, Split

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

log = logging.getLogger("fer_onnx_factory.tune.calibrate")


def recall(labels: np.ndarray, predicted: np.ndarray, cls: int) -> float:
    """Share of the faces of class ``cls`` predicted as ``cls`` (0 when there are none)."""
    mask = labels == cls
    return float((predicted[mask] == cls).mean()) if mask.any() else 0.0


def adjust(view_probs: np.ndarray, biases: np.ndarray) -> np.ndarray:
    """Probabilities after adding ``biases`` to every view's logits, averaged over views.

    Args:
        view_probs: ``(V, N, C)`` softmax outputs of the network for V views of N faces.
        biases: ``(C,)`` added to the logits (``log p`` up to a per-row constant).

    Returns:
        ``(N, C)`` probabilities, as the exported graph computes them (softmax per view, then
        the mean over views).
    """
    logits = np.log(np.clip(view_probs, 1e-12, None)) + biases
    logits -= logits.max(axis=-1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=-1, keepdims=True)
    return np.asarray(p.mean(axis=0))


@dataclass(frozen=True)
class Choice:
    """The chosen biases and what they gave on the split they were chosen on."""

    biases: tuple[float, ...]
    accuracy: float
    accuracy_before: float
    recalls: dict[int, float]
    recalls_before: dict[int, float]
    floors: dict[int, float]
    evaluated: int
    feasible: int


def choose_biases(
    view_probs: np.ndarray,
    labels: np.ndarray,
    floors: dict[int, float],
    step: float = 0.05,
    max_bias: float = 1.5,
) -> Choice:
    """The most accurate logit biases that keep each protected class's recall at its floor.

    Args:
        view_probs: ``(V, N, C)`` per-view probabilities on the choosing split.
        labels: ``(N,)`` true classes.
        floors: ``{class index: minimum recall}`` for the protected classes (the only classes
            that get a bias).
        step: Grid step of each bias.
        max_bias: Largest bias tried.

    Returns:
        The best setting: highest accuracy, ties broken by the smallest total bias.

    Raises:
        PipelineError: Bad arguments, or no setting on the grid reaches every floor.
    """
    return choose_biases_across([(view_probs, labels, floors)], step, max_bias)[0]


def choose_biases_across(
    framings: Sequence[tuple[np.ndarray, np.ndarray, dict[int, float]]],
    step: float = 0.05,
    max_bias: float = 1.5,
    names: Sequence[str] = (),
) -> list[Choice]:
    """One set of biases for several framings of the choosing split at once.

    Each framing is ``(view_probs, labels, floors)`` as for :func:`choose_biases` (the same
    faces framed another way, e.g. aligned onto the crop template as the runtime frames
    them). A setting is feasible when every protected class reaches its floor in every
    framing; of those, the one with the highest mean accuracy over the framings wins (ties:
    the smallest total bias). ``names`` name the framings in errors (default: their number).

    Returns:
        One :class:`Choice` per framing, all with the same biases.

    Raises:
        PipelineError: Bad arguments, framings that protect different classes, or no
            setting on the grid reaches every floor.
    """
    classes, protected = _check_framings(framings, step, max_bias)
    bases = [adjust(p, np.zeros(classes)).argmax(axis=1) for p, _, _ in framings]
    best, evaluated, feasible = _search_grid(framings, classes, protected, step, max_bias)
    if best is None:
        raise PipelineError(
            f"no bias up to {max_bias} brings every protected class to its floor "
            f"({_unmet_floors(framings, bases, protected, names)}); "
            "raise --max-bias, or protect fewer classes"
        )
    biases, predictions = best
    return [
        Choice(
            biases=tuple(float(b) for b in biases),
            accuracy=float((predicted == labels).mean()),
            accuracy_before=float((base == labels).mean()),
            recalls={c: recall(labels, predicted, c) for c in protected},
            recalls_before={c: recall(labels, base, c) for c in protected},
            floors=dict(floors),
            evaluated=evaluated,
            feasible=feasible,
        )
        for (_, labels, floors), predicted, base in zip(framings, predictions, bases, strict=True)
    ]


def _check_framings(
    framings: Sequence[tuple[np.ndarray, np.ndarray, dict[int, float]]],
    step: float,
    max_bias: float,
) -> tuple[int, list[int]]:
    """Check :func:`choose_biases_across`'s arguments; return the classes and protected ones.

    Returns ``(number of classes, sorted protected class indices)``.

    Every framing must hold ``(views, faces, classes)`` probabilities with one label per
    face, the same number of classes as the first, and floors for the same, existing
    classes; the grid needs a positive step and a non-negative largest bias.

    Raises:
        PipelineError: The first of these that fails, in that order.
    """
    if not framings:
        raise PipelineError("no framing to choose on")
    classes = framings[0][0].shape[-1]
    for view_probs, labels, floors in framings:
        if view_probs.ndim != 3 or labels.shape != view_probs.shape[1:2]:
            raise PipelineError(
                f"expected (views, faces, classes) probabilities and one label per face, got "
                f"{view_probs.shape} and {labels.shape}"
            )
        if view_probs.shape[-1] != classes:
            raise PipelineError(f"framings with {classes} and {view_probs.shape[-1]} classes")
        if not floors or any(not 0 <= c < classes for c in floors):
            raise PipelineError(f"protected classes must be among the {classes} outputs: {floors}")
    protected = sorted(framings[0][2])
    if any(sorted(floors) != protected for _, _, floors in framings):
        raise PipelineError("every framing must protect the same classes")
    if step <= 0 or max_bias < 0:
        raise PipelineError(f"need --step > 0 and --max-bias >= 0, got {step} and {max_bias}")
    return classes, protected


def _search_grid(
    framings: Sequence[tuple[np.ndarray, np.ndarray, dict[int, float]]],
    classes: int,
    protected: list[int],
    step: float,
    max_bias: float,
) -> tuple[tuple[np.ndarray, list[np.ndarray]] | None, int, int]:
    """Try every setting of the grid; return the best feasible one and how many were tried.

    Each protected class takes every value of ``0, step, ..., max_bias`` independently (the
    other classes keep bias 0). A setting is feasible when :func:`_misses_a_floor` says no; the
    best feasible setting has the highest mean accuracy over the framings, then the smallest
    total bias (on a complete tie the first setting tried stays).

    Returns:
        ``((biases, predictions per framing) or None when nothing is feasible, settings
        evaluated, settings feasible)``.
    """
    grid = np.round(np.arange(0.0, max_bias + step / 2, step), 6)
    best: tuple[np.ndarray, list[np.ndarray]] | None = None
    best_key: tuple[float, float] | None = None
    evaluated = feasible = 0
    for values in itertools.product(grid, repeat=len(protected)):
        biases = np.zeros(classes)
        biases[protected] = values
        predictions = [adjust(p, biases).argmax(axis=1) for p, _, _ in framings]
        evaluated += 1
        if _misses_a_floor(framings, predictions, protected):
            continue
        feasible += 1
        key = (_mean_accuracy(framings, predictions), -float(sum(values)))
        if best_key is None or key > best_key:
            best, best_key = (biases, predictions), key
    return best, evaluated, feasible


def _misses_a_floor(
    framings: Sequence[tuple[np.ndarray, np.ndarray, dict[int, float]]],
    predictions: Sequence[np.ndarray],
    protected: Sequence[int],
) -> bool:
    """Whether some protected class's recall falls below its floor in some framing."""
    return any(
        recall(labels, predicted, c) < floors[c]
        for (_, labels, floors), predicted in zip(framings, predictions, strict=True)
        for c in protected
    )


def _mean_accuracy(
    framings: Sequence[tuple[np.ndarray, np.ndarray, dict[int, float]]],
    predictions: Sequence[np.ndarray],
) -> float:
    """The accuracy of ``predictions`` in each framing, averaged over the framings."""
    return float(
        np.mean(
            [
                (predicted == labels).mean()
                for (_, labels, _), predicted in zip(framings, predictions, strict=True)
            ]
        )
    )


def _unmet_floors(
    framings: Sequence[tuple[np.ndarray, np.ndarray, dict[int, float]]],
    bases: Sequence[np.ndarray],
    protected: Sequence[int],
    names: Sequence[str],
) -> str:
    """The floors the unbiased model misses, for the error when no setting is feasible.

    Each missed floor reads ``class C: recall < floor``; with several framings each
    framing's list is prefixed by its name (``names[i]``, or ``framing i+1`` past the end of
    ``names``). When the unbiased model misses none, the floors are only unreachable
    together, and the text says so.
    """
    unmet = []
    for i, ((_, labels, floors), base) in enumerate(zip(framings, bases, strict=True)):
        below = [c for c in protected if recall(labels, base, c) < floors[c]]
        if below:
            shown = ", ".join(
                f"class {c}: {recall(labels, base, c):.3f} < {floors[c]:.3f}" for c in below
            )
            name = names[i] if i < len(names) else f"framing {i + 1}"
            unmet.append(shown if len(framings) == 1 else f"{name}: {shown}")
    return "; ".join(unmet) or "each floor is met alone, never all at once"


def view_probabilities(model: Any, faces: np.ndarray, tta: str, batch_size: int = 256) -> Any:
    """``(V, N, C)``: the model's probabilities for each test-time view of ``tta`` separately."""
    from fer_onnx_factory.model.build import TTA_VIEWS, TTAViews

    if tta not in TTA_VIEWS:
        raise PipelineError(f"--tta must be one of {tuple(TTA_VIEWS)}, got {tta!r}")
    out = []
    for view in TTA_VIEWS[tta]:
        layer = TTAViews((view,))
        rows = [
            np.asarray(layer(faces[i : i + batch_size].astype(np.float32)))
            for i in range(0, len(faces), batch_size)
        ]
        out.append(
            np.asarray(model.predict(np.concatenate(rows), batch_size=batch_size, verbose=0))
        )
    return np.stack(out)


MAX_EXPORT_GAP = 0.05
"""``--choose-on`` must be an export of the run: over PublicTest, the mean of each face's largest
probability difference (with views) from the Keras model's stays below this (int8 rounding
gives ~0.013 for the shipped network; another network gives tenths)."""


def onnx_view_probabilities(
    path: Path, faces: np.ndarray, tta: str, batch_size: int = 256
) -> np.ndarray:
    """``(V, N, C)``: per-view probabilities of an exported model with its views in the graph.

    The graph's single Softmax gives ``V x N`` rows (the views stacked along the batch); their
    mean over views must be the file's output, which checks the layout.

    Raises:
        PipelineError: The file is unreadable, was exported with other views than ``tta``, or
            has not exactly one Softmax whose rows average to its output.
    """
    import onnx
    import onnxruntime as ort

    from fer_onnx_factory.model.build import TTA_VIEWS

    if tta not in TTA_VIEWS:
        raise PipelineError(f"--tta must be one of {tuple(TTA_VIEWS)}, got {tta!r}")
    views = len(TTA_VIEWS[tta])
    try:
        proto = onnx.load(str(path))
    except Exception as e:  # onnx raises protobuf's DecodeError, OSError, ...
        raise PipelineError(f"--choose-on {path}: cannot read it as ONNX: {e}") from e
    meta = {p.key: p.value for p in proto.metadata_props}
    if meta.get("tta", "none") != tta:
        raise PipelineError(
            f"--choose-on {path} was exported with views {meta.get('tta', 'none')!r}, not "
            f"--tta {tta!r}"
        )
    softmax = [node for node in proto.graph.node if node.op_type == "Softmax"]
    if len(softmax) != 1:
        raise PipelineError(f"--choose-on {path}: {len(softmax)} Softmax nodes, expected one")
    name = softmax[0].output[0]
    if name not in [o.name for o in proto.graph.output]:
        proto.graph.output.append(onnx.ValueInfoProto(name=name))
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    output_name = session.get_outputs()[0].name
    per_view, final = [], []
    for i in range(0, len(faces), batch_size):
        x = faces[i : i + batch_size].astype(np.float32)
        out, rows = session.run([output_name, name], {input_name: x})
        if rows.shape[0] != views * len(x):
            raise PipelineError(
                f"--choose-on {path}: its Softmax gives {rows.shape[0]} rows for {len(x)} faces "
                f"and {views} views"
            )
        per_view.append(np.asarray(rows).reshape(views, len(x), -1))
        final.append(np.asarray(out))
    probs = np.concatenate(per_view, axis=1)
    gap = float(np.abs(probs.mean(axis=0) - np.concatenate(final)).max())
    if not gap <= 0.02:  # an int8 output is rounded to steps of 1/255; NaN fails too
        raise PipelineError(
            f"--choose-on {path}: the mean of its Softmax rows over views is not its output "
            f"(off by {gap:.3f}); the views are not stacked along the batch"
        )
    return probs


def output_layer(model: Any) -> Any:
    """The final softmax Dense layer, whose bias takes the calibration.

    Raises:
        PipelineError: The model is an ensemble, or does not end in a softmax Dense layer.
    """
    import keras

    from fer_onnx_factory.model.build import OUTPUT_NAME

    try:
        layer = model.get_layer(OUTPUT_NAME) if len(model.outputs) == 1 else None
    except ValueError as e:
        raise PipelineError(f"the model has no output layer named {OUTPUT_NAME!r}") from e
    if layer is None or isinstance(layer, keras.layers.Average):
        raise PipelineError("calibrate a single network; this model averages several members")
    activation = getattr(layer, "activation", None)
    if not isinstance(layer, keras.layers.Dense) or activation is not keras.activations.softmax:
        raise PipelineError(f"{OUTPUT_NAME!r} is not a Dense layer with a softmax")
    return layer


def calibrate_run(
    run: Path,
    out: Path,
    reference: Path | None,
    protect: Sequence[str],
    floors: dict[str, float] | None = None,
    tta: str = "flip",
    step: float = 0.05,
    max_bias: float = 1.5,
    command: str = "fer-onnx-factory calibrate",
    framings: Sequence[Path] = (),
    choose_on: Path | None = None,
) -> dict[str, Any]:
    """Calibrate ``run``'s best model into the new run folder ``out`` (see the module doc).

    Args:
        run: The run whose ``best.keras`` is calibrated.
        out: A new run folder for the result.
        reference: The model whose PublicTest recall of each protected class is its floor.
        protect: The protected classes' names.
        floors: ``{class name: recall}`` given directly (instead of measured on ``reference``).
        tta: The test-time views to evaluate with.
        step: Grid step of each bias.
        max_bias: Largest bias tried.
        command: The command line, for the record.
        framings: Datasets whose PublicTest chooses (the same faces framed in different
            ways, e.g. FER2013's csv and ``fer-onnx-factory align``'s aligned copy): the
            floors hold in each, and the mean accuracy over them decides. Empty: the run's
            own data.
        choose_on: An export of ``run`` with ``tta`` views (e.g. its int8 candidate) whose
            per-view probabilities choose the biases, instead of the Keras model's.

    Returns:
        The calibrated model's report (``out/metrics.json``).

    Raises:
        PipelineError: ``out`` already holds files, ``run`` has no finished model, a protected
            class is not a label, the floors are missing or given twice, a framing is given
            twice or holds other classes or faces than the run's PublicTest, or no setting
            reaches the floors.
    """
    from fer_onnx_factory.data.datasets import limit_rows, load
    from fer_onnx_factory.model.build import load_model
    from fer_onnx_factory.runs import check_new_folder, source_metrics, write_derived_run
    from fer_onnx_factory.train.config import TrainConfig

    t0 = time.time()
    check_new_folder(run, out)
    if not (run / "best.keras").is_file():
        raise PipelineError(f"{run} has no best.keras: finish (or average) the run first")
    cfg, record = TrainConfig.read(run)
    dataset = load(cfg.data)
    if cfg.limit:
        limit_rows(dataset, cfg.limit)
    labels = list(dataset.labels)
    _check_protection(labels, protect, reference, floors)
    publics = _choosing_splits(dataset, cfg.data, cfg.limit, framings)
    floors_of = [
        _floors_in(public, labels, protect, floors, reference) for public in publics.values()
    ]

    model = load_model(run / "best.keras")
    layer = output_layer(model)
    probs = [view_probabilities(model, public.images, tta) for public in publics.values()]
    chosen_on = probs
    if choose_on is not None:
        chosen_on = _export_view_probabilities(choose_on, run, publics, tta, probs[0])
    choices = choose_biases_across(
        [
            (p, public.labels, f)
            for p, public, f in zip(chosen_on, publics.values(), floors_of, strict=True)
        ],
        step,
        max_bias,
        names=[str(path) for path in publics],
    )
    _bake_biases(model, layer, choices[0], publics, probs, tta)
    _log_choices(publics, choices, labels, tta)

    source = source_metrics(run)
    seconds = time.time() - t0
    extra: dict[str, Any] = {key: source[key] for key in AVERAGE_RECORD if key in source}
    extra.update(
        {
            "command": record.get("command"),
            "calibrated_with": command,
            "calibrated_from": str(run),
            "calibration": {
                "reference": None if reference is None else str(reference),
                "floors_given": floors is not None,
                "tta": tta,
                "chosen_on": "keras" if choose_on is None else str(choose_on),
                **_choices_report(publics, choices, labels),
                "grid": {"step": step, "max_bias": max_bias, "settings": choices[0].evaluated},
                "feasible_settings": choices[0].feasible,
            },
            "calibration_s": round(seconds, 1),
            "wall_time_s": round(float(source.get("wall_time_s") or 0.0) + seconds, 1),
            "seconds_per_epoch": source.get("seconds_per_epoch"),
            "epochs_run": source.get("epochs_run"),
            "args": record.get("args"),
            "training_rows": len(dataset["Training"]),
        }
    )
    return write_derived_run(run, out, model, dataset, extra)


def _check_protection(
    labels: list[str],
    protect: Sequence[str],
    reference: Path | None,
    floors: dict[str, float] | None,
) -> None:
    """Check what is protected and how its floors are set.

    ``protect`` must name at least one class, all among ``labels``; exactly one of
    ``reference`` (floors measured on it) and ``floors`` (given) is set, and given floors are
    one recall in ``[0, 1]`` for each protected class, no more and no fewer.

    Raises:
        PipelineError: The first of these that fails, in that order.
    """
    unknown = [c for c in protect if c not in labels]
    if unknown or not protect:
        raise PipelineError(f"--protect takes class names among {labels}, got {list(protect)}")
    if (reference is None) == (floors is None):
        raise PipelineError("give either --reference (floors measured on it) or --floor")
    if floors is not None and (
        sorted(floors) != sorted(protect) or not all(0 <= f <= 1 for f in floors.values())
    ):
        raise PipelineError(
            f"--floor needs one recall in [0, 1] for each protected class {list(protect)}, "
            f"got {floors}"
        )


def _choosing_splits(
    dataset: Dataset, data: Path, limit: int, framings: Sequence[Path]
) -> dict[Path, Split]:
    """The PublicTest splits the biases are chosen on, by the path of their dataset.

    Without ``framings`` that is the run's own PublicTest (of ``data``); otherwise the
    PublicTest of each framing, in the order given, each checked by :func:`_framing_public`
    and holding its faces in the first framing's order with the same labels, so that the
    framings' predictions line up face by face.

    Raises:
        PipelineError: A framing is named twice (after resolving its path) or fails a check.
        DataError: ``dataset`` has no PublicTest, or a framing cannot be loaded.
    """
    own = dataset["PublicTest"]
    if not framings:
        return {data: own}
    resolved = [Path(f).resolve() for f in framings]
    if len(set(resolved)) != len(resolved):
        raise PipelineError(
            f"--framing names the same file twice: {[str(f) for f in framings]}; give "
            "each framing of the faces once"
        )
    publics: dict[Path, Split] = {}
    for path in framings:
        public = _framing_public(path, limit, dataset.labels, own, data)
        first = next(iter(publics.values()), public)
        if not np.array_equal(public.rows, first.rows) or not np.array_equal(
            public.labels, first.labels
        ):
            raise PipelineError(
                f"--framing {path}: its PublicTest faces are not in the order of {framings[0]}'s"
            )
        publics[path] = public
    return publics


def _framing_public(path: Path, limit: int, labels: Sequence[str], own: Split, data: Path) -> Split:
    """The PublicTest of the framing ``path``, if it frames exactly the run's PublicTest faces.

    The framing is limited to ``limit`` rows as the run was, and must have the run's classes
    (in order) and hold the same faces as the run's PublicTest ``own`` (of ``data``), by
    source row; their order is checked by the caller.

    Raises:
        PipelineError: The classes or the faces differ.
    """
    from fer_onnx_factory.data.datasets import limit_rows, load

    other = load(path)
    if limit:
        limit_rows(other, limit)
    if list(other.labels) != list(labels):
        raise PipelineError(
            f"--framing {path}: classes {list(other.labels)}, the run's are {list(labels)}"
        )
    public = other["PublicTest"]
    if set(public.rows.tolist()) != set(own.rows.tolist()):
        raise PipelineError(
            f"--framing {path}: its PublicTest ({len(public)} faces) holds other faces "
            f"than the run's ({len(own)} faces of {data}); give "
            "framings of the run's own PublicTest faces"
        )
    return public


def _floors_in(
    public: Split,
    labels: list[str],
    protect: Sequence[str],
    floors: dict[str, float] | None,
    reference: Path | None,
) -> dict[int, float]:
    """The recall floor of each protected class in one framing, by class index.

    Floors given directly (``--floor``) are the same in every framing; otherwise each is the
    ``reference`` model's recall of that class on this framing's PublicTest.
    """
    if floors is not None:
        return {labels.index(c): float(f) for c, f in floors.items()}
    from fer_onnx_factory.model.predict import predictor

    assert reference is not None
    predicted = predictor(reference)(public.images.astype(np.float32)).argmax(axis=1)
    return {labels.index(c): recall(public.labels, predicted, labels.index(c)) for c in protect}


def _export_view_probabilities(
    choose_on: Path, run: Path, publics: dict[Path, Split], tta: str, keras_probs: np.ndarray
) -> list[np.ndarray]:
    """Per-view probabilities of the export ``choose_on`` on every framing's PublicTest.

    The export must be one of ``run``'s model: on the first framing, the mean over faces of
    the largest difference between its probabilities (with views) and the Keras model's
    (``keras_probs``) is at most :data:`MAX_EXPORT_GAP`.

    Raises:
        PipelineError: The file is not such an export (or is unreadable).
    """
    chosen_on = [
        onnx_view_probabilities(choose_on, public.images, tta) for public in publics.values()
    ]
    zero = np.zeros(keras_probs.shape[-1])
    gap = float(np.abs(adjust(chosen_on[0], zero) - adjust(keras_probs, zero)).max(1).mean())
    if not gap <= MAX_EXPORT_GAP:  # NaN fails too
        raise PipelineError(
            f"--choose-on {choose_on} differs from {run}'s model by {gap:.3f} in a face's "
            f"probabilities on average over PublicTest (at most {MAX_EXPORT_GAP} for an "
            "export of it); give an export of this run"
        )
    return chosen_on


def _bake_biases(
    model: Any,
    layer: Any,
    choice: Choice,
    publics: dict[Path, Split],
    probs: Sequence[np.ndarray],
    tta: str,
) -> None:
    """Add the chosen biases to the bias of ``layer``, and check ``model`` now gives them.

    The check evaluates the calibrated model again on every framing and compares it with the
    choice computed from the uncalibrated ``probs``.

    Raises:
        PipelineError: The calibrated model's probabilities differ from the chosen ones by
            more than 1e-4 somewhere.
    """
    kernel, bias = layer.get_weights()
    layer.set_weights([kernel, bias + np.asarray(choice.biases, dtype=bias.dtype)])
    # The baked-in bias must give what was chosen (softmax per view, then the mean), up to
    # float32 rounding: Keras computes softmax(z + b), the choice softmax(log p + b).
    zero = np.zeros(len(choice.biases))
    for public, p in zip(publics.values(), probs, strict=True):
        check = adjust(view_probabilities(model, public.images, tta), zero)
        chosen = adjust(p, np.array(choice.biases))
        if not np.allclose(check, chosen, rtol=0.0, atol=1e-4):
            worst = float(np.abs(check - chosen).max())
            raise PipelineError(
                "the calibrated model does not reproduce the chosen probabilities "
                f"(off by {worst:.2g})"
            )


def _log_choices(
    publics: dict[Path, Split], choices: Sequence[Choice], labels: Sequence[str], tta: str
) -> None:
    """Log the chosen biases and what they changed, one line per framing."""
    protected = choices[0].floors
    for path, c in zip(publics, choices, strict=True):
        log.info(
            "biases %s: %s PublicTest accuracy with %s views %.4f -> %.4f; recall %s (floors %s)",
            {labels[k]: c.biases[k] for k in protected},
            path,
            tta,
            c.accuracy_before,
            c.accuracy,
            {labels[k]: round(r, 3) for k, r in c.recalls.items()},
            {labels[k]: round(f, 3) for k, f in c.floors.items()},
        )


def _choices_report(
    publics: dict[Path, Split], choices: Sequence[Choice], labels: Sequence[str]
) -> dict[str, Any]:
    """The calibration record's figures: the biases, then before/after for every framing.

    The first framing's figures sit at the top level (named by ``data``), every framing's
    under ``framings``, and the accuracies' mean over the framings between them.
    """
    choice = choices[0]
    return {
        "class_biases": {labels[c]: choice.biases[c] for c in choice.floors},
        "data": str(next(iter(publics))),
        **_choice_summary(choice, labels, choice.floors),
        "mean_public_accuracy_with_views": {
            "before": round(float(np.mean([c.accuracy_before for c in choices])), 4),
            "after": round(float(np.mean([c.accuracy for c in choices])), 4),
        },
        "framings": [
            {"data": str(path), **_choice_summary(c, labels, choice.floors)}
            for path, c in zip(publics, choices, strict=True)
        ],
    }


def _choice_summary(c: Choice, labels: Sequence[str], protected: Iterable[int]) -> dict[str, Any]:
    """One framing's floors, and its accuracy and ``protected`` recalls before and after."""
    return {
        "recall_floors": {labels[k]: round(f, 4) for k, f in c.floors.items()},
        "public_accuracy_with_views": {
            "before": round(c.accuracy_before, 4),
            "after": round(c.accuracy, 4),
        },
        "public_recall_with_views": {
            labels[k]: {
                "before": round(c.recalls_before[k], 4),
                "after": round(c.recalls[k], 4),
            }
            for k in protected
        },
    }


@command()
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="fer-onnx-factory calibrate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--run", required=True, type=Path, help="a finished (or averaged) run")
    p.add_argument("--out", required=True, type=Path, help="new run folder for the result")
    floors = p.add_mutually_exclusive_group(required=True)
    floors.add_argument(
        "--reference",
        type=Path,
        help="model (.onnx or .keras) whose PublicTest recall of each protected class is the "
        "floor, e.g. the shipped src/fer_onnx/models/int8.onnx",
    )
    floors.add_argument(
        "--floor",
        nargs="+",
        metavar="CLASS=RECALL",
        help="the floors given directly, one per protected class (e.g. the PublicTest recall "
        "of the model shipped before, from its model card)",
    )
    p.add_argument("--protect", nargs="+", required=True, help="classes whose recall must not fall")
    p.add_argument(
        "--tta",
        default="flip",
        help="test-time views to evaluate with: the --tta fer-onnx-factory bundle will use",
    )
    p.add_argument(
        "--framing",
        nargs="+",
        type=Path,
        default=[],
        metavar="DATA",
        help="choose on the PublicTest of each of these datasets (the run's PublicTest faces "
        "framed in different ways, e.g. the FER2013 csv and its `fer-onnx-factory align` "
        "copy): the floors hold in each, their mean accuracy decides; default: the run's own "
        "data",
    )
    p.add_argument(
        "--choose-on",
        type=Path,
        default=None,
        metavar="ONNX",
        help="choose on the per-view probabilities of this export of the run (e.g. "
        "runs/X/candidate/int8.onnx from fer-onnx-factory bundle --tta as given here), not on "
        "the Keras model's: the shipped file is int8",
    )
    p.add_argument("--step", type=float, default=0.05, help="grid step of each bias")
    p.add_argument("--max-bias", type=float, default=1.5, help="largest bias tried")
    args = p.parse_args(argv)
    given: dict[str, float] | None = None
    if args.floor is not None:
        given = {}
        for item in args.floor:
            name, sep, value = item.partition("=")
            try:
                given[name] = float(value)
            except ValueError:
                sep = ""
            if not sep:
                p.error(f"--floor takes CLASS=RECALL, e.g. disgust=0.518; got {item!r}")
    command = shlex.join(
        ["fer-onnx-factory", "calibrate", *(argv if argv is not None else sys.argv[1:])]
    )
    calibrate_run(
        args.run,
        args.out,
        args.reference,
        args.protect,
        given,
        args.tta,
        args.step,
        args.max_bias,
        command=command,
        framings=args.framing,
        choose_on=args.choose_on,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
