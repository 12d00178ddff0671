"""Output files that never destroy what is there and never claim success for a broken file.

:class:`AtomicOutput` is the one way fer-onnx writes a file the user named:

* the content goes to a temporary file first; only :meth:`AtomicOutput.commit` puts it in place,
  and leaving the ``with`` block without committing (an error, Ctrl-C, SIGTERM) deletes it;
* a regular file (or a symbolic link to one: the link is followed, and kept) is replaced
  atomically with ``os.replace``;
* a special file (``/dev/null``, ``/dev/stdout``, a pipe, a terminal) is never replaced: the
  finished content is copied into it; ``-`` means standard output;
* an output that is one of the inputs, or a directory, is refused with :class:`OutputError`;
  so are two outputs that are one file, and two that both write to standard output;
* the file gets the permissions the umask gives a new file, like any other program's output.

:func:`commit_all` puts several finished outputs in place together: all of them, or none of the
files (what was written into standard output or a device cannot be taken back, so those are
written first, before any file is replaced).

A temporary file exists from the moment :class:`AtomicOutput` is constructed; the ``with``
block's exit removes it (one never committed nor discarded is removed when it is
garbage-collected, or when the interpreter exits normally; not after ``os._exit``, SIGKILL
or a signal with no Python handler). A signal that arrives between
construction and ``with`` (a Python handler that raises, like Ctrl-C's ``KeyboardInterrupt``)
could leave it behind until then, so callers that create outputs and enter them separately do
both inside :func:`deferred_signals`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import stat
import sys
import tempfile
import threading
import uuid
import weakref
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Literal

from fer_onnx.errors import OutputError

log = logging.getLogger(__name__)

__all__ = ["STDOUT", "AtomicOutput", "check_outputs", "commit_all", "deferred_signals"]

STDOUT = "-"
"""The output name that means standard output."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _is_stdout(path: Path) -> bool:
    """Whether ``path`` (e.g. ``/dev/stdout``, ``/dev/fd/1``) is this process's standard output."""
    try:
        here, there = os.fstat(sys.stdout.fileno()), os.stat(path)
    except (OSError, ValueError, AttributeError):  # no real stdout (pytest's capture), no file
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def check_outputs(outputs: Iterable[str | os.PathLike[str] | None], inputs: Iterable[Path]) -> None:
    """Refuse outputs that are an input, that name the same file twice, or share standard output.

    Raises:
        OutputError: Writing would overwrite an input, two outputs are one file, or two outputs
            would both be written to standard output (``-``, ``/dev/stdout``) one after the other.
    """
    given = [os.fspath(o) for o in outputs if o is not None]
    named = [Path(o) for o in given if o != STDOUT]
    to_stdout = [o for o in given if o == STDOUT or _is_stdout(Path(o))]
    if len(to_stdout) > 1:
        raise OutputError(
            f"{len(to_stdout)} outputs ({', '.join(map(repr, to_stdout))}) would all go to "
            "standard output, one after the other, mixed into one stream; send at most one "
            "there and give the others file names"
        )
    sources = list(inputs)
    for out in named:
        for source in sources:
            if _same_file(out, source) or out.resolve() == source.resolve():
                raise OutputError(
                    f"refusing to write {out}: it is the input {source}; choose another output path"
                )
    resolved = [o.resolve() for o in named]
    for i, path in enumerate(resolved):
        if path in resolved[:i]:
            raise OutputError(f"{named[i]} is named as two different outputs; give each its own")


