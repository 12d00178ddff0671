"""Nothing lost, nothing clobbered: one test (or more) per item of the reliability issue."""

from __future__ import annotations

import csv
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from conftest import GRAY48, LABELS, ROOT

import fer_onnx.sinks
from fer_onnx import (
    Box,
    EmotionRecognizer,
    FerOnnxError,
    HaarDetector,
    ImageNotFoundError,
    InvalidImageError,
    InvalidOptionError,
    ModelInfo,
    ModelLoadError,
    ModelOutputError,
    NoDetectorError,
    OutputError,
    RecognizerClosedError,
    SessionConfig,
    VideoError,
    VideoRecognizer,
    VideoSource,
    YuNetDetector,
    open_video,
)
from fer_onnx.cli import main
from fer_onnx.recognizer import BUFFER_BYTES


def write_clip(path: Path, n: int = 20, fourcc: str = "mp4v", fps: float = 10.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*fourcc), fps, (160, 120))
    for i in range(n):
        frame = np.full((120, 160, 3), (i * 4) % 256, np.uint8)
        cv2.putText(frame, str(i), (40, 80), 0, 1.5, (255, 255, 255), 2)
        writer.write(frame)
    writer.release()
    return path


def video_args(clip: Path, model: Path, *extra: str) -> list[str]:
    return ["video", str(clip), "--model", str(model), "--no-progress", *extra]


def partials(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".partial" in p.name)


# -- 1. outputs: symlinks, special files, stdout -----------------------------------------------


def test_output_through_a_symlink_keeps_the_link(tiny_model: Path, tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "clip.mp4")
    real = tmp_path / "real.json"
    real.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    assert main(video_args(clip, tiny_model, "--json", str(link))) == 0
    assert link.is_symlink()
    assert real.read_text().startswith("[")


def test_output_into_a_character_device_is_not_replaced(tiny_model: Path, tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "clip.mp4")
    assert main(video_args(clip, tiny_model, "--csv", os.devnull)) == 0
    assert Path(os.devnull).is_char_device()


def test_dash_and_dev_stdout_write_to_standard_output(tiny_model: Path, tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "clip.mp4")
    for target in ("-", "/dev/stdout"):
        cmd = [sys.executable, "-m", "fer_onnx.cli", *video_args(clip, tiny_model, "--csv", target)]
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=120)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("source,frame,timestamp,track_id,face,")
    assert not (tmp_path / "-").exists()


def test_a_closed_pipe_is_not_an_error(tiny_model: Path, tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "clip.mp4", n=40)
    cli = f"{sys.executable} -m fer_onnx.cli"
    cmd = f"{cli} video {clip} --model {tiny_model} --no-progress --csv - | head -c 10"
    done = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=120)
    assert len(done.stdout) == 10
    assert "Traceback" not in done.stderr


# -- 2. an output equal to an input ------------------------------------------------------------


def test_output_equal_to_the_input_is_refused(tiny_model: Path, tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "in.mp4")
    before = clip.read_bytes()
    for flag in ("--csv", "--json", "--out"):
        assert main(video_args(clip, tiny_model, flag, str(clip))) == 2
    assert clip.read_bytes() == before
    os.chdir(tmp_path)
    assert main(video_args(Path("in.mp4"), tiny_model, "--csv", str(clip))) == 2


# -- 3. write failures: exit non-zero, leave nothing ------------------------------------------


def test_csv_on_a_full_disk_fails_loudly(tiny_model: Path, tmp_path: Path) -> None:
    if not Path("/dev/full").exists():
        pytest.skip("/dev/full (a device that is always full) exists only on Linux")
    clip = write_clip(tmp_path / "clip.mp4", n=200)
    assert main(video_args(clip, tiny_model, "--json", "/dev/full")) == 2


