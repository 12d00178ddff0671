"""The fer-onnx command line: every command and fault."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from conftest import MEDIA, shared_file

from fer_onnx import EmotionRecognizer, VideoRecognizer, open_video, read_frames
from fer_onnx.cli import main


def write_clip(path: Path, n: int = 20, fourcc: str = "mp4v") -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*fourcc), 10.0, (160, 120))
    rng = np.random.default_rng(0)
    for _ in range(n):
        writer.write(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8))
    writer.release()
    return path


def corrupt_clip(path: Path, frames: tuple[int, ...]) -> Path:
    """An MJPEG AVI whose given frames' JPEG data is zeroed (they fail to decode)."""
    write_clip(path, fourcc="MJPG")
    data = bytearray(path.read_bytes())
    starts = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xD8]
    for k in frames:
        data[starts[k] : starts[k] + 400] = b"\x00" * 400
    path.write_bytes(bytes(data))
    return path


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".partial" in p.name)


def test_help_everywhere(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        [],
        ["image"],
        ["video"],
        ["webcam"],
        ["web"],
        ["model"],
        ["model", "inspect"],
        ["batch"],
    ):
        with pytest.raises(SystemExit) as info:
            main([*argv, "--help"])
        assert info.value.code == 0
        assert "usage: fer-onnx" in capsys.readouterr().out


def test_entry_point_is_installed() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "fer_onnx.cli", "--version"], capture_output=True, text=True
    )
    assert result.returncode == 0
    assert result.stdout.startswith("fer-onnx ")


