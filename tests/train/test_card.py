"""MODEL_CARD.md is rendered from a run's measured figures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import LABELS

from fer_onnx_factory.export.card import write_card


def split(accuracy: float) -> dict[str, Any]:
    per_class = {
        name: {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 10} for name in LABELS
    }
    confusion = [[10 if i == j else 0 for j in range(len(LABELS))] for i in range(len(LABELS))]
    return {"accuracy": accuracy, "macro_f1": 0.5, "per_class": per_class, "confusion": confusion}


def fake_run(tmp_path: Path, members: int) -> Path:
    run = tmp_path / "run"
    (run / "export").mkdir(parents=True)
    counts = {s: [10] * len(LABELS) for s in ("Training", "PublicTest", "PrivateTest")}
    args = {"arch": "mobilenetv2", "alpha": 1.0, "weights": "none", "image_size": 48}
    if members > 1:
        args["members"] = members
    keras_metrics = {
        "labels": list(LABELS),
        "splits": {"PublicTest": split(0.641), "PrivateTest": split(0.662)},
        "dataset": {"counts": counts},
        "args": args,
        "command": "fer-onnx-factory train --tiny",
        "wall_time_s": 6000,
        "seconds_per_epoch": 80.0,
        "epochs_run": 75,
        "best_epoch": 70,
    }
    (run / "metrics.json").write_text(json.dumps(keras_metrics))
    for name, acc in (("fp32", 0.663), ("int8", 0.659)):
        m = {**keras_metrics, "splits": {"PublicTest": split(acc), "PrivateTest": split(acc)}}
        (run / "export" / f"{name}_metrics.json").write_text(json.dumps(m))
    return run


def record(run: Path, **options: Any) -> None:
    """Write a training record (config.json) for ``run`` with ``options`` on FER2013's csv."""
    from fer_onnx_factory.train.config import TrainConfig

    TrainConfig(data=Path("fer2013.csv"), out=run, weights="none", **options).write(
        run, "fer-onnx-factory train ...", {}
    )


SUMMARY = {
    "int8_accepted": True,
    "tta": {
        "chosen": "zoomflip",
        "max_views": 2,
        "views": {
            "none": ["face"],
            "flip": ["face", "mirror"],
            "zoomflip": ["face", "zoom-mirror"],
            "flip+zoom": ["face", "mirror", "zoom", "zoom-mirror"],
        },
        "PublicTest": {"none": 0.641, "flip": 0.649, "zoomflip": 0.661, "flip+zoom": 0.667},
    },
    "fp32": {"size_mb": 18.0, "latency_ms_batch1_1thread": 1.5},
    "int8": {"size_mb": 5.0, "latency_ms_batch1_1thread": 0.8},
    "parity": {"n": 1024, "max_abs_diff": 1e-6, "argmax_agreement": 1.0},
    "int8_private_drop_points": 0.4,
    "int8_calibration": "Percentile 99.99",
    "int8_fidelity": {"faces": 2000, "argmax_agreement": 0.987, "mean_l1": 0.016},
}


@pytest.mark.parametrize("members", [1, 2])
def test_card_states_measured_figures(tmp_path: Path, members: int) -> None:
    out = tmp_path / "MODEL_CARD.md"
    write_card(fake_run(tmp_path, members), SUMMARY, out)
    text = out.read_text()
    assert "| ONNX int8 | 65.90% | 65.90% |" in text
    assert "| Keras (without TTA) | 64.10% | 66.20% |" in text
    assert "fer-onnx-factory train --tiny" in text
    assert "Default: `int8`" in text
    assert "`zoomflip`, the average over 2 view(s) of each face (face, zoom-mirror;" in text
    assert "the most accurate on PublicTest with at most 2 views" in text
    assert "none 64.10%, flip 64.90%, zoomflip 66.10%, flip+zoom 66.70%." in text
    assert "calibrated on 300 Training faces, Percentile 99.99; on 2,000 other Training " in text
    assert "its top class is fp32's for 98.7% of faces" in text
    assert "differ from fp32's by 0.016 (sum over classes" in text
    if members == 1:
        assert "- mobilenetv2 (alpha 1.0), trained from scratch" in text
        assert "ensemble" not in text
    else:
        assert "An ensemble of 2 mobilenetv2 (alpha 1.0) networks trained side by side" in text


