"""Hostile-probe defects of videos and batch (issues 25 and 26), each reproduced and fixed.

Issue 25: 2 (a header claiming 2^31-1 frames), 3 (workers outlive a signal or a dead driver),
6 (Ray: resources the cluster lacks, an address nobody answers), 7 (a truncated video counts as
complete in batch), 12 (a hand-corrupted journal line). Issue 26: 7 (batch papercuts) and 8 (Ray
noise on a normal run).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import MEDIA, shared_file

from fer_onnx.batch import BatchError, RayOptions, output_paths, run
from fer_onnx.cli import main as cli_main
from fer_onnx.cli.batch import main as batch_main
from fer_onnx.video import VideoSource, VideoStats, read_frames

# -- helpers -----------------------------------------------------------------------------------


def mjpeg_avi(path: Path, frames: int, claimed: int | None = None) -> Path:
    """A small MJPEG AVI; ``claimed`` patches the frame count its header announces."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, (160, 120))
    for i in range(frames):
        image = np.full((120, 160, 3), (i * 12) % 255, np.uint8)
        cv2.putText(image, str(i), (40, 70), cv2.FONT_HERSHEY_SIMPLEX, 1.5, (255, 255, 255), 2)
        writer.write(image)
    writer.release()
    if claimed is not None:
        data = bytearray(path.read_bytes())
        avih, strh = data.find(b"avih"), data.find(b"strh")
        struct.pack_into("<I", data, avih + 8 + 16, claimed)  # dwTotalFrames
        struct.pack_into("<I", data, strh + 8 + 32, claimed)  # dwLength of the video stream
        path.write_bytes(bytes(data))
    return path


def photo(folder: Path, name: str = "obama.jpg") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(shared_file(MEDIA / name), folder / name))


class EndlessFailures:
    """A capture that decodes ``good`` frames, then fails every grab (and counts them)."""

    def __init__(self, good: int, limit: int = 100_000) -> None:
        self.good, self.limit, self.grabs = good, limit, 0

    def grab(self) -> bool:
        self.grabs += 1
        if self.grabs > self.limit:
            raise AssertionError(f"still grabbing after {self.limit} failures")
        return self.grabs <= self.good

    def retrieve(self) -> tuple[bool, np.ndarray]:
        return True, np.zeros((8, 8, 3), np.uint8)

    def get(self, prop: int) -> float:
        return 0.0


# -- issue 25.2: a header that claims 2^31-1 frames --------------------------------------------


def test_reading_stops_past_the_last_good_frame_and_reports_the_rest() -> None:
    stats = VideoStats(fps=10.0, frame_count=2**31 - 1, width=8, height=8)
    cap = EndlessFailures(20)
    frames = list(read_frames(cap, stats, max_gap=500))  # type: ignore[arg-type]
    assert len(frames) == 20
    assert cap.grabs <= 20 + 500
    assert (stats.read, stats.corrupt, stats.corrupt_indices) == (20, 0, [])
    assert stats.missing_at_end == 2**31 - 1 - 20
    assert not stats.complete
    assert "NOT ANALYSED" in stats.summary()
    with pytest.raises(Exception, match="max_gap must be an integer >= 1"):
        list(read_frames(cap, stats, max_gap=0))  # type: ignore[arg-type]


@pytest.mark.skipif(not hasattr(signal, "SIGALRM"), reason="needs SIGALRM")
def test_a_real_avi_claiming_2e31_frames_ends(tmp_path: Path) -> None:
    clip = mjpeg_avi(tmp_path / "big.avi", 20, claimed=2**31 - 1)

    def too_long(signum: int, frame: Any) -> None:
        raise AssertionError("reading a 20-frame file took more than 30 s")

    previous = signal.signal(signal.SIGALRM, too_long)
    signal.alarm(30)
    try:
        with VideoSource(clip) as source:
            count = sum(1 for _ in source)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert count == 20
    assert source.stats.frame_count == 2**31 - 1
    assert source.stats.missing_at_end == 2**31 - 1 - 20
    assert not source.stats.complete


