"""Type-checked only (``mypy --strict``), never run: guards the public API against drift.

Every call below is the documented contract; a renamed argument, a changed return type or a
removed name makes mypy fail in CI.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

import fer_onnx
from fer_onnx import (
    Box,
    Detection,
    Detector,
    Emotion,
    EmotionRecognizer,
    FaceEmotion,
    FerOnnxError,
    HaarDetector,
    InvalidImageError,
    Landmarks,
    ModelLoadError,
    ProviderError,
    RegionDetector,
    SessionConfig,
    VideoRecognizer,
    YuNetDetector,
)


def contract(image: npt.NDArray[np.uint8], crops: list[npt.NDArray[np.uint8]]) -> None:
    version: str = fer_onnx.__version__
    with EmotionRecognizer() as rec:
        faces: list[FaceEmotion] = rec.recognize("group.jpg")
        faces = rec.recognize(Path("group.jpg"))
        faces = rec.recognize(image, boxes=[(0, 0, 10, 10), Box(1, 2, 3, 4)])
        for face in faces:
            box: Box = face.box
            xywh: tuple[int, int, int, int] = (box.x, box.y, box.width, box.height)
            label: str = face.label
            score: float = face.score
            probabilities: dict[str, float] = dict(face.probabilities)
            track: int | None = face.track_id
            detection_score: float | None = face.detection_score
            points: Landmarks | None = face.landmarks
        preds: list[Emotion] = rec.classify(crops)
        for pred in preds:
            label = pred.label
            score = pred.score
            probabilities = dict(pred.probabilities)
        labels: tuple[str, ...] = rec.labels
        raw: npt.NDArray[np.float32] = rec.predict(crops)
    rec.close()
    EmotionRecognizer("fp32")
    EmotionRecognizer("int8", device="cpu")
    EmotionRecognizer(Path("model.onnx"), providers=["CPUExecutionProvider"])
    EmotionRecognizer(
        providers=[("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]
    )
    EmotionRecognizer(
        device="cuda", session_config=SessionConfig(intra_op_threads=2), align=False, margin=0.1
    )
    detector: Detector = HaarDetector(
        scale_factor=1.1, min_neighbors=4, min_size=24, detect_width=480
    )
    EmotionRecognizer(detector=detector)
    EmotionRecognizer(detector=YuNetDetector("yunet.onnx", score_threshold=0.8))
    EmotionRecognizer(detector=YuNetDetector(detect_width=480, device="cpu"))
    EmotionRecognizer(detector="haar", align=False)
    EmotionRecognizer(detector="yunet")
    EmotionRecognizer(detector=Path("yunet.onnx"))
    EmotionRecognizer(detector=None)
    found: list[Detection] = YuNetDetector().detect(image)
    region: RegionDetector = HaarDetector()
    nearby: list[Detection] = YuNetDetector().detect_region(image, face_width=80.0)
    del found, region, nearby
    video = VideoRecognizer(EmotionRecognizer(), smoothing=3, max_missed=5, redetect_every=10)
    tracked: list[FaceEmotion] = video.process(image)
    errors: tuple[type[FerOnnxError], ...] = (ModelLoadError, ProviderError, InvalidImageError)
    del version, xywh, label, score, probabilities, track, labels, raw, tracked, errors
    del detection_score, points
