"""Cut faces out of an image the way the model's training data framed them.

A model may describe its framing in its metadata (:class:`CropTemplate`, key
``fer_onnx.crop_template``): where the 5 landmarks (eyes, nose tip, mouth corners) and the
box of a box-only detector typically lie in its input frame, as fractions of the frame's width
and height.
The runtime never assumes a framing of its own:

* a face with landmarks is warped with a similarity transform (rotation, uniform scale, shift;
  least squares over the 5 points) onto the template's landmarks, straight into the model's
  input size (:func:`align_face`);
* a face with a box only is cut so that the box lands on the template's box
  (:func:`crop_to_template`);
* a model without a template gets the plain box crop (:func:`fer_onnx.images.crop_faces`).

:func:`frame_face` makes the first two choices for one detection; the runtime and the training
data (``fer-onnx-factory align --photos``) both frame faces through it.

Shrinking is done with area interpolation before the warp, so large faces do not alias.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from fer_onnx.errors import InvalidImageError, InvalidOptionError
from fer_onnx.types import Box, Detection, Landmarks

__all__ = [
    "KEY_CROP_TEMPLATE",
    "CropTemplate",
    "align_face",
    "crop_to_template",
    "frame_face",
    "landmarks_problem",
    "similarity",
]

LANDMARK_GRID = 8
"""Landmarks are rounded to ``1 / LANDMARK_GRID`` px (half to even) before alignment."""

KEY_CROP_TEMPLATE = "fer_onnx.crop_template"
"""Metadata key of a model's :class:`CropTemplate` (JSON)."""

TEMPLATE_POINT_RANGE = (-0.5, 1.5)
"""Where a template's landmarks may lie, as fractions of the frame (a face is in or near it)."""
TEMPLATE_MIN_SPREAD = 0.05
"""Smallest RMS distance of a template's landmarks from their centre (fraction of the frame)."""
TEMPLATE_MIN_EYES = 0.02
"""Smallest distance between a template's eyes (fraction of the frame)."""
TEMPLATE_BOX_SIZE = (0.2, 2.0)
"""Range of a template box's width and height (fractions of the frame): the cut region is
between half and five times the detector's box."""
MIN_LANDMARK_SPREAD_PX = 1.0
"""Smallest RMS distance of a face's landmarks from their centre, in pixels."""
MIN_LANDMARK_SPREAD = 0.05
"""... and as a fraction of the face box's smaller side (a real face's is about 0.25)."""
MAX_CROP_PIXELS = 1 << 24
"""Largest region :func:`crop_to_template` returns at full resolution (~16.8 megapixels);
a larger one (a huge box on a huge image) is shrunk before its border is padded."""


@dataclass(frozen=True, slots=True)
class CropTemplate:
    """Where a face typically lies in the model's input frame (fractions of its size).

    Attributes:
        landmarks: 5 ``(x, y)`` points, in YuNet's order (right eye, left eye, nose tip, right
            and left mouth corners), as fractions of the frame's width and height.
        box: Where a box-only detector's box (OpenCV's frontal-face cascade, whose framing
            a caller's boxes are assumed to share) typically lies in the frame,
            ``(x, y, width, height)`` as fractions; ``None`` when unknown.
    """

    landmarks: tuple[tuple[float, float], ...]
    box: tuple[float, float, float, float] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "landmarks", _template_points(self.landmarks))
        if self.box is not None:
            object.__setattr__(self, "box", _template_box(self.box))

    def to_json(self) -> str:
        """Serialise for the model's metadata."""
        return json.dumps(
            {
                "landmarks": [[round(x, 5), round(y, 5)] for x, y in self.landmarks],
                "box": None if self.box is None else [round(v, 5) for v in self.box],
            }
        )

    @classmethod
    def from_json(cls, text: str) -> CropTemplate:
        """Parse :meth:`to_json`'s output.

        Raises:
            InvalidOptionError: The text is not a valid, plausible template (also a
                ``ValueError``).
        """
        try:
            data = json.loads(text)
            box = data.get("box")
            return cls(
                tuple((float(x), float(y)) for x, y in data["landmarks"]),
                None if box is None else (box[0], box[1], box[2], box[3]),
            )
        except InvalidOptionError as e:
            raise InvalidOptionError(f"implausible crop template {_short(text)}: {e}") from e
        except (
            KeyError,
            TypeError,
            IndexError,
            AttributeError,
            ValueError,
            OverflowError,
            RecursionError,
        ) as e:
            raise InvalidOptionError(f"malformed crop template {_short(text)}: {e}") from e

    def points(self, width: int, height: int) -> npt.NDArray[np.float64]:
        """The template's landmarks in pixels of a ``width`` x ``height`` frame, ``(5, 2)``."""
        return np.asarray(self.landmarks, np.float64) * np.array([width, height], np.float64)


