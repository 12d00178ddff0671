"""Printing for the command line: standard output that may go away (``| head``), plurals."""

from __future__ import annotations

import contextlib
import os
import sys

from fer_onnx._text import plural

__all__ = ["emit", "plural", "stdout_gone"]


def stdout_gone() -> None:
    """The reader of standard output went away (``| head``): send the rest nowhere."""
    with contextlib.suppress(OSError, ValueError):  # no real stdout (captured)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def emit(text: str) -> None:
    """Print ``text`` on standard output; once its reader has gone, go on without it.

    Args:
        text: One line (or several) to print.
    """
    try:
        print(text)
    except BrokenPipeError:
        stdout_gone()
