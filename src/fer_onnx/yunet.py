"""YuNet, OpenCV's 230 KB CNN face detector, run on onnxruntime at any input size.

The bundled ``face_detection_yunet_2023mar.onnx`` (OpenCV Zoo, Apache-2.0; licence and notice
beside it in ``fer_onnx/models``) has symbolic input height and width, so an image is only
shrunk to the detection width and padded (bottom and right, with zeros) to multiples of 32:
never distorted. The network predicts, for every cell of three grids (strides 8, 16, 32), a
class and an objectness score, a box and 5 landmarks; :func:`decode` turns them into faces the
way ``cv2.FaceDetectorYN`` does (score ``sqrt(cls * obj)``), and non-maximum suppression runs in
``cv2.dnn.NMSBoxes``.

A YuNet file whose input size is fixed (the upstream file, 640x640) also works: each image is
then scaled to fill that size (``detect_width`` does not apply) and padded.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from fer_onnx._checks import check_int, check_number
from fer_onnx.detectors import MAX_DETECT_PIXELS, detect_scale, to_bgr
from fer_onnx.errors import DetectorError, InvalidTypeError, ModelLoadError
from fer_onnx.images import load_image
from fer_onnx.session import Device, ProviderSpec, SessionConfig, create_session, resolve_providers
from fer_onnx.types import Box, Detection

__all__ = ["STRIDES", "YuNetDetector", "bundled_yunet_path", "decode"]

STRIDES = (8, 16, 32)
"""The three grids of YuNet's outputs, in pixels of the padded input."""

_OUTPUTS = tuple(f"{kind}_{s}" for kind in ("cls", "obj", "bbox", "kps") for s in STRIDES)


def bundled_yunet_path() -> Path:
    """Path of the bundled YuNet model (``face_detection_yunet_2023mar.onnx``)."""
    return Path(str(resources.files("fer_onnx") / "models" / "face_detection_yunet_2023mar.onnx"))


