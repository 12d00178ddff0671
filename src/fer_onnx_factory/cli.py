"""``fer-onnx-factory``: the model factory's one command line, a sub-command per step.

Each sub-command is the ``main(argv)`` of one module, listed here by stage, so
``fer-onnx-factory train --help`` is the help of :mod:`fer_onnx_factory.train.run` and
``python -m fer_onnx_factory train ...`` runs the same. Modules are imported only when their
command runs: TensorFlow loads for the steps that need it, not for ``--help`` or ``recipe``.
"""

from __future__ import annotations

import functools
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Protocol

LOG_FORMAT = "%(asctime)s %(name)s %(message)s"

TRAIN_EXTRA = frozenset({"tensorflow", "keras", "tf2onnx", "onnx", "pandas", "matplotlib", "tomli"})
"""Top-level modules the ``train`` extra installs (pyproject.toml)."""


def missing_extra(error: ModuleNotFoundError) -> str | None:
    """One line for a module of the ``train`` extra that is not installed, else ``None``."""
    root = (error.name or "").split(".")[0]
    if root not in TRAIN_EXTRA:
        return None
    return (
        f"the model factory needs the train extra, and {root} is not installed: "
        "pip install 'fer-onnx[train]'"
    )


class Main(Protocol):
    """A sub-command's ``main``: its arguments (``None``: ``sys.argv[1:]``) to an exit status."""

    def __call__(self, argv: list[str] | None = None) -> int: ...


def command(*also: type[Exception], log_format: str = LOG_FORMAT) -> Callable[[Main], Main]:
    """The one preamble of every sub-command's ``main(argv)``.

    Logging goes to stderr at INFO level (``log_format``: :data:`LOG_FORMAT`, or the bare
    message for commands whose log lines are their report), and a failure the user can act
    on — :class:`~fer_onnx_factory.errors.PipelineError`, the runtime's
    :class:`~fer_onnx.errors.FerOnnxError`, a missing file, a module of the ``train`` extra that
    is not installed, or one of ``also`` — ends the command with one line, ``error: ...``, on
    stderr and exit status 2 instead of a traceback.
    """
    from fer_onnx.errors import FerOnnxError
    from fer_onnx_factory.errors import PipelineError

    expected: tuple[type[Exception], ...] = (
        PipelineError,
        FerOnnxError,
        FileNotFoundError,
        *also,
    )

    def wrap(main: Main) -> Main:
        @functools.wraps(main)
        def run(argv: list[str] | None = None) -> int:
            logging.basicConfig(level=logging.INFO, format=log_format)
            try:
                return main(argv)
            except expected as e:
                print(f"error: {e}", file=sys.stderr)
                return 2
            except ModuleNotFoundError as e:
                line = missing_extra(e)
                if line is None:
                    raise
                print(f"error: {line}", file=sys.stderr)
                return 2

        return run

    return wrap


# command -> (module, one line); the order is the stage order of the package
STAGES: dict[str, dict[str, tuple[str, str]]] = {
    "data and framing": {
        "align": ("fer_onnx_factory.data.align", "every face aligned as the runtime frames it"),
    },
    "model": {
        "pretrained": (
            "fer_onnx_factory.model.pretrained",
            "fetch a registry's pretrained start, convert it and check it",
        ),
    },
    "train": {
        "train": ("fer_onnx_factory.train.run", "train (or resume) a run folder"),
    },
    "evaluate": {
        "evaluate": ("fer_onnx_factory.evaluate.evaluate", "a model's report on a dataset"),
        "suite": ("fer_onnx_factory.evaluate.suite", "ONNX models on the validation suite"),
        "compare": (
            "fer_onnx_factory.evaluate.compare",
            "a candidate against the shipped model, in every framing",
        ),
        "ledger": ("fer_onnx_factory.ledger", "the committed ledger of training runs"),
    },
    "tune": {
        "average": (
            "fer_onnx_factory.tune.average",
            "average a run's last epochs, re-estimate BatchNorm",
        ),
        "calibrate": ("fer_onnx_factory.tune.calibrate", "class biases chosen on PublicTest"),
        "prior": ("fer_onnx_factory.tune.prior", "a class-prior correction chosen on the suite"),
        "rebuild": (
            "fer_onnx_factory.tune.rebuild",
            "an exported fp32 network rebuilt as a trainable Keras model",
        ),
    },
    "export": {
        "export": ("fer_onnx_factory.export.onnx", "a run's model to ONNX with its metadata"),
        "quantize": ("fer_onnx_factory.export.quantize", "static int8 quantization"),
        "parity": ("fer_onnx_factory.export.parity", "Keras against ONNX on the same faces"),
        "bundle": ("fer_onnx_factory.export.bundle", "fp32 + int8 files, checked, with a card"),
        "card": ("fer_onnx_factory.export.card", "a run's model card"),
        "template": ("fer_onnx_factory.export.template", "measure or stamp the crop template"),
        "yunet": ("fer_onnx_factory.export.yunet", "the bundled YuNet detector, made dynamic"),
    },
    "recipe": {
        "recipe": ("fer_onnx_factory.recipe", "run a recipe file's steps, resumably"),
    },
}
COMMANDS: dict[str, tuple[str, str]] = {
    name: entry for stage in STAGES.values() for name, entry in stage.items()
}


def usage() -> str:
    """The list of sub-commands, by stage."""
    lines = [
        "usage: fer-onnx-factory COMMAND [options]   (fer-onnx-factory COMMAND --help)",
        "",
        "The fer-onnx model factory (needs the train extra: pip install 'fer-onnx[train]').",
    ]
    for stage, commands in STAGES.items():
        lines += ["", f"{stage}:"]
        lines += [f"  {name:<11} {about}" for name, (_, about) in commands.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one sub-command; returns its exit status (2 for an unknown command)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if args else sys.stderr)
        return 0 if args else 2
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(
            f"error: unknown command {name!r}; choose one of: {', '.join(COMMANDS)}",
            file=sys.stderr,
        )
        return 2
    try:
        module = importlib.import_module(COMMANDS[name][0])
    except ModuleNotFoundError as e:
        line = missing_extra(e)
        if line is None:
            raise
        print(f"error: fer-onnx-factory {name}: {line}", file=sys.stderr)
        return 2
    return int(module.main(rest))
