"""VideoRecognizer (tracks, smoothing, region re-detection) and frame reading."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import MEDIA, shared_file

from fer_onnx import (
    Box,
    Detection,
    EmotionRecognizer,
    FerOnnxError,
    HaarDetector,
    VideoError,
    VideoRecognizer,
    VideoStats,
    open_video,
    read_frames,
)


class ScriptedDetector:
    """Returns a fixed list of boxes per call, and counts calls and image sizes."""

    def __init__(self, script: list[list[Box]]) -> None:
        self.script = script
        self.calls: list[tuple[int, int]] = []

    def detect(self, image: np.ndarray) -> list[Box]:
        self.calls.append(image.shape[:2])
        return self.script[min(len(self.calls) - 1, len(self.script) - 1)]

    def detect_region(self, region: np.ndarray, face_width: float) -> list[Detection]:
        return [Detection(b) for b in self.detect(region)]


class FullOnly:
    """A detector without detect_region: video mode must search every frame in full."""

    def __init__(self, box: Box) -> None:
        self.box, self.calls = box, 0

    def detect(self, image: np.ndarray) -> list[Box]:
        self.calls += 1
        return [self.box]


def moving_face_clip(astronaut: np.ndarray, n: int = 20) -> list[np.ndarray]:
    """A 640x480 clip with the astronaut's face sliding right by 4 px per frame."""
    face = astronaut[0:260, 100:330]
    frames = []
    for i in range(n):
        frame = np.full((480, 640, 3), 90, np.uint8)
        frame[100:360, 50 + 4 * i : 280 + 4 * i] = face
        frames.append(frame)
    return frames


def test_track_ids_stay_stable_and_smoothing_changes_values(
    tiny_model: Path, astronaut: np.ndarray
) -> None:
    clip = moving_face_clip(astronaut)
    with EmotionRecognizer(tiny_model) as rec:
        raw = [rec.recognize(f) for f in clip]
        assert all(len(r) == 1 for r in raw)
        video = VideoRecognizer(rec, smoothing=5)
        tracked = [video.process(f) for f in clip]
        assert {r[0].track_id for r in tracked} == {0}
        off = VideoRecognizer(rec, smoothing=0, redetect_every=1)
        unsmoothed = [off.process(f) for f in clip]
    # Without smoothing the video path gives exactly the still-image results.
    assert [u[0].probabilities for u in unsmoothed] == [r[0].probabilities for r in raw]
    # With smoothing the first frame is raw, later frames are averages.
    assert tracked[0][0].probabilities == raw[0][0].probabilities
    later = np.array(list(tracked[-1][0].probabilities.values()))
    assert not np.allclose(later, list(raw[-1][0].probabilities.values()))
    assert later.sum() == pytest.approx(1.0)


def test_region_detection_between_full_searches(tiny_model: Path) -> None:
    face = Box(300, 200, 80, 80)
    detector = ScriptedDetector(
        [[face], [Box(20, 20, 80, 80)]]
    )  # region hits map back near the face
    frame = np.zeros((480, 640, 3), np.uint8)
    with EmotionRecognizer(tiny_model, detector=detector) as rec:
        video = VideoRecognizer(rec, redetect_every=5, roi_margin=0.5)
        for _ in range(5):
            video.process(frame)
    assert detector.calls[0] == (480, 640)  # first frame: full search
    assert all(shape == (160, 160) for shape in detector.calls[1:])  # then only regions
    assert len(detector.calls) == 5


class SpyHaar(HaarDetector):
    """A Haar detector whose full search returns one known face; records region searches."""

    def __init__(self, face: Box, hit: Box, region_face_size: int = 48) -> None:
        super().__init__(region_face_size=region_face_size)
        self.face, self.hit = face, hit
        self.full = 0
        self.sized: list[tuple[tuple[int, ...], int, int, float | None]] = []

    def detect(self, image: np.ndarray) -> list[Box]:
        self.full += 1
        return [self.face]

    def detect_sized(
        self, image: np.ndarray, min_size: int, max_size: int, scale_factor: float | None = None
    ) -> list[Box]:
        self.sized.append((image.shape, min_size, max_size, scale_factor))
        return [self.hit]


