"""Sinks and sources used wrongly: one typed error, and never a partial or empty file left."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import LABELS

from fer_onnx import (
    CsvSink,
    EmotionRecognizer,
    InvalidOptionError,
    InvalidTypeError,
    JsonSink,
    OutputError,
    VideoError,
    VideoRecognizer,
    VideoSink,
    VideoSource,
    finish_all,
    open_video,
    read_frames,
)
from fer_onnx.cli import main
from fer_onnx.sinks import TimelineSink
from fer_onnx.types import Box, FaceEmotion
from fer_onnx.video import Frame

FRAME = Frame(0, 0.0, np.zeros((64, 96, 3), np.uint8))


def mjpeg_clip(path: Path, n: int = 30) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, (96, 64))
    rng = np.random.default_rng(0)
    for _ in range(n):
        writer.write(rng.integers(0, 256, (64, 96, 3), np.uint8))  # > 400 bytes of JPEG each
    writer.release()
    return path


def jpeg_starts(data: bytes) -> list[int]:
    return [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xD8]


def face(labels: tuple[str, ...] = LABELS) -> FaceEmotion:
    probabilities = dict.fromkeys(labels, 1.0 / len(labels))
    return FaceEmotion(Box(10, 10, 20, 20), labels[0], probabilities[labels[0]], probabilities)


def make_sink(kind: str, folder: Path) -> CsvSink | JsonSink | VideoSink:
    """A CSV, JSON or video sink writing into ``folder``."""
    if kind == "csv":
        return CsvSink(folder / "f.csv", LABELS)
    if kind == "json":
        return JsonSink(folder / "f.json")
    return VideoSink(folder / "f.mp4", 10, (96, 64))


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# -- 1. a video with no decodable frame -------------------------------------------------------


def test_video_with_no_decodable_frame_is_an_error_and_writes_nothing(
    tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clip = mjpeg_clip(tmp_path / "full.avi", n=120)
    data = clip.read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: jpeg_starts(data)[0]])  # the header announces 120 frames, none is there
    clip.unlink()
    code = main(
        [
            *("video", str(cut), "--model", str(tiny_model), "--no-progress"),
            *("--out", str(tmp_path / "o.mp4"), "--csv", str(tmp_path / "o.csv")),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1
    assert "no frame of" in err
    assert "could be decoded" in err
    assert leftovers(tmp_path) == ["cut.avi"]


def test_a_video_sink_that_got_no_frame_puts_nothing_in_place(tmp_path: Path) -> None:
    out = tmp_path / "ve.mp4"
    with (
        VideoSink(out, 30, (320, 240)) as video,
        CsvSink(tmp_path / "f.csv", LABELS) as table,
        pytest.raises(OutputError, match="no frame was written"),
    ):
        finish_all([video, table])
    assert leftovers(tmp_path) == []


# -- 2. arguments checked before any temporary file; abandoned sinks removed ------------------


BAD_SINKS: list[tuple[Callable[[Path], object], type[Exception]]] = [
    (lambda d: CsvSink(d / "b.csv", None), InvalidTypeError),  # type: ignore[arg-type]
    (lambda d: CsvSink(d / "b.csv", "happy"), InvalidTypeError),
    (lambda d: CsvSink(d / "b.csv", ()), InvalidOptionError),
    (lambda d: CsvSink(d / "b.csv", ("a", "a")), InvalidOptionError),
    (lambda d: CsvSink(d / "b.csv", LABELS, source=3), InvalidTypeError),  # type: ignore[arg-type]
    (lambda d: JsonSink(d / "b.json", source=3), InvalidTypeError),  # type: ignore[arg-type]
    (lambda d: VideoSink(d / "a.mp4", 30, "big"), InvalidTypeError),  # type: ignore[arg-type]
    (lambda d: VideoSink(d / "a.mp4", 30, (0, 10)), InvalidOptionError),
    (lambda d: VideoSink(d / "a.mp4", 30, (1.5, 10)), InvalidTypeError),  # type: ignore[arg-type]
    (lambda d: VideoSink(d / "a.mp4", "30", (10, 10)), InvalidTypeError),  # type: ignore[arg-type]
    (lambda d: VideoSink(d / "a.mp4", float("nan"), (10, 10)), InvalidOptionError),
    (lambda d: VideoSink(d / "a.mp4", 0, (10, 10)), InvalidOptionError),
    (lambda d: VideoSink(d / "a.mp4", 30, (10, 10), "x"), InvalidOptionError),  # type: ignore[arg-type]
    (lambda d: TimelineSink(d / "t.png", None, "t"), InvalidTypeError),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(("make", "error"), BAD_SINKS)
def test_bad_sink_arguments_are_typed_and_leave_no_file(
    make: Callable[[Path], object], error: type[Exception], tmp_path: Path
) -> None:
    with pytest.raises(error):
        make(tmp_path)
    assert leftovers(tmp_path) == []


def test_an_abandoned_sink_is_removed_when_collected(tmp_path: Path) -> None:
    # JSON: no open handle, so no ResourceWarning (an abandoned CsvSink warns of its file)
    sink = JsonSink(tmp_path / "f.json")
    sink.write(FRAME, [face()])
    sink.finish()
    assert len(leftovers(tmp_path)) == 1  # the hidden partial file
    del sink
    gc.collect()
    assert leftovers(tmp_path) == []


def test_an_unfinished_sink_is_removed_at_exit(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from fer_onnx import CsvSink, JsonSink\n"
        "keep = [CsvSink(sys.argv[1] + '/f.csv', ('a', 'b')), JsonSink(sys.argv[1] + '/f.json')]\n"
        "assert len(__import__('os').listdir(sys.argv[1])) == 2\n"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, timeout=120)
    assert leftovers(tmp_path) == []


def test_a_forked_child_never_removes_the_parents_partial_file(tmp_path: Path) -> None:
    from fer_onnx.outputs import _remove_partial

    with CsvSink(tmp_path / "f.csv", LABELS) as sink:
        _remove_partial(sink.output.tmp, os.getpid() + 1)  # the clean-up, run in another process
        assert len(leftovers(tmp_path)) == 1
        finish_all([sink])
    assert leftovers(tmp_path) == ["f.csv"]


# -- 3. a VideoSource is read once ------------------------------------------------------------


def test_a_video_source_is_read_once(tmp_path: Path) -> None:
    clip = mjpeg_clip(tmp_path / "c.avi", n=10)
    source = VideoSource(clip, every=4)
    assert len(list(source)) == 3
    with pytest.raises(VideoError, match=r"already read.*new VideoSource"):
        list(source)
    assert source.stats.complete
    assert "NOT ANALYSED" not in source.stats.summary()
    source.close()
    with pytest.raises(VideoError, match=r"closed.*new VideoSource"):
        list(source)


def test_a_second_iter_continues_the_pass_as_a_file_does(tmp_path: Path) -> None:
    clip = mjpeg_clip(tmp_path / "c.avi", n=10)
    with VideoSource(clip, every=4) as source:
        first = next(iter(source))  # peek at the first frame, then loop over the rest
        rest = [frame.index for frame in source]
    assert first.index == 0
    assert rest == [4, 8]
    assert source.stats.complete


def test_a_video_source_closed_while_read_raises_and_keeps_its_stats(tmp_path: Path) -> None:
    clip = mjpeg_clip(tmp_path / "c.avi", n=10)
    with VideoSource(clip) as source:
        frames = iter(source)
        next(frames)
    with pytest.raises(VideoError, match="closed"):
        next(frames)
    assert source.stats.read == 1
    assert source.stats.missing_at_end == 0
    with VideoSource(clip) as source:
        pass
    with pytest.raises(VideoError, match="closed"):
        iter(source)


# -- 4. typed errors for wrong calls ----------------------------------------------------------


def test_video_recognizer_needs_a_recognizer() -> None:
    with pytest.raises(InvalidTypeError, match="EmotionRecognizer"):
        VideoRecognizer(None)  # type: ignore[arg-type]


def test_faces_with_other_labels_than_the_sink_are_refused(tmp_path: Path) -> None:
    with CsvSink(tmp_path / "f.csv", ("a", "b")) as sink:
        with pytest.raises(InvalidOptionError, match=r"\('a', 'b'\)") as caught:
            sink.write(FRAME, [face()])
        assert "happy" in str(caught.value) or "angry" in str(caught.value)
    with (
        CsvSink(tmp_path / "f.csv", (*LABELS, "extra")) as sink,  # never an empty column
        pytest.raises(InvalidOptionError, match="extra"),
    ):
        sink.write(FRAME, [face()])
    with (
        TimelineSink(tmp_path / "t.png", ("a", "b"), "t") as plot,
        pytest.raises(InvalidOptionError),
    ):
        plot.write(FRAME, [face()])
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("kind", ["csv", "json", "video"])
def test_wrong_writes_are_typed_errors(kind: str, tmp_path: Path) -> None:
    with make_sink(kind, tmp_path) as sink:
        with pytest.raises(InvalidTypeError, match="FaceEmotion"):
            sink.write(FRAME, None)  # type: ignore[arg-type]
        with pytest.raises(InvalidTypeError, match="Frame"):
            sink.write(FRAME.image, [])  # type: ignore[arg-type]
        sink.write(FRAME, [face()])
        finish_all([sink])
        with pytest.raises(OutputError, match="finished"):
            sink.write(FRAME, [face()])
        finish_all([sink])  # finishing twice changes nothing
    with pytest.raises(OutputError, match="new sink"):
        sink.write(FRAME, [])
    assert len(leftovers(tmp_path)) == 1


@pytest.mark.parametrize("kind", ["csv", "json", "video"])
def test_a_sink_closed_before_finishing_takes_no_more(kind: str, tmp_path: Path) -> None:
    with make_sink(kind, tmp_path) as sink:
        sink.write(FRAME, [face()])
        sink.close()
        with pytest.raises(OutputError, match="it is closed"):
            sink.write(FRAME, [face()])
        with pytest.raises(OutputError, match="is closed; nothing was put in place"):
            finish_all([sink])
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("sinks", [None, "f.csv", [None], [3]])
def test_finish_all_takes_sinks(sinks: object) -> None:
    with pytest.raises(InvalidTypeError, match="sinks"):
        finish_all(sinks)  # type: ignore[arg-type]


# -- 5. corrupt frames that --every passes over are not counted -------------------------------


def test_corrupt_frames_every_would_skip_are_not_counted_corrupt(tmp_path: Path) -> None:
    clip = mjpeg_clip(tmp_path / "c.avi", n=40)
    data = bytearray(clip.read_bytes())
    starts = jpeg_starts(bytes(data))
    for k in range(10, 20):
        data[starts[k] : starts[k] + 400] = b"\x00" * 400
    clip.write_bytes(bytes(data))
    cap, stats = open_video(clip)
    try:
        indices = [frame.index for frame in read_frames(cap, stats, every=3)]
    finally:
        cap.release()
    assert indices == [0, 3, 6, 9, 21, 24, 27, 30, 33, 36, 39]
    assert stats.corrupt == 3  # 12, 15 and 18 were to be analysed; 10, 11, 13, ... were not
    assert stats.corrupt_indices == [12, 15, 18]
    assert stats.read + stats.skipped + stats.corrupt == 40
    assert "NOT ANALYSED: 3 frames" in stats.summary()


def test_a_video_sink_takes_recognizer_output(tiny_model: Path, tmp_path: Path) -> None:
    clip = mjpeg_clip(tmp_path / "c.avi", n=4)
    with (
        EmotionRecognizer(tiny_model) as rec,
        VideoSource(clip) as source,
        CsvSink(tmp_path / "f.csv", rec.labels) as table,
    ):
        video = VideoRecognizer(rec)
        for frame in source:
            table.write(frame, video.process(frame.image))
        finish_all([table])
    assert (tmp_path / "f.csv").read_text().startswith("source,frame,")
