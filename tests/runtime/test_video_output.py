"""Annotated videos and plots: the format follows the suffix; the MP4 plays in a browser.

The codec table is read back with PyAV (fast, no browser). The playback test loads the written
MP4 in a ``<video>`` element of headless Chromium (Debian's ``chromium`` and ``chromium-driver``,
as in tests/runtime/test_web.py) and skips, saying why, without them or without PyAV.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from fer_onnx.errors import OutputError
from fer_onnx.sinks import (
    MAX_PLOTTED_TRACKS,
    TimelineSink,
    VideoSink,
    left_out_note,
    plot_format,
    timeline_figure,
)
from fer_onnx.types import Box, FaceEmotion
from fer_onnx.video import Frame
from fer_onnx.video_out import VIDEO_FORMATS, VideoFallbackWarning, count_video_frames

LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def frames(n: int, width: int, height: int) -> Iterator[Frame]:
    for i in range(n):
        image = np.zeros((height, width, 3), np.uint8)
        image[:, (i * 7) % width] = 255
        cv2.circle(image, (width // 2, height // 2), min(width, height) // 4, (0, 180, 255), -1)
        yield Frame(i, i / 10, image)


def face(track: int) -> FaceEmotion:
    probabilities = dict.fromkeys(LABELS, 0.1)
    probabilities["happy"] = 0.4
    return FaceEmotion(
        box=Box(10, 10, 40, 40),
        label="happy",
        score=0.4,
        probabilities=probabilities,
        track_id=track,
        detection_score=0.9,
    )


def write_video(path: Path, n: int = 12, size: tuple[int, int] = (96, 64), **kwargs: Any) -> Path:
    with VideoSink(path, 10.0, size, **kwargs) as sink:
        for frame in frames(n, *size):
            sink.write(frame, [face(1)])
        sink.finish()
        sink.commit()
    return path


def partials(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".partial" in p.name)


def probe(path: Path) -> tuple[str, str, int, int]:
    """(container names, codec, width, height) as PyAV reads them."""
    av = pytest.importorskip("av", reason="pip install 'fer-onnx[video]'")
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return container.format.name, stream.codec_context.name, stream.width, stream.height


# -- the format follows the suffix (PyAV) -----------------------------------------------------


@pytest.mark.parametrize(
    ("name", "container", "codec"),
    [
        ("a.mp4", "mp4", "h264"),
        ("a.MP4", "mp4", "h264"),
        ("a.m4v", "mp4", "h264"),
        ("a.mov", "mov", "h264"),
        ("a.mkv", "matroska", "h264"),
        ("a.webm", "webm", "vp9"),
        ("a.avi", "avi", "mpeg4"),
        ("a.gif", "gif", "gif"),
        ("annotated", "mp4", "h264"),  # no suffix: MP4
    ],
)
def test_video_format_follows_the_suffix(
    tmp_path: Path, name: str, container: str, codec: str
) -> None:
    pytest.importorskip("av", reason="pip install 'fer-onnx[video]'")
    out = write_video(tmp_path / name)
    formats, read_codec, width, height = probe(out)
    assert container in formats.split(",")
    assert read_codec == codec
    assert (width, height) == (96, 64)
    assert count_video_frames(out) == 12
    assert partials(tmp_path) == []


def test_odd_sizes_lose_a_row_and_column_for_h264(tmp_path: Path) -> None:
    pytest.importorskip("av", reason="pip install 'fer-onnx[video]'")
    out = write_video(tmp_path / "odd.mp4", size=(95, 63))
    assert probe(out)[2:] == (94, 62)
    assert probe(write_video(tmp_path / "odd.gif", size=(95, 63)))[2:] == (95, 63)


@pytest.mark.parametrize("name", ["a.jpg", "a.txt", "a.mpeg", "a.mp4.bak"])
def test_unsupported_video_suffix_is_refused_with_the_list(tmp_path: Path, name: str) -> None:
    with pytest.raises(OutputError, match=r"\.mp4, .*\.webm") as info:
        VideoSink(tmp_path / name, 10.0, (32, 32))
    assert Path(name).suffix in str(info.value)
    assert list(tmp_path.iterdir()) == []


# -- without PyAV ------------------------------------------------------------------------------


@pytest.fixture
def no_pyav(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` now raises ImportError


@pytest.mark.usefixtures("no_pyav")
def test_without_pyav_mp4_falls_back_to_mp4v_with_a_warning(tmp_path: Path) -> None:
    with pytest.warns(VideoFallbackWarning, match=r"mp4v.*pip install 'fer-onnx\[video\]'"):
        out = write_video(tmp_path / "a.mp4")
    capture = cv2.VideoCapture(str(out))
    fourcc = int(capture.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode()
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    capture.release()
    assert fourcc in ("mp4v", "FMP4")  # MPEG-4 Part 2; OpenCV reads it back as FFmpeg's FMP4
    assert count == 12


@pytest.mark.usefixtures("no_pyav")
@pytest.mark.parametrize("name", ["a.webm", "a.gif"])
def test_without_pyav_formats_opencv_cannot_write_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(OutputError, match=r"needs PyAV.*pip install 'fer-onnx\[video\]'"):
        VideoSink(tmp_path / name, 10.0, (32, 32))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.usefixtures("no_pyav")
def test_asking_for_pyav_without_it_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="needs PyAV"):
        VideoSink(tmp_path / "a.mp4", 10.0, (32, 32), backend="pyav")


def test_a_short_file_is_detected_and_not_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a full disk looks like: the file holds fewer frames than were written."""
    import fer_onnx.sinks

    monkeypatch.setattr(fer_onnx.sinks, "count_video_frames", lambda path: 3)
    out = tmp_path / "a.mp4"
    with VideoSink(out, 10.0, (32, 32), backend="opencv") as sink:
        for frame in frames(5, 32, 32):
            sink.write(frame, [])
        with pytest.raises(OutputError, match="5 frames written but the file holds 3"):
            sink.finish()
    assert list(tmp_path.iterdir()) == []


