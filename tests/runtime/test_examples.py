"""Each example's main() runs on real or generated media."""

from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np
import pytest
from conftest import MEDIA, ROOT, shared_file


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        f"example_{name}", ROOT / "examples" / f"{name}.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_image_example(
    tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    example = load("image")
    assert (
        example.main(["--model", str(tiny_model), "--out", str(tmp_path / "a.jpg")]) == 0
    )  # astronaut
    assert "top-3" in capsys.readouterr().out
    assert cv2.imread(str(tmp_path / "a.jpg")) is not None
    assert (
        example.main([str(shared_file(MEDIA / "two_people.jpg")), "--model", str(tiny_model)]) == 0
    )
    assert capsys.readouterr().out.count("top-3") == 2


def test_video_to_csv_example(tiny_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "faces.csv"
    assert (
        load("video_to_csv").main(
            [
                str(shared_file(MEDIA / "woman2.mp4")),
                str(out),
                "--every",
                "4",
                "--model",
                str(tiny_model),
            ]
        )
        == 0
    )
    rows = list(csv.DictReader(out.read_text().splitlines()))
    assert len(rows) > 100
    assert {r["track_id"] for r in rows}
    assert "p_happy" in rows[0]


def test_webcam_example_replays_a_file(
    tiny_model: Path, astronaut: np.ndarray, tmp_path: Path
) -> None:
    clip = tmp_path / "cam.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter.fourcc(*"mp4v"), 10.0, (512, 512))
    for _ in range(6):
        writer.write(astronaut)
    writer.release()
    shown: list[np.ndarray] = []
    frames = load("webcam").run(
        str(clip), str(tiny_model), lambda img: shown.append(img) or len(shown) < 4
    )
    assert frames == 4
    assert shown[0].shape == (512, 512, 3)
    assert (shown[0] != astronaut).any()  # boxes and FPS were drawn


def test_webcam_example_without_camera(
    tiny_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert load("webcam").main(["--camera", "97", "--model", str(tiny_model)]) == 2
    assert "cannot open camera 97" in capsys.readouterr().out
