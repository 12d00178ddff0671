"""Rebuild shipped models by one command from a recipe file.

    fer-onnx-factory recipe recipes/shipped.toml [--only STEP] [--dry-run]

A recipe is a TOML file: ``[vars]`` (strings substituted as ``{name}`` into every command;
``{shared}`` defaults to ``$FER_ONNX_SHARED`` or ``../shared``) and an ordered list of
``[[step]]`` tables::

    [[step]]
    name = "train-accurate"
    run = ["fer-onnx-factory", "train", "--out", "{runs}/accurate", ...]
    done = "{runs}/accurate/metrics.json"     # the file that proves the step finished
    resume_if = "{runs}/accurate/state.json"  # optional: a killed run left this ...
    resume = ["--resume"]                     # ... so these arguments are appended
    budget_minutes = 150                      # the most a step may take on 2 CPU cores

A step whose ``done`` file exists is skipped; any other step runs (resumed when its
``resume_if`` file exists), and must leave its ``done`` file behind or the recipe stops.
Every finished step's wall time is written to ``{runs}/recipe-times.json`` (for the model
card) and a step that overran its budget is reported. Steps pass work on only through
files named in the recipe: committed files, ``../shared``, the package registries, and what
earlier steps of the same recipe wrote.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fer_onnx_factory.cli import command
from fer_onnx_factory.errors import PipelineError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 reads TOML with the tomli backport (train extra)
    import tomli as tomllib

TIMES = "recipe-times.json"


@dataclass(frozen=True)
class Step:
    """One step of a recipe, with its variables substituted."""

    name: str
    run: tuple[str, ...]
    done: Path
    resume_if: Path | None = None
    resume: tuple[str, ...] = ()
    budget_minutes: float = 150.0


@dataclass(frozen=True)
class Recipe:
    """A parsed recipe file."""

    path: Path
    vars: dict[str, str]
    steps: tuple[Step, ...]

    @property
    def times_file(self) -> Path:
        """Where step wall times are recorded (``{runs}/recipe-times.json``)."""
        return Path(self.vars.get("runs", "runs")) / TIMES


def _expand(text: str, variables: dict[str, str], where: str) -> str:
    try:
        return text.format(**variables)
    except (KeyError, IndexError, ValueError) as e:
        raise PipelineError(f"{where}: cannot substitute {text!r}: unknown variable {e}") from e


def _strings(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value) or not value:
        raise PipelineError(f"{where} must be a non-empty list of strings, got {value!r}")
    return list(value)


def _step(raw: Any, variables: dict[str, str], index: int) -> Step:
    where = f"step {index + 1}"
    if not isinstance(raw, dict):
        raise PipelineError(f"{where} is not a table")
    unknown = sorted(set(raw) - {"name", "run", "done", "resume_if", "resume", "budget_minutes"})
    if unknown:
        raise PipelineError(f"{where}: unknown keys {unknown}")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise PipelineError(f"{where} needs a name")
    where = f"step {name!r}"
    if not isinstance(raw.get("done"), str):
        raise PipelineError(f"{where} needs done = 'the file that proves it finished'")

    def sub(text: str) -> str:
        return _expand(text, variables, where)

    budget = raw.get("budget_minutes", 150.0)
    if not isinstance(budget, int | float) or not 0 < budget <= 150:
        raise PipelineError(f"{where}: budget_minutes must be in (0, 150], got {budget!r}")
    resume_if = raw.get("resume_if")
    return Step(
        name=name,
        run=tuple(sub(a) for a in _strings(raw.get("run"), f"{where}: run")),
        done=Path(sub(raw["done"])),
        resume_if=Path(sub(resume_if)) if isinstance(resume_if, str) else None,
        resume=tuple(
            sub(a) for a in (_strings(raw["resume"], f"{where}: resume") if "resume" in raw else [])
        ),
        budget_minutes=float(budget),
    )


def load_recipe(path: Path, overrides: dict[str, str] | None = None) -> Recipe:
    """Read and check a recipe file.

    Raises:
        PipelineError: The file is missing, not TOML, or a step is malformed.
    """
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError as e:
        raise PipelineError(f"recipe {path} not found") from e
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise PipelineError(f"cannot read recipe {path}: {e}") from e
    raw_vars = data.get("vars", {})
    if not isinstance(raw_vars, dict) or not all(isinstance(v, str) for v in raw_vars.values()):
        raise PipelineError(f"{path}: [vars] must map names to strings")
    variables = {
        "shared": os.environ.get("FER_ONNX_SHARED", "../shared"),
        "python": sys.executable,
        "runs": "runs",
    }
    variables.update(raw_vars)
    variables.update(overrides or {})
    for _ in range(3):  # variables may refer to each other
        variables = {k: _expand(v, variables, f"[vars] {k}") for k, v in variables.items()}
    steps = data.get("step")
    if not isinstance(steps, list) or not steps:
        raise PipelineError(f"{path}: no [[step]] tables")
    parsed = tuple(_step(raw, variables, i) for i, raw in enumerate(steps))
    names = [s.name for s in parsed]
    if len(set(names)) != len(names):
        raise PipelineError(f"{path}: step names repeat: {names}")
    return Recipe(path, variables, parsed)


def _read_times(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_times(path: Path, times: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(times, indent=2) + "\n")
    tmp.replace(path)


def run_recipe(recipe: Recipe, only: str | None = None, dry_run: bool = False) -> list[str]:
    """Run every unfinished step in order; returns one status line per step.

    Raises:
        PipelineError: A step exits non-zero, or exits zero without its ``done`` file.
    """
    if only is not None and only not in {s.name for s in recipe.steps}:
        raise PipelineError(f"no step {only!r}; steps: {[s.name for s in recipe.steps]}")
    lines = []
    times = _read_times(recipe.times_file)
    for step in recipe.steps:
        if only is not None and step.name != only:
            continue
        if step.done.exists():
            lines.append(f"{step.name}: done ({step.done} exists), skipped")
            continue
        resuming = step.resume_if is not None and step.resume_if.exists()
        command = [*step.run, *(step.resume if resuming else ())]
        if dry_run:
            lines.append(f"{step.name}: would run {' '.join(command)}")
            continue
        print(f"== {step.name}: {' '.join(command)}", flush=True)
        start = time.time()
        try:
            code = subprocess.run(command, check=False).returncode
        except OSError as e:
            raise PipelineError(f"step {step.name!r} cannot start {command[0]!r}: {e}") from e
        seconds = time.time() - start
        if code != 0:
            raise PipelineError(f"step {step.name!r} failed (exit {code}) after {seconds:.0f}s")
        if not step.done.exists():
            raise PipelineError(f"step {step.name!r} exited 0 but did not write {step.done}")
        entry = times.get(step.name, {"seconds": 0.0, "runs": 0})
        entry = {"seconds": round(entry["seconds"] + seconds, 1), "runs": entry["runs"] + 1}
        entry["budget_minutes"] = step.budget_minutes
        times[step.name] = entry
        _write_times(recipe.times_file, times)
        over = entry["seconds"] > step.budget_minutes * 60
        lines.append(
            f"{step.name}: finished in {seconds / 60:.1f} min"
            + (f" (OVER its {step.budget_minutes:g}-minute budget)" if over else "")
        )
    return lines


@command()
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="fer-onnx-factory recipe",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("recipe", type=Path, help="recipe file, e.g. recipes/shipped.toml")
    p.add_argument("--only", default=None, help="run just this step (if not done)")
    p.add_argument("--dry-run", action="store_true", help="print what would run")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a recipe variable, e.g. --set runs=/tmp/runs",
    )
    args = p.parse_args(argv)
    try:
        overrides = dict(item.split("=", 1) for item in args.set)
    except ValueError:
        p.error("--set takes NAME=VALUE")
    for line in run_recipe(load_recipe(args.recipe, overrides), args.only, args.dry_run):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
