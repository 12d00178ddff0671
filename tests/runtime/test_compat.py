"""fer_onnx.compat: the ``fer`` package's public behaviour on fer-onnx.

The last section is fer 25.10.3's own ``tests/test_fer.py``, run against ``fer_onnx.compat``
(its changes are listed there).
"""

from __future__ import annotations

import base64
import csv
import logging
import sys
import zipfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from conftest import MEDIA, shared_file

import fer_onnx.compat as fer
from fer_onnx import (
    EmotionRecognizer,
    HaarDetector,
    InvalidImageError,
    InvalidOptionError,
    ModelLoadError,
    VideoError,
    YuNetDetector,
)
from fer_onnx.compat import FER, FER_LABELS, InvalidImage, Video

FER_ORDER = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
"""fer 25.10.3's ``FER._get_labels()``, written out: the order its users index by."""
FALLBACK = "ignore::fer_onnx.video_out.VideoFallbackWarning"
"""Without PyAV the annotated video falls back to OpenCV with a warning; not what is tested."""


@pytest.fixture(autouse=True)
def _in_a_temporary_folder(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Video.analyze writes data.csv and output/ into the working directory, as fer does."""
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


@pytest.fixture(scope="module")
def detector() -> FER:
    return FER()


@pytest.fixture(scope="module")
def yunet() -> FER:
    return FER(mtcnn=True)


@pytest.fixture(scope="module")
def blank() -> np.ndarray:
    return np.full((240, 320, 3), 127, np.uint8)


@pytest.fixture
def woman2() -> Path:
    return shared_file(MEDIA / "woman2.mp4")


def fer_cascade_boxes(image: np.ndarray) -> list[list[int]]:
    """The boxes fer 25.10.3's ``find_faces`` gets from OpenCV with its default options."""
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    rects = cascade.detectMultiScale(
        cv2.cvtColor(image, cv2.COLOR_BGR2GRAY),
        scaleFactor=1.1,
        minNeighbors=5,
        flags=cv2.CASCADE_SCALE_IMAGE,
        minSize=(50, 50),
    )
    return [[int(v) for v in r] for r in rects]


def plain(faces: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Results with each box as a list, so that they compare with ``==``."""
    return [face | {"box": np.asarray(face["box"]).tolist()} for face in faces]


# -- the result format --------------------------------------------------------------------------


def test_labels_are_fers_in_fers_order(detector: FER) -> None:
    assert FER_ORDER == FER_LABELS
    assert FER._get_labels() == dict(enumerate(FER_ORDER))


def test_result_format(detector: FER, astronaut: np.ndarray) -> None:
    (face,) = detector.detect_emotions(astronaut)
    assert list(face) == ["box", "emotions"]
    box = face["box"]  # fer's Haar path: a row of OpenCV's int32 array (box.tolist() works)
    assert isinstance(box, np.ndarray)
    assert box.dtype == np.int32
    assert box.shape == (4,)
    assert box[2] > 0
    assert box[3] > 0
    assert tuple(face["emotions"]) == FER_ORDER
    assert all(type(v) is float for v in face["emotions"].values())
    assert detector.emotions == [face]


def test_yunet_boxes_are_lists_of_ints_as_fers_mtcnn_boxes(
    yunet: FER, astronaut: np.ndarray
) -> None:
    (face,) = yunet.detect_emotions(astronaut)
    box = face["box"]
    assert isinstance(box, list)
    assert len(box) == 4
    assert all(type(v) is int for v in box)
    assert yunet.find_faces(astronaut) == [box]


def test_boxes_are_the_ones_fers_cascade_finds(detector: FER, astronaut: np.ndarray) -> None:
    expected = fer_cascade_boxes(astronaut)
    assert expected
    assert [f["box"].tolist() for f in detector.detect_emotions(astronaut)] == expected
    found = detector.find_faces(astronaut)
    assert isinstance(found, np.ndarray)
    assert found.dtype == np.int32
    assert found.tolist() == expected


def test_find_faces_without_a_face_is_an_empty_tuple_as_in_fer(
    detector: FER, blank: np.ndarray
) -> None:
    assert detector.find_faces(blank) == ()


def test_large_photos_are_searched_at_full_size_as_fer_searches_them(
    detector: FER, astronaut: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fer has no pixel cap: the library's own cap (shrinking big photos) must not apply."""
    monkeypatch.setattr("fer_onnx.detectors.MAX_DETECT_PIXELS", 64 * 64)
    expected = fer_cascade_boxes(astronaut)
    capped = HaarDetector(scale_factor=1.1, min_size=50, detect_width=None).detect(astronaut)
    assert [list(d.box.to_tuple()) for d in capped] != expected  # the cap is in force
    assert [f["box"].tolist() for f in detector.detect_emotions(astronaut)] == expected


@pytest.mark.parametrize(
    ("option", "message"),
    [({"use_tflite": False}, "use_tflite"), ({"offsets": (40, 40)}, "offsets")],
)
def test_options_that_would_change_fers_results_warn(option: dict[str, Any], message: str) -> None:
    with pytest.warns(UserWarning, match=message):
        FER(**option).close()


def test_scores_are_the_models_rounded_as_fer_rounds(detector: FER, astronaut: np.ndarray) -> None:
    (face,) = detector.detect_emotions(astronaut)
    with EmotionRecognizer(detector=None) as rec:
        (expected,) = rec.recognize(astronaut, boxes=[face["box"]])
    assert face["emotions"] == {k: round(expected.probabilities[k], 2) for k in FER_ORDER}


def test_a_model_without_some_labels_scores_them_zero(
    model_factory: Any, blank: np.ndarray
) -> None:
    labels = ("happy", "neutral", "sad")
    path = model_factory(labels=labels)
    with FER(model=path) as detector:
        (face,) = detector.detect_emotions(blank, face_rectangles=[(10, 10, 100, 100)])
    assert tuple(face["emotions"]) == FER_ORDER
    assert {k for k, v in face["emotions"].items() if v == 0.0} >= {"angry", "disgust", "fear"}
    assert sum(face["emotions"][k] for k in labels) == pytest.approx(1.0, abs=0.02)


def test_a_model_with_labels_fer_does_not_know_is_refused(model_factory: Any) -> None:
    path = model_factory(labels=("happy", "contempt"))
    with pytest.raises(ModelLoadError, match="contempt"):
        FER(model=path)


def test_no_face_is_an_empty_list(detector: FER, blank: np.ndarray) -> None:
    assert detector.detect_emotions(blank) == []
    assert detector.top_emotion(blank) == (None, None)


def test_gray_images_work(detector: FER, astronaut: np.ndarray) -> None:
    gray = cv2.cvtColor(astronaut, cv2.COLOR_BGR2GRAY)
    found = [f["box"].tolist() for f in detector.detect_emotions(gray)]
    assert found == fer_cascade_boxes(astronaut)


# -- face_rectangles ----------------------------------------------------------------------------


def test_face_rectangles_come_back_as_given_in_order(detector: FER, astronaut: np.ndarray) -> None:
    first, second = (190, 60, 90, 110), np.array([20, 300, 80, 80])
    faces = detector.detect_emotions(astronaut, face_rectangles=[first, second])
    assert [f["box"] for f in faces] == [first, second]
    assert faces[0]["box"] is first
    assert faces[1]["box"] is second


def test_face_rectangles_skip_boxes_outside_the_image(
    detector: FER, astronaut: np.ndarray, caplog: pytest.LogCaptureFixture
) -> None:
    inside = [190, 60, 90, 110]
    with caplog.at_level(logging.WARNING, logger="fer_onnx.compat"):
        faces = detector.detect_emotions(
            astronaut, face_rectangles=[[900, 900, 50, 50], inside, (10, 10, 0, 50)]
        )
    assert [f["box"] for f in faces] == [inside]
    assert (
        "face_rectangles[0] [900, 900, 50, 50] is empty or lies outside the 512x512" in caplog.text
    )
    assert "face_rectangles[2] (10, 10, 0, 50) is empty" in caplog.text


def test_face_rectangles_partly_outside_are_clipped(detector: FER, astronaut: np.ndarray) -> None:
    (face,) = detector.detect_emotions(astronaut, face_rectangles=[(-20, -20, 100, 100)])
    assert face["box"] == (-20, -20, 100, 100)


def test_no_face_rectangles_no_results(detector: FER, astronaut: np.ndarray) -> None:
    assert detector.detect_emotions(astronaut, face_rectangles=[]) == []
    assert detector.detect_emotions(astronaut, face_rectangles=np.zeros((0, 4))) == []


@pytest.mark.parametrize("rect", [(1, 2, 3), "abcd", (1, 2, float("nan"), 4), None])
def test_malformed_face_rectangles_raise(detector: FER, astronaut: np.ndarray, rect: Any) -> None:
    with pytest.raises(InvalidImage, match=r"face_rectangles\[0\]"):
        detector.detect_emotions(astronaut, face_rectangles=[rect])


# -- top_emotion --------------------------------------------------------------------------------


def test_top_emotion_is_the_first_faces_best(detector: FER, astronaut: np.ndarray) -> None:
    rects = [(190, 60, 90, 110), (20, 300, 80, 80)]
    faces = detector.detect_emotions(astronaut, face_rectangles=rects)
    label, score = detector.top_emotion(astronaut)
    (found,) = detector.detect_emotions(astronaut)
    assert label == max(found["emotions"], key=lambda k: found["emotions"][k])
    assert score == found["emotions"][label]
    assert isinstance(label, str)
    assert isinstance(score, float)
    assert faces  # the rectangles gave results too: top_emotion ignores them


# -- images and InvalidImage --------------------------------------------------------------------


def test_invalid_image_is_a_fer_onnx_error() -> None:
    assert issubclass(InvalidImage, InvalidImageError)
    assert issubclass(InvalidImage, ValueError)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (None, "None"),
        (42, "int"),
        ([[1, 2], [3, 4]], "list"),
        (np.zeros((0, 0, 3), np.uint8), "non-empty"),
        (np.zeros((8, 8, 3), np.float64), "uint8"),
        ("no/such/photo.jpg", "not"),
        ("data:image/png;base64,bm90IGFuIGltYWdl", "decode"),
        ("data:image/png;base64,@@@", "empty"),
        ("http://127.0.0.1:9/face.jpg", "download"),
    ],
)
def test_invalid_images_raise_invalid_image(detector: FER, image: Any, message: str) -> None:
    with pytest.raises(InvalidImage, match=message):
        detector.detect_emotions(image)
    with pytest.raises(InvalidImage):
        detector.top_emotion(image)


