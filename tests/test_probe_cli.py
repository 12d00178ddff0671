"""Cases of issue 25 (a hostile probe) and issue 26 (a new user): CLI, outputs, web server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from fer_onnx.cli import main
from fer_onnx.errors import OutputError
from fer_onnx.outputs import AtomicOutput, check_outputs, commit_all

SRC = Path(__file__).resolve().parents[1] / "src"


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