def test_haar_region_search_shrinks_the_face_to_region_face_size(tiny_model: Path) -> None:
    face = Box(200, 100, 150, 150)
    # 48 px face in a 96 px grey region (margin 0.5): its hit maps back to the same box
    detector = SpyHaar(face, hit=Box(24, 24, 48, 48))
    frame = np.zeros((480, 640, 3), np.uint8)
    with EmotionRecognizer(tiny_model, detector=detector) as rec:
        video = VideoRecognizer(rec, redetect_every=100)
        results = [video.process(frame) for _ in range(4)]
    assert detector.full == 1  # only the first frame searched the whole frame
    assert detector.sized == [((96, 96), 33, 68, 1.2)] * 3  # 0.7x..1.4x of 48 px, 2-D grey
    assert all(r[0].box == face and r[0].track_id == 0 for r in results)


def test_small_faces_are_searched_at_full_resolution(tiny_model: Path) -> None:
    face = Box(300, 200, 40, 40)  # smaller than region_face_size: never enlarged
    detector = SpyHaar(face, hit=Box(20, 20, 40, 40), region_face_size=64)
    frame = np.zeros((480, 640, 3), np.uint8)
    with EmotionRecognizer(tiny_model, detector=detector) as rec:
        video = VideoRecognizer(rec, redetect_every=100)
        video.process(frame)
        assert video.process(frame)[0].box == face
    assert detector.sized == [((80, 80), 28, 57, 1.2)]


def test_lost_track_triggers_full_search_and_tracks_end(tiny_model: Path) -> None:
    face = Box(300, 200, 80, 80)
    detector = ScriptedDetector([[face], [], [], [], [], []])
    frame = np.zeros((480, 640, 3), np.uint8)
    with EmotionRecognizer(tiny_model, detector=detector) as rec:
        video = VideoRecognizer(rec, max_missed=2, redetect_every=100)
        assert len(video.process(frame)) == 1
        assert video.active_tracks == 1
        assert video.process(frame) == []
        # region search failed -> full-frame search in the same frame
        assert detector.calls[1] != (480, 640)
        assert detector.calls[2] == (480, 640)
        video.process(frame)
        video.process(frame)
        assert video.active_tracks == 0  # ended after more than max_missed misses


def test_two_faces_get_two_ids_and_new_face_new_id(tiny_model: Path) -> None:
    a, b, c = Box(10, 10, 60, 60), Box(300, 10, 60, 60), Box(150, 300, 60, 60)
    detector = ScriptedDetector([[a, b], [b, a], [a, b, c]])
    frame = np.zeros((480, 640, 3), np.uint8)
    with EmotionRecognizer(tiny_model, detector=detector) as rec:
        video = VideoRecognizer(rec, redetect_every=1)
        first = {f.box: f.track_id for f in video.process(frame)}
        second = {f.box: f.track_id for f in video.process(frame)}
        third = {f.box: f.track_id for f in video.process(frame)}
    assert first == second
    assert third[c] == 2
    assert third[a] == first[a]


def test_video_needs_detector_and_valid_args(tiny_model: Path) -> None:
    with (
        EmotionRecognizer(tiny_model, detector=None) as rec,
        pytest.raises(FerOnnxError, match="detector"),
    ):
        VideoRecognizer(rec)
    with EmotionRecognizer(tiny_model) as rec, pytest.raises(ValueError, match="redetect_every"):
        VideoRecognizer(rec, redetect_every=0)
    with pytest.raises(ValueError, match="region_face_size"):
        HaarDetector(region_face_size=16)
    with pytest.raises(ValueError, match="scale_factor"):
        HaarDetector(region_scale_factor=1.0)
    with (
        EmotionRecognizer(tiny_model, detector=FullOnly(Box(0, 0, 9, 9))) as rec,
        pytest.raises(ValueError, match="RegionDetector"),
    ):
        VideoRecognizer(rec, redetect_every=5)


