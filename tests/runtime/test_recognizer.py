"""EmotionRecognizer on the tiny fixture model: the public contract, batching, errors, threads."""

from __future__ import annotations

import json
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from conftest import LABELS, MEDIA, YUNET, shared_file

from fer_onnx import (
    Box,
    Detection,
    Emotion,
    EmotionRecognizer,
    FaceEmotion,
    FerOnnxError,
    HaarDetector,
    ImageNotFoundError,
    InputSpec,
    InvalidImageError,
    InvalidOptionError,
    InvalidTypeError,
    ModelLoadError,
    YuNetDetector,
)
from fer_onnx.metadata import KEY_LABELS


@pytest.fixture
def rec(tiny_model: Path) -> EmotionRecognizer:
    with EmotionRecognizer(tiny_model, device="cpu") as recognizer:
        yield recognizer


def check_distribution(result: Emotion | FaceEmotion, labels: tuple[str, ...]) -> None:
    assert list(result.probabilities) == list(labels)
    assert math.isclose(sum(result.probabilities.values()), 1.0, abs_tol=1e-6)
    assert result.label == max(result.probabilities, key=result.probabilities.__getitem__)
    assert result.score == result.probabilities[result.label]
    assert isinstance(result.score, float)


def test_labels_come_from_metadata(model_factory: Any) -> None:
    labels = ("calm", "joy", "rage")
    with EmotionRecognizer(model_factory(labels=labels)) as rec:
        assert rec.labels == labels


@pytest.mark.parametrize(
    ("name", "faces"), [("two_people.jpg", 2), ("astronaut.png", 1), ("obama.jpg", 1)]
)
def test_real_photos_haar(rec: EmotionRecognizer, name: str, faces: int) -> None:
    path = shared_file(MEDIA / name)
    results = rec.recognize(path)
    assert len(results) == faces
    image = cv2.imread(str(path))
    for face in results:
        check_distribution(face, LABELS)
        b = face.box
        assert all(isinstance(v, int) for v in (b.x, b.y, b.width, b.height))
        assert 0 <= b.x < b.x2 <= image.shape[1]
        assert 0 <= b.y < b.y2 <= image.shape[0]


def test_obama_and_biden_haar_misses_the_girl_yunet_finds_three(tiny_model: Path) -> None:
    path = shared_file(MEDIA / "obama_and_biden.jpg")
    with EmotionRecognizer(tiny_model, detector="haar") as rec:
        # The third face looks down; no frontal Haar cascade finds it (documented limit).
        assert len(rec.recognize(path)) == 2
    with EmotionRecognizer(tiny_model) as rec:  # the default, bundled YuNet
        assert len(rec.recognize(path)) == 3
    with EmotionRecognizer(tiny_model, detector=str(shared_file(YUNET))) as rec:
        assert len(rec.recognize(path)) == 3


def test_astronaut_from_skimage(rec: EmotionRecognizer, astronaut: np.ndarray) -> None:
    (face,) = rec.recognize(astronaut)
    check_distribution(face, LABELS)
    # The face is in the upper-middle of the photo.
    assert 150 < face.box.x + face.box.width / 2 < 250
    assert face.box.y < 150


def test_all_input_kinds_agree(
    rec: EmotionRecognizer, astronaut: np.ndarray, tmp_path: Path
) -> None:
    pil = pytest.importorskip("PIL.Image")
    path = tmp_path / "astronaut.png"
    cv2.imwrite(str(path), astronaut)
    bgra = cv2.cvtColor(astronaut, cv2.COLOR_BGR2BGRA)
    gray = cv2.cvtColor(astronaut, cv2.COLOR_BGR2GRAY)
    colour = [astronaut, path, str(path), bgra, pil.open(path)]
    results = [rec.recognize(image) for image in colour]
    for r in results:
        assert r == results[0]  # every colour form gives the same faces and results
    # YuNet sees colour, so a grey copy may move boxes by a pixel; both grey forms agree
    assert rec.recognize(gray) == rec.recognize(gray[:, :, None])
    with EmotionRecognizer(rec.model_path, detector="haar") as haar:
        found = [haar.recognize(image) for image in [*colour, gray, gray[:, :, None]]]
    assert all(r == found[0] for r in found)  # grey model, grey detector: all identical


def test_no_face_gives_empty_list(rec: EmotionRecognizer) -> None:
    assert rec.recognize(np.full((240, 320, 3), 127, np.uint8)) == []
    assert rec.classify([]) == []
    assert rec.recognize(np.zeros((10, 10), np.uint8), boxes=[]) == []


