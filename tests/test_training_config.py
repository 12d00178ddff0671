"""The typed run record (Keras-free): TrainConfig, RunState, ModelContract, and start_run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.config import (
    FER2013_TEMPLATE,
    ModelContract,
    RunState,
    TrainConfig,
    template_for,
)
from training.errors import PipelineError
from training.train import parse_args, start_run


def test_config_from_the_command_line_round_trips(tmp_path: Path) -> None:
    args = parse_args(
        [
            "--data",
            "x.csv",
            "--out",
            str(tmp_path / "r"),
            "--weights",
            "none",
            "--dense",
            "64",
            "32",
        ]
    )
    cfg = TrainConfig.from_args(args)
    assert cfg.lr == 2e-3  # the from-scratch default
    assert cfg.dense == (64, 32)
    assert isinstance(cfg.data, Path)
    again = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    assert TrainConfig(data=Path("x"), out=Path("o"), weights="imagenet").lr == 2e-4
    with pytest.raises(AttributeError):
        cfg.epochs = 3  # type: ignore[misc]


def test_old_configs_load_with_defaults_and_typos_fail() -> None:
    old = {"data": "x.csv", "out": "r", "ferplus": "None", "epochs": 65}  # before --members
    cfg = TrainConfig.from_dict(old)
    assert cfg.members == 1
    assert cfg.ferplus is None
    with pytest.raises(PipelineError, match="unknown training options"):
        TrainConfig.from_dict({**old, "epochz": 3})
    with pytest.raises(PipelineError, match="members"):
        TrainConfig.from_dict({**old, "members": 0})


def test_start_run_writes_the_record_and_resume_reads_it(tmp_path: Path) -> None:
    out = tmp_path / "run"
    cfg = TrainConfig(data=Path("x.csv"), out=out, epochs=7)
    started, state, record = start_run(cfg, "python -m training.train ...")
    assert started == cfg
    assert state == RunState()
    assert record["command"] == "python -m training.train ..."
    assert "versions" in record
    with pytest.raises(PipelineError, match="already holds a run"):
        start_run(cfg, "again")
    with pytest.raises(PipelineError, match=r"has no state\.json"):
        start_run(cfg.replace(resume=True), "resume")
    RunState(epoch=3, best=0.5, best_epoch=2, train_seconds=12.5).write(out)
    # The saved options win over the new command line, except out / resume / verbose.
    resumed, state, _ = start_run(
        TrainConfig(data=Path("other.csv"), out=out, epochs=99, resume=True, verbose=0), "r"
    )
    assert resumed.epochs == 7
    assert resumed.data == Path("x.csv")
    assert resumed.resume
    assert resumed.verbose == 0
    assert state.epoch == 3
    assert state.train_seconds == 12.5


def test_run_state_and_contract_round_trip(tmp_path: Path) -> None:
    state = RunState(epoch=5, phase=2, best=0.61, best_epoch=4, wait=1, train_seconds=3.0)
    state.write(tmp_path)
    assert RunState.read(tmp_path) == state
    contract = ModelContract(
        labels=("a", "b"), input_size=(48, 48), color="gray", template={"landmarks": [[0, 0]]}
    )
    contract.write(tmp_path)
    assert ModelContract.read(tmp_path) == contract
    (tmp_path / "contract.json").write_text("{}")
    with pytest.raises(PipelineError, match="malformed"):
        ModelContract.read(tmp_path)
    with pytest.raises(PipelineError, match="not found"):
        RunState.read(tmp_path / "nothing")


def test_fer2013_runs_get_the_measured_template() -> None:
    template = template_for(Path("../shared/data/fer2013/fer2013.csv.gz"))
    assert template == json.loads(FER2013_TEMPLATE.read_text())["template"]
    assert template_for(Path("my_faces/")) is None
