"""Write MODEL_CARD.md from a run's measured figures (nothing typed in by hand).

``fer-onnx-factory bundle`` writes it; after adding the run to the ledger, re-render it with

    fer-onnx-factory card --run runs/kd64
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from fer_onnx_factory.cli import command
from fer_onnx_factory.errors import PipelineError
from fer_onnx_factory.ledger import default_ledger, read, table
from fer_onnx_factory.train.config import CONFIG, CONTRACT, TrainConfig, read_contract


def _table(metrics: dict[str, Any], split: str) -> list[str]:
    m = metrics["splits"][split]
    lines = ["| class | precision | recall | F1 | support |", "|---|---:|---:|---:|---:|"]
    for name, c in m["per_class"].items():
        lines.append(
            f"| {name} | {c['precision']:.3f} | {c['recall']:.3f} | {c['f1']:.3f} | "
            f"{c['support']} |"
        )
    return lines


def _confusion(metrics: dict[str, Any], split: str) -> list[str]:
    labels = metrics["labels"]
    rows = metrics["splits"][split]["confusion"]
    lines = ["| true \\ predicted | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
    for name, row in zip(labels, rows, strict=True):
        lines.append(f"| **{name}** | " + " | ".join(str(v) for v in row) + " |")
    return lines


def _chosen_weights(metrics: dict[str, Any]) -> str:
    """Which weights ship: the best epoch, or the average of kept epochs (tune.average)."""
    epochs = metrics.get("averaged_epochs")
    if epochs:
        how = metrics.get("averaged_with") or "fer-onnx-factory average"
        which = (
            f"epoch {epochs[0]}'s weights"
            if len(epochs) == 1
            else f"weights averaged over epochs {epochs[0]}-{epochs[-1]}"
        )
        if metrics.get("init_weight"):
            which += (
                f" moved {metrics['init_weight']:g} of the way back to the model it started "
                f"from ({metrics.get('init')})"
            )
        if metrics.get("batchnorm_layers", 1) == 0:
            return f"{which} by `{how}` (every BatchNorm layer frozen: no statistics re-estimated)"
        return (
            f"{which}, BatchNorm statistics re-estimated on {metrics.get('batchnorm_faces')} "
            f"Training faces by `{how}`"
        )
    return f"best epoch {metrics.get('best_epoch')}"


def _int8_calibration(summary: dict[str, Any]) -> str:
    """How int8 was calibrated and how closely it follows fp32 (bundles from before
    ``int8_fidelity`` say nothing more)."""
    method = summary.get("int8_calibration", "MinMax")
    fid = summary.get("int8_fidelity")
    if not fid:
        return f", {method}"
    return (
        f", {method}; on {fid['faces']:,} other Training faces its top class is fp32's for "
        f"{fid['argmax_agreement']:.1%} of faces, and its probabilities differ from fp32's by "
        f"{fid['mean_l1']:.3f} (sum over classes, mean over faces)"
    )


def _calibration_lines(metrics: dict[str, Any]) -> list[str]:
    """The class-bias calibration (fer_onnx_factory.tune.calibrate), when the model had one."""
    cal = metrics.get("calibration")
    if not cal:
        return []
    biases = ", ".join(f"{name} +{b:g}" for name, b in cal["class_biases"].items())
    floors = (
        f"the PublicTest recall of {cal['reference']}"
        if cal.get("reference")
        else "given with --floor"
    )

    def recalls(figures: dict[str, Any]) -> str:
        return ", ".join(
            f"{name} {r['before']:.3f} -> {r['after']:.3f} "
            f"(floor {figures['recall_floors'][name]:.3f})"
            for name, r in figures["public_recall_with_views"].items()
        )

    framings = cal.get("framings") or []
    if len(framings) < 2:
        acc = cal["public_accuracy_with_views"]
        where = f" of {cal['data']}" if cal.get("data") else ""
        return [
            f"- Class-bias calibration (`{metrics.get('calibrated_with')}`): logit biases "
            f"{biases} in the final layer, chosen on PublicTest{where} with `{cal['tta']}` views "
            f"as the most accurate setting that keeps each protected class's recall at its "
            f"floor ({floors}). PublicTest recall {recalls(cal)}; accuracy "
            f"{acc['before']:.2%} -> {acc['after']:.2%}.",
        ]
    each = "; ".join(
        f"{f['data']}: accuracy {f['public_accuracy_with_views']['before']:.2%} -> "
        f"{f['public_accuracy_with_views']['after']:.2%}, recall {recalls(f)}"
        for f in framings
    )
    return [
        f"- Class-bias calibration (`{metrics.get('calibrated_with')}`): logit biases {biases} "
        f"in the final layer, chosen on PublicTest in {len(framings)} framings of the same "
        f"faces with `{cal['tta']}` views as the setting of highest mean accuracy that keeps "
        f"each protected class's recall at its floor in every framing ({floors}). {each}.",
    ]


def _framing(summary: dict[str, Any]) -> list[str]:
    """The crop template and detector section (empty when no template was written)."""
    if not summary.get("template"):
        return []
    measured = json.loads(Path(summary["template"]).read_text()).get("measured")
    if measured:
        eyes = measured["landmarks_px"][:2]
        how = (
            f", measured on {measured['faces']} FER2013 Training faces (YuNet landmarks found "
            f"on {measured['landmarks_found']}; mean eyes at ({eyes[0][0]:.1f}, "
            f"{eyes[0][1]:.1f}) and ({eyes[1][0]:.1f}, {eyes[1][1]:.1f}) in the 48x48 frame, "
            f"symmetrised; per-face spread {measured['mean_landmark_spread_px']} px)"
        )
    else:
        how = f" (from {Path(summary['template']).name})"
    return [
        "## Face framing and detector",
        f"- Crop template in the metadata (`fer_onnx.crop_template`){how}. The runtime warps "
        "faces with landmarks onto it and cuts box-only faces to its box.",
        "- Face detector: the bundled YuNet (`face_detection_yunet_2023mar.onnx`, OpenCV Zoo, "
        "Apache-2.0; licence and notice of the fer-onnx change in `fer_onnx/models/`).",
        "",
    ]


def _pretrained_origin(weights: str) -> str:
    """A start's provenance: package, version, digest and licence terms for registry starts."""
    from fer_onnx_factory.model.pretrained import SOURCES

    source = SOURCES.get(weights.lower())
    if source is None:
        return f"trained from {weights}"
    return (
        f"trained from the `{source.name}` start ({source.arch}, alpha {source.alpha}): "
        f"{source.registry} `{source.package}@{source.version}` (`{source.tarball}`, SHA-256 "
        f"{source.sha256}), converted by `fer-onnx-factory pretrained` and checked "
        f"against {source.original}; licence: {source.licence}; upstream {source.upstream}"
    )


