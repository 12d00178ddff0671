"""One run at a time per output: an advisory lock on the job's parts folder."""

from __future__ import annotations

import contextlib
import os
import sys

from fer_onnx.batch.errors import BatchError
from fer_onnx.batch.tables import LOCK_NAME, Layout, journals

if sys.platform != "win32":
    import fcntl

__all__ = ["Lock"]


class Lock:
    """The parts folder, held by one run at a time (an advisory lock, where the OS has one).

    Entering creates the parts folder and locks its lock file; leaving removes both when no
    journal is left in it.

    Args:
        layout: The job's files.

    Raises:
        BatchError: Another run holds the lock (on entering).
    """

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self._fd: int | None = None

    def __enter__(self) -> Lock:
        self.layout.parts.mkdir(exist_ok=True)
        fd = os.open(self.layout.parts / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        if sys.platform != "win32":
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                raise BatchError(
                    f"another run is writing {self.layout.out} (it holds {self.layout.parts}); "
                    "wait for it to finish or choose another output"
                ) from e
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is None:
            return
        if not journals(self.layout):
            with contextlib.suppress(OSError):
                (self.layout.parts / LOCK_NAME).unlink()
                self.layout.parts.rmdir()
        os.close(self._fd)
        self._fd = None
