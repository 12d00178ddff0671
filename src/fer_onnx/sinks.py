"""Where video results go: one sink per output kind, each written in full or not at all.

A sink is a context manager with ``write(frame, faces)`` for every processed frame, ``finish()``
to complete and check its temporary file, and ``commit()`` to put it in place (see
:class:`~fer_onnx.outputs.AtomicOutput`: symlinks are followed, special files and ``-``
(stdout) are written into, inputs are never overwritten). Leaving the ``with`` block without
``commit()`` leaves nothing behind. :func:`finish_all` finishes every sink before committing
any, then commits them all or none, so one failing output does not leave the others in place.

Example:
    >>> with VideoSource("clip.mp4") as source, CsvSink("faces.csv", rec.labels) as csv:
    ...     for frame in source:                                        # doctest: +SKIP
    ...         csv.write(frame, video.process(frame.image))
    ...     finish_all([csv])
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Literal, Protocol

import cv2
import numpy as np

from fer_onnx._checks import _shown
from fer_onnx._text import plural
from fer_onnx.draw import draw_faces
from fer_onnx.errors import InvalidOptionError, InvalidTypeError, OutputError
from fer_onnx.outputs import AtomicOutput, commit_all
from fer_onnx.rows import face_values, row_columns
from fer_onnx.types import FaceEmotion
from fer_onnx.video import Frame
from fer_onnx.video_out import (
    FrameWriter,
    VideoBackend,
    check_writer_options,
    count_video_frames,
    open_video_writer,
    video_format,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "MAX_PLOTTED_TRACKS",
    "PLOT_FORMATS",
    "CsvSink",
    "FaceSink",
    "JsonSink",
    "TimelineSink",
    "VideoSink",
    "face_row",
    "finish_all",
    "plot_format",
    "timeline_figure",
]


class FaceSink(Protocol):
    """What every sink offers (see the module docstring)."""

    def write(self, frame: Frame, faces: Sequence[FaceEmotion]) -> None:
        """Record the faces of one processed frame."""
        ...

    def finish(self) -> None:
        """Complete the temporary file and check it; raises :class:`OutputError` if broken."""
        ...

    def commit(self) -> None:
        """Put the finished file in place."""
        ...


def finish_all(sinks: Sequence[FaceSink]) -> None:
    """Finish every sink, then put them in place: all of their files, or none.

    Nothing is committed if one fails to finish. fer-onnx's sinks are then committed together
    (:func:`~fer_onnx.outputs.commit_all`): outputs written into (standard output, a device, a
    pipe) first, as those cannot be taken back, then the files, each put back as it was if a
    later one fails. Other sinks (any object with ``finish()`` and ``commit()``) are committed
    before them, in the order given.

    Raises:
        InvalidTypeError: ``sinks`` is not a list of sinks (objects with ``finish()`` and
            ``commit()``); nothing was finished.
        OutputError: An output cannot be completed or written; no file was put in place.
    """
    sinks = _check_sinks(sinks)
    for sink in sinks:
        sink.finish()
    together: list[AtomicOutput] = []
    for sink in sinks:
        if isinstance(sink, _Sink) and _Sink.commit is _commit_of(sink):
            together.append(sink.output)  # its commit() only commits this
        else:
            sink.commit()
    commit_all(together)


def _commit_of(sink: _Sink) -> object:
    return type(sink).commit


def _check_sinks(sinks: object) -> list[FaceSink]:
    if isinstance(sinks, (str, bytes)) or not isinstance(sinks, Iterable):
        raise InvalidTypeError(
            f"finish_all() takes a list of sinks, e.g. finish_all([csv_sink]), got {_shown(sinks)}"
        )
    checked = list(sinks)
    for sink in checked:
        if not (
            callable(getattr(sink, "finish", None)) and callable(getattr(sink, "commit", None))
        ):
            raise InvalidTypeError(
                "finish_all() takes sinks (CsvSink, JsonSink, VideoSink, TimelineSink or any "
                f"object with finish() and commit()), got {_shown(sink)}; nothing was finished"
            )
    return checked


def _check_labels(labels: object) -> tuple[str, ...]:
    """The model's classes given to a sink: a non-empty sequence of distinct strings."""
    if (
        isinstance(labels, (str, bytes))
        or not isinstance(labels, Sequence)
        or not all(isinstance(label, str) for label in labels)
    ):
        raise InvalidTypeError(
            f"labels must be a sequence of str, the model's classes (rec.labels), got "
            f"{_shown(labels)}"
        )
    if not labels or len(set(labels)) != len(labels):
        raise InvalidOptionError(
            f"labels must name each of the model's classes once (rec.labels), got {_shown(labels)}"
        )
    return tuple(labels)