def _input_scaling(args: dict[str, Any]) -> str:
    """What the graph does to values after resizing (registry starts take raw 0..255)."""
    from fer_onnx_factory.model.pretrained import SOURCES

    source = SOURCES.get(str(args.get("weights")).lower())
    if source is not None and source.input_range == (0.0, 255.0):
        return "values kept at 0..255 (as the pretrained start takes them)"
    if source is not None and source.input_range != (-1.0, 1.0):
        low, high = source.input_range
        step = 255.0 / (high - low)
        return f"scaling as (x - {-low * step:g}) / {step:g} (as the pretrained start takes them)"
    return "scaling to [-1, 1]"


def _origin(args: dict[str, Any]) -> str:
    """Where the network's weights started: from scratch, pretrained, or a trained model
    (``--init``), with that model's own provenance when ``fer_onnx_factory.tune.rebuild``
    rebuilt it."""
    init = args.get("init")
    if not init:
        if str(args.get("weights")).lower() == "none":
            return "trained from scratch (no ImageNet weights available)"
        return _pretrained_origin(str(args.get("weights")))
    init_path = Path(str(init))
    text = f"fine-tuned from the trained model `{init_path}` (every layer, `--init`)"
    from fer_onnx_factory.model.pretrained import SOURCES

    if str(args.get("weights")).lower() in SOURCES:
        text += f"; that model was {_pretrained_origin(str(args.get('weights')))}"
    try:
        record = json.loads((init_path.parent / "from_onnx.json").read_text())
        meta = record["source_metadata"]
        check = record["check"]
        seconds = meta.get("training_wall_time_s")
        took = f" in {float(seconds) / 60:.0f} min" if seconds else ""
        text += (
            f"; that model is the network of `{Path(record['source']).name}` (SHA-256 "
            f"{record['source_sha256'][:12]}...) rebuilt as Keras by "
            f"`fer-onnx-factory rebuild` (it agrees with the file on {check['agree']} of "
            f"{check['faces']} PublicTest faces, largest probability gap "
            f"{check['max_probability_gap']:.1e}), which was trained by "
            f"`{meta.get('training_command')}`{took}"
        )
    except (OSError, ValueError, KeyError, TypeError):
        pass  # a plain trained model: its path is all the record holds
    return text


