"""Face detectors behind one small protocol.

A detector takes a validated uint8 image (HxW gray, HxWx3 BGR or HxWx4 BGRA) and returns face
boxes in pixels of that image, clipped to it. :class:`HaarDetector` (OpenCV's frontal-face
cascade) is the default; :class:`YuNetDetector` wraps ``cv2.FaceDetectorYN`` and needs the
YuNet ONNX file, which fer-onnx does not ship.

Both can detect on a downscaled copy (``detect_width``) for speed; boxes are mapped back to
input pixels. Both are safe to call from several threads at once.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import cv2
import numpy as np
import numpy.typing as npt

from fer_onnx.errors import DetectorError
from fer_onnx.types import Box

__all__ = ["Detector", "HaarDetector", "YuNetDetector", "scale_boxes"]


@runtime_checkable
class Detector(Protocol):
    """Anything that finds faces: ``detect(image) -> list[Box]``."""

    def detect(self, image: npt.NDArray[np.uint8]) -> list[Box]:
        """Return face boxes in pixels of ``image`` (empty list when there is none)."""
        ...


def to_gray(image: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Return a uint8 gray, BGR or BGRA image as 2-D grey (gray input is returned as is)."""
    if image.ndim == 2:
        return image
    if image.shape[2] == 1:
        return image[:, :, 0]
    code = cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY
    return np.asarray(cv2.cvtColor(image, code), dtype=np.uint8)


def _bgr(image: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    if image.ndim == 2 or image.shape[2] == 1:
        return np.asarray(cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2BGR))
    if image.shape[2] == 4:
        return np.asarray(cv2.cvtColor(image, cv2.COLOR_BGRA2BGR))
    return image


def _downscale(
    image: npt.NDArray[np.uint8], detect_width: int | None
) -> tuple[npt.NDArray[np.uint8], float]:
    """Shrink ``image`` to ``detect_width`` pixels wide (never enlarge); return it and the scale."""
    width = image.shape[1]
    if detect_width is None or width <= detect_width:
        return image, 1.0
    scale = detect_width / width
    height = max(1, int(round(image.shape[0] * scale)))
    return np.asarray(
        cv2.resize(image, (detect_width, height), interpolation=cv2.INTER_AREA)
    ), scale


def scale_boxes(
    rects: npt.NDArray[np.floating] | npt.NDArray[np.integer] | Sequence[Sequence[float]],
    scale: float,
    width: int,
    height: int,
    offset: tuple[int, int] = (0, 0),
) -> list[Box]:
    """Map ``(x, y, w, h)`` rows found at ``scale`` back to input pixels, clipped to the image.

    Args:
        rects: Rows of ``x, y, w, h`` in the scaled image.
        scale: Scaled size divided by input size.
        width: Input image width.
        height: Input image height.
        offset: ``(x, y)`` of the scaled region's origin in input pixels.
    """
    boxes = []
    for x, y, w, h in np.asarray(rects, dtype=np.float64).reshape(-1, 4):
        x1 = int(round(x / scale)) + offset[0]
        y1 = int(round(y / scale)) + offset[1]
        x2 = int(round((x + w) / scale)) + offset[0]
        y2 = int(round((y + h) / scale)) + offset[1]
        x1, y1, x2, y2 = max(x1, 0), max(y1, 0), min(x2, width), min(y2, height)
        if x2 > x1 and y2 > y1:
            boxes.append(Box(x1, y1, x2 - x1, y2 - y1))
    return boxes


@dataclass(frozen=True, slots=True)
class _HaarParams:
    scale_factor: float
    min_neighbors: int
    min_size: int
    detect_width: int | None
    equalize: bool


