"""How a dataset frames its faces: the crop template measured on it, and faces framed on it.

``measure`` runs the bundled YuNet detector on the Training faces (each 48x48 face upsampled
4x and padded with a replicated border, so the detector sees a whole face at a size it knows),
keeps the best detection per face, and averages the 5 landmarks in the face's own frame, then
with their mirror image (training flips faces, so the template is symmetric). Faces that come
with a box only (the Haar cascade, a caller's boxes) are cut to the template's box: the mean
box OpenCV's frontal-face cascade finds on the same upsampled faces (on ``--box-faces`` of
them). The result, as fractions of the frame, is a :class:`fer_onnx.alignment.CropTemplate`:
the runtime warps faces onto it (rotation, scale, shift) so that they look like the training
data. ``fer-onnx-factory template measure`` writes it (the one measured on FER2013 ships in
this package as ``templates/fer2013.json``, :data:`FER2013_TEMPLATE`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from fer_onnx.alignment import CropTemplate, frame_face
from fer_onnx.detectors import HaarDetector, fit_detections
from fer_onnx.yunet import YuNetDetector
from fer_onnx_factory.errors import PipelineError

FER2013_TEMPLATE = Path(__file__).with_name("templates") / "fer2013.json"
"""The crop template measured on FER2013's Training faces (package data)."""

UPSAMPLE = 4
PAD = 64


def _upsampled(face: np.ndarray) -> np.ndarray:
    face = face.reshape(face.shape[0], face.shape[1])
    big = cv2.resize(face, None, fx=UPSAMPLE, fy=UPSAMPLE, interpolation=cv2.INTER_CUBIC)
    return np.asarray(cv2.copyMakeBorder(big, PAD, PAD, PAD, PAD, cv2.BORDER_REPLICATE))


def frame_landmarks(faces: np.ndarray, detector: YuNetDetector) -> tuple[np.ndarray, np.ndarray]:
    """YuNet's best landmarks on each face, in pixels of the face's own frame.

    Args:
        faces: ``(N, H, W[, 1])`` uint8 grey faces.
        detector: A YuNet detector (full size, no downscaling).

    Returns:
        ``found`` ``(N,)`` bool and ``landmarks`` ``(N, 5, 2)`` (NaN where nothing was found).
    """
    landmarks = np.full((len(faces), 5, 2), np.nan)
    for i, face in enumerate(faces):
        found = [d for d in detector.detect(_upsampled(face)) if d.landmarks is not None]
        if found:
            best = max(found, key=lambda d: d.score or 0.0)
            landmarks[i] = (np.asarray(best.landmarks) - PAD) / UPSAMPLE
    return ~np.isnan(landmarks[:, 0, 0]), landmarks


def frame_boxes(faces: np.ndarray, detector: HaarDetector) -> np.ndarray:
    """The box of faces where ``detector`` finds exactly one, in the face's frame, ``(M, 4)``."""
    boxes = []
    for face in faces:
        found = detector.detect(_upsampled(face))
        if len(found) == 1:
            b = found[0].box
            boxes.append([b.x - PAD, b.y - PAD, b.width, b.height])
    return np.asarray(boxes, np.float64).reshape(-1, 4) / UPSAMPLE


MIRROR = (1, 0, 2, 4, 3)
"""Landmark order after a horizontal flip: the eyes swap, and so do the mouth corners."""


def symmetric(points: np.ndarray, width: int) -> np.ndarray:
    """Average ``(5, 2)`` landmarks with their mirror image (training flips faces at random)."""
    mirrored = points[list(MIRROR)].copy()
    mirrored[:, 0] = width - mirrored[:, 0]
    return np.asarray((points + mirrored) / 2, np.float64)


