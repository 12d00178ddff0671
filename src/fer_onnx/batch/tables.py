"""The tables of a batch job: where they go, their columns and types, reading and writing them.

A job writing ``faces.parquet`` (or ``faces.csv``) writes three tables side by side: the faces
(one row per face, the columns of :mod:`fer_onnx.rows`), ``faces.errors.*`` and
``faces.files.*``, and keeps its journal in ``faces.parquet.parts/`` while it runs (see
:mod:`fer_onnx.batch.journal`).
"""

from __future__ import annotations

import contextlib
import csv
import heapq
import importlib
import json
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from fer_onnx.batch.errors import BatchError, MissingDependencyError
from fer_onnx.batch.inputs import absolute
from fer_onnx.rows import FACE_COLUMNS, ROW_COLUMNS, row_columns, row_schema

log = logging.getLogger(__name__)

__all__ = [
    "ERROR_COLUMNS",
    "FILE_COLUMNS",
    "INT_FILE_COLUMNS",
    "LOCK_NAME",
    "ROW_COLUMNS",
    "Layout",
    "arrow",
    "check_existing",
    "check_not_input",
    "check_output_path",
    "is_journal",
    "journals",
    "layout_of",
    "next_journal",
    "output_paths",
    "read_files_table",
    "write_csv",
    "write_parquet",
]

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
INT_FILE_COLUMNS = frozenset({"size", "mtime_ns", "faces", "frames", "corrupt_frames"})
"""The integer columns of the files table (each may be empty)."""

_FORMATS = {".parquet": "parquet", ".csv": "csv"}
_NULLABLE_INT_ROW = frozenset(c.name for c in FACE_COLUMNS if c.kind == "int" and c.nullable)
_PART_PREFIX, _PART_SUFFIX = "part-", ".jsonl"
LOCK_NAME = "lock"
"""The lock file in the parts folder (see :mod:`fer_onnx.batch.lock`)."""


# -- where the tables go -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Layout:
    """The files of one job: the three tables, the parts folder and the format.

    Attributes:
        out: The faces table.
        errors: The errors table.
        files: The files table.
        parts: The folder of the journals and the lock.
        fmt: ``"parquet"`` or ``"csv"``.
    """

    out: Path
    errors: Path
    files: Path
    parts: Path
    fmt: Literal["parquet", "csv"]

    @property
    def tables(self) -> tuple[Path, Path, Path]:
        """The faces, errors and files tables."""
        return self.out, self.errors, self.files


def output_paths(out: str | os.PathLike[str]) -> tuple[Path, Path, Path, Path]:
    """The files a job writes for ``out``: faces, errors and files tables, and its parts folder.

    ``faces.parquet`` gives ``faces.parquet``, ``faces.errors.parquet``, ``faces.files.parquet``
    and ``faces.parquet.parts/`` (present only while a run is going on or was interrupted).

    Raises:
        BatchError: ``out`` does not end in ``.parquet`` or ``.csv``.
    """
    layout = layout_of(out)
    return layout.out, layout.errors, layout.files, layout.parts


def layout_of(out: str | os.PathLike[str]) -> Layout:
    """The :class:`Layout` of a job writing ``out``.

    Raises:
        BatchError: ``out`` is empty or does not end in ``.parquet`` or ``.csv``.
    """
    name = os.fspath(out)
    if not name.strip():
        raise BatchError("the output path is empty; name a .parquet or .csv file")
    path = Path(absolute(name))
    fmt = _FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise BatchError(
            f"cannot tell the output format of {name!r}: name a file ending in .parquet "
            "(needs pyarrow) or .csv"
        )
    stem, suffix = path.stem, path.suffix
    return Layout(
        out=path,
        errors=path.with_name(f"{stem}.errors{suffix}"),
        files=path.with_name(f"{stem}.files{suffix}"),
        parts=path.with_name(f"{path.name}.parts"),
        fmt="parquet" if fmt == "parquet" else "csv",
    )


def check_output_path(layout: Layout) -> None:
    """Refuse an output in a missing or read-only folder, or one that is not a regular file.

    Raises:
        BatchError: Saying which path cannot be written and why.
    """
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


def check_not_input(layout: Layout, named: Iterable[str]) -> None:
    """Refuse an output table that is also one of the inputs named directly.

    Raises:
        BatchError: Naming the table.
    """
    for path in named:
        for own in layout.tables:
            if _same(path, own):
                raise BatchError(
                    f"the output {own} is also named as an input ({path}); choose another --out"
                )


def is_journal(path: Path) -> bool:
    """Whether ``path`` is named like a journal of the parts folder."""
    return path.name.startswith(_PART_PREFIX) and path.name.endswith(_PART_SUFFIX)


def journals(layout: Layout) -> list[Path]:
    """The journals in the parts folder, oldest first (``[]`` when there is no folder)."""
    if not layout.parts.is_dir():
        return []
    return sorted(p for p in layout.parts.iterdir() if is_journal(p))


