"""Weight averaging of a run's last epochs (SWA), with BatchNormalization statistics re-estimated.

    fer-onnx-factory average --run runs/kd45 --out runs/kd45swa --last 8

A run trained with ``--keep-epochs K`` keeps its model after each of its last K epochs
(``epoch_NNN.keras``, NNN = epochs finished). This averages the weights of the last ``--last``
of them, re-estimates every BatchNormalization layer's moving mean and variance on Training
faces (averaged weights change what each layer sees, so the averaged statistics no longer fit;
Izmailov et al. 2018, "Averaging Weights Leads to Wider Optima"), and writes the result as a
run folder of its own (``--last 1``: the last epoch with its statistics re-estimated, nothing
averaged): the source run's record (config, contract, state, history) with
``best.keras`` the averaged model and its report on every split. ``fer-onnx-factory bundle``
and ``fer-onnx-factory ledger add`` then take it like any other run. Whether it replaces the
run's best checkpoint is decided on PublicTest (``metrics.json`` of both runs); PrivateTest is
read once, by the report, as for every finished model.

``--init-weight W`` (a run fine-tuned from a trained model with ``--init``) then moves the
result back towards the model it started from, ``(1 - W) x average + W x init``, before the
statistics are re-estimated: weight-space ensembling of a fine-tuned model with its start
(WiSE-FT; Wortsman et al. 2022, "Robust fine-tuning of zero-shot models"), which keeps much of
what fine-tuning gained while keeping more of the starting model's robustness to other data.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fer_onnx_factory.cli import command
from fer_onnx_factory.errors import PipelineError
from fer_onnx_factory.runs import check_new_folder, source_metrics, write_derived_run
from fer_onnx_factory.train.config import SNAPSHOT

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

AVERAGE_RECORD = (
    "averaged_with",
    "averaged_from",
    "averaged_epochs",
    "batchnorm_faces",
    "batchnorm_layers",
    "init_weight",
    "init",
)
"""Keys of an averaged run's ``metrics.json`` that say how its weights were made; a run
derived from it (``fer-onnx-factory calibrate``) carries them on."""

log = logging.getLogger("fer_onnx_factory.tune.average")


def snapshots(run: Path) -> list[tuple[int, Path]]:
    """The per-epoch models a run kept (``epoch_NNN.keras``), oldest first.

    Returns:
        ``(epochs finished, path)`` pairs sorted by epoch.
    """
    found = []
    for path in run.iterdir() if run.is_dir() else ():
        match = SNAPSHOT.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def choose(run: Path, last: int) -> list[tuple[int, Path]]:
    """The last ``last`` snapshots of ``run``.

    Raises:
        PipelineError: ``last`` < 1, the run kept fewer snapshots than asked for, or the last
            ``last`` of them are not consecutive epochs.
    """
    if last < 1:
        raise PipelineError(
            f"--last must be at least 1 (1 = the last epoch with its BatchNorm statistics "
            f"re-estimated, no averaging), got {last}"
        )
    kept = snapshots(run)
    if len(kept) < last:
        raise PipelineError(
            f"{run} kept {len(kept)} per-epoch models (epoch_NNN.keras), fewer than --last "
            f"{last}; lower --last, or train with --keep-epochs {last} (or more)"
        )
    chosen = kept[-last:]
    epochs = [e for e, _ in chosen]
    if epochs != list(range(epochs[0], epochs[0] + last)):
        raise PipelineError(f"{run}: the last {last} kept epochs are not consecutive: {epochs}")
    return chosen


def average_weights(weights: Sequence[Sequence[np.ndarray]]) -> list[np.ndarray]:
    """Element-wise mean of several models' weight lists (same architecture).

    Raises:
        PipelineError: No models, or the weight lists do not match in shape.
    """
    if not weights:
        raise PipelineError("nothing to average")
    shapes = [tuple(w.shape for w in ws) for ws in weights]
    if any(s != shapes[0] for s in shapes[1:]):
        raise PipelineError("the models to average do not have the same weights (architecture)")
    return [
        np.mean(np.stack([np.asarray(ws[i], dtype=np.float64) for ws in weights]), axis=0).astype(
            np.asarray(weights[0][i]).dtype
        )
        for i in range(len(weights[0]))
    ]


def interpolate(
    ours: Sequence[np.ndarray], theirs: Sequence[np.ndarray], weight: float
) -> list[np.ndarray]:
    """``(1 - weight) x ours + weight x theirs``, weight by weight (same architecture).

    Raises:
        PipelineError: ``weight`` outside [0, 1], or the weight lists do not match in shape.
    """
    if not 0.0 <= weight <= 1.0:
        raise PipelineError(f"the interpolation weight must be within [0, 1], got {weight}")
    if [np.shape(w) for w in ours] != [np.shape(w) for w in theirs]:
        raise PipelineError("the models to interpolate do not have the same weights")
    return [
        ((1.0 - weight) * np.asarray(a, np.float64) + weight * np.asarray(b, np.float64)).astype(
            np.asarray(a).dtype
        )
        for a, b in zip(ours, theirs, strict=True)
    ]


def batchnorm_layers(model: Any) -> list[Any]:
    """Every BatchNormalization layer of ``model``, nested models included."""
    import keras

    found: list[Any] = []

    def walk(layer: Any) -> None:
        if isinstance(layer, keras.layers.BatchNormalization):
            found.append(layer)
        for inner in getattr(layer, "layers", ()):
            walk(inner)

    walk(model)
    return found


def recompute_batchnorm(model: Any, faces: np.ndarray, batch_size: int = 128) -> int:
    """Re-estimate every trainable BatchNormalization layer's moving statistics on ``faces``.

    The moving statistics are reset and then become the plain mean over the batches of each
    batch's statistics (momentum ``i / (i + 1)`` at batch ``i``), taken in a training-mode
    pass, as the layers saw them in training. Trainable weights do not change. Frozen layers
    (``trainable=False``, e.g. a backbone frozen for a head phase) run in inference mode in
    Keras and keep their statistics.

    Args:
        model: A Keras model.
        faces: ``(N, H, W, C)`` faces in the model's input format.
        batch_size: Faces per batch (the batch statistics' sample size, as in training).

    Returns:
        The number of BatchNormalization layers updated (0 leaves the model unchanged).
        Only whole batches are used: ``len(faces) // batch_size * batch_size`` faces.

    Raises:
        PipelineError: Fewer faces than one batch.
    """
    layers = [layer for layer in batchnorm_layers(model) if layer.trainable]
    if not layers:
        return 0
    n = len(faces) // batch_size
    if n < 1:
        raise PipelineError(
            f"need at least {batch_size} faces to re-estimate BatchNorm, got {len(faces)}"
        )
    momenta = [layer.momentum for layer in layers]
    trainable = [w.numpy() for w in model.trainable_weights]
    for layer in layers:
        layer.moving_mean.assign(np.zeros(layer.moving_mean.shape, np.float32))
        layer.moving_variance.assign(np.ones(layer.moving_variance.shape, np.float32))
    try:
        for i in range(n):
            for layer in layers:
                layer.momentum = i / (i + 1)  # read at call time in eager mode
            batch = faces[i * batch_size : (i + 1) * batch_size].astype(np.float32)
            model(batch, training=True)
    finally:
        for layer, m in zip(layers, momenta, strict=True):
            layer.momentum = m
    for w, before in zip(model.trainable_weights, trainable, strict=True):
        if not np.array_equal(w.numpy(), before):
            raise PipelineError(f"BatchNorm re-estimation changed trainable weight {w.path}")
    return len(layers)


def average_run(
    run: Path,
    out: Path,
    data: Path | None = None,
    last: int = 8,
    bn_faces: int = 8192,
    seed: int = 0,
    command: str = "fer-onnx-factory average",
    init_weight: float = 0.0,
) -> dict[str, Any]:
    """Average the last ``last`` kept epochs of ``run`` into a new run folder ``out``.

    Returns:
        The averaged model's report (``out/metrics.json``).

    Args:
        init_weight: Share of the run's ``--init`` model in the result (0: none).

    Raises:
        PipelineError: ``out`` already holds files, ``run`` has not finished or kept too few
            epochs, ``data`` is not the run's data, the data cannot be read, or
            ``init_weight`` is given for a run without ``--init`` or outside [0, 1).
    """
    from fer_onnx_factory.data.datasets import limit_rows, load
    from fer_onnx_factory.model.build import inference_model, load_model
    from fer_onnx_factory.train.config import RunState, TrainConfig

    t0 = time.time()
    check_new_folder(run, out)
    cfg, record = TrainConfig.read(run)
    state = RunState.read(run)
    if state.epoch < cfg.total_epochs and not state.stopped_early:
        raise PipelineError(
            f"{run} has run {state.epoch} of its {cfg.total_epochs} epochs; average it once it "
            "has finished (fer-onnx-factory train ... --resume)"
        )
    data = cfg.data if data is None else data
    if data.resolve() != cfg.data.resolve():
        raise PipelineError(
            f"--data {data} is not the data {run} was trained on ({cfg.data}); BatchNorm "
            "statistics and the report must use the run's own faces"
        )
    if not 0.0 <= init_weight < 1.0:
        raise PipelineError(f"--init-weight must be within [0, 1), got {init_weight}")
    if init_weight and cfg.init is None:
        raise PipelineError(
            f"--init-weight moves the result towards the model {run} started from, but {run} "
            "was not trained with --init"
        )
    chosen = choose(run, last)
    dataset = load(data)
    if cfg.limit:
        limit_rows(dataset, cfg.limit)
    models = []
    for _, path in chosen:
        try:
            models.append(load_model(path))
        except (FileNotFoundError, ValueError) as e:
            raise PipelineError(str(e)) from e
    model = models[-1]
    weights = [m.get_weights() for m in models]
    del models
    averaged = average_weights(weights)
    if init_weight:
        assert cfg.init is not None
        try:
            start = load_model(cfg.init).get_weights()
        except (FileNotFoundError, ValueError) as e:
            raise PipelineError(f"the run's --init model: {e}") from e
        averaged = interpolate(averaged, start, init_weight)
        log.info("moved %.2f of the way back to %s", init_weight, cfg.init)
    model.set_weights(averaged)
    train_faces = dataset["Training"].images
    rng = np.random.default_rng(seed)
    pick = rng.permutation(len(train_faces))[: min(bn_faces, len(train_faces))]
    updated = recompute_batchnorm(model, train_faces[np.sort(pick)], cfg.batch_size)
    used = len(pick) // cfg.batch_size * cfg.batch_size
    model = inference_model(model)  # an ensemble's members averaged, as best.keras is
    log.info(
        "averaged epochs %s; %d BatchNorm layers re-estimated on %d Training faces",
        [e for e, _ in chosen],
        updated,
        used,
    )

    source = source_metrics(run)
    seconds = time.time() - t0
    extra = {
        "command": record.get("command"),
        "averaged_with": command,
        "averaged_from": str(run),
        "averaged_epochs": [e for e, _ in chosen],
        "batchnorm_layers": updated,
        "batchnorm_faces": int(used) if updated else 0,
        **({"init_weight": init_weight, "init": str(cfg.init)} if init_weight else {}),
        "averaging_s": round(seconds, 1),
        "wall_time_s": round(float(source.get("wall_time_s") or 0.0) + seconds, 1),
        "seconds_per_epoch": source.get("seconds_per_epoch"),
        "epochs_run": source.get("epochs_run"),
        "args": record.get("args"),
        "training_rows": len(dataset["Training"]),
    }
    return write_derived_run(run, out, model, dataset, extra)


@command()
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="fer-onnx-factory average",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--run", required=True, type=Path, help="a finished run with kept epochs")
    p.add_argument("--out", required=True, type=Path, help="new run folder for the average")
    p.add_argument(
        "--data",
        type=Path,
        default=None,
        help="the run's data (default: the path in its config.json; another file is refused)",
    )
    p.add_argument("--last", type=int, default=8, help="how many of the last epochs to average")
    p.add_argument(
        "--bn-faces",
        type=int,
        default=8192,
        help="Training faces for re-estimating BatchNorm statistics",
    )
    p.add_argument(
        "--init-weight",
        type=float,
        default=0.0,
        help="for a run fine-tuned with --init: share of that starting model in the result, "
        "(1 - W) x average + W x init (WiSE-FT), before the statistics are re-estimated",
    )
    args = p.parse_args(argv)
    command = shlex.join(
        ["fer-onnx-factory", "average", *(argv if argv is not None else sys.argv[1:])]
    )
    average_run(
        args.run,
        args.out,
        args.data,
        args.last,
        args.bn_faces,
        command=command,
        init_weight=args.init_weight,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
