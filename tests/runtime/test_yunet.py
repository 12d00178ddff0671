"""YuNet on onnxruntime: decoding and NMS against cv2.FaceDetectorYN, mapping, threads."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import MEDIA, YUNET, shared_file

from fer_onnx import (
    Box,
    Detection,
    DetectorError,
    EmotionRecognizer,
    HaarDetector,
    RegionDetector,
    YuNetDetector,
)
from fer_onnx.yunet import bundled_yunet_path, decode


def reference(image: np.ndarray, threshold: float = 0.6) -> np.ndarray:
    """cv2.FaceDetectorYN on the same (upstream or bundled) file, full size: (N, 15) rows."""
    model = YUNET if YUNET.is_file() else bundled_yunet_path()
    detector = cv2.FaceDetectorYN.create(str(model), "", (320, 320), threshold, 0.3, 5000)
    detector.setInputSize((image.shape[1], image.shape[0]))
    _, faces = detector.detect(image)
    return np.zeros((0, 15), np.float32) if faces is None else faces


def images(astronaut: np.ndarray) -> list[tuple[str, np.ndarray]]:
    found = [("astronaut", astronaut)]
    for name in ("two_people.jpg", "obama_and_biden.jpg"):
        if (MEDIA / name).is_file():
            found.append((name, cv2.imread(str(MEDIA / name))))
    return found


def test_bundled_model_and_licence_ship_in_the_package() -> None:
    path = bundled_yunet_path()
    assert path.is_file()
    assert (path.parent / "LICENSE.yunet.txt").read_text().startswith("\n") or "Apache" in (
        path.parent / "LICENSE.yunet.txt"
    ).read_text()
    assert "Modified by fer-onnx" in (path.parent / "NOTICE.yunet.txt").read_text()


def test_same_faces_as_cv2_facedetectoryn(astronaut: np.ndarray) -> None:
    ours = YuNetDetector(detect_width=None, score_threshold=0.6)
    for name, image in images(astronaut):
        ref = reference(image)
        got = ours.detect(image)
        assert len(got) == len(ref) >= 1, name
        for row in ref:  # same faces, in any order
            best = max(got, key=lambda d: d.box.iou(Box(*(int(round(v)) for v in row[:4]))))
            box = np.array(best.box.to_tuple(), float)
            assert np.abs(box - row[:4]).max() <= 2.0, (name, box, row[:4])
            assert best.landmarks is not None
            assert np.abs(np.asarray(best.landmarks) - row[4:14].reshape(5, 2)).max() <= 1.0
            assert best.score == pytest.approx(float(row[14]), abs=1e-3)


@pytest.mark.parametrize("width", [160, 256, 320, 480])
@pytest.mark.parametrize("size", [(517, 333), (640, 480), (391, 601)])
def test_boxes_and_landmarks_map_back_to_input_pixels(
    astronaut: np.ndarray, width: int, size: tuple[int, int]
) -> None:
    if width >= size[0]:
        pytest.skip("never enlarged: nothing to map")
    image = cv2.resize(astronaut, size, interpolation=cv2.INTER_AREA)
    small_h = round(size[1] * width / size[0])
    small = cv2.resize(image, (width, small_h), interpolation=cv2.INTER_AREA)
    (ref,) = YuNetDetector(detect_width=None).detect(small)  # found in the shrunk copy
    (got,) = YuNetDetector(detect_width=width).detect(image)  # found and mapped back
    sx, sy = size[0] / width, size[1] / small_h
    expected = np.multiply(ref.box.to_tuple(), [sx, sy, sx, sy])
    assert np.abs(np.subtract(got.box.to_tuple(), expected)).max() <= max(sx, sy) + 1
    assert ref.landmarks is not None
    assert got.landmarks is not None
    points = np.multiply(ref.landmarks, [sx, sy])
    assert np.abs(np.subtract(got.landmarks, points)).max() <= 0.5 * max(sx, sy) + 0.01
    assert got.box.x2 <= size[0]
    assert got.box.y2 <= size[1]


def test_results_are_clipped_to_the_image(astronaut: np.ndarray) -> None:
    # The face cut in half at the left edge: the box and landmarks stay inside the image.
    image = np.ascontiguousarray(astronaut[:, 215:])
    for d in YuNetDetector(detect_width=None, score_threshold=0.3).detect(image):
        assert d.box.x >= 0
        assert d.box.x2 <= image.shape[1]
        assert d.box.y2 <= image.shape[0]
        assert d.landmarks is not None
        xy = np.asarray(d.landmarks)
        assert (xy >= 0).all()
        assert (xy[:, 0] <= image.shape[1] - 1).all()


def test_gray_bgra_and_tiny_inputs(astronaut: np.ndarray) -> None:
    detector = YuNetDetector()
    gray = cv2.cvtColor(astronaut, cv2.COLOR_BGR2GRAY)
    bgra = cv2.cvtColor(astronaut, cv2.COLOR_BGR2BGRA)
    assert len(detector.detect(gray)) == len(detector.detect(bgra)) == 1
    assert detector.detect(np.zeros((7, 5), np.uint8)) == []


def test_fixed_size_model_is_letterboxed(tmp_path: Path, astronaut: np.ndarray) -> None:
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(bundled_yunet_path()))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].Clear()
    dims[2].dim_value = 320
    dims[3].Clear()
    dims[3].dim_value = 320
    path = tmp_path / "fixed.onnx"
    onnx.save(model, str(path))
    wide = cv2.resize(astronaut, (700, 500))
    (fixed,) = YuNetDetector(path).detect(wide)  # scaled to fill 320x320
    (dynamic,) = YuNetDetector(detect_width=320).detect(wide)
    assert fixed.box.iou(dynamic.box) > 0.8


def test_decode_empty_and_wrong_outputs() -> None:
    zeros = {
        f"{k}_{s}": np.zeros((1, (64 // s) * (96 // s), n), np.float32)
        for s in (8, 16, 32)
        for k, n in (("cls", 1), ("obj", 1), ("bbox", 4), ("kps", 10))
    }
    boxes, scores, points = decode(zeros, (64, 96), 0.5, 0.3, 100)
    assert boxes.shape == (0, 4)
    assert scores.shape == (0,)
    assert points.shape == (0, 5, 2)
    with pytest.raises(DetectorError, match="cells"):
        decode(zeros, (96, 96), 0.5, 0.3, 100)


def test_nms_keeps_the_best_of_overlapping_cells() -> None:
    zeros = {
        f"{k}_{s}": np.zeros((1, (64 // s) * (64 // s), n), np.float32)
        for s in (8, 16, 32)
        for k, n in (("cls", 1), ("obj", 1), ("bbox", 4), ("kps", 10))
    }
    # two neighbouring stride-8 cells predict the same 32x32 face; a third, far away
    for cell, score in ((18, 0.9), (19, 0.8), (63, 0.7)):
        zeros["cls_8"][0, cell] = zeros["obj_8"][0, cell] = score
        zeros["bbox_8"][0, cell] = [0.5, 0.5, np.log(4), np.log(4)]
    boxes, scores, _ = decode(zeros, (64, 64), 0.5, 0.3, 100)
    assert scores.tolist() == pytest.approx([0.9, 0.7])
    assert boxes[0].tolist() == pytest.approx([(2 + 0.5) * 8 - 16, (2 + 0.5) * 8 - 16, 32, 32])


def test_detector_is_thread_safe(astronaut: np.ndarray) -> None:
    detector = YuNetDetector()
    frames = [cv2.resize(astronaut, (w, w)) for w in (256, 320, 400, 512, 640, 333, 480, 300)]
    serial = [detector.detect(f) for f in frames]
    with ThreadPoolExecutor(8) as pool:
        threaded = list(pool.map(detector.detect, frames * 4))
    assert threaded == serial * 4


def test_options_are_validated(tmp_path: Path) -> None:
    for kwargs in (
        {"score_threshold": 1.5},
        {"score_threshold": float("nan")},
        {"nms_threshold": 0},
        {"top_k": 0},
        {"detect_width": 16},
        {"detect_width": 320.5},
    ):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            YuNetDetector(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(DetectorError, match="not found"):
        YuNetDetector(tmp_path / "missing.onnx")


def test_a_non_yunet_onnx_file_is_a_detector_error(tiny_model: Path) -> None:
    with pytest.raises(DetectorError, match="not a YuNet"):
        YuNetDetector(tiny_model)
    (tiny_model.parent / "junk.onnx").write_bytes(b"not onnx")
    with pytest.raises(DetectorError, match="cannot load"):
        YuNetDetector(tiny_model.parent / "junk.onnx")


def test_both_detectors_implement_the_region_protocol() -> None:
    assert isinstance(YuNetDetector(), RegionDetector)
    assert isinstance(HaarDetector(), RegionDetector)


def test_region_search_maps_to_region_pixels(astronaut: np.ndarray) -> None:
    detector = YuNetDetector(detect_width=None)
    (full,) = detector.detect(astronaut)
    b = full.box
    region = astronaut[b.y - 40 : b.y2 + 40, b.x - 40 : b.x2 + 40]
    (hit,) = detector.detect_region(region, b.width)
    assert hit.box.iou(Box(40, 40, b.width, b.height)) > 0.8


def test_recognizer_detector_choices(astronaut: np.ndarray, tiny_model: Path) -> None:
    with EmotionRecognizer(tiny_model) as rec:
        assert isinstance(rec.detector, YuNetDetector)  # the default
        (face,) = rec.recognize(astronaut)
        assert face.detection_score is not None
        assert 0 < face.detection_score <= 1
        assert face.landmarks is not None
        assert len(face.landmarks) == 5
        d = face.to_dict()
        assert d["detection_score"] == face.detection_score
        assert len(d["landmarks"]) == 5
        json.dumps(d)
    with EmotionRecognizer(tiny_model, detector="haar") as rec:
        (face,) = rec.recognize(astronaut)
        assert face.detection_score is None
        assert face.landmarks is None
    for spec in (str(bundled_yunet_path()), bundled_yunet_path()):
        with EmotionRecognizer(tiny_model, detector=spec) as rec:
            assert isinstance(rec.detector, YuNetDetector)
    with pytest.raises(ValueError, match="yunet"):
        EmotionRecognizer(tiny_model, detector="mtcnn")


def test_detector_shares_the_recognizer_providers(tiny_model: Path) -> None:
    with EmotionRecognizer(tiny_model, device="cpu") as rec:
        assert isinstance(rec.detector, YuNetDetector)
        assert rec.detector.providers == ["CPUExecutionProvider"]


def test_custom_detector_may_return_boxes_or_detections(
    astronaut: np.ndarray, tiny_model: Path
) -> None:
    class Boxes:
        def detect(self, image: np.ndarray) -> list[Box]:
            return [Box(180, 60, 90, 110)]

    class Detections:
        def detect(self, image: np.ndarray) -> list[Detection]:
            return [Detection(Box(180, 60, 90, 110), 0.5)]

    class Junk:
        def detect(self, image: np.ndarray) -> list[object]:
            return [(1, 2, 3, 4)]

    with EmotionRecognizer(tiny_model, detector=Boxes()) as rec:
        assert rec.recognize(astronaut)[0].detection_score is None
    with EmotionRecognizer(tiny_model, detector=Detections()) as rec:
        assert rec.recognize(astronaut)[0].detection_score == 0.5
    with (
        EmotionRecognizer(tiny_model, detector=Junk()) as rec,  # type: ignore[arg-type]
        pytest.raises(DetectorError, match="Detection or Box"),
    ):
        rec.recognize(astronaut)


def test_obama_and_biden_has_three_faces() -> None:
    image = cv2.imread(str(shared_file(MEDIA / "obama_and_biden.jpg")))
    with EmotionRecognizer(device="cpu") as rec:
        assert len(rec.recognize(image)) == 3