def test_card_shows_distillation_and_the_ledger(tmp_path: Path) -> None:
    from fer_onnx_factory.ledger import Experiment, write

    run = fake_run(tmp_path, 1)
    record(
        run,
        teacher=(Path("runs/a/best.keras"), Path("t.onnx")),
        teacher_weight=0.6,
        teacher_temperature=3.0,
    )
    ledger = tmp_path / "experiments.json"
    entry = Experiment("a", "base", None, "cmd", 4, 4, 9.5, 0.6, 0.61, 0.62, True, "record")
    write([entry], ledger)
    out = tmp_path / "MODEL_CARD.md"
    write_card(run, SUMMARY, out, ledger=ledger)
    text = out.read_text()
    assert "targets = 0.4 x training label + 0.6 x the mean probabilities of " in text
    assert "`runs/a/best.keras`, `t.onnx` softened at T = 3.0, then label smoothing 0.1." in text
    assert "## What each recipe change gave" in text
    assert "| a | base | 4 | 10 | 60.00% | — | 61.00% | 62.00% |" in text
    write_card(run, SUMMARY, out, ledger=tmp_path / "none.json")
    assert "What each recipe change gave" not in out.read_text()
    assert "FER+" not in out.read_text()
    record(run, ferplus=Path("x/fer2013new.csv"), ferplus_mode="soft", ferplus_weight=0.3)
    write_card(run, SUMMARY, out, ledger=ledger)
    assert "- FER+ votes (`fer2013new.csv`, soft) as 0.3 of the training targets." in (
        out.read_text()
    )
    assert "--extra" not in out.read_text()
    record(run, extra=(Path("runs/sfew2-both.npz"), Path("more.npz")), extra_repeat=2)
    metrics = json.loads((run / "metrics.json").read_text())
    note = "added 5 Training faces of sfew2 2 times (10 rows, their own labels)"  # add_training's
    metrics["dataset"]["notes"] = ["read from x", note]
    (run / "metrics.json").write_text(json.dumps(metrics))
    write_card(run, SUMMARY, out, ledger=ledger)
    assert (
        "- Also trained on the Training faces of `sfew2-both.npz`, `more.npz` (`--extra`, 2 "
        f"times an epoch): {note}."
    ) in out.read_text()
    record(run, extra=(Path("runs/sfew2-both.npz"),))
    metrics["dataset"]["notes"] = []
    (run / "metrics.json").write_text(json.dumps(metrics))
    write_card(run, SUMMARY, out, ledger=ledger)
    assert (
        "- Also trained on the Training faces of `sfew2-both.npz` (`--extra`, once an epoch, "
        "with their own labels)."
    ) in out.read_text()


