"""Aligned training data: FER2013 faces warped onto the crop template, saved as an .npz dataset."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import MEDIA, shared_file

from fer_onnx import Detection, EmotionRecognizer
from fer_onnx.alignment import CropTemplate
from fer_onnx.preprocessing import prepare_faces
from fer_onnx.yunet import YuNetDetector
from fer_onnx_factory.data.align import main
from fer_onnx_factory.data.datasets import DataError, Dataset, load, load_fer2013_csv
from fer_onnx_factory.data.framing import FER2013_TEMPLATE, central, frame_landmarks, load_template
from fer_onnx_factory.train.config import TrainConfig, read_contract, template_for
from fer_onnx_factory.train.run import write_contract

ROWS = 40


@pytest.fixture(scope="module")
def aligned(tmp_path_factory: pytest.TempPathFactory, fer_small: Path) -> Path:
    out = tmp_path_factory.mktemp("aligned") / "fer2013-aligned.npz"
    assert main(["--data", str(fer_small), "--out", str(out), "--limit", str(ROWS)]) == 0
    return out


@pytest.fixture(scope="module")
def original(aligned: Path, fer_small: Path) -> Dataset:
    return load_fer2013_csv(fer_small)


def test_aligned_dataset_loads_like_any_dataset(aligned: Path, original: Dataset) -> None:
    data = load(aligned)
    assert set(data.splits) == {"Training", "PublicTest", "PrivateTest"}
    for name, split in data.splits.items():
        assert split.images.shape == (ROWS, 48, 48, 1)
        assert split.images.dtype == np.uint8
        assert np.array_equal(split.labels, original[name].labels[:ROWS])
        assert np.array_equal(split.rows, original[name].rows[:ROWS])
        changed = (split.images != original[name].images[:ROWS]).any(axis=(1, 2, 3))
        assert changed.mean() > 0.8  # YuNet finds landmarks on ~96% of FER2013 faces
    assert any("aligned onto fer2013.json" in n for n in data.notes)
    template = json.loads(FER2013_TEMPLATE.read_text())["template"]
    assert data.template is not None
    assert np.allclose(data.template["landmarks"], template["landmarks"], atol=1e-5)
    assert np.allclose(data.template["box"], template["box"], atol=1e-5)


def test_aligned_faces_sit_on_the_template(aligned: Path, original: Dataset) -> None:
    """YuNet's eyes on the aligned faces lie nearer the template's than on the originals."""
    detector = YuNetDetector(detect_width=None, score_threshold=0.5, device="cpu")
    target = load_template(FER2013_TEMPLATE).points(48, 48)[:2]

    def eye_error(faces: np.ndarray) -> float:
        found, points = frame_landmarks(faces, detector)
        return float(np.linalg.norm(points[found][:, :2] - target, axis=-1).mean())

    before = eye_error(original["Training"].images[:ROWS])
    after = eye_error(load(aligned)["Training"].images)
    assert after < 0.6 * before, (before, after)


def test_keep_original_holds_both_framings(
    aligned: Path, original: Dataset, fer_small: Path, tmp_path: Path
) -> None:
    """--keep-original: each face in its own framing, then the same face aligned."""
    both = tmp_path / "both.npz"
    args = ["--data", str(fer_small), "--out", str(both), "--limit", str(ROWS), "--keep-original"]
    assert main(args) == 0
    data, alone = load(both), load(aligned)
    for name, split in data.splits.items():
        assert split.images.shape == (2 * ROWS, 48, 48, 1)
        assert np.array_equal(split.images[:ROWS], original[name].images[:ROWS])
        assert np.array_equal(split.images[ROWS:], alone[name].images)
        for field in ("labels", "targets", "rows"):
            first, second = np.split(getattr(split, field), 2)
            assert np.array_equal(first, getattr(alone[name], field))
            assert np.array_equal(second, getattr(alone[name], field))
    assert any("also kept in its own framing" in n for n in data.notes)
    assert data.template == alone.template


def test_the_run_contract_takes_the_datasets_template(aligned: Path, tmp_path: Path) -> None:
    expected = CropTemplate.from_json(json.dumps(load(aligned).template))
    assert template_for(aligned) == expected
    cfg = TrainConfig(data=aligned, out=tmp_path, weights="none")
    write_contract(cfg, load(aligned))
    assert read_contract(tmp_path).template == expected


def test_bad_npz_and_existing_output_are_clear_errors(
    aligned: Path, fer_small: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros(3))
    with pytest.raises(DataError, match="fer-onnx-factory align"):
        load(other)
    assert main(["--data", str(fer_small), "--out", str(aligned)]) == 2
    assert main(["--data", str(fer_small), "--out", str(tmp_path / "x.csv")]) == 2


def test_truncated_npz_dataset_is_a_clear_error(aligned: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.npz"
    cut.write_bytes(aligned.read_bytes()[:5000])
    with pytest.raises(DataError, match="fer-onnx-factory align"):
        load(cut)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train/happy: two real photos (one with two faces); train/sad: one without a face."""
    root = tmp_path_factory.mktemp("photos")
    for split, cls, name in [
        ("train", "happy", "obama_and_biden.jpg"),
        ("train", "happy", "obama.jpg"),
        ("val", "happy", "biden.jpg"),
    ]:
        (root / split / cls).mkdir(parents=True, exist_ok=True)
        (root / split / cls / name).write_bytes(shared_file(MEDIA / name).read_bytes())
    (root / "train" / "sad").mkdir()
    cv2.imwrite(str(root / "train" / "sad" / "wall.png"), np.full((120, 160, 3), 128, np.uint8))
    return root


