"""Validation of numeric and boolean options: one typed error that names the option."""

from __future__ import annotations

import math

import numpy as np

from fer_onnx.errors import InvalidOptionError, InvalidTypeError

__all__ = ["check_bool", "check_int", "check_number", "is_real_number"]


def _shown(value: object) -> str:
    """A short ``repr`` for messages (never raises: ints past the digit limit, broken reprs)."""
    try:
        text = repr(value)
    except Exception:  # e.g. ValueError: an int of more than sys.get_int_max_str_digits()
        return f"<{type(value).__name__}>"
    return text if len(text) <= 60 else text[:57] + "..."


def is_real_number(value: object) -> bool:
    """Whether ``value`` is a Python or numpy int or float (never a bool), finite or not."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )


def check_bool(name: str, value: object) -> bool:
    """Return ``value`` if it is ``True`` or ``False`` (a numpy bool too, as a ``bool``).

    Truthy stand-ins are refused, not converted: ``"no"`` and ``"False"`` are true strings, and
    ``0``, ``1`` or ``None`` usually mean a mistaken argument.

    Raises:
        InvalidTypeError: It is not a bool.
    """
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise InvalidTypeError(
        f"{name} must be True or False, got {_shown(value)} ({type(value).__name__}); "
        f"pass {name}=True or {name}=False"
    )


def check_int(name: str, value: object, low: int, high: int | None = None) -> int:
    """Return ``value`` if it is an ``int`` (not ``bool``) within ``low..high``.

    Raises:
        InvalidOptionError: It is not.
    """
    if (
        not isinstance(value, int)
        or isinstance(value, bool)
        or value < low
        or (high is not None and value > high)
    ):
        where = f">= {low}" if high is None else f"within {low}..{high}"
        raise InvalidOptionError(f"{name} must be an integer {where}, got {_shown(value)}")
    return value


def check_number(
    name: str,
    value: object,
    low: float,
    high: float,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Return ``value`` as a float if it is a finite number within the interval.

    Raises:
        InvalidOptionError: It is not (NaN and infinities never pass).
    """
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    try:
        number = float(value) if ok else math.nan  # type: ignore[arg-type]
    except OverflowError:  # an int beyond float range, e.g. 10**400
        number = math.nan
    if ok and math.isfinite(number):
        ok = (number > low if low_open else number >= low) and (
            number < high if high_open else number <= high
        )
    else:
        ok = False
    if not ok:
        left, right = "(" if low_open else "[", ")" if high_open else "]"
        raise InvalidOptionError(
            f"{name} must be a finite number in {left}{low:g}, {high:g}{right}, got {_shown(value)}"
        )
    return number
