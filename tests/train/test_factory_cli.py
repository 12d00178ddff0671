"""fer-onnx-factory: one entry point whose sub-commands are the factory's steps, by stage."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fer_onnx_factory.cli import COMMANDS, STAGES, main, usage


def test_every_command_is_listed_once_by_stage() -> None:
    names = [name for stage in STAGES.values() for name in stage]
    assert len(names) == len(set(names)) == len(COMMANDS)
    text = usage()
    for stage, commands in STAGES.items():
        assert f"{stage}:" in text
        for name in commands:
            assert f"  {name} " in text


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_answers_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main([name, "--help"])
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: fer-onnx-factory {name} ")


def test_no_command_and_an_unknown_one_are_usage_errors(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main([]) == 2
    assert "usage: fer-onnx-factory COMMAND" in capsys.readouterr().err
    assert main(["--help"]) == 0
    assert "recipe" in capsys.readouterr().out
    assert main(["trian"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'trian'" in err
    assert "train" in err


def test_python_dash_m_runs_the_same_entry_point() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "fer_onnx_factory", "recipe", "--help"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "fer-onnx-factory recipe" in done.stdout


def test_the_runtime_never_imports_the_factory() -> None:
    code = (
        "import sys, fer_onnx, fer_onnx.cli; "
        "print(any(m.startswith('fer_onnx_factory') for m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"


def test_training_and_export_share_one_base_error() -> None:
    from fer_onnx_factory.data.datasets import DataError
    from fer_onnx_factory.errors import PipelineError
    from fer_onnx_factory.export.onnx import ExportError
    from fer_onnx_factory.model.build import WeightsUnavailableError

    for error in (ExportError, DataError, WeightsUnavailableError):
        assert issubclass(error, PipelineError)


def test_export_bundle_with_a_missing_data_file_is_one_clear_line(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.keras").write_bytes(b"")
    cmd = [sys.executable, "-m", "fer_onnx_factory", "bundle", "--run", str(run)]
    done = subprocess.run(
        [*cmd, "--data", str(tmp_path / "no.csv")], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "no.csv" in done.stderr
    assert [line for line in done.stderr.splitlines() if line.startswith("error")] == [
        f"error: {tmp_path / 'no.csv'}: no such file"
    ]


def test_every_command_ends_a_failure_in_one_line(tmp_path: Path) -> None:
    # the one preamble: an error the user can act on is one line and exit status 2
    from fer_onnx_factory.cli import command
    from fer_onnx_factory.errors import PipelineError

    @command()
    def failing(argv: list[str] | None = None) -> int:
        raise PipelineError(f"{tmp_path / 'x'} not found")

    @command(ValueError)
    def also(argv: list[str] | None = None) -> int:
        raise ValueError("bad value")

    @command()
    def bug(argv: list[str] | None = None) -> int:
        raise ValueError("a bug stays a traceback")

    assert failing([]) == 2
    assert also([]) == 2
    with pytest.raises(ValueError, match="a bug"):
        bug([])


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_goes_through_the_one_preamble(name: str) -> None:
    import importlib

    from fer_onnx_factory.cli import command

    module = importlib.import_module(COMMANDS[name][0])
    # every main wrapped by command() is the same closure code, whatever it wraps
    assert module.main.__code__ is command()(lambda argv=None: 0).__code__, name


def test_a_missing_train_extra_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import fer_onnx_factory.cli as cli

    def no_tensorflow(name: str) -> object:
        raise ModuleNotFoundError("No module named 'tensorflow'", name="tensorflow")

    import types

    monkeypatch.setattr(cli, "importlib", types.SimpleNamespace(import_module=no_tensorflow))
    assert cli.main(["train", "--help"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "error: fer-onnx-factory train: the model factory needs the train extra, and "
        "tensorflow is not installed: pip install 'fer-onnx[train]'\n"
    )

    @cli.command()
    def needs_onnx(argv: list[str] | None = None) -> int:
        raise ModuleNotFoundError("No module named 'onnx.helper'", name="onnx.helper")

    @cli.command()
    def other_bug(argv: list[str] | None = None) -> int:
        raise ModuleNotFoundError("No module named 'nosuch'", name="nosuch")

    assert needs_onnx([]) == 2
    assert "onnx is not installed" in capsys.readouterr().err
    with pytest.raises(ModuleNotFoundError, match="nosuch"):
        other_bug([])
