"""Wording shared by the library's messages and the command line."""

from __future__ import annotations

__all__ = ["plural"]


def plural(count: int, noun: str) -> str:
    """``"1 face"``, ``"2 faces"``: ``count`` and ``noun``, with an ``s`` unless one.

    Args:
        count: How many.
        noun: The singular noun.

    Returns:
        The phrase.
    """
    return f"{count} {noun}{'' if count == 1 else 's'}"