def _short(text: object) -> str:
    shown = repr(text)
    return shown if len(shown) <= 200 else shown[:197] + "..."


def _template_points(landmarks: object) -> tuple[tuple[float, float], ...]:
    """A template's 5 landmarks as floats, refused when they cannot frame a face."""
    try:
        points = tuple((float(x), float(y)) for x, y in landmarks)  # type: ignore[attr-defined]
    except (TypeError, ValueError, OverflowError):
        points = ()
    if len(points) != 5 or not all(math.isfinite(v) for p in points for v in p):
        raise InvalidOptionError(
            f"a crop template needs 5 finite (x, y) points, got {_short(landmarks)}"
        )
    low, high = TEMPLATE_POINT_RANGE
    if not all(low <= v <= high for p in points for v in p):
        raise InvalidOptionError(
            f"crop template landmarks must lie within {low:g}..{high:g} of the frame (fractions "
            f"of its width and height), got {points}"
        )
    array = np.asarray(points)
    if np.linalg.norm(array[0] - array[1]) < TEMPLATE_MIN_EYES:
        raise InvalidOptionError(
            f"the template's eyes (nearly) coincide: {points[0]} and {points[1]}; they must be "
            f"at least {TEMPLATE_MIN_EYES:g} of the frame apart"
        )
    spread = float(np.sqrt(((array - array.mean(axis=0)) ** 2).sum(axis=1).mean()))
    if spread < TEMPLATE_MIN_SPREAD:
        raise InvalidOptionError(
            f"the template's landmarks (nearly) coincide (spread {spread:.3g} of the frame, "
            f"at least {TEMPLATE_MIN_SPREAD:g} needed): every face would be warped to one blur"
        )
    return points


def _template_box(box: object) -> tuple[float, float, float, float]:
    """A template box as floats, refused when it would cut an absurd region."""
    try:
        values = tuple(float(v) for v in box)  # type: ignore[attr-defined]
    except (TypeError, ValueError, OverflowError):
        values = ()
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise InvalidOptionError(
            f"a template box must be 4 finite numbers (x, y, w, h), got {_short(box)}"
        )
    x, y, w, h = values
    low, high = TEMPLATE_BOX_SIZE
    if not (low <= w <= high and low <= h <= high):
        raise InvalidOptionError(
            f"template box width and height must be within {low:g}..{high:g} of the frame, "
            f"got {w:g} x {h:g}"
        )
    if not (-1.0 <= x < 1.0 and -1.0 <= y < 1.0 and x + w > 0 and y + h > 0):
        raise InvalidOptionError(
            f"the template box ({x:g}, {y:g}, {w:g}, {h:g}) must overlap the frame, with x and "
            "y within -1..1"
        )
    return x, y, w, h