# -- issue 25.3: the pool stops on every signal, and when the driver dies -----------------------

DRIVER = """
import os, sys, time
from fer_onnx.batch.worker import Reader

def init(self, job):
    self.job, self.recognizer = job, None

def read(self, paths):  # a long video in flight, in every worker
    open(os.path.join(os.environ["MARKS"], str(os.getpid())), "w").close()
    time.sleep(300)
    return []

Reader.__init__ = init  # module level: the spawned workers run this too
Reader.read = read

if __name__ == "__main__":
    import signal
    # Ctrl-C raises KeyboardInterrupt here even when pytest was started by a shell's `&`,
    # which makes it and every child ignore SIGINT.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from fer_onnx.cli import main
    raise SystemExit(main(sys.argv[1:]))
"""


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_workers_stop_on_every_signal_and_when_the_driver_dies(
    tiny_model: Path, tmp_path: Path, signum: int
) -> None:
    photos = [photo(tmp_path / "in", "obama.jpg"), photo(tmp_path / "in", "biden.jpg")]
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    marks = tmp_path / "marks"
    marks.mkdir()
    out = tmp_path / "faces.csv"
    cmd = [sys.executable, str(script), "batch", *map(str, photos), "--out", str(out)]
    cmd += ["--model", str(tiny_model), "--workers", "2", "--no-progress"]
    env = dict(os.environ, MARKS=str(marks))
    driver = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while len(workers) < 2:
            assert driver.poll() is None, driver.communicate()[1]
            assert time.monotonic() < deadline, "the workers did not start in 120 s"
            time.sleep(0.1)
            workers = [int(p.name) for p in marks.iterdir()]
        driver.send_signal(signum)
        _, err = driver.communicate(timeout=30)
        expected = {signal.SIGINT: 130, signal.SIGTERM: 128 + signal.SIGTERM}
        assert driver.returncode == expected.get(signum, -signal.SIGKILL), err
        deadline = time.monotonic() + 15
        while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in workers if alive(pid)], "workers outlived their driver"
    finally:
        for pid in [driver.pid, *workers]:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        try:
            driver.communicate(timeout=30)  # reaps it and closes its stderr pipe
        except subprocess.TimeoutExpired:  # a grandchild still holds the pipe
            driver.stderr.close()  # type: ignore[union-attr]
            driver.wait()


# -- issue 25.7: batch and `fer-onnx video` agree on a truncated video -----------------------


def test_batch_and_video_agree_on_a_truncated_video(
    tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clip = mjpeg_avi(tmp_path / "short.avi", 10, claimed=20)  # 10 of the 20 frames it claims
    video = ["video", str(clip), "--model", str(tiny_model), "--no-progress"]
    assert cli_main([*video, "--csv", str(tmp_path / "v.csv")]) == 3
    assert "NOT ANALYSED" in capsys.readouterr().err

    out = tmp_path / "faces.parquet"
    args = ["batch", str(clip), "--out", str(out), "--model", str(tiny_model), "--no-progress"]
    assert batch_main([*args, "--workers", "1"]) == 3
    err = capsys.readouterr().err
    assert "1 video only partly analysed" in err
    (row,) = pq.read_table(output_paths(out)[2]).to_pylist()
    assert (row["status"], row["frames"], row["corrupt_frames"]) == ("ok", 10, 10)
    assert "NOT ANALYSED" in row["message"]
    assert batch_main([*args, "--workers", "1"]) == 3  # and so again when resumed


# -- issue 25.12: a hand-corrupted journal line ------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        {"path": "PATH", "status": "ok", "faces": 1},  # no "rows"
        {"status": "ok", "rows": []},  # no "path"
        {"path": "PATH", "status": "ok", "faces": 1, "rows": [[1, 2]]},  # a short row
        [1, 2, 3],
    ],
)
def test_a_corrupted_journal_line_is_read_again(
    tiny_model: Path, tmp_path: Path, line: Any, caplog: pytest.LogCaptureFixture
) -> None:
    image = photo(tmp_path / "in")
    out = tmp_path / "faces.csv"
    parts = output_paths(out)[3]
    parts.mkdir()
    if isinstance(line, dict) and "path" in line:
        line["path"] = str(image)
    header = {"fer_onnx_batch": 1, "labels": ["angry", "disgust", "fear", "happy", "sad"]}
    header["labels"] += ["surprise", "neutral"]
    (parts / "part-000001.jsonl").write_text(f"{json.dumps(header)}\n{json.dumps(line)}\n")
    summary = run([image], out, model=tiny_model, workers=1)
    assert (summary.files, summary.skipped, summary.errors) == (1, 0, 0)
    assert "is not a record of a finished file" in caplog.text
    assert not parts.exists()


