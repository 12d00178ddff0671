"""Per-frame latency, measured with pytest-benchmark. Run (see README):

    python -m pytest benchmarks --benchmark-enable --benchmark-json=benchmarks/latest.json
    python benchmarks/report.py benchmarks/latest.json > benchmarks/latest.md

Our pipeline and the baselines run in the same session, so their ratios are side by side.
Baselines are skipped, with the reason, when their package is missing. Nothing here asserts a
time; the smoke run in CI (``--benchmark-disable``) checks that every case runs.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from fer_onnx import (
    EmotionRecognizer,
    HaarDetector,
    SessionConfig,
    VideoRecognizer,
    YuNetDetector,
)
from fer_onnx.yunet import bundled_yunet_path

Frames = list[np.ndarray]

SEED_HAAR = {"scale_factor": 1.3, "min_neighbors": 5, "detect_width": None, "min_size": 1}
FAST_HAAR = {"scale_factor": 1.2, "min_neighbors": 5, "detect_width": 256, "min_size": 20}


def cycle(frames: Frames) -> Callable[[], np.ndarray]:
    it: Iterator[np.ndarray] = itertools.cycle(frames)
    return lambda: next(it)


# -- detection --------------------------------------------------------------------------------


@pytest.mark.benchmark(group="detection 640x480")
@pytest.mark.parametrize(
    "settings",
    [
        "yunet-ort-320 (default)",
        "yunet-ort-640",
        "yunet-cv2-320",
        "haar-320",
        "haar-fast",
        "haar-seed-1.3/5-full",
    ],
)
def test_detection(benchmark: Any, one_face_frames: Frames, settings: str) -> None:
    detector: Any
    if settings.startswith("yunet-ort"):
        detector = YuNetDetector(detect_width=int(settings[10:13]), device="cpu")
    elif settings == "yunet-cv2-320":
        from benchmarks.recall import OpenCVYuNet

        detector = OpenCVYuNet(bundled_yunet_path(), 320, 0.7)
    else:
        kwargs = {"haar-320": {}, "haar-fast": FAST_HAAR, "haar-seed-1.3/5-full": SEED_HAAR}[
            settings
        ]
        detector = HaarDetector(**kwargs)
    frame = cycle(one_face_frames)
    benchmark(lambda: detector.detect(frame()))


# -- classification ---------------------------------------------------------------------------


@pytest.mark.benchmark(group="classify")
@pytest.mark.parametrize("faces", [1, 8])
@pytest.mark.parametrize("model", ["accurate", "fast", "fp32"])
def test_classify(benchmark: Any, model_path: dict[str, Any], model: str, faces: int) -> None:
    """Per-face classifier time, views included (one session thread, as the card reports)."""
    if model not in model_path:
        pytest.skip(f"the {model!r} model is not installed")
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 256, (120, 120, 3), dtype=np.uint8) for _ in range(faces)]
    with EmotionRecognizer(
        model_path[model],
        detector=None,
        device="cpu",
        session_config=SessionConfig(intra_op_threads=1),
    ) as rec:
        result = benchmark(rec.predict, crops)
    assert result.shape == (faces, 7)
    benchmark.extra_info["faces"] = faces


# -- full pipeline ----------------------------------------------------------------------------


@pytest.mark.benchmark(group="recognize still 640x480")
@pytest.mark.parametrize("model", ["accurate", "fast"])
@pytest.mark.parametrize("detector", ["yunet", "haar"])
@pytest.mark.parametrize("scene", ["1 face", "group"])
def test_recognize_still(
    benchmark: Any,
    model_path: dict[str, Any],
    request: pytest.FixtureRequest,
    scene: str,
    detector: str,
    model: str,
) -> None:
    if model not in model_path:
        pytest.skip(f"the {model!r} model is not installed")
    frames: Frames = request.getfixturevalue(
        "one_face_frames" if scene == "1 face" else "group_frames"
    )
    frame = cycle(frames)
    with EmotionRecognizer(model_path[model], detector=detector, device="cpu") as rec:
        benchmark(lambda: rec.recognize(frame()))
    benchmark.extra_info["detector"] = detector


@pytest.mark.benchmark(group="video mode 640x480")
@pytest.mark.parametrize("detector", ["yunet", "yunet-regions", "haar"])
@pytest.mark.parametrize("scene", ["1 face", "group"])
def test_video_mode(
    benchmark: Any,
    model_path: dict[str, Any],
    request: pytest.FixtureRequest,
    scene: str,
    detector: str,
) -> None:
    """yunet: a full 320-px pass every frame (the default); yunet-regions: region searches
    between full passes every 10th frame; haar: region searches (its default)."""
    frames: Frames = request.getfixturevalue(
        "one_face_frames" if scene == "1 face" else "group_frames"
    )
    frame = cycle(frames)
    name = detector.split("-")[0]
    with EmotionRecognizer(model_path["default"], detector=name, device="cpu") as rec:
        video = VideoRecognizer(rec, redetect_every=10 if detector.endswith("regions") else None)
        benchmark(lambda: video.process(frame()))


# -- baselines, measured in the same run ------------------------------------------------------


@pytest.fixture(scope="module")
def seed_keras_model() -> Any:
    keras = pytest.importorskip(
        "keras", reason="seed baseline needs TensorFlow/Keras ([train] extra)"
    )
    pytest.importorskip("tensorflow", reason="seed baseline needs TensorFlow ([train] extra)")
    base = keras.applications.MobileNetV2(
        input_shape=(224, 224, 3), include_top=False, weights=None
    )
    x = keras.layers.GlobalAveragePooling2D()(base.output)
    out = keras.layers.Dense(7, activation="softmax")(x)
    return keras.Model(base.input, out)


@pytest.mark.benchmark(group="baseline: seed loop 640x480")
def test_seed_loop(benchmark: Any, one_face_frames: Frames, seed_keras_model: Any) -> None:
    """The notebooks' loop: Haar 1.3/5 on the full frame, then model.predict per face at 224 px."""
    cascade = cv2.CascadeClassifier(
        str(Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml")
    )
    frame = cycle(one_face_frames)

    def seed_step() -> int:
        image = frame()
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        faces = cascade.detectMultiScale(gray, scaleFactor=1.3, minNeighbors=5)
        for x, y, w, h in faces:
            face = cv2.resize(image[y : y + h, x : x + w], (224, 224)).astype("float32") / 255.0
            seed_keras_model.predict(face[None], verbose=0)
        return len(faces)

    benchmark.pedantic(seed_step, rounds=15, warmup_rounds=2)


@pytest.mark.benchmark(group="baseline: fer package 640x480")
@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_fer_package(benchmark: Any, one_face_frames: Frames) -> None:
    fer = pytest.importorskip(
        "fer.fer", reason="`fer` not installed (pip install --no-deps fer==25.10.3)"
    )
    detector = fer.FER()
    frame = cycle(one_face_frames)
    benchmark.pedantic(lambda: detector.detect_emotions(frame()), rounds=30, warmup_rounds=3)