def test_given_boxes_skip_detection(rec: EmotionRecognizer, astronaut: np.ndarray) -> None:
    (detected,) = rec.recognize(astronaut)
    (again,) = rec.recognize(astronaut, boxes=[detected.box])
    # same box and crop (the tiny model has no template); a caller's box has no score
    assert again.box == detected.box
    assert again.probabilities == detected.probabilities
    assert again.detection_score is None
    assert again.landmarks is None
    boxes = [(0, 0, 100, 100), np.array([200, 50, 60, 60]), Box(400, 400, 300, 300)]
    results = rec.recognize(astronaut, boxes=boxes)
    assert [r.box for r in results] == [
        Box(0, 0, 100, 100),
        Box(200, 50, 60, 60),
        Box(400, 400, 112, 112),
    ]


def test_classify_matches_recognize_and_is_order_preserving(
    rec: EmotionRecognizer, astronaut: np.ndarray
) -> None:
    (face,) = rec.recognize(astronaut)
    b = face.box
    crop = astronaut[b.y : b.y2, b.x : b.x2]
    other = np.random.default_rng(0).integers(0, 256, (31, 77, 3), dtype=np.uint8)
    first, second = rec.classify([crop, other])
    assert first == face.emotion
    check_distribution(second, LABELS)
    stacked = rec.classify(np.stack([crop[:50, :50], crop[:50, :50]]))
    assert stacked[0] == stacked[1]


