"""Printing for the command line: standard output that may go away (``| head``), plurals."""

from __future__ import annotations

import contextlib
import os
import sys

__all__ = ["emit", "plural", "stdout_gone"]


def plural(count: int, noun: str) -> str:
    """``"1 face"``, ``"2 faces"``: ``count`` and ``noun``, with an ``s`` unless one.

    Args:
        count: How many.
        noun: The singular noun.

    Returns:
        The phrase.
    """
    return f"{count} {noun}{'' if count == 1 else 's'}"


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
