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
from conftest import FER_SMALL_ROWS, ROOT

pytest.importorskip("tensorflow")
pytest.importorskip("matplotlib")

ROWS = FER_SMALL_ROWS  # every face of each split of the fer_small file
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


ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}


def command(data: Path, out: Path, *extra: str) -> list[str]:
    """The small training command on ``data`` (the ``fer_small`` fixture's file); a later
    ``--flag value`` in ``extra`` overrides ARGS."""
    return [
        sys.executable,
        "-m",
        "fer_onnx_factory",
        "train",
        "--data",
        str(data),
        "--out",
        str(out),
        *ARGS,
        *extra,
    ]


def train(
    data: Path, out: Path, *extra: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(data, out, *extra),
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        check=check,
        timeout=900,
    )


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, fer_small: Path) -> Path:
    out = tmp_path_factory.mktemp("runs") / "small"
    train(fer_small, out)
    return out


@pytest.fixture(scope="module")
def ensemble_run(tmp_path_factory: pytest.TempPathFactory, fer_small: Path) -> Path:
    """Two members side by side, with class weights (given to Keras as sample weights)."""
    out = tmp_path_factory.mktemp("runs") / "ensemble"
    train(fer_small, out, "--members", "2", "--class-weights", "balanced")
    return out


def assert_beats_chance_on_training_rows(run: Path, data: Path) -> None:
    import keras

    from fer_onnx_factory.data.datasets import load_fer2013_csv

    train_split = load_fer2013_csv(data, splits=("Training",))["Training"]
    x, y = train_split.images[:ROWS], train_split.labels[:ROWS]
    model = keras.models.load_model(run / "best.keras")
    assert model.output_names == ["probabilities"]
    accuracy = float((model.predict(x.astype(np.float32), verbose=0).argmax(1) == y).mean())
    majority = float(np.bincount(y).max() / len(y))
    assert accuracy > majority, (
        f"training-row accuracy {accuracy:.3f} <= majority class {majority:.3f}"
    )


@pytest.mark.slow
def test_two_epochs_beat_chance_on_own_training_rows(run: Path, fer_small: Path) -> None:
    assert_beats_chance_on_training_rows(run, fer_small)


@pytest.mark.slow
def test_ensemble_run_beats_chance_and_logs_like_a_single_model(
    ensemble_run: Path, fer_small: Path
) -> None:
    assert_beats_chance_on_training_rows(ensemble_run, fer_small)
    import keras

    last = keras.models.load_model(ensemble_run / "last.keras")
    assert last.output_names == ["member_0", "member_1"]
    lines = (ensemble_run / "history.csv").read_text().splitlines()
    header = lines[0].split(",")
    for line in lines[1:]:
        row = dict(zip(header, line.split(","), strict=True))
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            assert 0 <= float(row[key]) < 100, (key, row)
    metrics = json.loads((ensemble_run / "metrics.json").read_text())
    assert metrics["args"]["members"] == 2
    assert metrics["epochs_run"] == 2
    assert metrics["best_public_test_accuracy_during_training"] == pytest.approx(
        metrics["splits"]["PublicTest"]["accuracy"], abs=1e-6
    )


