"""One writer of ONNX metadata (``fer_onnx.model_tools.write_metadata``) and its callers."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from conftest import LABELS, build_tiny_model

from fer_onnx import model_tools
from fer_onnx.errors import InvalidTypeError
from fer_onnx.metadata import KEY_OUTPUT, ModelInfo
from fer_onnx.model_tools import KEY_STAMP, stamp_model, write_metadata

onnx = pytest.importorskip("onnx")


def keys(path: Path) -> list[str]:
    return [p.key for p in onnx.load(str(path)).metadata_props]


def spy(monkeypatch: pytest.MonkeyPatch, module: ModuleType) -> list[dict[str, str]]:
    """Record every call of ``module.write_metadata`` (still writing)."""
    calls: list[dict[str, str]] = []

    def recording(proto: Any, props: Mapping[str, str]) -> None:
        calls.append(dict(props))
        write_metadata(proto, props)

    monkeypatch.setattr(module, "write_metadata", recording)
    return calls


def test_the_writer_replaces_every_entry_in_sorted_order(tmp_path: Path) -> None:
    model = onnx.load(str(build_tiny_model(tmp_path / "m.onnx")))
    write_metadata(model, {"zeta": "1", "alpha": "2", "fer_onnx.labels": "[]"})
    assert [(p.key, p.value) for p in model.metadata_props] == [
        ("alpha", "2"),
        ("fer_onnx.labels", "[]"),
        ("zeta", "1"),
    ]
    write_metadata(model, {})
    assert list(model.metadata_props) == []


@pytest.mark.parametrize("props", [{"a": 1}, {"a": None}, {2: "b"}])
def test_the_writer_takes_strings_only(tmp_path: Path, props: dict[Any, Any]) -> None:
    model = onnx.load(str(build_tiny_model(tmp_path / "m.onnx")))
    with pytest.raises(InvalidTypeError, match="must be strings"):
        write_metadata(model, props)
    assert [p.key for p in model.metadata_props]  # left as it was


def test_stamp_model_goes_through_the_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = build_tiny_model(tmp_path / "foreign.onnx", metadata={"zz": "kept", "author": "x"})
    calls = spy(monkeypatch, model_tools)
    report = stamp_model(
        src,
        tmp_path / "stamped.onnx",
        labels=LABELS,
        input_size=(48, 48),
        color="gray",
        value_range=(0, 255),
    )
    assert len(calls) == 1
    assert calls[0] == report.metadata
    assert report.metadata[KEY_OUTPUT] == "probabilities"
    assert KEY_STAMP in report.metadata
    assert report.metadata["zz"] == "kept"
    assert keys(tmp_path / "stamped.onnx") == sorted(report.metadata)


def test_template_stamping_goes_through_the_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fer_onnx_factory.data.framing import FER2013_TEMPLATE, load_template
    from fer_onnx_factory.export import template as template_module

    path = build_tiny_model(tmp_path / "m.onnx")
    before = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    calls = spy(monkeypatch, template_module)
    crop = load_template(FER2013_TEMPLATE)
    template_module.stamp(path, crop)
    assert calls == [{**before, "fer_onnx.crop_template": crop.to_json()}]
    assert keys(path) == sorted(calls[0])
    info = ModelInfo.from_metadata({p.key: p.value for p in onnx.load(str(path)).metadata_props})
    assert info.template == crop


def test_accuracy_metadata_and_the_prior_go_through_the_writer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fer_onnx_factory.export.bundle import add_accuracy_metadata
    from fer_onnx_factory.tune.prior import bake

    path = build_tiny_model(tmp_path / "m.onnx")
    calls = spy(monkeypatch, model_tools)  # both import the writer when they run
    add_accuracy_metadata(path, {"splits": {"PublicTest": {"accuracy": 0.5, "macro_f1": 0.4}}})
    assert calls[-1]["onnx_PublicTest_accuracy"] == "0.5000"
    assert keys(path) == sorted(calls[-1])
    bake(path, tmp_path / "prior.onnx", np.ones(len(LABELS)), {"class_weights": "[1]"})
    assert len(calls) == 2
    assert calls[-1]["class_weights"] == "[1]"
    assert keys(tmp_path / "prior.onnx") == sorted(calls[-1])