def measure(
    faces: np.ndarray, score_threshold: float = 0.5, box_faces: int = 5000
) -> tuple[CropTemplate, dict[str, Any]]:
    """The mean framing of ``faces`` as a template, and a report of how it was measured."""
    if len(faces) == 0:
        raise PipelineError("no faces to measure")
    height, width = faces.shape[1:3]
    detector = YuNetDetector(detect_width=None, score_threshold=score_threshold, device="cpu")
    start = time.perf_counter()
    found, landmarks = frame_landmarks(faces, detector)
    if found.sum() < 10:
        raise PipelineError(
            f"YuNet found landmarks on only {int(found.sum())} of {len(faces)} faces"
        )
    boxes = frame_boxes(faces[:box_faces], HaarDetector(detect_width=None))
    if len(boxes) < 10:
        raise PipelineError(f"the Haar cascade found one face on only {len(boxes)} faces")
    scale = np.array([width, height], np.float64)
    mean_points = symmetric(landmarks[found].mean(axis=0), width) / scale
    box = boxes.mean(axis=0)
    box[0] = (box[0] + (width - box[0] - box[2])) / 2  # centred, like the mirrored faces
    mean_box = box / np.array([width, height, width, height])
    spread = float(
        np.sqrt(((landmarks[found] - landmarks[found].mean(axis=0)) ** 2).sum(-1)).mean()
    )
    template = CropTemplate(
        tuple((float(x), float(y)) for x, y in mean_points),
        (float(mean_box[0]), float(mean_box[1]), float(mean_box[2]), float(mean_box[3])),
    )
    report = {
        "faces": len(faces),
        "landmarks_found": int(found.sum()),
        "frame": [int(height), int(width)],
        "landmarks_px": np.round(landmarks[found].mean(axis=0), 2).tolist(),
        "box_faces": min(len(faces), box_faces),
        "box_found": len(boxes),
        "box_px": np.round(boxes.mean(axis=0), 2).tolist(),
        "mean_landmark_spread_px": round(spread, 2),
        "score_threshold": score_threshold,
        "seconds": round(time.perf_counter() - start, 1),
    }
    return template, report


def load_template(path: Path) -> CropTemplate:
    """Read a template written by ``measure`` (its ``template`` entry)."""
    if not path.is_file():
        raise PipelineError(f"template file not found: {path}")
    try:
        return CropTemplate.from_json(json.dumps(json.loads(path.read_text())["template"]))
    except (ValueError, KeyError, TypeError) as e:
        raise PipelineError(
            f"{path} is not a template written by `fer-onnx-factory template measure`: {e}"
        ) from e


def central(boxes: Sequence[tuple[int, int, int, int]], width: int, height: int) -> int | None:
    """Index of the box whose centre is nearest the photo's centre; ``None`` for no box."""
    if not boxes:
        return None
    cx, cy = width / 2, height / 2
    dist = [(x + w / 2 - cx) ** 2 + (y + h / 2 - cy) ** 2 for x, y, w, h in boxes]
    return int(np.argmin(dist))


class PhotoFramer:
    """Cuts the face out of a photo as ``EmotionRecognizer.recognize`` frames it.

    The bundled YuNet detector at its run-time settings finds the faces; the one whose box
    centre is nearest the photo's centre (the face a labelled photo is about) is framed by
    :func:`fer_onnx.alignment.frame_face`, the runtime's own choice: warped by its landmarks
    onto ``template`` at ``size``, or cut to the template's box when it has no usable
    landmarks. A photo with no face is kept whole (the crop the dataset gives), and
    counted in :attr:`whole`.

    Args:
        template: The crop template to frame onto.
        size: ``(height, width)`` of the framed face.
    """

    def __init__(self, template: CropTemplate, size: tuple[int, int]) -> None:
        self.template = template
        self.size = size
        self.detector = YuNetDetector(device="cpu")
        self.framed = 0
        self.whole = 0

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """The face of ``image`` nearest its centre, framed (or ``image`` itself: no face)."""
        height, width = image.shape[:2]
        found = fit_detections(self.detector.detect(image), width, height)
        boxes = [(d.box.x, d.box.y, d.box.width, d.box.height) for d in found]
        i = central(boxes, width, height)
        if i is None:
            self.whole += 1
            return image
        self.framed += 1
        return frame_face(image, found[i], self.template, self.size)

    def note(self, source: str, template_name: str) -> str:
        """What was framed, for the dataset's notes."""
        return (
            f"{source}: {self.framed} of {self.framed + self.whole} photos framed as the "
            f"runtime frames them (YuNet, the face nearest the centre, onto {template_name}); "
            f"{self.whole} without a face kept whole"
        )