def _report_on_lines(summary: dict[str, Any]) -> list[str]:
    """The bundled files on each dataset of ``--report-on`` (e.g. each framing of FER2013)."""
    entries = summary.get("report_on") or []
    if not entries:
        return []
    labels = list(entries[0]["fp32"]["PrivateTest"]["recall"])
    lines = [
        "",
        "### The bundled files on each dataset of `--report-on`",
        "",
        "| data | model | PublicTest accuracy | PrivateTest accuracy | PrivateTest macro F1 | "
        + " | ".join(f"{c} recall" for c in labels)
        + " |",
        "|---|---|---:|---:|---:|" + "---:|" * len(labels),
    ]
    for entry in entries:
        for name in ("fp32", "int8"):
            if name == "int8" and not summary.get("int8_accepted"):
                continue
            m = entry[name]
            private = m["PrivateTest"]
            lines.append(
                f"| `{Path(entry['data']).name}` | {name} | {m['PublicTest']['accuracy']:.2%} | "
                f"{private['accuracy']:.2%} | {private['macro_f1']:.3f} | "
                + " | ".join(f"{private['recall'][c]:.3f}" for c in labels)
                + " |"
            )
    return lines


def _tta_line(tta: dict[str, Any] | None) -> str:
    if not tta:
        return ""
    measured = ", ".join(f"{name} {acc:.2%}" for name, acc in tta["PublicTest"].items())
    chosen = tta["chosen"]
    views = tta["views"][chosen]
    rule = (
        f"the most accurate on PublicTest with at most {tta['max_views']} views"
        if tta.get("max_views")
        else "set by hand"
    )
    return (
        f"- Test-time augmentation inside the graph: `{chosen}`, the average over "
        f"{len(views)} view(s) of each face ({', '.join(views)}; zoom = 1.09x centre crop); "
        f"{rule}. Measured on PublicTest only: {measured}."
    )


def _teacher_lines(args: dict[str, Any], keras_metrics: dict[str, Any]) -> list[str]:
    teachers = args.get("teacher") or []
    if not teachers:
        return []
    w = float(args.get("teacher_weight", 0.5))
    labelled = keras_metrics.get("teacher_labelling_s")
    smoothing = float(args.get("label_smoothing", 0.0))
    fp_weight = float(args.get("ferplus_weight", 1.0))
    label = (
        "label"
        if not args.get("ferplus")
        else "FER+ vote"
        if fp_weight >= 1.0
        else f"target ({1 - fp_weight:g} FER2013 label + {fp_weight:g} FER+ vote)"
    )
    return [
        f"- Knowledge distillation: targets = {1 - w:g} x training {label} + {w:g} x the mean "
        f"probabilities of {', '.join(f'`{t}`' for t in teachers)} softened at T = "
        f"{args.get('teacher_temperature')}"
        + (f", then label smoothing {smoothing:g}" if smoothing else "")
        + (f" (labelling the Training faces took {labelled:.0f} s)." if labelled else ".")
    ]


def _ferplus_lines(args: dict[str, Any], keras_metrics: dict[str, Any]) -> list[str]:
    if not args.get("ferplus"):
        return []
    notes = keras_metrics.get("dataset", {}).get("notes", [])
    said = next((n for n in notes if n.startswith("FER+")), None)
    weight = float(args.get("ferplus_weight", 1.0))
    return [
        f"- FER+ votes (`{Path(str(args['ferplus'])).name}`, {args.get('ferplus_mode')}) as "
        + ("the training targets" if weight >= 1 else f"{weight:g} of the training targets")
        + (f": {said}." if said else ".")
    ]


def _epochs(n: object) -> str:
    return "1 epoch" if n == 1 else f"{n} epochs"


def _extra_lines(args: dict[str, Any], keras_metrics: dict[str, Any]) -> list[str]:
    """The other datasets' Training faces a run added to its own (``train --extra``)."""
    extra = args.get("extra") or []
    if not extra:
        return []
    notes = keras_metrics.get("dataset", {}).get("notes", [])
    said = [n for n in notes if n.startswith("added ")]
    repeat = int(args.get("extra_repeat", 1))
    names = ", ".join(f"`{Path(str(e)).name}`" for e in extra)
    how = "once an epoch" if repeat == 1 else f"{repeat} times an epoch"
    return [
        f"- Also trained on the Training faces of {names} (`--extra`, {how}"
        + (f"): {'; '.join(said)}." if said else ", with their own labels).")
    ]


