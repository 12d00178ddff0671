"""Reading files: the job every worker holds, and one file in, one journal record out.

Runs in the worker processes of the local engine (:mod:`fer_onnx.batch.local`) and in the
actors of the Ray engine (:mod:`fer_onnx.batch.ray_engine`), one :class:`Reader` each. Every
failure becomes an error record; nothing is raised and nothing is dropped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from fer_onnx.batch.errors import BatchError, is_number
from fer_onnx.batch.inputs import absolute, kind_of
from fer_onnx.batch.tables import FILE_COLUMNS
from fer_onnx.detectors import Detector, HaarDetector
from fer_onnx.errors import FerOnnxError
from fer_onnx.recognizer import BUNDLED_MODELS, EmotionRecognizer
from fer_onnx.rows import face_values
from fer_onnx.session import Device, SessionConfig
from fer_onnx.types import FaceEmotion
from fer_onnx.video import (
    Frame,
    VideoRecognizer,
    VideoStats,
    open_video,
    read_frames,
    require_frames,
)
from fer_onnx.yunet import YuNetDetector

log = logging.getLogger(__name__)

__all__ = [
    "DETECTOR_OPTIONS",
    "Done",
    "Job",
    "Reader",
    "chunks",
    "done",
    "error_record",
    "make_job",
    "quiet_ffmpeg",
]


# -- the job -------------------------------------------------------------------------------------


DETECTOR_OPTIONS: dict[str, frozenset[str]] = {
    "yunet": frozenset({"score_threshold", "nms_threshold", "top_k", "detect_width"}),
    "haar": frozenset({"scale_factor", "min_neighbors", "min_size", "detect_width", "equalize"}),
}
"""The ``detector_options`` of :func:`~fer_onnx.batch.run` each detector takes.

