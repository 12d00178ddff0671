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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from fer_onnx.detectors import Detector, HaarDetector, RegionDetector, as_detection
from fer_onnx.errors import FerOnnxError, VideoError
from fer_onnx.images import load_image
from fer_onnx.recognizer import EmotionRecognizer
from fer_onnx.types import Box, Detection, FaceEmotion

log = logging.getLogger(__name__)

__all__ = ["Frame", "VideoRecognizer", "VideoStats", "open_video", "read_frames"]


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
        ValueError: An argument is out of range.
        FerOnnxError: The recognizer has no detector.
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
        if recognizer.detector is None:
            raise FerOnnxError("video mode needs a recognizer with a face detector")
        detector = recognizer.detector
        if redetect_every is None:
            redetect_every = 10 if isinstance(detector, HaarDetector) else 1
        if max_missed < 0 or redetect_every < 1 or not 0 < iou_threshold <= 1 or roi_margin < 0:
            raise ValueError(
                "need max_missed >= 0, redetect_every >= 1, 0 < iou_threshold <= 1, roi_margin >= 0"
            )
        self._regions: RegionDetector | None = None
        if redetect_every > 1:
            if not isinstance(detector, RegionDetector):
                raise ValueError(
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

    def reset(self) -> None:
        """Forget all tracks (e.g. after a scene cut or seeking)."""
        self._tracks.clear()
        self._full_next = True

    @property
    def active_tracks(self) -> int:
        """Number of tracks currently alive."""
        return len(self._tracks)

    def _detect(self, frame: npt.NDArray[np.uint8]) -> list[Detection]:
        return [as_detection(d) for d in self.detector.detect(frame)]

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
            hits = regions.detect_region(frame[y1:y2, x1:x2], float(b.width))
            if not hits:
                all_found = False
                continue
            found += [_shift(as_detection(h), x1, y1) for h in hits]
        return _dedupe(found), all_found

    def process(self, frame: npt.NDArray[np.uint8]) -> list[FaceEmotion]:
        """Recognise the faces of the next frame.

        Args:
            frame: A uint8 gray, BGR or BGRA frame.

        Returns:
            One result per face seen in this frame, with ``track_id`` set and smoothed
            probabilities; ``[]`` when no face is visible.
        """
        frame = load_image(frame)
        full = (
            self._regions is None
            or self._full_next
            or not self._tracks
            or self._frame % self.redetect_every == 0
        )
        if self._regions is None or full:
            found = self._detect(frame)
        else:
            found, all_found = self._detect_regions(frame, self._regions)
            if not all_found:
                # A face left its region: search the whole frame now rather than lose it.
                found = self._detect(frame)
        self._frame += 1
        self._full_next = False
        probs = (
            self.recognizer.predict(self.recognizer.cut_faces(frame, found))
            if found
            else np.zeros((0, len(self.recognizer.labels)), np.float32)
        )
        return self._update(found, probs)

    def _update(
        self, found: list[Detection], probs: npt.NDArray[np.float32]
    ) -> list[FaceEmotion]:
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
    """What :func:`read_frames` saw: frames read, frames that failed to decode."""

    fps: float
    frame_count: int
    width: int
    height: int
    read: int = 0
    corrupt: int = 0
    corrupt_indices: list[int] = field(default_factory=list)


def open_video(source: str | Path | int) -> tuple[cv2.VideoCapture, VideoStats]:
    """Open a video file or camera index.

    Raises:
        VideoError: The file is missing or OpenCV cannot open it.
    """
    if isinstance(source, (str, Path)) and not str(source).isdigit():
        path = Path(source)
        if not path.is_file():
            raise VideoError(f"video file not found: {path}")
        cap = cv2.VideoCapture(str(path))
    else:
        cap = cv2.VideoCapture(int(str(source)))
    if not cap.isOpened():
        cap.release()
        what = f"camera {source}" if isinstance(source, int) or str(source).isdigit() else source
        raise VideoError(
            f"cannot open {what}: not a video OpenCV can decode, or no such camera; "
            "check the path, the codec (try re-encoding to H.264 MP4) or the camera index"
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
    cap: cv2.VideoCapture, stats: VideoStats, every: int = 1, max_failures: int = 25
) -> Iterator[Frame]:
    """Yield every ``every``-th frame of an opened capture, counting corrupt frames.

    A frame that fails to decode before the end announced by the container is counted in
    ``stats.corrupt`` (with its index) and skipped; reading stops after ``max_failures``
    failures in a row or at the end of the stream.
    """
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")
    index = -1
    failures = 0
    while True:
        ok = cap.grab()
        index += 1
        if not ok:
            if stats.frame_count and index < stats.frame_count and failures < max_failures:
                failures += 1
                stats.corrupt += 1
                stats.corrupt_indices.append(index)
                continue
            return
        if index % every:
            failures = 0
            continue
        ok, image = cap.retrieve()
        if not ok or image is None or image.size == 0:
            failures += 1
            stats.corrupt += 1
            stats.corrupt_indices.append(index)
            if failures >= max_failures:
                return
            continue
        failures = 0
        stats.read += 1
        yield Frame(index, index / stats.fps, np.asarray(image, dtype=np.uint8))
