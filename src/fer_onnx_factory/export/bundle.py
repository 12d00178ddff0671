"""Turn a finished training run into the models the library ships, with proof.

    fer-onnx-factory bundle --run runs/ship --data ../shared/data/fer2013/fer2013.csv.gz

Steps, each measured and written to ``<run>/export/summary.json``:

0. the crop template (``--template``, default
   ``fer_onnx_factory/data/templates/fer2013.json``: how FER2013
   frames a face, measured by ``fer-onnx-factory template measure``) goes into the metadata;
1. optionally wrap ``best.keras`` with test-time augmentation inside the graph (``--tta``:
   averages over the mirror image and/or a 1.09x centre zoom, at most ``--max-views`` views;
   chosen on PublicTest only), then export it to fp32 ONNX with metadata
   (``fer_onnx_factory.export.onnx``);
2. Keras <-> ONNX parity on 1,024 PublicTest faces (max abs difference <= 1e-4, identical
   arg-max), else stop;
3. static QDQ per-channel int8 quantization calibrated on 300 Training faces (drawn from the
   faces an epoch of the run trained on: its ``--extra`` photos included; activation ranges
   by ``--int8-calibration``, MinMax unless told), and how closely it follows fp32 on up to
   2,000 other faces of that pool (top-class agreement, mean probability difference);
4. PublicTest / PrivateTest accuracy of both ONNX models through the library, per-face latency
   (batch 1, one thread) and file size; the int8 model is accepted only if its PublicTest
   accuracy is at most 0.5 points below fp32's (PrivateTest is reported, never used to choose);
5. accuracies written into each model's metadata; the models copied to ``--dest``
   (``fp32.onnx``, and ``int8.onnx`` when accepted) and ``MODEL_CARD.md`` regenerated.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fer_onnx_factory.cli import command
from fer_onnx_factory.data.framing import FER2013_TEMPLATE
from fer_onnx_factory.errors import PipelineError
from fer_onnx_factory.export.onnx import ExportError, export, save
from fer_onnx_factory.export.parity import keras_onnx_parity
from fer_onnx_factory.export.quantize import (
    METHODS,
    PERCENTILE,
    calibration_index,
    describe,
    fidelity,
    quantize,
)

if TYPE_CHECKING:
    from fer_onnx_factory.data.datasets import Dataset

DEST = Path("src/fer_onnx/models")
MAX_INT8_DROP = 0.005
"""int8 ships when it loses at most this much PublicTest accuracy against fp32."""
TEMPLATE = FER2013_TEMPLATE
"""The crop template measured on FER2013 Training (``fer-onnx-factory template measure``)."""
MAX_VIEWS = 2
"""Test-time views ``--tta auto`` may choose: two keep the classifier at ~0.45 ms per face
(int8, batch 1), which the per-frame latency targets need; four views cost ~0.85 ms."""
FIDELITY_FACES = 2000
"""Training faces, other entries of the pool than the calibration ones, on which int8 is
compared with fp32 (a calibration face's other framing, or a repeated ``--extra`` photo, may be
among them)."""


def latency_ms(model: Path, face: np.ndarray, runs: int = 300) -> float:
    """Median milliseconds of one single-face ``predict`` (batch 1, one thread)."""
    from fer_onnx import EmotionRecognizer

    with EmotionRecognizer(model, detector=None, device="cpu") as rec:
        for _ in range(20):
            rec.predict([face])
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            rec.predict([face])
            times.append(time.perf_counter() - t)
    return float(np.median(times) * 1e3)


def add_accuracy_metadata(path: Path, metrics: dict[str, Any], suffix: str = "") -> None:
    """Write each split's accuracy and macro F1 into ``path``'s metadata
    (``onnx_<split>_accuracy<suffix>``; ``suffix`` names other data than the run's)."""
    import onnx

    from fer_onnx.metadata import ModelInfo
    from fer_onnx.model_tools import write_metadata

    proto = onnx.load(str(path))
    info = ModelInfo.from_metadata({p.key: p.value for p in proto.metadata_props}, str(path))
    props = dict(info.extra)
    for split, m in metrics["splits"].items():
        props[f"onnx_{split}_accuracy{suffix}"] = f"{m['accuracy']:.4f}"
        props[f"onnx_{split}_macro_f1{suffix}"] = f"{m['macro_f1']:.4f}"
    write_metadata(proto, dataclasses.replace(info, extra=props).to_metadata())
    save(proto, path)


def _template_source(model: Path, given: Path | None, run: Path) -> str | None:
    """Where the crop template written into ``model`` came from (for the model card)."""
    import onnx

    from fer_onnx.alignment import KEY_CROP_TEMPLATE

    props = {p.key: p.value for p in onnx.load(str(model)).metadata_props}
    if KEY_CROP_TEMPLATE not in props:
        return None
    if given is not None:
        return str(given)
    measured = json.loads(TEMPLATE.read_text()).get("template") if TEMPLATE.is_file() else None
    if measured is not None and json.loads(props[KEY_CROP_TEMPLATE]) == measured:
        return str(TEMPLATE)
    return str(run / "contract.json")


def choose_tta(
    keras_path: Path, dataset: Any, tta: str, work: Path, max_views: int = MAX_VIEWS
) -> tuple[Path, dict[str, Any]]:
    """Decide on test-time augmentation using PublicTest only; returns the model to export.

    Every choice of :data:`fer_onnx_factory.model.build.TTA_CHOICES` is measured on PublicTest
    and recorded.
    With ``tta="auto"`` the most accurate choice of at most ``max_views`` views wins (each view
    is one more pass of the network per face); a tie goes to the cheaper one.
    """
    from fer_onnx_factory.model.build import (
        TTA_CHOICES,
        TTA_VIEWS,
        VIEWS,
        TTAViews,
        load_model,
        with_tta,
    )

    if tta != "auto" and tta not in TTA_CHOICES:
        raise ExportError(f"--tta must be auto or one of {TTA_CHOICES}, got {tta!r}")
    if max_views < 1:
        raise ExportError(f"--max-views must be at least 1, got {max_views}")
    model = load_model(keras_path)
    public = dataset["PublicTest"]
    x = public.images.astype(np.float32)
    # Each view is predicted once (the layer the exported graph uses); choices average subsets.
    stacked = np.asarray(TTAViews(VIEWS)(x))
    probs = np.asarray(model.predict(stacked, batch_size=256, verbose=0))
    per_view = dict(zip(VIEWS, probs.reshape(len(VIEWS), len(x), -1), strict=True))
    accuracy = {}
    for choice in TTA_CHOICES:
        p = np.mean([per_view[v] for v in TTA_VIEWS[choice]], axis=0)
        accuracy[choice] = float((p.argmax(1) == public.labels).mean())
    if tta == "auto":
        affordable = [c for c in TTA_CHOICES if len(TTA_VIEWS[c]) <= max_views]
        chosen = max(affordable, key=lambda c: (accuracy[c], -len(TTA_VIEWS[c])))
    else:
        chosen = tta
    info = {
        "chosen": chosen,
        "max_views": max_views if tta == "auto" else None,
        "views": {c: list(TTA_VIEWS[c]) for c in TTA_CHOICES},
        "PublicTest": accuracy,
    }
    print(
        "test-time augmentation on PublicTest: "
        + ", ".join(f"{c} {a:.4f}" for c, a in accuracy.items())
        + f"; chosen: {chosen}"
    )
    if chosen == "none":
        return keras_path, info
    wrapped = work / f"best_tta_{chosen.replace('+', '_')}.keras"
    with_tta(model, chosen).save(wrapped)
    return wrapped, info


def load_report_data(paths: Sequence[Path], labels: Sequence[str]) -> list[tuple[Path, Any]]:
    """Load the ``--report-on`` datasets before anything is exported.

    Raises:
        ExportError: Two files share a name (the metadata keys use it), a dataset cannot be
            read, its classes differ from the run's, or it lacks PublicTest or PrivateTest.
    """
    from fer_onnx_factory.data.datasets import load

    names = [p.name for p in paths]
    if len(set(names)) != len(names):
        raise ExportError(
            f"--report-on: two files share a name ({names}); the figures are recorded under "
            "each file's name, so give each dataset a distinct one"
        )
    loaded = []
    for path in paths:
        try:
            data = load(path)
        except (PipelineError, FileNotFoundError, ValueError) as e:
            raise ExportError(f"--report-on {path}: {e}") from e
        if list(data.labels) != list(labels):
            raise ExportError(f"--report-on {path}: classes {data.labels}, the run's are {labels}")
        missing = [s for s in ("PublicTest", "PrivateTest") if s not in data.splits]
        if missing:
            raise ExportError(f"--report-on {path}: no {' or '.join(missing)} split")
        loaded.append((path, data))
    return loaded


def report_on_data(
    models: dict[str, Path], datasets: Sequence[tuple[Path, Any]], work: Path
) -> list[dict[str, Any]]:
    """Each model's PublicTest / PrivateTest accuracy, macro F1 and per-class recall on each
    of ``datasets`` (from :func:`load_report_data`: e.g. FER2013's csv and its aligned copy,
    for a run trained on both), also written into each file's metadata
    (``onnx_<split>_accuracy@<data file name>``)."""
    from fer_onnx_factory.evaluate.evaluate import evaluate

    out: list[dict[str, Any]] = []
    for i, (path, data) in enumerate(datasets):
        entry: dict[str, Any] = {"data": str(path)}
        for name, model in models.items():
            metrics = evaluate(model, data, work / f"report_{i}", prefix=f"{name}_")
            add_accuracy_metadata(model, metrics, suffix=f"@{path.name}")
            splits: dict[str, dict[str, Any]] = metrics["splits"]  # type: ignore[assignment]
            entry[name] = {
                split: {
                    "accuracy": m["accuracy"],
                    "macro_f1": m["macro_f1"],
                    "recall": {c: v["recall"] for c, v in m["per_class"].items()},
                }
                for split, m in splits.items()
            }
        out.append(entry)
    return out


def training_faces(run: Path, dataset: Dataset) -> np.ndarray:
    """The faces one epoch of ``run`` trained on: ``dataset``'s Training faces, and the
    run's ``--extra`` faces as many times as it added them (int8 calibration draws from these,
    so that photos a run learnt from are calibrated for as well). A run folder without a
    training record (``config.json``) has no extras.

    Raises:
        DataError: An ``--extra`` file of the run is missing or does not fit ``dataset``.
    """
    from fer_onnx_factory.train.config import CONFIG, TrainConfig
    from fer_onnx_factory.train.run import add_extras

    if (run / CONFIG).is_file():
        dataset = add_extras(dataset, TrainConfig.read(run)[0].replace(limit=0))
    return dataset["Training"].images


def split_pool(
    pool: np.ndarray, calibration: int, others: int = FIDELITY_FACES
) -> tuple[np.ndarray, np.ndarray]:
    """``calibration`` faces of ``pool`` to calibrate int8 on (seed 0, the draw of
    :func:`~fer_onnx_factory.export.quantize.calibration_faces`), and up to ``others`` of the
    remaining entries (seed 1) to compare int8 with fp32 on: fixed draws, so a bundle can be
    repeated exactly.

    Raises:
        ValueError: ``calibration`` is not within 1..len(pool).
    """
    chosen = calibration_index(len(pool), calibration)
    rest = np.setdiff1d(np.arange(len(pool)), chosen)
    if len(rest) > others:
        rest = np.sort(np.random.default_rng(1).choice(rest, size=others, replace=False))
    return pool[chosen], pool[rest]


def bundle(
    run: Path,
    data: Path,
    dest: Path,
    calibration: int = 300,
    tta: str = "auto",
    max_views: int = MAX_VIEWS,
    template: Path | None = None,
    no_template: bool = False,
    card: Path = Path("MODEL_CARD.md"),
    report_on: Sequence[Path] = (),
    int8_calibration: str = "minmax",
    percentile: float = PERCENTILE,
) -> dict[str, Any]:
    """Bundle ``run`` (see the module's docstring): returns the summary written to
    ``<run>/export/summary.json``.

    Raises:
        ExportError: An input is missing or unusable, a setting is out of range (checked
            before the slow steps), or Keras/ONNX parity fails.
        DataError: ``data`` or an ``--extra`` file of the run cannot be read.
    """
    from fer_onnx_factory.data.datasets import load
    from fer_onnx_factory.data.framing import load_template
    from fer_onnx_factory.evaluate.evaluate import evaluate

    try:
        method = describe(int8_calibration, percentile)  # checks both
    except ValueError as e:
        raise ExportError(str(e)) from e
    if template is None and not no_template and not (run / "contract.json").is_file():
        template = TEMPLATE  # a run from before contracts: FER2013's measured framing
    crop = load_template(template) if template is not None and not no_template else None

    keras_path = run / "best.keras"
    if not keras_path.is_file():
        raise ExportError(f"{keras_path} not found: is {run} a finished training run?")
    work = run / "export"
    work.mkdir(parents=True, exist_ok=True)
    dataset = load(data)
    pool = training_faces(run, dataset)  # before the slow steps: a missing --extra fails now
    try:
        faces, others = split_pool(pool, calibration)
    except ValueError as e:
        raise ExportError(f"--calibration: {e}") from e
    reports = load_report_data(report_on, dataset.labels)
    summary: dict[str, Any] = {
        "run": str(run),
        "keras": str(keras_path),
        "calibration_faces": calibration,
        "int8_calibration": method,
    }

    keras_path, summary["tta"] = choose_tta(keras_path, dataset, tta, work, max_views)
    fp32 = work / "fp32.onnx"
    export(
        keras_path,
        fp32,
        run_dir=run,
        extra={"tta": summary["tta"]["chosen"]},
        template=crop,
        contract_template=not no_template,
    )
    summary["template"] = _template_source(fp32, template, run)
    parity = keras_onnx_parity(keras_path, fp32, dataset["PublicTest"].images[:1024])
    summary["parity"] = parity
    print(
        f"parity on {parity['n']} PublicTest faces: max |diff| {parity['max_abs_diff']:.2e}, "
        f"arg-max agreement {parity['argmax_agreement']:.4f}"
    )
    if not parity["passed"]:
        raise ExportError(f"Keras/ONNX parity failed: {parity}")

    int8 = work / "int8.onnx"
    quantize(fp32, int8, faces, method=int8_calibration, percentile=percentile)
    if len(others):  # a pool no larger than --calibration leaves no face to compare on
        summary["int8_fidelity"] = fidelity(fp32, int8, others)
        print(f"int8 against fp32 on other Training faces: {summary['int8_fidelity']}")

    probe = dataset["PublicTest"].images[0]
    for name, path in (("fp32", fp32), ("int8", int8)):
        metrics = evaluate(path, dataset, work, prefix=f"{name}_")
        add_accuracy_metadata(path, metrics)
        splits: dict[str, dict[str, Any]] = metrics["splits"]  # type: ignore[assignment]
        summary[name] = {
            "size_mb": round(path.stat().st_size / 1e6, 3),
            "latency_ms_batch1_1thread": round(latency_ms(path, probe), 3),
            **{f"{s}_accuracy": m["accuracy"] for s, m in splits.items()},
        }
        print(f"{name}: {summary[name]}")
    # Accepted on PublicTest (every choice is); the PrivateTest drop is only reported.
    drop = summary["fp32"]["PublicTest_accuracy"] - summary["int8"]["PublicTest_accuracy"]
    summary["int8_public_drop_points"] = round(drop * 100, 2)
    summary["int8_private_drop_points"] = round(
        (summary["fp32"]["PrivateTest_accuracy"] - summary["int8"]["PrivateTest_accuracy"]) * 100,
        2,
    )
    summary["int8_accepted"] = bool(drop <= MAX_INT8_DROP)
    summary["report_on"] = report_on_data({"fp32": fp32, "int8": int8}, reports, work)
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(fp32, dest / "fp32.onnx")
    if summary["int8_accepted"]:
        shutil.copyfile(int8, dest / "int8.onnx")
    else:
        (dest / "int8.onnx").unlink(missing_ok=True)
        print(
            f"int8 rejected: PublicTest drop {drop * 100:.2f} points > {MAX_INT8_DROP * 100:g}",
            file=sys.stderr,
        )
    (work / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    from fer_onnx_factory.export.card import write_card

    write_card(run, summary, card)
    return summary


@command()
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="fer-onnx-factory bundle",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--run", required=True, type=Path, help="finished training run folder")
    p.add_argument(
        "--data",
        required=True,
        type=Path,
        help="the run's data: fer2013.csv[.gz], an aligned .npz (fer-onnx-factory align) or "
        "a class-folder tree",
    )
    p.add_argument("--dest", type=Path, default=DEST, help=f"where models go (default {DEST})")
    p.add_argument("--calibration", type=int, default=300, help="int8 calibration faces")
    p.add_argument(
        "--int8-calibration",
        choices=METHODS,
        default="minmax",
        help="how each activation's int8 range is set from the calibration faces: their whole "
        "range (minmax, the default) or clipped at --percentile of absolute values; the "
        "summary's int8_fidelity compares each choice with fp32 on other Training faces",
    )
    p.add_argument(
        "--percentile",
        type=float,
        default=PERCENTILE,
        help=f"where --int8-calibration percentile clips (default {PERCENTILE:g})",
    )
    from fer_onnx_factory.model.build import TTA_CHOICES

    p.add_argument(
        "--tta",
        choices=("auto", *TTA_CHOICES),
        default="auto",
        help="test-time augmentation inside the graph, averaging views of each face: flip = "
        "face + mirror image; zoomflip = face + mirror image of a 1.09x centre zoom; "
        "flip+zoom = all four; auto = the most accurate on PublicTest within --max-views "
        "(PrivateTest is never used)",
    )
    p.add_argument(
        "--max-views",
        type=int,
        default=MAX_VIEWS,
        help="most views --tta auto may choose; each view is one more network pass per face "
        f"(default {MAX_VIEWS}, what the latency targets allow)",
    )
    p.add_argument(
        "--template",
        type=Path,
        default=None,
        help="crop template JSON written by `fer-onnx-factory template measure` (default: the "
        "run's contract.json; for older runs "
        "fer_onnx_factory/data/templates/fer2013.json)",
    )
    p.add_argument("--no-template", action="store_true", help="write no crop template")
    p.add_argument(
        "--card",
        type=Path,
        default=Path("MODEL_CARD.md"),
        help="where the model card goes (default MODEL_CARD.md; use another path with --dest "
        "when bundling a candidate that may not ship)",
    )
    p.add_argument(
        "--report-on",
        nargs="+",
        type=Path,
        default=[],
        metavar="DATA",
        help="also report the bundled files on these datasets' PublicTest and PrivateTest "
        "(e.g. FER2013's csv and its fer-onnx-factory align copy, for a run trained on both "
        "framings); the model card shows them",
    )
    args = p.parse_args(argv)
    summary = bundle(
        args.run,
        args.data,
        args.dest,
        args.calibration,
        args.tta,
        args.max_views,
        args.template,
        args.no_template,
        args.card,
        args.report_on,
        args.int8_calibration,
        args.percentile,
    )
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