# -- timeline plots ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "magic"),
    [("t.png", b"\x89PNG"), ("t.svg", b"<?xml"), ("t.pdf", b"%PDF"), ("t.SVG", b"<?xml")],
)
def test_plot_format_follows_the_suffix(tmp_path: Path, name: str, magic: bytes) -> None:
    pytest.importorskip("matplotlib", reason="pip install 'fer-onnx[plot]'")
    with TimelineSink(tmp_path / name, LABELS, "clip") as sink:
        for frame in frames(5, 32, 32):
            sink.write(frame, [face(1), face(2)])
        sink.finish()
        sink.commit()
    assert (tmp_path / name).read_bytes().startswith(magic)
    assert partials(tmp_path) == []


@pytest.mark.parametrize("name", ["t.jpg", "t.mp4", "t.txt"])
def test_unsupported_plot_suffix_is_refused_with_the_list(tmp_path: Path, name: str) -> None:
    with pytest.raises(OutputError, match=r"\.png, \.svg, \.pdf"):
        TimelineSink(tmp_path / name, LABELS, "clip")
    assert plot_format(tmp_path / "no_suffix") == "png"
    assert list(tmp_path.iterdir()) == []


def many_tracks(count: int) -> dict[int, list[tuple[float, dict[str, float]]]]:
    """Track t is 10 + t frames long, so the longest are the highest ids."""
    probabilities = dict.fromkeys(LABELS, 1 / len(LABELS))
    return {t: [(i / 10, probabilities) for i in range(10 + t)] for t in range(count)}


def test_timeline_says_which_tracks_were_left_out() -> None:
    series = many_tracks(15)
    shown = list(range(14, 14 - MAX_PLOTTED_TRACKS, -1))
    note = left_out_note(series, shown)
    assert "8 longest of 15 tracks" in note
    assert "7 shorter tracks (16 frames or fewer each) left out" in note
    assert left_out_note(many_tracks(3), [0, 1, 2]) == ""


