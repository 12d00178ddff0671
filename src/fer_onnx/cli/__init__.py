"""The ``fer-onnx`` command line, one module per sub-command.

* :mod:`fer_onnx.cli.app`: the top-level parser, dispatch, exit codes and signal handling.
* :mod:`fer_onnx.cli.image`, :mod:`~fer_onnx.cli.video`, :mod:`~fer_onnx.cli.webcam`,
  :mod:`~fer_onnx.cli.batch`, :mod:`~fer_onnx.cli.web`, :mod:`~fer_onnx.cli.model`: each
  sub-command's parser (``add_*_parser``) and the function it runs.
* :mod:`fer_onnx.cli.options`: the model and detector options several sub-commands share.

:func:`main` is the console script ``fer-onnx``; ``python -m fer_onnx.cli`` runs it too.
Importing this package imports no sub-command: ``python -m fer_onnx.cli.batch`` runs the
``batch`` sub-command on its own.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``fer-onnx`` command line: :func:`fer_onnx.cli.app.main`, imported on call."""
    from fer_onnx.cli.app import main as run_app

    return run_app(argv)
