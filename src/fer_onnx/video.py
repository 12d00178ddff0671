"""Video mode: face tracks with stable ids, smoothed probabilities and cheap re-detection.

:class:`VideoRecognizer` wraps an :class:`~fer_onnx.EmotionRecognizer` for consecutive frames:

* **Detection**: with ``redetect_every=1`` (the default for detectors that do not implement
  :class:`~fer_onnx.RegionDetector`, and for YuNet, whose full pass is cheap) every frame gets a
  full-frame search. Otherwise a full-frame search runs every ``redetect_every`` frames,
  whenever there are no tracks, and whenever a track was not found in its region; in between,
  each track's region is searched with the detector's ``detect_region`` (Haar shrinks the
  region so the face is ~48 px wide and searches only 0.7x to 1.4x that size).
* **Tracks**: detections are matched to tracks by IoU (greedy, best first); a track ends after
  ``max_missed`` frames without a match.
* **Smoothing**: an exponential moving average of each track's probabilities over about
  ``smoothing`` frames (``alpha = 2 / (smoothing + 1)``); ``smoothing <= 1`` turns it off.
* **Batching**: one session run per frame for all faces.

:func:`read_frames` iterates a video file or camera with frame index and timestamp, counting
frames that fail to decode instead of stopping or dropping them silently.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt

from fer_onnx._checks import check_int, check_number
from fer_onnx._text import plural
from fer_onnx.detectors import Detector, HaarDetector, RegionDetector, fit_detections
from fer_onnx.errors import InvalidOptionError, InvalidTypeError, NoDetectorError, VideoError
from fer_onnx.images import load_image
from fer_onnx.recognizer import EmotionRecognizer
from fer_onnx.types import Box, Detection, FaceEmotion

log = logging.getLogger(__name__)

__all__ = [
    "Frame",
    "VideoRecognizer",
    "VideoSource",
    "VideoStats",
    "open_video",
    "read_frames",
    "require_frames",
]


@dataclass
class _Track:
    id: int
    box: Box
    probs: npt.NDArray[np.float64]
    missed: int = 0


class VideoRecognizer:
    """Recognise expressions over consecutive frames with tracks and smoothing.

    Args:
        recognizer: The recognizer (model + detector) to use; it is not closed by this object.
        smoothing: EMA window in frames for each track's probabilities; ``<= 1`` disables.
        max_missed: Frames a track may go unmatched before it ends.
        iou_threshold: Minimum IoU to match a detection to a track.
        redetect_every: Full-frame detection period in frames (``1``: every frame, no region
            search). ``None`` chooses: 10 for :class:`~fer_onnx.HaarDetector` (a full Haar
            search costs ~10 ms), 1 for every other detector. Values above 1 need a detector
            that implements :class:`~fer_onnx.RegionDetector`.
        roi_margin: Search region around a track's box, as a fraction of its size per side.

    Raises:
        InvalidTypeError: ``recognizer`` is not an :class:`~fer_onnx.EmotionRecognizer`.
        InvalidOptionError: An argument is out of range (also a ``ValueError``).
        NoDetectorError: The recognizer has no detector.
    """

    def __init__(
        self,
        recognizer: EmotionRecognizer,
        *,
        smoothing: float = 5.0,
        max_missed: int = 5,
        iou_threshold: float = 0.3,
        redetect_every: int | None = None,
        roi_margin: float = 0.5,
    ) -> None:
        if not isinstance(recognizer, EmotionRecognizer):
            raise InvalidTypeError(
                "VideoRecognizer needs an EmotionRecognizer, e.g. "
                f"VideoRecognizer(EmotionRecognizer()), got {type(recognizer).__name__}"
            )
        if recognizer.detector is None:
            raise NoDetectorError("video mode needs a recognizer with a face detector")
        detector = recognizer.detector
        if redetect_every is None:
            redetect_every = 10 if isinstance(detector, HaarDetector) else 1
        smoothing = check_number("smoothing", smoothing, 0.0, 10_000.0)
        max_missed = check_int("max_missed", max_missed, 0, 1_000_000)
        redetect_every = check_int("redetect_every", redetect_every, 1, 1_000_000)
        iou_threshold = check_number("iou_threshold", iou_threshold, 0.0, 1.0, low_open=True)
        roi_margin = check_number("roi_margin", roi_margin, 0.0, 10.0)
        self._regions: RegionDetector | None = None
        if redetect_every > 1:
            if not isinstance(detector, RegionDetector):
                raise InvalidOptionError(
                    f"redetect_every={redetect_every} needs a detector with detect_region() "
                    f"(the RegionDetector protocol); {type(detector).__name__} has none: use "
                    "redetect_every=1"
                )
            self._regions = detector
        self.recognizer = recognizer
        self.detector: Detector = detector
        self.alpha = 1.0 if smoothing <= 1 else 2.0 / (smoothing + 1.0)
        self.max_missed = max_missed
        self.iou_threshold = iou_threshold
        self.redetect_every = redetect_every
        self.roi_margin = roi_margin
        self._tracks: list[_Track] = []
        self._next_id = 0
        self._frame = 0
        self._full_next = True
        self._size: tuple[int, ...] | None = None

    def reset(self) -> None:
        """Forget all tracks (e.g. after a scene cut or seeking)."""
        self._tracks.clear()
        self._full_next = True

    @property
    def active_tracks(self) -> int:
        """Number of tracks currently alive."""
        return len(self._tracks)

    def _detect(self, frame: npt.NDArray[np.uint8]) -> list[Detection]:
        return fit_detections(
            self.detector.detect(frame),
            frame.shape[1],
            frame.shape[0],
            source="the detector's detect()",
        )

    def _detect_regions(
        self, frame: npt.NDArray[np.uint8], regions: RegionDetector
    ) -> tuple[list[Detection], bool]:
        """Search around each track; returns detections and whether every track was found."""
        height, width = frame.shape[:2]
        found: list[Detection] = []
        all_found = True
        for track in self._tracks:
            b = track.box
            dx, dy = int(b.width * self.roi_margin), int(b.height * self.roi_margin)
            x1, y1 = max(b.x - dx, 0), max(b.y - dy, 0)
            x2, y2 = min(b.x2 + dx, width), min(b.y2 + dy, height)
            region = frame[y1:y2, x1:x2]
            hits = fit_detections(
                regions.detect_region(region, float(b.width)),
                region.shape[1],
                region.shape[0],
                source="the detector's detect_region()",
            )
            if not hits:
                all_found = False
                continue
            found += [_shift(h, x1, y1) for h in hits]
        return _dedupe(found), all_found

    def process(self, frame: npt.NDArray[np.uint8]) -> list[FaceEmotion]:
        """Recognise the faces of the next frame.

        Args:
            frame: A uint8 gray, BGR or BGRA frame.

        Returns:
            One result per face seen in this frame, with ``track_id`` set and smoothed
            probabilities; ``[]`` when no face is visible.
        """
        self._frame += 1  # a frame that fails still counts: the next one is the next frame
        frame = load_image(frame)
        size = frame.shape[:2]
        if size != self._size:
            # Tracks live in pixels of one frame size: a new size (a new source, a resized
            # stream) starts afresh rather than matching boxes across geometries.
            if self._size is not None:
                self.reset()
            self._size = size
        full = (
            self._regions is None
            or self._full_next
            or not self._tracks
            or (self._frame - 1) % self.redetect_every == 0
        )
        if self._regions is None or full:
            found = self._detect(frame)
        else:
            found, all_found = self._detect_regions(frame, self._regions)
            if not all_found:
                # A face left its region: search the whole frame now rather than lose it.
                found = self._detect(frame)
        self._full_next = False
        probs = (
            self.recognizer.predict(self.recognizer.cut_faces(frame, found))
            if found
            else np.zeros((0, len(self.recognizer.labels)), np.float32)
        )
        return self._update(found, probs)

    def _update(self, found: list[Detection], probs: npt.NDArray[np.float32]) -> list[FaceEmotion]:
        boxes = [d.box for d in found]
        pairs = sorted(
            (
                (t.box.iou(b), ti, bi)
                for ti, t in enumerate(self._tracks)
                for bi, b in enumerate(boxes)
            ),
            reverse=True,
        )
        track_of: dict[int, _Track] = {}
        used: set[int] = set()
        for iou, ti, bi in pairs:
            if iou < self.iou_threshold:
                break
            if ti in used or bi in track_of:
                continue
            used.add(ti)
            track_of[bi] = self._tracks[ti]
        for ti, track in enumerate(self._tracks):
            if ti not in used:
                track.missed += 1
        results = []
        for bi, box in enumerate(boxes):
            p = probs[bi].astype(np.float64)
            matched = track_of.get(bi)
            if matched is None:
                track = _Track(self._next_id, box, p)
                self._next_id += 1
                self._tracks.append(track)
            else:
                track = matched
                track.box, track.missed = box, 0
                track.probs = self.alpha * p + (1.0 - self.alpha) * track.probs
            top, score, distribution = self.recognizer._top(track.probs)
            results.append(
                FaceEmotion(
                    box,
                    top,
                    score,
                    distribution,
                    track.id,
                    detection_score=found[bi].score,
                    landmarks=found[bi].landmarks,
                )
            )
        lost = [t for t in self._tracks if t.missed > self.max_missed]
        if lost:
            self._tracks = [t for t in self._tracks if t.missed <= self.max_missed]
        return results


def _shift(detection: Detection, dx: int, dy: int) -> Detection:
    """Move a detection found in a region back to frame pixels."""
    b = detection.box
    points = detection.landmarks
    return Detection(
        Box(b.x + dx, b.y + dy, b.width, b.height),
        detection.score,
        None if points is None else tuple((x + dx, y + dy) for x, y in points),
    )


def _dedupe(found: list[Detection], iou: float = 0.5) -> list[Detection]:
    """Drop detections that overlap an earlier, larger one (regions of close faces overlap)."""
    kept: list[Detection] = []
    for d in sorted(found, key=lambda d: d.box.area, reverse=True):
        if all(d.box.iou(k.box) < iou for k in kept):
            kept.append(d)
    return kept


@dataclass(frozen=True, slots=True)
class Frame:
    """A decoded frame: its index in the source, its timestamp in seconds, its pixels."""

    index: int
    timestamp: float
    image: npt.NDArray[np.uint8]


@dataclass
class VideoStats:
    """What a video source saw.

    Attributes:
        fps: Frames per second the container announces (30 when it announces none).
        frame_count: Frames the container announces (0 when unknown, e.g. cameras).
        width: Frame width the container announces.
        height: Frame height the container announces.
        read: Frames decoded and yielded.
        corrupt: Frames that were to be analysed (every ``every``-th one) but failed to decode.
        corrupt_indices: Their indices (the first 1,000).
        skipped: Frames passed over on purpose (``every`` > 1), whether or not they would have
            decoded: ``read + skipped + corrupt`` is every frame up to the end of the stream.
        missing_at_end: Frames the container announced after the last decodable one (the
            stream ended early: a truncated file, or a container that estimates its length).
    """

    fps: float
    frame_count: int
    width: int
    height: int
    read: int = 0
    corrupt: int = 0
    corrupt_indices: list[int] = field(default_factory=list)
    skipped: int = 0
    missing_at_end: int = 0

    @property
    def complete(self) -> bool:
        """Whether every frame was decoded (or skipped on purpose).

        A short shortfall at the end (at most 2 frames or 1% of the announced count) is
        taken for an estimated length, not for lost frames.
        """
        slack = max(2, self.frame_count // 100)
        return self.corrupt == 0 and self.missing_at_end <= slack

    def summary(self) -> str:
        """One line for people: frames read, and plainly what was not analysed."""
        line = f"{plural(self.read, 'frame')} read"
        if self.frame_count:
            line += f" of {self.frame_count}"
        if self.skipped:
            line += f" ({self.skipped} skipped by --every)"
        if self.corrupt:
            line += f"; NOT ANALYSED: {plural(self.corrupt, 'frame')} that could not be decoded"
            if self.corrupt_indices:
                shown = ", ".join(str(i) for i in self.corrupt_indices[:10])
                line += f" (first indices: {shown}{', ...' if self.corrupt > 10 else ''})"
        if self.missing_at_end:
            what = "an estimate" if self.complete else "NOT ANALYSED"
            line += (
                f"; the stream ended {plural(self.missing_at_end, 'frame')} before the end the "
                f"container announced ({what})"
            )
        return line


def open_video(source: str | os.PathLike[str] | int) -> tuple[cv2.VideoCapture, VideoStats]:
    """Open a video file, or a camera when ``source`` is an ``int``.

    A string is always a path, even when it is all digits (``"2024"`` is a file name).

    Raises:
        VideoError: The file is missing, OpenCV cannot open it, the camera index is negative or
            no such camera exists, or ``source`` is neither a path nor an int.
    """
    if isinstance(source, bool) or not isinstance(source, (str, os.PathLike, int)):
        raise VideoError(
            f"expected a video file path or a camera index (int), got {type(source).__name__}"
        )
    if isinstance(source, int):
        if source < 0:
            raise VideoError(f"camera index must be >= 0, got {source}")
        cap = cv2.VideoCapture(source)
        what = f"camera {source}"
    else:
        if os.fspath(source) == "":
            raise VideoError("expected a video file path, got an empty string")
        path = Path(source)
        if not path.is_file():
            what = "is a directory, not a video file" if path.is_dir() else "not found"
            raise VideoError(f"video file {what}: {os.fspath(source)!r}")
        cap = cv2.VideoCapture(str(path))
        what = str(path)
    if not cap.isOpened():
        cap.release()
        if isinstance(source, int):
            raise VideoError(
                f"cannot open {what}: no such camera, or another program holds it; check the "
                "camera index (0 is the first camera)"
            )
        raise VideoError(
            f"cannot open {what}: not a video OpenCV can decode (a truncated or corrupt file, "
            "or a codec this OpenCV lacks); check the file, or re-encode it to H.264 MP4"
        )
    fps = cap.get(cv2.CAP_PROP_FPS)
    stats = VideoStats(
        fps=fps if fps and math.isfinite(fps) and fps > 0 else 30.0,
        frame_count=max(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), 0),
        width=int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
        height=int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
    )
    return cap, stats


def read_frames(
    cap: cv2.VideoCapture,
    stats: VideoStats,
    every: int = 1,
    max_failures: int = 250,
    max_gap: int = 1000,
) -> Iterator[Frame]:
    """Yield every ``every``-th frame of an opened capture, counting corrupt frames.

    A frame that fails to decode is counted in ``stats.corrupt`` (with its index) and skipped
    when the stream goes on after it; a failed frame that ``every`` passes over anyway counts
    in ``stats.skipped``, not as corrupt. Reading stops after ``max_gap`` failures in a row when the
    container announces a length (a header may claim far more frames than the file holds), and
    after ``max_failures`` in a row when it announces none (cameras, some streams); the frames
    announced after the last good one are then counted in ``stats.missing_at_end``, never
    stored one by one. Timestamps come from the decoder's presentation time when it gives one,
    so they stay true after a corrupt stretch.

    Args:
        cap: An opened capture (see :func:`open_video`).
        stats: The capture's statistics; updated as frames are read.
        every: Yield every ``every``-th frame (the others count in ``stats.skipped``).
        max_failures: Failures in a row that end a stream of unknown length.
        max_gap: Failures in a row that end a stream of announced length: a corrupt stretch
            longer than this is taken for the end of the stream, and what follows it is
            reported as missing.

    Raises:
        InvalidOptionError: ``every``, ``max_failures`` or ``max_gap`` is not an integer >= 1.
    """
    for name, value in (("every", every), ("max_failures", max_failures), ("max_gap", max_gap)):
        _check_count(name, value)
    known_end = stats.frame_count
    bound = max_gap if known_end else max_failures
    index = -1
    failed_from, failed = 0, 0  # the stretch of failures since the last good frame
    while True:
        ok = cap.grab()
        index += 1
        if not ok:
            if failed == 0:
                failed_from = index
            failed += 1
            if failed < bound and (not known_end or index < known_end):
                continue
            # The stream ended: failures with no good frame after them were never there.
            _ended(stats, failed_from, failed, cut=failed >= bound and index < known_end)
            return
        if failed:  # a corrupt stretch, and the stream went on after it
            _count_corrupt(stats, failed_from, failed, every)
            failed = 0
        msec = cap.get(cv2.CAP_PROP_POS_MSEC)
        timestamp = (
            msec / 1000.0 if msec and math.isfinite(msec) and msec > 0 else index / stats.fps
        )
        if index % every:
            stats.skipped += 1
            continue
        ok, image = cap.retrieve()
        if not ok or image is None or image.size == 0:
            stats.corrupt += 1
            if len(stats.corrupt_indices) < 1000:
                stats.corrupt_indices.append(index)
            continue
        stats.read += 1
        yield Frame(index, timestamp, np.asarray(image, dtype=np.uint8))


def require_frames(stats: VideoStats, name: str, *, note: str = "") -> None:
    """Refuse a video of which not one frame was read (the ``video`` command and ``batch``).

    Args:
        stats: The statistics of the pass.
        name: The video, as the message names it.
        note: Said after the summary (what was not written, for instance).

    Raises:
        VideoError: ``stats.read`` is 0.
    """
    if stats.read:
        return
    which = "of the frames to analyse " if stats.skipped else ""
    raise VideoError(f"no frame {which}of {name} could be decoded: {stats.summary()}{note}")


def _count_corrupt(stats: VideoStats, failed_from: int, failed: int, every: int) -> None:
    """Count a corrupt stretch: its frames that ``every`` would have analysed are corrupt.

    The others were to be passed over anyway, so they count as skipped, as when they decode.
    """
    first = failed_from + (-failed_from) % every  # the first multiple of ``every`` in it
    lost = range(first, failed_from + failed, every)
    stats.corrupt += len(lost)
    stats.skipped += failed - len(lost)
    room = max(0, 1000 - len(stats.corrupt_indices))
    stats.corrupt_indices.extend(lost[:room])


def _check_count(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidOptionError(f"{name} must be an integer >= 1, got {value!r}")


def _ended(stats: VideoStats, failed_from: int, failed: int, *, cut: bool) -> None:
    """Record the end of a stream whose last ``failed`` grabs, from ``failed_from``, failed.

    ``cut``: reading gave up before the end the container announces (too many failures in a
    row); the frames announced after the last good one are reported missing either way.
    """
    known_end = stats.frame_count
    stats.missing_at_end = max(known_end - failed_from, 0) if known_end else 0
    if known_end and cut:
        log.warning(
            "%d frames in a row failed to decode after frame %d; reading stopped there, %d "
            "frames before the end the container announces",
            failed,
            failed_from - 1,
            stats.missing_at_end,
        )


class VideoSource:
    """Frames of a video file or camera, as a context manager that keeps its statistics.

    Example:
        >>> with VideoSource("clip.mp4", every=2) as source:       # doctest: +SKIP
        ...     for frame in source:
        ...         faces = video.process(frame.image)
        ...     print(source.stats.summary())

    A source is read in one pass: ``iter()`` again continues that pass (``first =
    next(iter(source))`` then ``for frame in source`` works), and iterating it after the pass
    ended, or after :meth:`close`, raises :class:`~fer_onnx.VideoError` (open a new
    ``VideoSource`` to read the video again).

    Args:
        source: A file path (``str`` or ``os.PathLike``; never a camera), or an ``int``
            camera index.
        every: Yield every ``every``-th frame.

    Raises:
        VideoError: The source cannot be opened.
    """

    def __init__(self, source: str | os.PathLike[str] | int, every: int = 1) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise InvalidOptionError(f"every must be an integer >= 1, got {every!r}")
        self.source = source
        self.every = every
        self._cap, self.stats = open_video(source)
        self.last_index = -1
        self._iterator: Iterator[Frame] | None = None
        self._ended = False
        self._closed = False

    @property
    def name(self) -> str:
        """The file name, or ``camera N``."""
        return f"camera {self.source}" if isinstance(self.source, int) else Path(self.source).name

    def __iter__(self) -> Iterator[Frame]:
        """The frames, in one pass (a second ``iter()`` continues it, as a file does).

        Raises:
            VideoError: The pass has ended (the source was read to its end), or the source is
                closed.
        """
        self._check_readable()
        if self._iterator is None:
            self._iterator = self._frames()
        elif self._ended:
            raise VideoError(
                f"{self.name} was already read to its end: a VideoSource yields its frames once "
                "(its stats describe that one pass); open a new VideoSource to read it again"
            )
        return self._iterator

    def _check_readable(self) -> None:
        if self._closed:
            raise VideoError(f"{self.name} is closed; open a new VideoSource to read it again")

    def _frames(self) -> Iterator[Frame]:
        frames = read_frames(self._cap, self.stats, every=self.every)
        while True:
            # Closed while being read: raise before the released capture's failures are
            # counted as frames missing at the end.
            self._check_readable()
            frame = next(frames, None)
            if frame is None:
                self._ended = True
                return
            self.last_index = frame.index
            yield frame

    def close(self) -> None:
        """Release the decoder or camera (the stats are kept)."""
        self._closed = True
        self._cap.release()

    def __enter__(self) -> VideoSource:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        self.close()
        return False