def _check_frame(frame: object, faces: object) -> Sequence[FaceEmotion]:
    """What ``write(frame, faces)`` was given: a Frame and a list of FaceEmotion."""
    if not isinstance(frame, Frame):
        raise InvalidTypeError(
            f"write() takes a Frame (as VideoSource yields them) first, got {_shown(frame)}"
        )
    if (
        isinstance(faces, (str, bytes))
        or not isinstance(faces, Sequence)
        or not all(isinstance(face, FaceEmotion) for face in faces)
    ):
        raise InvalidTypeError(
            "write() takes the frame's faces as a list of FaceEmotion (what "
            f"VideoRecognizer.process returns; [] when there is none), got {_shown(faces)}"
        )
    return faces


def _check_face_labels(path: str, labels: tuple[str, ...], faces: Sequence[FaceEmotion]) -> None:
    """Refuse faces whose classes are not the ones the sink was made for."""
    wanted = set(labels)
    for face in faces:
        if face.probabilities.keys() != wanted:
            raise InvalidOptionError(
                f"cannot write {path}: a face has the labels {tuple(face.probabilities)} but the "
                f"sink was made for {labels}; make the sink with the labels of the recognizer "
                "that found the faces (rec.labels)"
            )


def face_row(
    frame: Frame, face: FaceEmotion, index: int = 0, *, source: str | None = None
) -> dict[str, Any]:
    """One flat row, as the faces table of :func:`fer_onnx.batch.run` writes it.

    The columns of :mod:`fer_onnx.rows`: source, frame, timestamp, track, face index, box,
    detection score, label, score and ``p_<label>`` (in the order of ``face.probabilities``);
    integers stay integers and floats are not rounded.

    Args:
        frame: The frame the face was found in.
        face: The face.
        index: Its index among the faces of the frame (the ``face`` column).
        source: The video read (the ``source`` column; ``None`` leaves it empty).
    """
    labels = tuple(face.probabilities)
    values = face_values(face, index, labels, source=source, frame=frame)
    return dict(zip(row_columns(labels), values, strict=True))


def _source(source: str | os.PathLike[str] | None) -> str | None:
    if source is not None and not isinstance(source, (str, os.PathLike)):
        raise InvalidTypeError(
            f"source must be a path (the video read) or None, got {_shown(source)}"
        )
    return None if source is None else os.fspath(source)


_SinkState = Literal["open", "finished", "failed", "closed"]


class _Sink:
    suffix: str | None = None

    def __init__(self, path: str | os.PathLike[str]) -> None:
        # Arguments are checked before this: the temporary file exists from here on (it is
        # removed on exit from the ``with`` block, or when an abandoned sink is collected).
        self.output = AtomicOutput(path, suffix=self.suffix)
        self.path = self.output.target
        self._state: _SinkState = "open"

    def _check_open(self) -> None:
        """Refuse to write to a sink that was finished or closed (a typed error, not EBADF)."""
        if self._state in ("finished", "failed"):
            raise OutputError(
                f"cannot write to the sink of {self.path}: it is finished (finish() or "
                "finish_all() was called); write every frame before finishing, or open a new sink"
            )
        if self._state == "closed":
            raise OutputError(
                f"cannot write to the sink of {self.path}: it is closed (close(), or the end of "
                "its with block); open a new sink"
            )

    def _accepted(
        self, frame: object, faces: object, labels: tuple[str, ...] | None = None
    ) -> Sequence[FaceEmotion]:
        """What ``write`` may take: the sink still open, a Frame and its faces (of ``labels``)."""
        self._check_open()
        checked = _check_frame(frame, faces)
        if labels is not None:
            _check_face_labels(self.path, labels, checked)
        return checked

    def __enter__(self) -> _Sink:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        try:
            self._release()
        except OSError:
            if exc is None:
                raise
            # The exception on its way out says more than a failed close of a discarded file.
        finally:
            self._state = "closed"
            self.output.discard()
        return False

    def close(self) -> None:
        """Release open handles; a sink closed before it was finished takes no more frames.

        Its temporary file is kept until the ``with`` block ends (or the sink is collected);
        :meth:`write` and :meth:`finish` then raise :class:`~fer_onnx.OutputError`.
        """
        self._release()
        if self._state == "open":
            self._state = "closed"

    def _release(self) -> None:
        """Release open handles (each sink its own)."""

    def finish(self) -> None:
        """Complete the temporary file; a write or close error becomes :class:`OutputError`.

        Finishing twice does nothing more; a sink that failed to finish, or was closed, raises.
        """
        if self._state == "finished":
            return
        if self._state != "open":
            raise OutputError(
                f"cannot finish {self.path}: the sink "
                + ("failed to finish before" if self._state == "failed" else "is closed")
                + "; nothing was put in place"
            )
        self._state = "failed"
        try:
            try:
                self._finish()
            finally:
                self._release()
        except OSError as e:
            raise OutputError(f"cannot write {self.path}: {e.strerror or e}") from e
        self._state = "finished"

    def _finish(self) -> None:
        pass

    def commit(self) -> None:
        """Put the finished file in place (finishing it first if needed)."""
        self.finish()
        self.output.commit()


