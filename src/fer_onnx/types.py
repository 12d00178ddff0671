"""Result types: frozen, slotted dataclasses with documented conventions.

Conventions, stated once:

* A :class:`Box` is in pixels of the image given to ``recognize``: ``x, y`` is the top-left
  corner, then ``width, height``; all integers, inside the image.
* ``probabilities`` hold every class of the model, in model order, as floats summing to 1.
* No faces is an empty list, never ``None``.
* Landmarks are 5 ``(x, y)`` points in pixels of the input image, in YuNet's order: right eye,
  left eye (the subject's: the right eye appears on the image's left), nose tip, right and left
  mouth corners.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from fer_onnx.errors import InvalidOptionError, InvalidTypeError

__all__ = ["Box", "Detection", "Emotion", "FaceEmotion", "Landmarks"]

Landmarks = tuple[tuple[float, float], ...]
"""Five ``(x, y)`` points: right eye, left eye, nose tip, right and left mouth corners."""


@dataclass(frozen=True, slots=True)
class Box:
    """A face box in pixels: top-left corner ``(x, y)``, then ``width`` and ``height``.

    Iterating gives the four numbers in that order: ``x, y, w, h = box``, ``tuple(box)``.
    """

    x: int
    y: int
    width: int
    height: int

    def __post_init__(self) -> None:
        for name in ("x", "y", "width", "height"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise InvalidTypeError(
                    f"Box.{name} must be an int, got {type(value).__name__}; round pixel "
                    "coordinates first, e.g. Box(*(int(round(v)) for v in (x, y, w, h)))"
                )
        if self.width <= 0 or self.height <= 0:
            raise InvalidOptionError(f"Box width and height must be positive, got {self}")

    @property
    def x2(self) -> int:
        """Right edge (exclusive)."""
        return self.x + self.width

    @property
    def y2(self) -> int:
        """Bottom edge (exclusive)."""
        return self.y + self.height

    @property
    def area(self) -> int:
        """Area in pixels."""
        return self.width * self.height

    def iou(self, other: Box) -> float:
        """Intersection over union with ``other`` (0 when they do not overlap)."""
        w = min(self.x2, other.x2) - max(self.x, other.x)
        h = min(self.y2, other.y2) - max(self.y, other.y)
        if w <= 0 or h <= 0:
            return 0.0
        inter = w * h
        return inter / (self.area + other.area - inter)

    def clip(self, width: int, height: int) -> Box | None:
        """The part of this box inside a ``width`` x ``height`` image, or ``None`` if none is.

        A box that lies partly outside the image is cut at its edges; one that lies wholly
        outside (or only touches an edge) has no part inside.
        """
        x1, y1 = max(self.x, 0), max(self.y, 0)
        x2, y2 = min(self.x2, width), min(self.y2, height)
        if x2 <= x1 or y2 <= y1:
            return None
        if (x1, y1, x2, y2) == (self.x, self.y, self.x2, self.y2):
            return self
        return Box(x1, y1, x2 - x1, y2 - y1)

    def __iter__(self) -> Iterator[int]:
        """``x, y, width, height``, so that ``x, y, w, h = face.box`` works."""
        yield self.x
        yield self.y
        yield self.width
        yield self.height

    def to_tuple(self) -> tuple[int, int, int, int]:
        """``(x, y, width, height)``."""
        return (self.x, self.y, self.width, self.height)

    def to_dict(self) -> dict[str, int]:
        """JSON-ready dictionary."""
        return {"x": self.x, "y": self.y, "width": self.width, "height": self.height}


def _check_landmarks(landmarks: Landmarks | None) -> Landmarks | None:
    if landmarks is None:
        return None
    try:
        points = tuple((float(x), float(y)) for x, y in landmarks)
    except (TypeError, ValueError, OverflowError):
        points = ()
    if len(points) != 5 or not all(math.isfinite(v) for p in points for v in p):
        raise InvalidOptionError(
            f"landmarks must be 5 finite (x, y) points or None, got {landmarks!r}"
        )
    return points


def _check_score(score: float | None) -> None:
    number = score is not None and isinstance(score, (int, float)) and not isinstance(score, bool)
    if score is not None and not (number and math.isfinite(score) and 0.0 <= score <= 1.0):
        raise InvalidOptionError(f"detection score must be a number within 0..1, got {score!r}")


@dataclass(frozen=True, slots=True)
class Detection:
    """A face found by a detector.

    Attributes:
        box: Where the face is, in pixels of the image searched.
        score: The detector's confidence in 0..1, or ``None`` when the detector gives none
            (the Haar cascade).
        landmarks: 5 points (see the module docstring) when the detector gives them (YuNet),
            else ``None``.
    """

    box: Box
    score: float | None = None
    landmarks: Landmarks | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.box, Box):
            raise InvalidTypeError(
                f"Detection.box must be a Box, got {type(self.box).__name__}; build it with "
                "Box(x, y, width, height)"
            )
        _check_score(self.score)
        object.__setattr__(self, "landmarks", _check_landmarks(self.landmarks))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (``score`` and ``landmarks`` may be ``None``)."""
        return {
            "box": self.box.to_dict(),
            "score": self.score,
            "landmarks": None if self.landmarks is None else [list(p) for p in self.landmarks],
        }