def test_image_table_json_and_annotated(
    tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = shared_file(MEDIA / "two_people.jpg")
    assert main(["image", str(photo), "--model", str(tiny_model)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert len([ln for ln in table if "two_people.jpg" in ln]) == 2
    assert (
        main(["image", str(photo), "--model", str(tiny_model), "--json", "--out", str(tmp_path)])
        == 0
    )
    (report,) = json.loads(capsys.readouterr().out)
    assert len(report["faces"]) == 2
    assert set(report["faces"][0]) >= {
        "box",
        "label",
        "score",
        "probabilities",
    }
    annotated = cv2.imread(str(tmp_path / "two_people_fer.jpg"))
    assert annotated is not None
    assert annotated.shape == cv2.imread(str(photo)).shape
    assert leftovers(tmp_path) == []


def test_image_errors_are_reported_not_dropped(
    tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_text("no image")
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((100, 100, 3), 128, np.uint8))
    code = main(
        ["image", str(blank), str(bad), str(tmp_path / "missing.png"), "--model", str(tiny_model)]
    )
    out, err = capsys.readouterr()
    assert code == 1
    assert "no face found" in out
    assert f"cannot decode {bad} as an image" in err
    assert f"image file not found: {tmp_path / 'missing.png'}" in err
    assert err.count("bad.jpg") == err.count("missing.png") == 1  # each named once
    args = ["image", str(blank), str(bad), "--model", str(tiny_model), "--json"]
    assert main(args) == 1
    report = json.loads(capsys.readouterr().out)
    assert [entry["file"] for entry in report] == [str(blank), str(bad)]  # every input
    assert report[0]["faces"] == []
    assert report[0]["error"] is None
    assert report[1]["faces"] is None
    assert "cannot decode" in report[1]["error"]


@pytest.mark.parametrize(
    ("out", "message"),
    [
        ("-", "'-' (standard output) does not apply"),
        ("result.png", "looks like an image file name"),
    ],
)
def test_image_out_must_be_a_folder(
    tiny_model: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    out: str,
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    photo = shared_file(MEDIA / "two_people.jpg")
    assert main(["image", str(photo), "--model", str(tiny_model), "--out", out]) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # no folder made


def test_missing_model_is_one_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["image", str(tmp_path / "x.png"), "--model", str(tmp_path / "none.onnx")]) == 2
    assert "model file not found" in capsys.readouterr().err


def test_video_outputs_on_real_clip(tiny_model: Path, tmp_path: Path) -> None:
    clip = shared_file(MEDIA / "short_hamilton_clip.mp4")
    out = tmp_path / "annotated.mp4"
    code = main(
        [
            "video",
            str(clip),
            "--model",
            str(tiny_model),
            "--csv",
            str(tmp_path / "faces.csv"),
            "--json",
            str(tmp_path / "faces.json"),
            "--out",
            str(out),
            "--plot",
            str(tmp_path / "t.png"),
            "--no-progress",
        ]
    )
    assert code == 0
    rows = list(csv.DictReader((tmp_path / "faces.csv").read_text().splitlines()))
    # The CSV holds exactly the faces found per frame, summed: recount them independently.
    cap, stats = open_video(clip)
    with EmotionRecognizer(tiny_model) as rec:
        video = VideoRecognizer(rec)
        per_frame = [len(video.process(f.image)) for f in read_frames(cap, stats)]
    cap.release()
    assert len(rows) == sum(per_frame) > 0
    rows_json = json.loads((tmp_path / "faces.json").read_text())
    assert len(rows_json) == len(rows)
    assert [(r["frame"], r["track_id"], r["label"]) for r in rows_json] == [
        (int(r["frame"]), int(r["track_id"]), r["label"]) for r in rows
    ]
    assert {"frame", "timestamp", "track_id", "x", "label", "score", "p_happy"} <= set(rows[0])
    src, dst = cv2.VideoCapture(str(clip)), cv2.VideoCapture(str(out))
    assert int(dst.get(cv2.CAP_PROP_FRAME_COUNT)) == int(src.get(cv2.CAP_PROP_FRAME_COUNT)) == 275
    assert dst.get(cv2.CAP_PROP_FPS) == pytest.approx(src.get(cv2.CAP_PROP_FPS), abs=0.01)
    assert cv2.imread(str(tmp_path / "t.png")) is not None
    assert leftovers(tmp_path) == []


def test_video_every_n(tiny_model: Path, tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "clip.mp4", n=20)
    assert (
        main(
            [
                "video",
                str(clip),
                "--model",
                str(tiny_model),
                "--every",
                "5",
                "--out",
                str(tmp_path / "o.mp4"),
                "--no-progress",
            ]
        )
        == 0
    )
    assert int(cv2.VideoCapture(str(tmp_path / "o.mp4")).get(cv2.CAP_PROP_FRAME_COUNT)) == 4


def test_corrupt_frames_are_counted(
    tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clip = corrupt_clip(tmp_path / "corrupt.avi", (5, 6, 12))
    assert (
        main(
            [
                "video",
                str(clip),
                "--model",
                str(tiny_model),
                "--csv",
                str(tmp_path / "f.csv"),
                "--no-progress",
            ]
        )
        == 3  # partly analysed: the outputs are written, the exit code says so
    )
    err = capsys.readouterr().err
    assert "17 frames read of 20" in err
    assert "NOT ANALYSED: 3 frames that could not be decoded (first indices: 5, 6, 12)" in err
    assert (tmp_path / "f.csv").is_file()


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda d: ["video", str(d / "missing.mp4")], "video file not found"),
        (lambda d: ["video", str(d / "junk.mp4")], "cannot open"),
        (
            lambda d: [
                "video",
                str(write_clip(d / "c.mp4")),
                "--csv",
                str(d / "no" / "dir" / "f.csv"),
            ],
            "does not exist",
        ),
        (lambda d: ["video", str(write_clip(d / "c.mp4")), "--csv", str(d)], "is a directory"),
    ],
)
def test_video_faults(
    tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], make: object, match: str
) -> None:
    (tmp_path / "junk.mp4").write_bytes(b"\x00" * 100)
    argv = make(tmp_path)  # type: ignore[operator]
    assert main([*argv, "--model", str(tiny_model), "--no-progress"]) == 2
    assert match in capsys.readouterr().err
    assert leftovers(tmp_path) == []