def decode(
    outputs: dict[str, npt.NDArray[np.float32]],
    padded_size: tuple[int, int],
    score_threshold: float,
    nms_threshold: float,
    top_k: int,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Decode YuNet's raw outputs into faces, after non-maximum suppression.

    Args:
        outputs: The 12 outputs by name (``cls_8`` ... ``kps_32``), each ``(1, cells, k)``.
        padded_size: ``(height, width)`` of the network input.
        score_threshold: Minimum face score.
        nms_threshold: IoU above which the lower-scored of two boxes is dropped.
        top_k: Most candidates kept before NMS, best first.

    Returns:
        ``boxes`` ``(N, 4)`` as ``x, y, width, height``, ``scores`` ``(N,)`` and ``landmarks``
        ``(N, 5, 2)``, in pixels of the network input, best score first.
    """
    height, width = padded_size
    boxes, scores, points = [], [], []
    for stride in STRIDES:
        cols, rows = width // stride, height // stride
        cls = np.clip(outputs[f"cls_{stride}"].reshape(-1), 0.0, 1.0)
        obj = np.clip(outputs[f"obj_{stride}"].reshape(-1), 0.0, 1.0)
        if cls.size != rows * cols:
            raise DetectorError(
                f"YuNet output cls_{stride} has {cls.size} cells, expected {rows}x{cols} for a "
                f"{width}x{height} input: is this a YuNet 2023mar model?"
            )
        score = np.sqrt(cls * obj)
        index = np.flatnonzero(score >= score_threshold)
        if index.size == 0:
            continue
        cell = np.stack([index % cols, index // cols], axis=1).astype(np.float32)
        bbox = outputs[f"bbox_{stride}"].reshape(-1, 4)[index]
        kps = outputs[f"kps_{stride}"].reshape(-1, 5, 2)[index]
        centre = (cell + bbox[:, :2]) * stride
        size = np.exp(bbox[:, 2:]) * stride
        boxes.append(np.concatenate([centre - size / 2, size], axis=1))
        scores.append(score[index])
        points.append((kps + cell[:, None, :]) * stride)
    if not boxes:
        empty = np.zeros((0, 4), np.float32)
        return empty, np.zeros((0,), np.float32), np.zeros((0, 5, 2), np.float32)
    all_boxes = np.concatenate(boxes).astype(np.float32)
    all_scores = np.concatenate(scores).astype(np.float32)
    all_points = np.concatenate(points).astype(np.float32)
    keep = np.asarray(
        cv2.dnn.NMSBoxes(
            all_boxes.tolist(), all_scores.tolist(), score_threshold, nms_threshold, top_k=top_k
        ),
        dtype=np.int64,
    ).reshape(-1)
    return all_boxes[keep], all_scores[keep], all_points[keep]


class YuNetDetector:
    """YuNet face detector on onnxruntime: boxes, scores and 5 landmarks per face.

    Args:
        model: A YuNet 2023mar ONNX file; ``None`` uses the bundled one.
        score_threshold: Minimum face score (0..1).
        nms_threshold: Non-maximum suppression IoU threshold (0..1).
        top_k: Most candidates kept before NMS.
        detect_width: Detect on a copy shrunk to this width in pixels (never enlarged);
            ``None`` detects at full size. Smaller is faster and misses more small faces.
            A model with a fixed input size ignores it: images are scaled to fill that size.
            Either way an image is searched at most at
            :data:`~fer_onnx.detectors.MAX_DETECT_PIXELS` pixels (shrunk to that when larger),
            so a huge image cannot exhaust memory.
        region_face_size: Video mode's region search shrinks a tracked face to about this
            width in pixels (never enlarges).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``; ignored when ``providers`` is given.
        providers: Explicit onnxruntime providers.
        session_config: Threads and graph optimisation of the session.

    Results are in pixels of the input image, clipped to it. Safe to call from several threads.

    Raises:
        DetectorError: The file is missing or is not a YuNet model onnxruntime can run.
        InvalidTypeError: ``model`` is not a path (``str`` or ``os.PathLike``) or ``None``.
        InvalidOptionError: A threshold or size is out of range.
        ProviderError: A requested execution provider is not available.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        score_threshold: float = 0.7,
        nms_threshold: float = 0.3,
        top_k: int = 5000,
        detect_width: int | None = 320,
        region_face_size: int = 64,
        device: Device = "auto",
        providers: Sequence[ProviderSpec] | None = None,
        session_config: SessionConfig | None = None,
    ) -> None:
        self.score_threshold = check_number(
            "score_threshold", score_threshold, 0.0, 1.0, low_open=True, high_open=True
        )
        self.nms_threshold = check_number(
            "nms_threshold", nms_threshold, 0.0, 1.0, low_open=True, high_open=True
        )
        self.top_k = check_int("top_k", top_k, 1, 1_000_000)
        self.detect_width = (
            None if detect_width is None else check_int("detect_width", detect_width, 32, 100_000)
        )
        self.region_face_size = check_int("region_face_size", region_face_size, 16, 4096)
        if model is not None and (
            isinstance(model, (bytes, bytearray)) or not isinstance(model, (str, os.PathLike))
        ):
            raise InvalidTypeError(
                f"model must be the path of a YuNet .onnx file (str or os.PathLike) or None for "
                f"the bundled one, got {type(model).__name__}"
            )
        self.model_path = bundled_yunet_path() if model is None else Path(model)
        if not self.model_path.is_file():
            raise DetectorError(
                f"YuNet model not found: {self.model_path}; pass the path of "
                "face_detection_yunet_2023mar.onnx, or model=None for the bundled one"
            )
        try:
            self._session: Any = create_session(
                self.model_path, resolve_providers(device, providers), session_config
            )
        except ModelLoadError as e:
            raise DetectorError(f"cannot load YuNet model {self.model_path}: {e}") from e
        inputs = self._session.get_inputs()
        names = {o.name for o in self._session.get_outputs()}
        if len(inputs) != 1 or len(inputs[0].shape) != 4 or not set(_OUTPUTS) <= names:
            raise DetectorError(
                f"{self.model_path} is not a YuNet 2023mar model: expected one NCHW input and "
                f"outputs {', '.join(_OUTPUTS)}"
            )
        self._input_name = str(inputs[0].name)
        h, w = inputs[0].shape[2:]
        self._fixed: tuple[int, int] | None = (
            (h, w) if isinstance(h, int) and isinstance(w, int) else None
        )
        if self._fixed is not None and (h % 32 or w % 32):
            raise DetectorError(f"{self.model_path}: fixed input {h}x{w} is not a multiple of 32")

    def __repr__(self) -> str:
        return (
            f"YuNetDetector(model={self.model_path.name!r}, detect_width={self.detect_width}, "
            f"score_threshold={self.score_threshold})"
        )

    @property
    def providers(self) -> list[str]:
        """Execution providers the session really uses."""
        return list(self._session.get_providers())

    def detect(self, image: npt.NDArray[np.uint8]) -> list[Detection]:
        """Find faces in a uint8 gray, BGR or BGRA image, best score first.

        Raises:
            InvalidImageError: ``image`` is not a valid image.
        """
        image = load_image(image)
        height, width = image.shape[:2]
        return self._detect(image, detect_scale(width, height, self.detect_width))

    def detect_region(self, region: npt.NDArray[np.uint8], face_width: float) -> list[Detection]:
        """Search ``region`` for a face about ``face_width`` px wide (video mode).

        The region is shrunk so that the face is about ``region_face_size`` px wide.

        Raises:
            InvalidImageError: ``region`` is not a valid image.
            InvalidOptionError: ``face_width`` is not a positive number.
        """
        region = load_image(region)
        face_width = check_number("face_width", face_width, 0.0, math.inf, low_open=True)
        return self._detect(region, min(1.0, self.region_face_size / max(face_width, 1.0)))

    def _detect(self, image: npt.NDArray[np.uint8], scale: float) -> list[Detection]:
        bgr = to_bgr(image)
        height, width = bgr.shape[:2]
        if self._fixed is not None:  # fill the fixed input (detect_width cannot apply)
            scale = min(self._fixed[0] / height, self._fixed[1] / width)
        elif width * height * scale * scale > MAX_DETECT_PIXELS:
            scale = math.sqrt(MAX_DETECT_PIXELS / (width * height))
        small_w = max(1, round(width * scale))
        small_h = max(1, round(height * scale))
        if (small_w, small_h) != (width, height):
            bgr = np.asarray(cv2.resize(bgr, (small_w, small_h), interpolation=cv2.INTER_AREA))
        if self._fixed is not None:
            pad_h, pad_w = self._fixed
        else:
            pad_h, pad_w = -(-small_h // 32) * 32, -(-small_w // 32) * 32
        blob = np.zeros((1, 3, pad_h, pad_w), np.float32)
        blob[0, :, :small_h, :small_w] = bgr.transpose(2, 0, 1)
        values = self._session.run(list(_OUTPUTS), {self._input_name: blob})
        outputs = dict(zip(_OUTPUTS, values, strict=True))
        boxes, scores, points = decode(
            outputs, (pad_h, pad_w), self.score_threshold, self.nms_threshold, self.top_k
        )
        # Back to input pixels: x and y scale separately (the shrunk size was rounded).
        sx, sy = small_w / width, small_h / height
        boxes = (boxes / np.array([sx, sy, sx, sy])).astype(np.float32)
        points = (points / np.array([sx, sy])).astype(np.float32)
        points[..., 0] = np.clip(points[..., 0], 0, width - 1)
        points[..., 1] = np.clip(points[..., 1], 0, height - 1)
        found = []
        for (x, y, w, h), score, lm in zip(boxes, scores, points, strict=True):
            x1, y1 = max(round(float(x)), 0), max(round(float(y)), 0)
            x2, y2 = min(round(float(x + w)), width), min(round(float(y + h)), height)
            if x2 <= x1 or y2 <= y1:
                continue
            found.append(
                Detection(
                    Box(x1, y1, x2 - x1, y2 - y1),
                    min(float(score), 1.0),
                    tuple((float(px), float(py)) for px, py in lm),
                )
            )
        return found