A YuNet file takes ``"yunet"``'s.
"""


def _check_detector_options(
    detector: str, options: Mapping[str, Any] | None
) -> tuple[tuple[str, Any], ...]:
    if options is None:
        return ()
    if not isinstance(options, Mapping):
        raise BatchError(
            f"detector_options must be a mapping of option names to values, got "
            f"{type(options).__name__}"
        )
    kind = "haar" if detector == "haar" else "yunet"
    allowed = DETECTOR_OPTIONS[kind]
    unknown = sorted(str(k) for k in options if k not in allowed)
    if unknown:
        raise BatchError(
            f"detector {detector!r} takes no option {', '.join(unknown)}; its options are "
            f"{', '.join(sorted(allowed))}"
        )
    return tuple(sorted(options.items()))


def _check_providers(providers: Sequence[str] | None, device: Device) -> tuple[str, ...] | None:
    if providers is None:
        return None
    if isinstance(providers, str):
        providers = providers.split(",")
    names = tuple(providers)
    if not names or not all(isinstance(p, str) and p.strip() for p in names):
        raise BatchError(
            f"providers must be a list of onnxruntime provider names such as "
            f"['CPUExecutionProvider'], got {providers!r}"
        )
    if device != "auto":
        raise BatchError(
            f"pass either device={device!r} or providers, not both: providers choose the device"
        )
    return tuple(p.strip() for p in names)


def make_job(
    model: str | os.PathLike[str],
    detector: str | os.PathLike[str],
    device: Device,
    align: bool,
    margin: float,
    every: int,
    smoothing: float,
    providers: Sequence[str] | None = None,
    detector_options: Mapping[str, Any] | None = None,
) -> Job:
    """Check the options of :func:`~fer_onnx.batch.run` that make the workers' :class:`Job`.

    Paths of models and detector files are made absolute (workers may run in another
    folder); nothing is loaded yet.

    Raises:
        BatchError: An option is out of range, or names no model or detector.
    """
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise BatchError(f"every must be an integer >= 1, got {every!r}")
    if device not in ("auto", "cpu", "cuda"):
        raise BatchError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    if not is_number(smoothing, allow_zero=True):
        raise BatchError(f"smoothing must be a number >= 0, got {smoothing!r}")
    if not is_number(margin, allow_zero=True) or margin > 1:
        raise BatchError(f"margin must be a number within 0..1, got {margin!r}")
    model_name = os.fspath(model)
    if model_name != "default" and model_name not in BUNDLED_MODELS:
        if not os.path.isfile(model_name):
            raise BatchError(
                f"model {model_name!r} is neither 'default', a bundled model "
                f"{BUNDLED_MODELS} nor an existing .onnx file"
            )
        model_name = absolute(model_name)  # workers may run in another folder
    detector_name = os.fspath(detector)
    if detector_name not in ("yunet", "haar"):
        if not os.path.isfile(detector_name):
            raise BatchError(
                f"detector {detector_name!r} is neither 'yunet', 'haar' nor an existing YuNet "
                ".onnx file"
            )
        detector_name = absolute(detector_name)
    return Job(
        model_name,
        detector_name,
        device,
        bool(align),
        float(margin),
        every,
        smoothing,
        _check_providers(providers, device),
        _check_detector_options(detector_name, detector_options),
    )


@dataclass(frozen=True, slots=True)
class Job:
    """What every worker needs to build its recognizer and read files (picklable).

    Attributes:
        model: ``"default"``, a bundled model name or the absolute path of an ``.onnx`` model.
        detector: ``"yunet"``, ``"haar"`` or the absolute path of a YuNet ``.onnx`` file.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        align: Frame faces like the model's training data.
        margin: Grow boxes by this fraction for plain crops.
        every: Read every ``every``-th frame of videos.
        smoothing: EMA window of the per-track probabilities in videos.
        providers: onnxruntime execution providers (they override ``device``), or ``None``.
        detector_options: The detector's keyword arguments, sorted by name.
    """

    model: str
    detector: str
    device: Device
    align: bool
    margin: float
    every: int
    smoothing: float
    providers: tuple[str, ...] | None = None
    detector_options: tuple[tuple[str, Any], ...] = ()

    def make_detector(self, *, check_only: bool = False) -> Detector | str:
        """The detector, or its name when it takes the recognizer's defaults.

        With ``check_only`` a YuNet session runs on the CPU: the options are checked here, in
        the driver, whose providers may differ from the workers'.
        """
        options = dict(self.detector_options)
        if not options and not check_only:
            return self.detector  # built by the recognizer, on its providers and options
        if self.detector == "haar":
            return HaarDetector(**options)
        return YuNetDetector(
            None if self.detector == "yunet" else self.detector,
            device="cpu" if check_only else ("auto" if self.providers else self.device),
            providers=None if check_only else self.providers,
            session_config=SessionConfig(intra_op_threads=1),
            **options,
        )

    def recognizer(self) -> EmotionRecognizer:
        """A recognizer with this job's model, detector and settings (one onnxruntime thread)."""
        return EmotionRecognizer(
            self.model,
            detector=self.make_detector(),
            device="auto" if self.providers else self.device,  # providers override device
            providers=self.providers,
            session_config=SessionConfig(intra_op_threads=1),
            align=self.align,
            margin=self.margin,
        )


class Done(NamedTuple):
    """One finished file, as a worker hands it back: its journal line and counts.

    Attributes:
        line: Its journal record, one line of JSON.
        faces: Faces found in it.
        ok: Whether it was read (``False``: an error record).
        partial: Whether it is a video only partly analysed.
    """

    line: str
    faces: int
    ok: bool
    partial: bool


# -- reading one file ------------------------------------------------------------------------


def _journal_row(
    face: FaceEmotion, index: int, labels: Sequence[str], frame: Frame | None
) -> list[Any]:
    """One face row without ``source`` (the journal record's ``path`` is its source)."""
    return face_values(face, index, labels, frame=frame)[1:]


def _video_rows(rec: EmotionRecognizer, job: Job, path: str) -> tuple[list[list[Any]], VideoStats]:
    cap, stats = open_video(path)
    rows: list[list[Any]] = []
    try:
        video = VideoRecognizer(rec, smoothing=job.smoothing)
        for frame in read_frames(cap, stats, every=job.every):
            for i, face in enumerate(video.process(frame.image)):
                rows.append(_journal_row(face, i, rec.labels, frame))
    finally:
        cap.release()
    require_frames(stats, str(path))
    return rows, stats


