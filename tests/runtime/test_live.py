"""The webcam: headless OpenCV detected and explained; camera or replayed file, alike in the CLI
and in examples/webcam.py."""

from __future__ import annotations

import importlib.util
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np
import pytest
from conftest import ROOT

import fer_onnx.live
from fer_onnx.cli import main
from fer_onnx.errors import VideoError
from fer_onnx.live import (
    GUI_FIX,
    DisplayError,
    check_display,
    open_camera,
    opencv_gui,
    parse_camera,
)

NO_CAMERA = 97


def installed(name: str) -> bool:
    try:
        version(name)
    except PackageNotFoundError:
        return False
    return True


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("example_webcam", ROOT / "examples/webcam.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def write_clip(path: Path, n: int = 6) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, (64, 48))
    for i in range(n):
        writer.write(np.full((48, 64, 3), 40 * i, np.uint8))
    writer.release()
    return path


@pytest.mark.parametrize(
    ("info", "gui"),
    [
        ("General\n  GUI:                           NONE\n  Media I/O:\n", None),
        (
            "  GUI:                           GTK3\n    GTK+:                YES (ver 3.24)\n",
            "GTK3",
        ),
        ("  GUI:                           QT5\n    QT:                  YES (ver 5.15)\n", "QT5"),
        ("  GUI: \n    GTK+:                        YES (ver 3.22)\n  Media I/O:\n", "GTK"),
        ("  GUI: \n    GTK+:                        NO\n  Media I/O:\n    PNG: YES\n", None),
        ("no such section\n", None),
    ],
)
def test_opencv_gui_reads_the_build_information(info: str, gui: str | None) -> None:
    assert opencv_gui(info) == gui


def test_the_installed_headless_wheel_is_recognised() -> None:
    if not installed("opencv-python-headless") or installed("opencv-python"):
        pytest.skip("this test reads the headless OpenCV wheel (what pip install fer-onnx brings)")
    assert opencv_gui() is None


def test_headless_opencv_is_named_with_its_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fer_onnx.live, "opencv_gui", lambda: None)
    monkeypatch.setenv("DISPLAY", ":0")
    with pytest.raises(DisplayError) as info:
        check_display()
    message = str(info.value)
    assert "headless build" in message
    assert GUI_FIX in message
    assert "no display" not in message
    assert "fer-onnx web" in message  # what works without a window


def test_a_missing_display_is_named_apart_from_opencv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fer_onnx.live, "opencv_gui", lambda: "GTK3")
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(DisplayError, match="no display available") as info:
        check_display()
    assert "headless" not in str(info.value)


@pytest.mark.parametrize(
    ("text", "source"), [("0", 0), ("12", 12), ("clip.mp4", "clip.mp4"), ("./2024", "./2024")]
)
def test_parse_camera(text: str, source: int | str) -> None:
    assert parse_camera(text) == source


def test_a_missing_camera_gets_camera_advice_not_codec_advice() -> None:
    with pytest.raises(VideoError, match=f"cannot open camera {NO_CAMERA}") as info:
        open_camera(NO_CAMERA)
    message = str(info.value)
    assert "--camera" in message
    assert "codec" not in message
    assert "H.264" not in message
    with pytest.raises(VideoError, match=">= 0"):
        open_camera(-1)


def test_example_without_a_camera_gives_camera_advice(
    tiny_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert load_example().main(["--camera", str(NO_CAMERA), "--model", str(tiny_model)]) == 2
    out = capsys.readouterr().out
    assert f"cannot open camera {NO_CAMERA}" in out
    assert "codec" not in out


@pytest.fixture
def fake_window(monkeypatch: pytest.MonkeyPatch) -> list[np.ndarray]:
    """OpenCV's window calls replaced (this OpenCV may be headless); shown frames collected."""
    shown: list[np.ndarray] = []
    monkeypatch.setattr(fer_onnx.live, "display_problems", list)
    monkeypatch.setattr(cv2, "imshow", lambda title, image: shown.append(image.copy()))
    monkeypatch.setattr(cv2, "waitKey", lambda delay: -1)
    monkeypatch.setattr(cv2, "destroyAllWindows", lambda: None)
    return shown


def test_cli_and_example_both_replay_a_file_with_camera(
    tiny_model: Path, tmp_path: Path, fake_window: list[np.ndarray]
) -> None:
    clip = write_clip(tmp_path / "clip.avi", n=6)
    assert main(["webcam", "--camera", str(clip), "--model", str(tiny_model)]) == 0
    assert len(fake_window) == 6  # the file's end ends the window, with exit code 0
    fake_window.clear()
    assert load_example().main(["--camera", str(clip), "--model", str(tiny_model)]) == 0
    assert len(fake_window) == 6


def test_cli_webcam_on_headless_opencv_says_so(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(fer_onnx.live, "opencv_gui", lambda: None)
    monkeypatch.setenv("DISPLAY", ":0")
    assert main(["webcam", "--model", str(tiny_model)]) == 2
    err = capsys.readouterr().err
    assert "headless build" in err
    assert GUI_FIX in err