class CountingSession:
    """Wraps an onnxruntime session and records the batch size of every run."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.batches: list[int] = []

    def run(self, outputs: Any, feeds: dict[str, np.ndarray]) -> Any:
        self.batches.append(next(iter(feeds.values())).shape[0])
        return self.session.run(outputs, feeds)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.session, name)


def test_one_session_run_per_image_and_per_classify(rec: EmotionRecognizer) -> None:
    image = np.zeros((200, 300, 3), np.uint8)
    counting = CountingSession(rec._session)
    rec._session = counting
    rec.recognize(image, boxes=[(0, 0, 50, 50), (60, 0, 50, 50), (120, 0, 70, 50)])
    rec.classify([image[:40, :40]] * 8)
    assert counting.batches == [3, 8]


def test_margin_changes_the_crop(tiny_model: Path, astronaut: np.ndarray) -> None:
    with (
        EmotionRecognizer(tiny_model, margin=0.0) as a,
        EmotionRecognizer(tiny_model, margin=0.3) as b,
    ):
        box = [(180, 60, 80, 80)]
        assert (
            a.recognize(astronaut, box)[0].probabilities
            != b.recognize(astronaut, box)[0].probabilities
        )
    with pytest.raises(ValueError, match="margin"):
        EmotionRecognizer(tiny_model, margin=2.0)


def test_nchw_models_and_rgb_models(model_factory: Any, astronaut: np.ndarray) -> None:
    spec = InputSpec(32, 32, "rgb")
    with EmotionRecognizer(model_factory(spec=spec, channels_first=True)) as rec:
        (face,) = rec.recognize(astronaut)
        check_distribution(face, LABELS)


def test_threads_give_serial_results(rec: EmotionRecognizer, astronaut: np.ndarray) -> None:
    rng = np.random.default_rng(1)
    images = [astronaut] + [
        np.ascontiguousarray(np.roll(astronaut, int(s), axis=1)) for s in rng.integers(1, 200, 15)
    ]
    serial = [rec.recognize(image) for image in images]
    assert all(serial)  # every image has a face, so the comparison is not vacuous
    with ThreadPoolExecutor(max_workers=8) as pool:
        for _ in range(3):
            assert list(pool.map(rec.recognize, images)) == serial


def test_custom_detector_protocol(tiny_model: Path, astronaut: np.ndarray) -> None:
    class Fixed:
        def detect(self, image: np.ndarray) -> list[Box]:
            return [Box(10, 10, 50, 50)]

    with EmotionRecognizer(tiny_model, detector=Fixed()) as rec:
        assert [f.box for f in rec.recognize(astronaut)] == [Box(10, 10, 50, 50)]
    with pytest.raises(TypeError, match="detect"):
        EmotionRecognizer(tiny_model, detector=object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="haar"):
        EmotionRecognizer(tiny_model, detector="mtcnn")


def test_without_detector_needs_boxes(tiny_model: Path, astronaut: np.ndarray) -> None:
    with EmotionRecognizer(tiny_model, detector=None) as rec:
        with pytest.raises(FerOnnxError, match="boxes"):
            rec.recognize(astronaut)
        assert len(rec.recognize(astronaut, boxes=[(0, 0, 20, 20)])) == 1


def test_closed_recognizer_raises(tiny_model: Path, astronaut: np.ndarray) -> None:
    rec = EmotionRecognizer(tiny_model)
    rec.close()
    with pytest.raises(FerOnnxError, match="closed"):
        rec.recognize(astronaut)
    with pytest.raises(FerOnnxError, match="closed"):
        rec.classify([astronaut])
    assert "closed" in repr(rec)


@pytest.mark.parametrize(
    ("image", "error", "match"),
    [
        (None, InvalidImageError, "got None"),
        (np.zeros((0, 10, 3), np.uint8), InvalidImageError, "non-empty"),
        (np.zeros((10, 10, 3), np.float64), InvalidImageError, "uint8"),
        (np.zeros((10, 10, 3, 1), np.uint8), InvalidImageError, "shape"),
        (np.zeros((10, 10, 5), np.uint8), InvalidImageError, "HxWx3"),
        ("missing.jpg", ImageNotFoundError, "not found"),
    ],
)
def test_recognize_bad_input(rec: EmotionRecognizer, image: Any, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        rec.recognize(image)


def test_classify_bad_input_names_the_crop(rec: EmotionRecognizer) -> None:
    good = np.zeros((20, 20), np.uint8)
    with pytest.raises(InvalidImageError, match=r"crop 1: .*uint8"):
        rec.classify([good, good.astype(np.float32)])
    with pytest.raises(InvalidImageError, match=r"wrap a single crop"):
        rec.classify(good)
    with pytest.raises(InvalidImageError, match="None"):
        rec.classify(None)  # type: ignore[arg-type]
    with pytest.raises(InvalidImageError, match=r"wrap one crop as \[crop\]"):
        rec.classify("face.png")  # type: ignore[arg-type]


def test_bad_boxes(rec: EmotionRecognizer) -> None:
    image = np.zeros((50, 50, 3), np.uint8)
    with pytest.raises(InvalidImageError, match="outside"):
        rec.recognize(image, boxes=[(100, 100, 10, 10)])
    with pytest.raises(InvalidImageError, match="box 0"):
        rec.recognize(image, boxes=[(1, 2)])


def test_model_errors(tmp_path: Path, model_factory: Any) -> None:
    with pytest.raises(ModelLoadError, match="not found"):
        EmotionRecognizer(tmp_path / "missing.onnx")
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"garbage")
    with pytest.raises(ModelLoadError, match="cannot load"):
        EmotionRecognizer(corrupt)
    with pytest.raises(ModelLoadError, match="lacks the metadata"):
        EmotionRecognizer(model_factory(metadata={}))
    bad = model_factory(
        metadata={
            KEY_LABELS: json.dumps(["a"]),
            "fer_onnx.input_size": "[48, 48]",
            "fer_onnx.color_mode": "gray",
            "fer_onnx.value_range": "[0, 255]",
        }
    )
    with pytest.raises(ModelLoadError, match="output shape"):
        EmotionRecognizer(bad)
    mismatch = model_factory(
        metadata={
            KEY_LABELS: json.dumps(list(LABELS)),
            "fer_onnx.input_size": "[64, 64]",
            "fer_onnx.color_mode": "gray",
            "fer_onnx.value_range": "[0, 255]",
        }
    )
    with pytest.raises(ModelLoadError, match="does not match its metadata"):
        EmotionRecognizer(mismatch)
    with pytest.raises(ModelLoadError, match=r"unknown bundled model|not found"):
        EmotionRecognizer("fp16")


def test_yunet_detector_with_the_upstream_file(astronaut: np.ndarray) -> None:
    detector = YuNetDetector(shared_file(YUNET))  # fixed 640x640 input: letterboxed
    (face,) = detector.detect(astronaut)
    (haar,) = HaarDetector().detect(astronaut)
    assert face.box.iou(haar.box) > 0.4
    assert detector.detect(cv2.cvtColor(astronaut, cv2.COLOR_BGR2GRAY))


def test_detector_errors(tmp_path: Path) -> None:
    from fer_onnx import DetectorError

    with pytest.raises(DetectorError, match="not found"):
        YuNetDetector(tmp_path / "yunet.onnx")
    with pytest.raises(DetectorError, match="not found"):
        HaarDetector(cascade=tmp_path / "cascade.xml")
    with pytest.raises(ValueError, match="scale_factor"):
        HaarDetector(scale_factor=1.0)


def test_downscaled_detection_maps_boxes_back(astronaut: np.ndarray) -> None:
    big = cv2.resize(astronaut, (1024, 1024))
    (full,) = HaarDetector(detect_width=None).detect(astronaut)
    (small,) = HaarDetector(detect_width=256).detect(big)
    b = full.box
    scaled = Box(b.x * 2, b.y * 2, b.width * 2, b.height * 2)
    assert small.box.iou(scaled) > 0.6


# -- options that cannot apply are refused; align is a bool -------------------------------------


def test_margin_is_refused_where_the_template_frames_every_face(tiny_model: Path) -> None:
    """margin=0.5 was silently ignored with align=True and a model with a crop template."""
    for detector in (None, "haar"):  # box-only faces are cut to the template's box too
        with pytest.raises(InvalidOptionError, match=r"margin=0\.5 cannot apply.*align=False"):
            EmotionRecognizer("fast", detector=detector, margin=0.5)
    with EmotionRecognizer("fast", detector=None, margin=0.5, align=False) as rec:
        assert rec.margin == 0.5  # a plain crop: the margin applies
    with EmotionRecognizer("fast", detector=None, margin=0.0) as rec:
        assert rec.align is True
    with EmotionRecognizer(tiny_model, detector=None, margin=0.5) as rec:  # no template
        assert rec.info.template is None


@pytest.mark.parametrize("align", ["no", "False", None, 0, 1, 1.0])
def test_align_must_be_a_bool(tiny_model: Path, align: object) -> None:
    """align='no' (a true string) kept alignment on; None and 0 were taken as False."""
    with pytest.raises(InvalidTypeError, match=r"align must be True or False"):
        EmotionRecognizer(tiny_model, detector=None, align=align)  # type: ignore[arg-type]


def test_align_takes_numpy_bools(tiny_model: Path) -> None:
    with EmotionRecognizer(tiny_model, detector=None, align=np.False_) as rec:  # type: ignore[arg-type]
        assert rec.align is False


# -- boxes: one box not in a list, Box and Detection alike in recognize and cut_faces ------------


def test_one_box_not_wrapped_in_a_list_is_named(rec: EmotionRecognizer) -> None:
    """boxes=(361, 82, 249, 335) was 'box 0: expected four numbers ..., got 361'."""
    image = np.zeros((400, 700, 3), np.uint8)
    for one in ((361, 82, 249, 335), [361, 82, 249, 335], np.array([361, 82, 249, 335])):
        with pytest.raises(InvalidImageError, match=r"one box \(361, 82, 249, 335\).*\[\("):
            rec.recognize(image, boxes=one)  # type: ignore[arg-type]
    with pytest.raises(InvalidImageError, match=r"one Box.*\[box\]"):
        rec.recognize(image, boxes=Box(1, 2, 3, 4))  # type: ignore[arg-type]
    with pytest.raises(InvalidOptionError, match=r"one box.*wrap it in a list"):
        rec.cut_faces(image, (361, 82, 249, 335))  # type: ignore[arg-type]


def test_recognize_and_cut_faces_take_the_same_boxes(
    rec: EmotionRecognizer, astronaut: np.ndarray
) -> None:
    """recognize refused Detection, cut_faces refused (x, y, w, h) tuples."""
    box = Box(180, 60, 90, 110)
    points = ((200.0, 100.0), (247.0, 100.0), (220.0, 124.0), (200.0, 142.0), (240.0, 142.0))
    forms = [box.to_tuple(), list(box), np.array(box.to_tuple()), box, Detection(box, 0.8)]
    crops = rec.cut_faces(astronaut, forms)
    assert all(c.shape == crops[0].shape and (c == crops[0]).all() for c in crops)
    faces = rec.recognize(astronaut, boxes=forms)
    assert {f.box for f in faces} == {box}
    assert len({tuple(f.probabilities.values()) for f in faces}) == 1
    assert [f.detection_score for f in faces] == [None] * 4 + [0.8]
    (face,) = rec.recognize(astronaut, boxes=[Detection(box, 0.9, points)])
    assert face.landmarks == points  # a caller's landmarks are kept, as a detector's are
    with pytest.raises(InvalidImageError, match="outside"):
        rec.recognize(astronaut, boxes=[Detection(Box(5000, 0, 5, 5))])
    with pytest.raises(InvalidOptionError, match="outside"):
        rec.cut_faces(astronaut, [(5000, 0, 5, 5)])


def test_a_zero_dimensional_array_of_boxes_is_one_typed_error(tiny_model: Path) -> None:
    image = np.zeros((48, 48, 3), np.uint8)
    with (
        EmotionRecognizer(tiny_model, detector=None) as rec,
        pytest.raises(InvalidImageError, match="takes a list of boxes"),
    ):
        rec.recognize(image, boxes=np.array(5))
