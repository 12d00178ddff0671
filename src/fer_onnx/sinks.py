"""Where video results go: one sink per output kind, each written in full or not at all.

A sink is a context manager with ``write(frame, faces)`` for every processed frame, ``finish()``
to complete and check its temporary file, and ``commit()`` to put it in place (see
:class:`~fer_onnx.outputs.AtomicOutput`: symlinks are followed, special files and ``-``
(stdout) are written into, inputs are never overwritten). Leaving the ``with`` block without
``commit()`` leaves nothing behind. :func:`finish_all` finishes every sink before committing
any, so one failing output does not leave the others half-done.

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
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal, Protocol

import cv2
import numpy as np

from fer_onnx.draw import draw_faces
from fer_onnx.errors import OutputError
from fer_onnx.outputs import AtomicOutput
from fer_onnx.types import FaceEmotion
from fer_onnx.video import Frame

__all__ = [
    "CsvSink",
    "FaceSink",
    "JsonSink",
    "TimelineSink",
    "VideoSink",
    "face_row",
    "finish_all",
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
    """Finish every sink, then commit them all (nothing is committed if one fails to finish)."""
    for sink in sinks:
        sink.finish()
    for sink in sinks:
        sink.commit()


def face_row(frame: Frame, face: FaceEmotion) -> dict[str, Any]:
    """One flat row: frame, timestamp, track, box, detection score, label, score, p_<label>."""
    b = face.box
    row: dict[str, Any] = {
        "frame": frame.index,
        "timestamp": round(frame.timestamp, 4),
        "track_id": face.track_id,
        "x": b.x,
        "y": b.y,
        "width": b.width,
        "height": b.height,
        "detection_score": None if face.detection_score is None else round(face.detection_score, 4),
        "label": face.label,
        "score": round(face.score, 6),
    }
    row.update({f"p_{k}": round(v, 6) for k, v in face.probabilities.items()})
    return row


class _Sink:
    suffix: str | None = None

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.output = AtomicOutput(path, suffix=self.suffix)
        self.path = self.output.target

    def __enter__(self) -> _Sink:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        self.close()
        self.output.discard()
        return False

    def close(self) -> None:
        """Release open handles (the temporary file is kept until commit or exit)."""

    def finish(self) -> None:
        """Complete the temporary file; a write error becomes :class:`OutputError`."""
        try:
            self._finish()
        except OSError as e:
            raise OutputError(f"cannot write {self.path}: {e.strerror or e}") from e
        finally:
            self.close()

    def _finish(self) -> None:
        pass

    def commit(self) -> None:
        """Put the finished file in place."""
        self.output.commit()


class CsvSink(_Sink):
    """One CSV row per face per frame (:func:`face_row`'s columns)."""

    def __init__(self, path: str | os.PathLike[str], labels: Sequence[str]) -> None:
        super().__init__(path)
        self.fields = [
            "frame",
            "timestamp",
            "track_id",
            "x",
            "y",
            "width",
            "height",
            "detection_score",
            "label",
            "score",
            *[f"p_{label}" for label in labels],
        ]
        try:
            self._file: IO[str] | None = open(self.output.tmp, "w", newline="")  # noqa: SIM115
        except OSError as e:
            self.output.discard()
            raise OutputError(f"cannot write {self.path}: {e.strerror or e}") from e
        self._writer = csv.DictWriter(self._file, fieldnames=self.fields)
        self._writer.writeheader()

    def write(self, frame: Frame, faces: Sequence[FaceEmotion]) -> None:
        """Append one row per face."""
        for face in faces:
            self._writer.writerow(face_row(frame, face))

    def _finish(self) -> None:
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self) -> None:
        """Close the temporary file."""
        if self._file is not None:
            self._file.close()
            self._file = None


