"""The detector protocols, shared geometry helpers, and OpenCV's Haar cascade.

A detector takes a validated uint8 image (HxW gray, HxWx3 BGR or HxWx4 BGRA) and returns
:class:`~fer_onnx.Detection` objects (or bare :class:`~fer_onnx.Box` objects) in pixels of that
image, clipped to it. The bundled YuNet CNN (:class:`fer_onnx.YuNetDetector`, the default) gives
a score and 5 landmarks per face; :class:`HaarDetector`, the detector of the original notebooks,
gives boxes only (``score`` and ``landmarks`` are ``None``).

Video mode can use a cheaper search around each tracked face when the detector also implements
the optional :class:`RegionDetector` protocol; both bundled detectors do.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol, runtime_checkable

import cv2
import numpy as np
import numpy.typing as npt

from fer_onnx._checks import check_int, check_number
from fer_onnx.alignment import landmarks_problem
from fer_onnx.errors import DetectorError, FerOnnxError
from fer_onnx.images import load_image
from fer_onnx.types import Box, Detection

log = logging.getLogger(__name__)

__all__ = [
    "MAX_DETECT_PIXELS",
    "Detector",
    "HaarDetector",
    "RegionDetector",
    "as_detection",
    "fit_detections",
    "scale_boxes",
]

MAX_DETECT_PIXELS = 1 << 23
"""Most pixels (~8.4 megapixels, a 4K UHD frame) a bundled detector searches at once: a larger
image (or ``detect_width=None`` on one) is shrunk to this many pixels first."""


@runtime_checkable
class Detector(Protocol):
    """Anything that finds faces: ``detect(image) -> Sequence[Detection | Box]``."""

    def detect(self, image: npt.NDArray[np.uint8]) -> Sequence[Detection | Box]:
        """Return the faces in ``image``, in its pixels (an empty sequence when there is none)."""
        ...


@runtime_checkable
class RegionDetector(Protocol):
    """Optional for detectors: a cheap search for one known face (used by video mode).

    Video mode cuts a region around each tracked face and asks the detector to find faces in
    it, telling it how wide the tracked face was, so that it can shrink the region and skip
    scales that cannot hold that face.
    """

    def detect_region(
        self, region: npt.NDArray[np.uint8], face_width: float
    ) -> Sequence[Detection]:
        """Find faces in ``region``, expected to hold a face about ``face_width`` px wide.

        Returns detections in pixels of ``region``, clipped to it.
        """
        ...


def as_detection(item: Detection | Box) -> Detection:
    """Wrap a bare :class:`Box` from a detector into a :class:`Detection` (no score, no landmarks).

    Raises:
        DetectorError: The detector returned something that is neither.
    """
    if isinstance(item, Detection):
        return item
    if isinstance(item, Box):
        return Detection(item)
    raise DetectorError(
        f"a detector returned a {type(item).__name__}; detect() must return Detection or Box "
        "objects"
    )


def _what(value: object) -> str:
    return "None" if value is None else f"an object of type {type(value).__name__}"


def fit_detections(
    found: object,
    width: int,
    height: int,
    *,
    source: str = "the detector",
    error: type[FerOnnxError] = DetectorError,
) -> list[Detection]:
    """Check faces found by a detector (or given by a caller) against the image they are in.

    The one place where faces enter the crop/align stage:

    * ``found`` must be a sequence (list, tuple) of :class:`Detection` or :class:`Box`;
    * each box is clipped to the ``width`` x ``height`` image; a box with no part inside it
      (wholly outside, or only touching an edge) is refused: a detector that returns one
      works in other coordinates than the image it was given, and a face that cannot be
      seen gets no emotion;
    * landmarks that cannot frame a face (:func:`fer_onnx.alignment.landmarks_problem`: 5
      (nearly) identical points, or points far from the box) are dropped with a warning in
      the log, so the face is cut at its box, never warped onto a degenerate frame.

    Args:
        found: What the detector returned.
        width: Image width in pixels.
        height: Image height in pixels.
        source: Who produced ``found`` (``"the detector's detect()"``), for error messages.
        error: The error class to raise.

    Returns:
        The detections, with boxes inside the image, in the same order.

    Raises:
        FerOnnxError: ``error`` (a :class:`~fer_onnx.DetectorError` by default): ``found`` is
            not a sequence of Detection or Box objects, or a box lies outside the image.
    """
    if isinstance(found, (str, bytes, bytearray)) or not isinstance(found, Sequence):
        raise error(
            f"{source}: got {_what(found)}, expected a list of Detection or Box objects "
            "(an empty list when there is no face)"
        )
    out = []
    for index, item in enumerate(found):
        if isinstance(item, Box):
            item = Detection(item)
        elif not isinstance(item, Detection):
            raise error(
                f"{source}: got {_what(item)} as item {index}, expected Detection or Box objects"
            )
        box = item.box.clip(width, height)
        if box is None:
            raise error(
                f"{source}: box {item.box.to_tuple()} (item {index}) lies outside the "
                f"{width}x{height} image; boxes must be in pixels of the image searched"
            )
        landmarks = item.landmarks
        if landmarks is not None:
            problem = landmarks_problem(landmarks, item.box)
            if problem is not None:
                log.warning("%s: face %d is cut at its box: %s", source, index, problem)
                landmarks = None
        if box is not item.box or landmarks is not item.landmarks:
            item = replace(item, box=box, landmarks=landmarks)
        out.append(item)
    return out


def to_gray(image: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Return a uint8 gray, BGR or BGRA image as 2-D grey (gray input is returned as is)."""
    if image.ndim == 2:
        return image
    if image.shape[2] == 1:
        return image[:, :, 0]
    code = cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY
    return np.asarray(cv2.cvtColor(image, code), dtype=np.uint8)


