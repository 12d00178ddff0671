"""Export on a tiny Keras model built here: metadata, parity, determinism, int8, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import FER_CSV, LABELS

pytest.importorskip("tf2onnx")
keras = pytest.importorskip("keras")

from fer_onnx import EmotionRecognizer  # noqa: E402
from fer_onnx_factory.export.onnx import ExportError, export  # noqa: E402
from fer_onnx_factory.export.onnx import main as export_main  # noqa: E402
from fer_onnx_factory.export.parity import compare, keras_onnx_parity  # noqa: E402
from fer_onnx_factory.export.quantize import quantize  # noqa: E402


@pytest.fixture(scope="module")
def faces() -> np.ndarray:
    """512 real FER2013 faces when the data is present, else random faces."""
    if FER_CSV.exists():
        from fer_onnx_factory.data.datasets import load_fer2013_csv

        return load_fer2013_csv(FER_CSV, splits=("PublicTest",))["PublicTest"].images[:512]
    return np.random.default_rng(0).integers(0, 256, (512, 48, 48, 1), dtype=np.uint8)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((48, 48, 1), name="faces")
    x = keras.layers.Resizing(32, 32)(inputs)
    x = keras.layers.Concatenate()([x, x, x])
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(x)
    x = keras.layers.Conv2D(8, 3, strides=2)(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU(6.0)(x)
    x = keras.layers.DepthwiseConv2D(3)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(len(LABELS), activation="softmax", name="probabilities")(x)
    model = keras.Model(inputs, outputs)
    run = tmp_path_factory.mktemp("run")
    model.save(run / "best.keras")
    (run / "metrics.json").write_text(
        json.dumps(
            {
                "labels": list(LABELS),
                "splits": {"PublicTest": {"accuracy": 0.5}, "PrivateTest": {"accuracy": 0.25}},
                "wall_time_s": 12.5,
            }
        )
    )
    (run / "config.json").write_text(
        json.dumps(
            {
                "args": {
                    "data": "x/fer2013.csv.gz",
                    "arch": "tiny",
                    "alpha": 1.0,
                    "image_size": 32,
                    "weights": "none",
                },
                "command": "fer-onnx-factory train --tiny",
                "versions": {"tensorflow": "2.x", "keras": "3.x"},
            }
        )
    )
    return run


@pytest.fixture(scope="module")
def exported(run_dir: Path) -> Path:
    out = run_dir / "fp32.onnx"
    export(run_dir / "best.keras", out)
    return out


def test_metadata_and_io_names(exported: Path) -> None:
    import onnx

    proto = onnx.load(str(exported))
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props["fer_onnx.labels"]) == list(LABELS)
    assert json.loads(props["fer_onnx.input_size"]) == [48, 48]
    assert props["fer_onnx.color_mode"] == "gray"
    assert json.loads(props["fer_onnx.value_range"]) == [0.0, 255.0]
    assert props["keras_PrivateTest_accuracy"] == "0.2500"
    assert props["training_command"] == "fer-onnx-factory train --tiny"
    for key in ("tf2onnx_version", "tensorflow_version", "keras_version", "dataset", "opset"):
        assert props[key]
    assert [i.name for i in proto.graph.input] == ["faces"]
    assert [o.name for o in proto.graph.output] == ["probabilities"]
    batch = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert not batch.HasField("dim_value")  # dynamic batch
    assert proto.opset_import[0].version == 17


def test_parity_with_keras(run_dir: Path, exported: Path, faces: np.ndarray) -> None:
    result = keras_onnx_parity(run_dir / "best.keras", exported, faces)
    assert result["n"] == 512
    assert result["max_abs_diff"] <= 1e-4
    assert result["argmax_mismatches"] == 0
    assert result["passed"]


def test_compare_detects_disagreement() -> None:
    a = np.array([[0.6, 0.4], [0.3, 0.7]], np.float32)
    assert compare(a, a)["passed"]
    b = np.array([[0.4, 0.6], [0.3, 0.7]], np.float32)
    result = compare(a, b)
    assert not result["passed"]
    assert result["argmax_mismatches"] == 1
    assert not compare(a, a + 2e-4)["passed"]


def test_export_is_byte_identical(run_dir: Path, exported: Path, tmp_path: Path) -> None:
    again = tmp_path / "again.onnx"
    export(run_dir / "best.keras", again)
    assert again.read_bytes() == exported.read_bytes()


def test_export_writes_the_run_contract_plus_provenance(
    run_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file's metadata parses to the run's contract with provenance extras, written by the
    one metadata writer; a contract.json of the old format exports the same bytes."""
    import dataclasses
    import shutil

    import onnx
    import tf2onnx

    from fer_onnx.metadata import ModelInfo
    from fer_onnx.model_tools import write_metadata
    from fer_onnx.preprocessing import InputSpec
    from fer_onnx_factory.data.framing import FER2013_TEMPLATE, load_template
    from fer_onnx_factory.export import onnx as export_module
    from fer_onnx_factory.export.onnx import run_metadata
    from fer_onnx_factory.train.config import write_contract

    run = tmp_path / "run"
    run.mkdir()
    for name in ("best.keras", "metrics.json", "config.json"):
        shutil.copy(run_dir / name, run / name)
    template = load_template(FER2013_TEMPLATE)
    contract = ModelInfo(LABELS, InputSpec(48, 48, "gray"), (0.0, 1.0), {}, template)
    write_contract(run, contract)
    written: list[dict[str, str]] = []

    def recording(proto: object, props: dict[str, str]) -> None:
        written.append(dict(props))
        write_metadata(proto, props)

    monkeypatch.setattr(export_module, "write_metadata", recording)
    info = export(run / "best.keras", tmp_path / "new.onnx")
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "new.onnx")).metadata_props}
    assert written == [props]
    assert list(props) == sorted(props)
    parsed = ModelInfo.from_metadata(props)
    assert parsed == info
    assert dataclasses.replace(parsed, extra={}) == contract
    assert parsed.extra == {
        **run_metadata(run),
        "tf2onnx_version": tf2onnx.__version__,
        "opset": "17",
        "precision": "fp32",
    }
    old = {
        "labels": list(LABELS),
        "input_size": [48, 48],
        "color": "gray",
        "value_range": [0.0, 1.0],
        "output": "probabilities",
        "template": json.loads(template.to_json()),
    }
    (run / "contract.json").write_text(json.dumps(old, indent=2))
    export(run / "best.keras", tmp_path / "old.onnx")
    assert (tmp_path / "old.onnx").read_bytes() == (tmp_path / "new.onnx").read_bytes()
    export(run / "best.keras", tmp_path / "plain.onnx", contract_template=False)
    plain = {p.key: p.value for p in onnx.load(str(tmp_path / "plain.onnx")).metadata_props}
    assert ModelInfo.from_metadata(plain).template is None
    (run / "contract.json").write_text(json.dumps({**old, "input_size": [64, 64]}))
    with pytest.raises(ExportError, match="differs from the run's contract"):
        export(run / "best.keras", tmp_path / "x.onnx")


