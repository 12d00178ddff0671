"""Batch inference over collections of photos and videos: resumable, on all cores or on Ray.

:func:`run` finds the files (folders searched recursively, globs expanded, lists of paths read),
recognises every face of every photo and of every ``every``-th frame of every video, and writes
three tables side by side, in Parquet (``.parquet``, needs pyarrow) or CSV (``.csv``), by the
extension of ``out``:

* ``faces.parquet``, one row per face: ``source`` (the absolute path), ``frame``, ``timestamp``
  (seconds) and ``track_id`` for videos (empty for photos), ``face`` (its index in the photo or
  frame), the box ``x, y, width, height`` in pixels, ``detection_score``, ``label``, ``score``
  and one ``p_<label>`` column per class of the model;
* ``faces.errors.parquet``: ``path, error_type, message`` for every input that could not be read;
* ``faces.files.parquet``: one row per input: ``path, kind, size, mtime_ns, status`` (``ok`` or
  ``error``), ``faces``, ``frames`` and ``corrupt_frames`` (videos), ``error_type, message``.
  ``corrupt_frames`` counts the frames of a video that were not analysed: those that failed to
  decode, and those its container announced after the stream ended (a truncated file; a short
  shortfall that looks like an estimated length is not counted). Such a video is ``ok`` with
  what could be read, and its ``message`` says what was not analysed, as ``fer-onnx video``
  says it.

Integer columns are int64; in the Parquet tables the nullable ones (``frame`` and ``track_id``,
empty for photos; the files table's counts) are marked for pandas' ``Int64``, so that
``pandas.read_parquet`` keeps them integers.

Every input ends up in the files table as ``ok`` or ``error``; nothing is dropped silently.

**Resuming.** While the run goes on, each finished file is appended to a journal in
``faces.parquet.parts/``; at the end the journal is merged with what the tables already held,
and the tables are written to temporary files and renamed into place. An interrupted run
(Ctrl-C, SIGTERM, a crash, SIGKILL) loses at most the files that were being read. Running the
same command again skips every file already done whose size and modification time are
unchanged (and, unless ``retry_errors``, the files that failed), processes the rest and merges
old and new results; a file that changed is read again and its old rows are replaced. Nothing
the user had is overwritten: an existing ``out`` that this module did not write is refused.

**Engines.** ``"local"`` (the default) runs a pool of processes, one per core, each holding one
recognizer with one onnxruntime thread, and hands files out in chunks (each video alone, first).
``"ray"`` runs the same work on a Ray cluster (:mod:`fer_onnx.batch_ray`; the optional extra
``pip install "fer-onnx[ray]"``). Both send each finished file back to this process, which
keeps the journal. The local workers are started with ``spawn`` and import the caller's main
module: in a script, call :func:`run` under ``if __name__ == "__main__":``.

Example:
    >>> from fer_onnx.batch import run
    >>> summary = run(["photos/", "clips/*.mp4"], "faces.parquet")  # doctest: +SKIP
    >>> summary.describe()                                         # doctest: +SKIP
    '2004 inputs: 2000 read, 4 errors, 0 done before; all accounted for. ...'
"""

from __future__ import annotations

import contextlib
import csv
import glob
import heapq
import importlib
import json
import logging
import math
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple, TextIO

import cv2

from fer_onnx.detectors import Detector, HaarDetector
from fer_onnx.errors import FerOnnxError, InvalidOptionError, VideoError
from fer_onnx.outputs import AtomicOutput, deferred_signals
from fer_onnx.recognizer import BUNDLED_MODELS, EmotionRecognizer
from fer_onnx.session import Device, SessionConfig
from fer_onnx.types import FaceEmotion
from fer_onnx.video import VideoRecognizer, VideoStats, open_video, read_frames
from fer_onnx.yunet import YuNetDetector

if sys.platform != "win32":
    import fcntl

log = logging.getLogger(__name__)

__all__ = [
    "DETECTOR_OPTIONS",
    "ERROR_COLUMNS",
    "FILE_COLUMNS",
    "IMAGE_EXTENSIONS",
    "ROW_COLUMNS",
    "VIDEO_EXTENSIONS",
    "BatchError",
    "BatchProgress",
    "BatchSummary",
    "Engine",
    "FoundInputs",
    "MissingDependencyError",
    "RayOptions",
    "find_inputs",
    "output_paths",
    "run",
]

Engine = Literal["local", "ray"]
"""Where the work runs: ``"local"`` (a process pool on this machine) or ``"ray"``."""

IMAGE_EXTENSIONS = frozenset(
    {
        ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".dib", ".webp", ".tif", ".tiff",
        ".jp2", ".pbm", ".pgm", ".ppm", ".pnm", ".gif", ".avif", ".heic", ".heif",
    }
)  # fmt: skip
"""Names a folder search takes as photos (lower case). Named files are read whatever their name."""
VIDEO_EXTENSIONS = frozenset(
    {
        ".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv",
        ".3gp", ".ts", ".mts", ".m2ts", ".ogv",
    }
)  # fmt: skip
"""Names read as videos (lower case); every other file is read as a photo."""

ROW_COLUMNS = (
    "source",
    "frame",
    "timestamp",
    "track_id",
    "face",
    "x",
    "y",
    "width",
    "height",
    "detection_score",
    "label",
    "score",
)
"""Columns of the faces table, followed by one ``p_<label>`` column per class."""
FILE_COLUMNS = (
    "path",
    "kind",
    "size",
    "mtime_ns",
    "status",
    "faces",
    "frames",
    "corrupt_frames",
    "error_type",
    "message",
)
"""Columns of the files table (one row per input)."""
ERROR_COLUMNS = ("path", "error_type", "message")
"""Columns of the errors table."""

