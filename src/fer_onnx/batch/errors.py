"""The errors of batch jobs, and the check of their numeric options."""

from __future__ import annotations

import math

from fer_onnx.errors import FerOnnxError, InvalidOptionError, InvalidTypeError

__all__ = ["BatchError", "BatchTypeError", "MissingDependencyError", "is_number"]


class BatchError(InvalidOptionError):
    """A batch job cannot start: no inputs, an unusable output path, a bad option.

    The message says what was wrong and what to do instead.
    """


class BatchTypeError(BatchError, InvalidTypeError):
    """An argument of :func:`~fer_onnx.batch.run` is of the wrong type (``out=None``).

    A :class:`BatchError` like every other bad option of a batch job, and an
    :class:`~fer_onnx.InvalidTypeError` (so a ``TypeError``) like every wrong-type argument of
    the library.
    """


class MissingDependencyError(FerOnnxError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


def is_number(value: object, *, allow_zero: bool = False) -> bool:
    """Whether ``value`` is a finite ``int`` or ``float`` (not a bool) above zero (or at it)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    return value >= 0 if allow_zero else value > 0