def _ledger_lines(ledger: Path) -> list[str]:
    entries = read(ledger)
    if not entries:
        return []
    return [
        "## What each recipe change gave",
        "",
        "PublicTest decides every choice; PrivateTest is read once per finished model "
        "(`src/fer_onnx_factory/experiments.json`, `fer-onnx-factory ledger table`).",
        "",
        table(entries),
        "",
    ]


def write_card(run: Path, summary: dict[str, Any], out: Path, ledger: Path | None = None) -> None:
    """Render the model card for ``run`` with the export ``summary`` into ``out``.

    Everything comes from the run's record (config, contract, reports), the export summary
    and the ledger of runs (``ledger``).
    """
    keras_metrics = json.loads((run / "metrics.json").read_text())
    int8_metrics = json.loads((run / "export" / "int8_metrics.json").read_text())
    fp32_metrics = json.loads((run / "export" / "fp32_metrics.json").read_text())
    # The run's record is the source: its config (options) and contract (what the model
    # expects); runs from before the record fall back to what metrics.json repeats.
    args = (
        TrainConfig.read(run)[0].to_dict()
        if (run / CONFIG).is_file()
        else keras_metrics.get("args", {})
    )
    contract = read_contract(run) if (run / CONTRACT).is_file() else None
    labels = list(contract.labels) if contract else list(keras_metrics["labels"])
    height, width = (contract.input.height, contract.input.width) if contract else (48, 48)
    color = contract.input.color if contract else "gray"
    low, high = contract.value_range if contract else (0.0, 255.0)
    described = {"gray": "grey", "rgb": "RGB", "bgr": "BGR"}.get(color, color)
    to_three = "grey to 3 channels, " if color == "gray" else ""
    dataset = Path(str(args.get("data", "fer2013.csv"))).name
    default = "int8" if summary["int8_accepted"] else "fp32"
    shipped = int8_metrics if default == "int8" else fp32_metrics
    acc = {"Keras": keras_metrics, "ONNX fp32": fp32_metrics, "ONNX int8": int8_metrics}
    counts = keras_metrics["dataset"]["counts"]
    members = int(args.get("members", 1))
    origin = _origin(args)
    net = f"{args.get('arch')} (alpha {args.get('alpha')}),"
    if members > 1:
        net = (
            f"An ensemble of {members} {net[:-1]} networks trained side by side (each its own "
            "backbone, head and loss; their probabilities are averaged inside the graph),"
        )
    lines = [
        "# Model card: fer-onnx expression classifier",
        "",
        "Generated by `fer-onnx-factory bundle` from the training run's measured figures.",
        "",
        "## Model",
        f"- {net} {origin}, {len(labels)}-way softmax head" + ("s." if members > 1 else "."),
        f"- Input: one {height}x{width} {described} face, float32 values {low:g}..{high:g}, NHWC "
        "(`faces`, dynamic batch). Inside the graph: bilinear resize to "
        f"{args.get('image_size')}x{args.get('image_size')}, {to_three}{_input_scaling(args)}. "
        f"Output: `probabilities` over {', '.join(labels)} (in this order, also in the file's "
        "metadata).",
        _tta_line(summary.get("tta")),
        f"- Bundled files: `fp32.onnx` ({summary['fp32']['size_mb']:.2f} MB) and "
        + (
            f"`int8.onnx` ({summary['int8']['size_mb']:.2f} MB, static QDQ per-channel, "
            f"calibrated on {summary.get('calibration_faces', 300)} Training faces"
            f"{_int8_calibration(summary)})"
            if summary["int8_accepted"]
            else "no int8 model (it lost more than 0.5 points on PublicTest)"
        )
        + f". Default: `{default}`.",
        "",
        "## Data",
        f"- `{dataset}`: trained on `Training` "
        f"({sum(counts['Training'])} faces), checkpoint and schedule chosen on `PublicTest` "
        f"({sum(counts['PublicTest'])}), reported once on `PrivateTest` "
        f"({sum(counts['PrivateTest'])}).",
        *_extra_lines(args, keras_metrics),
        "- Preprocessing: the library's `fer_onnx.preprocessing.prepare_faces` "
        f"({described}, {height}x{width}) is the only preprocessing in training, evaluation and "
        "inference; normalisation is in the graph.",
        "",
        "## Training recipe",
        f"- Command: `{keras_metrics.get('command')}`",
        f"- Wall time {keras_metrics.get('wall_time_s', 0) / 60:.0f} min on 2 CPU cores "
        f"({keras_metrics.get('seconds_per_epoch')} s per epoch, "
        f"{_epochs(keras_metrics.get('epochs_run'))}, {_chosen_weights(keras_metrics)}).",
        f"- AdamW (weight decay {args.get('weight_decay')}), {args.get('schedule')} schedule, "
        f"peak LR {args.get('lr')}, batch {args.get('batch_size')}, label smoothing "
        f"{args.get('label_smoothing')}, mixup {args.get('mixup')}, CutMix "
        f"{args.get('cutmix', 0.0)}, BatchNorm momentum "
        f"{args.get('bn_momentum')}; on-graph augmentation: flips, rotation "
        f"{args.get('rotation')} deg, shift {args.get('shift')}, zoom {args.get('zoom')}, "
        f"RandomErasing p {args.get('erasing', 0.0)}.",
        *_teacher_lines(args, keras_metrics),
        *_ferplus_lines(args, keras_metrics),
        *_calibration_lines(keras_metrics),
        "",
        *_ledger_lines(ledger or default_ledger()),
        "## Results",
        "",
        "| model | PublicTest accuracy | PrivateTest accuracy | PrivateTest macro F1 |",
        "|---|---:|---:|---:|",
    ]
    if summary.get("tta", {}).get("chosen", "none") != "none":
        acc = {
            "Keras (without TTA)": keras_metrics,
            **{k: v for k, v in acc.items() if k != "Keras"},
        }
    for name, m in acc.items():
        s = m["splits"]
        lines.append(
            f"| {name} | {s['PublicTest']['accuracy']:.2%} | "
            f"{s['PrivateTest']['accuracy']:.2%} | {s['PrivateTest']['macro_f1']:.3f} |"
        )
    p = summary["parity"]
    lines += [
        "",
        f"Keras vs ONNX fp32 on {p['n']} PublicTest faces: max |probability difference| "
        f"{p['max_abs_diff']:.1e}, arg-max agreement {p['argmax_agreement']:.2%}. "
        "int8 vs fp32: "
        + (
            f"{summary['int8_public_drop_points']:+.2f} points on PublicTest (drop; accepted "
            "when <= 0.5), "
            if "int8_public_drop_points" in summary
            else ""
        )
        + f"{summary['int8_private_drop_points']:+.2f} points on PrivateTest (reported only). "
        f"Per-face latency (batch 1, one thread, this 2-core "
        f"machine): fp32 {summary['fp32']['latency_ms_batch1_1thread']:.2f} ms, int8 "
        f"{summary['int8']['latency_ms_batch1_1thread']:.2f} ms.",
        *_report_on_lines(summary),
        "",
        f"### Per class, PrivateTest, `{default}` model",
        "",
        *_table(shipped, "PrivateTest"),
        "",
        f"### Confusion matrix, PrivateTest, `{default}` model (rows: true class)",
        "",
        *_confusion(shipped, "PrivateTest"),
        "",
        *_framing(summary),
        "## Intended use and limits",
        "- Intended for: research, prototyping, aggregate analytics of expressions in media, "
        "interactive demos.",
        "- **Not for decisions about people** (hiring, policing, education, health, credit, "
        "access): a facial expression is not an emotion, and this model is wrong on "
        f"{1 - shipped['splits']['PrivateTest']['accuracy']:.0%} of the PrivateTest faces of "
        f"`{dataset}`.",
        "- FER2013 is web-scraped: mostly frontal faces, a mix of posed and spontaneous "
        "expressions, uneven demographics (age, skin tone, gender presentation) and noisy "
        "labels; `disgust` has very few examples (see its support above) and is rarely "
        "predicted well. Expect lower accuracy on profile faces, occlusions, low light, "
        "children and groups under-represented in the data.",
        "- The model sees 48x48 grey faces: colour cues are discarded; faces come from a face "
        "detector whose misses (e.g. a face looking down) are never classified.",
        "",
    ]
    out.write_text("\n".join(lines))


@command()
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="fer-onnx-factory card", description=__doc__)
    p.add_argument("--run", required=True, type=Path, help="a bundled training run folder")
    p.add_argument("--out", type=Path, default=Path("MODEL_CARD.md"), help="card to write")
    p.add_argument(
        "--ledger", type=Path, default=None, help="ledger of runs (default: the committed one)"
    )
    args = p.parse_args(argv)
    summary_path = args.run / "export" / "summary.json"
    if not summary_path.is_file():
        raise PipelineError(f"{summary_path} not found: bundle the run first")
    write_card(args.run, json.loads(summary_path.read_text()), args.out, args.ledger)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
