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

import importlib
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from fer_onnx.batch import (
    BatchError,
    MissingDependencyError,
    RayOptions,
    _chunks,
    _Done,
    _Job,
    _Reader,
)

log = logging.getLogger(__name__)

__all__ = ["check_ray", "run_ray"]

_INSTALL = "the Ray engine needs Ray Data: pip install 'fer-onnx[ray]'"


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

    def __init__(self, job: _Job) -> None:
        cv2.setNumThreads(1)  # the actor's process is ours: one core per actor
        self.reader = _Reader(job)

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
    resources = ray.cluster_resources()
    if num_gpus > 0:
        gpus = float(resources.get("GPU", 0.0))
        if gpus < num_gpus:
            raise BatchError(
                f"GPU actors need {num_gpus:g} GPU each and the Ray cluster has {gpus:g}: add GPU "
                "nodes, or run on CPUs (device='cpu', num_gpus=0)"
            )
        fits = int(gpus // num_gpus)
    else:
        cpus = float(resources.get("CPU", 1.0))
        fits = int(cpus // options.num_cpus) if options.num_cpus > 0 else int(cpus)
    return max(1, min(options.concurrency or fits, chunks))


def run_ray(
    paths: Sequence[str],
    job: _Job,
    options: RayOptions,
    emit: Callable[[Sequence[_Done]], None],
) -> None:
    """Read ``paths`` on Ray actors; hand each finished batch to ``emit`` (in this process).

    Connects to ``options.address``, or uses the Ray this process is already connected to, or
    starts a local one (and shuts down only one it started).

    Raises:
        MissingDependencyError: Ray Data is not installed.
        BatchError: GPU actors were asked for and the cluster has too few GPUs.
    """
    ray = _ray()
    started = False
    if not ray.is_initialized():
        ray.init(address=options.address, include_dashboard=False)
        started = True
    elif options.address is not None:
        log.info("Ray is already initialised in this process; address %r unused", options.address)
    data = importlib.import_module("ray.data")
    context = data.DataContext.get_current()
    previous = context.enable_progress_bars
    context.enable_progress_bars = False  # the caller shows progress; restored below
    try:
        num_gpus = (
            options.num_gpus
            if options.num_gpus is not None
            else (1.0 if job.device == "cuda" else 0.0)
        )
        rough = _chunks(paths, 1, options.batch_size)
        actors = _actors(ray, options, num_gpus, len(rough))
        chunks = _chunks(paths, actors, options.batch_size)
        log.info("Ray: %d chunks of files on %d actors", len(chunks), actors)
        dataset = data.from_items(
            [{"chunk": json.dumps(chunk)} for chunk in chunks],  # any character in a path
            override_num_blocks=len(chunks),
        ).map_batches(
            _RayReader,
            fn_constructor_kwargs={"job": job},
            batch_size=1,
            batch_format="numpy",
            compute=data.ActorPoolStrategy(size=actors),
            num_cpus=options.num_cpus,
            num_gpus=num_gpus,
        )
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            emit(
                [
                    _Done(str(line), int(faces), bool(ok), bool(partial))
                    for line, faces, ok, partial in zip(
                        batch["line"], batch["faces"], batch["ok"], batch["partial"], strict=True
                    )
                ]
            )
    finally:
        context.enable_progress_bars = previous
        if started:
            ray.shutdown()