_FORMATS = {".parquet": "parquet", ".csv": "csv"}
_INT_ROW = frozenset({"frame", "track_id", "face", "x", "y", "width", "height"})
_STR_ROW = frozenset({"source", "label"})
_NULLABLE_INT_ROW = frozenset({"frame", "track_id"})  # empty for photos
_INT_FILE = frozenset({"size", "mtime_ns", "faces", "frames", "corrupt_frames"})
_JOURNAL_VERSION = 1
_PART_PREFIX, _PART_SUFFIX, _LOCK = "part-", ".jsonl", "lock"


class BatchError(InvalidOptionError):
    """A batch job cannot start: no inputs, an unusable output path, a bad option.

    The message says what was wrong and what to do instead.
    """


class MissingDependencyError(FerOnnxError, ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


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
        if not _positive(self.num_cpus, allow_zero=True):
            raise BatchError(f"Ray num_cpus must be a number >= 0, got {self.num_cpus!r}")
        if self.num_gpus is not None and not _positive(self.num_gpus, allow_zero=True):
            raise BatchError(f"Ray num_gpus must be a number >= 0, got {self.num_gpus!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise BatchError(f"Ray batch_size must be an integer >= 1, got {self.batch_size!r}")


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
            f"{self.inputs} inputs: {self.files} read, {self.errors} errors, "
            f"{self.skipped} done before{earlier}; {check}. {self.faces} faces in "
            f"{self.seconds:.1f} s ({self.files_per_second:.1f} files/s, "
            f"{self.faces_per_second:.1f} faces/s, "
            f"{self.engine} engine)"
        )
        if self.incomplete:
            line += (
                f"; {_count(self.incomplete, 'video')} only partly analysed, NOT ANALYSED frames "
                "counted "
                f"in corrupt_frames of {self.files_output.name}"
            )
        if self.ignored:
            line += (
                f"; {_count(self.ignored, 'other file')} in the folders ignored "
                "(not photos or videos)"
            )
        return line


@dataclass(frozen=True, slots=True)
class FoundInputs:
    """The files a batch job reads, from :func:`find_inputs`.

    Attributes:
        paths: Absolute paths of the files, in the order found, without duplicates.
        missing: ``(name, message)`` for each named path or pattern that matched nothing.
        ignored: Files inside searched folders whose names are neither photos nor videos.
        named: The subset of ``paths`` named directly (not found in a folder or by a pattern).
    """

    paths: tuple[str, ...]
    missing: tuple[tuple[str, str], ...] = ()
    ignored: int = 0
    named: frozenset[str] = field(default_factory=frozenset)


# -- finding inputs ----------------------------------------------------------------------------


def _absolute(path: str | os.PathLike[str]) -> str:
    return os.path.abspath(os.path.expanduser(os.fspath(path)))


def _hidden(name: str) -> bool:
    return name.startswith(".")


def find_inputs(
    inputs: Iterable[str | os.PathLike[str]],
    files_from: Iterable[str | os.PathLike[str]] = (),
    *,
    exclude: Iterable[str | os.PathLike[str]] = (),
) -> FoundInputs:
    """Expand paths, folders, globs and lists of paths into the files to read.

    * A folder is searched recursively, in sorted order, for files named like photos
      (:data:`IMAGE_EXTENSIONS`) or videos (:data:`VIDEO_EXTENSIONS`); hidden files and
      folders (names starting with ``.``) are passed over, other files are counted in
      ``ignored``.
    * A named file is read whatever its name (one that is not an image ends up as an error).
    * A name that does not exist but contains ``*``, ``?`` or ``[`` is a glob pattern
      (``**`` matches any depth); its matches are treated like named paths.
    * Each line of a ``files_from`` file is one path, folder or pattern; blank lines and lines
      starting with ``#`` are skipped; relative paths are relative to the list's folder.

    Args:
        inputs: Files, folders and patterns.
        files_from: Text files listing more of them, one per line.
        exclude: Paths never taken from folders or patterns (a job's own outputs).

    Returns:
        The files, without duplicates, as absolute paths; names that matched nothing.

    Raises:
        BatchError: A ``files_from`` list cannot be read.
    """
    excluded = {_absolute(p) for p in exclude}
    paths: dict[str, None] = {}
    named: set[str] = set()
    missing: list[tuple[str, str]] = []
    ignored: set[str] = set()

    def walk(folder: str) -> None:
        for root, dirs, files in os.walk(folder):
            dirs[:] = sorted(
                d for d in dirs if not _hidden(d) and os.path.join(root, d) not in excluded
            )
            for name in sorted(files):
                path = os.path.join(root, name)
                if _hidden(name) or path in excluded:
                    continue
                if Path(name).suffix.lower() in IMAGE_EXTENSIONS | VIDEO_EXTENSIONS:
                    paths.setdefault(path)
                else:
                    ignored.add(path)

    def expand(item: str, base: str | None = None) -> None:
        given = os.path.expanduser(item)
        if base is not None and not os.path.isabs(given):
            given = os.path.join(base, given)
        path = os.path.abspath(given)
        if os.path.isdir(path):
            walk(path)
        elif os.path.lexists(path):
            paths.setdefault(path)
            named.add(path)
        elif glob.has_magic(given):
            matches = sorted(glob.glob(given, recursive=True))
            if not matches:
                missing.append((item, "no file or folder matches this pattern"))
            for match in matches:
                full = os.path.abspath(match)
                if os.path.isdir(full):
                    if full not in excluded:
                        walk(full)
                elif full not in excluded and not _hidden(os.path.basename(full)):
                    paths.setdefault(full)
        else:
            missing.append((item, "no such file or folder"))

    for item in inputs:
        expand(os.fspath(item))
    for listing in files_from:
        list_path = _absolute(listing)
        try:
            with open(list_path, encoding="utf-8") as stream:
                lines = stream.read().splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise BatchError(
                f"cannot read the list of paths {os.fspath(listing)!r}: {e}; expected a UTF-8 "
                "text file with one path, folder or pattern per line"
            ) from e
        for line in lines:
            entry = line.strip()
            if entry and not entry.startswith("#"):
                expand(entry, base=os.path.dirname(list_path))
    for path in list(paths):
        try:
            path.encode("utf-8")
        except UnicodeEncodeError:  # os.walk gives undecodable bytes as surrogates
            del paths[path]
            shown = os.fsencode(path).decode("utf-8", "backslashreplace")
            missing.append(
                (
                    shown,
                    "the file name is not valid UTF-8 and cannot be stored in the "
                    "result tables; rename the file",
                )
            )
    missing_unique = list(dict.fromkeys(missing))
    others = len(ignored.difference(paths))  # a file named directly is not ignored
    return FoundInputs(tuple(paths), tuple(missing_unique), others, frozenset(named))


# -- output layout -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Layout:
    out: Path
    errors: Path
    files: Path
    parts: Path
    fmt: Literal["parquet", "csv"]

    @property
    def tables(self) -> tuple[Path, Path, Path]:
        return self.out, self.errors, self.files


def output_paths(out: str | os.PathLike[str]) -> tuple[Path, Path, Path, Path]:
    """The files a job writes for ``out``: faces, errors and files tables, and its parts folder.

    ``faces.parquet`` gives ``faces.parquet``, ``faces.errors.parquet``, ``faces.files.parquet``
    and ``faces.parquet.parts/`` (present only while a run is going on or was interrupted).

    Raises:
        BatchError: ``out`` does not end in ``.parquet`` or ``.csv``.
    """
    layout = _layout(out)
    return layout.out, layout.errors, layout.files, layout.parts


def _layout(out: str | os.PathLike[str]) -> _Layout:
    name = os.fspath(out)
    if not name.strip():
        raise BatchError("the output path is empty; name a .parquet or .csv file")
    path = Path(_absolute(name))
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise BatchError(
            f"cannot tell the output format of {name!r}: name a file ending in .parquet "
            "(needs pyarrow) or .csv"
        )
    stem, suffix = path.stem, path.suffix
    return _Layout(
        out=path,
        errors=path.with_name(f"{stem}.errors{suffix}"),
        files=path.with_name(f"{stem}.files{suffix}"),
        parts=path.with_name(f"{path.name}.parts"),
        fmt="parquet" if fmt == "parquet" else "csv",
    )


def _check_output_path(layout: _Layout) -> None:
    folder = layout.out.parent
    if not folder.is_dir():
        raise BatchError(f"cannot write {layout.out}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise BatchError(f"cannot write {layout.out}: folder {folder} is not writable")
    for path in layout.tables:
        if path.is_dir():
            raise BatchError(f"cannot write {path}: it is a directory; name a file")
        if path.exists() and not path.is_file():
            raise BatchError(
                f"cannot write {path}: it is a special file (device, pipe); a batch job needs "
                "a regular file it can read back to resume"
            )
    if layout.parts.exists() and not layout.parts.is_dir():
        raise BatchError(f"{layout.parts} exists and is not a folder; move it away")


def _same(a: str, b: Path) -> bool:
    if a == str(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _check_not_input(layout: _Layout, found: FoundInputs) -> None:
    for path in found.named:
        for own in layout.tables:
            if _same(path, own):
                raise BatchError(
                    f"the output {own} is also named as an input ({path}); choose another --out"
                )


# -- optional dependencies ---------------------------------------------------------------------


def _arrow() -> tuple[Any, Any, Any]:
    """``(pyarrow, pyarrow.parquet, pyarrow.compute)``, or a clear error naming the extra."""
    try:
        pa = importlib.import_module("pyarrow")
        pq = importlib.import_module("pyarrow.parquet")
        pc = importlib.import_module("pyarrow.compute")
    except ImportError as e:
        raise MissingDependencyError(
            "Parquet output needs pyarrow: pip install 'fer-onnx[batch]' (or name a .csv output)"
        ) from e
    return pa, pq, pc


# -- reading and writing tables ----------------------------------------------------------------


def _row_columns(labels: Sequence[str]) -> list[str]:
    return [*ROW_COLUMNS, *(f"p_{label}" for label in labels)]


def _row_schema(pa: Any, labels: Sequence[str]) -> Any:
    def kind(name: str) -> Any:
        if name in _STR_ROW:
            return pa.string()
        return pa.int64() if name in _INT_ROW else pa.float64()

    return pa.schema([(name, kind(name)) for name in _row_columns(labels)])


def _file_schema(pa: Any) -> Any:
    return pa.schema(
        [(name, pa.int64() if name in _INT_FILE else pa.string()) for name in FILE_COLUMNS]
    )


def _error_schema(pa: Any) -> Any:
    return pa.schema([(name, pa.string()) for name in ERROR_COLUMNS])


def _columns_of(path: Path, fmt: str) -> list[str]:
    """Column names of an existing table (``[]`` for an empty or unreadable file)."""
    try:
        if fmt == "parquet":
            _, pq, _ = _arrow()
            return list(pq.read_schema(path).names)
        with open(path, newline="", encoding="utf-8") as stream:
            return next(csv.reader(stream), [])
    except MissingDependencyError:
        raise
    except Exception as e:  # any parse failure means: not a table this module wrote
        log.debug("cannot read the columns of %s: %s", path, e)
        return []


def _labels_of(columns: Sequence[str]) -> tuple[str, ...] | None:
    """The labels of a faces table's columns, or ``None`` when they are not ours."""
    if tuple(columns[: len(ROW_COLUMNS)]) != ROW_COLUMNS:
        return None
    rest = columns[len(ROW_COLUMNS) :]
    if not rest or not all(c.startswith("p_") for c in rest):
        return None
    return tuple(c[2:] for c in rest)


def _check_existing(layout: _Layout, labels: Sequence[str]) -> None:
    """Refuse to touch tables this module did not write, or wrote for another model."""
    what = "was not written by fer-onnx batch"
    if layout.out.exists():
        found = _labels_of(_columns_of(layout.out, layout.fmt))
        if found is None:
            raise BatchError(
                f"{layout.out} exists and {what} (its columns differ); choose another output "
                "or move it away"
            )
        if found != tuple(labels):
            raise BatchError(
                f"{layout.out} holds results of a model with the classes {list(found)}; this "
                f"model has {list(labels)}: choose another output to keep both"
            )
        if not layout.files.exists() and not _journals(layout):
            # (With journals it is a merge that stopped between renames: merging again mends it.)
            raise BatchError(
                f"{layout.out} exists but {layout.files.name}, the list of files it covers, does "
                "not: it cannot be resumed. Choose another output or move it away"
            )
    for path, columns in ((layout.files, FILE_COLUMNS), (layout.errors, ERROR_COLUMNS)):
        if path.exists() and tuple(_columns_of(path, layout.fmt)) != columns:
            raise BatchError(f"{path} exists and {what}; choose another output or move it away")
    if layout.files.exists() and not layout.out.exists():
        raise BatchError(
            f"{layout.files} lists finished files but their results ({layout.out.name}) are "
            "gone; delete it to start afresh, or restore the results"
        )
    if layout.parts.is_dir():
        strangers = [
            p.name
            for p in layout.parts.iterdir()
            if p.name != _LOCK
            and not (p.name.startswith(_PART_PREFIX) and p.name.endswith(_PART_SUFFIX))
        ]
        if strangers:
            raise BatchError(
                f"{layout.parts} holds files this job did not write ({', '.join(strangers[:5])}); "
                "move them away"
            )


def _int_or_none(value: str) -> int | None:
    return int(value) if value != "" else None


def _read_files_table(layout: _Layout) -> dict[str, dict[str, Any]]:
    if not layout.files.exists():
        return {}
    if layout.fmt == "parquet":
        _, pq, _ = _arrow()
        records: list[dict[str, Any]] = pq.read_table(layout.files).to_pylist()
    else:
        with open(layout.files, newline="", encoding="utf-8") as stream:
            records = [
                {
                    k: (_int_or_none(v) if k in _INT_FILE else (v if v != "" else None))
                    for k, v in row.items()
                }
                for row in csv.DictReader(stream)
            ]
    return {r["path"]: r for r in records}


def _journals(layout: _Layout) -> list[Path]:
    if not layout.parts.is_dir():
        return []
    return sorted(
        p
        for p in layout.parts.iterdir()
        if p.name.startswith(_PART_PREFIX) and p.name.endswith(_PART_SUFFIX)
    )


def _read_journals(
    layout: _Layout, labels: Sequence[str], *, rows: bool
) -> dict[str, dict[str, Any]]:
    """Finished files recorded in the journals (later records win), with or without rows."""
    records: dict[str, dict[str, Any]] = {}
    for journal in _journals(layout):
        with open(journal, encoding="utf-8") as stream:
            text = stream.read()
        lines = text.split("\n")
        if lines and lines[-1] != "":
            lines.pop()  # a record cut short by a kill: that file was still in flight
        for number, line in enumerate(lines):
            if not line:
                continue
            try:
                record = json.loads(line)
            except ValueError:
                log.warning(
                    "%s line %d is unreadable; its file will be read again", journal, number
                )
                continue
            if number == 0:
                if not isinstance(record, dict) or "fer_onnx_batch" not in record:
                    raise BatchError(
                        f"{journal} does not start like a journal of fer-onnx batch; delete "
                        f"{layout.parts} to start afresh"
                    )
                if record.get("labels") != list(labels):
                    raise BatchError(
                        f"{journal} holds results of a model with the classes "
                        f"{record.get('labels')}; this model has {list(labels)}: finish that "
                        f"run with its model, or delete {layout.parts}"
                    )
                continue
            problem = _record_problem(record, len(labels))
            if problem is not None:
                log.warning(
                    "%s line %d is not a record of a finished file (%s); its file will be read "
                    "again",
                    journal,
                    number,
                    problem,
                )
                continue
            if not rows:
                record.pop("rows", None)
            records[record["path"]] = record
    return records


def _record_problem(record: Any, classes: int) -> str | None:
    """What is wrong with a journal record (hand-edited, or from another version), or ``None``."""
    if not isinstance(record, dict):
        return f"expected a JSON object, got {type(record).__name__}"
    if not isinstance(record.get("path"), str):
        return "no 'path'"
    if record.get("status") not in ("ok", "error"):
        return f"'status' is {record.get('status')!r}, expected 'ok' or 'error'"
    for name in _INT_FILE:
        value = record.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            return f"{name!r} is {value!r}, expected an integer"
    rows = record.get("rows")
    if not isinstance(rows, list):
        return "no 'rows' list"
    width = len(ROW_COLUMNS) - 1 + classes
    kinds = [_value_kind(name) for name in ROW_COLUMNS[1:]] + ["float"] * classes
    for row in rows:
        if not isinstance(row, list) or len(row) != width:
            return f"a row is not a list of {width} values"
        for kind, value in zip(kinds, row, strict=True):
            if value is not None and not _is_kind(value, kind):
                return f"a row holds {value!r} where a {kind} belongs"
    return None


def _value_kind(name: str) -> str:
    if name in _STR_ROW:
        return "str"
    return "int" if name in _INT_ROW else "float"


def _is_kind(value: Any, kind: str) -> bool:
    if isinstance(value, bool):
        return False
    if kind == "str":
        return isinstance(value, str)
    if kind == "int":
        return isinstance(value, int)
    return isinstance(value, (int, float))


def _write_parquet(
    layout: _Layout,
    labels: Sequence[str],
    new: dict[str, dict[str, Any]],
    files: list[dict[str, Any]],
    targets: tuple[Path, Path, Path],
) -> None:
    pa, pq, pc = _arrow()
    schema = _row_schema(pa, labels)
    names = schema.names
    columns: dict[str, list[Any]] = {name: [] for name in names}
    for path in sorted(new):
        for row in new[path]["rows"]:
            columns["source"].append(path)
            for name, value in zip(names[1:], row, strict=True):
                columns[name].append(value)
    table = pa.table(
        [pa.array(columns[name], type=schema.field(name).type) for name in names], schema=schema
    )
    if layout.out.exists():
        old = pq.read_table(layout.out)
        if not old.schema.equals(schema, check_metadata=False):
            raise BatchError(f"{layout.out} has other column types than this job writes")
        keep = pc.invert(pc.is_in(old["source"], value_set=pa.array(list(new), pa.string())))
        table = pa.concat_tables([old.filter(keep), table])
    table = table.sort_by([("source", "ascending"), ("frame", "ascending"), ("face", "ascending")])
    pq.write_table(_with_pandas_types(table, _NULLABLE_INT_ROW), targets[0])
    errors = [{k: f[k] for k in ERROR_COLUMNS} for f in files if f["status"] == "error"]
    pq.write_table(pa.Table.from_pylist(errors, schema=_error_schema(pa)), targets[1])
    files_table = pa.Table.from_pylist(files, schema=_file_schema(pa))
    pq.write_table(_with_pandas_types(files_table, _INT_FILE), targets[2])


def _with_pandas_types(table: Any, nullable_ints: frozenset[str]) -> Any:
    """``table`` with the pandas metadata that keeps its integer columns integers.

    A Parquet int64 column with nulls (``frame`` and ``track_id`` of photos) reads into pandas
    as float64 unless the file says that pandas' nullable ``Int64`` is meant; pyarrow's
    ``to_pandas`` (and ``pandas.read_parquet``) follow this metadata. Other readers ignore it.
    """
    columns = []
    for f in table.schema:
        if str(f.type) == "int64":
            kind, numpy = "int64", ("Int64" if f.name in nullable_ints else "int64")
        elif str(f.type) == "double":
            kind, numpy = "float64", "float64"
        else:
            kind, numpy = "unicode", "object"
        columns.append(
            {
                "name": f.name,
                "field_name": f.name,
                "pandas_type": kind,
                "numpy_type": numpy,
                "metadata": None,
            }
        )
    pandas = {
        "index_columns": [],
        "column_indexes": [],
        "columns": columns,
        "attributes": {},
        "creator": {"library": "fer-onnx", "version": "1"},
        "pandas_version": "2.0.0",
    }
    return table.replace_schema_metadata({b"pandas": json.dumps(pandas).encode()})


def _write_csv(
    layout: _Layout,
    labels: Sequence[str],
    new: dict[str, dict[str, Any]],
    files: list[dict[str, Any]],
    targets: tuple[Path, Path, Path],
) -> None:
    header = _row_columns(labels)

    def fresh() -> Iterator[list[Any]]:
        for path in sorted(new):
            for row in new[path]["rows"]:
                yield [path, *row]

    with contextlib.ExitStack() as stack:
        sources: list[Iterator[list[Any]]] = [fresh()]
        if layout.out.exists():
            stream = stack.enter_context(open(layout.out, newline="", encoding="utf-8"))
            reader = csv.reader(stream)
            if next(reader, None) != header:
                raise BatchError(f"{layout.out} has other columns than this job writes")
            sources.append(row for row in reader if row and row[0] not in new)
        with open(targets[0], "w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow(header)
            # Both sources are sorted by path; old rows of re-read files were dropped above.
            merged: Iterator[list[Any]] = heapq.merge(*sources, key=_first)
            writer.writerows(merged)
    for target, columns, records in (
        (targets[1], ERROR_COLUMNS, [f for f in files if f["status"] == "error"]),
        (targets[2], FILE_COLUMNS, files),
    ):
        with open(target, "w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow(columns)
            writer.writerows([record[c] for c in columns] for record in records)


def _first(row: list[Any]) -> Any:
    return row[0]


def _finalise(layout: _Layout, labels: Sequence[str]) -> None:
    """Merge the journals into the three tables (atomically, each), then drop the journals."""
    start = time.perf_counter()
    new = _read_journals(layout, labels, rows=True)
    if new:
        files = _read_files_table(layout)
        for path, record in new.items():
            files[path] = {k: record.get(k) for k in FILE_COLUMNS}
        ordered = [files[p] for p in sorted(files)]
        with contextlib.ExitStack() as stack:
            with deferred_signals():  # a Ctrl-C while they are created leaves no temporary file
                rows_out = stack.enter_context(AtomicOutput(layout.out))
                errors_out = stack.enter_context(AtomicOutput(layout.errors))
                files_out = stack.enter_context(AtomicOutput(layout.files))
            targets = (rows_out.tmp, errors_out.tmp, files_out.tmp)
            write = _write_parquet if layout.fmt == "parquet" else _write_csv
            write(layout, labels, new, ordered, targets)
            # The files table last: until it is in place the journals are kept, and merging
            # them again gives the same tables.
            rows_out.commit()
            errors_out.commit()
            files_out.commit()
        log.info(
            "merged %d files into %s in %.2f s", len(new), layout.out, time.perf_counter() - start
        )
    for journal in _journals(layout):
        journal.unlink()


# -- the journal ---------------------------------------------------------------------------


class _Journal:
    """Append-only record of finished files; flushed per batch, fsynced at most every second."""

    def __init__(self, layout: _Layout, labels: Sequence[str]) -> None:
        existing = _journals(layout)
        number = (
            int(existing[-1].name[len(_PART_PREFIX) : -len(_PART_SUFFIX)]) + 1 if existing else 1
        )
        self.path = layout.parts / f"{_PART_PREFIX}{number:06d}{_PART_SUFFIX}"
        self._stream: TextIO = open(self.path, "x", encoding="utf-8")  # noqa: SIM115
        self._synced = time.monotonic()
        self.add([json.dumps({"fer_onnx_batch": _JOURNAL_VERSION, "labels": list(labels)})])

    def add(self, lines: Sequence[str]) -> None:
        self._stream.write("".join(f"{line}\n" for line in lines))
        self._stream.flush()
        if time.monotonic() - self._synced > 1.0:
            os.fsync(self._stream.fileno())
            self._synced = time.monotonic()

    def close(self) -> None:
        if self._stream.closed:
            return
        self._stream.flush()
        os.fsync(self._stream.fileno())
        self._stream.close()


class _Lock:
    """The parts folder, held by one run at a time (an advisory lock, where the OS has one)."""

    def __init__(self, layout: _Layout) -> None:
        self.layout = layout
        self._fd: int | None = None

    def __enter__(self) -> _Lock:
        self.layout.parts.mkdir(exist_ok=True)
        fd = os.open(self.layout.parts / _LOCK, os.O_RDWR | os.O_CREAT, 0o644)
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
        if not _journals(self.layout):
            with contextlib.suppress(OSError):
                (self.layout.parts / _LOCK).unlink()
                self.layout.parts.rmdir()
        os.close(self._fd)
        self._fd = None


# -- reading one file (runs in the workers) ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Job:
    """What every worker needs to build its recognizer and read files (picklable)."""

    model: str
    detector: str
    device: Device
    align: bool
    margin: float
    every: int
    smoothing: float
    providers: tuple[str, ...] | None = None
    detector_options: tuple[tuple[str, Any], ...] = ()

    def make_detector(self, *, check_only: bool = False) -> Detector | str:
        """The detector, or its name when it takes the recognizer's defaults.

        With ``check_only`` a YuNet session runs on the CPU: the options are checked here, in
        the driver, whose providers may differ from the workers'.
        """
        options = dict(self.detector_options)
        if not options and not check_only:
            return self.detector  # built by the recognizer, on its providers and options
        if self.detector == "haar":
            return HaarDetector(**options)
        return YuNetDetector(
            None if self.detector == "yunet" else self.detector,
            device="cpu" if check_only else ("auto" if self.providers else self.device),
            providers=None if check_only else self.providers,
            session_config=SessionConfig(intra_op_threads=1),
            **options,
        )

    def recognizer(self) -> EmotionRecognizer:
        return EmotionRecognizer(
            self.model,
            detector=self.make_detector(),
            device="auto" if self.providers else self.device,  # providers override device
            providers=self.providers,
            session_config=SessionConfig(intra_op_threads=1),
            align=self.align,
            margin=self.margin,
        )


class _Done(NamedTuple):
    """One finished file, as a worker hands it back: its journal line and counts."""

    line: str
    faces: int
    ok: bool
    partial: bool


def _face_values(face: FaceEmotion, index: int, labels: Sequence[str]) -> list[Any]:
    b = face.box
    return [
        index,
        b.x,
        b.y,
        b.width,
        b.height,
        face.detection_score,
        face.label,
        face.score,
        *(face.probabilities[label] for label in labels),
    ]


def _kind(path: str) -> str:
    return "video" if Path(path).suffix.lower() in VIDEO_EXTENSIONS else "image"


def _video_rows(rec: EmotionRecognizer, job: _Job, path: str) -> tuple[list[list[Any]], VideoStats]:
    cap, stats = open_video(path)
    rows: list[list[Any]] = []
    try:
        video = VideoRecognizer(rec, smoothing=job.smoothing)
        for frame in read_frames(cap, stats, every=job.every):
            for i, face in enumerate(video.process(frame.image)):
                rows.append(
                    [
                        frame.index,
                        frame.timestamp,
                        face.track_id,
                        *_face_values(face, i, rec.labels),
                    ]
                )
    finally:
        cap.release()
    if stats.read == 0:
        raise VideoError(f"no frame of {path} could be decoded: {stats.summary()}")
    return rows, stats


def _not_analysed(stats: VideoStats) -> int:
    """Frames of a video that were not analysed: corrupt ones, and those missing at the end.

    A shortfall at the end that :attr:`VideoStats.complete` takes for an estimated length is
    not counted, as ``fer-onnx video`` does not count it.
    """
    return stats.corrupt + (0 if stats.complete else stats.missing_at_end)


def _empty_record(path: str, kind: str) -> dict[str, Any]:
    return dict.fromkeys(FILE_COLUMNS) | {"path": path, "kind": kind, "rows": []}


def _error_record(path: str, error_type: str, message: str) -> dict[str, Any]:
    record = _empty_record(path, _kind(path))
    with contextlib.suppress(OSError):
        st = os.stat(path)
        record.update(size=st.st_size, mtime_ns=st.st_mtime_ns)
    record.update(status="error", faces=0, error_type=error_type, message=message)
    return record


def _process_file(rec: EmotionRecognizer, job: _Job, path: str) -> dict[str, Any]:
    """Read one file; every failure becomes an error record, never an exception."""
    record = _empty_record(path, _kind(path))
    try:
        st = os.stat(path)  # before reading: a file changed meanwhile is read again next time
        record.update(size=st.st_size, mtime_ns=st.st_mtime_ns)
        if record["kind"] == "video":
            rows, stats = _video_rows(rec, job, path)
            record.update(frames=stats.read, corrupt_frames=_not_analysed(stats))
            if not stats.complete:  # as `fer-onnx video` says it, which exits 3 for it
                record.update(message=stats.summary())
        else:
            rows = [
                [None, None, None, *_face_values(face, i, rec.labels)]
                for i, face in enumerate(rec.recognize(path))
            ]
    except Exception as e:  # recorded in the errors table, never dropped
        if not isinstance(e, (FerOnnxError, OSError)):
            log.warning("unexpected %s reading %s", type(e).__name__, path, exc_info=True)
        record.update(
            status="error", faces=0, error_type=type(e).__name__, message=str(e) or repr(e)
        )
        return record
    record.update(status="ok", faces=len(rows), rows=rows)
    return record


def _done(record: dict[str, Any]) -> _Done:
    return _Done(
        json.dumps(record, separators=(",", ":")),
        int(record["faces"] or 0),
        record["status"] == "ok",
        bool(record.get("corrupt_frames")),
    )


class _Reader:
    """One recognizer and the job's settings: reads files into journal records.

    Held once per worker process (local engine) or per actor (Ray engine).
    """

    def __init__(self, job: _Job) -> None:
        self.job = job
        self.recognizer = job.recognizer()

    def read(self, paths: Iterable[str]) -> list[_Done]:
        """Read each file; failures are returned as error records."""
        return [_done(_process_file(self.recognizer, self.job, p)) for p in paths]


_READER: _Reader | None = None


def _quiet_ffmpeg() -> None:
    """Keep FFmpeg's raw log lines off a worker's stderr (it must run before the first video).

    OpenCV reads ``OPENCV_FFMPEG_LOGLEVEL`` once, when it first loads FFmpeg; ``-8`` is
    ``AV_LOG_QUIET``. What FFmpeg would say is in the error or the frame counts of the tables.
    Only worker processes (ours) call this; a user's own process is left as it is.
    """
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")


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
    _quiet_ffmpeg()
    cv2.setNumThreads(1)  # one core per worker process; OpenCV's own threads would compete


def _read_chunk(job: _Job, paths: list[str]) -> list[_Done]:
    global _READER
    if _READER is None or _READER.job != job:
        _READER = _Reader(job)
    return _READER.read(paths)


# -- the local engine --------------------------------------------------------------------------


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _chunks(paths: Sequence[str], workers: int, chunk_size: int) -> list[list[str]]:
    """Each video alone and first (the long tasks), then photos in chunks."""
    videos = [[p] for p in paths if _kind(p) == "video"]
    images = [p for p in paths if _kind(p) != "video"]
    size = max(1, min(chunk_size, math.ceil(len(images) / (workers * 4))))
    return videos + [images[i : i + size] for i in range(0, len(images), size)]


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


def _run_local(
    paths: Sequence[str],
    job: _Job,
    workers: int,
    chunk_size: int,
    emit: Callable[[Sequence[_Done]], None],
) -> None:
    """Read ``paths`` on a pool of processes; hand each finished chunk to ``emit``.

    A worker that dies (a crash inside a decoder, the OOM killer) breaks the pool: the files
    that were in flight are read again, one at a time, in a new pool, and a file that kills
    its worker when read alone is recorded as an error. Each pool first runs a no-op: when the
    pool breaks before that returns, the workers cannot start at all and the run stops.

    Raises:
        BatchError: The worker processes cannot start.
    """
    queue = deque(_chunks(paths, workers, chunk_size))
    workers = max(1, min(workers, len(queue)))
    context = multiprocessing.get_context("spawn")  # no fork of a process holding ORT threads

    def new_pool() -> tuple[ProcessPoolExecutor, Future[int]]:
        pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init)
        return pool, pool.submit(os.getpid)

    pool, ping = new_pool()
    pending: dict[Future[list[_Done]], list[str]] = {}
    suspects: deque[str] = deque()
    alone: set[str] = set()  # files read on their own after a crash
    try:
        while queue or suspects or pending:
            if suspects:
                if not pending:  # one at a time, so that a crash names its file
                    path = suspects.popleft()
                    alone.add(path)
                    pending[pool.submit(_read_chunk, job, [path])] = [path]
            else:
                while queue and len(pending) < 2 * workers:
                    chunk = queue.popleft()
                    pending[pool.submit(_read_chunk, job, chunk)] = chunk
            lost = _collect(pending, emit)
            if not lost:
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


def _collect(
    pending: dict[Future[list[_Done]], list[str]], emit: Callable[[Sequence[_Done]], None]
) -> list[str]:
    """Wait for some chunks and emit them; returns the files of chunks a broken pool lost."""
    lost: list[str] = []
    finished = wait(pending, return_when=FIRST_COMPLETED).done
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
    emit: Callable[[Sequence[_Done]], None],
) -> None:
    """A file that killed its worker when read alone is an error; the others are read again."""
    culprits = [path for path in lost if path in alone]
    for path in culprits:
        log.warning("%s killed its worker process when read alone", path)
    if culprits:
        emit([_done(_error_record(path, "WorkerCrash", _CRASH)) for path in culprits])
    suspects.extend(path for path in lost if path not in alone)
    if suspects:
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


# -- the job -------------------------------------------------------------------------------------


def _positive(value: object, *, allow_zero: bool = False) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    return value >= 0 if allow_zero else value > 0


DETECTOR_OPTIONS: dict[str, frozenset[str]] = {
    "yunet": frozenset({"score_threshold", "nms_threshold", "top_k", "detect_width"}),
    "haar": frozenset({"scale_factor", "min_neighbors", "min_size", "detect_width", "equalize"}),
}
"""The ``detector_options`` of :func:`run` each detector takes (a YuNet file: ``"yunet"``'s)."""


def _check_detector_options(
    detector: str, options: Mapping[str, Any] | None
) -> tuple[tuple[str, Any], ...]:
    if options is None:
        return ()
    if not isinstance(options, Mapping):
        raise BatchError(
            f"detector_options must be a mapping of option names to values, got "
            f"{type(options).__name__}"
        )
    kind = "haar" if detector == "haar" else "yunet"
    allowed = DETECTOR_OPTIONS[kind]
    unknown = sorted(str(k) for k in options if k not in allowed)
    if unknown:
        raise BatchError(
            f"detector {detector!r} takes no option {', '.join(unknown)}; its options are "
            f"{', '.join(sorted(allowed))}"
        )
    return tuple(sorted(options.items()))


def _check_providers(providers: Sequence[str] | None, device: Device) -> tuple[str, ...] | None:
    if providers is None:
        return None
    if isinstance(providers, str):
        providers = providers.split(",")
    names = tuple(providers)
    if not names or not all(isinstance(p, str) and p.strip() for p in names):
        raise BatchError(
            f"providers must be a list of onnxruntime provider names such as "
            f"['CPUExecutionProvider'], got {providers!r}"
        )
    if device != "auto":
        raise BatchError(
            f"pass either device={device!r} or providers, not both: providers choose the device"
        )
    return tuple(p.strip() for p in names)


def _make_job(
    model: str | os.PathLike[str],
    detector: str | os.PathLike[str],
    device: Device,
    align: bool,
    margin: float,
    every: int,
    smoothing: float,
    providers: Sequence[str] | None = None,
    detector_options: Mapping[str, Any] | None = None,
) -> _Job:
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise BatchError(f"every must be an integer >= 1, got {every!r}")
    if device not in ("auto", "cpu", "cuda"):
        raise BatchError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if not _positive(smoothing, allow_zero=True):
        raise BatchError(f"smoothing must be a number >= 0, got {smoothing!r}")
    if not _positive(margin, allow_zero=True) or margin > 1:
        raise BatchError(f"margin must be a number within 0..1, got {margin!r}")
    model_name = os.fspath(model)
    if model_name != "default" and model_name not in BUNDLED_MODELS:
        if not os.path.isfile(model_name):
            raise BatchError(
                f"model {model_name!r} is neither 'default', a bundled model "
                f"{BUNDLED_MODELS} nor an existing .onnx file"
            )
        model_name = _absolute(model_name)  # workers may run in another folder
    detector_name = os.fspath(detector)
    if detector_name not in ("yunet", "haar"):
        if not os.path.isfile(detector_name):
            raise BatchError(
                f"detector {detector_name!r} is neither 'yunet', 'haar' nor an existing YuNet "
                ".onnx file"
            )
        detector_name = _absolute(detector_name)
    return _Job(
        model_name,
        detector_name,
        device,
        bool(align),
        float(margin),
        every,
        smoothing,
        _check_providers(providers, device),
        _check_detector_options(detector_name, detector_options),
    )


def _labels(job: _Job) -> tuple[str, ...]:
    """The model's classes (the faces table's columns), read once here: a bad model fails now.

    The detector is built here too (on the CPU), so that a bad option fails once, now, rather
    than as one error per file in every worker.
    """
    if job.detector_options:
        job.make_detector(check_only=True)
    with EmotionRecognizer(job.model, detector=None, device="cpu") as rec:
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
        journal: _Journal,
        progress: Callable[[BatchProgress], None] | None,
        start: float,
    ) -> None:
        self.total, self.journal, self.progress, self.start = total, journal, progress, start
        self.done = self.files = self.faces = self.errors = self.partial = 0

    def emit(self, results: Sequence[_Done]) -> None:
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

    See the module docstring for the tables written, resuming and the engines.

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
        BatchError: No inputs, an unusable output (a folder, an unknown extension, one of the
            inputs, a file this module did not write), a bad option, or another run holding
            the same output.
        MissingDependencyError: pyarrow (for ``.parquet``) or Ray (for ``engine="ray"``) is
            not installed.
        FerOnnxError: The model or detector cannot be loaded (in the workers too).
    """
    start = time.perf_counter()
    _check_engine(engine, workers, chunk_size)
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    if isinstance(files_from, (str, os.PathLike)):
        files_from = [files_from]
    job = _make_job(
        model, detector, device, align, margin, every, smoothing, providers, detector_options
    )
    layout = _layout(out)
    _check_output_path(layout)
    if layout.fmt == "parquet":
        _arrow()
    if engine == "ray":
        from fer_onnx.batch_ray import check_ray

        check_ray()
    found = find_inputs(inputs, files_from, exclude=[*layout.tables, layout.parts])
    _check_not_input(layout, found)
    if not found.paths and not found.missing:
        raise BatchError(
            "no inputs found: name photos, videos, folders holding them, or glob patterns"
            + (f" ({found.ignored} files in the folders are neither)" if found.ignored else "")
        )
    labels = _labels(job)
    with _Lock(layout):
        _check_existing(layout, labels)
        done = _read_files_table(layout) | _read_journals(layout, labels, rows=False)
        plan = _plan(found.paths, done, retry_errors)
        todo = plan.todo
        skipped = plan.skipped
        journal = _Journal(layout, labels)
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
            missing = [_error_record(name, "FileNotFoundError", why) for name, why in found.missing]
            if missing:
                emit([_done(record) for record in missing])
            if todo and engine == "local":
                _run_local(todo, job, workers or _cores(), chunk_size, emit)
            elif todo:
                from fer_onnx.batch_ray import run_ray

                run_ray(todo, job, ray or RayOptions(), emit)
        except BaseException:
            # Ctrl-C, SIGTERM, a failing worker: keep what was finished, then stop.
            journal.close()
            try:
                _finalise(layout, labels)
            except Exception:
                log.exception("could not merge the finished files; they stay in %s", layout.parts)
            raise
        journal.close()
        _finalise(layout, labels)
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


def _count(n: int, noun: str) -> str:
    """``1 other file``, ``2 other files``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
