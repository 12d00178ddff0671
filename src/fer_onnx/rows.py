"""One face row: the columns, types and values of every table of faces fer-onnx writes.

The CSV and JSON sinks of videos (:func:`fer_onnx.sinks.face_row`) and the faces table of
:func:`fer_onnx.batch.run` write the same row, column for column, for the same face:

* ``source``: the file read (empty when the writer was not told it);
* ``frame``, ``timestamp`` (seconds) and ``track_id``: videos only, empty for photos;
* ``face``: its index among the faces of its photo or frame;
* ``x, y, width, height``: the box, in pixels;
* ``detection_score``: the detector's confidence (empty for boxes the caller passed);
* ``label``, ``score``, and one ``p_<label>`` column per class of the model, in model order.

Integers stay integers (``frame``, ``track_id``, ``face`` and the box: ``3``, never ``3.0``,
and nullable int64 in Parquet); floats are written at full precision, never rounded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from fer_onnx.types import FaceEmotion

if TYPE_CHECKING:
    from fer_onnx.video import Frame

__all__ = [
    "FACE_COLUMNS",
    "ROW_COLUMNS",
    "Column",
    "ColumnKind",
    "face_values",
    "row_columns",
    "row_schema",
]

ColumnKind = Literal["str", "int", "float"]
"""What a column holds: text, integers (int64) or floats (float64)."""


@dataclass(frozen=True, slots=True)
class Column:
    """One column of the face row.

    Attributes:
        name: The column's name.
        kind: ``"str"``, ``"int"`` or ``"float"``.
        nullable: Whether a value may be missing (empty in CSV, null in Parquet and JSON).
    """

    name: str
    kind: ColumnKind
    nullable: bool = False


FACE_COLUMNS: tuple[Column, ...] = (
    Column("source", "str", nullable=True),
    Column("frame", "int", nullable=True),
    Column("timestamp", "float", nullable=True),
    Column("track_id", "int", nullable=True),
    Column("face", "int"),
    Column("x", "int"),
    Column("y", "int"),
    Column("width", "int"),
    Column("height", "int"),
    Column("detection_score", "float", nullable=True),
    Column("label", "str"),
    Column("score", "float"),
)
"""The face row's columns before the ``p_<label>`` ones (each a float, never missing)."""

ROW_COLUMNS: tuple[str, ...] = tuple(column.name for column in FACE_COLUMNS)
"""Names of :data:`FACE_COLUMNS`, followed in a table by one ``p_<label>`` column per class."""


def row_schema(labels: Sequence[str]) -> tuple[Column, ...]:
    """Every column of the face row for a model with these classes, in order."""
    return FACE_COLUMNS + tuple(Column(f"p_{label}", "float") for label in labels)


def row_columns(labels: Sequence[str]) -> list[str]:
    """Names of every column of the face row for a model with these classes, in order."""
    return [*ROW_COLUMNS, *(f"p_{label}" for label in labels)]


def _int(value: int | None) -> int | None:
    return None if value is None else int(value)


def _float(value: float | None) -> float | None:
    return None if value is None else float(value)


def face_values(
    face: FaceEmotion,
    index: int,
    labels: Sequence[str],
    *,
    source: str | None = None,
    frame: Frame | None = None,
) -> list[Any]:
    """The values of one face's row, in the order of :func:`row_schema` (``labels``).

    Args:
        face: The face.
        index: Its index among the faces of its photo or frame.
        labels: The model's classes, in the order of the ``p_<label>`` columns.
        source: The file read, if known.
        frame: The video frame it was found in; ``None`` for a photo.

    Returns:
        Python ``int``, ``float``, ``str`` or ``None`` values (JSON-ready), unrounded.
    """
    b = face.box
    return [
        source,
        None if frame is None else int(frame.index),
        None if frame is None else float(frame.timestamp),
        _int(face.track_id),
        int(index),
        int(b.x),
        int(b.y),
        int(b.width),
        int(b.height),
        _float(face.detection_score),
        str(face.label),
        float(face.score),
        *(float(face.probabilities[label]) for label in labels),
    ]
