"""SIGTERM and SIGHUP as an exception, so that every ``with`` block of a command cleans up."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["Terminated", "terminating_signals"]


class Terminated(BaseException):
    """Raised in the main thread by SIGTERM / SIGHUP so that every ``with`` block cleans up.

    Attributes:
        signum: The signal's number; the command exits with ``128 + signum``.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _on_signal(signum: int, frame: Any) -> None:
    raise Terminated(signum)


@contextlib.contextmanager
def terminating_signals() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise :class:`Terminated` (main thread only).

    The previous handlers are restored on leaving. In another thread, where Python cannot set
    signal handlers, the block runs with the handlers as they are.

    Yields:
        Nothing.
    """
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for name in ("SIGTERM", "SIGHUP"):
            signum = getattr(signal, name, None)
            if signum is not None:
                previous[signum] = signal.signal(signum, _on_signal)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
