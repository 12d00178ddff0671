"""fer_onnx_factory.tune.rebuild: an exported fp32 network rebuilt as a trainable Keras model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import LABELS

pytest.importorskip("tf2onnx")
keras = pytest.importorskip("keras")

from fer_onnx.preprocessing import InputSpec  # noqa: E402
from fer_onnx_factory.errors import PipelineError  # noqa: E402
from fer_onnx_factory.export.onnx import export  # noqa: E402
from fer_onnx_factory.model.build import build_model, load_model, with_tta  # noqa: E402
from fer_onnx_factory.tune.rebuild import main, read_onnx, rebuild  # noqa: E402


def write_csv(path: Path, rng: np.random.Generator, counts: dict[str, int]) -> Path:
    lines = ["emotion,pixels,Usage"]
    for usage, n in counts.items():
        for i in range(n):
            pixels = " ".join(str(v) for v in rng.integers(0, 256, 48 * 48))
            lines.append(f"{i % len(LABELS)},{pixels},{usage}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, keras.Model]:
    """A small MobileNetV2 with non-trivial BatchNorm, exported with flip views, and its data."""
    keras.utils.set_random_seed(1)
    rng = np.random.default_rng(1)
    model, _ = build_model(
        spec=InputSpec(48, 48, "gray"),
        num_classes=len(LABELS),
        arch="mobilenetv2",
        alpha=0.35,
        image_size=32,
    )
    for layer in model.get_layer("mobilenetv2_0.35_32").layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 1.5, c).astype(np.float32))
            layer.beta.assign(rng.normal(0, 0.2, c).astype(np.float32))
            layer.moving_mean.assign(rng.normal(0, 0.5, c).astype(np.float32))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, c).astype(np.float32))
    dense = model.get_layer("probabilities")
    dense.bias.assign(rng.normal(0, 0.3, dense.bias.shape[0]).astype(np.float32))
    run = tmp_path_factory.mktemp("run")
    (run / "metrics.json").write_text(json.dumps({"labels": list(LABELS), "splits": {}}))
    (run / "config.json").write_text(
        json.dumps(
            {
                "args": {
                    "data": "x/fer2013.csv",
                    "arch": "mobilenetv2",
                    "alpha": 0.35,
                    "image_size": 32,
                    "weights": "none",
                },
                "command": "fer-onnx-factory train --tiny",
            }
        )
    )
    with_tta(model, "flip").save(run / "tta.keras")
    onnx_path = run / "fp32.onnx"
    export(run / "tta.keras", onnx_path, run_dir=run, extra={"tta": "flip"})
    data = write_csv(run / "faces.csv", rng, {"Training": 64, "PublicTest": 32, "PrivateTest": 8})
    return onnx_path, data, model


def test_rebuild_reproduces_the_network(
    source: tuple[Path, Path, keras.Model], tmp_path: Path
) -> None:
    onnx_path, data, original = source
    record = rebuild(onnx_path, data, tmp_path / "rebuilt")
    assert record["check"]["views"] == "flip"
    assert record["check"]["faces"] == 32
    assert record["check"]["agree"] == 32
    assert record["check"]["max_probability_gap"] < 1e-4
    assert json.loads((tmp_path / "rebuilt" / "from_onnx.json").read_text()) == record

    rebuilt = load_model(tmp_path / "rebuilt" / "best.keras")
    faces = np.random.default_rng(2).integers(0, 256, (16, 48, 48, 1)).astype(np.float32)
    ours = np.asarray(rebuilt.predict(faces, verbose=0))
    theirs = np.asarray(original.predict(faces, verbose=0))
    np.testing.assert_allclose(ours, theirs, atol=1e-4)
    # The moving statistics are the data's, not the identity the rebuild starts from, so
    # training mode (batch statistics) starts close to the inference function.
    bns = [
        layer
        for layer in rebuilt.get_layer("mobilenetv2_0.35_32").layers
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    assert all(np.abs(np.asarray(bn.moving_mean)).max() > 0 for bn in bns)
    # ... and they are the statistics of each layer's input over the Training faces: checked
    # on the first layer, whose input is the convolution of the faces themselves.
    from fer_onnx_factory.data.datasets import load

    train = load(data)["Training"].images.astype(np.float32)
    backbone = rebuilt.get_layer("mobilenetv2_0.35_32")
    front = keras.Model(rebuilt.input, rebuilt.get_layer("normalize").output)
    conv = keras.Model(backbone.input, backbone.get_layer("Conv1").output)
    z = np.asarray(conv(front(train)), np.float64).reshape(-1, bns[0].moving_mean.shape[0])
    np.testing.assert_allclose(bns[0].moving_mean, z.mean(0), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(bns[0].moving_variance, z.var(0), rtol=1e-3, atol=1e-4)
    train_mode = np.asarray(rebuilt(train[:32], training=True))
    inference = np.asarray(rebuilt(train[:32], training=False))
    assert np.abs(train_mode - inference).max() < 0.5


def test_a_rebuild_that_does_not_reproduce_the_file_writes_nothing(
    source: tuple[Path, Path, keras.Model], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    onnx_path, data, _ = source
    monkeypatch.setattr("fer_onnx_factory.tune.rebuild.MAX_PROBABILITY_GAP", -1.0)
    with pytest.raises(PipelineError, match="differs from"):
        rebuild(onnx_path, data, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".*partial"))


def test_refuses_a_folder_with_files(
    source: tuple[Path, Path, keras.Model], tmp_path: Path
) -> None:
    onnx_path, data, _ = source
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(PipelineError, match="already holds files"):
        rebuild(onnx_path, data, tmp_path)
    with pytest.raises(PipelineError, match="already holds files"):
        rebuild(onnx_path, data, tmp_path / "keep.txt")
    assert (tmp_path / "keep.txt").read_text() == "mine"
    with pytest.raises(PipelineError, match="--stat-faces must be at least 1"):
        rebuild(onnx_path, data, tmp_path / "new", stat_faces=0)
    assert not (tmp_path / "new").exists()


def test_refuses_a_file_it_cannot_rebuild(
    source: tuple[Path, Path, keras.Model], tiny_model: Path, tmp_path: Path
) -> None:
    _, data, _ = source
    # The conftest model is one dense layer with no record of how it was built.
    with pytest.raises(PipelineError, match="lacks architecture"):
        rebuild(tiny_model, data, tmp_path / "a")
    not_onnx = tmp_path / "x.onnx"
    not_onnx.write_bytes(b"not a model")
    with pytest.raises(PipelineError, match="cannot read it as ONNX"):
        read_onnx(not_onnx)
    assert not (tmp_path / "a").exists()


def test_refuses_data_of_another_format(
    source: tuple[Path, Path, keras.Model], tmp_path: Path
) -> None:
    onnx_path, _, _ = source
    other = tmp_path / "other.csv"
    other.write_text("emotion,pixels,Usage\n0," + " ".join(["0"] * 36 * 36) + ",Training\n")
    code = main(["--onnx", str(onnx_path), "--data", str(other), "--out", str(tmp_path / "o")])
    assert code == 2
    assert not (tmp_path / "o").exists()


def graph_file(tmp_path: Path, nodes: list[object], consts: dict[str, np.ndarray]) -> Path:
    """An ONNX file of ``nodes`` (only read, never run) with ``consts`` as its initializers."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        nodes,  # type: ignore[arg-type]
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in consts.items()],
    )
    path = tmp_path / "g.onnx"
    onnx.save(helper.make_model(graph), str(path))
    return path


