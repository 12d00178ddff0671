"""The typed run record (Keras-free): TrainConfig, RunState, the model contract, start_run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fer_onnx.alignment import CropTemplate
from fer_onnx.metadata import ModelInfo
from fer_onnx.preprocessing import InputSpec
from fer_onnx_factory.data.framing import FER2013_TEMPLATE, load_template
from fer_onnx_factory.errors import PipelineError
from fer_onnx_factory.train.config import (
    CONTRACT_FORMAT,
    RunState,
    TrainConfig,
    read_contract,
    template_for,
    write_contract,
)
from fer_onnx_factory.train.run import parse_args, start_run


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
    assert cfg.extra == ()
    twice = parse_args(["--data", "x.csv", "--out", "r", "--extra", "a.npz", "--extra", "b.npz"])
    assert TrainConfig.from_args(twice).extra == (Path("a.npz"), Path("b.npz"))
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
    started, state, record = start_run(cfg, "fer-onnx-factory train ...")
    assert started == cfg
    assert state == RunState()
    assert record["command"] == "fer-onnx-factory train ..."
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
    (tmp_path / "contract.json").write_text("{}")
    with pytest.raises(PipelineError, match="malformed"):
        read_contract(tmp_path)
    with pytest.raises(PipelineError, match="not found"):
        RunState.read(tmp_path / "nothing")


TEMPLATE = CropTemplate(
    ((0.3, 0.4), (0.7, 0.4), (0.5, 0.6), (0.35, 0.75), (0.65, 0.75)), (0.1, 0.1, 0.8, 0.8)
)


@pytest.mark.parametrize(
    "contract",
    [
        ModelInfo(("a", "b"), InputSpec(48, 48, "gray"), (0.0, 255.0), {}),
        ModelInfo(("x", "y", "z"), InputSpec(64, 56, "bgr"), (-1.0, 1.0), {}, TEMPLATE, "logits"),
    ],
)
def test_the_run_contract_round_trips_as_model_info(tmp_path: Path, contract: ModelInfo) -> None:
    write_contract(tmp_path, contract)
    assert read_contract(tmp_path) == contract
    data = json.loads((tmp_path / "contract.json").read_text())
    assert data["format"] == CONTRACT_FORMAT
    # Exactly the fer-onnx entries the exported file's metadata will hold, in sorted order.
    assert data["metadata"] == contract.to_metadata()
    assert list(data["metadata"]) == sorted(data["metadata"])


def test_the_contract_keeps_no_provenance(tmp_path: Path) -> None:
    info = ModelInfo(("a", "b"), InputSpec(48, 48, "gray"), (0.0, 255.0), {"dataset": "x.csv"})
    write_contract(tmp_path, info)
    assert read_contract(tmp_path).extra == {}


OLD_CONTRACT = {
    "labels": ["angry", "happy"],
    "input_size": [48, 48],
    "color": "gray",
    "value_range": [0, 255],
    "output": "probabilities",
    "template": json.loads(TEMPLATE.to_json()),
}


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, ModelInfo(("angry", "happy"), InputSpec(48, 48, "gray"), (0, 255), {}, TEMPLATE)),
        (
            {"template": None, "color": "rgb", "value_range": [0.0, 1.0], "output": "logits"},
            ModelInfo(("angry", "happy"), InputSpec(48, 48, "rgb"), (0, 1), {}, None, "logits"),
        ),
        (
            {"output": None},  # no "output" key: probabilities
            ModelInfo(("angry", "happy"), InputSpec(48, 48, "gray"), (0, 255), {}, TEMPLATE),
        ),
    ],
)
def test_a_contract_of_the_old_format_still_reads(
    tmp_path: Path, changes: dict[str, object], expected: ModelInfo
) -> None:
    """Runs written before the format key (plain JSON fields) can still be exported."""
    old = {k: v for k, v in {**OLD_CONTRACT, **changes}.items() if v is not None or k != "output"}
    (tmp_path / "contract.json").write_text(json.dumps(old, indent=2))
    assert read_contract(tmp_path) == expected


@pytest.mark.parametrize(
    ("content", "error"),
    [
        ({**OLD_CONTRACT, "color": "purple"}, "color_mode must be one of"),
        ({**OLD_CONTRACT, "labels": ["a", "a"]}, "distinct"),
        ({**OLD_CONTRACT, "template": {"landmarks": [[0, 0]]}}, "malformed"),
        ({"format": "fer_onnx.metadata/9", "metadata": {}}, "unknown format"),
        ({"format": CONTRACT_FORMAT, "metadata": {"fer_onnx.labels": 1}}, "strings"),
        ({"format": CONTRACT_FORMAT, "metadata": {}}, "lacks fer_onnx.labels"),
        ({"format": CONTRACT_FORMAT}, "malformed"),
    ],
)
def test_a_bad_contract_is_a_clear_error(
    tmp_path: Path, content: dict[str, object], error: str
) -> None:
    (tmp_path / "contract.json").write_text(json.dumps(content))
    with pytest.raises(PipelineError, match=error):
        read_contract(tmp_path)


def test_fer2013_runs_get_the_measured_template() -> None:
    template = template_for(Path("../shared/data/fer2013/fer2013.csv.gz"))
    assert template == load_template(FER2013_TEMPLATE)
    assert template_for(Path("my_faces/")) is None


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"ferplus_weight": 0.0}, r"ferplus_weight must be in \(0, 1\]"),
        ({"ferplus_weight": 0.5}, "ferplus_weight needs a FER\\+ file"),
        ({"teacher_weight": 0.3}, "need teacher models"),
        ({"teacher_temperature": 1.0}, "need teacher models"),
        ({"teacher": ("t.keras",), "teacher_weight": 1.5}, r"teacher_weight must be in \[0, 1\]"),
        ({"teacher": ("t.keras",), "teacher_temperature": 0.0}, "teacher_temperature must be > 0"),
        ({"members": 0}, "members must be at least 1"),
        ({"erasing": 1.5}, "erasing must be a probability"),
        ({"mixup": -0.1}, "mixup takes a Beta parameter >= 0"),
        ({"cutmix": 1.5}, "cutmix takes a Beta parameter"),
        ({"mixup": 0.2, "cutmix": 0.5}, "choose one of mixup and cutmix"),
        ({"keep_epochs": -1}, "keep_epochs and end_at_epoch must be >= 0"),
        ({"end_at_epoch": -1}, "keep_epochs and end_at_epoch must be >= 0"),
        ({"epochs": -1}, "epochs and head_epochs must be >= 0"),
        ({"head_epochs": -1}, "epochs and head_epochs must be >= 0"),
        ({"batch_size": 0}, "batch_size >= 1"),
        ({"extra_repeat": 2}, "extra_repeat needs extra data"),
        ({"extra": ("sfew.npz",), "extra_repeat": 0}, "extra_repeat must be >= 1"),
        # checked in that order: the FER+ weight before the members
        ({"ferplus_weight": 2.0, "members": 0}, "ferplus_weight must be in"),
    ],
)
def test_each_option_is_checked(options: dict[str, object], error: str) -> None:
    with pytest.raises(PipelineError, match=error):
        TrainConfig(data=Path("x.csv"), out=Path("r"), **options)  # type: ignore[arg-type]


def test_options_are_stored_with_one_type_each() -> None:
    cfg = TrainConfig(
        data="x.csv",  # type: ignore[arg-type]
        out="r",  # type: ignore[arg-type]
        ferplus="new.csv",  # type: ignore[arg-type]
        ferplus_weight=0.5,
        teacher=["a.keras", "b.onnx"],  # type: ignore[arg-type]
        extra=["sfew.npz"],  # type: ignore[arg-type]
        dense=["64", 32],  # type: ignore[list-item]
        mixup=0.2,
        lr=1e-3,
    )
    assert (cfg.data, cfg.out, cfg.ferplus, cfg.init) == (
        Path("x.csv"),
        Path("r"),
        Path("new.csv"),
        None,
    )
    assert cfg.teacher == (Path("a.keras"), Path("b.onnx"))
    assert cfg.extra == (Path("sfew.npz"),)
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert cfg.dense == (64, 32)
    assert cfg.lr == 1e-3  # given: no default taken