_DEFERRED = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGHUP", "SIGINT") if hasattr(signal, name)
)
"""The signals :func:`deferred_signals` holds back, in the order they are delivered after it."""


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold SIGTERM, SIGHUP and SIGINT back for the block; they are raised again when it ends.

    Create temporary outputs and register their cleanup (``ExitStack.enter_context``) inside
    this block: a signal whose Python handler raises (Ctrl-C's ``KeyboardInterrupt``, the
    ``fer-onnx`` command's handlers for SIGTERM and SIGHUP) then interrupts the program only
    once every output's ``with`` exit is in place, so nothing is left behind. The handlers are
    swapped for one that only takes note (blocking the signals would not do: the kernel hands a
    process's signal to any thread that does not block it, onnxruntime's included).

    Only Python handlers are swapped: an ignored signal stays ignored, and one with its default
    action still ends the process at once, as it would without the block. After the block each
    noted signal is raised once, SIGTERM and SIGHUP before SIGINT; the first whose handler
    raises ends the delivery (and replaces an exception the block raised). Python runs signal
    handlers in the main thread only, so elsewhere the block runs unprotected.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: set[int] = set()

    def note(signum: int, frame: object) -> None:
        pending.add(signum)

    try:
        with contextlib.ExitStack() as restore:  # unwinds every swap, even if one raises
            for signum in _DEFERRED:
                if callable(signal.getsignal(signum)):
                    restore.callback(signal.signal, signum, signal.signal(signum, note))
            yield
    finally:
        for signum in _DEFERRED:
            if signum in pending:
                signal.raise_signal(signum)


class AtomicOutput:
    """A file written in full or not at all (see the module docstring).

    Args:
        target: The path the user named, or ``"-"`` for standard output.
        suffix: Extension for the temporary file (video writers choose their container by it);
            defaults to the target's.

    Use ``with AtomicOutput(path) as out:``, write to ``out.tmp``, then call ``out.commit()``.

    Raises:
        OutputError: The target is a directory, its folder does not exist or is not writable.
    """

    def __init__(self, target: str | os.PathLike[str], suffix: str | None = None) -> None:
        name = os.fspath(target)
        if name == "":
            raise OutputError("an output path is empty; name a file, or '-' for standard output")
        self.target = name
        self.stdout = name == STDOUT
        self.special = False
        self.real: Path | None = None
        folder = Path(tempfile.gettempdir())
        if not self.stdout:
            path = Path(name).expanduser()
            try:
                mode: int | None = os.stat(path).st_mode  # follows symbolic links
            except OSError:
                mode = None
            if mode is not None and stat.S_ISDIR(mode):
                raise OutputError(f"cannot write {name}: it is a directory; name a file in it")
            if mode is not None and not stat.S_ISREG(mode):
                # Device, pipe, socket, /dev/stdout: write into it, never replace it.
                self.special = True
                real = path
            else:
                real = Path(os.path.realpath(path))  # through symbolic links, to what they name
                folder = real.parent
                if not folder.is_dir():
                    raise OutputError(f"cannot write {name}: folder {folder} does not exist")
                if not os.access(folder, os.W_OK):
                    raise OutputError(f"cannot write {name}: folder {folder} is not writable")
            self.real = real
        ext = suffix if suffix is not None else Path(name).suffix
        try:
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".fer-onnx-", suffix=f".partial{ext}")
        except OSError as e:
            raise OutputError(f"cannot create a temporary file for {name} in {folder}: {e}") from e
        os.close(fd)
        self.tmp = Path(tmp)
        self.committed = False
        # An output dropped without commit or discard (no ``with``, never finished) is deleted
        # when it is garbage-collected, or when the interpreter exits normally.
        self._cleanup = weakref.finalize(self, _remove_partial, self.tmp, os.getpid())

    def __enter__(self) -> AtomicOutput:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        self.discard()
        return False

    def discard(self) -> None:
        """Delete the temporary file (nothing is written to the target)."""
        self._cleanup.detach()
        self.tmp.unlink(missing_ok=True)

    def commit(self) -> None:
        """Put the finished content in place.

        Raises:
            OutputError: It cannot be written (disk full, permission, device error); the
                target is left as it was (or, for a special file, as far as it got).
        """
        if self.committed:
            return
        try:
            if self.stdout:
                self._copy_into(sys.stdout.buffer)
            elif self.special:
                assert self.real is not None
                with open(self.real, "wb") as stream:
                    self._copy_into(stream)
            else:
                assert self.real is not None
                os.chmod(self.tmp, 0o666 & ~_umask())
                os.replace(self.tmp, self.real)
        except BrokenPipeError:
            # The reader went away (`... | head`): what it wanted, it got.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        except OSError as e:
            raise OutputError(f"cannot write {self.target}: {e.strerror or e}") from e
        finally:
            self.discard()
        self.committed = True

    def _keep_previous(self) -> Path | None:
        """Keep the target's current content aside (a hard link, else a copy) for a rollback.

        Returns:
            The kept copy beside the target, or ``None`` when there is no target yet.

        Raises:
            OutputError: It cannot be kept (e.g. no room for a copy).
        """
        if self.real is None or not self.real.exists():
            return None
        backup = self.real.parent / f".fer-onnx-{uuid.uuid4().hex}.previous"
        try:
            try:
                os.link(self.real, backup)
            except OSError:  # a file system without hard links
                shutil.copy2(self.real, backup)
        except OSError as e:
            backup.unlink(missing_ok=True)
            raise OutputError(
                f"cannot keep the previous {self.target} aside while the outputs are put in "
                f"place: {e.strerror or e}; nothing was written"
            ) from e
        return backup

    def _roll_back(self, backup: Path | None) -> None:
        """Undo :meth:`commit` of a regular file: the previous content back, or no file."""
        assert self.real is not None
        if backup is not None:
            os.replace(backup, self.real)
        else:
            self.real.unlink(missing_ok=True)
        self.committed = False

    def _copy_into(self, stream: BinaryIO) -> None:
        with open(self.tmp, "rb") as source:
            shutil.copyfileobj(source, stream)
        stream.flush()

    @property
    def is_regular(self) -> bool:
        """Whether the target is (or will be) a regular file."""
        return not (self.stdout or self.special)

    def __repr__(self) -> str:
        return f"AtomicOutput({self.target!r}, special={self.special or self.stdout})"