def test_card_names_averaged_weights(tmp_path: Path) -> None:
    run = fake_run(tmp_path, 1)
    out = tmp_path / "MODEL_CARD.md"
    write_card(run, SUMMARY, out)
    assert "75 epochs, best epoch 70)" in out.read_text()
    metrics = json.loads((run / "metrics.json").read_text())
    metrics.update(
        averaged_epochs=[68, 69, 70, 71, 72, 73, 74, 75],
        averaged_with="fer-onnx-factory average --run r --last 8",
        batchnorm_faces=8192,
    )
    (run / "metrics.json").write_text(json.dumps(metrics))
    write_card(run, SUMMARY, out)
    assert (
        "75 epochs, weights averaged over epochs 68-75, BatchNorm statistics re-estimated on "
        "8192 Training faces by `fer-onnx-factory average --run r --last 8`)"
    ) in out.read_text()
    assert "Class-bias calibration" not in out.read_text()
    wise = {
        **metrics,
        "averaged_epochs": [75],
        "averaged_with": "fer-onnx-factory average --run r --last 1 --init-weight 0.5",
        "init_weight": 0.5,
        "init": "runs/start/best.keras",
        "batchnorm_layers": 0,
        "batchnorm_faces": 0,
    }
    (run / "metrics.json").write_text(json.dumps(wise))
    write_card(run, SUMMARY, out)
    assert (
        "75 epochs, epoch 75's weights moved 0.5 of the way back to the model it started from "
        "(runs/start/best.keras) by `fer-onnx-factory average --run r --last 1 --init-weight "
        "0.5` (every BatchNorm layer frozen: no statistics re-estimated))"
    ) in out.read_text()
    metrics.update(
        averaged_epochs=[75],
        calibrated_with="fer-onnx-factory calibrate --run r --protect disgust",
        calibration={
            "reference": "old.onnx",
            "tta": "flip",
            "class_biases": {"disgust": 0.9},
            "recall_floors": {"disgust": 0.5179},
            "public_accuracy_with_views": {"before": 0.6707, "after": 0.669},
            "public_recall_with_views": {"disgust": {"before": 0.5, "after": 0.5714}},
        },
    )
    (run / "metrics.json").write_text(json.dumps(metrics))
    write_card(run, SUMMARY, out)
    text = out.read_text()
    assert "75 epochs, epoch 75's weights, BatchNorm statistics re-estimated" in text
    assert (
        "- Class-bias calibration (`fer-onnx-factory calibrate --run r --protect disgust`): "
        "logit biases disgust +0.9 in the final layer, chosen on PublicTest with `flip` views"
    ) in text
    assert (
        "(the PublicTest recall of old.onnx). PublicTest recall disgust 0.500 -> 0.571 (floor "
        "0.518); accuracy 67.07% -> 66.90%."
    ) in text
    metrics["calibration"]["reference"] = None
    (run / "metrics.json").write_text(json.dumps(metrics))
    write_card(run, SUMMARY, out)
    assert "its floor (given with --floor). PublicTest recall" in out.read_text()
    metrics["calibration"]["data"] = "fer2013.csv.gz"
    (run / "metrics.json").write_text(json.dumps(metrics))
    write_card(run, SUMMARY, out)
    assert "chosen on PublicTest of fer2013.csv.gz with `flip` views" in out.read_text()
    metrics["calibration"]["framings"] = [
        {
            "data": "fer2013.csv.gz",
            "recall_floors": {"disgust": 0.5179},
            "public_accuracy_with_views": {"before": 0.67, "after": 0.66},
            "public_recall_with_views": {"disgust": {"before": 0.5, "after": 0.5714}},
        },
        {
            "data": "aligned.npz",
            "recall_floors": {"disgust": 0.3214},
            "public_accuracy_with_views": {"before": 0.65, "after": 0.64},
            "public_recall_with_views": {"disgust": {"before": 0.3393, "after": 0.4464}},
        },
    ]
    (run / "metrics.json").write_text(json.dumps(metrics))
    write_card(run, SUMMARY, out)
    assert (
        "- Class-bias calibration (`fer-onnx-factory calibrate --run r --protect disgust`): "
        "logit biases disgust +0.9 in the final layer, chosen on PublicTest in 2 framings of the "
        "same faces with `flip` views as the setting of highest mean accuracy that keeps each "
        "protected class's recall at its floor in every framing (given with --floor). "
        "fer2013.csv.gz: accuracy 67.00% -> 66.00%, recall disgust 0.500 -> 0.571 (floor "
        "0.518); aligned.npz: accuracy 65.00% -> 64.00%, recall disgust 0.339 -> 0.446 (floor "
        "0.321).\n"
    ) in out.read_text()


def test_card_command_renders_a_bundled_run(tmp_path: Path) -> None:
    from fer_onnx_factory.export.card import main

    run = fake_run(tmp_path, 1)
    out = tmp_path / "card.md"
    assert main(["--run", str(run), "--out", str(out)]) == 2  # not bundled yet
    assert not out.exists()
    (run / "export" / "summary.json").write_text(json.dumps(SUMMARY))
    assert main(["--run", str(run), "--out", str(out)]) == 0
    assert "| ONNX int8 | 65.90% | 65.90% |" in out.read_text()


