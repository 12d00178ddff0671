"""Alignment onto the model's framing: geometry, template metadata, crops without a template."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import LABELS

from fer_onnx import Box, Detection, EmotionRecognizer, ModelInfo
from fer_onnx.alignment import (
    KEY_CROP_TEMPLATE,
    MAX_CROP_PIXELS,
    CropTemplate,
    align_face,
    crop_to_template,
    frame_face,
    landmarks_problem,
    similarity,
)
from fer_onnx.errors import InvalidOptionError, ModelLoadError
from fer_onnx.preprocessing import InputSpec

TEMPLATE = CropTemplate(
    ((0.32, 0.37), (0.68, 0.37), (0.5, 0.59), (0.36, 0.75), (0.64, 0.75)),
    (0.01, 0.0, 0.97, 0.97),
)


def synthetic_face(
    angle: float, scale: float, centre: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """A 600x500 grey canvas with 5 bright dots where a face's landmarks are, rotated by
    ``angle`` degrees and scaled by ``scale`` about ``centre``; returns it and the 5 points."""
    base = TEMPLATE.points(100, 100)  # the template at 100 px
    base = base - base.mean(axis=0)
    theta = math.radians(angle)
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    points = (base * scale) @ rot.T + np.asarray(centre)
    image = np.zeros((500, 600), np.uint8)
    for x, y in points:
        # sub-pixel centres (shift=4), so the dots sit exactly where the points are
        centre = (int(round(x * 16)), int(round(y * 16)))
        cv2.circle(image, centre, int(16 * max(2, 3 * scale)), 255, -1, cv2.LINE_AA, shift=4)
    return image, points


def blob_centres(image: np.ndarray) -> np.ndarray:
    """Centroids of the bright blobs, sorted like the template (by y, then x)."""
    _, mask = cv2.threshold(image, 60, 255, cv2.THRESH_BINARY)
    _n, _, stats, centroids = cv2.connectedComponentsWithStats(mask)
    found = centroids[1:][stats[1:, cv2.CC_STAT_AREA] > 0]
    return np.asarray(sorted(found.tolist(), key=lambda p: (round(p[1] / 4), p[0])))


@pytest.mark.parametrize("angle", [-40.0, -15.0, 0.0, 10.0, 30.0])
@pytest.mark.parametrize("scale", [0.5, 1.0, 3.0])
def test_rotated_face_comes_back_upright_with_eyes_on_the_template(
    angle: float, scale: float
) -> None:
    image, points = synthetic_face(angle, scale, (300, 250))
    size = 96
    aligned = align_face(image, tuple(map(tuple, points)), TEMPLATE, (size, size))
    assert aligned.shape == (size, size)
    expected = TEMPLATE.points(size, size)
    got = blob_centres(aligned)
    assert len(got) == 5
    want = np.asarray(sorted(expected.tolist(), key=lambda p: (round(p[1] / 4), p[0])))
    assert np.abs(got - want).max() < 1.5  # pixels of the 96 px output
    # eyes level: the face is upright again
    assert abs(got[0][1] - got[1][1]) < 1.0


@pytest.mark.parametrize("angle", [-30.0, 0.0, 25.0])
def test_similarity_recovers_rotation_scale_and_shift(angle: float) -> None:
    _, points = synthetic_face(angle, 2.0, (250, 200))
    matrix = similarity(points, TEMPLATE.points(48, 48))
    assert math.degrees(math.atan2(matrix[1, 0], matrix[0, 0])) == pytest.approx(-angle, abs=1e-6)
    assert math.hypot(matrix[0, 0], matrix[1, 0]) == pytest.approx(48 / 200, rel=1e-6)
    mapped = np.hstack([points, np.ones((5, 1))]) @ matrix.T
    assert np.abs(mapped - TEMPLATE.points(48, 48)).max() < 1e-6


def test_large_faces_are_shrunk_without_aliasing() -> None:
    # A fine checkerboard face 10x the output size: the aligned face is its mean grey, not moire.
    image = (np.indices((1200, 1200)).sum(axis=0) % 2 * 255).astype(np.uint8)
    points = TEMPLATE.points(480, 480) + 300
    aligned = align_face(image, tuple(map(tuple, points)), TEMPLATE, (48, 48))
    assert abs(float(aligned.mean()) - 127.5) < 3
    assert float(aligned.std()) < 10


def test_colour_channels_are_kept() -> None:
    image = np.zeros((300, 300, 3), np.uint8)
    image[..., 2] = 200
    points = TEMPLATE.points(100, 100) + 100
    out = align_face(image, tuple(map(tuple, points)), TEMPLATE, (48, 48))
    assert out.shape == (48, 48, 3)
    assert (out[..., 2] == 200).all()


def test_crop_to_template_puts_the_box_on_the_template_box() -> None:
    template = CropTemplate(TEMPLATE.landmarks, (0.25, 0.25, 0.5, 0.5))
    image = np.arange(400 * 400, dtype=np.uint32).reshape(400, 400).astype(np.uint8)
    crop = crop_to_template(image, Box(100, 120, 100, 100), template)
    assert crop.shape == (200, 200)
    assert (crop == image[70:270, 50:250]).all()
    # near the border the missing part repeats the edge, so the face keeps its place
    edge = crop_to_template(image, Box(0, 0, 100, 100), template)
    assert edge.shape == (200, 200)
    assert (edge[50:, 50:] == image[:150, :150]).all()
    plain = crop_to_template(image, Box(10, 20, 30, 40), CropTemplate(TEMPLATE.landmarks))
    assert plain.shape == (40, 30)


def test_frame_face_aligns_by_landmarks_and_cuts_by_box_without_them() -> None:
    image, points = synthetic_face(20.0, 1.5, (250.0, 300.0))
    landmarks = tuple(map(tuple, points))
    box = Box(150, 200, 200, 200)
    with_points = frame_face(image, Detection(box, 0.9, landmarks), TEMPLATE, (48, 48))
    assert (with_points == align_face(image, landmarks, TEMPLATE, (48, 48))).all()
    box_only = frame_face(image, Detection(box, 0.9), TEMPLATE, (48, 48))
    assert box_only.shape != (48, 48)  # the template's box region, at its own size
    assert (box_only == crop_to_template(image, box, TEMPLATE)).all()


def test_template_json_round_trip_and_validation() -> None:
    assert CropTemplate.from_json(TEMPLATE.to_json()) == TEMPLATE
    for bad in ('{"landmarks": [[0, 0]]}', "[]", "not json", '{"box": [0, 0, 1, 1]}'):
        with pytest.raises(ValueError, match=r"template|5 finite"):
            CropTemplate.from_json(bad)
    with pytest.raises(ValueError, match="box"):
        CropTemplate(TEMPLATE.landmarks, (0, 0, 0, 1))


def test_template_metadata_round_trip(model_factory: Callable[..., Path]) -> None:
    info = ModelInfo(LABELS, InputSpec(48, 48, "gray"), (0.0, 255.0), {}, TEMPLATE)
    props = info.to_metadata()
    assert json.loads(props[KEY_CROP_TEMPLATE])["landmarks"][0] == [0.32, 0.37]
    assert ModelInfo.from_metadata(props) == info
    path = model_factory(metadata=props)
    with EmotionRecognizer(path, detector=None) as rec:
        assert rec.info.template == TEMPLATE
    broken = model_factory(metadata={**props, KEY_CROP_TEMPLATE: '{"landmarks": 5}'})
    with pytest.raises(ModelLoadError, match="crop template"):
        EmotionRecognizer(broken, detector=None)


def test_model_without_template_crops_the_box(tiny_model: Path, astronaut: np.ndarray) -> None:
    with EmotionRecognizer(tiny_model, margin=0.1) as rec:
        assert rec.info.template is None
        d = Detection(
            Box(180, 60, 90, 110), 0.9, ((200, 100), (247, 100), (220, 124), (200, 142), (240, 142))
        )
        (crop,) = rec.cut_faces(astronaut, [d])
        assert crop.shape == (110 + 2 * 11, 90 + 2 * 9, 3)
        (face,) = rec.recognize(astronaut)  # detection and classification still work
        assert face.landmarks is not None


def test_model_with_template_aligns_landmarked_faces(
    model_factory: Callable[..., Path], astronaut: np.ndarray
) -> None:
    info = ModelInfo(LABELS, InputSpec(48, 48, "gray"), (0.0, 255.0), {}, TEMPLATE)
    path = model_factory(metadata=info.to_metadata())
    image, points = synthetic_face(20.0, 1.5, (300, 250))
    landmarked = Detection(Box(200, 150, 200, 200), 0.9, tuple(map(tuple, points)))
    box_only = Detection(Box(200, 150, 100, 100))
    with EmotionRecognizer(path) as rec:
        aligned, cut = rec.cut_faces(image, [landmarked, box_only])
        assert aligned.shape == (48, 48)  # warped straight to the input size
        assert cut.shape == (103, 103)  # the box on the template's box
        (face,) = rec.recognize(astronaut)
        assert face.landmarks is not None
    with EmotionRecognizer(path, align=False) as rec:
        (plain, _) = rec.cut_faces(image, [landmarked, box_only])
        assert plain.shape == (200, 200)


def test_landmarks_snap_to_the_grid_so_last_bit_noise_does_not_move_the_warp() -> None:
    image = (np.indices((300, 300)).sum(axis=0) % 7 * 36).astype(np.uint8)

    def raw_warp(points: np.ndarray) -> np.ndarray:  # the warp without the snap
        matrix = similarity(points, TEMPLATE.points(48, 48))
        return np.asarray(cv2.warpAffine(image, matrix, (48, 48), flags=cv2.INTER_LINEAR))

    # Find a position where a tiny nudge (like a detector's last-bit difference between CPU
    # kernels) changes the raw warp, then check that the aligned faces stay identical.
    on_grid = np.round(TEMPLATE.points(60, 60) * 8) / 8 + 100  # scale 0.8: no pre-shrink
    for k in range(400):
        points = on_grid + k / 8
        nudged = points + 1e-3  # far below the grid's 1/16 px half-step
        if not (raw_warp(points) == raw_warp(nudged)).all():
            break
    else:
        pytest.fail("no position found where the raw warp is sensitive to the nudge")
    a = align_face(image, tuple(map(tuple, points)), TEMPLATE, (48, 48))
    b = align_face(image, tuple(map(tuple, nudged)), TEMPLATE, (48, 48))
    assert (a == b).all()


_POINTS = TEMPLATE.landmarks


@pytest.mark.parametrize(
    ("landmarks", "box", "match"),
    [
        (((1e300, -1e300), *_POINTS[1:]), None, "within"),
        (((2.0, 0.4), *_POINTS[1:]), None, "within"),
        (((0.5, 0.5), (0.505, 0.5), (0.5, 0.51), (0.51, 0.51), (0.5, 0.52)), None, "coincide"),
        (((0.5, 0.4), (0.51, 0.4), *_POINTS[2:]), None, "eyes"),
        (_POINTS, (0.0, 0.0, 1e-3, 1.0), "width and height"),
        (_POINTS, (0.0, 0.0, 3.0, 1.0), "width and height"),
        (_POINTS, (1e12, 0.0, 1.0, 1.0), "overlap"),
        (_POINTS, (-0.9, 0.0, 0.5, 0.5), "overlap"),
        (_POINTS, (0.0, 0.0, math.nan, 1.0), "finite"),
        (_POINTS, (0.0, 0.0, 1.0), "4 finite"),
    ],
)
def test_implausible_templates_are_refused(
    landmarks: tuple[tuple[float, float], ...],
    box: tuple[float, ...] | None,
    match: str,
) -> None:
    with pytest.raises(InvalidOptionError, match=match):
        CropTemplate(landmarks, box)  # type: ignore[arg-type]
    text = json.dumps({"landmarks": landmarks, "box": box})
    with pytest.raises(InvalidOptionError, match="crop template"):
        CropTemplate.from_json(text)


@pytest.mark.parametrize(
    ("landmarks", "box", "problem"),
    [
        (((40.0, 50.0), (60.0, 50.0), (50.0, 60.0), (42.0, 70.0), (58.0, 70.0)), None, None),
        (((50.0, 50.0),) * 5, None, "coincide"),
        (((50.0, 50.0), (50.2, 50.0), (50.0, 50.2), (50.1, 50.1), (50.2, 50.2)), None, "coincide"),
        (((1e9, -1e9),) * 5, None, "far outside"),
        (
            ((40.0, 50.0), (60.0, 50.0), (50.0, 60.0), (42.0, 70.0), (58.0, 70.0)),
            Box(0, 0, 2, 2),
            "far outside",
        ),
        (
            ((40.0, 50.0), (41.0, 50.0), (40.0, 51.0), (41.0, 51.0), (40.5, 50.5)),
            Box(0, 0, 100, 100),
            "coincide",
        ),
        (((0.0, 0.0),) * 4, None, "5 finite"),
        ("eyes", None, "5"),
    ],
)
def test_landmarks_problem(landmarks: object, box: Box | None, problem: str | None) -> None:
    found = landmarks_problem(landmarks, box, (100, 100))
    if problem is None:
        assert found is None
    else:
        assert found is not None
        assert problem in found


def test_crop_to_template_is_bounded_for_huge_boxes() -> None:
    image = np.zeros((3000, 3000), np.uint8)
    template = CropTemplate(TEMPLATE.landmarks, (0.4, 0.4, 0.2, 0.2))  # 5x the box
    crop = crop_to_template(image, Box(0, 0, 10**9, 10**9), template)
    assert crop.size <= MAX_CROP_PIXELS * 1.01
    assert crop.shape[0] == crop.shape[1]
