"""fer-onnx batch: inputs, both engines, nothing lost, resume after a kill, the CLI."""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import MEDIA, shared_file

from fer_onnx import EmotionRecognizer, VideoRecognizer, open_video, read_frames
from fer_onnx.batch import (
    BatchError,
    BatchProgress,
    BatchTypeError,
    MissingDependencyError,
    RayOptions,
    find_inputs,
    output_paths,
    run,
)
from fer_onnx.cli.batch import main as batch_main
from fer_onnx.errors import InvalidTypeError

# -- fixtures ----------------------------------------------------------------------------------


def write_clip(path: Path, source: Path, frames: int = 12) -> Path:
    """A short MP4 of a real face drifting right (one track)."""
    image = cv2.imread(str(source))
    height, width = image.shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 10.0, (width, height))
    for i in range(frames):
        writer.write(np.roll(image, 3 * i, axis=1))
    writer.release()
    return path


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Photos, a short video and broken files, in a folder with a subfolder."""
    root = tmp_path_factory.mktemp("mixed")
    (root / "sub").mkdir()
    for name in ("obama.jpg", "two_people.jpg", "justin.jpg"):
        shutil.copy(shared_file(MEDIA / name), root / name)
    shutil.copy(shared_file(MEDIA / "biden.jpg"), root / "sub" / "biden.jpg")
    shutil.copy(MEDIA / "justin.jpg", root / "sub" / "ü b.jpg")  # not ASCII, a space
    write_clip(root / "sub" / "clip.mp4", MEDIA / "justin.jpg")
    (root / "corrupt.jpg").write_bytes((MEDIA / "obama.jpg").read_bytes()[:5000])  # truncated
    (root / "fake.png").write_text("not an image\n")  # a non-image file named like one
    (root / "empty.jpg").write_bytes(b"")
    (root / "broken.mp4").write_bytes(os.urandom(4096))
    (root / "notes.txt").write_text("a folder search passes this over\n")
    (root / ".hidden.jpg").write_bytes(b"")  # hidden: never an input
    return root


GOOD = ("justin.jpg", "obama.jpg", "sub/biden.jpg", "sub/clip.mp4", "sub/ü b.jpg", "two_people.jpg")
BAD = ("broken.mp4", "corrupt.jpg", "empty.jpg", "fake.png", "notes.txt")


def inputs_of(root: Path) -> list[str]:
    return [str(root), str(root / "notes.txt")]  # the folder, and a non-image named directly


def table(path: Path) -> list[dict[str, Any]]:
    return pq.read_table(path).to_pylist()  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def local_run(mixed: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    out = tmp_path_factory.mktemp("local") / "faces.parquet"
    return run(inputs_of(mixed), out, workers=2), out


# -- finding inputs ----------------------------------------------------------------------------


def test_find_inputs(mixed: Path, tmp_path: Path) -> None:
    found = find_inputs([mixed])
    names = [os.path.relpath(p, mixed) for p in found.paths]
    assert sorted(names) == sorted(set(GOOD + BAD) - {"notes.txt"})
    assert found.ignored == 1  # notes.txt; .hidden.jpg is not even counted
    assert found.missing == ()

    listing = tmp_path / "list.txt"
    listing.write_text(f"# photos\n\n{mixed / 'obama.jpg'}\nrel/none.jpg\n")
    found = find_inputs(
        [mixed / "sub" / "biden.jpg", str(mixed / "**" / "*.mp4"), str(mixed / "*.nope")],
        [listing],
        exclude=[mixed / "broken.mp4"],
    )
    assert [os.path.relpath(p, mixed) for p in found.paths] == [
        "sub/biden.jpg",
        "sub/clip.mp4",
        "obama.jpg",
    ]
    assert [m[0] for m in found.missing] == [str(mixed / "*.nope"), "rel/none.jpg"]
    assert found.named == {str(mixed / "sub" / "biden.jpg"), str(mixed / "obama.jpg")}
    with pytest.raises(BatchError, match="cannot read the list"):
        find_inputs([], [tmp_path / "absent.txt"])


# -- one run: every input accounted for, rows as a plain loop gives them ------------------------


def test_every_input_is_a_row_or_an_error(mixed: Path, local_run: tuple[Any, Path]) -> None:
    summary, out = local_run
    faces_path, errors_path, files_path, parts = output_paths(out)
    assert (summary.output, summary.errors_output, summary.files_output) == (
        faces_path,
        errors_path,
        files_path,
    )
    assert not parts.exists()  # merged and removed
    assert (summary.inputs, summary.files, summary.errors, summary.skipped) == (11, 6, 5, 0)
    assert summary.accounted
    assert "all accounted for" in summary.describe()
    assert summary.ignored == 0  # notes.txt was named directly

    files = {os.path.relpath(r["path"], mixed): r for r in table(files_path)}
    assert set(files) == set(GOOD + BAD)
    assert {n for n, r in files.items() if r["status"] == "ok"} == set(GOOD)
    errors = {os.path.relpath(r["path"], mixed): r for r in table(errors_path)}
    assert set(errors) == set(BAD)
    assert errors["empty.jpg"]["error_type"] == "InvalidImageError"
    assert "empty" in errors["empty.jpg"]["message"]
    assert errors["broken.mp4"]["error_type"] == "VideoError"
    for name in BAD:
        assert files[name]["error_type"] == errors[name]["error_type"]

    rows = table(faces_path)
    assert len(rows) == summary.faces == sum(r["faces"] for r in files.values())
    per_source = {os.path.relpath(r["source"], mixed) for r in rows}
    assert per_source == set(GOOD)  # every good file here has a face
    assert files["sub/clip.mp4"]["frames"] == 12
    assert files["sub/clip.mp4"]["corrupt_frames"] == 0
    for name in GOOD:
        stat = (mixed / name).stat()
        assert (files[name]["size"], files[name]["mtime_ns"]) == (stat.st_size, stat.st_mtime_ns)


def test_rows_are_what_a_plain_loop_gives(mixed: Path, local_run: tuple[Any, Path]) -> None:
    _, out = local_run
    rows = table(out)
    with EmotionRecognizer() as rec:
        labels = rec.labels
        for name in ("obama.jpg", "two_people.jpg", "sub/biden.jpg"):
            mine = [r for r in rows if r["source"] == str(mixed / name)]
            faces = rec.recognize(mixed / name)
            assert len(mine) == len(faces) > 0
            for i, (row, face) in enumerate(zip(mine, faces, strict=True)):
                assert row["face"] == i
                assert (row["frame"], row["timestamp"], row["track_id"]) == (None, None, None)
                assert (row["x"], row["y"], row["width"], row["height"]) == face.box.to_tuple()
                assert row["label"] == face.label
                assert row["detection_score"] == pytest.approx(face.detection_score, abs=1e-6)
                for label in labels:
                    assert row[f"p_{label}"] == pytest.approx(face.probabilities[label], abs=1e-6)

        clip = str(mixed / "sub" / "clip.mp4")
        video = VideoRecognizer(rec)
        cap, stats = open_video(clip)
        expected = []
        try:
            for frame in read_frames(cap, stats):
                expected += [(frame.index, frame.timestamp, f) for f in video.process(frame.image)]
        finally:
            cap.release()
    mine = [r for r in rows if r["source"] == clip]
    assert len(mine) == len(expected) == 12
    for row, (index, timestamp, face) in zip(mine, expected, strict=True):
        assert (row["frame"], row["track_id"]) == (index, face.track_id)
        assert row["timestamp"] == pytest.approx(timestamp)
        assert (row["x"], row["y"], row["width"], row["height"]) == face.box.to_tuple()
        assert row["p_happy"] == pytest.approx(face.probabilities["happy"], abs=1e-6)


# -- the Ray engine ----------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*")  # Ray's own, inside Ray Data
def test_ray_engine_gives_the_same_tables(
    mixed: Path, local_run: tuple[Any, Path], tmp_path: Path
) -> None:
    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'fer-onnx[ray]'")
    pytest.importorskip("ray.data", reason="Ray Data is not installed: pip install 'ray[data]'")
    _, local_out = local_run
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        summary = run(
            inputs_of(mixed), tmp_path / "ray.parquet", engine="ray", ray=RayOptions(batch_size=2)
        )
        assert ray.is_initialized()  # ours: the job must not shut it down
        with pytest.raises(BatchError, match="GPU actors need 1 GPU"):  # none in this cluster
            run([mixed / "obama.jpg"], tmp_path / "gpu.parquet", engine="ray", device="cuda")
    finally:
        ray.shutdown()
    assert (summary.engine, summary.inputs, summary.files, summary.errors) == ("ray", 11, 6, 5)
    for mine, theirs in zip(
        output_paths(tmp_path / "ray.parquet")[:3], output_paths(local_out), strict=False
    ):
        assert pq.read_table(mine).equals(pq.read_table(theirs)), mine.name


def test_ray_missing_says_how_to_install(
    mixed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'fer-onnx\[ray\]'"):
        run([mixed / "obama.jpg"], tmp_path / "faces.parquet", engine="ray")
    assert list(tmp_path.iterdir()) == []


def test_import_loads_no_optional_dependency() -> None:
    code = (
        "import sys, fer_onnx.batch, fer_onnx.cli.batch; "
        "print([m for m in ('ray', 'pyarrow', 'tqdm') if m in sys.modules])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# -- bad arguments -----------------------------------------------------------------------------


def test_bad_arguments_are_one_clear_error(mixed: Path, tmp_path: Path) -> None:
    photo = mixed / "obama.jpg"
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.md").write_text("no photos here\n")
    cases: list[tuple[dict[str, Any], str]] = [
        (
            {"inputs": [empty], "out": tmp_path / "a.csv"},
            r"no inputs found in '.*empty'.*\(the folders hold 1 other file\)",
        ),
        ({"inputs": [photo], "out": empty}, "cannot tell the output format"),
        ({"inputs": [photo], "out": tmp_path / "a.json"}, r"\.parquet.*\.csv"),
        ({"inputs": [photo], "out": tmp_path / "none" / "a.csv"}, "does not exist"),
        ({"inputs": [photo, tmp_path / "in.csv"], "out": tmp_path / "in.csv"}, "also named as"),
        ({"inputs": [photo], "out": tmp_path / "a.csv", "every": 0}, "every must be"),
        ({"inputs": [photo], "out": tmp_path / "a.csv", "engine": "spark"}, "engine must be"),
        ({"inputs": [photo], "out": tmp_path / "a.csv", "workers": 0}, "workers must be"),
        ({"inputs": [photo], "out": tmp_path / "a.csv", "model": "nope.onnx"}, "nope.onnx"),
    ]
    (tmp_path / "in.csv").write_text("x\n")
    (tmp_path / "dir.csv").mkdir()
    cases.append(({"inputs": [photo], "out": tmp_path / "dir.csv"}, "is a directory"))
    for kwargs, message in cases:
        with pytest.raises(BatchError, match=message):
            run(**kwargs)
    with pytest.raises(BatchError, match="batch_size"):
        RayOptions(batch_size=0)


def test_outputs_it_did_not_write_are_never_touched(mixed: Path, tmp_path: Path) -> None:
    theirs = tmp_path / "faces.csv"
    theirs.write_text("name,age\nann,3\n")
    with pytest.raises(BatchError, match="not written by fer-onnx batch"):
        run([mixed / "justin.jpg"], theirs)
    assert theirs.read_text() == "name,age\nann,3\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["faces.csv"]


# -- resuming ----------------------------------------------------------------------------------


def copies(folder: Path, count: int) -> list[Path]:
    """``count`` photos (real faces, several sizes) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    sources = ["obama_and_biden.jpg", "biden.jpg", "obama.jpg", "two_people.jpg"]
    made = []
    for i in range(count):
        source = shared_file(MEDIA / sources[i % len(sources)])
        made.append(folder / f"{i:03d}_{source.name}")
        shutil.copy(source, made[-1])
    return made