def landmarks_problem(
    landmarks: object, box: Box | None = None, image_size: tuple[int, int] | None = None
) -> str | None:
    """Why ``landmarks`` cannot be used to align a face, or ``None`` when they can.

    Landmarks are refused when they are not 5 finite points, when they (nearly) coincide
    (a spread below :data:`MIN_LANDMARK_SPREAD_PX`, or below :data:`MIN_LANDMARK_SPREAD` of
    ``box``'s smaller side), or when a point lies far from the face: outside ``box`` grown by
    its own size on every side, or outside the ``(height, width)`` image grown likewise.
    A warp onto such points would be degenerate (a blur, or a region far from the face).

    Args:
        landmarks: The face's 5 ``(x, y)`` points, in image pixels.
        box: The face's box, when known.
        image_size: ``(height, width)`` of the image, when known.
    """
    try:
        array = np.asarray(landmarks, np.float64)
    except (TypeError, ValueError, OverflowError):
        return f"landmarks must be 5 (x, y) points, got {_short(landmarks)}"
    if array.shape != (5, 2) or not np.isfinite(array).all():
        return f"landmarks must be 5 finite (x, y) points, got {_short(landmarks)}"
    areas = []
    if box is not None:
        areas.append(("its box", box.x, box.y, box.width, box.height))
    if image_size is not None:
        areas.append(("the image", 0, 0, image_size[1], image_size[0]))
    for name, x, y, w, h in areas:
        if not (
            (array[:, 0] >= x - w).all()
            and (array[:, 0] <= x + 2 * w).all()
            and (array[:, 1] >= y - h).all()
            and (array[:, 1] <= y + 2 * h).all()
        ):
            return f"a landmark lies far outside {name}: {array.tolist()}"
    spread = float(np.sqrt(((array - array.mean(axis=0)) ** 2).sum(axis=1).mean()))
    least = MIN_LANDMARK_SPREAD_PX
    if box is not None:
        least = max(least, MIN_LANDMARK_SPREAD * min(box.width, box.height))
    if spread < least:
        return f"the landmarks (nearly) coincide (spread {spread:.3g} px, at least {least:.3g})"
    return None


def similarity(
    source: npt.NDArray[np.floating] | Sequence[Sequence[float]],
    target: npt.NDArray[np.floating] | Sequence[Sequence[float]],
) -> npt.NDArray[np.float64]:
    """Least-squares similarity transform from ``source`` to ``target`` points.

    Rotation, uniform scale and shift (Umeyama's closed form, no outlier rejection), as a 2x3
    matrix for ``cv2.warpAffine``.
    """
    src = np.asarray(source, np.float64).reshape(-1, 2)
    dst = np.asarray(target, np.float64).reshape(-1, 2)
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    s, d = src - src_mean, dst - dst_mean
    # Complex-number form: d ~ z * s, with z = a + ib (rotation and scale).
    sc = s[:, 0] + 1j * s[:, 1]
    dc = d[:, 0] + 1j * d[:, 1]
    denom = float(np.sum(np.abs(sc) ** 2))
    z = complex(np.sum(np.conj(sc) * dc) / denom) if denom > 0 else 1.0 + 0j
    a, b = z.real, z.imag
    rot = np.array([[a, -b], [b, a]])
    shift = dst_mean - rot @ src_mean
    return np.hstack([rot, shift[:, None]])


