"""Drawing results onto images (boxes, labels, FPS)."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import numpy.typing as npt

from fer_onnx.images import as_uint8
from fer_onnx.types import FaceEmotion

__all__ = ["draw_faces", "draw_text"]

_PALETTE = [
    (0, 200, 255),
    (255, 160, 0),
    (80, 220, 80),
    (230, 80, 230),
    (60, 60, 255),
    (255, 255, 80),
    (160, 120, 255),
]


def draw_text(
    image: npt.NDArray[np.uint8],
    text: str,
    origin: tuple[int, int],
    color: tuple[int, int, int] = (255, 255, 255),
) -> None:
    """Write ``text`` with a dark background at ``origin`` (bottom-left), in place."""
    scale = max(0.4, min(image.shape[:2]) / 900)
    thickness = max(1, round(scale * 2))
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    x, y = origin
    y = max(y, h + base)
    cv2.rectangle(image, (x, y - h - base), (x + w, y + base // 2), (0, 0, 0), -1)
    cv2.putText(
        image,
        text,
        (x, y - base // 2),
        cv2.FONT_HERSHEY_SIMPLEX,
        scale,
        color,
        thickness,
        cv2.LINE_AA,
    )


def draw_faces(
    image: npt.NDArray[np.uint8], faces: Sequence[FaceEmotion], copy: bool = True
) -> npt.NDArray[np.uint8]:
    """Draw each face's box and ``label score`` (and track id) on a BGR image.

    Args:
        image: A uint8 BGR (or gray, converted to BGR) image.
        faces: Results from ``recognize`` or ``VideoRecognizer.process``.
        copy: Draw on a copy (default) or in place (BGR input only).

    Returns:
        The annotated BGR image.
    """
    if image.ndim == 2 or image.shape[2] == 1:
        out = as_uint8(cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2BGR))
    elif image.shape[2] == 4:
        out = as_uint8(cv2.cvtColor(image, cv2.COLOR_BGRA2BGR))
    else:
        out = image.copy() if copy else image
    thickness = max(2, round(min(out.shape[:2]) / 300))
    for i, face in enumerate(faces):
        key = face.track_id if face.track_id is not None else i
        color = _PALETTE[key % len(_PALETTE)]
        b = face.box
        cv2.rectangle(out, (b.x, b.y), (b.x2 - 1, b.y2 - 1), color, thickness)
        track = "" if face.track_id is None else f"#{face.track_id} "
        draw_text(out, f"{track}{face.label} {face.score:.0%}", (b.x, b.y - 4), color)
    return out