# -- issue 26.7: batch papercuts ---------------------------------------------------------------


def test_a_rerun_over_bad_inputs_still_fails_and_names_the_flag(
    tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "bad.jpg").write_bytes(b"not a photo")
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    args = ["batch", str(tmp_path / "bad.jpg"), str(tmp_path / "bad.mp4")]
    args += ["--out", str(tmp_path / "f.csv"), "--model", str(tiny_model), "--no-progress"]
    assert batch_main(args) == 1
    capsys.readouterr()
    assert batch_main(args) == 1
    err = capsys.readouterr().err
    assert "2 of them errors; --retry-errors reads them again" in err
    assert "retry_errors" not in err


def test_a_truncated_mp4_says_what_it_is_without_ffmpeg_noise(
    tiny_model: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    writer = cv2.VideoWriter(
        str(tmp_path / "whole.mp4"), cv2.VideoWriter.fourcc(*"mp4v"), 10.0, (64, 48)
    )
    for i in range(20):
        writer.write(np.full((48, 64, 3), i * 10, np.uint8))
    writer.release()
    data = (tmp_path / "whole.mp4").read_bytes()
    clip = tmp_path / "cut.mp4"
    clip.write_bytes(data[: len(data) // 2])  # the moov atom (at the end) is gone
    out = tmp_path / "f.csv"
    summary = run([clip], out, model=tiny_model, workers=1)
    assert summary.errors == 1
    captured = capfd.readouterr()
    assert "moov atom" not in captured.err + captured.out
    with open(output_paths(out)[1], encoding="utf-8") as stream:
        message = stream.read()
    assert "not a video OpenCV can decode" in message
    assert "camera" not in message


def test_usage_errors_come_without_a_progress_bar_fragment(
    tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("tqdm")
    args = ["batch", str(tmp_path / "absent"), "--out", str(tmp_path / "f.txt")]
    assert batch_main([*args, "--model", str(tiny_model)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot tell the output format"), err
    assert "file/s" not in err


def test_parquet_frame_and_track_id_stay_integers_in_pandas(
    tiny_model: Path, tmp_path: Path
) -> None:
    pd = pytest.importorskip("pandas")
    image = photo(tmp_path / "in")
    face = cv2.resize(cv2.imread(str(image)), (320, 240))
    clip = tmp_path / "in" / "clip.avi"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, (320, 240))
    for i in range(3):
        writer.write(np.roll(face, 4 * i, axis=1))
    writer.release()
    out = tmp_path / "faces.parquet"
    run([image, clip], out, model=tiny_model, workers=1)
    faces = pd.read_parquet(out)
    assert faces["frame"].notna().sum() >= 3  # the video's faces
    assert faces["frame"].isna().sum() >= 1  # the photo's
    for name in ("frame", "track_id", "face", "x", "width"):
        assert pd.api.types.is_integer_dtype(faces[name]), (name, faces[name].dtype)
    files = pd.read_parquet(output_paths(out)[2])
    for name in ("frames", "corrupt_frames", "faces", "size"):
        assert pd.api.types.is_integer_dtype(files[name]), (name, files[name].dtype)
    assert pq.read_schema(out).field("frame").type == "int64"


def test_batch_takes_the_common_detector_options(
    tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = photo(tmp_path / "in", "two_people.jpg")
    base = ["batch", str(image), "--model", str(tiny_model), "--no-progress", "--workers", "1"]

    def faces(out: str, *extra: str) -> int:
        assert batch_main([*base, "--out", str(tmp_path / out), *extra]) == 0, capsys.readouterr()
        return len(pq.read_table(tmp_path / out))

    default = faces("a.parquet")
    assert default > 0
    assert faces("b.parquet", "--score-threshold", "0.999999") < default
    assert faces("c.parquet", "--detect-width", "0", "--providers", "CPUExecutionProvider") > 0
    assert faces("d.parquet", "--detector", "haar", "--min-size", "4000") == 0
    assert (
        faces("e.parquet", "--detector", "haar", "--scale-factor", "1.3", "--min-neighbors", "2")
        > 0
    )
    for extra, message in (
        (["--detector", "haar", "--score-threshold", "0.5"], "--score-threshold is a YuNet"),
        (["--min-neighbors", "3"], "--min-neighbors is a Haar setting"),
        (["--detect-width", "5"], "detect_width"),
        (["--providers", "NoSuchExecutionProvider"], "NoSuchExecutionProvider"),
    ):
        assert batch_main([*base, "--out", str(tmp_path / "x.parquet"), *extra]) == 2
        assert message in capsys.readouterr().err
    with pytest.raises(BatchError, match="takes no option"):
        run([image], tmp_path / "y.parquet", model=tiny_model, detector_options={"nope": 1})


# -- issue 25.6 and 26.8: Ray --------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*")
def test_ray_checks_resources_and_reaches_addresses_with_a_deadline(
    tiny_model: Path, tmp_path: Path
) -> None:
    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'fer-onnx[ray]'")
    pytest.importorskip("ray.data", reason="Ray Data is not installed: pip install 'ray[data]'")
    image = photo(tmp_path / "in")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        for options, message in (
            (RayOptions(num_cpus=64), "each actor needs 64 CPUs"),
            (RayOptions(concurrency=5), "room for 2 actors"),
        ):
            start = time.monotonic()
            with pytest.raises(BatchError, match=message):
                run([image], tmp_path / "r.csv", model=tiny_model, engine="ray", ray=options)
            assert time.monotonic() - start < 30
    finally:
        ray.shutdown()
    start = time.monotonic()
    options = RayOptions(address="127.0.0.1:1")
    with pytest.raises(BatchError, match=r"cannot reach a Ray cluster at '127\.0\.0\.1:1'"):
        run([image], tmp_path / "r.csv", model=tiny_model, engine="ray", ray=options)
    assert time.monotonic() - start < 30
    assert not ray.is_initialized()


def test_a_normal_ray_run_prints_no_ray_noise(tiny_model: Path, tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="Ray is not installed: pip install 'fer-onnx[ray]'")
    pytest.importorskip("ray.data", reason="Ray Data is not installed: pip install 'ray[data]'")
    image = photo(tmp_path / "in")
    code = textwrap.dedent(
        """
        import sys
        from fer_onnx.cli import main
        if __name__ == "__main__":
            raise SystemExit(main(sys.argv[1:]))
        """
    )
    cmd = [sys.executable, "-c", code, "batch", str(image), "--out", str(tmp_path / "r.csv")]
    cmd += ["--model", str(tiny_model), "--engine", "ray", "--no-progress"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    for noise in ("Token authentication", "core_worker", "Progress bars disabled", "Started a"):
        assert noise not in result.stderr, result.stderr
    assert "1 input: 1 read, 0 errors" in result.stderr