class CsvSink(_Sink):
    """One CSV row per face per frame (:func:`face_row`'s columns).

    Args:
        path: The CSV file.
        labels: The model's classes (one ``p_<label>`` column each).
        source: What the ``source`` column says (the video read); ``None`` leaves it empty.

    Raises:
        InvalidTypeError: ``labels`` is not a sequence of strings, or ``source`` not a path.
        InvalidOptionError: ``labels`` is empty or names a class twice.
        OutputError: The file cannot be created.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        labels: Sequence[str],
        *,
        source: str | os.PathLike[str] | None = None,
    ) -> None:
        self.labels = _check_labels(labels)
        self.fields = row_columns(self.labels)
        self.source = _source(source)
        super().__init__(path)
        try:
            self._file: IO[str] | None = open(self.output.tmp, "w", newline="")  # noqa: SIM115
        except OSError as e:
            self.output.discard()
            raise OutputError(f"cannot write {self.path}: {e.strerror or e}") from e
        self._writer = csv.DictWriter(self._file, fieldnames=self.fields)
        self._writer.writeheader()

    def write(self, frame: Frame, faces: Sequence[FaceEmotion]) -> None:
        """Append one row per face.

        Raises:
            InvalidTypeError: ``frame`` is not a :class:`Frame`, or ``faces`` not a list of
                :class:`~fer_onnx.FaceEmotion`.
            InvalidOptionError: A face's labels are not the sink's ``labels``.
            OutputError: The sink is finished or closed.
        """
        faces = self._accepted(frame, faces, self.labels)
        for i, face in enumerate(faces):
            self._writer.writerow(face_row(frame, face, i, source=self.source))

    def _finish(self) -> None:
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())

    def _release(self) -> None:
        """Close the temporary file (once, even if closing fails)."""
        file, self._file = self._file, None
        if file is not None:
            file.close()


class JsonSink(_Sink):
    """A JSON list of the same rows, plus each face's landmarks.

    Args:
        path: The JSON file.
        source: What the ``source`` field says (the video read); ``None`` writes ``null``.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, source: str | os.PathLike[str] | None = None
    ) -> None:
        self.source = _source(source)
        super().__init__(path)
        self.rows: list[dict[str, Any]] = []

    def write(self, frame: Frame, faces: Sequence[FaceEmotion]) -> None:
        """Collect one row per face.

        Raises:
            InvalidTypeError: ``frame`` is not a :class:`Frame`, or ``faces`` not a list of
                :class:`~fer_onnx.FaceEmotion`.
            OutputError: The sink is finished or closed.
        """
        faces = self._accepted(frame, faces)
        for i, face in enumerate(faces):
            row = face_row(frame, face, i, source=self.source)
            self.rows.append({**row, "landmarks": face.to_dict()["landmarks"]})

    def _finish(self) -> None:
        with open(self.output.tmp, "w") as f:
            f.write(json.dumps(self.rows) + "\n")
            f.flush()
            os.fsync(f.fileno())