def test_video_writer_failure_is_detected(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clip = write_clip(tmp_path / "clip.mp4")
    out = tmp_path / "annotated.mp4"
    # Whatever writes the video (PyAV or OpenCV), a file that reads back short is a failure.
    monkeypatch.setattr(fer_onnx.sinks, "count_video_frames", lambda path: 0)
    assert (
        main(video_args(clip, tiny_model, "--out", str(out), "--csv", str(tmp_path / "f.csv"))) == 2
    )
    assert not out.exists()
    assert not (tmp_path / "f.csv").exists()  # one failed output: none is committed
    assert partials(tmp_path) == []


# -- 4. permissions follow the umask ----------------------------------------------------------


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_outputs_follow_the_umask(tiny_model: Path, tmp_path: Path, umask: int, mode: int) -> None:
    clip = write_clip(tmp_path / "clip.mp4")
    old = os.umask(umask)
    try:
        assert main(video_args(clip, tiny_model, "--csv", str(tmp_path / "f.csv"))) == 0
    finally:
        os.umask(old)
    assert (tmp_path / "f.csv").stat().st_mode & 0o777 == mode


# -- 5. signals clean up ----------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_leave_no_partial_files(
    tiny_model: Path, tmp_path: Path, signum: int
) -> None:
    clip = write_clip(tmp_path / "clip.mp4", n=3000, fps=30.0)
    cmd = [
        sys.executable,
        "-m",
        "fer_onnx.cli",
        *video_args(clip, tiny_model, "--csv", str(tmp_path / "f.csv"), "--detector", "haar"),
    ]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not partials(tmp_path) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert partials(tmp_path), "the run never started writing"
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, err
    assert partials(tmp_path) == []
    assert not (tmp_path / "f.csv").exists()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_while_outputs_open_leaves_no_partial_files(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, signum: int, ctrl_c: None
) -> None:
    # The signal lands after the CSV's temporary file exists but before its cleanup is
    # registered: the window the subprocess test above hits only now and then.
    clip = write_clip(tmp_path / "clip.mp4")
    header = csv.DictWriter.writeheader

    def signalled(self: csv.DictWriter[str]) -> Any:
        result = header(self)
        os.kill(os.getpid(), signum)
        return result

    monkeypatch.setattr(csv.DictWriter, "writeheader", signalled)
    outputs = ["--csv", str(tmp_path / "f.csv"), "--json", str(tmp_path / "f.json")]
    args = video_args(clip, tiny_model, *outputs)
    assert main(args) == (130 if signum == signal.SIGINT else 128 + signum)
    assert partials(tmp_path) == []
    assert not (tmp_path / "f.csv").exists()
    assert not (tmp_path / "f.json").exists()