def _check_probabilities(probabilities: Mapping[str, float], label: str, score: float) -> None:
    if not isinstance(probabilities, Mapping) or not probabilities:
        raise InvalidOptionError(
            f"probabilities must be a non-empty mapping of label to float, got {probabilities!r}"
        )
    try:
        total = math.fsum(probabilities.values())
        close = math.isclose(probabilities.get(label, math.nan), score, abs_tol=1e-6)
    except (TypeError, ValueError) as e:
        raise InvalidOptionError(f"probabilities and score must be numbers: {e}") from e
    if not math.isclose(total, 1.0, abs_tol=1e-3):
        raise InvalidOptionError(f"probabilities must sum to 1, got {total:.6f}")
    if label not in probabilities:
        raise InvalidOptionError(f"label {label!r} is not one of {list(probabilities)}")
    if not close:
        raise InvalidOptionError(f"score {score} differs from probabilities[{label!r}]")


@dataclass(frozen=True, slots=True)
class Emotion:
    """The expression of one face crop.

    Attributes:
        label: The most probable class.
        score: Its probability.
        probabilities: Every class of the model, in model order, summing to 1.
    """

    label: str
    score: float
    probabilities: Mapping[str, float] = field(repr=False)

    def __post_init__(self) -> None:
        _check_probabilities(self.probabilities, self.label, self.score)
        object.__setattr__(self, "probabilities", dict(self.probabilities))

    def __repr__(self) -> str:
        return f"Emotion(label={self.label!r}, score={self.score:.3f})"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary."""
        return {"label": self.label, "score": self.score, "probabilities": dict(self.probabilities)}


@dataclass(frozen=True, slots=True)
class FaceEmotion:
    """A face found in an image and its expression.

    Attributes:
        box: Where the face is, in pixels of the input image.
        label: The most probable class.
        score: Its probability.
        probabilities: Every class of the model, in model order, summing to 1.
        track_id: Identity of the face across video frames (``None`` outside video mode).
        detection_score: The face detector's confidence in 0..1; ``None`` when the detector
            gives none (Haar) or the caller passed the box.
        landmarks: 5 facial points in pixels of the input image when the detector gives them
            (YuNet), else ``None``.
    """

    box: Box
    label: str
    score: float
    probabilities: Mapping[str, float] = field(repr=False)
    track_id: int | None = None
    detection_score: float | None = None
    landmarks: Landmarks | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        _check_probabilities(self.probabilities, self.label, self.score)
        _check_score(self.detection_score)
        object.__setattr__(self, "probabilities", dict(self.probabilities))
        object.__setattr__(self, "landmarks", _check_landmarks(self.landmarks))

    def __repr__(self) -> str:
        track = "" if self.track_id is None else f", track_id={self.track_id}"
        return (
            f"FaceEmotion(box={self.box.to_tuple()}, label={self.label!r}, "
            f"score={self.score:.3f}{track})"
        )

    @property
    def emotion(self) -> Emotion:
        """The expression without the box."""
        return Emotion(self.label, self.score, self.probabilities)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary."""
        out: dict[str, Any] = {
            "box": self.box.to_dict(),
            "label": self.label,
            "score": self.score,
            "probabilities": dict(self.probabilities),
        }
        if self.track_id is not None:
            out["track_id"] = self.track_id
        out["detection_score"] = self.detection_score
        out["landmarks"] = None if self.landmarks is None else [list(p) for p in self.landmarks]
        return out