def journal_records(parts: Path) -> int:
    total = 0
    for journal in parts.glob("part-*.jsonl"):
        lines = journal.read_text().split("\n")
        total += max(len(lines) - 2, 0)  # the header, and the line being written (or "")
    return total


def test_resume_after_a_kill(tmp_path: Path) -> None:
    first, second = copies(tmp_path / "a", 4), copies(tmp_path / "b", 32)
    out = tmp_path / "faces.parquet"
    done = run([tmp_path / "a"], out, workers=1)
    assert (done.files, done.skipped) == (4, 0)
    tables = output_paths(out)[:3]
    before = [p.read_bytes() for p in tables]
    parts = output_paths(out)[3]

    code = (
        "import sys; from fer_onnx.batch import run; "
        "run(sys.argv[2:], sys.argv[1], workers=1, chunk_size=1)"
    )
    args = [sys.executable, "-c", code, str(out), str(tmp_path / "a"), str(tmp_path / "b")]
    process = subprocess.Popen(args, start_new_session=True, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 90
    while journal_records(parts) < 3 and process.poll() is None:
        assert time.monotonic() < deadline, "the batch run wrote nothing in 90 s"
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)  # the run and its worker processes, at once
    _, stderr = process.communicate()
    assert process.returncode == -signal.SIGKILL, stderr.decode()
    finished = journal_records(parts)
    assert 3 <= finished < len(second)
    assert [p.read_bytes() for p in tables] == before  # nothing half-written or overwritten

    resumed = run([tmp_path / "a", tmp_path / "b"], out, workers=2)
    assert resumed.skipped == len(first) + finished
    assert resumed.files == len(second) - finished
    assert resumed.accounted
    assert resumed.errors == 0
    assert not parts.exists()

    files = table(tables[2])
    assert sorted(r["path"] for r in files) == sorted(str(p) for p in first + second)
    rows = table(tables[0])
    assert len(rows) == sum(r["faces"] for r in files)
    keys = [(r["source"], r["face"]) for r in rows]
    assert len(keys) == len(set(keys))  # no file twice
    old_rows = pq.read_table(pa.BufferReader(before[0])).to_pylist()
    assert [r for r in rows if r["source"].startswith(str(tmp_path / "a"))] == old_rows
    counts = {r["path"]: r["faces"] for r in files}
    for i, path in enumerate(second):  # the same photo gives the same faces, whichever run
        assert counts[str(path)] == counts[str(second[i % 4])]


