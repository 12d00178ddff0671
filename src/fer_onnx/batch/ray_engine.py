"""The Ray engine of :func:`fer_onnx.batch.run`: the same job on a Ray cluster, with Ray Data.

The file list becomes a Ray dataset (``ray.data.from_items``; one item per chunk of files, each
video alone, as the local engine hands them out). ``map_batches`` runs a callable class as a
pool of ``concurrency`` actors; each actor builds one recognizer when it starts (the models are
loaded once per actor, not per batch) and turns a chunk of paths into one journal line per
file. The driver streams the lines back with ``iter_batches`` and keeps the journal and the
tables exactly as with the local engine, so resuming works the same way.

Only paths travel to the actors and only results (a few hundred bytes per face) travel back:
every node must see the files at the same paths (a shared or network file system, or the same
copy everywhere) and have fer-onnx installed. With ``device="cuda"`` each actor reserves
``num_gpus`` GPUs (1 by default; fractions share a GPU) and runs both models on CUDA.

Ray is an optional extra: ``pip install "fer-onnx[ray]"``. This module imports it only when a
job runs; nothing else in fer-onnx imports it.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import json
import logging
import socket
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from fer_onnx.batch.errors import BatchError, MissingDependencyError, is_number
from fer_onnx.batch.worker import Done, Job, Reader, chunks, quiet_ffmpeg

log = logging.getLogger(__name__)

__all__ = ["CONNECT_TIMEOUT_S", "RayOptions", "check_ray", "run_ray"]

_INSTALL = "the Ray engine needs Ray Data: pip install 'fer-onnx[ray]'"


@dataclass(frozen=True, slots=True)
class RayOptions:
    """How the Ray engine runs.

    Attributes:
        address: Address of a running Ray cluster (``"auto"``, ``"ray://host:10001"``, ...);
            ``None`` starts a local one, or uses the one this process is already connected to.
        concurrency: Number of actors (each holds one recognizer); ``None`` fills the
            cluster: its CPUs divided by ``num_cpus`` (its GPUs divided by ``num_gpus`` for GPU
            actors).
        num_cpus: CPUs reserved per actor.
        num_gpus: GPUs reserved per actor (fractions share a GPU); ``None`` means 1 when
            ``device="cuda"`` and 0 otherwise.
        batch_size: Photos per actor call (each video goes alone). Larger calls spend less
            on Ray's per-task overhead; smaller ones balance a small job better.
    """

    address: str | None = None
    concurrency: int | None = None
    num_cpus: float = 1.0
    num_gpus: float | None = None
    batch_size: int = 64

    def __post_init__(self) -> None:
        if self.concurrency is not None and (
            not isinstance(self.concurrency, int) or self.concurrency < 1
        ):
            raise BatchError(f"Ray concurrency must be an integer >= 1, got {self.concurrency!r}")
        if not is_number(self.num_cpus, allow_zero=True):
            raise BatchError(f"Ray num_cpus must be a number >= 0, got {self.num_cpus!r}")
        if self.num_gpus is not None and not is_number(self.num_gpus, allow_zero=True):
            raise BatchError(f"Ray num_gpus must be a number >= 0, got {self.num_gpus!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise BatchError(f"Ray batch_size must be an integer >= 1, got {self.batch_size!r}")


def _ray() -> Any:
    try:
        ray = importlib.import_module("ray")
        importlib.import_module("ray.data")
    except ImportError as e:
        raise MissingDependencyError(f"{_INSTALL} ({e})") from e
    return ray


def check_ray() -> None:
    """Fail early, with the command to install it, when Ray Data cannot be imported.

    Raises:
        MissingDependencyError: Ray (with its ``data`` extra) is not installed.
    """
    _ray()


class _RayReader:
    """A Ray actor's state: one recognizer, built once; each call reads a chunk of files."""

    def __init__(self, job: Job) -> None:
        quiet_ffmpeg()  # the actor's process is ours: FFmpeg's raw lines stay off its log
        cv2.setNumThreads(1)  # one core per actor
        self.reader = Reader(job)

    def __call__(self, batch: dict[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
        paths = [path for chunk in batch["chunk"] for path in json.loads(str(chunk))]
        done = self.reader.read(paths)
        return {
            "line": np.array([d.line for d in done], dtype=object),
            "faces": np.array([d.faces for d in done], dtype=np.int64),
            "ok": np.array([d.ok for d in done], dtype=bool),
            "partial": np.array([d.partial for d in done], dtype=bool),
        }


def _actors(ray: Any, options: RayOptions, num_gpus: float, chunks: int) -> int:
    """How many actors to start; refuses a request the cluster cannot meet (it would hang)."""
    resources = ray.cluster_resources()
    cpus = float(resources.get("CPU", 0.0))
    gpus = float(resources.get("GPU", 0.0))
    if num_gpus > 0 and gpus < num_gpus:
        raise BatchError(
            f"GPU actors need {num_gpus:g} GPU each and the Ray cluster has {gpus:g}: add GPU "
            "nodes, or run on CPUs (device='cpu', num_gpus=0)"
        )
    if options.num_cpus > cpus:
        raise BatchError(
            f"each actor needs {options.num_cpus:g} CPUs (--cpus-per-actor) and the Ray cluster "
            f"has {cpus:g} in all, so no actor could ever start: ask for at most {cpus:g}"
        )
    fits = [int(cpus // options.num_cpus)] if options.num_cpus > 0 else []
    if num_gpus > 0:
        fits.append(int(gpus // num_gpus))
    most = min(fits) if fits else max(int(cpus), 1)
    if options.concurrency is not None and options.concurrency > most:
        need_cpus, need_gpus = (
            options.concurrency * options.num_cpus,
            options.concurrency * num_gpus,
        )
        raise BatchError(
            f"{options.concurrency} actors (--actors) need {need_cpus:g} CPUs and {need_gpus:g} "
            f"GPUs; the Ray cluster has {cpus:g} CPUs and {gpus:g} GPUs, room for {most} actors: "
            f"ask for at most {most}"
        )
    return max(1, min(options.concurrency or most, chunks))


CONNECT_TIMEOUT_S = 10.0
"""How long :func:`run_ray` tries to reach a cluster named by its address before it gives up."""


def _check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Fail within ``timeout`` seconds when nothing answers at ``host:port`` or ``ray://...``.

    Ray itself retries an unreachable address for minutes. ``auto``, ``local`` and addresses
    without a port are left to Ray (they name no socket to try).
    """
    target = address.removeprefix("ray://")
    if target in ("auto", "local") or "://" in target:
        return
    host, sep, port_text = target.rpartition(":")
    if not sep or not port_text.isdigit() or not host:
        return
    host = host.strip("[]")  # an IPv6 literal
    port = int(port_text)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as e:
        raise BatchError(
            f"cannot reach a Ray cluster at {address!r} within {timeout:g} s ({e}); start one "
            "with `ray start --head`, check the address and port (the head's GCS port, 6379 by "
            "default, or ray://HOST:10001 for Ray Client), or leave --address out to start a "
            "local one"
        ) from e


_NOISY_LOGGERS = (
    "ray._private.authentication",  # "Token authentication is enabled ...": we started it
    "ray._private.worker",  # "Started a local Ray instance."
    "ray.data",  # "Starting execution ...", "Progress bars disabled ..."
)


@contextlib.contextmanager
def _quiet_ray() -> Iterator[None]:
    """Ray's notices of a normal run down to warnings; ours (the progress bar) say enough.

    Only these loggers, only while the job runs; errors still show. The token notice concerns
    a local cluster this job starts and stops itself.
    """
    saved = []
    for name in _NOISY_LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level))
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in saved:
            logger.setLevel(level)


def _no_restarts(map_batches: Callable[..., Any]) -> dict[str, Any]:
    """``max_restarts=0`` for the actors, where this Ray still takes it.

    With restarts (Ray Data's default: forever, each task retried forever) a file that kills
    its actor is read again on a new actor without end, and the driver logs a core_worker
    error line for every actor of a normal run.
    """
    parameters = inspect.signature(map_batches).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return {"max_restarts": 0}
    return {}


def run_ray(
    paths: Sequence[str],
    job: Job,
    options: RayOptions,
    emit: Callable[[Sequence[Done]], None],
) -> None:
    """Read ``paths`` on Ray actors; hand each finished batch to ``emit`` (in this process).

    Connects to ``options.address`` (giving up after :data:`CONNECT_TIMEOUT_S` seconds when
    nothing answers there), or uses the Ray this process is already connected to, or starts a
    local one (and shuts down only one it started).

    Each actor runs with ``max_restarts=0``: an actor that dies (a decoder crash, out of
    memory) ends the run with a :class:`~fer_onnx.batch.BatchError`, the files finished so
    far kept, instead of Ray reading the same file on a new actor again and again.

    Raises:
        MissingDependencyError: Ray Data is not installed.
        BatchError: The cluster cannot be reached, has too few CPUs or GPUs for the actors
            asked for, or an actor died.
    """
    ray = _ray()
    started = False
    with _quiet_ray():
        if not ray.is_initialized():
            if options.address is not None:
                _check_reachable(options.address)
            ray.init(address=options.address, include_dashboard=False)
            started = True
        elif options.address is not None:
            log.info(
                "Ray is already initialised in this process; address %r unused", options.address
            )
        data = importlib.import_module("ray.data")
        context = data.DataContext.get_current()
        previous = context.enable_progress_bars
        context.enable_progress_bars = False  # the caller shows progress; restored below
        try:
            _run(ray, data, paths, job, options, emit)
        finally:
            context.enable_progress_bars = previous
            if started:
                ray.shutdown()


def _run(
    ray: Any,
    data: Any,
    paths: Sequence[str],
    job: Job,
    options: RayOptions,
    emit: Callable[[Sequence[Done]], None],
) -> None:
    num_gpus = (
        options.num_gpus if options.num_gpus is not None else (1.0 if job.device == "cuda" else 0.0)
    )
    rough = chunks(paths, 1, options.batch_size)
    actors = _actors(ray, options, num_gpus, len(rough))
    work = chunks(paths, actors, options.batch_size)
    log.info("Ray: %d chunks of files on %d actors", len(work), actors)
    items = data.from_items(
        [{"chunk": json.dumps(chunk)} for chunk in work],  # any character in a path
        override_num_blocks=len(work),
    )
    with warnings.catch_warnings():
        # Ray Data names no parameter for max_restarts; passing it among the remote args is
        # deprecated (and ours to decide: see _no_restarts).
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        dataset = items.map_batches(
            _RayReader,
            fn_constructor_kwargs={"job": job},
            batch_size=1,
            batch_format="numpy",
            compute=data.ActorPoolStrategy(size=actors),
            num_cpus=options.num_cpus,
            num_gpus=num_gpus,
            **_no_restarts(items.map_batches),
        )
    try:
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            emit(
                [
                    Done(str(line), int(faces), bool(ok), bool(partial))
                    for line, faces, ok, partial in zip(
                        batch["line"], batch["faces"], batch["ok"], batch["partial"], strict=True
                    )
                ]
            )
    except ray.exceptions.RayError as e:
        raise BatchError(
            f"a Ray actor failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
            "; the files finished so far are kept. Run the same command again to go on; a file "
            "that crashes its reader is recorded as an error by --engine local"
        ) from e