def _not_analysed(stats: VideoStats) -> int:
    """Frames of a video that were not analysed: corrupt ones, and those missing at the end.

    A shortfall at the end that :attr:`VideoStats.complete` takes for an estimated length is
    not counted, as ``fer-onnx video`` does not count it.
    """
    return stats.corrupt + (0 if stats.complete else stats.missing_at_end)


def _empty_record(path: str, kind: str) -> dict[str, Any]:
    return dict.fromkeys(FILE_COLUMNS) | {"path": path, "kind": kind, "rows": []}


def error_record(path: str, error_type: str, message: str) -> dict[str, Any]:
    """The journal record of a file that could not be read (size and mtime if it exists)."""
    record = _empty_record(path, kind_of(path))
    with contextlib.suppress(OSError):
        st = os.stat(path)
        record.update(size=st.st_size, mtime_ns=st.st_mtime_ns)
    record.update(status="error", faces=0, error_type=error_type, message=message)
    return record


def _process_file(rec: EmotionRecognizer, job: Job, path: str) -> dict[str, Any]:
    """Read one file; every failure becomes an error record, never an exception."""
    record = _empty_record(path, kind_of(path))
    try:
        st = os.stat(path)  # before reading: a file changed meanwhile is read again next time
        record.update(size=st.st_size, mtime_ns=st.st_mtime_ns)
        if record["kind"] == "video":
            rows, stats = _video_rows(rec, job, path)
            record.update(frames=stats.read, corrupt_frames=_not_analysed(stats))
            if not stats.complete:  # as `fer-onnx video` says it, which exits 3 for it
                record.update(message=stats.summary())
        else:
            rows = [
                _journal_row(face, i, rec.labels, None)
                for i, face in enumerate(rec.recognize(path))
            ]
    except Exception as e:  # recorded in the errors table, never dropped
        if not isinstance(e, (FerOnnxError, OSError)):
            log.warning("unexpected %s reading %s", type(e).__name__, path, exc_info=True)
        record.update(
            status="error", faces=0, error_type=type(e).__name__, message=str(e) or repr(e)
        )
        return record
    record.update(status="ok", faces=len(rows), rows=rows)
    return record


def done(record: dict[str, Any]) -> Done:
    """A journal record as a :class:`Done`: its JSON line and its counts."""
    return Done(
        json.dumps(record, separators=(",", ":")),
        int(record["faces"] or 0),
        record["status"] == "ok",
        bool(record.get("corrupt_frames")),
    )


class Reader:
    """One recognizer and the job's settings: reads files into journal records.

    Held once per worker process (local engine) or per actor (Ray engine).

    Args:
        job: The job; its recognizer is built here.
    """

    def __init__(self, job: Job) -> None:
        self.job = job
        self.recognizer = job.recognizer()

    def read(self, paths: Iterable[str]) -> list[Done]:
        """Read each file; failures are returned as error records."""
        return [done(_process_file(self.recognizer, self.job, p)) for p in paths]


def quiet_ffmpeg() -> None:
    """Keep FFmpeg's raw log lines off a worker's stderr (it must run before the first video).

    OpenCV reads ``OPENCV_FFMPEG_LOGLEVEL`` once, when it first loads FFmpeg; ``-8`` is
    ``AV_LOG_QUIET``. What FFmpeg would say is in the error or the frame counts of the tables.
    Only worker processes (ours) call this; a user's own process is left as it is.
    """
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")


def chunks(paths: Sequence[str], workers: int, chunk_size: int) -> list[list[str]]:
    """Each video alone and first (the long tasks), then photos in chunks."""
    videos = [[p] for p in paths if kind_of(p) == "video"]
    images = [p for p in paths if kind_of(p) != "video"]
    size = max(1, min(chunk_size, math.ceil(len(images) / (workers * 4))))
    return videos + [images[i : i + size] for i in range(0, len(images), size)]