@pytest.mark.slow
def test_ensemble_killed_for_real_resumes_with_its_wall_time(
    tmp_path: Path, fer_small: Path
) -> None:
    """SIGKILL an ensemble run after its first epoch, then --resume it to the end."""
    import signal
    import time

    out = tmp_path / "killed"
    proc = subprocess.Popen(
        command(fer_small, out, "--members", "2", "--epochs", "3"),
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    state_path = out / "state.json"
    deadline = time.time() + 600
    try:
        while time.time() < deadline and proc.poll() is None:
            if state_path.exists() and json.loads(state_path.read_text() or "{}").get("epoch"):
                break
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    killed = json.loads(state_path.read_text())
    assert killed["epoch"] == 1, killed
    assert killed["train_seconds"] > 0  # kept current per epoch, not only at a clean exit
    result = train(fer_small, out, "--resume")
    assert "after epoch 1" in result.stderr
    lines = (out / "history.csv").read_text().splitlines()
    assert [ln.split(",")[0] for ln in lines[1:]] == ["0", "1", "2"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs_run"] == 3
    assert metrics["wall_time_s"] > killed["train_seconds"]


def test_members_below_one_is_a_usage_error(tmp_path: Path) -> None:
    result = train(tmp_path / "never-read.csv", tmp_path / "bad", "--members", "0", check=False)
    assert result.returncode == 2
    assert "--members must be at least 1" in result.stderr
    assert not (tmp_path / "bad").exists()


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
    assert private["n"] == ROWS
    assert 0 <= private["accuracy"] <= 1
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
    assert metrics["epochs_run"] == 2
    assert metrics["seconds_per_epoch"] > 0
    assert metrics["wall_time_s"] > 0
    assert metrics["command"].startswith("fer-onnx-factory train --data ")
    assert "tensorflow" in metrics["versions"]


@pytest.mark.slow
def test_resume_continues_without_losing_epochs(run: Path, tmp_path: Path, fer_small: Path) -> None:
    # Pretend the run was killed after its first epoch: keep the state of epoch 1 only.
    killed = tmp_path / "killed"
    shutil.copytree(run, killed)
    state = json.loads((killed / "state.json").read_text())
    state["epoch"] = 1
    (killed / "state.json").write_text(json.dumps(state))
    result = train(fer_small, killed, "--resume")
    assert "resuming" in result.stderr
    assert "after epoch 1" in result.stderr
    lines = (killed / "history.csv").read_text().splitlines()
    assert [ln.split(",")[0] for ln in lines[1:]] == ["0", "1"]  # epoch 0 kept, epoch 1 redone
    assert json.loads((killed / "state.json").read_text())["epoch"] == 2


@pytest.mark.slow
def test_existing_run_and_imagenet_offline_are_clear_errors(
    run: Path, tmp_path: Path, fer_small: Path
) -> None:
    again = train(fer_small, run, check=False)
    assert again.returncode != 0
    assert "--resume" in again.stderr
    offline = train(fer_small, tmp_path / "imagenet", "--weights", "imagenet", check=False)
    if offline.returncode == 0:
        pytest.skip("this machine could download ImageNet weights")
    assert "error:" in offline.stderr
    assert "--weights none" in offline.stderr
    assert "Traceback" not in offline.stderr
    missing = train(fer_small, tmp_path / "h5", "--weights", str(tmp_path / "none.h5"), check=False)
    assert missing.returncode == 2
    assert "does not exist" in missing.stderr


@pytest.mark.slow
def test_distilled_run_records_and_reuses_its_teacher(
    run: Path, tmp_path: Path, fer_small: Path
) -> None:
    student = tmp_path / "student"
    teacher = run / "best.keras"
    train(fer_small, student, "--epochs", "1", "--teacher", str(teacher), "--teacher-weight", "0.7")
    record = json.loads((student / "config.json").read_text())
    assert record["args"]["teacher"] == [str(teacher)]
    assert record["args"]["teacher_weight"] == 0.7
    with np.load(student / "teacher.npz") as saved:
        probs = saved["probabilities"]
        teachers = json.loads(str(saved["teachers"]))
    assert probs.shape == (ROWS, 7)
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    assert teachers[0]["path"] == str(teacher)
    metrics = json.loads((student / "metrics.json").read_text())
    assert any("distilled" in note for note in metrics["dataset"]["notes"])
    assert metrics["teacher_labelling_s"] > 0
    assert metrics["wall_time_s"] >= metrics["teacher_labelling_s"]
    # a resumed run reads the saved probabilities instead of running the teacher again
    state = json.loads((student / "state.json").read_text())
    state["epoch"] = 0
    (student / "state.json").write_text(json.dumps(state))
    resumed = train(fer_small, student, "--resume")
    assert "teacher probabilities read from" in resumed.stderr


@pytest.mark.slow
def test_resume_can_move_the_end_of_the_run(run: Path, tmp_path: Path, fer_small: Path) -> None:
    moved = tmp_path / "moved"
    shutil.copytree(run, moved)  # finished its 2 planned epochs
    too_early = train(fer_small, moved, "--resume", "--end-at-epoch", "2", check=False)
    assert too_early.returncode == 2
    assert "give a later end" in too_early.stderr
    not_resuming = train(fer_small, tmp_path / "new", "--end-at-epoch", "3", check=False)
    assert not_resuming.returncode == 2
    assert "use it with --resume" in not_resuming.stderr

    result = train(fer_small, moved, "--resume", "--end-at-epoch", "4")
    assert "run now ends after 4 epochs (was 2)" in result.stderr
    record = json.loads((moved / "config.json").read_text())
    assert record["args"]["epochs"] == 4
    assert record["args"]["end_at_epoch"] == 0  # an action, not an option of the run
    [change] = record["schedule_changes"]
    assert (change["after_epoch"], change["epochs_from"], change["epochs_to"]) == (2, 2, 4)
    assert "--end-at-epoch 4" in change["command"]
    rows = [ln.split(",") for ln in (moved / "history.csv").read_text().splitlines()[1:]]
    assert [r[0] for r in rows] == ["0", "1", "2", "3"]
    lrs = [float(r[3]) for r in rows]
    # The old cosine had reached zero after epoch 2 and would have stayed there; the moved end
    # stretches it: epoch 3 ends three quarters along a 4-epoch cosine, epoch 4 at zero.
    assert lrs[1] < 1e-8
    assert lrs[2] == pytest.approx(2e-3 * 0.5 * (1 + np.cos(np.pi * 3 / 4)), rel=1e-3)
    assert lrs[3] < 1e-8
    assert json.loads((moved / "state.json").read_text())["epoch"] == 4


@pytest.mark.slow
def test_calibration_bakes_the_chosen_biases_into_a_run_of_its_own(
    run: Path, ensemble_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fer_onnx_factory.model.build import OUTPUT_NAME, load_model
    from fer_onnx_factory.tune.calibrate import main as calibrate_main

    out = tmp_path / "cal"
    args = ["--run", str(run), "--out", str(out), "--protect", "fear", "--floor", "fear=0.5"]
    args += ["--tta", "flip", "--step", "0.5", "--max-bias", "8"]
    assert calibrate_main(args) == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    cal = metrics["calibration"]
    assert cal["recall_floors"] == {"fear": 0.5}
    assert (cal["reference"], cal["floors_given"]) == (None, True)
    assert cal["public_recall_with_views"]["fear"]["after"] >= 0.5
    assert cal["grid"] == {"step": 0.5, "max_bias": 8.0, "settings": 17}
    assert metrics["calibrated_from"] == str(run)
    assert set(metrics["splits"]) == {"PublicTest", "PrivateTest"}
    before = load_model(run / "best.keras").get_layer(OUTPUT_NAME).get_weights()
    after = load_model(out / "best.keras").get_layer(OUTPUT_NAME).get_weights()
    np.testing.assert_array_equal(after[0], before[0])
    shift = np.zeros(7, np.float32)
    shift[2] = cal["class_biases"]["fear"]
    np.testing.assert_allclose(after[1], before[1] + shift, rtol=0, atol=1e-6)
    for name in ("config.json", "contract.json", "state.json"):
        assert (out / name).read_bytes() == (run / name).read_bytes()
    # a second calibration into the same folder is refused, and an ensemble is not calibrated
    assert calibrate_main(args) == 2
    assert "already holds files" in capsys.readouterr().err
    ensemble = [*args[:1], str(ensemble_run), "--out", str(tmp_path / "e"), *args[4:]]
    assert calibrate_main(ensemble) == 2
    assert "calibrate a single network" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()


@pytest.mark.slow
def test_calibration_keeps_the_floors_in_every_framing(
    run: Path, fer_small: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--framing: one setting chosen on FER2013's framing and the aligned one together."""
    from fer_onnx_factory.data.align import main as align_main
    from fer_onnx_factory.tune.calibrate import main as calibrate_main

    aligned = tmp_path / "aligned.npz"
    assert align_main(["--data", str(fer_small), "--out", str(aligned), "--limit", str(ROWS)]) == 0
    out = tmp_path / "cal"
    args = ["--run", str(run), "--out", str(out), "--protect", "fear", "--floor", "fear=0.5"]
    args += ["--tta", "flip", "--step", "0.5", "--max-bias", "8"]
    fewer = tmp_path / "fewer.npz"
    assert align_main(["--data", str(fer_small), "--out", str(fewer), "--limit", "100"]) == 0
    for framing, error in [
        (
            [str(fer_small), str(fer_small.parent / ".." / fer_small.parent.name / fer_small.name)],
            "names the same file twice",
        ),
        ([str(fer_small), str(fewer)], "holds other faces than the run's"),
    ]:
        assert calibrate_main([*args, "--framing", *framing]) == 2
        assert error in capsys.readouterr().err
        assert not out.exists()
    assert calibrate_main([*args, "--framing", str(fer_small), str(aligned)]) == 0
    cal = json.loads((out / "metrics.json").read_text())["calibration"]
    assert [f["data"] for f in cal["framings"]] == [str(fer_small), str(aligned)]
    for framing in cal["framings"]:
        assert framing["recall_floors"] == {"fear": 0.5}
        assert framing["public_recall_with_views"]["fear"]["after"] >= 0.5
    first, second = cal["framings"]
    assert cal["data"] == first["data"]
    assert cal["public_accuracy_with_views"] == first["public_accuracy_with_views"]
    mean = cal["mean_public_accuracy_with_views"]["after"]
    after = [f["public_accuracy_with_views"]["after"] for f in (first, second)]
    assert mean == pytest.approx(sum(after) / 2, abs=1e-4)


@pytest.mark.slow
def test_calibration_chooses_on_an_export(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--choose-on: the biases are chosen on an exported file's per-view probabilities (the
    shipped int8 file in the recipe; here the fp32 export, since int8 rounding of this
    two-epoch network moves its near-uniform probabilities by more than the check allows)."""
    from fer_onnx_factory.export.onnx import export
    from fer_onnx_factory.model.build import OUTPUT_NAME, load_model, with_tta
    from fer_onnx_factory.tune.calibrate import main as calibrate_main

    def onnx_export(model: object, name: str) -> Path:
        keras_path = tmp_path / f"{name}.keras"
        with_tta(model, "flip").save(keras_path)
        fp32 = tmp_path / f"{name}.onnx"
        export(keras_path, fp32, run_dir=run, extra={"tta": "flip"})
        return fp32

    own = onnx_export(load_model(run / "best.keras"), "own")
    out = tmp_path / "cal"
    args = ["--run", str(run), "--out", str(out), "--protect", "fear", "--floor", "fear=0.5"]
    args += ["--tta", "flip", "--step", "0.5", "--max-bias", "8"]
    assert calibrate_main([*args, "--choose-on", str(own)]) == 0, capsys.readouterr().err
    cal = json.loads((out / "metrics.json").read_text())["calibration"]
    assert cal["chosen_on"] == str(own)
    assert cal["public_recall_with_views"]["fear"]["after"] >= 0.5

    other = load_model(run / "best.keras")  # another network: it calls every face angry
    layer = other.get_layer(OUTPUT_NAME)
    kernel, bias = layer.get_weights()
    layer.set_weights([kernel, bias + np.eye(7, dtype=np.float32)[0] * 50])
    stranger = onnx_export(other, "other")
    args[3] = str(tmp_path / "cal2")
    assert calibrate_main([*args, "--choose-on", str(stranger)]) == 2
    assert "give an export of this run" in capsys.readouterr().err
    assert not (tmp_path / "cal2").exists()


@pytest.mark.slow
def test_init_weight_moves_a_fine_tune_back_towards_its_start(
    run: Path, tmp_path: Path, fer_small: Path
) -> None:
    """WiSE-FT: (1 - W) x fine-tuned + W x the --init model, statistics re-estimated."""
    from fer_onnx_factory.data.align import save
    from fer_onnx_factory.data.datasets import load
    from fer_onnx_factory.model.build import load_model
    from fer_onnx_factory.train.config import snapshot_name
    from fer_onnx_factory.tune.average import main as average_main

    start = run / "best.keras"
    tuned = tmp_path / "tuned"
    extra = tmp_path / "extra.npz"
    save(load(fer_small), extra)
    train(
        fer_small,
        tuned,
        "--epochs",
        "2",
        "--init",
        str(start),
        "--keep-epochs",
        "1",
        "--extra",
        str(extra),
    )
    out = tmp_path / "wise"
    args = ["--run", str(tuned), "--out", str(out), "--last", "1", "--init-weight", "0.25"]
    assert average_main([*args, "--bn-faces", "64"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["init_weight"], metrics["init"]) == (0.25, str(start))
    assert metrics["batchnorm_layers"] > 0
    assert metrics["batchnorm_faces"] == 64
    # its notes are the fine-tune's, which say how it was trained (--extra), not a plain load's
    notes = metrics["dataset"]["notes"]
    assert notes == json.loads((tuned / "metrics.json").read_text())["dataset"]["notes"]
    assert any(n.startswith("added ") for n in notes)
    mixed = load_model(out / "best.keras")
    a, b = load_model(tuned / snapshot_name(2)), load_model(start)
    pairs = zip(a.trainable_weights, b.trainable_weights, strict=True)
    for w, (wa, wb) in zip(mixed.trainable_weights, pairs, strict=True):
        np.testing.assert_allclose(
            w.numpy(), 0.75 * wa.numpy() + 0.25 * wb.numpy(), rtol=1e-5, atol=1e-6
        )
    # calibrating the result keeps the record of how it was made, for its model card
    from fer_onnx_factory.tune.calibrate import main as calibrate_main

    cal = tmp_path / "cal"
    options = ["--protect", "fear", "--floor", "fear=0.0", "--step", "0.5", "--max-bias", "1"]
    assert calibrate_main(["--run", str(out), "--out", str(cal), *options]) == 0
    carried = json.loads((cal / "metrics.json").read_text())
    for key in ("averaged_with", "init_weight", "init", "batchnorm_layers", "batchnorm_faces"):
        assert carried[key] == metrics[key], key
    assert carried["dataset"]["notes"] == notes


def test_phase_two_learning_rate_follows_the_schedule() -> None:
    """--schedule cosine: a linear warmup from 1% of the peak, then a decay to 0; plateau: the
    peak (lowered later by the run-state callback)."""
    from fer_onnx_factory.train.config import TrainConfig
    from fer_onnx_factory.train.run import _learning_rate

    cfg = TrainConfig(data=Path("x.csv"), out=Path("r"), weights="none", lr=1e-3)
    cosine = _learning_rate(cfg, warmup=10, decay_steps=100)
    rates = [float(cosine(step)) for step in (0, 5, 10, 60, 110)]
    assert rates == pytest.approx([1e-5, 0.505e-3, 1e-3, 0.5e-3, 0.0], abs=1e-9)
    cold = _learning_rate(cfg, warmup=0, decay_steps=100)
    assert [float(cold(step)) for step in (0, 50, 100)] == pytest.approx([1e-3, 0.5e-3, 0.0])
    assert _learning_rate(cfg.replace(schedule="plateau"), warmup=10, decay_steps=100) == 1e-3


def test_train_options_take_their_defaults_from_the_record() -> None:
    # one declaration: the CLI's defaults are TrainConfig's fields, and --help shows them
    import dataclasses

    from fer_onnx_factory.train.config import TrainConfig
    from fer_onnx_factory.train.run import parse_args

    args = vars(parse_args(["--data", "d.csv", "--out", "o"]))
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(args) == fields
    assert {k: v for k, v in args.items() if k not in ("data", "out")} == TrainConfig.defaults()
    assert TrainConfig.from_args(parse_args(["--data", "d.csv", "--out", "o"])) == TrainConfig(
        data=Path("d.csv"), out=Path("o")
    )
    done = subprocess.run(
        [sys.executable, "-m", "fer_onnx_factory", "train", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert f"(default: {TrainConfig.defaults()['epochs']})" in done.stdout


def test_extra_faces_join_the_training_faces(fer_small: Path, tmp_path: Path) -> None:
    """--extra: another dataset's Training faces join --data's, --extra-repeat times; --limit
    cuts them as it cuts --data's."""
    from fer_onnx_factory.data.align import save
    from fer_onnx_factory.data.datasets import load
    from fer_onnx_factory.train.config import TrainConfig
    from fer_onnx_factory.train.run import load_data, parse_args

    small = load(fer_small)
    extra = tmp_path / "extra.npz"
    save(small, extra)  # any dataset in the same input format and framing will do
    argv = ["--data", str(fer_small), "--out", str(tmp_path / "run"), "--extra", str(extra)]
    cfg = TrainConfig.from_args(parse_args([*argv, "--extra-repeat", "2"]))
    train = load_data(cfg)["Training"]
    assert len(train) == ROWS + 2 * ROWS
    assert np.array_equal(train.images[ROWS : 2 * ROWS], small["Training"].images)
    assert (train.rows[ROWS:] < 0).all()
    cut = load_data(cfg.replace(limit=50))
    assert len(cut["Training"]) == 50 + 2 * 50
    assert len(cut["PublicTest"]) == 50  # selection stays on --data's faces
    assert any("added 50 Training faces" in n and "2 times" in n for n in cut.notes)


def test_extra_faces_framed_on_another_template_are_refused(
    fer_small: Path, tmp_path: Path
) -> None:
    """FER2013's csv is framed on its measured template: photos aligned onto another one
    would teach the network a framing the runtime never gives it."""
    import dataclasses
    import re

    from fer_onnx_factory.data.align import save
    from fer_onnx_factory.data.datasets import DataError, load
    from fer_onnx_factory.train.config import TrainConfig
    from fer_onnx_factory.train.run import load_data

    small = load(fer_small)
    other = {
        "landmarks": [[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.35, 0.75], [0.65, 0.75]],
        "box": [0.0, 0.0, 1.0, 1.0],
    }
    extra = tmp_path / "other.npz"
    save(dataclasses.replace(small, template=other), extra)
    cfg = TrainConfig(data=fer_small, out=tmp_path / "run", extra=(extra,), limit=20)
    refused = rf"--extra {re.escape(str(extra))}: .*another crop template"
    with pytest.raises(DataError, match=refused):
        load_data(cfg)
    missing = cfg.replace(extra=(tmp_path / "absent.npz",))
    with pytest.raises(DataError, match=r"--extra .*absent\.npz: .*no such file"):
        load_data(missing)


@pytest.mark.slow
def test_bundle_calibrates_on_the_runs_extra_faces_and_checks_them_first(
    run: Path, fer_small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``bundle`` draws its int8 calibration faces from every face an epoch trained on (the
    run's --extra photos included), and a missing --extra file stops it before any export."""
    from fer_onnx_factory.data.align import save
    from fer_onnx_factory.data.datasets import DataError, load
    from fer_onnx_factory.export import bundle as bundle_module
    from fer_onnx_factory.train.config import TrainConfig

    small = load(fer_small)
    extra = tmp_path / "extra.npz"
    save(small, extra)
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    cfg, _ = TrainConfig.read(copy)
    cfg.replace(extra=(extra,), extra_repeat=2).write(copy, "train", {})

    class DrawnError(Exception):
        pass

    pools: list[np.ndarray] = []

    def draw(pool: np.ndarray, n: int, *args: object) -> tuple[np.ndarray, np.ndarray]:
        pools.append(pool)
        raise DrawnError

    monkeypatch.setattr(bundle_module, "split_pool", draw)
    with pytest.raises(DrawnError):
        bundle_module.bundle(copy, fer_small, tmp_path / "dest", tta="none", card=tmp_path / "c.md")
    faces = small["Training"].images
    assert np.array_equal(pools[0], np.concatenate([faces, faces, faces]))

    def no_export(*args: object, **kwargs: object) -> None:
        raise AssertionError("exported before the --extra files were checked")

    monkeypatch.setattr(bundle_module, "export", no_export)
    cfg.replace(extra=(tmp_path / "absent.npz",)).write(copy, "train", {})
    with pytest.raises(DataError, match=r"absent\.npz"):
        bundle_module.bundle(copy, fer_small, tmp_path / "dest", tta="none", card=tmp_path / "c.md")


@pytest.mark.slow
def test_bundle_reports_how_closely_int8_follows_fp32(
    run: Path, fer_small: Path, tmp_path: Path
) -> None:
    """A whole bundle with percentile calibration: the int8 file says how it was calibrated,
    and the summary compares it with fp32 on every pool face the calibration did not use."""
    import onnx

    from fer_onnx_factory.export.bundle import bundle

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    summary = bundle(
        copy,
        fer_small,
        tmp_path / "dest",
        calibration=100,
        tta="none",
        card=tmp_path / "card.md",
        int8_calibration="percentile",
    )
    assert summary["int8_calibration"] == "Percentile 99.99"
    fid = summary["int8_fidelity"]
    assert fid["faces"] == 200  # the 300 Training faces of the small file, less 100
    assert 0.0 < fid["argmax_agreement"] <= 1.0
    assert 0.0 <= fid["mean_l1"] <= 2.0
    int8 = onnx.load(str(copy / "export" / "int8.onnx"))
    quantization = {p.key: p.value for p in int8.metadata_props}["quantization"]
    assert "Percentile 99.99 calibration on 100 training faces" in quantization
    saved = json.loads((copy / "export" / "summary.json").read_text())
    assert saved["int8_fidelity"] == fid
