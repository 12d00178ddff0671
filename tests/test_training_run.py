"""A real (small) training run end to end: two epochs on a few hundred FER2013 rows."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import FER_CSV, ROOT, shared_file

pytest.importorskip("tensorflow")
pytest.importorskip("matplotlib")

ROWS = 300
ARGS = [
    "--weights",
    "none",
    "--arch",
    "mobilenet",
    "--alpha",
    "0.25",
    "--image-size",
    "48",
    "--epochs",
    "2",
    "--repeat",
    "8",
    "--batch-size",
    "16",
    "--lr",
    "2e-3",
    "--warmup-epochs",
    "0",
    "--dropout",
    "0",
    "--bn-momentum",
    "0.9",
    "--label-smoothing",
    "0",
    "--rotation",
    "0",
    "--shift",
    "0",
    "--zoom",
    "0",
    "--no-flip",
    "--limit",
    str(ROWS),
    "--verbose",
    "0",
]


def train(out: Path, *extra: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = [
        sys.executable,
        "-m",
        "training.train",
        "--data",
        str(FER_CSV),
        "--out",
        str(out),
        *ARGS,
        *extra,
    ]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=check, timeout=900
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    shared_file(FER_CSV)
    out = tmp_path_factory.mktemp("runs") / "small"
    train(out)
    return out


@pytest.mark.slow
def test_two_epochs_beat_chance_on_own_training_rows(run: Path) -> None:
    import keras

    from training.data import load_fer2013_csv

    train_split = load_fer2013_csv(FER_CSV, splits=("Training",))["Training"]
    x, y = train_split.images[:ROWS], train_split.labels[:ROWS]
    model = keras.models.load_model(run / "best.keras")
    accuracy = float((model.predict(x.astype(np.float32), verbose=0).argmax(1) == y).mean())
    majority = float(np.bincount(y).max() / len(y))
    assert accuracy > majority, (
        f"training-row accuracy {accuracy:.3f} <= majority class {majority:.3f}"
    )


@pytest.mark.slow
def test_full_report_is_written(run: Path) -> None:
    for name in (
        "metrics.json",
        "report.md",
        "history.csv",
        "curves.png",
        "confusion_PublicTest.png",
        "confusion_PrivateTest.png",
        "config.json",
        "best.keras",
        "last.keras",
    ):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["splits"]) == {"PublicTest", "PrivateTest"}
    private = metrics["splits"]["PrivateTest"]
    assert private["n"] == ROWS and 0 <= private["accuracy"] <= 1
    assert set(private["per_class"]) == {
        "angry",
        "disgust",
        "fear",
        "happy",
        "sad",
        "surprise",
        "neutral",
    }
    assert np.array(private["confusion"]).sum() == ROWS
    assert (
        metrics["epochs_run"] == 2
        and metrics["seconds_per_epoch"] > 0
        and metrics["wall_time_s"] > 0
    )
    assert "training.train" in metrics["command"] and "tensorflow" in metrics["versions"]


@pytest.mark.slow
def test_resume_continues_without_losing_epochs(run: Path, tmp_path: Path) -> None:
    # Pretend the run was killed after its first epoch: keep the state of epoch 1 only.
    killed = tmp_path / "killed"
    shutil.copytree(run, killed)
    state = json.loads((killed / "state.json").read_text())
    state["epoch"] = 1
    (killed / "state.json").write_text(json.dumps(state))
    result = train(killed, "--resume")
    assert "resuming" in result.stderr and "after epoch 1" in result.stderr
    lines = (killed / "history.csv").read_text().splitlines()
    assert [ln.split(",")[0] for ln in lines[1:]] == ["0", "1"]  # epoch 0 kept, epoch 1 redone
    assert json.loads((killed / "state.json").read_text())["epoch"] == 2


@pytest.mark.slow
def test_existing_run_and_imagenet_offline_are_clear_errors(run: Path, tmp_path: Path) -> None:
    again = train(run, check=False)
    assert again.returncode != 0 and "--resume" in again.stderr
    offline = train(tmp_path / "imagenet", "--weights", "imagenet", check=False)
    if offline.returncode == 0:
        pytest.skip("this machine could download ImageNet weights")
    assert "error:" in offline.stderr and "--weights none" in offline.stderr
    assert "Traceback" not in offline.stderr
    missing = train(tmp_path / "h5", "--weights", str(tmp_path / "none.h5"), check=False)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