def test_a_file_that_is_not_an_image_raises(detector: FER, tmp_path: Path) -> None:
    text = tmp_path / "example.py"
    text.write_text("print('not an image')\n")
    with pytest.raises(InvalidImage):
        detector.detect_emotions(str(text))
    with pytest.raises(InvalidImage):
        detector.detect_emotions(cv2.imread(str(text)))  # None, as in fer's test


def test_paths_and_base64_give_the_arrays_results(
    detector: FER, astronaut: np.ndarray, tmp_path: Path
) -> None:
    path = tmp_path / "astronaut.png"
    assert cv2.imwrite(str(path), astronaut)
    ok, png = cv2.imencode(".png", astronaut)
    assert ok
    uri = "data:image/png;base64," + base64.b64encode(png.tobytes()).decode()
    expected = plain(detector.detect_emotions(astronaut))
    assert plain(detector.detect_emotions(str(path))) == expected
    assert plain(detector.detect_emotions(path)) == expected
    assert plain(detector.detect_emotions(uri)) == expected
    both = detector.batch_detect_emotions([astronaut, str(path)])
    assert [plain(faces) for faces in both] == [expected, expected]
    assert detector.batch_detect_emotions([]) == []


# -- options ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"scale_factor": 1.0}, "scale_factor"),
        ({"min_face_size": 0}, "min_face_size"),
        ({"min_neighbors": -1}, "min_neighbors"),
        ({"offsets": (10,)}, "offsets"),
        ({"offsets": 10}, "offsets"),
        ({"tfserving": True}, "tfserving"),
    ],
)
def test_bad_options_raise_value_error(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        FER(**options)
    assert isinstance(info.value, InvalidOptionError)


def test_detectors_underneath(detector: FER, yunet: FER) -> None:
    assert isinstance(detector.detector, HaarDetector)
    assert isinstance(yunet.detector, YuNetDetector)
    haar = FER(scale_factor=1.3, min_face_size=30, min_neighbors=3).detector
    assert isinstance(haar, HaarDetector)
    assert (haar.params.scale_factor, haar.params.min_size, haar.params.min_neighbors) == (
        1.3,
        30,
        3,
    )
    assert haar.detect_width is None


def test_fer_25_options_are_accepted() -> None:
    with pytest.warns(UserWarning, match="use_tflite=False is ignored"):
        assert FER(use_tflite=False).use_tflite is False
    with pytest.warns(UserWarning, match=r"offsets=\(5, 5\) is ignored"):
        assert FER(None, False, False, True, 1.2, 40, 4, [5, 5]).offsets == (5, 5)
    assert FER(offsets=[10, 10]).offsets == (10, 10)  # fer's default: no warning


def test_yunet_finds_the_face(yunet: FER, astronaut: np.ndarray) -> None:
    (face,) = yunet.detect_emotions(astronaut)
    (haar_box,) = fer_cascade_boxes(astronaut)
    x, y, w, h = face["box"]
    hx, hy, hw, hh = haar_box
    assert hx < x + w / 2 < hx + hw
    assert hy < y + h / 2 < hy + hh


# -- Video --------------------------------------------------------------------------------------


def write_blank_video(path: Path, frames: int = 6) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, (96, 64))
    for _ in range(frames):
        writer.write(np.full((64, 96, 3), 90, np.uint8))
    writer.release()
    return path


