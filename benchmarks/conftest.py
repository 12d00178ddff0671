"""Frames and models for the latency suite.

Real 640x480 frames come from ../shared/media (letterboxed videos); without it, a generated
clip of scikit-image's astronaut drifting across a 640x480 frame stands in.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FER_ONNX_SHARED", ROOT.parent / "shared"))
MEDIA = SHARED / "media"


def letterbox(frame: np.ndarray, size: tuple[int, int] = (640, 480)) -> np.ndarray:
    """Resize keeping the aspect ratio and pad to ``size`` (width, height)."""
    w, h = size
    scale = min(w / frame.shape[1], h / frame.shape[0])
    resized = cv2.resize(
        frame,
        (round(frame.shape[1] * scale), round(frame.shape[0] * scale)),
        interpolation=cv2.INTER_AREA,
    )
    out = np.zeros((h, w, 3), np.uint8)
    y, x = (h - resized.shape[0]) // 2, (w - resized.shape[1]) // 2
    out[y : y + resized.shape[0], x : x + resized.shape[1]] = resized
    return out


def video_frames(name: str, n: int = 60) -> list[np.ndarray] | None:
    path = MEDIA / name
    if not path.is_file():
        return None
    cap = cv2.VideoCapture(str(path))
    frames = []
    while len(frames) < n:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(letterbox(frame))
    cap.release()
    return frames or None


def generated_frames(n: int = 60) -> list[np.ndarray]:
    from skimage import data

    face = np.ascontiguousarray(data.astronaut()[:, :, ::-1])[0:260, 100:330]
    frames = []
    for i in range(n):
        frame = np.full((480, 640, 3), 90, np.uint8)
        x = 100 + 3 * i
        frame[110:370, x : x + 230] = face
        frames.append(frame)
    return frames


@pytest.fixture(scope="session")
def one_face_frames() -> list[np.ndarray]:
    """Consecutive 640x480 frames with one face (woman2.mp4, else generated)."""
    return video_frames("woman2.mp4") or generated_frames()


@pytest.fixture(scope="session")
def group_frames() -> list[np.ndarray]:
    """Consecutive 640x480 frames with several faces (short_hamilton_clip.mp4)."""
    frames = video_frames("short_hamilton_clip.mp4")
    if frames is None:
        pytest.skip(f"{MEDIA / 'short_hamilton_clip.mp4'} not present")
    return frames


@pytest.fixture(scope="session")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str | Path]:
    """The bundled models when installed; otherwise the tiny fixture model (smoke only)."""
    from fer_onnx.errors import ModelLoadError
    from fer_onnx.recognizer import BUNDLED_MODELS, bundled_model_path

    models: dict[str, str | Path] = {}
    for name in ("default", *BUNDLED_MODELS):
        try:
            bundled_model_path(name)
            models[name] = name
        except ModelLoadError:
            pass
    if not models:
        from conftest import build_tiny_model

        tiny = build_tiny_model(tmp_path_factory.mktemp("m") / "tiny.onnx")
        models = {"default": tiny, "fast": tiny, "fp32": tiny}
    return models
