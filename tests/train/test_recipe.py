"""The recipe runner: steps skipped when done, resumed after a kill, timed, refused when bad."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

from fer_onnx_factory.errors import PipelineError
from fer_onnx_factory.recipe import load_recipe, main, run_recipe


def _write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "r.toml"
    path.write_text(f'[vars]\nruns = "{tmp_path.as_posix()}/runs"\n{body}')
    return path


def _touch(path: str) -> list[str]:
    code = (
        "import pathlib, sys; p = pathlib.Path(sys.argv[1]); "
        "p.parent.mkdir(parents=True, exist_ok=True); "
        "p.write_text(' '.join(sys.argv[2:]))"
    )
    return [sys.executable, "-c", code, path]


def _step(name: str, run: list[str], done: str, extra: str = "") -> str:
    return f"[[step]]\nname = {name!r}\nrun = {json.dumps(run)}\ndone = {done!r}\n{extra}\n"


def test_steps_run_in_order_then_are_skipped(tmp_path: Path) -> None:
    body = _step("a", _touch("{runs}/a.txt"), "{runs}/a.txt") + _step(
        "b", _touch("{runs}/b.txt"), "{runs}/b.txt"
    )
    recipe = load_recipe(_write(tmp_path, body))
    first = run_recipe(recipe)
    assert [line.split(":")[0] for line in first] == ["a", "b"]
    assert all("finished" in line for line in first)
    times = json.loads((tmp_path / "runs" / "recipe-times.json").read_text())
    assert set(times) == {"a", "b"}
    assert times["a"]["runs"] == 1
    again = run_recipe(recipe)
    assert all("skipped" in line for line in again)


def test_a_killed_step_resumes_with_its_resume_arguments(tmp_path: Path) -> None:
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "state.json").write_text("{}")
    extra = 'resume_if = "{runs}/state.json"\nresume = ["--resume"]'
    body = _step("train", _touch("{runs}/done.txt"), "{runs}/done.txt", extra)
    run_recipe(load_recipe(_write(tmp_path, body)))
    assert (tmp_path / "runs" / "done.txt").read_text() == "--resume"


def test_a_failing_step_stops_the_recipe(tmp_path: Path) -> None:
    body = _step("bad", [sys.executable, "-c", "raise SystemExit(3)"], "{runs}/x") + _step(
        "later", _touch("{runs}/later.txt"), "{runs}/later.txt"
    )
    with pytest.raises(PipelineError, match="'bad' failed"):
        run_recipe(load_recipe(_write(tmp_path, body)))
    assert not (tmp_path / "runs" / "later.txt").exists()


def test_a_step_that_leaves_no_done_file_is_an_error(tmp_path: Path) -> None:
    body = _step("quiet", [sys.executable, "-c", "pass"], "{runs}/never.txt")
    with pytest.raises(PipelineError, match="did not write"):
        run_recipe(load_recipe(_write(tmp_path, body)))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("", "no \\[\\[step\\]\\]"),
        (_step("a", ["x"], "{nowhere}/a"), "unknown variable"),
        (_step("a", [], "a"), "non-empty list"),
        (_step("a", ["x"], "a", "budget_minutes = 400"), "budget_minutes"),
        (_step("a", ["x"], "a", "typo = 1"), "unknown keys"),
        (_step("a", ["x"], "a", 'resume = "--resume"'), "resume must be"),
        (_step("a", ["x"], "a") + _step("a", ["y"], "b"), "repeat"),
    ],
)
def test_malformed_recipes_are_refused(tmp_path: Path, body: str, message: str) -> None:
    with pytest.raises(PipelineError, match=message):
        load_recipe(_write(tmp_path, body))


def test_main_reports_errors_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(tmp_path / "missing.toml")]) == 2
    assert "not found" in capsys.readouterr().err


def test_the_shipped_recipe_parses_and_starts_with_the_fetch(tmp_path: Path) -> None:
    recipe = load_recipe(ROOT / "recipes" / "shipped.toml", {"runs": str(tmp_path)})
    assert recipe.steps[0].name == "fetch-faceres"
    assert all(step.budget_minutes <= 150 for step in recipe.steps)
    lines = run_recipe(recipe, dry_run=True)
    assert len(lines) == len(recipe.steps)
    assert "-m fer_onnx_factory pretrained faceres" in lines[0]


def test_the_shipped_recipe_reads_only_its_runs_shared_and_committed_files(
    tmp_path: Path,
) -> None:
    """The chain passes through committed files only: never an earlier session's runs/."""
    runs, shared = tmp_path / "runs", tmp_path / "shared"
    recipe = load_recipe(
        ROOT / "recipes" / "shipped.toml", {"runs": str(runs), "shared": str(shared)}
    )
    read = [
        (step.name, arg)
        for step in recipe.steps
        for arg in step.run[1:]
        if "/" in arg and not arg.startswith(("-", str(runs), str(shared)))
    ]
    assert read, "the recipe names no committed file (the fast step's teacher was expected)"
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: which files are committed is unknown")
    for name, arg in read:
        tracked = subprocess.run(
            ["git", "ls-files", "--error-unmatch", arg], cwd=ROOT, capture_output=True
        )
        assert tracked.returncode == 0, f"step {name} reads {arg}: not committed"