def frame_count(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    try:
        return int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        cap.release()


def test_video_needs_an_existing_file(tmp_path: Path) -> None:
    with pytest.raises(VideoError, match="not found"):
        Video(tmp_path / "missing.mp4", outdir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.filterwarnings(FALLBACK)
def test_analyze_csv(
    detector: FER, woman2: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    video = Video(str(woman2), outdir="out")
    assert (tmp_path / "out").is_dir()  # made at once, as fer does
    rows = video.analyze(detector, display=False, frequency=10, max_results=5)
    columns = ["box0", *(f"{label}0" for label in FER_ORDER)]
    assert [list(r) for r in rows] == [columns] * 5
    assert all(len(r["box0"]) == 4 for r in rows)
    with open(tmp_path / "data.csv", newline="") as handle:
        written = list(csv.DictReader(handle))
    assert list(written[0]) == sorted(columns)  # fer sorts by name, then face number
    assert [float(r["neutral0"]) for r in written] == [r["neutral0"] for r in rows]
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["images.zip", "woman2_output.mp4"]
    names = zipfile.ZipFile(out / "images.zip").namelist()
    assert names == [f"woman2{i}.jpg" for i in (0, 10, 20, 30, 40)]
    assert frame_count(out / "woman2_output.mp4") == 5
    # The first frame: a faint smile. fer's own test checks neutral > 0.5 with fer's network;
    # the default model (accurate) splits it between neutral 0.33 and happy 0.54.
    first = video.analyze(detector, max_results=1, save_frames=False, save_video=False)
    assert first[0]["neutral0"] + first[0]["happy0"] > 0.8


@pytest.mark.filterwarnings(FALLBACK)
def test_analyze_pandas_and_helpers(detector: FER, woman2: Path, tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    video = Video(woman2, outdir=tmp_path)
    df = video.analyze(
        detector, output="pandas", frequency=20, max_results=3, save_frames=False, save_video=False
    )
    assert isinstance(df, pd.DataFrame)
    assert list(df.columns) == ["box", *FER_ORDER]
    assert len(df) == 3
    assert list(video.get_emotions(df).columns) == list(FER_ORDER)
    assert video.get_first_face(df) is df  # already one face
    assert list(tmp_path.iterdir()) == []
    # The same through fer's usual route: csv rows, then to_pandas.
    rows = video.analyze(detector, frequency=20, max_results=3, save_frames=False, save_video=False)
    assert video.to_pandas(rows).equals(df)
    assert video.to_pandas(df) is df


def test_to_pandas_of_several_faces() -> None:
    pd = pytest.importorskip("pandas")
    emotions = dict.fromkeys(FER_ORDER, 0.0) | {"happy": 1.0}
    frames = [
        [{"box": [0, 0, 5, 5], "emotions": emotions}, {"box": [9, 9, 5, 5], "emotions": emotions}]
    ] * 2
    video = Video.__new__(Video)
    video.first_face_only = False
    both = video.to_pandas(frames)
    assert list(both.columns) == [
        "box0",
        *(f"{k}0" for k in FER_ORDER),
        "box1",
        *(f"{k}1" for k in FER_ORDER),
    ]
    first = Video.get_first_face(both)
    assert list(first.columns) == ["box", *FER_ORDER]
    assert first["box"].tolist() == [[0, 0, 5, 5]] * 2
    assert list(Video.get_emotions(both).columns) == [c for c in both.columns if "box" not in c]
    video.first_face_only = True
    assert video.to_pandas(frames).equals(first)
    assert video.to_pandas([]).empty
    with pytest.raises(TypeError, match="DataFrame"):
        Video.get_first_face([1, 2])
    assert isinstance(Video.get_first_face(pd.DataFrame()), pd.DataFrame)


@pytest.mark.filterwarnings(FALLBACK)
def test_analyze_detection_box_moves_boxes_to_frame_pixels(
    detector: FER, woman2: Path, tmp_path: Path
) -> None:
    region = {"x_min": 150, "x_max": 450, "y_min": 20, "y_max": 320}
    video = Video(woman2, outdir=tmp_path)
    kwargs: dict[str, Any] = {"frequency": 30, "max_results": 2, "save_frames": False}
    whole = video.analyze(detector, **kwargs, save_video=False)
    cropped = video.analyze(detector, **kwargs, detection_box=region)
    assert len(cropped) == len(whole) == 2
    for part, full in zip(cropped, whole, strict=True):
        assert isinstance(part["box0"], tuple)  # fer makes it a tuple
        assert part["box0"][0] >= region["x_min"]
        assert abs(part["box0"][0] - full["box0"][0]) <= 8
        assert abs(part["box0"][1] - full["box0"][1]) <= 8
    cap = cv2.VideoCapture(str(tmp_path / "woman2_output.mp4"))
    size = (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    cap.release()
    assert size == (300, 300)  # the analysed region, every frame of it


@pytest.mark.filterwarnings(FALLBACK)
def test_analyze_naming_save_fps_and_no_zip(detector: FER, woman2: Path, tmp_path: Path) -> None:
    video = Video(woman2, outdir=tmp_path)
    video.analyze(
        detector, save_fps=10, max_results=3, video_id="clip", zip_images=False, save_video=False
    )
    # fps 29.97 // 10 = 2 frames apart; fer would name them "clip2.0.jpg" (a float).
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip0.jpg", "clip2.jpg", "clip4.jpg"]


@pytest.mark.filterwarnings(FALLBACK)
def test_analyze_tempfile_is_moved_into_place(detector: FER, tmp_path: Path) -> None:
    clip = write_blank_video(tmp_path / "blank.avi")
    temp = tmp_path / "partial.avi"
    video = Video(clip, outdir=tmp_path / "out", tempfile=temp)
    video.analyze(detector, output="csv", save_frames=False)
    assert not temp.exists()
    assert frame_count(tmp_path / "out" / "blank_output.avi") == 6
    temp.write_bytes(b"stale")  # not this run's: left alone when no video is written
    video.analyze(detector, save_frames=False, save_video=False)
    assert temp.read_bytes() == b"stale"
    assert frame_count(tmp_path / "out" / "blank_output.avi") == 6


@pytest.mark.filterwarnings(FALLBACK)
def test_analyze_a_video_without_faces(
    detector: FER, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    clip = write_blank_video(tmp_path / "blank.avi")
    video = Video(clip, outdir=tmp_path / "out")
    assert video.analyze(detector, max_results=3) == []  # fer raises IndexError here
    assert (tmp_path / "data.csv").read_text() == ""
    # max_results counts analysed frames, with or without faces.
    assert len(zipfile.ZipFile(tmp_path / "out" / "images.zip").namelist()) == 3


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"output": "json"}, "output"),
        ({"lang": "de"}, "lang"),
        ({"include_audio": True}, "include_audio"),
        ({"frequency": 0}, "frequency"),
        ({"save_fps": 0}, "save_fps"),
    ],
)
def test_analyze_refuses_unsupported_options_before_any_work(
    detector: FER, woman2: Path, tmp_path: Path, options: dict[str, Any], message: str
) -> None:
    video = Video(woman2, outdir=tmp_path)
    with pytest.raises(InvalidOptionError, match=message):
        video.analyze(detector, **options)
    assert list(tmp_path.iterdir()) == []


def test_display_without_gui_support_says_so(
    detector: FER, woman2: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_gui(*args: Any) -> None:
        raise cv2.error("The function is not implemented")

    monkeypatch.setattr(cv2, "imshow", no_gui)
    video = Video(woman2, outdir=tmp_path)
    with pytest.raises(InvalidOptionError, match="opencv-python"):
        video.analyze(detector, display=True, max_results=1, save_frames=False, save_video=False)


def test_pandas_is_optional(
    detector: FER, woman2: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas now fails
    video = Video(woman2, outdir=tmp_path)
    with pytest.raises(ImportError, match="pip install pandas"):
        video.to_pandas([])
    with pytest.raises(ImportError, match="pip install pandas"):
        video.analyze(detector, output="pandas")
    assert list(tmp_path.iterdir()) == []


def test_draw_annotations_draws_fers_layout(blank: np.ndarray) -> None:
    face = {"box": [40, 20, 60, 60], "emotions": dict.fromkeys(FER_ORDER, 0.0) | {"happy": 0.9}}
    out = fer.draw_annotations(blank, [face])
    assert out is not blank
    assert (blank == 127).all()  # drawn on a copy
    assert tuple(out[20, 70]) == (0, 155, 255)  # the box's top edge, in fer's colour
    below = out[85:200, 40:140].astype(int)
    green = (below[..., 1] > 200) & (below[..., 0] < 100) & (below[..., 2] < 100)
    assert green.any()  # happy's score, in green
    assert not green[:40].any()  # nothing green above it: the zero scores are drawn faint


# -- fer 25.10.3's tests/test_fer.py, run against fer_onnx.compat ----------------------------------
# Changed: the imports (``from fer import FER, Video`` / ``from fer.exceptions import
# InvalidImage`` -> ``fer_onnx.compat``); unittest's setUpClass and assert methods -> a class
# fixture and plain asserts; the data paths (../shared/media); a synthetic no-face image (fer's
# repository has no-faces.jpg); the working directory of test_video (a temporary folder:
# analyze() writes output/ and data.csv there); test_video's neutral > 0.5 on woman2's first
# frames (see there); and fer's happy > 0.9 threshold on justin.jpg,
# which this model does not reach (accurate: 0.79 with Haar, 0.82 with YuNet, happy on top with
# both): that check is kept as a strict expected failure, so that it is noticed if it changes.


@pytest.fixture(scope="class")
def detectors() -> tuple[FER, FER]:
    return FER(), FER(mtcnn=True)


@pytest.fixture
def justin() -> str:
    return str(shared_file(MEDIA / "justin.jpg"))


class TestFER:
    def test_detect_emotions(self, detectors: tuple[FER, FER], justin: str) -> None:
        """FER is able to detect faces in an image."""
        detector, mtcnn_detector = detectors
        result = detector.detect_emotions(justin)
        mtcnn_result = mtcnn_detector.detect_emotions(justin)

        assert len(result) == 1

        first = result[0]
        mtcnn_first = mtcnn_result[0]

        for face in (first, mtcnn_first):
            scores = face["emotions"]
            assert max(scores, key=scores.__getitem__) == "happy"
            assert scores["happy"] > 0.5
        assert "box" in first
        assert "emotions" in first
        assert len(first["box"]) == 4

    @pytest.mark.xfail(
        strict=True, reason="calibrated scores: happy is 0.79 (Haar) and 0.82 (YuNet), not > 0.9"
    )
    def test_detect_emotions_fers_threshold(self, detectors: tuple[FER, FER], justin: str) -> None:
        detector, mtcnn_detector = detectors
        first = detector.detect_emotions(justin)[0]
        mtcnn_first = mtcnn_detector.detect_emotions(justin)[0]
        assert first["emotions"]["happy"] > 0.9
        assert mtcnn_first["emotions"]["happy"] > 0.9

    def test_detect_faces_invalid_content(self, detectors: tuple[FER, FER]) -> None:
        """FER detects invalid images."""
        justin = cv2.imread(__file__)  # a .py file: None, as fer's cv2.imread("example.py")

        with pytest.raises(InvalidImage):
            _ = detectors[0].detect_emotions(justin)

    def test_detect_no_faces_on_no_faces_content(self, detectors: tuple[FER, FER]) -> None:
        """FER successfully reports an empty list when no faces are detected."""
        justin = np.full((300, 400, 3), (40, 120, 200), np.uint8)

        result = detectors[0].detect_emotions(justin)
        assert len(result) == 0

    def test_top_emotion(self, detectors: tuple[FER, FER], justin: str) -> None:
        """FER successfully returns tuple of string and float for first face."""
        image = cv2.imread(justin)

        top_emotion, score = detectors[0].top_emotion(image)
        assert isinstance(top_emotion, str)
        assert isinstance(float(score), float)  # type: ignore[arg-type]

    @pytest.mark.slow
    @pytest.mark.filterwarnings(FALLBACK)
    def test_video(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        pd = pytest.importorskip("pandas")
        woman2 = shared_file(MEDIA / "woman2.mp4")
        monkeypatch.chdir(tmp_path)
        detector = FER()
        video = Video(str(woman2))

        raw_data = video.analyze(detector, display=False)
        assert isinstance(raw_data, list)

        # Convert to pandas for analysis
        df = video.to_pandas(raw_data)
        # fer's check is neutral > 0.5 on the first five frames (a faint smile). The accurate
        # default splits them between neutral (0.31-0.34) and happy (0.53-0.58), so that
        # check fails here; what is kept is that the two together carry the frames.
        both = df.neutral[:5] + df.happy[:5]
        assert sum(both > 0.8) == 5, f"Expected neutral + happy > 0.8, got {both}"
        assert isinstance(df, pd.DataFrame)
        assert "angry" in df
        df = video.get_first_face(df)
        assert isinstance(df, pd.DataFrame)
        df = video.get_emotions(df)
        assert isinstance(df, pd.DataFrame)