def test_interrupted_video_leaves_no_partial_files(
    tiny_model: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    clip = write_clip(tmp_path / "clip.mp4", n=20)
    calls = {"n": 0}
    original = VideoRecognizer.process

    def interrupt(self: VideoRecognizer, frame: np.ndarray) -> list:
        calls["n"] += 1
        if calls["n"] == 8:
            raise KeyboardInterrupt
        return original(self, frame)

    monkeypatch.setattr(VideoRecognizer, "process", interrupt)
    out = tmp_path / "out"
    out.mkdir()
    code = main(
        [
            "video",
            str(clip),
            "--model",
            str(tiny_model),
            "--csv",
            str(out / "f.csv"),
            "--out",
            str(out / "a.mp4"),
            "--json",
            str(out / "f.json"),
            "--no-progress",
        ]
    )
    assert code == 130
    assert "stopped at frame 7; no output files were written" in capsys.readouterr().err
    assert list(out.iterdir()) == []


def test_webcam_without_display_or_camera(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert main(["webcam", "--model", str(tiny_model)]) == 2
    assert "no display" in capsys.readouterr().err
    monkeypatch.setattr("fer_onnx.cli.webcam._has_gui", lambda: True)
    assert main(["webcam", "--camera", "97", "--model", str(tiny_model)]) == 2
    assert "cannot open camera 97" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["video", "batch"])
@pytest.mark.parametrize("every", ["0", "-3", "2.5"])
def test_every_is_refused_with_the_sub_commands_usage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str, every: str
) -> None:
    args = [command, str(tmp_path / "clip.mp4"), "--every", every, "--csv", str(tmp_path / "x.csv")]
    if command == "batch":
        args[-2] = "--out"
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"usage: fer-onnx {command}" in err
    assert f"expected a whole number >= 1, got '{every}'" in err


def test_an_empty_provider_list_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["image", str(tmp_path / "x.jpg"), "--providers", "CPUExecutionProvider,"])
    assert exc.value.code == 2
    assert "expected comma-separated onnxruntime provider names" in capsys.readouterr().err


def test_an_empty_image_is_named_once(
    tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty.jpg"
    empty.touch()
    assert main(["image", str(empty), "--model", str(tiny_model)]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.count("empty.jpg") == 1
    assert "is empty (0 bytes)" in line


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.mkdir(), "is a folder, not an ONNX model file"),
        (lambda p: p.touch(), "is empty (0 bytes), not an ONNX model"),
    ],
)
def test_a_folder_or_empty_file_as_model_says_what_it_is(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], make: Any, message: str
) -> None:
    model = tmp_path / "model.onnx"
    make(model)
    assert main(["model", "inspect", str(model)]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--detect-width", "5"], "error: --detect-width must be an integer within 32..100000"),
        (["--smoothing", "-1"], "error: --smoothing must be a finite number"),
        (["--scale-factor", "0.5", "--detector", "haar"], "error: --scale-factor must be"),
    ],
)
def test_option_errors_name_the_flag_typed(
    tiny_model: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    clip = shared_file(MEDIA / "woman2.mp4")
    code = main(["video", str(clip), "--model", str(tiny_model), "--csv", "-", *args])
    assert code == 2
    assert capsys.readouterr().err.strip().startswith(message)


def test_a_truncated_video_is_one_line_without_ffmpegs_own(tmp_path: Path) -> None:
    clip = shared_file(MEDIA / "woman2.mp4")
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(clip.read_bytes()[:20_000])  # no moov atom: FFmpeg logs an error
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCV_")}
    result = subprocess.run(
        [sys.executable, "-m", "fer_onnx.cli", "video", str(truncated), "--csv", "-"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"error: cannot open {truncated}")