def next_journal(layout: Layout) -> Path:
    """The path of a new journal, numbered after the last one."""
    existing = journals(layout)
    number = int(existing[-1].name[len(_PART_PREFIX) : -len(_PART_SUFFIX)]) + 1 if existing else 1
    return layout.parts / f"{_PART_PREFIX}{number:06d}{_PART_SUFFIX}"


# -- optional dependencies ---------------------------------------------------------------------


def arrow() -> tuple[Any, Any, Any]:
    """``(pyarrow, pyarrow.parquet, pyarrow.compute)``, or a clear error naming the extra.

    Raises:
        MissingDependencyError: pyarrow is not installed.
    """
    try:
        pa = importlib.import_module("pyarrow")
        pq = importlib.import_module("pyarrow.parquet")
        pc = importlib.import_module("pyarrow.compute")
    except ImportError as e:
        raise MissingDependencyError(
            "Parquet output needs pyarrow: pip install 'fer-onnx[batch]' (or name a .csv output)"
        ) from e
    return pa, pq, pc


# -- columns and types -------------------------------------------------------------------------


def _row_schema(pa: Any, labels: Sequence[str]) -> Any:
    types = {"str": pa.string(), "int": pa.int64(), "float": pa.float64()}
    return pa.schema([(column.name, types[column.kind]) for column in row_schema(labels)])


def _file_schema(pa: Any) -> Any:
    return pa.schema(
        [(name, pa.int64() if name in INT_FILE_COLUMNS else pa.string()) for name in FILE_COLUMNS]
    )


def _error_schema(pa: Any) -> Any:
    return pa.schema([(name, pa.string()) for name in ERROR_COLUMNS])


def _columns_of(path: Path, fmt: str) -> list[str]:
    """Column names of an existing table (``[]`` for an empty or unreadable file)."""
    try:
        if fmt == "parquet":
            _, pq, _ = arrow()
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


def _check_faces_table(layout: Layout, labels: Sequence[str], what: str) -> None:
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
    if not layout.files.exists() and not journals(layout):
        # (With journals it is a merge that stopped between renames: merging again mends it.)
        raise BatchError(
            f"{layout.out} exists but {layout.files.name}, the list of files it covers, does "
            "not: it cannot be resumed. Choose another output or move it away"
        )


def check_existing(layout: Layout, labels: Sequence[str]) -> None:
    """Refuse to touch tables this module did not write, or wrote for another model.

    Raises:
        BatchError: Saying which file is not ours, or belongs to another model, and what to do.
    """
    what = "was not written by fer-onnx batch"
    if layout.out.exists():
        _check_faces_table(layout, labels, what)
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
            p.name for p in layout.parts.iterdir() if p.name != LOCK_NAME and not is_journal(p)
        ]
        if strangers:
            raise BatchError(
                f"{layout.parts} holds files this job did not write ({', '.join(strangers[:5])}); "
                "move them away"
            )


# -- reading and writing -----------------------------------------------------------------------


def _int_or_none(value: str) -> int | None:
    return int(value) if value != "" else None


def read_files_table(layout: Layout) -> dict[str, dict[str, Any]]:
    """The records of the files table by path (``{}`` when there is none yet)."""
    if not layout.files.exists():
        return {}
    if layout.fmt == "parquet":
        _, pq, _ = arrow()
        records: list[dict[str, Any]] = pq.read_table(layout.files).to_pylist()
    else:
        with open(layout.files, newline="", encoding="utf-8") as stream:
            records = [
                {
                    k: (_int_or_none(v) if k in INT_FILE_COLUMNS else (v if v != "" else None))
                    for k, v in row.items()
                }
                for row in csv.DictReader(stream)
            ]
    return {r["path"]: r for r in records}


def write_parquet(
    layout: Layout,
    labels: Sequence[str],
    new: dict[str, dict[str, Any]],
    files: list[dict[str, Any]],
    targets: tuple[Path, Path, Path],
) -> None:
    """Write the Parquet tables to ``targets``: the old rows less those of ``new``, and ``new``.

    Args:
        layout: The job's files (the faces table is read from ``layout.out`` if it exists).
        labels: The model's classes.
        new: Journal records by path, with their ``rows``.
        files: Every record of the files table, sorted by path.
        targets: Where to write the faces, errors and files tables.

    Raises:
        BatchError: The existing faces table has other columns or types than this job writes.
    """
    pa, pq, pc = arrow()
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
    pq.write_table(_with_pandas_types(files_table, INT_FILE_COLUMNS), targets[2])


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


def write_csv(
    layout: Layout,
    labels: Sequence[str],
    new: dict[str, dict[str, Any]],
    files: list[dict[str, Any]],
    targets: tuple[Path, Path, Path],
) -> None:
    """Write the CSV tables to ``targets``: the old rows less those of ``new``, and ``new``.

    Args:
        layout: The job's files (the faces table is read from ``layout.out`` if it exists).
        labels: The model's classes.
        new: Journal records by path, with their ``rows``.
        files: Every record of the files table, sorted by path.
        targets: Where to write the faces, errors and files tables.

    Raises:
        BatchError: The existing faces table has other columns or types than this job writes.
    """
    header = row_columns(labels)

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