def align_face(
    image: npt.NDArray[np.uint8],
    landmarks: Landmarks,
    template: CropTemplate,
    size: tuple[int, int],
) -> npt.NDArray[np.uint8]:
    """Warp a face onto the template's landmarks at the model's input size.

    Args:
        image: The whole image (any number of channels), uint8.
        landmarks: The face's 5 points in pixels of ``image``.
        template: The model's framing.
        size: ``(height, width)`` of the model's input.

    Returns:
        The aligned face, ``size`` pixels, same channels as ``image``; pixels from outside
        the image repeat its border.

    Raises:
        InvalidOptionError: The landmarks cannot frame a face (see :func:`landmarks_problem`):
            the warp would be degenerate.
    """
    problem = landmarks_problem(landmarks, None, (image.shape[0], image.shape[1]))
    if problem is not None:
        raise InvalidOptionError(f"cannot align the face: {problem}")
    height, width = size
    # Landmarks snap to 1/8 px (far below their own noise) so that a warp does not depend on
    # the last float bits of the detector, which differ between CPU kernels and runtimes.
    points = np.round(np.asarray(landmarks, np.float64) * LANDMARK_GRID) / LANDMARK_GRID
    matrix = similarity(points, template.points(width, height))
    scale = math.hypot(matrix[0, 0], matrix[1, 0])
    if scale < 0.5:
        # Shrink the face's neighbourhood with area interpolation first, then warp at ~1:1.
        inverse = cv2.invertAffineTransform(matrix)
        corners = np.array([[0, 0, 1], [width, 0, 1], [0, height, 1], [width, height, 1]], float)
        source = corners @ inverse.T
        x0, y0 = np.floor(source.min(axis=0)).astype(int) - 2
        x1, y1 = np.ceil(source.max(axis=0)).astype(int) + 2
        x0, y0 = max(int(x0), 0), max(int(y0), 0)
        x1, y1 = min(int(x1), image.shape[1]), min(int(y1), image.shape[0])
        if x1 > x0 and y1 > y0:
            region = image[y0:y1, x0:x1]
            new_w = max(1, round(region.shape[1] * scale))
            new_h = max(1, round(region.shape[0] * scale))
            small = cv2.resize(region, (new_w, new_h), interpolation=cv2.INTER_AREA)
            factor = np.array([new_w / region.shape[1], new_h / region.shape[0]])
            points = (points - np.array([x0, y0])) * factor
            matrix = similarity(points, template.points(width, height))
            image = np.asarray(small, np.uint8).reshape(new_h, new_w, *image.shape[2:])
    warped = cv2.warpAffine(
        image, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    return np.asarray(warped, np.uint8).reshape(height, width, *image.shape[2:])


def crop_to_template(
    image: npt.NDArray[np.uint8], box: Box, template: CropTemplate
) -> npt.NDArray[np.uint8]:
    """Cut the region that puts ``box`` where the template's box lies in the frame.

    The box is first clipped to the image (the part of a face outside it cannot be seen).
    Without a template box this is the plain crop of the clipped box. Parts of the region
    outside the image repeat its border, so the face keeps its place in the frame. A region
    over :data:`MAX_CROP_PIXELS` that needs such padding is shrunk first (area interpolation),
    so the result stays bounded whatever the box.

    Raises:
        InvalidImageError: The box lies wholly outside the image.
    """
    height, width = image.shape[:2]
    inside = box.clip(width, height)
    if inside is None:
        raise InvalidImageError(
            f"box {box.to_tuple()} lies outside the {width}x{height} image; boxes must be in "
            "pixels of the image they were found in"
        )
    if template.box is None:
        return image[inside.y : inside.y2, inside.x : inside.x2]
    tx, ty, tw, th = template.box
    crop_w, crop_h = inside.width / tw, inside.height / th
    x0 = int(round(inside.x - tx * crop_w))
    y0 = int(round(inside.y - ty * crop_h))
    x1, y1 = x0 + max(1, int(round(crop_w))), y0 + max(1, int(round(crop_h)))
    pads = (max(-y0, 0), max(y1 - height, 0), max(-x0, 0), max(x1 - width, 0))
    inner = image[max(y0, 0) : min(y1, height), max(x0, 0) : min(x1, width)]
    if inner.size == 0:  # cannot happen with a valid template; never pad an empty image
        raise InvalidImageError(f"box {box.to_tuple()} leaves nothing of the image to crop")
    if not any(pads):
        return inner
    area = (x1 - x0) * (y1 - y0)
    if area > MAX_CROP_PIXELS:
        scale = math.sqrt(MAX_CROP_PIXELS / area)
        small_w = max(1, round(inner.shape[1] * scale))
        small_h = max(1, round(inner.shape[0] * scale))
        small = cv2.resize(inner, (small_w, small_h), interpolation=cv2.INTER_AREA)
        inner = np.asarray(small, np.uint8).reshape(small_h, small_w, *inner.shape[2:])
        pads = (
            round(pads[0] * scale),
            round(pads[1] * scale),
            round(pads[2] * scale),
            round(pads[3] * scale),
        )
    return np.asarray(cv2.copyMakeBorder(inner, *pads, borderType=cv2.BORDER_REPLICATE), np.uint8)


def frame_face(
    image: npt.NDArray[np.uint8],
    detection: Detection,
    template: CropTemplate,
    size: tuple[int, int],
) -> npt.NDArray[np.uint8]:
    """Frame one detected face onto ``template``: by its landmarks, else by its box.

    A detection with landmarks is warped onto the template's landmarks at ``size``
    (:func:`align_face`); one with a box only is cut so that its box lands on the template's
    box (:func:`crop_to_template`), at whatever size that region has.

    Args:
        image: The whole image the face was found in, uint8.
        detection: The face, in pixels of ``image``; landmarks that cannot frame a face must
            have been dropped beforehand (:func:`fer_onnx.detectors.fit_detections` does).
        template: The model's framing.
        size: ``(height, width)`` of the model's input.

    Returns:
        The framed face, same channels as ``image``.

    Raises:
        InvalidOptionError: The landmarks cannot frame a face.
        InvalidImageError: The box lies wholly outside the image.
    """
    if detection.landmarks is not None:
        return align_face(image, detection.landmarks, template, size)
    return crop_to_template(image, detection.box, template)
