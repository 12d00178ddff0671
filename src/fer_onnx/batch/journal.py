"""The journal of a batch job: each finished file, appended as it finishes, merged at the end.

While a job runs, each finished file becomes one JSON line of ``part-NNNNNN.jsonl`` in the
parts folder (its record: the files table's columns, and its face rows without ``source``).
At the end (or after an interruption, or when the same job starts again) the journals are
merged into the tables, each written to a temporary file and renamed into place, and deleted.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from fer_onnx.batch.errors import BatchError
from fer_onnx.batch.tables import (
    FILE_COLUMNS,
    INT_FILE_COLUMNS,
    Layout,
    journals,
    next_journal,
    read_files_table,
    write_csv,
    write_parquet,
)
from fer_onnx.outputs import AtomicOutput, deferred_signals
from fer_onnx.rows import ColumnKind, row_schema

log = logging.getLogger(__name__)

__all__ = ["JOURNAL_VERSION", "Journal", "finalise", "read_journals", "record_problem"]

JOURNAL_VERSION = 1
"""The version in the first line of every journal."""


class Journal:
    """Append-only record of finished files; flushed per batch, fsynced at most every second.

    Args:
        layout: The job's files; the journal is a new ``part-*.jsonl`` in its parts folder.
        labels: The model's classes, written in the journal's first line.
    """

    def __init__(self, layout: Layout, labels: Sequence[str]) -> None:
        self.path = next_journal(layout)
        self._stream: TextIO = open(self.path, "x", encoding="utf-8")  # noqa: SIM115
        self._synced = time.monotonic()
        self.add([json.dumps({"fer_onnx_batch": JOURNAL_VERSION, "labels": list(labels)})])

    def add(self, lines: Sequence[str]) -> None:
        """Append these records (one JSON line each)."""
        self._stream.write("".join(f"{line}\n" for line in lines))
        self._stream.flush()
        if time.monotonic() - self._synced > 1.0:
            os.fsync(self._stream.fileno())
            self._synced = time.monotonic()

    def close(self) -> None:
        """Flush, fsync and close (once)."""
        if self._stream.closed:
            return
        self._stream.flush()
        os.fsync(self._stream.fileno())
        self._stream.close()


def _check_header(journal: Path, layout: Layout, record: Any, labels: Sequence[str]) -> None:
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


def _lines(journal: Path) -> list[str]:
    with open(journal, encoding="utf-8") as stream:
        lines = stream.read().split("\n")
    if lines and lines[-1] != "":
        lines.pop()  # a record cut short by a kill: that file was still in flight
    return lines


def read_journals(
    layout: Layout, labels: Sequence[str], *, rows: bool
) -> dict[str, dict[str, Any]]:
    """Finished files recorded in the journals (later records win), with or without rows.

    A record that cannot be read (cut short, hand-edited, another version) is passed over
    with a warning: its file is read again.

    Raises:
        BatchError: A journal is not one of fer-onnx batch, or was written for another model.
    """
    records: dict[str, dict[str, Any]] = {}
    for journal in journals(layout):
        for number, line in enumerate(_lines(journal)):
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
                _check_header(journal, layout, record, labels)
                continue
            problem = record_problem(record, labels)
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


def _rows_problem(rows: Any, labels: Sequence[str]) -> str | None:
    if not isinstance(rows, list):
        return "no 'rows' list"
    kinds = [column.kind for column in row_schema(labels)[1:]]  # no source: it is 'path'
    for row in rows:
        if not isinstance(row, list) or len(row) != len(kinds):
            return f"a row is not a list of {len(kinds)} values"
        for kind, value in zip(kinds, row, strict=True):
            if value is not None and not _is_kind(value, kind):
                return f"a row holds {value!r} where a {kind} belongs"
    return None


def record_problem(record: Any, labels: Sequence[str]) -> str | None:
    """What is wrong with a journal record (hand-edited, or from another version), or ``None``."""
    if not isinstance(record, dict):
        return f"expected a JSON object, got {type(record).__name__}"
    if not isinstance(record.get("path"), str):
        return "no 'path'"
    if record.get("status") not in ("ok", "error"):
        return f"'status' is {record.get('status')!r}, expected 'ok' or 'error'"
    for name in INT_FILE_COLUMNS:
        value = record.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            return f"{name!r} is {value!r}, expected an integer"
    return _rows_problem(record.get("rows"), labels)


def _is_kind(value: Any, kind: ColumnKind) -> bool:
    if isinstance(value, bool):
        return False
    if kind == "str":
        return isinstance(value, str)
    if kind == "int":
        return isinstance(value, int)
    return isinstance(value, (int, float))


def finalise(layout: Layout, labels: Sequence[str]) -> None:
    """Merge the journals into the three tables (atomically, each), then drop the journals.

    Raises:
        BatchError: The existing faces table has other columns or types than this job writes.
        OSError: A table cannot be written (the journals are kept).
    """
    start = time.perf_counter()
    new = read_journals(layout, labels, rows=True)
    if new:
        files = read_files_table(layout)
        for path, record in new.items():
            files[path] = {k: record.get(k) for k in FILE_COLUMNS}
        ordered = [files[p] for p in sorted(files)]
        with contextlib.ExitStack() as stack:
            with deferred_signals():  # a Ctrl-C while they are created leaves no temporary file
                rows_out = stack.enter_context(AtomicOutput(layout.out))
                errors_out = stack.enter_context(AtomicOutput(layout.errors))
                files_out = stack.enter_context(AtomicOutput(layout.files))
            targets = (rows_out.tmp, errors_out.tmp, files_out.tmp)
            write = write_parquet if layout.fmt == "parquet" else write_csv
            write(layout, labels, new, ordered, targets)
            # The files table last: until it is in place the journals are kept, and merging
            # them again gives the same tables.
            rows_out.commit()
            errors_out.commit()
            files_out.commit()
        log.info(
            "merged %d files into %s in %.2f s", len(new), layout.out, time.perf_counter() - start
        )
    for journal in journals(layout):
        journal.unlink()