@pytest.fixture
def ctrl_c() -> Iterator[None]:
    """Ctrl-C raises KeyboardInterrupt (a background shell may have started pytest ignoring it)."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def test_deferred_signals_deliver_after_the_block(ctrl_c: None) -> None:
    from fer_onnx.outputs import deferred_signals

    steps = []
    with pytest.raises(KeyboardInterrupt):  # noqa: PT012 (the block is what is tested)
        with deferred_signals():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)  # without the deferral, KeyboardInterrupt lands here
            steps.append("block finished")
        steps.append("after the block")
    assert steps == ["block finished"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with deferred_signals():  # an ignored signal stays ignored
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN


class _Stopped(BaseException):
    pass


def _stop(signum: int, frame: object) -> None:
    raise _Stopped(signum)


def test_deferred_signals_deliver_termination_first_and_restore_every_handler(
    ctrl_c: None,
) -> None:
    from fer_onnx.outputs import deferred_signals

    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    try:
        with pytest.raises(_Stopped) as stopped, deferred_signals():  # noqa: PT012
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_DFL  # default: untouched
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGTERM)
            raise ValueError("the block failed")
        assert stopped.value.args == (signal.SIGTERM,)  # before SIGINT, instead of ValueError
        assert isinstance(stopped.value.__context__, ValueError)
        assert signal.getsignal(signal.SIGTERM) is _stop
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        with deferred_signals(), deferred_signals():  # nested: the outer one delivers
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.01)
        pytest.fail("SIGTERM was not delivered")  # pragma: no cover
    except _Stopped:
        assert signal.getsignal(signal.SIGTERM) is _stop
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)


def test_ctrl_c_in_image_mode_exits_130(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(self: EmotionRecognizer, *args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(EmotionRecognizer, "recognize", interrupted)
    assert main(["image", "x.jpg", "--model", str(tiny_model)]) == 130
    assert "Traceback" not in capsys.readouterr().err


# -- 6. annotated image names never collide ----------------------------------------------------


def test_same_names_in_two_folders_and_odd_suffixes(
    tiny_model: Path, tmp_path: Path, astronaut: np.ndarray
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    cv2.imwrite(str(tmp_path / "a" / "photo.jpg"), astronaut)
    cv2.imwrite(str(tmp_path / "b" / "photo.jpg"), astronaut[:, ::-1])
    bak = tmp_path / "photo.jpg.bak"
    bak.write_bytes((tmp_path / "a" / "photo.jpg").read_bytes())
    out = tmp_path / "out"
    out.mkdir()
    (out / "photo_fer.jpg").write_bytes(b"the user's own file")
    paths = [str(tmp_path / "a" / "photo.jpg"), str(tmp_path / "b" / "photo.jpg"), str(bak)]
    assert main(["image", *paths, "--model", str(tiny_model), "--out", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["photo.jpg.bak_fer.png", "photo_fer-2.jpg", "photo_fer-3.jpg", "photo_fer.jpg"]
    assert (out / "photo_fer.jpg").read_bytes() == b"the user's own file"
    assert cv2.imread(str(out / "photo.jpg.bak_fer.png")) is not None


# -- 7. frames of any size in any order --------------------------------------------------------


def test_video_mode_takes_frames_of_changing_size(tiny_model: Path, astronaut: np.ndarray) -> None:
    with EmotionRecognizer(tiny_model) as rec:
        video = VideoRecognizer(rec)
        sizes = [(512, 512), (256, 256), (512, 300), (128, 128), (512, 512)]
        for w, h in sizes:
            faces = video.process(cv2.resize(astronaut, (w, h)))
            for f in faces:
                assert f.box.x2 <= w
                assert f.box.y2 <= h
        haar = VideoRecognizer(EmotionRecognizer(tiny_model, detector="haar"))
        for w, h in sizes:
            haar.process(cv2.resize(astronaut, (w, h)))


def test_the_frame_counter_advances_after_a_failure(tiny_model: Path) -> None:
    with EmotionRecognizer(tiny_model) as rec:
        video = VideoRecognizer(rec)
        with pytest.raises(InvalidImageError):
            video.process(np.zeros((4, 4, 7), np.uint8))
        assert video._frame == 1


# -- 8. corrupt stretches ---------------------------------------------------------------------


def corrupt_stretch(path: Path, n: int, bad: range) -> Path:
    """An MJPEG AVI whose frames in ``bad`` have their JPEG data zeroed."""
    write_clip(path, n=n, fourcc="MJPG")
    data = bytearray(path.read_bytes())
    starts = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xD8]
    for k in bad:
        data[starts[k] : starts[k] + 400] = b"\x00" * 400
    path.write_bytes(bytes(data))
    return path


def test_a_long_corrupt_stretch_is_read_past(tmp_path: Path) -> None:
    clip = corrupt_stretch(tmp_path / "c.avi", 80, range(20, 60))  # 40 bad frames in a row
    with VideoSource(clip) as source:
        frames = list(source)
    stats = source.stats
    assert [f.index for f in frames] == [*range(20), *range(60, 80)]
    assert stats.corrupt == 40
    assert stats.read == 40
    assert not stats.complete
    assert "NOT ANALYSED: 40 frames" in stats.summary()
    for f in frames:  # timestamps stay true after the stretch
        assert f.timestamp == pytest.approx(f.index / 10.0, abs=1e-6)


def test_cli_reports_a_partly_analysed_video(
    tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clip = corrupt_stretch(tmp_path / "c.avi", 60, range(10, 40))
    assert main(video_args(clip, tiny_model, "--csv", str(tmp_path / "f.csv"))) == 3
    assert "30 frames read of 60; NOT ANALYSED: 30 frames" in capsys.readouterr().err


# -- 9. digits are file names, negative cameras are refused ------------------------------------


def test_digit_names_are_files_and_negative_cameras_fail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_clip(tmp_path / "x.mp4", n=5).rename(tmp_path / "2024")
    monkeypatch.chdir(tmp_path)
    cap, stats = open_video("2024")
    cap.release()
    assert stats.frame_count == 5
    with pytest.raises(VideoError, match="not found"):
        open_video("7")
    with pytest.raises(VideoError, match=">= 0"):
        open_video(-1)
    with pytest.raises(VideoError, match="camera index"):
        open_video(None)  # type: ignore[arg-type]
    with pytest.raises(VideoError, match="directory"):
        open_video(tmp_path)


# -- 10. VideoSource and sinks ----------------------------------------------------------------


def test_source_and_sinks_compose(tiny_model: Path, tmp_path: Path) -> None:
    from fer_onnx import CsvSink, JsonSink, finish_all

    clip = write_clip(tmp_path / "clip.mp4", n=8)
    with (
        EmotionRecognizer(tiny_model) as rec,
        VideoSource(clip, every=2) as source,
        CsvSink(tmp_path / "f.csv", rec.labels) as csv_sink,
        JsonSink(tmp_path / "f.json") as json_sink,
    ):
        video = VideoRecognizer(rec)
        for frame in source:
            faces = video.process(frame.image)
            csv_sink.write(frame, faces)
            json_sink.write(frame, faces)
        assert not (tmp_path / "f.csv").exists()  # nothing in place before the commit
        finish_all([csv_sink, json_sink])
    assert source.stats.read == 4
    assert source.stats.skipped == 4
    assert (tmp_path / "f.csv").read_text().startswith("source,frame,")
    assert partials(tmp_path) == []


def test_the_examples_use_the_sinks() -> None:
    text = (ROOT / "examples" / "video_to_csv.py").read_text()
    assert "VideoSource" in text
    assert "CsvSink" in text


# -- 11. declared sizes checked before decoding -------------------------------------------------


def huge_png(path: Path, width: int = 50_000, height: int = 50_000) -> Path:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )
    return path


def test_a_png_declaring_50000_squared_pixels_is_refused(
    tiny_model: Path, tmp_path: Path, astronaut: np.ndarray, capsys: pytest.CaptureFixture[str]
) -> None:
    bomb = huge_png(tmp_path / "bomb.png")
    assert bomb.stat().st_size < 1000
    from fer_onnx import load_image

    with pytest.raises(InvalidImageError, match="declares 50000x50000"):
        load_image(bomb)
    good = tmp_path / "good.jpg"
    cv2.imwrite(str(good), astronaut)
    assert main(["image", str(bomb), str(good), "--model", str(tiny_model)]) == 1
    out = capsys.readouterr().out
    assert "good.jpg" in out  # the batch went on


# -- 12. predict rejects what classify rejects --------------------------------------------------


def test_predict_rejects_a_single_crop(tiny_model: Path) -> None:
    crop = np.zeros((64, 64, 3), np.uint8)
    with EmotionRecognizer(tiny_model, detector=None) as rec:
        for method in (rec.predict, rec.classify):
            with pytest.raises(InvalidImageError, match="wrap a single crop"):
                method(crop)  # type: ignore[operator]
        assert rec.predict([crop]).shape == (1, 7)
        assert rec.predict([]).shape == (0, 7)


# -- 13. PIL images: more than 8 bits, EXIF -----------------------------------------------------


@pytest.mark.parametrize("mode", ["I;16", "I", "F"])
def test_pil_images_above_8_bits_are_rejected_like_numpy(tiny_model: Path, mode: str) -> None:
    image_module = pytest.importorskip("PIL.Image")
    array = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)
    image = image_module.fromarray(array.astype(np.int32 if mode == "I" else np.uint16))
    image = image.convert(mode) if image.mode != mode else image
    with EmotionRecognizer(tiny_model) as rec, pytest.raises(InvalidImageError, match="8-bit"):
        rec.recognize(image)


def test_pil_exif_orientation_is_applied(tmp_path: Path, astronaut: np.ndarray) -> None:
    image_module = pytest.importorskip("PIL.Image")
    from fer_onnx import load_image

    rgb = image_module.fromarray(np.ascontiguousarray(astronaut[:100, :60, ::-1]))
    exif = image_module.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    rgb.save(path, exif=exif)
    from_pil = load_image(image_module.open(path))
    from_path = load_image(path)
    assert from_pil.shape == from_path.shape == (60, 100, 3)


# -- 14. numeric options are validated ---------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: HaarDetector(scale_factor=float("inf")),
        lambda: HaarDetector(scale_factor=float("nan")),
        lambda: HaarDetector(scale_factor=1.0000001),
        lambda: HaarDetector(min_size=2.5),  # type: ignore[arg-type]
        lambda: HaarDetector(detect_width=320.0),  # type: ignore[arg-type]
        lambda: HaarDetector(min_neighbors=-1),
        lambda: YuNetDetector(score_threshold=float("nan")),
        lambda: SessionConfig(intra_op_threads=1.5),  # type: ignore[arg-type]
    ],
)
def test_bad_numbers_are_one_typed_error(make: Callable[[], object]) -> None:
    with pytest.raises(InvalidOptionError):
        make()


def test_video_and_recognizer_numbers(tiny_model: Path) -> None:
    with EmotionRecognizer(tiny_model) as rec:
        for kwargs in (
            {"roi_margin": float("nan")},
            {"smoothing": float("inf")},
            {"max_missed": 1.5},
            {"redetect_every": 0},
            {"iou_threshold": 0},
        ):
            with pytest.raises(InvalidOptionError):
                VideoRecognizer(rec, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(InvalidOptionError, match="margin"):
        EmotionRecognizer(tiny_model, margin=float("nan"))


def test_cli_rejects_an_infinite_scale_factor(tiny_model: Path, tmp_path: Path) -> None:
    args = ["image", "x.jpg", "--model", str(tiny_model), "--detector", "haar"]
    assert main([*args, "--scale-factor", "inf"]) == 2


# -- 15. custom models checked at load, outputs checked at run ----------------------------------


def onnx_model(
    path: Path,
    *,
    elem: int | None = None,
    batch: int | str = "N",
    op: str = "softmax",
    metadata: dict[str, str] | None = None,
) -> Path:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    elem = TensorProto.FLOAT if elem is None else elem
    nodes = [helper.make_node("Cast", ["faces"], ["f"], to=TensorProto.FLOAT)]
    nodes += [
        helper.make_node("Flatten", ["f"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "W"], ["logits"]),
    ]
    if op == "softmax":
        nodes.append(helper.make_node("Softmax", ["logits"], ["out"], axis=1))
    elif op == "nan":
        nodes.append(helper.make_node("Div", ["logits", "zero"], ["q"]))
        nodes.append(helper.make_node("Sub", ["q", "q"], ["out"]))  # inf - inf = nan
    else:
        nodes.append(helper.make_node("Identity", ["logits"], ["out"]))
    rng = np.random.default_rng(0)
    weight = rng.normal(0, 0.01, (48 * 48, 7)).astype(np.float32)
    graph = helper.make_graph(
        nodes,
        "m",
        [helper.make_tensor_value_info("faces", elem, [batch, 48, 48, 1])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [batch, 7])],
        initializer=[
            numpy_helper.from_array(weight, "W"),
            numpy_helper.from_array(np.zeros((1,), np.float32), "zero"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    props = ModelInfo(LABELS, GRAY48, (0.0, 255.0), {}).to_metadata()
    helper.set_model_props(model, {**props, **(metadata or {})})
    onnx.save(model, str(path))
    return path


def test_input_type_and_fixed_batch_are_checked_at_load(tmp_path: Path) -> None:
    from onnx import TensorProto

    for elem in (TensorProto.UINT8, TensorProto.FLOAT16, TensorProto.DOUBLE):
        with pytest.raises(ModelLoadError, match=r"tensor\(float\)"):
            EmotionRecognizer(onnx_model(tmp_path / f"t{elem}.onnx", elem=elem), detector=None)
    with pytest.raises(ModelLoadError, match="batch dimension is fixed"):
        EmotionRecognizer(onnx_model(tmp_path / "b.onnx", batch=1), detector=None)


def test_logits_need_the_metadata_and_then_get_softmax(tmp_path: Path) -> None:
    faces = [np.full((48, 48), v, np.uint8) for v in (0, 128, 255)]
    with (
        EmotionRecognizer(onnx_model(tmp_path / "l.onnx", op="logits"), detector=None) as rec,
        pytest.raises(ModelOutputError, match="logits"),
    ):
        rec.predict(faces)
    path = onnx_model(tmp_path / "l2.onnx", op="logits", metadata={"fer_onnx.output": "logits"})
    with EmotionRecognizer(path, detector=None) as rec:
        probs = rec.predict(faces)
    assert (probs >= 0).all()
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_non_finite_outputs_are_a_library_error(tmp_path: Path) -> None:
    path = onnx_model(tmp_path / "n.onnx", op="nan")
    with (
        EmotionRecognizer(path, detector=None) as rec,
        pytest.raises(ModelOutputError, match="non-finite"),
    ):
        rec.predict([np.full((48, 48), 9, np.uint8)])


def test_value_range_is_applied(tmp_path: Path, model_factory: Callable[..., Path]) -> None:
    plain = model_factory()
    scaled = model_factory(
        metadata=ModelInfo(LABELS, GRAY48, (0.0, 1.0), {}).to_metadata(),
    )
    face = [np.full((48, 48), 200, np.uint8)]
    with (
        EmotionRecognizer(plain, detector=None) as a,
        EmotionRecognizer(scaled, detector=None) as b,
    ):
        assert not np.allclose(a.predict(face), b.predict(face))  # the range reaches the model


# -- 16. nothing escapes as a raw built-in error ------------------------------------------------


def test_every_misuse_is_a_fer_onnx_error(
    tiny_model: Path, tmp_path: Path, astronaut: np.ndarray
) -> None:
    image_module = pytest.importorskip("PIL.Image")
    rec = EmotionRecognizer(tiny_model)
    jpg = tmp_path / "a.jpg"
    cv2.imwrite(str(jpg), astronaut)
    truncated = tmp_path / "t.jpg"
    truncated.write_bytes(jpg.read_bytes()[:2000])
    closed = image_module.open(jpg)
    closed.close()
    pil = image_module.open(jpg)
    cut = image_module.open(truncated)
    cases: list[Callable[[], object]] = [
        lambda: rec.recognize(astronaut, boxes=5),  # type: ignore[arg-type]
        lambda: rec.classify(5),  # type: ignore[arg-type]
        lambda: rec.classify(pil),  # type: ignore[arg-type]
        lambda: rec.predict(None),  # type: ignore[arg-type]
        lambda: rec.recognize(cut),
        lambda: rec.recognize(closed),
        lambda: EmotionRecognizer(tiny_model, providers=[None]),  # type: ignore[list-item]
        lambda: HaarDetector(cascade=tiny_model),
        lambda: EmotionRecognizer(tiny_model, detector=tiny_model),
        lambda: open_video(None),  # type: ignore[arg-type]
        lambda: EmotionRecognizer(tiny_model, session_config=SessionConfig(log_severity=7)),
    ]
    for case in cases:
        with pytest.raises(FerOnnxError):
            case()
    pil.close()
    cut.close()
    rec.close()
    with pytest.raises(RecognizerClosedError):
        _ = rec.providers


def test_messages_say_what_a_path_really_is(tmp_path: Path) -> None:
    from fer_onnx import load_image

    with pytest.raises(InvalidImageError, match="empty string"):
        load_image("")
    with pytest.raises(InvalidImageError, match="special file"):
        load_image(os.devnull)
    loop = tmp_path / "loop.jpg"
    loop.symlink_to(loop)
    with pytest.raises(InvalidImageError, match="symbolic link loop"):
        load_image(loop)
    with pytest.raises(ImageNotFoundError, match="not found"):
        load_image(tmp_path / "missing.jpg")
    with pytest.raises(InvalidOptionError, match="intra_op_threads"):
        SessionConfig(intra_op_threads=-2)


# -- 17. errors specific enough to catch --------------------------------------------------------


def test_specific_error_types(tiny_model: Path, astronaut: np.ndarray) -> None:
    assert issubclass(ImageNotFoundError, FileNotFoundError)
    assert issubclass(OutputError, OSError)
    assert issubclass(InvalidOptionError, ValueError)
    with EmotionRecognizer(tiny_model, detector=None) as rec, pytest.raises(NoDetectorError):
        rec.recognize(astronaut)
    rec = EmotionRecognizer(tiny_model)
    rec.close()
    with pytest.raises(RecognizerClosedError):
        rec.recognize(astronaut)
    from fer_onnx.outputs import AtomicOutput

    with pytest.raises(OutputError, match="directory"):
        AtomicOutput(Path(__file__).parent)


# -- 18. input buffers are bounded and freed ----------------------------------------------------


def test_buffers_are_bounded_by_bytes_and_freed_on_close(tiny_model: Path) -> None:
    rec = EmotionRecognizer(tiny_model, detector=None)
    for n in (1, 2, 500, 5000, 3, 4, 7):
        rec.predict([np.zeros((48, 48), np.uint8)] * n)
    kept = rec._buffers.__dict__["by_size"]
    assert sum(b.nbytes for b in kept.values()) <= BUFFER_BYTES
    assert 5000 not in kept
    rec.close()
    assert "by_size" not in rec._buffers.__dict__


# -- 19. precise input types --------------------------------------------------------------------


def test_device_with_providers_is_refused(tiny_model: Path) -> None:
    with pytest.raises(InvalidOptionError, match="not both"):
        EmotionRecognizer(tiny_model, device="cpu", providers=["CPUExecutionProvider"])


def test_recognize_of_an_int_does_not_type_check(tmp_path: Path) -> None:
    api = pytest.importorskip("mypy.api")
    snippet = tmp_path / "bad.py"
    snippet.write_text(
        "from fer_onnx import EmotionRecognizer\n"
        "EmotionRecognizer().recognize(12345)\n"
        "EmotionRecognizer().recognize(b'bytes')\n"
    )
    out, _, status = api.run(
        ["--strict", "--no-incremental", "--follow-imports=silent", str(snippet)]
    )
    assert status == 1, out
    assert out.count("incompatible type") == 2, out


def test_boxes_accepts_floats(tiny_model: Path, astronaut: np.ndarray) -> None:
    with EmotionRecognizer(tiny_model) as rec:
        (face,) = rec.recognize(astronaut, boxes=[(10.4, 20.6, 100.0, 90.2)])
    assert face.box == Box(10, 21, 100, 90)


def test_a_short_end_is_an_estimated_length_a_long_one_is_not() -> None:
    from fer_onnx import VideoStats

    estimated = VideoStats(
        fps=30.0, frame_count=300, width=64, height=48, read=299, missing_at_end=1
    )
    assert estimated.complete
    assert "(an estimate)" in estimated.summary()
    truncated = VideoStats(
        fps=30.0, frame_count=300, width=64, height=48, read=200, missing_at_end=100
    )
    assert not truncated.complete
    assert "100 frames before the end the container announced (NOT ANALYSED)" in truncated.summary()


def test_sink_construction_failure_leaves_nothing(tmp_path: Path) -> None:
    from fer_onnx import VideoSink

    with pytest.raises(InvalidOptionError, match="width"):  # checked before any file is made
        VideoSink(tmp_path / "bad.mp4", 30.0, (0, 0))
    assert partials(tmp_path) == []


def test_providers_override_device_on_the_command_line(
    tiny_model: Path, tmp_path: Path, astronaut: np.ndarray
) -> None:
    photo = tmp_path / "a.jpg"
    cv2.imwrite(str(photo), astronaut)
    args = ["image", str(photo), "--model", str(tiny_model), "--providers", "CPUExecutionProvider"]
    assert main([*args, "--device", "cpu"]) == 0


def test_video_csv_and_json_name_their_source_like_a_batch_table(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, astronaut: np.ndarray
) -> None:
    import csv
    import json

    clip = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter.fourcc(*"mp4v"), 10.0, (512, 512))
    for _ in range(3):
        writer.write(astronaut)
    writer.release()
    monkeypatch.chdir(tmp_path)
    args = video_args(Path("clip.mp4"), tiny_model, "--csv", "f.csv", "--json", "f.json")
    assert main(args) == 0
    with open(tmp_path / "f.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows
    assert {r["source"] for r in rows} == {str(clip.resolve())}
    assert all(r["frame"].isdigit() for r in rows)
    records = json.loads((tmp_path / "f.json").read_text())
    assert len(records) == len(rows)
    assert {r["source"] for r in records} == {str(clip.resolve())}
