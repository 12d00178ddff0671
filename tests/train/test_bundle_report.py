"""fer-onnx-factory bundle --report-on: the bundled files measured on other framings of faces."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import LABELS

from fer_onnx import EmotionRecognizer
from fer_onnx_factory.export.bundle import load_report_data, report_on_data
from fer_onnx_factory.export.onnx import ExportError


def write_csv(path: Path) -> Path:
    rng = np.random.default_rng(0)
    lines = ["emotion,pixels,Usage"]
    for n, usage in enumerate(("Training", "PublicTest", "PrivateTest"), start=1):
        for i in range(7 * n):
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
    reports = load_report_data([data], LABELS)
    [entry] = report_on_data({"fp32": model}, reports, tmp_path / "work")
    assert entry["data"] == str(data)
    public, private = entry["fp32"]["PublicTest"], entry["fp32"]["PrivateTest"]
    assert set(private["recall"]) == set(LABELS)

    faces = reports[0][1]
    with EmotionRecognizer(model, detector=None) as rec:
        for split, figures in (("PublicTest", public), ("PrivateTest", private)):
            s = faces[split]
            predicted = rec.predict(list(s.images)).argmax(1)
            assert figures["accuracy"] == pytest.approx(float((predicted == s.labels).mean()))
        extra = rec.info.extra
    assert extra["onnx_PublicTest_accuracy@other.csv"] == f"{public['accuracy']:.4f}"
    assert extra["onnx_PrivateTest_macro_f1@other.csv"] == f"{private['macro_f1']:.4f}"


def test_report_data_is_checked_before_anything_is_exported(tmp_path: Path) -> None:
    data = write_csv(tmp_path / "other.csv")
    with pytest.raises(ExportError, match="classes"):
        load_report_data([data], ("a", "b"))
    (tmp_path / "b").mkdir()
    twin = shutil.copyfile(data, tmp_path / "b" / "other.csv")
    with pytest.raises(ExportError, match="share a name"):
        load_report_data([data, twin], LABELS)
    with pytest.raises(ExportError, match=r"--report-on .*missing.csv"):
        load_report_data([tmp_path / "missing.csv"], LABELS)


def test_int8_calibration_draws_from_every_face_the_run_trained_on(tmp_path: Path) -> None:
    """A run with --extra photos is calibrated on them too, as often as it trained on them."""
    from fer_onnx_factory.data.align import save
    from fer_onnx_factory.data.datasets import load
    from fer_onnx_factory.export.bundle import training_faces
    from fer_onnx_factory.train.config import TrainConfig

    data = load(write_csv(tmp_path / "fer.csv"))
    extra = tmp_path / "extra.npz"
    save(load(write_csv(tmp_path / "more.csv")), extra)
    plain, with_extra = tmp_path / "plain", tmp_path / "extra"
    for run, options in ((plain, {}), (with_extra, {"extra": (extra,), "extra_repeat": 2})):
        run.mkdir()
        TrainConfig(data=tmp_path / "fer.csv", out=run, weights="none", **options).write(
            run, "train", {}
        )
    assert np.array_equal(training_faces(plain, data), data["Training"].images)
    assert np.array_equal(training_faces(tmp_path / "no-record", data), data["Training"].images)
    pool = training_faces(with_extra, data)
    more = load(extra)["Training"].images
    assert np.array_equal(pool, np.concatenate([data["Training"].images, more, more]))


def test_the_model_names_the_extra_datasets_it_learnt_from(tmp_path: Path) -> None:
    import json

    from fer_onnx_factory.export.onnx import run_metadata

    record = {"args": {"data": "runs/fer2013-both.npz", "extra": ["runs/sfew2-both.npz"]}}
    (tmp_path / "config.json").write_text(json.dumps(record))
    meta = run_metadata(tmp_path)
    assert meta["dataset"] == "fer2013-both.npz"
    assert meta["extra_datasets"] == "sfew2-both.npz"
    (tmp_path / "config.json").write_text(json.dumps({"args": {"data": "fer.csv"}}))
    assert "extra_datasets" not in run_metadata(tmp_path)
