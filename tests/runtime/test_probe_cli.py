"""Cases of issue 25 (a hostile probe) and issue 26 (a new user): CLI, outputs, web server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import ROOT

from fer_onnx.cli import main
from fer_onnx.errors import OutputError
from fer_onnx.outputs import AtomicOutput, check_outputs, commit_all

SRC = ROOT / "src"


def write_clip(path: Path, n: int = 6) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 10.0, (160, 120))
    rng = np.random.default_rng(0)
    for _ in range(n):
        writer.write(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8))
    writer.release()
    return path


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".fer-onnx-"))


def run_cli(*argv: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """``fer-onnx`` in a fresh process (real standard output, real signals)."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [sys.executable, "-m", "fer_onnx.cli", *argv],
        capture_output=True,
        input=stdin,
        env=env,
        timeout=120,
    )


# -- issue 25 item 8: two outputs on one standard output ----------------------------------------


def test_two_outputs_on_stdout_are_refused(
    tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clip = write_clip(tmp_path / "clip.mp4")
    code = main(["video", str(clip), "--csv", "-", "--json", "-", "--model", str(tiny_model)])
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert "would all go to standard output" in err
    assert "'-', '-'" in err


def test_dev_stdout_counts_as_stdout(tmp_path: Path) -> None:
    """``-`` and ``/dev/stdout`` are one stream when stdout is a real file (a fresh process)."""
    if not Path("/dev/stdout").exists():
        pytest.skip("no /dev/stdout on this system")
    script = "from fer_onnx.outputs import check_outputs\ncheck_outputs(['-', '/dev/stdout'], [])\n"
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    with open(tmp_path / "out.txt", "wb") as stdout:
        result = subprocess.run(
            [sys.executable, "-c", script], stdout=stdout, stderr=subprocess.PIPE, env=env
        )
    assert result.returncode == 1
    assert b"would all go to standard output" in result.stderr
    check_outputs(["-", tmp_path / "file.csv"], [])  # one on stdout is fine


# -- issue 25 item 9: all outputs or none, whatever fails ---------------------------------------


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_failing_device_output_leaves_no_file(
    tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clip = write_clip(tmp_path / "clip.mp4")
    ok = tmp_path / "ok.csv"
    argv = ["video", str(clip), "--csv", str(ok), "--json", "/dev/full"]
    assert main([*argv, "--model", str(tiny_model), "--no-progress"]) == 2
    assert "cannot write /dev/full" in capsys.readouterr().err
    assert not ok.exists()
    ok.write_text("the user's own file\n")
    assert main([*argv, "--model", str(tiny_model), "--no-progress"]) == 2
    assert ok.read_text() == "the user's own file\n"
    assert leftovers(tmp_path) == []


def test_failing_rename_puts_earlier_files_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last output fails when it is put in place: the ones before get their content back."""
    old_csv, new_json, bad_plot = tmp_path / "a.csv", tmp_path / "b.json", tmp_path / "c.csv"
    old_csv.write_text("previous csv\n")
    link = tmp_path / "link.csv"
    link.symlink_to(old_csv)
    real_replace = os.replace

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        if Path(dst).name == bad_plot.name:
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr("fer_onnx.outputs.os.replace", replace)
    with (
        AtomicOutput(link) as a,
        AtomicOutput(new_json) as b,
        AtomicOutput(bad_plot) as c,
    ):
        for out in (a, b, c):
            out.tmp.write_text("new\n")
        with pytest.raises(OutputError, match="No space left"):
            commit_all([a, b, c])
    assert old_csv.read_text() == "previous csv\n"
    assert link.is_symlink()
    assert not new_json.exists()
    assert not bad_plot.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "link.csv"]


def test_close_error_of_a_sink_is_an_output_error(tmp_path: Path) -> None:
    from fer_onnx.sinks import CsvSink

    with CsvSink(tmp_path / "f.csv", ["happy"]) as sink:
        assert sink._file is not None
        real_close = sink._file.close

        def close() -> None:
            real_close()
            raise OSError(5, "Input/output error")

        sink._file.close = close  # type: ignore[method-assign]
        with pytest.raises(OutputError, match="Input/output error"):
            sink.finish()
    assert leftovers(tmp_path) == []


# -- issue 25 item 14: a closed standard output, an empty path ---------------------------------


def test_image_into_a_closed_pipe_is_not_an_error(tiny_model: Path, tmp_path: Path) -> None:
    """``fer-onnx image a.png b.png | head -1``: the reader has gone before anything is written.

    The run still does everything else it was asked (the annotated copies) and exits 0.
    """
    photos = []
    for name in ("a.png", "b.png"):
        cv2.imwrite(str(tmp_path / name), np.full((60, 80, 3), 128, np.uint8))
        photos.append(str(tmp_path / name))
    out = tmp_path / "annotated"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
    }
    argv = [sys.executable, "-m", "fer_onnx.cli", "image", *photos, "--model", str(tiny_model)]
    for extra in ([], ["--json"], ["--out", str(out)]):
        with subprocess.Popen(
            [*argv, *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        ) as process:
            assert process.stdout is not None
            assert process.stderr is not None
            process.stdout.close()  # like `head` that has read its line and quit
            err = process.stderr.read().decode()
            assert process.wait(timeout=120) == 0, err
        assert "Broken pipe" not in err
        assert "Traceback" not in err
    assert sorted(p.name for p in out.iterdir()) == ["a_fer.png", "b_fer.png"]


@pytest.mark.parametrize(
    "argv",
    [
        ["image", ""],
        ["image", "x.png", "--out", ""],
        ["video", ""],
        ["video", "clip.mp4", "--csv", ""],
        ["video", "clip.mp4", "--plot", ""],
    ],
)
def test_empty_path_is_a_usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "an empty path; name a file" in err
    assert "directory" not in err


# -- issue 26 item 9: what a new user meets on the command line --------------------------------


def test_image_table_stays_aligned_for_long_paths(
    tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    short = tmp_path / "a.png"
    long = tmp_path / ("a-photo-with-a-rather-long-name-" * 2 + ".png")
    for path in (short, long):
        cv2.imwrite(str(path), np.full((60, 80, 3), 128, np.uint8))
    out = tmp_path / "annotated"
    argv = ["image", str(short), str(long), "--model", str(tiny_model), "--out", str(out)]
    assert main(argv) == 0
    stdout, stderr = capsys.readouterr()
    lines = stdout.splitlines()
    assert len(lines) == 3  # header and one row per image; no `wrote` lines in the table
    assert len(str(long)) > 32
    # The face column is right-aligned: each row's "-" ends where the header's "face" ends.
    ends = {line.index(" -  no face found") + 2 for line in lines[1:]}
    assert ends == {lines[0].index(" face ") + 5}
    assert stderr.count("wrote ") == 2


def test_image_run_where_every_image_fails_prints_no_header(
    tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_text("no image")
    assert main(["image", str(bad), "--model", str(tiny_model)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert f"cannot decode {bad} as an image" in err


def test_image_points_folders_to_batch_and_videos_to_video(
    tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clip = write_clip(tmp_path / "clip.mp4")
    assert main(["image", str(tmp_path), str(clip), "--model", str(tiny_model)]) == 1
    err = capsys.readouterr().err
    assert f"use `fer-onnx batch {tmp_path} --out faces.parquet`" in err
    assert f"use `fer-onnx video {clip} --csv faces.csv`" in err


def test_video_without_an_output_is_refused(
    tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clip = write_clip(tmp_path / "clip.mp4")
    assert main(["video", str(clip), "--model", str(tiny_model), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "nothing to write" in err
    for option in ("--csv", "--json", "--out", "--plot"):
        assert option in err


@pytest.mark.parametrize(
    ("options", "match"),
    [
        (["--detector", "haar", "--score-threshold", "0.5"], "--score-threshold is a YuNet option"),
        (["--scale-factor", "1.2"], "--scale-factor is a Haar option"),
        (["--min-neighbors", "3", "--min-size", "20"], "--min-neighbors, --min-size are Haar"),
    ],
)
def test_options_of_the_other_detector_are_refused(
    tiny_model: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    options: list[str],
    match: str,
) -> None:
    photo = tmp_path / "a.png"
    cv2.imwrite(str(photo), np.full((60, 80, 3), 128, np.uint8))
    assert main(["image", str(photo), "--model", str(tiny_model), *options]) == 2
    assert match in capsys.readouterr().err


def test_top_level_help_is_plain_text_with_every_exit_code(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "``" not in out
    for code in ("0 success", "1 some input failed", "2 bad usage", "3 a video", "130"):
        assert code in out


def test_video_summary_counts_in_words(
    tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clip = write_clip(tmp_path / "clip.mp4")
    argv = ["video", str(clip), "--csv", str(tmp_path / "f.csv"), "--no-progress"]
    assert main([*argv, "--model", str(tiny_model)]) == 0
    err = capsys.readouterr().err
    assert "0 faces, 0 tracks" in err


def test_plural() -> None:
    from fer_onnx.cli.console import plural

    assert [plural(n, "track") for n in (0, 1, 2)] == ["0 tracks", "1 track", "2 tracks"]