class VideoSink(_Sink):
    """An annotated copy of the video, in the format its suffix names, checked after writing.

    ``.mp4`` is H.264 (plays in browsers), ``.webm`` VP9, ``.mkv``, ``.mov``, ``.avi`` and
    ``.gif`` too; a name without a suffix (``-``, ``/dev/null``) gets MP4 and any other suffix
    is refused (see :mod:`fer_onnx.video_out`). PyAV encodes (the ``video`` extra); without it
    OpenCV writes ``mp4v`` / Motion JPEG and a :class:`~fer_onnx.video_out.VideoFallbackWarning`
    says so. :meth:`finish` reopens the file and checks that every written frame is there.

    Args:
        path: The output file.
        fps: Frames per second.
        size: Width and height of the video; other frames are resized to it.
        backend: ``"auto"`` (PyAV, else OpenCV), ``"pyav"`` or ``"opencv"``.

    Raises:
        InvalidTypeError: ``size`` is not a (width, height) pair of integers.
        InvalidOptionError: ``fps`` is not a finite number > 0, a side is < 1, or ``backend``
            is not one of the three.
        OutputError: The suffix is not a supported video format, the encoder is missing, or
            the file cannot be created. :meth:`finish` raises it too when no frame was
            written (a video needs one), or the file does not read back whole.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        fps: float,
        size: tuple[int, int],
        backend: VideoBackend = "auto",
    ) -> None:
        fps, size = check_writer_options(fps, size, backend)
        self.format = video_format(path)
        self.suffix = self.format.suffix
        super().__init__(path)
        self.size = size
        self.written = 0
        try:
            self._writer: FrameWriter | None = open_video_writer(
                self.output.tmp, self.format, fps, size, backend
            )
        except OutputError as e:
            self.output.discard()
            raise OutputError(f"cannot write {self.path}: {e}") from e
        self.description = self._writer.description

    def write(self, frame: Frame, faces: Sequence[FaceEmotion]) -> None:
        """Draw the faces and append the frame (resized to the video's size if needed).

        Raises:
            InvalidTypeError: ``frame`` is not a :class:`Frame`, or ``faces`` not a list of
                :class:`~fer_onnx.FaceEmotion`.
            OutputError: The sink is finished or closed, or encoding failed.
        """
        faces = self._accepted(frame, faces)
        if self._writer is None:
            raise OutputError(f"{self.path} is already closed")
        image = draw_faces(frame.image, faces)
        if image.ndim == 2 or image.shape[2] != 3:
            code = cv2.COLOR_GRAY2BGR if image.ndim == 2 else cv2.COLOR_BGRA2BGR
            image = np.asarray(cv2.cvtColor(image, code), np.uint8)
        if (image.shape[1], image.shape[0]) != self.size:
            image = np.asarray(cv2.resize(image, self.size, interpolation=cv2.INTER_AREA), np.uint8)
        self._writer.write(image)
        self.written += 1

    def _release(self) -> None:
        """Release the writer (an unfinished file is not flushed: it is discarded)."""
        if self._writer is not None:
            self._writer.abort()
            self._writer = None

    def _finish(self) -> None:
        if not self.written:
            raise OutputError(
                "no frame was written to it, and a video needs at least one (did the source "
                "yield no frame?); nothing was kept"
            )
        if self._writer is not None:
            writer, self._writer = self._writer, None
            writer.close()
        frames = count_video_frames(self.output.tmp)
        if frames != self.written:
            raise OutputError(
                f"writing {self.path} failed: {plural(self.written, 'frame')} written but the "
                f"file holds {max(frames, 0)} (disk full?); nothing was kept"
            )


PLOT_FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}
"""The suffixes a timeline plot may have, with matplotlib's format names (no suffix: PNG)."""

MAX_PLOTTED_TRACKS = 8
"""How many tracks a timeline shows (the longest ones; the plot says what it left out)."""


def plot_format(path: str | os.PathLike[str]) -> str:
    """Matplotlib's format for a timeline plot at ``path``, from its suffix (no suffix: PNG).

    Raises:
        OutputError: The suffix is not one of :data:`PLOT_FORMATS`.
    """
    suffix = Path(os.fspath(path)).suffix.lower()
    if suffix == "":
        return "png"
    if suffix not in PLOT_FORMATS:
        raise OutputError(
            f"cannot write a plot as {os.fspath(path)!r}: the suffix {suffix!r} is not a plot "
            f"format fer-onnx writes; use one of {', '.join(PLOT_FORMATS)}"
        )
    return PLOT_FORMATS[suffix]


class TimelineSink(_Sink):
    """A timeline of each track's probabilities, as PNG, SVG or PDF by the file's suffix.

    Needs matplotlib (the ``plot`` extra). At most :data:`MAX_PLOTTED_TRACKS` tracks are drawn,
    the longest; the plot names how many were left out. The legend sits right of the axes.

    Args:
        path: ``.png``, ``.svg`` or ``.pdf`` (no suffix, ``-`` included: PNG).
        labels: The classifier's labels, one curve each.
        title: The figure's title.

    Raises:
        InvalidTypeError: ``labels`` is not a sequence of strings.
        InvalidOptionError: ``labels`` is empty or names a class twice.
        OutputError: matplotlib is missing, or the suffix is not a plot format.
    """

    def __init__(self, path: str | os.PathLike[str], labels: Sequence[str], title: str) -> None:
        checked = _check_labels(labels)
        self.format = plot_format(path)
        self.suffix = f".{self.format}"
        try:
            import matplotlib  # noqa: F401
        except ImportError as e:
            raise OutputError(
                "a timeline plot needs matplotlib: pip install 'fer-onnx[plot]'"
            ) from e
        super().__init__(path)
        self.labels, self.title = list(checked), str(title)
        self._label_tuple = tuple(checked)
        self.series: dict[int, list[tuple[float, dict[str, float]]]] = {}

    def write(self, frame: Frame, faces: Sequence[FaceEmotion]) -> None:
        """Collect each track's probabilities.

        Raises:
            InvalidTypeError: ``frame`` is not a :class:`Frame`, or ``faces`` not a list of
                :class:`~fer_onnx.FaceEmotion`.
            InvalidOptionError: A face's labels are not the sink's ``labels``.
            OutputError: The sink is finished or closed.
        """
        faces = self._accepted(frame, faces, self._label_tuple)
        for face in faces:
            if face.track_id is not None:
                self.series.setdefault(face.track_id, []).append(
                    (frame.timestamp, dict(face.probabilities))
                )

    def _finish(self) -> None:
        figure = timeline_figure(self.series, self.labels, self.title)
        figure.savefig(self.output.tmp, dpi=100, format=self.format)


def left_out_note(series: dict[int, list[Any]], shown: Sequence[int]) -> str:
    """The sentence a timeline prints about the tracks it does not draw ("" when none)."""
    left = [track for track in series if track not in shown]
    if not left:
        return ""
    longest = max(len(series[track]) for track in left)
    plural = "s" if len(left) > 1 else ""
    return (
        f"The {len(shown)} longest of {len(series)} tracks are shown; {len(left)} shorter "
        f"track{plural} ({longest} frames or fewer each) left out. Every track is in the "
        "CSV/JSON output."
    )


def timeline_figure(
    series: dict[int, list[tuple[float, dict[str, float]]]],
    labels: Sequence[str],
    title: str,
    max_tracks: int = MAX_PLOTTED_TRACKS,
) -> Figure:
    """A matplotlib figure with one panel per track (the longest ``max_tracks``).

    Built without pyplot, so no global matplotlib state (backend, open figures) changes.
    """
    from matplotlib.figure import Figure

    tracks = sorted(series, key=lambda t: (-len(series[t]), t))[:max_tracks]
    rows = max(1, len(tracks))
    figure = Figure(figsize=(11, 1.2 + 2.0 * rows), layout="constrained")
    axes = figure.subplots(rows, 1, sharex=True, squeeze=False)[:, 0]
    for ax, track in zip(axes, tracks, strict=False):
        times = [t for t, _ in series[track]]
        for label in labels:
            ax.plot(times, [p[label] for _, p in series[track]], label=label, lw=1.2)
        ax.set_ylim(0, 1)
        ax.set_ylabel(f"track {track}")
        ax.grid(alpha=0.3)
    if tracks:
        handles, names = axes[0].get_legend_handles_labels()
        figure.legend(handles, names, loc="outside right upper", fontsize=9, frameon=False)
    else:
        axes[0].text(0.5, 0.5, "no faces found", ha="center", va="center")
    note = left_out_note(series, tracks)
    if note:
        axes[0].set_title(note, loc="left", fontsize=9, color="0.3")
    axes[-1].set_xlabel("time (s)")
    figure.suptitle(title)
    return figure