def test_reads_each_form_of_convolution_and_dense_layer(tmp_path: Path) -> None:
    """A regular convolution with its own bias, a depthwise one with a Mul + Add after it (a
    Constant node's value counts as a constant), a Gemm with transB, and the file's metadata."""
    import onnx
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(0)
    c = {
        "k1": rng.normal(size=(4, 1, 3, 3)),
        "b1": rng.normal(size=4),
        "k2": rng.normal(size=(4, 1, 3, 3)),
        "s2": rng.normal(size=(1, 4, 1, 1)),
        "w": rng.normal(size=(7, 4)),
        "b": rng.normal(size=7),
    }
    t2 = rng.normal(size=(1, 4, 1, 1)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "k1", "b1"], ["c1"], name="regular"),
        helper.make_node("Conv", ["c1", "k2"], ["c2"], name="depthwise", group=4),
        helper.make_node("Mul", ["c2", "s2"], ["m2"]),
        helper.make_node("Constant", [], ["t2"], value=numpy_helper.from_array(t2)),
        helper.make_node("Add", ["m2", "t2"], ["a2"]),
        helper.make_node("Gemm", ["a2", "w", "b"], ["y"], name="dense", transB=1),
    ]
    path = graph_file(tmp_path, nodes, c)
    model = onnx.load(str(path))
    helper.set_model_props(model, {"architecture": "mobilenet"})
    onnx.save(model, str(path))
    net = read_onnx(path)
    regular, depthwise = net.convs
    assert (regular.name, regular.depthwise, depthwise.depthwise) == ("regular", False, True)
    np.testing.assert_array_equal(regular.scale, np.ones(4, np.float32))
    np.testing.assert_allclose(regular.shift, c["b1"], rtol=1e-6)
    np.testing.assert_allclose(depthwise.scale, c["s2"].reshape(4), rtol=1e-6)
    np.testing.assert_allclose(depthwise.shift, t2.reshape(4), rtol=1e-6)
    np.testing.assert_allclose(net.dense_kernel, c["w"].T, rtol=1e-6)
    np.testing.assert_allclose(net.dense_bias, c["b"], rtol=1e-6)
    assert net.metadata == {"architecture": "mobilenet"}