def test_each_step_of_the_shipped_recipe_reads_what_an_earlier_step_wrote(
    tmp_path: Path,
) -> None:
    """Every runs/ path a step reads (--init, --run, --data, --extra ...) lies in what an
    earlier step wrote (its --out, --dest, --record or done file): no step depends on a
    folder that only an older recipe, or a person, made."""
    runs = tmp_path / "runs"
    recipe = load_recipe(ROOT / "recipes" / "shipped.toml", {"runs": str(runs)})
    writes = {"--out", "--dest", "--card", "--json", "--record"}
    written: list[Path] = []
    for step in recipe.steps:
        pairs = list(zip(("", *step.run), step.run, strict=False))
        for flag, arg in pairs:
            if arg.startswith(str(runs)) and flag not in writes:
                path = Path(arg)
                assert any(path == w or w in path.parents for w in written), (
                    f"step {step.name} reads {arg}, which no earlier step writes"
                )
        written += [Path(arg) for flag, arg in pairs if flag in writes]
        written.append(step.done)


def test_a_step_whose_program_is_missing_is_one_error(tmp_path: Path) -> None:
    body = _step("ghost", [str(tmp_path / "no-such-program")], "{runs}/x")
    with pytest.raises(PipelineError, match="cannot start"):
        run_recipe(load_recipe(_write(tmp_path, body)))


def test_the_committed_soft_targets_are_those_the_shipped_fast_learnt_from() -> None:
    """Each soft-target file fast's metadata names (its teacher, and the first teacher of the
    model it was fine-tuned from) was written by the teacher the metadata names, and the
    recipe reads both."""
    import numpy as np
    import onnx

    from fer_onnx_factory.data.datasets import FER2013_LABELS
    from fer_onnx_factory.train.distill import teacher_labels

    fast = onnx.load(str(ROOT / "src" / "fer_onnx" / "models" / "int8.onnx"))
    meta = {p.key: p.value for p in fast.metadata_props}
    steps = load_recipe(ROOT / "recipes" / "shipped.toml").steps
    taught_with = {
        arg
        for step in steps
        for flag, arg in zip(step.run, step.run[1:], strict=False)
        if flag == "--teacher"
    }
    for key in ("teacher", "first_teacher"):
        taught_by = json.loads(meta[key])
        soft = ROOT / taught_by["soft_targets"]
        assert taught_by["soft_targets"] in taught_with, key  # a train step reads it
        with np.load(soft, allow_pickle=False) as saved:
            (writer,) = json.loads(str(saved["teachers"]))
            probs = saved["probabilities"]
            rows = saved["rows"]
        assert writer["sha256"] == taught_by["sha256"], key
        assert teacher_labels(soft) == FER2013_LABELS
        # both framings of every FER2013 Training face, one distribution each
        assert probs.shape == (len(rows), 7) == (57418, 7)
        assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    # the fine-tune's teacher is the accurate model shipped beside it
    shipped = ROOT / "src" / "fer_onnx" / "models" / "accurate.onnx"
    assert json.loads(meta["teacher"])["sha256"] == hashlib.sha256(shipped.read_bytes()).hexdigest()
