"""export.bundle --report-on: the bundled files measured on other framings of the test faces."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import LABELS

from export.bundle import report_on_data
from export.onnx import ExportError
from fer_onnx import EmotionRecognizer


def write_csv(path: Path) -> Path:
    rng = np.random.default_rng(0)
    lines = ["emotion,pixels,Usage"]
    for usage, n in (("Training", 7), ("PublicTest", 14), ("PrivateTest", 21)):
        for i in range(n):
            pixels = " ".join(str(v) for v in rng.integers(0, 256, 48 * 48))
            lines.append(f"{i % len(LABELS)},{pixels},{usage}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_each_file_is_measured_and_the_figures_are_in_its_metadata(
    tiny_model: Path, tmp_path: Path
) -> None:
    model = tmp_path / "fp32.onnx"
    shutil.copyfile(tiny_model, model)
    data = write_csv(tmp_path / "other.csv")
    [entry] = report_on_data({"fp32": model}, LABELS, [data], tmp_path / "work")
    assert entry["data"] == str(data)
    public, private = entry["fp32"]["PublicTest"], entry["fp32"]["PrivateTest"]
    assert set(private["recall"]) == set(LABELS)

    from training.data import load

    faces = load(data)
    with EmotionRecognizer(model, detector=None) as rec:
        for split, figures in (("PublicTest", public), ("PrivateTest", private)):
            s = faces[split]
            predicted = rec.predict(list(s.images)).argmax(1)
            assert figures["accuracy"] == pytest.approx(float((predicted == s.labels).mean()))
        extra = rec.info.extra
    assert extra["onnx_PublicTest_accuracy@other.csv"] == f"{public['accuracy']:.4f}"
    assert extra["onnx_PrivateTest_macro_f1@other.csv"] == f"{private['macro_f1']:.4f}"


def test_data_with_other_classes_is_refused(tiny_model: Path, tmp_path: Path) -> None:
    data = write_csv(tmp_path / "other.csv")
    with pytest.raises(ExportError, match="classes"):
        report_on_data({"fp32": tiny_model}, ("a", "b"), [data], tmp_path / "work")
