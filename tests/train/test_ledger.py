"""The ledger of training runs: entries come from run records; the README shows its table."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from conftest import ROOT

from fer_onnx_factory.errors import PipelineError
from fer_onnx_factory.ledger import LEDGER, add, from_run, main, read, table
from fer_onnx_factory.train.config import RunState, TrainConfig


def fake_run(folder: Path, epochs_done: int, finished: bool, exported: bool = False) -> Path:
    cfg = TrainConfig.from_dict(
        {"data": "fer2013.csv", "out": str(folder), "epochs": 4, "weights": "none"}
    )
    folder.mkdir(parents=True)
    cfg.write(folder, "fer-onnx-factory train --epochs 4", {})
    RunState(epoch=epochs_done, phase=2, best=0.61, best_epoch=2, train_seconds=600.0).write(folder)
    if finished:
        splits = {"PublicTest": {"accuracy": 0.6123}, "PrivateTest": {"accuracy": 0.6321}}
        (folder / "metrics.json").write_text(json.dumps({"splits": splits, "wall_time_s": 660}))
    if exported:
        (folder / "export").mkdir()
        summary = {
            "int8_accepted": True,
            "tta": {"chosen": "flip"},
            "int8": {"PublicTest_accuracy": 0.625, "PrivateTest_accuracy": 0.64},
        }
        (folder / "export" / "summary.json").write_text(json.dumps(summary))
    return folder


def test_entries_come_from_the_run_record(tmp_path: Path) -> None:
    running = from_run(fake_run(tmp_path / "a", 2, False), "a", "base", None)
    assert (running.finished, running.epochs_run, running.epochs_planned) == (False, 2, 4)
    assert running.public_test == 0.61
    assert running.private_test is None
    assert running.minutes == 10.0
    done = from_run(fake_run(tmp_path / "b", 4, True), "b", "x", "a")
    assert done.finished
    assert done.public_test == 0.6123
    assert done.private_test == 0.6321
    assert done.minutes == 11.0  # the report's wall time (teacher labelling included)
    shipped = from_run(fake_run(tmp_path / "c", 4, True, exported=True), "c", "y", "a")
    assert shipped.public_test_views == 0.625
    assert shipped.private_test == 0.64
    assert "int8" in shipped.note
    assert "flip" in shipped.note
    with pytest.raises(PipelineError):
        from_run(tmp_path / "missing", "m", "z", None)


def test_add_replaces_by_name_and_checks_the_baseline(tmp_path: Path) -> None:
    ledger = tmp_path / "experiments.json"
    base = from_run(fake_run(tmp_path / "a", 4, True), "a", "base", None)
    better = from_run(fake_run(tmp_path / "b", 4, True), "b", "one change", "a")
    add(base, ledger)
    add(better, ledger)
    add(better, ledger)
    assert [e.name for e in read(ledger)] == ["a", "b"]
    with pytest.raises(PipelineError, match="baseline 'nope'"):
        add(from_run(tmp_path / "b", "c", "z", "nope"), ledger)
    rendered = table(read(ledger))
    assert "| b | one change (vs a) | 4 | 11 | 61.23% | +0.00 |" in rendered
    assert (
        main(
            [
                "--ledger",
                str(ledger),
                "add",
                "--run",
                str(tmp_path / "no"),
                "--name",
                "n",
                "--change",
                "c",
            ]
        )
        == 2
    )


def test_docs_show_the_committed_ledger() -> None:
    # docs/hooks/build.py renders the table into this page when the site is built
    # (tests/runtime/test_docs.py checks the rendering).
    assert len(read(LEDGER)) >= 5
    page = (ROOT / "docs" / "history.md").read_text()
    assert "<!-- ledger -->" in page, "docs/history.md lost the ledger marker the docs build fills"


def test_unstarted_runs_and_runs_without_private_test(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    TrainConfig.from_dict({"data": "x", "out": str(fresh), "epochs": 4, "weights": "none"}).write(
        fresh, "cmd", {}
    )
    RunState().write(fresh)
    entry = from_run(fresh, "fresh", "a | b", None)
    assert entry.public_test is None
    assert "| fresh | a \\| b; not finished, best so far | 0 of 4 | 0 | — |" in table([entry])
    tree = fake_run(tmp_path / "tree", 4, True)
    (tree / "metrics.json").write_text(
        json.dumps({"splits": {"PublicTest": {"accuracy": 0.5}}, "wall_time_s": 60})
    )
    assert from_run(tree, "tree", "folder data", None).private_test is None
    (tree / "metrics.json").write_text(json.dumps({"splits": {}}))
    with pytest.raises(PipelineError, match="malformed"):
        from_run(tree, "tree", "x", None)


def test_add_writes_the_checkout_ledger_and_refuses_an_installed_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from fer_onnx_factory.ledger import CHECKOUT_LEDGER, checkout_ledger, default_ledger

    monkeypatch.chdir(tmp_path)  # not a checkout: no src/fer_onnx_factory/experiments.json
    assert checkout_ledger() is None
    assert default_ledger() == LEDGER  # reading falls back on the installed copy
    args = ["add", "--run", str(tmp_path / "run"), "--name", "x", "--change", "y"]
    assert main(args) == 2
    assert "run `ledger add` from the repository root" in capsys.readouterr().err
    assert main(["table"]) == 0
    assert "| run | change (against baseline) |" in capsys.readouterr().out
    (tmp_path / CHECKOUT_LEDGER).parent.mkdir(parents=True)
    (tmp_path / CHECKOUT_LEDGER).write_text(LEDGER.read_text())
    assert checkout_ledger() == CHECKOUT_LEDGER
    assert default_ledger() == CHECKOUT_LEDGER
    installed = LEDGER.read_text()
    entry = read(LEDGER)[0]
    monkeypatch.setattr(
        "fer_onnx_factory.ledger.from_run",
        lambda run, name, change, baseline, note: dataclasses.replace(entry, name=name),
    )
    assert main(args) == 0
    assert [e.name for e in read(CHECKOUT_LEDGER)][-1] == "x"
    assert LEDGER.read_text() == installed  # the installed copy is never written