def test_detectors_without_region_search_detect_every_frame(tiny_model: Path) -> None:
    detector = FullOnly(Box(300, 200, 80, 80))
    frame = np.zeros((480, 640, 3), np.uint8)
    with EmotionRecognizer(tiny_model, detector=detector) as rec:
        video = VideoRecognizer(rec)
        assert video.redetect_every == 1
        assert [video.process(frame)[0].track_id for _ in range(4)] == [0] * 4
    assert detector.calls == 4


@pytest.mark.parametrize("detector", ["yunet", "haar"])
def test_video_mode_with_both_detectors(
    tiny_model: Path, astronaut: np.ndarray, detector: str
) -> None:
    clip = moving_face_clip(astronaut)
    with EmotionRecognizer(tiny_model, detector=detector) as rec:
        video = VideoRecognizer(rec)
        assert video.redetect_every == (10 if detector == "haar" else 1)
        tracked = [video.process(f) for f in clip]
    assert all(len(r) == 1 and r[0].track_id == 0 for r in tracked)
    xs = [r[0].box.x for r in tracked]
    assert xs[-1] - xs[0] == pytest.approx(4 * (len(clip) - 1), abs=8)  # it follows the face
    if detector == "yunet":
        assert all(r[0].landmarks is not None and r[0].detection_score for r in tracked)


def test_yunet_region_search_between_full_searches(tiny_model: Path, astronaut: np.ndarray) -> None:
    clip = moving_face_clip(astronaut)
    with EmotionRecognizer(tiny_model) as rec:
        every = [f[0].box for f in map(VideoRecognizer(rec).process, clip)]
        video = VideoRecognizer(rec, redetect_every=5)
        regions = [video.process(f) for f in clip]
    assert all(len(r) == 1 and r[0].landmarks is not None for r in regions)
    assert all(r[0].box.iou(b) > 0.8 for r, b in zip(regions, every, strict=True))


def write_clip(path: Path, n: int = 12, size: tuple[int, int] = (160, 120)) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 10.0, size)
    for i in range(n):
        writer.write(np.full((size[1], size[0], 3), i * 10, np.uint8))
    writer.release()
    return path


def test_read_frames_every_and_timestamps(tmp_path: Path) -> None:
    cap, stats = open_video(write_clip(tmp_path / "clip.mp4"))
    frames = list(read_frames(cap, stats, every=3))
    cap.release()
    assert [f.index for f in frames] == [0, 3, 6, 9]
    assert frames[1].timestamp == pytest.approx(0.3)
    assert stats.read == 4
    assert stats.corrupt == 0
    assert stats.frame_count == 12


def test_open_video_errors(tmp_path: Path) -> None:
    with pytest.raises(VideoError, match="not found"):
        open_video(tmp_path / "missing.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 1000)
    with pytest.raises(VideoError, match="cannot open"):
        open_video(junk)
    with pytest.raises(VideoError, match="camera"):
        open_video(97)


class CountingHaar(HaarDetector):
    full = 0

    def detect(self, image: np.ndarray) -> list[Box]:
        self.full += 1
        return super().detect(image)


def test_real_video_keeps_one_track(tiny_model: Path) -> None:
    cap, stats = open_video(shared_file(MEDIA / "woman2.mp4"))
    detector = CountingHaar()
    with EmotionRecognizer(tiny_model, detector=detector) as rec:
        video = VideoRecognizer(rec, redetect_every=10)
        ids = [f.track_id for frame in read_frames(cap, stats) for f in video.process(frame.image)]
    cap.release()
    assert len(ids) > 0.9 * stats.read
    # the region search finds the face on real frames: few full searches beyond every 10th frame
    assert detector.full <= stats.read / 10 + 0.05 * stats.read
    # one face throughout: almost every frame belongs to the first track
    assert ids.count(ids[0]) > 0.9 * len(ids)


def test_the_summary_says_one_frame_not_one_frames() -> None:
    stats = VideoStats(fps=30.0, frame_count=1, width=64, height=48, read=1)
    assert stats.summary() == "1 frame read of 1"