def to_bgr(image: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """Return a uint8 gray, BGR or BGRA image as HxWx3 BGR (BGR input is returned as is)."""
    if image.ndim == 2 or image.shape[2] == 1:
        return np.asarray(cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2BGR))
    if image.shape[2] == 4:
        return np.asarray(cv2.cvtColor(image, cv2.COLOR_BGRA2BGR))
    return image


def detect_scale(width: int, height: int, detect_width: int | None) -> float:
    """Scale (<= 1) that shrinks an image to ``detect_width`` and :data:`MAX_DETECT_PIXELS`."""
    scale = 1.0
    if detect_width is not None and width > detect_width:
        scale = detect_width / width
    if width * height * scale * scale > MAX_DETECT_PIXELS:
        scale = math.sqrt(MAX_DETECT_PIXELS / (width * height))
    return scale


def downscale(
    image: npt.NDArray[np.uint8], detect_width: int | None
) -> tuple[npt.NDArray[np.uint8], float]:
    """Shrink ``image`` to ``detect_width`` pixels wide (never enlarge); return it and the scale.

    An image of more than :data:`MAX_DETECT_PIXELS` is shrunk to that many pixels, whatever
    ``detect_width`` says.
    """
    height, width = image.shape[:2]
    scale = detect_scale(width, height, detect_width)
    if scale >= 1.0:
        return image, 1.0
    new_w = max(1, int(round(width * scale)))
    new_h = max(1, int(round(height * scale)))
    small = np.asarray(cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA), np.uint8)
    return small, new_w / width


def _resize_by(image: npt.NDArray[np.uint8], scale: float) -> tuple[npt.NDArray[np.uint8], float]:
    """Shrink ``image`` by ``scale`` (<= 1; area interpolation); return it and the x scale used."""
    if scale >= 1.0:
        return image, 1.0
    width = max(1, round(image.shape[1] * scale))
    height = max(1, round(image.shape[0] * scale))
    small = np.asarray(cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA), np.uint8)
    return small, width / image.shape[1]


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
            Boxes are mapped back to input pixels. An image of more than
            :data:`MAX_DETECT_PIXELS` is shrunk to that many pixels either way.
        equalize: Histogram-equalise the grey image before detection.
        cascade: Path to another cascade XML (default: the frontal-face cascade shipped in
            ``cv2.data``).
        region_face_size: Video mode's region search shrinks a tracked face to about this
            width in pixels (never enlarges) and searches only 0.7x to 1.4x that size; smaller
            is faster, larger finds more small faces. At least 24 (the cascade's window).
        region_scale_factor: Pyramid step of the region search.

    Haar gives boxes only: each :class:`~fer_onnx.Detection` has ``score=None`` and
    ``landmarks=None``, so faces are cropped, not aligned.

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
        region_face_size: int = 48,
        region_scale_factor: float = 1.2,
    ) -> None:
        scale_factor = check_number("scale_factor", scale_factor, 1.01, 4.0)
        region_face_size = check_int(
            "region_face_size (>= the 24 px Haar window)", region_face_size, 24, 4096
        )
        region_scale_factor = check_number("region_scale_factor", region_scale_factor, 1.01, 4.0)
        self.region_face_size = region_face_size
        self.region_scale_factor = region_scale_factor
        min_neighbors = check_int("min_neighbors", min_neighbors, 0, 1000)
        min_size = check_int("min_size", min_size, 1, 100_000)
        if detect_width is not None:
            detect_width = check_int("detect_width (or None)", detect_width, 16, 100_000)
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
            try:
                classifier = cv2.CascadeClassifier(str(self.cascade_path))
            except (cv2.error, SystemError) as e:
                raise DetectorError(
                    f"cannot load Haar cascade {self.cascade_path}: not an OpenCV cascade XML "
                    f"file ({str(e).strip().splitlines()[-1]})"
                ) from e
            if classifier.empty():
                raise DetectorError(f"cannot load Haar cascade {self.cascade_path}")
            self._local.classifier = classifier
        return classifier

    def detect(self, image: npt.NDArray[np.uint8]) -> list[Detection]:
        """Find faces in a uint8 gray, BGR or BGRA image (boxes only, see the class doc).

        Raises:
            InvalidImageError: ``image`` is not a valid image.
        """
        return [Detection(box) for box in self.detect_gray(to_gray(load_image(image)))]

    def detect_region(self, region: npt.NDArray[np.uint8], face_width: float) -> list[Detection]:
        """Search ``region`` for a face about ``face_width`` px wide (video mode).

        The region is shrunk so that the face is about ``region_face_size`` px wide and only
        faces of 0.7x to 1.4x that size are searched.

        Raises:
            InvalidImageError: ``region`` is not a valid image.
            InvalidOptionError: ``face_width`` is not a positive number.
        """
        gray = to_gray(load_image(region))
        face_width = check_number("face_width", face_width, 0.0, math.inf, low_open=True)
        scale = min(1.0, self.region_face_size / max(face_width, 1.0))
        small, scale = _resize_by(gray, scale)
        face = face_width * scale
        hits = self.detect_sized(
            small, int(face * 0.7), int(face * 1.4) + 1, self.region_scale_factor
        )
        return [
            Detection(b)
            for b in scale_boxes([h.to_tuple() for h in hits], scale, gray.shape[1], gray.shape[0])
        ]

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
        small, scale = downscale(gray, p.detect_width)
        if p.equalize:
            small = np.asarray(cv2.equalizeHist(small))
        rects = self._classifier().detectMultiScale(
            small,
            scaleFactor=p.scale_factor,
            minNeighbors=p.min_neighbors,
            minSize=(p.min_size, p.min_size),
        )
        return scale_boxes(rects, scale, gray.shape[1], gray.shape[0])
