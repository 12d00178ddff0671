"""fer-onnx-factory: one entry point whose sub-commands are the factory's steps, by stage."""

from __future__ import annotations

import subprocess
import sys

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
