"""The batch job: :func:`run` and what it reports (see :mod:`fer_onnx.batch`)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fer_onnx._checks import _shown, check_bool
from fer_onnx._text import plural
from fer_onnx.batch.errors import BatchError, BatchTypeError
from fer_onnx.batch.inputs import find_inputs
from fer_onnx.batch.journal import Journal, finalise, read_journals
from fer_onnx.batch.local import cores, run_local
from fer_onnx.batch.lock import Lock
from fer_onnx.batch.ray_engine import RayOptions, check_ray, run_ray
from fer_onnx.batch.tables import (
    arrow,
    check_existing,
    check_not_input,
    check_output_path,
    layout_of,
    read_files_table,
)
from fer_onnx.batch.worker import Done, Job, done, error_record, make_job
from fer_onnx.errors import InvalidOptionError, InvalidTypeError
from fer_onnx.recognizer import EmotionRecognizer
from fer_onnx.session import Device

log = logging.getLogger(__name__)

__all__ = ["BatchProgress", "BatchSummary", "Engine", "run"]


Engine = Literal["local", "ray"]
"""Where the work runs: ``"local"`` (a process pool on this machine) or ``"ray"``."""


@dataclass(frozen=True, slots=True)
class BatchProgress:
    """Where a run stands, passed to the ``progress`` callback of :func:`run`.

    Attributes:
        total: Files to read in this run (inputs less those done before).
        done: Files finished so far (read or failed).
        faces: Faces found so far.
        errors: Files that could not be read so far.
        seconds: Seconds since the run started.
    """

    total: int
    done: int
    faces: int
    errors: int
    seconds: float


@dataclass(frozen=True, slots=True)
class BatchSummary:
    """What a run did. ``inputs == files + errors + skipped`` always holds.

    Attributes:
        inputs: Distinct input files found (and named paths or patterns that matched nothing).
        files: Files read in this run.
        faces: Faces found in them (rows added).
        errors: Inputs that could not be read in this run (see the errors table).
        skipped: Files done by an earlier run with the same output, unchanged since.
        skipped_errors: Those of them that failed then (``retry_errors`` reads them again).
        ignored: Files inside searched folders whose names are neither photos nor videos.
        partial: Videos read in this run that were only partly analysed: frames that could
            not be decoded, or a stream that ended before the end its container announced
            (``fer-onnx video`` exits 3 for such a video).
        seconds: Wall time of the run, start-up and writing included.
        engine: The engine that ran it.
        output: The faces table.
        errors_output: The errors table.
        files_output: The files table.
        skipped_partial: Files done before (``skipped``) that were only partly analysed then.
    """

    inputs: int
    files: int
    faces: int
    errors: int
    skipped: int
    skipped_errors: int
    ignored: int
    partial: int
    seconds: float
    engine: Engine
    output: Path
    errors_output: Path
    files_output: Path
    skipped_partial: int = 0

    @property
    def unread(self) -> int:
        """Inputs with no results: failed in this run, or failed before and not read again."""
        return self.errors + self.skipped_errors

    @property
    def incomplete(self) -> int:
        """Videos only partly analysed, in this run or before (see ``corrupt_frames``)."""
        return self.partial + self.skipped_partial

    @property
    def accounted(self) -> bool:
        """Whether every input was read, failed, or was done before."""
        return self.inputs == self.files + self.errors + self.skipped

    @property
    def files_per_second(self) -> float:
        """Files read or failed per second of this run."""
        return (self.files + self.errors) / self.seconds if self.seconds > 0 else 0.0

    @property
    def faces_per_second(self) -> float:
        """Faces found per second of this run."""
        return self.faces / self.seconds if self.seconds > 0 else 0.0

    def describe(self, *, retry_hint: str = "retry_errors=True") -> str:
        """One line for people: what happened to every input, and how fast.

        Args:
            retry_hint: How the reader asks for failed files to be read again (the command
                line passes ``--retry-errors``).
        """
        check = "all accounted for" if self.accounted else "NOT ALL ACCOUNTED FOR"
        earlier = (
            f" ({self.skipped_errors} of them errors; {retry_hint} reads them again)"
            if self.skipped_errors
            else ""
        )
        line = (
            f"{plural(self.inputs, 'input')}: {self.files} read, "
            f"{plural(self.errors, 'error')}, "
            f"{self.skipped} done before{earlier}; {check}. {plural(self.faces, 'face')} in "
            f"{self.seconds:.1f} s ({self.files_per_second:.1f} files/s, "
            f"{self.faces_per_second:.1f} faces/s, "
            f"{self.engine} engine)"
        )
        if self.incomplete:
            line += (
                f"; {plural(self.incomplete, 'video')} only partly analysed, NOT ANALYSED frames "
                "counted "
                f"in corrupt_frames of {self.files_output.name}"
            )
        if self.ignored:
            line += (
                f"; {plural(self.ignored, 'other file')} in the folders ignored "
                "(not photos or videos)"
            )
        return line


def _labels(job: Job) -> tuple[str, ...]:
    """The model's classes (the faces table's columns), read once here: a bad model fails now.

    The detector is built here too (on the CPU), so that a bad option fails once, now, rather
    than as one error per file in every worker.
    """
    if job.detector_options:
        job.make_detector(check_only=True)
    try:
        rec = EmotionRecognizer(
            job.model, detector=None, device="cpu", align=job.align, margin=job.margin
        )
    except InvalidOptionError as e:  # a margin the model's framing cannot apply
        raise BatchError(str(e)) from e
    with rec:
        return rec.labels


def _check_engine(engine: object, workers: object, chunk_size: object) -> None:
    if engine not in ("local", "ray"):
        raise BatchError(f"engine must be 'local' or 'ray', got {engine!r}")
    if workers is not None and (
        isinstance(workers, bool) or not isinstance(workers, int) or workers < 1
    ):
        raise BatchError(f"workers must be an integer >= 1 (or None), got {workers!r}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise BatchError(f"chunk_size must be an integer >= 1, got {chunk_size!r}")


_PATH = "a path (str or os.PathLike)"


def _path_list(name: str, value: object) -> list[str | os.PathLike[str]]:
    """``inputs`` or ``files_from`` as a list of paths: one path, or an iterable of them."""
    if isinstance(value, (str, os.PathLike)):
        value = [value]
    elif value is None or isinstance(value, (bytes, bytearray)) or not isinstance(value, Iterable):
        raise BatchTypeError(
            f"{name} must be {_PATH} or a list of them, got {_shown(value)} "
            f"({type(value).__name__})"
        )
    items = list(value)
    for i, item in enumerate(items):
        if not isinstance(item, (str, os.PathLike)):
            hint = "; decode bytes first (os.fsdecode)" if isinstance(item, bytes) else ""
            raise BatchTypeError(
                f"{name}[{i}] must be {_PATH}, got {_shown(item)} ({type(item).__name__}){hint}"
            )
    return items


def _check_types(arguments: Mapping[str, object]) -> None:
    """Refuse arguments of :func:`run` of the wrong type before anything starts."""
    for name in ("out", "model", "detector"):
        value = arguments[name]
        if not isinstance(value, (str, os.PathLike)):
            raise BatchTypeError(f"{name} must be {_PATH}, got {_shown(value)}")
    for name in ("align", "retry_errors"):
        try:
            check_bool(name, arguments[name])
        except InvalidTypeError as e:
            raise BatchTypeError(str(e)) from None
    progress = arguments["progress"]
    if progress is not None and not callable(progress):
        raise BatchTypeError(
            "progress must be a function taking a BatchProgress (or None), got "
            f"{_shown(progress)} ({type(progress).__name__})"
        )
    ray = arguments["ray"]
    if ray is not None and not isinstance(ray, RayOptions):
        raise BatchTypeError(
            f"ray must be RayOptions(...) or None, got {_shown(ray)} ({type(ray).__name__})"
        )
    providers = arguments["providers"]
    if providers is not None and not isinstance(providers, (str, Sequence)):
        raise BatchTypeError(
            "providers must be a list of onnxruntime provider names (or None), got "
            f"{_shown(providers)} ({type(providers).__name__})"
        )


@dataclass
class _Plan:
    """The files a run reads, and those done before that it skips."""

    todo: list[str] = field(default_factory=list)
    skipped: int = 0
    skipped_errors: int = 0
    skipped_partial: int = 0


def _plan(paths: Iterable[str], done: dict[str, dict[str, Any]], retry_errors: bool) -> _Plan:
    """Skip the files done before, unchanged since (and failed ones unless ``retry_errors``)."""
    plan = _Plan()
    for path in paths:
        old = done.get(path)
        try:
            st = os.stat(path)
            same = (
                old is not None and old["size"] == st.st_size and old["mtime_ns"] == st.st_mtime_ns
            )
        except OSError:
            same = False
        if same and old is not None and (old["status"] == "ok" or not retry_errors):
            plan.skipped += 1
            plan.skipped_errors += old["status"] != "ok"
            plan.skipped_partial += bool(old.get("corrupt_frames"))
        else:
            plan.todo.append(path)
    return plan


class _Counts:
    """What finished so far: journals each result, counts it, reports progress."""

    def __init__(
        self,
        total: int,
        journal: Journal,
        progress: Callable[[BatchProgress], None] | None,
        start: float,
    ) -> None:
        self.total, self.journal, self.progress, self.start = total, journal, progress, start
        self.done = self.files = self.faces = self.errors = self.partial = 0

    def emit(self, results: Sequence[Done]) -> None:
        self.journal.add([r.line for r in results])
        for r in results:
            self.done += 1
            self.files += r.ok
            self.errors += not r.ok
            self.faces += r.faces
            self.partial += r.partial
        self.report()

    def report(self) -> None:
        if self.progress is not None:
            seconds = time.perf_counter() - self.start
            self.progress(BatchProgress(self.total, self.done, self.faces, self.errors, seconds))


def run(
    inputs: Iterable[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    files_from: Iterable[str | os.PathLike[str]] = (),
    engine: Engine = "local",
    every: int = 1,
    model: str | os.PathLike[str] = "default",
    detector: str | os.PathLike[str] = "yunet",
    device: Device = "auto",
    align: bool = True,
    margin: float = 0.0,
    smoothing: float = 5.0,
    workers: int | None = None,
    chunk_size: int = 8,
    retry_errors: bool = False,
    ray: RayOptions | None = None,
    progress: Callable[[BatchProgress], None] | None = None,
    providers: Sequence[str] | None = None,
    detector_options: Mapping[str, Any] | None = None,
) -> BatchSummary:
    """Recognise every face in a collection of photos and videos; write them to ``out``.

    See :mod:`fer_onnx.batch` for the tables written, resuming and the engines.

    Args:
        inputs: Files, folders (searched recursively) and glob patterns; see
            :func:`find_inputs`.
        out: The faces table, ``*.parquet`` or ``*.csv``; the errors and files tables are
            written beside it (:func:`output_paths`).
        files_from: Text files listing more inputs, one per line.
        engine: ``"local"`` (a process pool on this machine) or ``"ray"``.
        every: Read every ``every``-th frame of videos.
        model: ``"default"``, a bundled model name or the path of an ``.onnx`` model.
        detector: ``"yunet"``, ``"haar"`` or the path of a YuNet ``.onnx`` file.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"`` for every recognizer.
        align: Frame faces like the model's training data (see ``EmotionRecognizer``).
        margin: Grow boxes by this fraction for plain crops.
        smoothing: EMA window in frames of the per-track probabilities in videos; ``<= 1``
            reports raw probabilities.
        workers: Processes of the local engine; ``None`` is one per core available.
        chunk_size: Photos handed to a local worker at a time.
        retry_errors: Read again the files that failed in an earlier run (by default they
            count as done unless they changed).
        ray: Options of the Ray engine.
        progress: Called with a :class:`BatchProgress` at the start and whenever files finish.
        providers: onnxruntime execution providers of every recognizer (both models), in
            order of preference; they choose the device, so leave ``device="auto"``.
        detector_options: Settings of the detector, as its keyword arguments
            (:data:`DETECTOR_OPTIONS`): ``score_threshold``, ``nms_threshold``, ``top_k``,
            ``detect_width`` for YuNet; ``scale_factor``, ``min_neighbors``, ``min_size``,
            ``detect_width``, ``equalize`` for Haar. ``detect_width=None`` detects at full size.

    Returns:
        What the run did (counts of this run, and the paths of the three tables).

    Raises:
        BatchTypeError: An argument is of the wrong type (``out=None``, ``inputs=None``,
            ``progress=5``, ``align="no"``); checked before anything starts. Also a
            ``BatchError`` and an ``InvalidTypeError``.
        BatchError: No inputs, an unusable output (a folder, an unknown extension, one of the
            inputs, a file this module did not write), a bad option (``margin`` above 0 with
            ``align=True`` and a model that frames faces with its crop template), or another
            run holding the same output.
        MissingDependencyError: pyarrow (for ``.parquet``) or Ray (for ``engine="ray"``) is
            not installed.
        FerOnnxError: The model or detector cannot be loaded (in the workers too).
    """
    start = time.perf_counter()
    inputs = _path_list("inputs", inputs)
    files_from = _path_list("files_from", files_from)
    _check_types(
        {
            "out": out,
            "model": model,
            "detector": detector,
            "align": align,
            "retry_errors": retry_errors,
            "progress": progress,
            "ray": ray,
            "providers": providers,
        }
    )
    _check_engine(engine, workers, chunk_size)
    job = make_job(
        model, detector, device, align, margin, every, smoothing, providers, detector_options
    )
    layout = layout_of(out)
    check_output_path(layout)
    if layout.fmt == "parquet":
        arrow()
    if engine == "ray":
        check_ray()
    found = find_inputs(inputs, files_from, exclude=[*layout.tables, layout.parts])
    check_not_input(layout, found.named)
    if not found.paths and not found.missing:
        given = [os.fspath(i) for i in inputs]  # a list by now (_path_list)
        searched = f" in {', '.join(map(repr, given[:5]))}{', ...' if len(given) > 5 else ''}"
        raise BatchError(
            f"no inputs found{searched if given else ''}: name photos, videos, folders holding "
            "them, or glob patterns"
            + (
                f" (the folders hold {plural(found.ignored, 'other file')})"
                if found.ignored
                else ""
            )
        )
    labels = _labels(job)
    with Lock(layout):
        check_existing(layout, labels)
        earlier = read_files_table(layout) | read_journals(layout, labels, rows=False)
        plan = _plan(found.paths, earlier, retry_errors)
        todo = plan.todo
        skipped = plan.skipped
        journal = Journal(layout, labels)
        counts = _Counts(len(todo) + len(found.missing), journal, progress, start)
        emit = counts.emit

        log.info(
            "%d inputs: %d to read, %d done before, %d missing",
            len(found.paths) + len(found.missing),
            len(todo),
            skipped,
            len(found.missing),
        )
        try:
            counts.report()
            missing = [error_record(name, "FileNotFoundError", why) for name, why in found.missing]
            if missing:
                emit([done(record) for record in missing])
            if todo and engine == "local":
                run_local(todo, job, workers or cores(), chunk_size, emit)
            elif todo:
                run_ray(todo, job, ray or RayOptions(), emit)
        except BaseException:
            # Ctrl-C, SIGTERM, a failing worker: keep what was finished, then stop.
            journal.close()
            try:
                finalise(layout, labels)
            except Exception:
                log.exception("could not merge the finished files; they stay in %s", layout.parts)
            raise
        journal.close()
        finalise(layout, labels)
    return BatchSummary(
        inputs=len(found.paths) + len(found.missing),
        files=counts.files,
        faces=counts.faces,
        errors=counts.errors,
        skipped=skipped,
        skipped_errors=plan.skipped_errors,
        ignored=found.ignored,
        partial=counts.partial,
        seconds=time.perf_counter() - start,
        engine=engine,
        output=layout.out,
        errors_output=layout.errors,
        files_output=layout.files,
        skipped_partial=plan.skipped_partial,
    )