class JsonSink(_Sink):
    """A JSON list of the same rows, plus each face's landmarks."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(path)
        self.rows: list[dict[str, Any]] = []

    def write(self, frame: Frame, faces: Sequence[FaceEmotion]) -> None:
        """Collect one row per face."""
        for face in faces:
            self.rows.append({**face_row(frame, face), "landmarks": face.to_dict()["landmarks"]})

    def _finish(self) -> None:
        with open(self.output.tmp, "w") as f:
            f.write(json.dumps(self.rows) + "\n")
            f.flush()
            os.fsync(f.fileno())


class VideoSink(_Sink):
    """An annotated copy of the video (MPEG-4), checked after writing.

    OpenCV's writer does not report write errors (a full disk only logs), so :meth:`finish`
    reopens the file and checks that every written frame is there.
    """

    suffix = ".mp4"

    def __init__(self, path: str | os.PathLike[str], fps: float, size: tuple[int, int]) -> None:
        super().__init__(path)
        self.size = size
        self.written = 0
        self._writer: cv2.VideoWriter | None = cv2.VideoWriter(
            str(self.output.tmp), cv2.VideoWriter.fourcc(*"mp4v"), fps, size
        )
        if not self._writer.isOpened():
            self.close()
            self.output.discard()
            raise OutputError(f"cannot open a video writer for {self.path}")

    def write(self, frame: Frame, faces: Sequence[FaceEmotion]) -> None:
        """Draw the faces and append the frame (resized to the video's size if needed)."""
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

    def close(self) -> None:
        """Release the writer."""
        if self._writer is not None:
            self._writer.release()
            self._writer = None

    def _finish(self) -> None:
        self.close()
        check = cv2.VideoCapture(str(self.output.tmp))
        try:
            frames = int(check.get(cv2.CAP_PROP_FRAME_COUNT)) if check.isOpened() else -1
        finally:
            check.release()
        if self.written and frames != self.written:
            raise OutputError(
                f"writing {self.path} failed: {self.written} frames were written but the file "
                f"holds {max(frames, 0)} (disk full?); nothing was kept"
            )


class TimelineSink(_Sink):
    """A PNG timeline of each track's probabilities (needs matplotlib: the ``plot`` extra)."""

    suffix = ".png"

    def __init__(self, path: str | os.PathLike[str], labels: Sequence[str], title: str) -> None:
        try:
            import matplotlib  # noqa: F401
        except ImportError as e:
            raise OutputError(
                "a timeline plot needs matplotlib: pip install 'fer-onnx[plot]'"
            ) from e
        super().__init__(path)
        self.labels, self.title = list(labels), title
        self.series: dict[int, list[tuple[float, dict[str, float]]]] = {}

    def write(self, frame: Frame, faces: Sequence[FaceEmotion]) -> None:
        """Collect each track's probabilities."""
        for face in faces:
            if face.track_id is not None:
                self.series.setdefault(face.track_id, []).append(
                    (frame.timestamp, dict(face.probabilities))
                )

    def _finish(self) -> None:
        _plot_timeline(self.series, self.labels, self.output.tmp, self.title)


def _plot_timeline(
    series: dict[int, list[tuple[float, dict[str, float]]]],
    labels: Sequence[str],
    path: Path,
    title: str,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tracks = sorted(series, key=lambda t: -len(series[t]))[:8]
    fig, axes = plt.subplots(
        max(1, len(tracks)), 1, figsize=(11, 2.2 * max(1, len(tracks))), sharex=True, squeeze=False
    )
    for ax, track in zip(axes[:, 0], tracks, strict=False):
        times = [t for t, _ in series[track]]
        for label in labels:
            ax.plot(times, [p[label] for _, p in series[track]], label=label, lw=1.2)
        ax.set_ylim(0, 1)
        ax.set_ylabel(f"track {track}")
        ax.grid(alpha=0.3)
    if not tracks:
        axes[0, 0].text(0.5, 0.5, "no faces found", ha="center", va="center")
    axes[0, 0].legend(ncol=len(labels), fontsize=8, loc="upper right")
    axes[-1, 0].set_xlabel("time (s)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)