def test_resume_reads_changed_and_new_files_only(mixed: Path, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("obama.jpg", "justin.jpg", "fake.png"):
        shutil.copy(mixed / name, folder / name)
    out = tmp_path / "faces.csv"
    first = run([folder], out, workers=1)
    assert (first.files, first.errors) == (2, 1)

    again = run([folder], out, workers=1)
    assert (again.files, again.errors, again.skipped, again.skipped_errors) == (0, 0, 3, 1)
    assert "retry_errors" in again.describe()
    retried = run([folder], out, workers=1, retry_errors=True)
    assert (retried.files, retried.errors, retried.skipped) == (0, 1, 2)

    shutil.copy(mixed / "two_people.jpg", folder / "fake.png")  # fixed: now a photo
    shutil.copy(mixed / "sub" / "biden.jpg", folder / "new.jpg")
    third = run([folder], out, workers=1)
    assert (third.files, third.errors, third.skipped) == (2, 0, 2)

    import csv

    with open(out, newline="") as stream:
        rows = list(csv.DictReader(stream))
    with open(output_paths(out)[1], newline="") as stream:
        assert list(csv.DictReader(stream)) == []  # the error went with the fix
    by_file: dict[str, int] = {}
    for row in rows:
        by_file[Path(row["source"]).name] = by_file.get(Path(row["source"]).name, 0) + 1
    assert by_file == {"fake.png": 2, "justin.jpg": 1, "new.jpg": 1, "obama.jpg": 1}
    assert [r["source"] for r in rows] == sorted(r["source"] for r in rows)
    assert rows[0]["frame"] == ""
    assert float(rows[0]["p_happy"]) >= 0


def test_interrupted_run_keeps_what_finished(mixed: Path, tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    copies(folder, 8)
    out = tmp_path / "faces.parquet"
    seen: list[BatchProgress] = []

    def stop_after_three(p: BatchProgress) -> None:
        seen.append(p)
        if p.done >= 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run([folder], out, workers=1, chunk_size=1, progress=stop_after_three)
    assert [p.done for p in seen] == [0, 1, 2, 3]
    assert seen[0].total == 8
    assert len(table(output_paths(out)[2])) == 3  # merged, not lost
    assert not output_paths(out)[3].exists()
    rest = run([folder], out, workers=2)
    assert (rest.skipped, rest.files) == (3, 5)


@pytest.mark.parametrize("pause", [0.0, 1.0], ids=["while-collecting", "between-collections"])
def test_a_dying_worker_loses_nothing(
    mixed: Path,
    local_run: tuple[Any, Path],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    pause: float,
) -> None:
    """A worker killed mid-run loses no file. With a pause after the kill, the pool's manager
    thread marks the pool broken before the driver hands out more work, so the next submit
    meets a broken pool (that run used to stop with BrokenProcessPool)."""
    killed: list[int] = []

    def kill_a_worker(p: BatchProgress) -> None:
        children = multiprocessing.active_children()
        if p.done and not killed and children:
            killed.append(children[0].pid or 0)
            os.kill(children[0].pid or 0, signal.SIGKILL)
            time.sleep(pause)

    out = tmp_path / "faces.parquet"
    with caplog.at_level(logging.WARNING, logger="fer_onnx.batch"):
        summary = run(inputs_of(mixed), out, workers=2, chunk_size=1, progress=kill_a_worker)
    assert killed
    assert "a worker process died" in caplog.text
    assert summary.accounted
    assert (summary.files, summary.errors) == (6, 5)
    for mine, theirs in zip(output_paths(out)[:3], output_paths(local_run[1])[:3], strict=True):
        assert pq.read_table(mine).equals(pq.read_table(theirs)), mine.name


def test_a_script_without_main_guard_gets_told(mixed: Path, tmp_path: Path) -> None:
    script = tmp_path / "script.py"  # spawned workers import it, and call run() again
    script.write_text(
        "import sys\nfrom fer_onnx.batch import run\nrun([sys.argv[1]], sys.argv[2], workers=1)\n"
    )
    out = tmp_path / "faces.parquet"
    result = subprocess.run(
        [sys.executable, str(script), str(mixed / "obama.jpg"), str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "BatchError: the worker processes die as they start" in result.stderr
    assert "if __name__ == '__main__':" in result.stderr
    assert list(tmp_path.iterdir()) == [script]  # no table, no parts left behind


# -- video frames and the command line ---------------------------------------------------------


def test_every_nth_frame(mixed: Path, tmp_path: Path) -> None:
    out = tmp_path / "faces.parquet"
    summary = run([mixed / "sub" / "clip.mp4"], out, every=4, workers=1, smoothing=0)
    rows = table(out)
    assert [r["frame"] for r in rows] == [0, 4, 8]
    assert [r["track_id"] for r in rows] == [0, 0, 0]
    assert [r["timestamp"] for r in rows] == pytest.approx([0.0, 0.4, 0.8])
    assert table(output_paths(out)[2])[0]["frames"] == 3 == summary.faces


def test_cli_csv_matches_the_parquet_tables(
    mixed: Path, local_run: tuple[Any, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "faces.csv"
    code = batch_main(["batch", *inputs_of(mixed), "--out", str(out), "--workers", "2"])
    assert code == 1  # some inputs could not be read
    err = capsys.readouterr().err
    assert "11 inputs: 6 read, 5 errors, 0 done before; all accounted for" in err
    assert "files/s" in err
    assert "faces/s" in err

    import csv

    for mine, theirs in zip(output_paths(out)[:3], output_paths(local_run[1])[:3], strict=True):
        with open(mine, newline="") as stream:
            got = list(csv.DictReader(stream))
        want = table(theirs)
        assert len(got) == len(want) > 0
        for row, expected in zip(got, want, strict=True):
            assert list(row) == list(expected)
            for key, value in expected.items():
                if value is None:
                    assert row[key] == ""
                elif isinstance(value, float):
                    assert float(row[key]) == value  # full precision, no rounding
                else:
                    assert row[key] == str(value)

    assert batch_main(["batch", str(mixed / "obama.jpg"), "--out", str(tmp_path / "x.txt")]) == 2
    assert "cannot tell the output format" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        batch_main(["batch", "--help"])
    assert info.value.code == 0
    assert "--engine" in capsys.readouterr().out


def test_a_file_name_that_is_not_utf8_is_an_error_not_a_crash(tmp_path: Path) -> None:
    from fer_onnx.batch import find_inputs

    folder = tmp_path / "in"
    folder.mkdir()
    name = os.fsdecode(b"caf\xe9.jpg")
    (folder / name).write_bytes(b"not an image")
    found = find_inputs([folder])
    assert found.paths == ()
    assert found.missing[0][0].endswith("caf\\xe9.jpg")
    assert "not valid UTF-8" in found.missing[0][1]


def test_summary_counts_read_in_the_singular_and_plural(local_run: tuple[Any, Path]) -> None:
    summary, _ = local_run
    one = dataclasses.replace(summary, ignored=1, partial=1, skipped_partial=0).describe()
    assert "1 other file in the folders ignored" in one
    assert "1 video only partly analysed" in one
    two = dataclasses.replace(summary, ignored=2, partial=1, skipped_partial=1).describe()
    assert "2 other files in the folders ignored" in two
    assert "2 videos only partly analysed" in two


# -- globs find what the folder walk finds: no symlink loops, broken links kept as errors -------


def test_glob_does_not_follow_symlinked_folders(tmp_path: Path) -> None:
    """'in/**/*.jpg' followed sub/loop -> .. until ELOOP: 123 inputs for 2 files."""
    root = tmp_path / "in"
    (root / "sub" / "deeper").mkdir(parents=True)
    shutil.copy(shared_file(MEDIA / "obama.jpg"), root / "obama.jpg")
    shutil.copy(MEDIA / "obama.jpg", root / "sub" / "deeper" / "again.jpg")
    (root / "sub" / "loop").symlink_to("..")  # glob.glob went round it until ELOOP
    (root / "broken.jpg").symlink_to(tmp_path / "nonexistent.jpg")
    walked = find_inputs([root])
    expected = {"obama.jpg", "broken.jpg", "sub/deeper/again.jpg"}
    assert {os.path.relpath(p, root) for p in walked.paths} == expected
    for pattern in ("**/*.jpg", "**", "*/**/*.jpg", "**/**/*.jpg", "*.jpg", "s*/*/*.jpg"):
        found = find_inputs([str(root / pattern)])
        assert set(found.paths) <= set(walked.paths), pattern
        assert len(found.paths) == len(set(found.paths)), pattern
    assert find_inputs([str(root / "**" / "*.jpg")]).paths == walked.paths
    # a link named outright is followed, as a named folder is
    named = find_inputs([str(root / "sub" / "loop" / "*.jpg")])
    assert {os.path.basename(p) for p in named.paths} == {"obama.jpg", "broken.jpg"}
    summary = run([str(root / "**" / "*.jpg")], tmp_path / "out.csv", workers=1)
    assert (summary.inputs, summary.files, summary.errors) == (3, 2, 1)  # broken.jpg: an error


# -- arguments of the wrong type: one typed error, before anything starts -----------------------


def test_wrong_argument_types_are_one_typed_error(mixed: Path, tmp_path: Path) -> None:
    """run(inputs, None), run(None, out), progress=5 were raw TypeErrors (progress=5 only
    after the journal was opened)."""
    photo = mixed / "obama.jpg"
    out = tmp_path / "a.csv"
    cases: list[tuple[dict[str, Any], str]] = [
        ({"inputs": [photo], "out": None}, "out must be a path"),
        ({"inputs": None, "out": out}, "inputs must be a path"),
        ({"inputs": 5, "out": out}, "inputs must be a path"),
        ({"inputs": [photo, None], "out": out}, r"inputs\[1\] must be a path"),
        ({"inputs": [os.fsencode(photo)], "out": out}, "os.fsdecode"),
        ({"inputs": [photo], "out": out, "files_from": 5}, "files_from must be"),
        ({"inputs": [photo], "out": out, "progress": 5}, "progress must be a function"),
        ({"inputs": [photo], "out": out, "align": "no"}, "align must be True or False"),
        ({"inputs": [photo], "out": out, "retry_errors": 1}, "retry_errors must be"),
        ({"inputs": [photo], "out": out, "model": None}, "model must be a path"),
        ({"inputs": [photo], "out": out, "detector": None}, "detector must be a path"),
        ({"inputs": [photo], "out": out, "ray": {"address": "auto"}}, "RayOptions"),
        ({"inputs": [photo], "out": out, "providers": 5}, "providers must be"),
    ]
    for kwargs, message in cases:
        with pytest.raises(BatchTypeError, match=message) as caught:
            run(**kwargs)
        assert isinstance(caught.value, BatchError)
        assert isinstance(caught.value, InvalidTypeError)
    assert not out.exists()
    assert not (tmp_path / "a.csv.parts").exists()


def test_a_margin_that_cannot_apply_fails_once_up_front(mixed: Path, tmp_path: Path) -> None:
    """--margin without --no-align was ignored: every bundled model frames faces itself."""
    with pytest.raises(BatchError, match=r"margin=0\.3 cannot apply"):
        run([mixed / "obama.jpg"], tmp_path / "a.csv", margin=0.3)
    assert not (tmp_path / "a.csv").exists()
    summary = run([mixed / "obama.jpg"], tmp_path / "b.csv", margin=0.3, align=False, workers=1)
    assert summary.files == 1