def _remove_partial(tmp: Path, pid: int) -> None:
    """Delete an abandoned temporary file; only in the process that made it (not a fork)."""
    if os.getpid() == pid:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def commit_all(outputs: Sequence[AtomicOutput]) -> None:
    """Put every finished output in place: all the files, or none of them.

    Outputs that are written into (standard output, a device, a pipe) go first, since what they
    were sent cannot be taken back: if one fails, no file has been touched. Then each regular
    file replaces its target, the target's previous content kept aside (a hard link) until all
    are in place; if one fails, or a signal arrives, those already replaced get their previous
    content back (or are removed, if they are new). Signals are held back meanwhile.

    Args:
        outputs: Finished outputs (their temporary files complete); committed ones are skipped.

    Raises:
        OutputError: One cannot be written; the message names it, and says where a previous
            file's content was kept if even the rollback failed.
    """
    pending = [o for o in outputs if not o.committed]
    with deferred_signals():
        for output in pending:
            if not output.is_regular:
                output.commit()
        _replace_all([o for o in pending if o.is_regular])


def _replace_all(outputs: Sequence[AtomicOutput]) -> None:
    placed: list[tuple[AtomicOutput, Path | None]] = []
    try:
        for output in outputs:
            placed.append((output, output._keep_previous()))
            output.commit()
    except BaseException as e:
        stranded = _roll_back_all(placed)
        if stranded and isinstance(e, OutputError):
            raise OutputError(f"{e}; could not undo {'; '.join(stranded)}") from e
        raise
    for _, backup in placed:
        if backup is not None:
            backup.unlink(missing_ok=True)


def _roll_back_all(placed: Sequence[tuple[AtomicOutput, Path | None]]) -> list[str]:
    """Undo the committed outputs, newest first; what could not be undone, in words."""
    stranded = []
    for output, backup in reversed(placed):
        try:
            if output.committed:
                output._roll_back(backup)
            elif backup is not None:
                backup.unlink(missing_ok=True)
        except OSError as e:
            kept = f"its previous content is in {backup}" if backup else "the new file is there"
            log.error("cannot undo %s (%s): %s", output.target, kept, e)
            stranded.append(f"{output.target} ({kept})")
    return stranded