class HaarDetector:
    """OpenCV's Haar cascade face detector (``haarcascade_frontalface_default.xml``).

    Args:
        scale_factor: Image pyramid step (``detectMultiScale``'s ``scaleFactor``); smaller
            finds more faces and costs more.
        min_neighbors: Overlapping detections needed to keep a face; higher means fewer
            false positives.
        min_size: Smallest face searched for, in pixels of the *detection* image.
        detect_width: Detect on a copy downscaled to this width (``None``: full size).
            Boxes are mapped back to input pixels.
        equalize: Histogram-equalise the grey image before detection.
        cascade: Path to another cascade XML (default: the frontal-face cascade shipped in
            ``cv2.data``).

    Raises:
        DetectorError: The cascade file is missing or cannot be loaded.
    """

    def __init__(
        self,
        scale_factor: float = 1.15,
        min_neighbors: int = 5,
        min_size: int = 20,
        detect_width: int | None = 320,
        equalize: bool = False,
        cascade: str | Path | None = None,
    ) -> None:
        if scale_factor <= 1.0:
            raise ValueError(f"scale_factor must be > 1, got {scale_factor}")
        if min_neighbors < 0 or min_size < 1:
            raise ValueError("min_neighbors must be >= 0 and min_size >= 1")
        if detect_width is not None and detect_width < 16:
            raise ValueError(f"detect_width must be >= 16 or None, got {detect_width}")
        if cascade is None:
            cascade_dir = cv2.data.haarcascades  # type: ignore[attr-defined]
            cascade = Path(cascade_dir) / "haarcascade_frontalface_default.xml"
        self.cascade_path = Path(cascade)
        self.params = _HaarParams(scale_factor, min_neighbors, min_size, detect_width, equalize)
        self._local = threading.local()
        self._classifier()  # load now so that a broken install fails at construction

    @property
    def detect_width(self) -> int | None:
        """Width of the downscaled copy detection runs on (``None``: full size)."""
        return self.params.detect_width

    def __repr__(self) -> str:
        p = self.params
        return (
            f"HaarDetector(scale_factor={p.scale_factor}, min_neighbors={p.min_neighbors}, "
            f"min_size={p.min_size}, detect_width={p.detect_width})"
        )

    def _classifier(self) -> cv2.CascadeClassifier:
        # CascadeClassifier is not documented as thread-safe: one instance per thread.
        classifier = getattr(self._local, "classifier", None)
        if classifier is None:
            if not self.cascade_path.is_file():
                raise DetectorError(
                    f"Haar cascade not found: {self.cascade_path}; "
                    "install opencv-python-headless>=4.8,<5"
                )
            classifier = cv2.CascadeClassifier(str(self.cascade_path))
            if classifier.empty():
                raise DetectorError(f"cannot load Haar cascade {self.cascade_path}")
            self._local.classifier = classifier
        return classifier

    def detect(self, image: npt.NDArray[np.uint8]) -> list[Box]:
        """Find faces in a uint8 gray, BGR or BGRA image."""
        return self.detect_gray(to_gray(image))

    def detect_sized(
        self,
        image: npt.NDArray[np.uint8],
        min_size: int,
        max_size: int,
        scale_factor: float | None = None,
    ) -> list[Box]:
        """Find faces between ``min_size`` and ``max_size`` pixels, with no downscaling.

        Used by video mode to search a small region around a known face, skipping pyramid
        levels that cannot hold that face. ``scale_factor`` overrides the detector's step.
        """
        p = self.params
        gray = to_gray(image)
        if p.equalize:
            gray = np.asarray(cv2.equalizeHist(gray))
        low = max(min_size, 1)
        rects = self._classifier().detectMultiScale(
            gray,
            scaleFactor=scale_factor or p.scale_factor,
            minNeighbors=p.min_neighbors,
            minSize=(low, low),
            maxSize=(max(max_size, low), max(max_size, low)),
        )
        return scale_boxes(rects, 1.0, image.shape[1], image.shape[0])

    def detect_gray(self, gray: npt.NDArray[np.uint8]) -> list[Box]:
        """Find faces in a grey image; boxes in its pixels, clipped to it."""
        p = self.params
        small, scale = _downscale(gray, p.detect_width)
        if p.equalize:
            small = np.asarray(cv2.equalizeHist(small))
        rects = self._classifier().detectMultiScale(
            small,
            scaleFactor=p.scale_factor,
            minNeighbors=p.min_neighbors,
            minSize=(p.min_size, p.min_size),
        )
        return scale_boxes(rects, scale, gray.shape[1], gray.shape[0])


class YuNetDetector:
    """OpenCV's YuNet CNN face detector (``cv2.FaceDetectorYN``).

    Args:
        model: Path to ``face_detection_yunet_2023mar.onnx`` (not shipped with fer-onnx).
        score_threshold: Minimum face confidence.
        nms_threshold: Non-maximum suppression IoU threshold.
        top_k: Maximum candidates before NMS.
        detect_width: Detect on a copy downscaled to this width (``None``: full size).

    Raises:
        DetectorError: The model file is missing or OpenCV cannot load it.
    """

    def __init__(
        self,
        model: str | Path,
        score_threshold: float = 0.7,
        nms_threshold: float = 0.3,
        top_k: int = 5000,
        detect_width: int | None = 640,
    ) -> None:
        self.model_path = Path(model)
        if not self.model_path.is_file():
            raise DetectorError(
                f"YuNet model not found: {self.model_path}; download "
                "face_detection_yunet_2023mar.onnx from the OpenCV model zoo and pass its path"
            )
        self.detect_width = detect_width
        self._lock = threading.Lock()
        try:
            self._detector = cv2.FaceDetectorYN.create(
                str(self.model_path), "", (320, 320), score_threshold, nms_threshold, top_k
            )
        except cv2.error as e:
            raise DetectorError(f"cannot load YuNet model {self.model_path}: {e}") from e
        self._size = (320, 320)

    def __repr__(self) -> str:
        return f"YuNetDetector(model={str(self.model_path)!r}, detect_width={self.detect_width})"

    def detect(self, image: npt.NDArray[np.uint8]) -> list[Box]:
        """Find faces in a uint8 gray, BGR or BGRA image."""
        bgr = _bgr(image)
        small, scale = _downscale(bgr, self.detect_width)
        size = (small.shape[1], small.shape[0])
        with self._lock:  # FaceDetectorYN keeps its input size as state
            if size != self._size:
                self._detector.setInputSize(size)
                self._size = size
            _, faces = self._detector.detect(small)
        if faces is None:
            return []
        return scale_boxes(
            np.asarray(faces[:, :4], dtype=np.float64), scale, image.shape[1], image.shape[0]
        )
