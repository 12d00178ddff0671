"""Weight averaging of kept epochs (fer_onnx_factory.tune.average) and --keep-epochs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fer_onnx_factory.errors import PipelineError
from fer_onnx_factory.train.config import RunState, TrainConfig, snapshot_name
from fer_onnx_factory.train.run import _end_at, _keep
from fer_onnx_factory.tune.average import (
    average_run,
    average_weights,
    choose,
    interpolate,
    recompute_batchnorm,
    snapshots,
)


def test_average_weights_is_the_elementwise_mean() -> None:
    a = [np.array([1.0, 2.0], np.float32), np.full((2, 2), 4.0, np.float32)]
    b = [np.array([3.0, 6.0], np.float32), np.zeros((2, 2), np.float32)]
    mean = average_weights([a, b])
    assert mean[0].dtype == np.float32
    np.testing.assert_array_equal(mean[0], [2.0, 4.0])
    np.testing.assert_array_equal(mean[1], np.full((2, 2), 2.0))
    with pytest.raises(PipelineError, match="same weights"):
        average_weights([a, [b[0]]])
    with pytest.raises(PipelineError, match="nothing"):
        average_weights([])


def test_snapshots_are_found_sorted_and_must_be_enough(tmp_path: Path) -> None:
    for e in (12, 10, 11):
        (tmp_path / snapshot_name(e)).write_bytes(b"")
    (tmp_path / "last.keras").write_bytes(b"")
    (tmp_path / "epoch_7.keras").write_bytes(b"")  # not the kept-epoch pattern
    assert [e for e, _ in snapshots(tmp_path)] == [10, 11, 12]
    assert [e for e, _ in choose(tmp_path, 2)] == [11, 12]
    with pytest.raises(PipelineError, match="--keep-epochs 4"):
        choose(tmp_path, 4)
    assert [e for e, _ in choose(tmp_path, 1)] == [12]
    with pytest.raises(PipelineError, match="at least 1"):
        choose(tmp_path, 0)
    (tmp_path / snapshot_name(10)).unlink()
    (tmp_path / snapshot_name(9)).write_bytes(b"")
    with pytest.raises(PipelineError, match="not consecutive"):
        choose(tmp_path, 3)


def test_keep_epochs_is_part_of_the_record() -> None:
    cfg = TrainConfig(data=Path("x.csv"), out=Path("r"), weights="none", keep_epochs=3)
    assert TrainConfig.from_dict(cfg.to_dict()).keep_epochs == 3
    assert cfg.total_epochs == cfg.epochs  # no head phase from scratch
    assert TrainConfig(data=Path("x"), out=Path("r")).total_epochs == 45  # 5 head + 40
    with pytest.raises(PipelineError, match="keep_epochs"):
        TrainConfig(data=Path("x"), out=Path("r"), keep_epochs=-1)


def test_batchnorm_statistics_become_the_mean_of_batch_statistics() -> None:
    keras = pytest.importorskip("keras")
    inputs = keras.Input((3,))
    dense = keras.layers.Dense(2, use_bias=False, kernel_initializer="ones")
    bn = keras.layers.BatchNormalization(momentum=0.99)
    model = keras.Model(inputs, bn(dense(inputs)))
    rng = np.random.default_rng(0)
    x = rng.normal(5.0, 2.0, (40, 3)).astype(np.float32)
    kernel = dense.kernel.numpy().copy()
    assert recompute_batchnorm(model, x, batch_size=10) == 1
    z = x @ kernel
    batches = z.reshape(4, 10, 2)
    np.testing.assert_allclose(bn.moving_mean.numpy(), batches.mean(axis=1).mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(
        bn.moving_variance.numpy(), batches.var(axis=1).mean(axis=0), rtol=1e-4
    )
    assert bn.momentum == 0.99  # restored
    np.testing.assert_array_equal(dense.kernel.numpy(), kernel)
    with pytest.raises(PipelineError, match="at least 10 faces"):
        recompute_batchnorm(model, x[:5], batch_size=10)


def test_nested_and_frozen_batchnorm() -> None:
    keras = pytest.importorskip("keras")
    inner_in = keras.Input((3,))
    frozen_bn = keras.layers.BatchNormalization()
    trained_bn = keras.layers.BatchNormalization()
    inner = keras.Model(inner_in, trained_bn(frozen_bn(inner_in)))
    frozen_bn.trainable = False
    frozen_bn.moving_mean.assign(np.array([1.0, 2.0, 3.0], np.float32))
    outer_in = keras.Input((3,))
    model = keras.Model(outer_in, inner(outer_in))
    x = np.random.default_rng(1).normal(4.0, 1.0, (20, 3)).astype(np.float32)
    assert recompute_batchnorm(model, x, batch_size=10) == 1
    np.testing.assert_array_equal(frozen_bn.moving_mean.numpy(), [1.0, 2.0, 3.0])
    assert not np.allclose(trained_bn.moving_mean.numpy(), 0.0)


def test_kept_epochs_are_a_rolling_window(tmp_path: Path) -> None:
    (tmp_path / "last.keras").write_bytes(b"model")
    for epoch in range(1, 6):
        _keep(tmp_path, epoch, 2)
    assert [e for e, _ in snapshots(tmp_path)] == [4, 5]
    assert not list(tmp_path.glob(".*.tmp"))


def fake_run(tmp_path: Path, epochs_done: int, **state: object) -> tuple[TrainConfig, Path]:
    run = tmp_path / "run"
    run.mkdir(parents=True)
    cfg = TrainConfig(data=tmp_path / "fer2013.csv", out=run, weights="none", epochs=10)
    cfg.write(run, "fer-onnx-factory train ...", {})
    RunState(epoch=epochs_done, phase=2, **state).write(run)  # type: ignore[arg-type]
    return cfg, run


def test_average_refuses_unfinished_runs_and_other_data(tmp_path: Path) -> None:
    _, run = fake_run(tmp_path, 6)
    with pytest.raises(PipelineError, match="run 6 of its 10 epochs"):
        average_run(run, tmp_path / "avg", None)
    RunState(epoch=10, phase=2).write(run)
    with pytest.raises(PipelineError, match="not the data"):
        average_run(run, tmp_path / "avg", tmp_path / "aligned.npz")
    with pytest.raises(PipelineError, match="new folder"):
        average_run(run, run, None)
    assert not (tmp_path / "avg").exists()


def test_interpolate_moves_between_two_models() -> None:
    ours = [np.zeros((2, 2), np.float32), np.array([4.0], np.float32)]
    theirs = [np.ones((2, 2), np.float32), np.array([0.0], np.float32)]
    mixed = interpolate(ours, theirs, 0.25)
    np.testing.assert_allclose(mixed[0], np.full((2, 2), 0.25))
    np.testing.assert_allclose(mixed[1], [3.0])
    assert mixed[0].dtype == np.float32
    assert [m.tolist() for m in interpolate(ours, theirs, 0.0)] == [o.tolist() for o in ours]
    with pytest.raises(PipelineError, match="within"):
        interpolate(ours, theirs, 1.5)
    with pytest.raises(PipelineError, match="same weights"):
        interpolate(ours, theirs[:1], 0.5)


def test_init_weight_needs_a_run_started_from_a_model(tmp_path: Path) -> None:
    _, run = fake_run(tmp_path, 10)
    with pytest.raises(PipelineError, match="not trained with --init"):
        average_run(run, tmp_path / "avg", None, init_weight=0.5)
    cfg = TrainConfig(
        data=tmp_path / "fer2013.csv", out=run, weights="none", epochs=10, init=tmp_path / "a.keras"
    )
    cfg.write(run, "fer-onnx-factory train --init a.keras", {})
    with pytest.raises(PipelineError, match=r"within \[0, 1\)"):
        average_run(run, tmp_path / "avg", None, init_weight=1.0)
    assert not (tmp_path / "avg").exists()


def test_end_at_epoch_checks_and_records(tmp_path: Path) -> None:
    cfg, run = fake_run(tmp_path, 6)
    _, record = TrainConfig.read(run)
    state = RunState.read(run)
    with pytest.raises(PipelineError, match="at least 7"):
        _end_at(cfg, record, state, 6, "cmd")
    same, same_record = _end_at(cfg, record, state, 10, "cmd")
    assert same == cfg
    assert "schedule_changes" not in same_record
    shorter, _ = _end_at(cfg, record, state, 8, "cmd --end-at-epoch 8")
    assert shorter.epochs == 8
    saved, saved_record = TrainConfig.read(run)
    assert saved.epochs == 8
    assert saved_record["schedule_changes"] == [
        {"after_epoch": 6, "epochs_from": 10, "epochs_to": 8, "command": "cmd --end-at-epoch 8"}
    ]
    _, stopped = fake_run(tmp_path / "b", 6, stopped_early=True)
    with pytest.raises(PipelineError, match="stopped early"):
        _end_at(cfg, record, RunState.read(stopped), 8, "cmd")


@pytest.mark.slow
def test_kept_epochs_average_into_a_run_of_their_own(
    tmp_path: Path,
    fer_small: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("tensorflow")
    from test_training_run import train

    from fer_onnx_factory.model.build import load_model
    from fer_onnx_factory.tune.average import main as average_main

    run = tmp_path / "kept"
    train(fer_small, run, "--epochs", "3", "--keep-epochs", "2")
    assert [e for e, _ in snapshots(run)] == [2, 3]
    assert (run / snapshot_name(3)).read_bytes() == (run / "last.keras").read_bytes()

    out = tmp_path / "avg"
    args = ["--run", str(run), "--out", str(out), "--data", str(fer_small), "--last", "2"]
    # killed while writing its report: no run folder appears, and a second try starts afresh
    with monkeypatch.context() as m:

        def killed(*_: object, **__: object) -> None:
            raise KeyboardInterrupt

        m.setattr("fer_onnx_factory.report.write_report", killed)
        with pytest.raises(KeyboardInterrupt):
            average_main([*args, "--bn-faces", "64"])
    assert not out.exists()
    assert average_main([*args, "--bn-faces", "64"]) == 0
    assert not (tmp_path / ".avg.partial").exists()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["averaged_epochs"] == [2, 3]
    assert metrics["averaged_with"].startswith("fer-onnx-factory average --run ")
    assert metrics["model"] == str(out / "best.keras")
    assert set(metrics["splits"]) == {"PublicTest", "PrivateTest"}
    assert metrics["wall_time_s"] >= metrics["averaging_s"] > 0
    for name in ("config.json", "contract.json", "state.json"):
        assert (out / name).read_bytes() == (run / name).read_bytes()
    averaged = load_model(out / "best.keras")
    a, b = load_model(run / snapshot_name(2)), load_model(run / snapshot_name(3))
    pairs = zip(a.trainable_weights, b.trainable_weights, strict=True)
    for w, (wa, wb) in zip(averaged.trainable_weights, pairs, strict=True):
        np.testing.assert_allclose(w.numpy(), (wa.numpy() + wb.numpy()) / 2, rtol=1e-5, atol=1e-7)
    assert metrics["batchnorm_layers"] > 0
    # every BatchNorm layer frozen (a faceres fine-tune): the record says none was re-estimated
    monkeypatch.setattr("fer_onnx_factory.tune.average.recompute_batchnorm", lambda *a, **k: 0)
    frozen = tmp_path / "frozen"
    assert average_main([*args[:2], "--out", str(frozen), *args[4:]]) == 0
    record = json.loads((frozen / "metrics.json").read_text())
    assert (record["batchnorm_layers"], record["batchnorm_faces"]) == (0, 0)
    # a second average into the same folder is refused, not overwritten
    before = (out / "best.keras").read_bytes()
    assert average_main(args) == 2
    assert "already holds files" in capsys.readouterr().err
    assert (out / "best.keras").read_bytes() == before
