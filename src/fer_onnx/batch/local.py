"""The local engine: a pool of worker processes on this machine, one recognizer each.

Files are handed out in chunks (each video alone, first; see :func:`~fer_onnx.batch.worker.chunks`);
each finished chunk comes back to the driver, which journals it. A worker that dies takes only
its files with it: they are read again one by one, and a file that kills its worker when read
alone is recorded as an error.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

import cv2

from fer_onnx.batch.errors import BatchError
from fer_onnx.batch.worker import Done, Job, Reader, chunks, done, error_record, quiet_ffmpeg

log = logging.getLogger(__name__)

__all__ = ["cores", "run_local"]

_READER: Reader | None = None


def _exit_with_parent() -> None:
    """End this worker when the driver dies (``kill -9``, a crash): no orphan goes on reading."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(1)  # the driver is gone: nobody wants what this worker would read

    threading.Thread(target=watch, name="fer-onnx-parent-watch", daemon=True).start()


def _worker_init() -> None:
    # Ctrl-C reaches the whole process group: the driver stops the workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _exit_with_parent()
    quiet_ffmpeg()
    cv2.setNumThreads(1)  # one core per worker process; OpenCV's own threads would compete


def _read_chunk(job: Job, paths: list[str]) -> list[Done]:
    global _READER
    if _READER is None or _READER.job != job:
        _READER = Reader(job)
    return _READER.read(paths)


def cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _stop(pool: ProcessPoolExecutor) -> None:
    """Stop a pool now: cancel what waits, end the workers (they may be mid-file), join them.

    The worker processes are taken before ``shutdown``, which forgets them (it sets
    ``_processes`` to ``None`` on Python 3.11); a worker that ignores SIGTERM is killed.
    """
    processes = list((getattr(pool, "_processes", None) or {}).values())
    terminate = getattr(pool, "terminate_workers", None)  # Python 3.14+
    if terminate is not None:
        terminate()
    else:
        pool.shutdown(wait=False, cancel_futures=True)
        for process in processes:
            with contextlib.suppress(Exception):  # already gone
                process.terminate()
    deadline = time.monotonic() + 5.0
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
        if process.is_alive():
            process.kill()
            process.join(1.0)


def run_local(
    paths: Sequence[str],
    job: Job,
    workers: int,
    chunk_size: int,
    emit: Callable[[Sequence[Done]], None],
) -> None:
    """Read ``paths`` on a pool of processes; hand each finished chunk to ``emit``.

    A worker that dies (a crash inside a decoder, the OOM killer) breaks the pool: the files
    that were in flight are read again, one at a time, in a new pool, and a file that kills
    its worker when read alone is recorded as an error. Each pool first runs a no-op: when the
    pool breaks before that returns, the workers cannot start at all and the run stops.

    Raises:
        BatchError: The worker processes cannot start.
    """
    queue = deque(chunks(paths, workers, chunk_size))
    workers = max(1, min(workers, len(queue)))
    context = multiprocessing.get_context("spawn")  # no fork of a process holding ORT threads

    def new_pool() -> tuple[ProcessPoolExecutor, Future[int]]:
        pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init)
        return pool, pool.submit(os.getpid)

    pool, ping = new_pool()
    pending: dict[Future[list[Done]], list[str]] = {}
    suspects: deque[str] = deque()
    alone: set[str] = set()  # files read on their own after a crash
    try:
        while queue or suspects or pending:
            broken = not _hand_out(pool, job, workers, pending, queue, suspects, alone)
            lost = _collect(pending, emit, everything=broken)
            if not lost and not broken:
                continue
            _stop(pool)
            if ping.exception() is not None:  # resolved: a broken pool fails all its futures
                raise BatchError(_WORKERS_DIE)
            _after_crash(lost, alone, suspects, emit)
            pool, ping = new_pool()
    except BaseException:
        _stop(pool)
        raise
    pool.shutdown(wait=True)


def _hand_out(
    pool: ProcessPoolExecutor,
    job: Job,
    workers: int,
    pending: dict[Future[list[Done]], list[str]],
    queue: deque[list[str]],
    suspects: deque[str],
    alone: set[str],
) -> bool:
    """Submit work until ``2 * workers`` chunks are pending, or one suspect alone.

    Returns:
        False when the pool broke before all of it was taken (a worker died since the last
        collection): what was not submitted stays where it was.
    """
    try:
        if suspects:
            if not pending:  # one at a time, so that a crash names its file
                pending[pool.submit(_read_chunk, job, [suspects[0]])] = [suspects[0]]
                alone.add(suspects.popleft())
        else:
            while queue and len(pending) < 2 * workers:
                pending[pool.submit(_read_chunk, job, queue[0])] = queue[0]
                queue.popleft()
    except BrokenProcessPool:
        return False
    return True


def _collect(
    pending: dict[Future[list[Done]], list[str]],
    emit: Callable[[Sequence[Done]], None],
    everything: bool = False,
) -> list[str]:
    """Wait for some chunks (or, with ``everything``, all) and emit them.

    Returns:
        The files of the chunks a broken pool lost.
    """
    lost: list[str] = []
    finished = wait(pending, return_when=ALL_COMPLETED if everything else FIRST_COMPLETED).done
    while finished:
        for future in finished:
            chunk = pending.pop(future)
            try:
                emit(future.result())
            except BrokenProcessPool:
                lost += chunk
        # Once the pool is broken every other future fails too (or has just finished).
        finished = wait(pending).done if lost else set()
    return lost


def _after_crash(
    lost: list[str],
    alone: set[str],
    suspects: deque[str],
    emit: Callable[[Sequence[Done]], None],
) -> None:
    """A file that killed its worker when read alone is an error; the others are read again."""
    culprits = [path for path in lost if path in alone]
    for path in culprits:
        log.warning("%s killed its worker process when read alone", path)
    if culprits:
        emit([done(error_record(path, "WorkerCrash", _CRASH)) for path in culprits])
    suspects.extend(path for path in lost if path not in alone)
    if not lost:
        log.warning("a worker process died between files; none was lost, a new pool goes on")
    elif suspects:
        log.warning(
            "a worker process died; %d files it may have held are read again one by one",
            len(suspects),
        )


_CRASH = (
    "the worker process died while reading this file on its own (a crash in a decoder, or out "
    "of memory); it was read twice"
)
_WORKERS_DIE = (
    "the worker processes die as they start. If you call fer_onnx.batch.run from a script, put "
    "the call under `if __name__ == '__main__':` (the workers are started with 'spawn' and "
    "import your script); otherwise see their error above, or try workers=1"
)