def runtime_face(image: np.ndarray) -> np.ndarray:
    """The face nearest the centre, as ``recognize`` frames it for the shipped model."""
    with EmotionRecognizer("accurate", device="cpu") as rec:
        faces = rec.recognize(image)
        boxes = [(f.box.x, f.box.y, f.box.width, f.box.height) for f in faces]
        i = central(boxes, image.shape[1], image.shape[0])
        assert i is not None
        found = Detection(faces[i].box, faces[i].detection_score, faces[i].landmarks)
        return prepare_faces(rec.cut_faces(image, [found]), rec.info.input)[0].astype(np.uint8)


def test_photos_are_framed_as_the_runtime_frames_them(photos: Path, tmp_path: Path) -> None:
    out = tmp_path / "photos.npz"
    assert main(["--photos", "--data", str(photos), "--out", str(out), "--keep-original"]) == 0
    data = load(out)
    train = data["Training"]
    assert len(train) == 2 * 3
    assert len(data["PublicTest"]) == 2 * 1
    whole, framed = np.split(train.images, 2)
    names = ["obama.jpg", "obama_and_biden.jpg"]  # happy, in name order; then sad/wall.png
    for k, name in enumerate(names):
        image = cv2.imread(str(photos / "train" / "happy" / name))
        assert np.array_equal(framed[k], runtime_face(image))
        assert np.array_equal(whole[k], prepare_faces([image], data.spec)[0])
    assert np.array_equal(framed[2], whole[2])  # no face: kept whole
    assert train.labels.tolist() == [3, 3, 4, 3, 3, 4]
    framing = "3 of 4 photos framed as the runtime frames them"
    assert any(framing in n and "1 without a face kept whole" in n for n in data.notes)
    assert data.template == json.loads(FER2013_TEMPLATE.read_text())["template"]


def test_limit_keeps_the_first_photos_in_both_framings(photos: Path, tmp_path: Path) -> None:
    out, full = tmp_path / "one.npz", tmp_path / "all.npz"
    for path, extra in ((out, ["--limit", "1"]), (full, [])):
        args = ["--photos", "--data", str(photos), "--out", str(path), "--keep-original"]
        assert main([*args, *extra]) == 0
    train, every = load(out)["Training"], load(full)["Training"]
    assert np.array_equal(train.images, every.images[[0, 3]])  # obama.jpg whole, then framed
    assert train.labels.tolist() == [3, 3]


def test_photos_need_a_folder_tree(fer_small: Path, tmp_path: Path) -> None:
    assert main(["--photos", "--data", str(fer_small), "--out", str(tmp_path / "x.npz")]) == 2
    assert not (tmp_path / "x.npz").exists()
