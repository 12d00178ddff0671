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

from fer_onnx.types import Box, Landmarks

__all__ = ["KEY_CROP_TEMPLATE", "CropTemplate", "align_face", "crop_to_template", "similarity"]

LANDMARK_GRID = 8
"""Landmarks are rounded to ``1 / LANDMARK_GRID`` px (half to even) before alignment."""

KEY_CROP_TEMPLATE = "fer_onnx.crop_template"
"""Metadata key of a model's :class:`CropTemplate` (JSON)."""


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
        points = tuple((float(x), float(y)) for x, y in self.landmarks)
        if len(points) != 5 or not all(math.isfinite(v) for p in points for v in p):
            raise ValueError(f"a crop template needs 5 finite (x, y) points, got {self.landmarks}")
        if np.linalg.norm(np.subtract(points[0], points[1])) < 1e-3:
            raise ValueError("the template's eyes coincide")
        object.__setattr__(self, "landmarks", points)
        if self.box is not None:
            box = tuple(float(v) for v in self.box)
            if len(box) != 4 or not all(math.isfinite(v) for v in box) or min(box[2:]) <= 0:
                raise ValueError(f"template box must be finite (x, y, w, h), w, h > 0: {self.box}")
            object.__setattr__(self, "box", box)

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
            ValueError: The text is not a valid template.
        """
        try:
            data = json.loads(text)
            box = data.get("box")
            return cls(
                tuple((float(x), float(y)) for x, y in data["landmarks"]),
                None if box is None else (box[0], box[1], box[2], box[3]),
            )
        except (KeyError, TypeError, IndexError, AttributeError, json.JSONDecodeError) as e:
            raise ValueError(f"malformed crop template {text!r}: {e}") from e

    def points(self, width: int, height: int) -> npt.NDArray[np.float64]:
        """The template's landmarks in pixels of a ``width`` x ``height`` frame, ``(5, 2)``."""
        return np.asarray(self.landmarks, np.float64) * np.array([width, height], np.float64)


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
    """
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

    Without a template box this is the plain box crop. Parts of the region outside the image
    repeat its border, so the face keeps its place in the frame.
    """
    if template.box is None:
        return image[box.y : box.y2, box.x : box.x2]
    tx, ty, tw, th = template.box
    crop_w, crop_h = box.width / tw, box.height / th
    x0 = int(round(box.x - tx * crop_w))
    y0 = int(round(box.y - ty * crop_h))
    x1, y1 = x0 + max(1, int(round(crop_w))), y0 + max(1, int(round(crop_h)))
    height, width = image.shape[:2]
    pads = (max(-y0, 0), max(y1 - height, 0), max(-x0, 0), max(x1 - width, 0))
    inner = image[max(y0, 0) : min(y1, height), max(x0, 0) : min(x1, width)]
    if any(pads):
        return np.asarray(
            cv2.copyMakeBorder(inner, *pads, borderType=cv2.BORDER_REPLICATE), np.uint8
        )
    return inner