def test_a_matmul_without_an_add_has_a_zero_bias(tmp_path: Path) -> None:
    from onnx import helper

    w = np.ones((4, 7))
    net = read_onnx(graph_file(tmp_path, [helper.make_node("MatMul", ["x", "w"], ["y"])], {"w": w}))
    assert net.convs == []
    np.testing.assert_array_equal(net.dense_kernel, w)
    np.testing.assert_array_equal(net.dense_bias, np.zeros(7, np.float32))


@pytest.mark.parametrize(
    ("nodes", "consts", "error"),
    [
        ([("Conv", ["x", "x"], {})], {}, "convolution n0 has no constant kernel"),
        (
            [("Conv", ["x", "k"], {"group": 2})],
            {"k": np.ones((4, 2, 3, 3))},
            r"grouped convolution n0 \(group 2\) is neither regular nor depthwise",
        ),
        (
            [("Conv", ["x", "k"], {}), ("Mul", ["o0", "s"], {})],
            {"k": np.ones((4, 4, 3, 3)), "s": np.ones(4)},
            "convolution n0 has neither a bias nor a per-channel scale and shift",
        ),
        (
            [("Conv", ["x", "k"], {}), ("Mul", ["o0", "s"], {}), ("Add", ["o1", "t"], {})],
            {"k": np.ones((4, 4, 3, 3)), "s": np.ones(4), "t": np.ones(3)},
            "convolution n0 has neither a bias nor",
        ),
        ([("MatMul", ["x", "x"], {})], {}, "n0 has no constant weight"),
        ([("Gemm", ["x", "w"], {})], {"w": np.ones((4, 7))}, "n0 has no constant bias"),
        ([], {}, r"expected one dense layer \(MatMul \+ bias\) before the softmax, found 0"),
        (
            [("MatMul", ["x", "w"], {}), ("MatMul", ["o0", "w"], {})],
            {"w": np.ones((4, 4))},
            "found 2; only networks without hidden dense layers",
        ),
    ],
)
def test_refuses_a_graph_of_another_shape(
    tmp_path: Path,
    nodes: list[tuple[str, list[str], dict[str, int]]],
    consts: dict[str, np.ndarray],
    error: str,
) -> None:
    """Node ``i`` is named ``n<i>`` and writes ``o<i>``."""
    from onnx import helper

    made = [
        helper.make_node(op, inputs, [f"o{i}"], name=f"n{i}", **attrs)
        for i, (op, inputs, attrs) in enumerate(nodes)
    ]
    with pytest.raises(PipelineError, match=error):
        read_onnx(graph_file(tmp_path, made, consts))