def test_card_reads_the_run_record(tmp_path: Path) -> None:
    from fer_onnx.metadata import ModelInfo
    from fer_onnx.preprocessing import InputSpec
    from fer_onnx_factory.train.config import TrainConfig, write_contract

    run = fake_run(tmp_path, 1)
    TrainConfig(data=Path("faces/train"), out=run, arch="mobilenetv3small", image_size=64).write(
        run, "fer-onnx-factory train --data faces/train", {}
    )
    write_contract(run, ModelInfo(LABELS, InputSpec(64, 64, "rgb"), (0.0, 1.0), {}))
    out = tmp_path / "MODEL_CARD.md"
    write_card(run, {**SUMMARY, "calibration_faces": 200}, out)
    text = out.read_text()
    assert "- mobilenetv3small (alpha 1.0)" in text
    assert "one 64x64 RGB face, float32 values 0..1" in text
    assert "`train`: trained on `Training`" in text
    assert "calibrated on 200 Training faces" in text
    older = {k: v for k, v in SUMMARY.items() if k not in ("int8_calibration", "int8_fidelity")}
    write_card(run, older, out)  # a bundle from before the calibration method was recorded
    assert "calibrated on 300 Training faces, MinMax). Default" in out.read_text()
    write_card(run, {**SUMMARY, "int8_accepted": False}, out)  # int8 rejected: no line on it
    rejected = out.read_text()
    assert "no int8 model (it lost more than 0.5 points on PublicTest). Default: `fp32`" in rejected
    assert "Percentile" not in rejected


def test_card_names_the_model_a_run_was_fine_tuned_from(tmp_path: Path) -> None:
    from fer_onnx_factory.train.config import TrainConfig

    run = fake_run(tmp_path, 1)
    init = tmp_path / "ship64k" / "best.keras"
    init.parent.mkdir()
    cfg = TrainConfig(data=Path("fer2013.csv"), out=run, weights="none", init=init)
    cfg.write(run, "fer-onnx-factory train --init ...", {})
    out = tmp_path / "MODEL_CARD.md"
    write_card(run, SUMMARY, out, ledger=tmp_path / "none.json")
    text = out.read_text()
    assert f"- mobilenetv2 (alpha 1.0), fine-tuned from the trained model `{init}`" in text
    assert "trained from scratch" not in text
    assert "rebuilt as Keras" not in text  # a plain trained model: nothing more is known of it
    (init.parent / "from_onnx.json").write_text(
        json.dumps(
            {
                "source": "src/fer_onnx/models/fp32.onnx",
                "source_sha256": "ab" * 32,
                "source_metadata": {
                    "training_command": "fer-onnx-factory train --epochs 65",
                    "training_wall_time_s": "6167.1",
                },
                "check": {"agree": 3589, "faces": 3589, "max_probability_gap": 6.8e-06},
            }
        )
    )
    write_card(run, SUMMARY, out, ledger=tmp_path / "none.json")
    text = out.read_text()
    assert (
        "that model is the network of `fp32.onnx` (SHA-256 abababababab...) rebuilt as Keras by "
        "`fer-onnx-factory rebuild` (it agrees with the file on 3589 of 3589 PublicTest "
        "faces, largest probability gap 6.8e-06), which was trained by "
        "`fer-onnx-factory train --epochs 65` in 103 min"
    ) in text


def test_card_reports_the_files_on_each_report_on_dataset(tmp_path: Path) -> None:
    run = fake_run(tmp_path, 1)

    def figures(public: float, private: float) -> dict[str, Any]:
        recall = {name: round(0.1 * (i + 1), 3) for i, name in enumerate(LABELS)}
        return {
            "PublicTest": {"accuracy": public, "macro_f1": 0.6, "recall": recall},
            "PrivateTest": {"accuracy": private, "macro_f1": 0.65, "recall": recall},
        }

    summary = {
        **SUMMARY,
        "report_on": [
            {
                "data": "x/fer2013.csv.gz",
                "fp32": figures(0.668, 0.687),
                "int8": figures(0.669, 0.690),
            },
            {
                "data": "runs/aligned.npz",
                "fp32": figures(0.663, 0.679),
                "int8": figures(0.661, 0.678),
            },
        ],
    }
    out = tmp_path / "MODEL_CARD.md"
    write_card(run, summary, out)
    text = out.read_text()
    assert "### The bundled files on each dataset of `--report-on`" in text
    recalls = " | ".join(f"{0.1 * (i + 1):.3f}" for i in range(len(LABELS)))
    assert f"| `fer2013.csv.gz` | int8 | 66.90% | 69.00% | 0.650 | {recalls} |" in text
    assert f"| `aligned.npz` | fp32 | 66.30% | 67.90% | 0.650 | {recalls} |" in text
    write_card(run, {**summary, "int8_accepted": False}, out)
    assert "| `aligned.npz` | int8 |" not in out.read_text()
    write_card(run, SUMMARY, out)
    assert "--report-on" not in out.read_text()