def test_library_loads_export(exported: Path, faces: np.ndarray) -> None:
    with EmotionRecognizer(exported, detector=None) as rec:
        assert rec.labels == LABELS
        results = rec.classify(list(faces[:4]))
        assert len(results) == 4
        assert all(r.label in LABELS for r in results)


def test_int8_quantization(exported: Path, faces: np.ndarray, tmp_path: Path) -> None:
    import onnx

    out = tmp_path / "int8.onnx"
    quantize(exported, out, faces[:64])
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert props["precision"] == "int8"
    assert "QDQ" in props["quantization"]
    assert json.loads(props["fer_onnx.labels"]) == list(LABELS)
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    with (
        EmotionRecognizer(out, detector=None) as q,
        EmotionRecognizer(exported, detector=None) as f,
    ):
        diff = np.abs(q.predict(list(faces[:64])) - f.predict(list(faces[:64]))).max()
    assert diff < 0.1


def test_percentile_calibration_is_recorded_and_stays_close(
    exported: Path, faces: np.ndarray, tmp_path: Path
) -> None:
    import onnx

    from fer_onnx_factory.export.quantize import fidelity

    out = tmp_path / "int8.onnx"
    # 61 faces: a prime count, so the calibration batches are of one face each
    quantize(exported, out, faces[:61], method="percentile", percentile=99.9)
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert "Percentile 99.9 calibration on 61 training faces" in props["quantization"]
    same = fidelity(exported, exported, faces[64:96])
    assert same == {"faces": 32, "argmax_agreement": 1.0, "mean_l1": 0.0}
    with pytest.raises(ValueError, match="at least one face"):
        fidelity(exported, out, faces[:0])
    close = fidelity(exported, out, faces[64:96])
    assert close["faces"] == 32
    assert 0 < close["mean_l1"] < 0.2
    for bad, match in (
        ({"method": "entropy"}, "minmax, percentile"),
        ({"percentile": 0.0}, "0, 100"),
        ({"percentile": float("nan")}, "0, 100"),
    ):
        with pytest.raises(ValueError, match=match):
            quantize(exported, tmp_path / "bad.onnx", faces[:8], **bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one face"):
        quantize(exported, tmp_path / "bad.onnx", faces[:0])
    assert not (tmp_path / "bad.onnx").exists()


def test_quantize_command_takes_the_calibration_method(
    exported: Path, fer_small: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import onnx

    from fer_onnx_factory.export.quantize import main as quantize_main

    out = tmp_path / "int8.onnx"
    args = ["--onnx", str(exported), "--out", str(out), "--data", str(fer_small)]
    assert quantize_main([*args, "--calibration", "40", "--method", "percentile"]) == 0
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert "Percentile 99.99 calibration on 40 training faces" in props["quantization"]
    capsys.readouterr()
    bad = tmp_path / "bad.onnx"
    assert (
        quantize_main(
            [
                *args[:2],
                "--out",
                str(bad),
                *args[4:],
                "--percentile",
                "120",
                "--method",
                "percentile",
            ]
        )
        == 2
    )
    assert "percentile must be within (0, 100], got 120" in capsys.readouterr().err
    assert not bad.exists()


def test_bundle_refuses_bad_int8_settings_before_any_export(
    fer_small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fer_onnx_factory.export import bundle as bundle_module

    def no_export(*args: object, **kwargs: object) -> None:
        raise AssertionError("exported before the settings were checked")

    monkeypatch.setattr(bundle_module, "export", no_export)
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.keras").write_bytes(b"")  # never read: the settings fail first
    dest = tmp_path / "dest"
    cases = (
        ({"int8_calibration": "percentile", "percentile": 120.0}, r"within \(0, 100\], got 120"),
        ({"int8_calibration": "entropy"}, "one of minmax, percentile"),
        ({"calibration": 0}, "--calibration: calibration size must be within 1..300, got 0"),
        ({"calibration": 301}, "within 1..300, got 301"),
    )
    for settings, match in cases:
        with pytest.raises(ExportError, match=match):
            bundle_module.bundle(
                run, fer_small, dest, tta="none", card=tmp_path / "c.md", **settings
            )  # type: ignore[arg-type]
    assert not dest.exists()
    assert not (tmp_path / "c.md").exists()


def test_bundle_command_passes_the_int8_settings_on(monkeypatch: pytest.MonkeyPatch) -> None:
    from fer_onnx_factory.export import bundle as bundle_module

    seen: dict[str, object] = {}

    def fake(*args: object) -> dict[str, object]:
        names = (
            "run",
            "data",
            "dest",
            "calibration",
            "tta",
            "max_views",
            "template",
            "no_template",
            "card",
            "report_on",
            "int8_calibration",
            "percentile",
        )
        seen.update(zip(names, args, strict=True))
        return {}

    monkeypatch.setattr(bundle_module, "bundle", fake)
    argv = ["--run", "r", "--data", "d.npz", "--calibration", "200"]
    assert (
        bundle_module.main([*argv, "--int8-calibration", "percentile", "--percentile", "99.9"]) == 0
    )
    assert (seen["calibration"], seen["int8_calibration"], seen["percentile"]) == (
        200,
        "percentile",
        99.9,
    )
    assert bundle_module.main(argv) == 0
    assert (seen["int8_calibration"], seen["percentile"]) == ("minmax", 99.99)


def test_calibration_batches_are_of_one_size() -> None:
    from fer_onnx_factory.export.quantize import _batch_size

    assert [_batch_size(n) for n in (300, 64, 61, 7, 1)] == [30, 32, 1, 7, 1]


def test_int8_is_compared_with_fp32_on_faces_it_was_not_calibrated_on() -> None:
    from fer_onnx_factory.export.bundle import split_pool
    from fer_onnx_factory.export.quantize import calibration_faces

    pool = np.arange(5000)[:, None, None, None]
    faces, others = split_pool(pool, 300)
    assert (len(faces), len(others)) == (300, 2000)
    assert not set(faces.ravel()) & set(others.ravel())
    assert np.array_equal(faces, calibration_faces(pool, 300))  # the draw of earlier bundles
    again = split_pool(pool, 300)
    assert np.array_equal(faces, again[0])
    assert np.array_equal(others, again[1])
    faces, others = split_pool(pool[:400], 300)  # a small pool: every other face
    assert sorted([*faces.ravel(), *others.ravel()]) == list(range(400))
    assert len(split_pool(pool[:300], 300)[1]) == 0  # none left: bundle reports no fidelity


def test_missing_or_wrong_inputs_are_clear(
    tmp_path: Path, run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(ExportError, match="not found"):
        export(tmp_path / "none.keras", tmp_path / "x.onnx")
    bogus = tmp_path / "bogus.keras"
    bogus.write_text("not a model")
    with pytest.raises(ExportError, match="cannot load"):
        export(bogus, tmp_path / "x.onnx", labels=LABELS)
    with pytest.raises(ExportError, match="labels"):
        export(run_dir / "best.keras", tmp_path / "x.onnx", labels=("a", "b"))
    assert not (tmp_path / "x.onnx").exists()  # nothing half-written
    assert (
        export_main(["--keras", str(tmp_path / "none.keras"), "--out", str(tmp_path / "y.onnx")])
        == 2
    )
    assert "not found" in capsys.readouterr().err
