"""One face row: the video sinks and the batch tables write the same columns, types and values."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import MEDIA, shared_file

from fer_onnx import Box, CsvSink, EmotionRecognizer, FaceEmotion, JsonSink, VideoRecognizer
from fer_onnx.batch import ROW_COLUMNS, run
from fer_onnx.rows import FACE_COLUMNS, row_columns, row_schema
from fer_onnx.sinks import face_row
from fer_onnx.video import Frame, VideoSource

ARROW = {"str": pa.string(), "int": pa.int64(), "float": pa.float64()}
PYTHON = {"str": str, "int": int, "float": float}


def write_clip(path: Path, source: Path, frames: int = 6) -> Path:
    """A short MP4 of a real face drifting right (one track)."""
    image = cv2.imread(str(source))
    height, width = image.shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 10.0, (width, height))
    for i in range(frames):
        writer.write(np.roll(image, 3 * i, axis=1))
    writer.release()
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A short clip with one face in every frame, and a photo."""
    root = tmp_path_factory.mktemp("rows")
    photo = root / "obama.jpg"
    shutil.copy(shared_file(MEDIA / "obama.jpg"), photo)
    return write_clip(root / "clip.mp4", shared_file(MEDIA / "justin.jpg")), photo


def face(probabilities: dict[str, float], **kwargs: Any) -> FaceEmotion:
    label = max(probabilities, key=lambda k: probabilities[k])
    return FaceEmotion(Box(1, 2, 30, 40), label, probabilities[label], probabilities, **kwargs)


# -- the schema ----------------------------------------------------------------------------------


def test_one_schema_for_batch_and_sinks() -> None:
    assert tuple(c.name for c in FACE_COLUMNS) == ROW_COLUMNS
    assert row_columns(["a", "b"]) == [*ROW_COLUMNS, "p_a", "p_b"]
    kinds = {c.name: c.kind for c in row_schema(["a"])}
    assert [n for n, k in kinds.items() if k == "int"] == [
        "frame",
        "track_id",
        "face",
        "x",
        "y",
        "width",
        "height",
    ]
    assert kinds["p_a"] == "float"
    nullable = {c.name for c in FACE_COLUMNS if c.nullable}
    assert nullable == {"source", "frame", "timestamp", "track_id", "detection_score"}


def test_face_row_keeps_integers_and_full_precision() -> None:
    probabilities = {"happy": 0.123456789012, "sad": 1 - 0.123456789012}
    row = face_row(
        Frame(3, 0.1234567891, np.zeros((1, 1, 3), np.uint8)),
        face(probabilities, track_id=7, detection_score=0.987654321),
        2,
        source="clip.mp4",
    )
    assert list(row) == row_columns(["happy", "sad"])
    assert row["source"] == "clip.mp4"
    assert (row["frame"], row["track_id"], row["face"]) == (3, 7, 2)
    assert all(type(row[k]) is int for k in ("frame", "track_id", "face", "x", "y"))
    assert row["timestamp"] == 0.1234567891  # no rounding (was 4 decimals)
    assert row["detection_score"] == 0.987654321
    assert row["p_happy"] == probabilities["happy"]  # (was 6 decimals)
    assert row["score"] == probabilities["sad"]

    bare = face_row(Frame(0, 0.0, np.zeros((1, 1, 3), np.uint8)), face(probabilities))
    assert (bare["source"], bare["track_id"], bare["detection_score"]) == (None, None, None)


# -- batch tables: integers stay integers --------------------------------------------------------


def test_batch_parquet_columns_have_the_schema_types(
    inputs: tuple[Path, Path], tmp_path: Path
) -> None:
    clip, photo = inputs
    out = tmp_path / "faces.parquet"
    run([clip, photo], out, workers=1)
    table = pq.read_table(out)
    with EmotionRecognizer(detector=None) as rec:
        labels = rec.labels
    assert [(f.name, f.type) for f in table.schema] == [
        (c.name, ARROW[c.kind]) for c in row_schema(labels)
    ]
    rows = table.to_pylist()
    video = [r for r in rows if r["source"] == str(clip)]
    photos = [r for r in rows if r["source"] == str(photo)]
    assert len(video) == 6
    assert photos
    assert [r["frame"] for r in video] == list(range(6))
    assert all(type(r["frame"]) is int and type(r["track_id"]) is int for r in video)
    assert all(r["frame"] is None and r["track_id"] is None for r in photos)

    pandas = pytest.importorskip("pandas")
    frame = pandas.read_parquet(out)
    assert str(frame["frame"].dtype) == "Int64"
    assert str(frame["track_id"].dtype) == "Int64"
    assert str(frame["face"].dtype) == "int64"


def test_batch_csv_writes_integers_without_a_decimal_point(
    inputs: tuple[Path, Path], tmp_path: Path
) -> None:
    clip, photo = inputs
    out = tmp_path / "faces.csv"
    run([clip, photo], out, workers=1)
    with open(out, newline="") as stream:
        rows = list(csv.DictReader(stream))
    for row in rows:
        for name in ("frame", "track_id", "face", "x", "y", "width", "height"):
            assert row[name] == "" or row[name].lstrip("-").isdigit(), (name, row[name])
    assert [r["frame"] for r in rows if r["source"] == str(clip)] == [str(i) for i in range(6)]


# -- a sink row and a batch row of the same face ---------------------------------------------------


def test_sink_and_batch_rows_of_the_same_face_match(
    inputs: tuple[Path, Path], tmp_path: Path
) -> None:
    clip, _ = inputs
    out = tmp_path / "faces.parquet"
    run([clip], out, workers=1)
    batch_rows = pq.read_table(out).to_pylist()
    with (
        EmotionRecognizer() as rec,
        VideoSource(clip) as source,
        CsvSink(tmp_path / "sink.csv", rec.labels, source=str(clip)) as csv_sink,
        JsonSink(tmp_path / "sink.json", source=str(clip)) as json_sink,
    ):
        video = VideoRecognizer(rec)
        for frame in source:
            faces = video.process(frame.image)
            csv_sink.write(frame, faces)
            json_sink.write(frame, faces)
        csv_sink.finish()
        json_sink.finish()
        csv_sink.commit()
        json_sink.commit()
        labels = rec.labels

    json_rows = json.loads((tmp_path / "sink.json").read_text())
    assert len(json_rows) == len(batch_rows) == 6
    kinds = {c.name: c.kind for c in row_schema(labels)}
    for mine, theirs in zip(json_rows, batch_rows, strict=True):
        assert mine.pop("landmarks")
        assert list(mine) == list(theirs) == row_columns(labels)
        for name, value in theirs.items():
            if value is None:
                assert mine[name] is None, name
                continue
            assert type(mine[name]) is type(value) is PYTHON[kinds[name]], name
            if kinds[name] == "float":
                assert mine[name] == pytest.approx(value, abs=1e-5), name
            else:
                assert mine[name] == value, name

    batch_csv = tmp_path / "faces.csv"
    run([clip], batch_csv, workers=1)
    with open(tmp_path / "sink.csv", newline="") as a, open(batch_csv, newline="") as b:
        sink_lines, batch_lines = list(csv.reader(a)), list(csv.reader(b))
    assert sink_lines[0] == batch_lines[0] == row_columns(labels)
    ints = [i for i, name in enumerate(sink_lines[0]) if kinds[name] == "int"]
    for mine_line, their_line in zip(sink_lines[1:], batch_lines[1:], strict=True):
        assert [mine_line[i] for i in ints] == [their_line[i] for i in ints]