def test_timeline_of_many_tracks_names_the_rest_and_keeps_the_legend_off_the_curves() -> None:
    pytest.importorskip("matplotlib", reason="pip install 'fer-onnx[plot]'")
    figure = timeline_figure(many_tracks(15), LABELS, "clip")
    figure.canvas.draw()
    axes = figure.axes
    assert [ax.get_ylabel() for ax in axes] == [f"track {t}" for t in range(14, 6, -1)]
    assert "7 shorter tracks" in axes[0].get_title(loc="left")
    (legend,) = figure.legends
    assert [t.get_text() for t in legend.get_texts()] == list(LABELS)
    box = legend.get_window_extent()
    assert not any(ax.get_window_extent().overlaps(box) for ax in axes)
    assert not axes[0].get_legend()


def test_timeline_without_faces_says_so() -> None:
    pytest.importorskip("matplotlib", reason="pip install 'fer-onnx[plot]'")
    figure = timeline_figure({}, LABELS, "clip")
    assert [t.get_text() for t in figure.axes[0].texts] == ["no faces found"]
    assert figure.legends == []


# -- the MP4 plays in headless Chromium --------------------------------------------------------


def _executable(env: str, *names: str) -> str | None:
    if os.environ.get(env):
        return os.environ[env] if Path(os.environ[env]).is_file() else None
    return next((found for name in names if (found := shutil.which(name))), None)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium")
    from selenium.webdriver.chrome.service import Service

    chromium = _executable("FER_ONNX_CHROMIUM", "chromium", "chromium-browser")
    chromedriver = _executable("FER_ONNX_CHROMEDRIVER", "chromedriver")
    if chromium is None or chromedriver is None:
        pytest.skip(
            "headless Chromium not found: apt-get install chromium chromium-driver "
            "(or set FER_ONNX_CHROMIUM and FER_ONNX_CHROMEDRIVER)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=chromedriver))
    try:
        yield driver
    finally:
        driver.quit()


def play(browser: Any, video: Path, timeout: float = 30.0) -> tuple[int, int | None, int]:
    """Load ``video`` in a <video> element: (readyState, MediaError code or None, videoWidth)."""
    page = video.with_name("play.html")
    page.write_text(f'<video id="v" muted preload="auto" src="{video.name}"></video>')
    browser.get(page.as_uri())
    deadline = time.monotonic() + timeout
    while True:
        state: list[Any] = browser.execute_script(
            "const v = document.getElementById('v');"
            "return [v.readyState, v.error ? v.error.code : null, v.videoWidth];"
        )
        if state[0] >= 2 or state[1] is not None or time.monotonic() > deadline:
            return state[0], state[1], state[2]
        time.sleep(0.05)


def test_annotated_mp4_plays_in_chromium(browser: Any, tmp_path: Path) -> None:
    pytest.importorskip("av", reason="pip install 'fer-onnx[video]'")
    out = write_video(tmp_path / "annotated.mp4", n=20, size=(160, 120))
    ready, error, width = play(browser, out)
    assert error is None, f"MEDIA_ERR {error}: Chromium cannot play {probe(out)}"
    assert ready >= 2  # HAVE_CURRENT_DATA: the first frame is decoded
    assert width == 160


def test_the_mp4v_fallback_does_not_play_in_chromium(browser: Any, tmp_path: Path) -> None:
    """The control: the check above can fail, and the fallback's warning tells the truth."""
    out = write_video(tmp_path / "fallback.mp4", n=20, size=(160, 120), backend="opencv")
    ready, error, _ = play(browser, out)
    assert error == 4, (ready, error)  # MEDIA_ERR_SRC_NOT_SUPPORTED
    assert VIDEO_FORMATS[".mp4"].fallback == "mp4v"
