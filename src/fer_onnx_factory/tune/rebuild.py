"""Rebuild a trainable Keras network from an exported fp32 ONNX classifier.

The shipped network's Keras weights were not kept; its fp32 ONNX export was. In that file every
convolution carries its BatchNormalization folded in (the regular convolutions as a bias, the
depthwise ones as a per-channel scale and shift after them), so the network cannot be loaded
back as it was, but it can be rebuilt exactly:

1. the network is built as ``fer_onnx_factory.train.run`` builds it (architecture, width,
   working size and input format read from the file's metadata);
2. each convolution gets its ONNX kernel, and each BatchNormalization the affine map the file
   applies after it (``z -> s * z + t``), with moving statistics 0 and 1;
3. the moving statistics are then set to the mean and variance of each BatchNormalization's
   input over clean Training faces, and ``gamma`` / ``beta`` rescaled so that the inference
   function is unchanged (``gamma = s * sqrt(var + eps)``, ``beta = t + s * mean``). Training
   mode then normalises with batch statistics that are close to the moving ones, so the
   network can be fine-tuned (``fer-onnx-factory train --init OUT/best.keras``) from where it was;
4. the rebuilt network with the file's own test-time views is checked against the ONNX file
   on PublicTest faces (largest probability difference and agreement of the predictions).

Usage::

    fer-onnx-factory rebuild --onnx src/fer_onnx/models/fp32.onnx \\
        --data ../shared/data/fer2013/fer2013.csv.gz --out runs/ship64k

``OUT`` is a folder holding ``best.keras`` and ``from_onnx.json`` (the source file's SHA-256
and metadata, and the check's figures).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shlex
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fer_onnx_factory.cli import command
from fer_onnx_factory.errors import PipelineError

log = logging.getLogger("fer_onnx_factory.tune.rebuild")

MAX_PROBABILITY_GAP = 1e-3
"""The rebuilt network with its views may differ from the ONNX file by at most this much in any
probability (float32 rounding in a different order of operations stays near 1e-5)."""


@dataclass(frozen=True)
class ConvParams:
    """One convolution of the ONNX file and the affine map that follows it.

    Attributes:
        name: The ONNX node's name (for messages).
        kernel: ``(O, I/groups, kh, kw)`` ONNX kernel.
        depthwise: Whether the convolution is depthwise (``group`` == input channels).
        scale: Per-channel ``s`` of the folded BatchNormalization (ones where folded into the
            kernel).
        shift: Per-channel ``t`` (the folded bias).
    """

    name: str
    kernel: np.ndarray
    depthwise: bool
    scale: np.ndarray
    shift: np.ndarray


@dataclass(frozen=True)
class OnnxNetwork:
    """What the rebuild needs from an ONNX classifier."""

    convs: list[ConvParams]
    dense_kernel: np.ndarray
    dense_bias: np.ndarray
    metadata: dict[str, str]


def read_onnx(path: Path) -> OnnxNetwork:
    """Read the convolutions, the final dense layer and the metadata of ``path``.

    Raises:
        PipelineError: The file is unreadable or not a single-network classifier of the shape
            ``fer_onnx_factory.train.run`` builds (convolutions, one MatMul + bias before the
            softmax).
    """
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(path))
    except (OSError, ValueError, DecodeError) as e:
        raise PipelineError(f"--onnx {path}: cannot read it as ONNX: {e}") from e
    graph = _Graph.of(model.graph)
    convs: list[ConvParams] = []
    matmuls: list[tuple[np.ndarray, np.ndarray]] = []
    for node in model.graph.node:
        if node.op_type == "Conv":
            convs.append(_read_conv(path, node, graph))
        elif node.op_type in ("MatMul", "Gemm"):
            matmuls.append(_read_dense(path, node, graph))
    if len(matmuls) != 1:
        raise PipelineError(
            f"--onnx {path}: expected one dense layer (MatMul + bias) before the softmax, found "
            f"{len(matmuls)}; only networks without hidden dense layers (--dense) can be rebuilt"
        )
    metadata = {p.key: p.value for p in model.metadata_props}
    return OnnxNetwork(convs, matmuls[0][0], matmuls[0][1], metadata)


@dataclass(frozen=True)
class _Graph:
    """An ONNX graph's constant tensors and, for each tensor, the nodes that read it."""

    consts: dict[str, np.ndarray]
    consumers: dict[str, list[Any]]

    @classmethod
    def of(cls, graph: Any) -> _Graph:
        """Index ``graph``: its initializers and ``Constant`` nodes' values, and its edges."""
        from onnx import numpy_helper

        consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        for node in graph.node:
            if node.op_type == "Constant":
                for attr in node.attribute:
                    if attr.name == "value":
                        consts[node.output[0]] = numpy_helper.to_array(attr.t)
        consumers: dict[str, list[Any]] = {}
        for node in graph.node:
            for name in node.input:
                consumers.setdefault(name, []).append(node)
        return cls(consts, consumers)

    def only_consumer(self, tensor: str, op: str) -> Any | None:
        """The node that reads ``tensor``, if it is the only one and an ``op`` node."""
        users = self.consumers.get(tensor, [])
        if len(users) == 1 and users[0].op_type == op:
            return users[0]
        return None

    def const_operand(self, node: Any) -> np.ndarray | None:
        """The constant input of ``node``, if exactly one of its inputs is a constant."""
        found = [self.consts[name] for name in node.input if name in self.consts]
        return found[0] if len(found) == 1 else None


def _read_conv(path: Path, node: Any, graph: _Graph) -> ConvParams:
    """One ``Conv`` node: its kernel, whether it is depthwise, and the affine map after it.

    A convolution is regular (``group`` 1) or depthwise (one group per output channel, one
    input channel each); any other grouping is not a layer ``fer_onnx_factory.train.run`` builds.

    Raises:
        PipelineError: The kernel is not a constant, the grouping is neither, or there is no
            affine map (see :func:`_affine_after`).
    """
    if node.input[1] not in graph.consts:
        raise PipelineError(f"--onnx {path}: convolution {node.name} has no constant kernel")
    kernel = graph.consts[node.input[1]].astype(np.float32)
    group = next((a.i for a in node.attribute if a.name == "group"), 1)
    out_ch = kernel.shape[0]
    depthwise = group > 1 and group == out_ch and kernel.shape[1] == 1
    if group > 1 and not depthwise:
        raise PipelineError(
            f"--onnx {path}: grouped convolution {node.name} (group {group}) is neither "
            "regular nor depthwise"
        )
    scale, shift = _affine_after(path, node, graph, out_ch)
    return ConvParams(node.name, kernel, depthwise, scale, shift)


def _affine_after(
    path: Path, node: Any, graph: _Graph, out_ch: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(scale, shift)`` per output channel: the folded BatchNormalization of a ``Conv`` node.

    A constant bias of the convolution itself is the shift, with scale 1 (the BatchNorm was
    folded into the kernel); otherwise the convolution's only reader must be a ``Mul`` by a
    per-channel constant whose only reader is an ``Add`` of one (the depthwise case).

    Raises:
        PipelineError: Neither form is there, or its constants are not one per channel.
    """
    if len(node.input) > 2 and node.input[2] in graph.consts:
        shift = graph.consts[node.input[2]].astype(np.float32).reshape(out_ch)
        return np.ones(out_ch, np.float32), shift
    mul = graph.only_consumer(node.output[0], "Mul")
    add = graph.only_consumer(mul.output[0], "Add") if mul is not None else None
    s = graph.const_operand(mul) if mul is not None else None
    t = graph.const_operand(add) if add is not None else None
    if s is None or t is None or s.size != out_ch or t.size != out_ch:
        raise PipelineError(
            f"--onnx {path}: convolution {node.name} has neither a bias nor a "
            "per-channel scale and shift after it (a folded BatchNormalization)"
        )
    return s.astype(np.float32).reshape(out_ch), t.astype(np.float32).reshape(out_ch)


def _read_dense(path: Path, node: Any, graph: _Graph) -> tuple[np.ndarray, np.ndarray]:
    """``(weight, bias)`` of a dense layer: a ``Gemm``, or a ``MatMul`` and the ``Add`` after it.

    The weight is returned as ``(inputs, outputs)`` (a ``Gemm``'s ``transB`` undone). A
    ``Gemm`` must carry a constant bias; a ``MatMul`` without an ``Add`` of a constant after it
    gets a zero bias, since the converter folds an all-zero bias away (the check against the
    file catches any other missing term).

    Raises:
        PipelineError: The weight is not a constant, or a ``Gemm`` has no constant bias.
    """
    if node.input[1] not in graph.consts:
        raise PipelineError(f"--onnx {path}: {node.name} has no constant weight")
    weight = graph.consts[node.input[1]].astype(np.float32)
    if node.op_type == "Gemm":
        if any(a.name == "transB" and a.i for a in node.attribute):
            weight = weight.T
        if len(node.input) < 3 or node.input[2] not in graph.consts:
            raise PipelineError(f"--onnx {path}: {node.name} has no constant bias")
        bias = graph.consts[node.input[2]]
    else:
        add = graph.only_consumer(node.output[0], "Add")
        found = graph.const_operand(add) if add is not None else None
        bias = np.zeros(weight.shape[1], np.float32) if found is None else found
    return weight, bias.astype(np.float32).reshape(-1)


def conv_bn_pairs(backbone: Any) -> list[tuple[Any, Any]]:
    """The backbone's convolutions, each with the BatchNormalization that follows it, in order.

    Raises:
        PipelineError: A convolution is not followed by a BatchNormalization.
    """
    import keras

    pairs: list[tuple[Any, Any]] = []
    pending: Any | None = None
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.Conv2D | keras.layers.DepthwiseConv2D):
            if pending is not None:
                raise PipelineError(f"{pending.name} is not followed by a BatchNormalization")
            pending = layer
        elif isinstance(layer, keras.layers.BatchNormalization):
            if pending is None:
                raise PipelineError(f"{layer.name} does not follow a convolution")
            pairs.append((pending, layer))
            pending = None
    if pending is not None:
        raise PipelineError(f"{pending.name} is not followed by a BatchNormalization")
    return pairs


def keras_kernel(conv: ConvParams) -> np.ndarray:
    """The ONNX kernel in Keras' layout (``kh, kw, in, out``; depthwise ``kh, kw, C, 1``)."""
    if conv.depthwise:
        return np.ascontiguousarray(conv.kernel.transpose(2, 3, 0, 1))
    return np.ascontiguousarray(conv.kernel.transpose(2, 3, 1, 0))


def set_affine(
    bn: Any, scale: np.ndarray, shift: np.ndarray, mean: np.ndarray, var: np.ndarray
) -> None:
    """Make ``bn`` compute ``scale * z + shift`` in inference mode, with moving statistics
    ``mean`` and ``var``."""
    std = np.sqrt(var.astype(np.float64) + bn.epsilon)
    bn.gamma.assign((scale * std).astype(np.float32))
    bn.beta.assign((shift + scale * mean).astype(np.float32))
    bn.moving_mean.assign(mean.astype(np.float32))
    bn.moving_variance.assign(var.astype(np.float32))


def batchnorm_input_stats(
    model: Any, backbone: Any, bns: list[Any], faces: np.ndarray, batch_size: int = 256
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per-channel mean and variance of each of ``bns``' inputs over ``faces`` (inference)."""
    import keras

    front = keras.Model(model.input, model.get_layer("normalize").output)
    probe = keras.Model(backbone.input, [bn.input for bn in bns])
    sums = [np.zeros(bn.moving_mean.shape, np.float64) for bn in bns]
    squares = [np.zeros(bn.moving_mean.shape, np.float64) for bn in bns]
    for i in range(0, len(faces), batch_size):
        x = front(faces[i : i + batch_size].astype(np.float32), training=False)
        outs = probe(x, training=False)
        for j, out in enumerate(outs):
            z = np.asarray(out, np.float64).reshape(-1, sums[j].shape[0])
            sums[j] += z.sum(axis=0)
            squares[j] += (z * z).sum(axis=0)
    stats = []
    for j, bn in enumerate(bns):
        n = len(faces) * int(np.prod(bn.input.shape[1:-1]))
        mean = sums[j] / n
        var = np.maximum(squares[j] / n - mean * mean, 0.0)
        stats.append((mean, var))
    return stats


def network_options(meta: dict[str, str], path: Path) -> tuple[str, float, int]:
    """Architecture, width and working size from an export's metadata.

    Raises:
        PipelineError: Any of them is missing or unreadable (not an export of a training run).
    """
    message = (
        f"--onnx {path}: its metadata lacks architecture / alpha / working_size; only files "
        "exported by fer-onnx-factory bundle from a training run can be rebuilt"
    )
    try:
        arch, alpha, size = meta["architecture"], float(meta["alpha"]), int(meta["working_size"])
    except (KeyError, ValueError) as e:
        raise PipelineError(message) from e
    if arch == "None":
        raise PipelineError(message)
    return arch, alpha, size


def rebuild(
    onnx_path: Path, data: Path, out: Path, stat_faces: int = 8192, seed: int = 0, command: str = ""
) -> dict[str, Any]:
    """Rebuild the network of ``onnx_path`` as Keras, check it, and write ``out``.

    Returns:
        The record written to ``out/from_onnx.json``.

    Raises:
        PipelineError: ``out`` already holds files, the file is not a network
            ``fer_onnx_factory.train.run``
            builds, the data does not fit it, or the rebuilt network does not reproduce it.
    """
    import keras

    from fer_onnx.errors import ModelLoadError
    from fer_onnx.metadata import ModelInfo
    from fer_onnx_factory.data.datasets import load
    from fer_onnx_factory.model.build import build_model

    t0 = time.time()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise PipelineError(f"--out {out} already holds files (or is a file); choose a new folder")
    if stat_faces < 1:
        raise PipelineError(f"--stat-faces must be at least 1, got {stat_faces}")
    network = read_onnx(onnx_path)
    meta = network.metadata
    try:
        info = ModelInfo.from_metadata(meta, str(onnx_path))
    except ModelLoadError as e:
        raise PipelineError(str(e)) from e
    arch, alpha, size = network_options(meta, onnx_path)
    try:
        model, backbones = build_model(
            spec=info.input, num_classes=len(info.labels), arch=arch, alpha=alpha, image_size=size
        )
    except ValueError as e:
        raise PipelineError(f"--onnx {onnx_path}: {e}") from e
    backbone = backbones[0]
    pairs = conv_bn_pairs(backbone)
    if len(pairs) != len(network.convs):
        raise PipelineError(
            f"--onnx {onnx_path}: {len(network.convs)} convolutions, but {arch} has {len(pairs)}"
        )
    for (conv_layer, bn), conv in zip(pairs, network.convs, strict=True):
        kernel = keras_kernel(conv)
        want = tuple(conv_layer.kernel.shape)
        if kernel.shape != want:
            raise PipelineError(
                f"--onnx {onnx_path}: {conv.name} has kernel {kernel.shape}, but {conv_layer.name} "
                f"needs {want}"
            )
        conv_layer.kernel.assign(kernel)
        if getattr(conv_layer, "use_bias", False):
            conv_layer.bias.assign(np.zeros(conv_layer.bias.shape, np.float32))
        channels = bn.moving_mean.shape[0]
        set_affine(bn, conv.scale, conv.shift, np.zeros(channels), np.ones(channels))
    dense = model.get_layer("probabilities")
    if tuple(dense.kernel.shape) != network.dense_kernel.shape:
        raise PipelineError(
            f"--onnx {onnx_path}: dense weight {network.dense_kernel.shape}, network needs "
            f"{tuple(dense.kernel.shape)}"
        )
    dense.kernel.assign(network.dense_kernel)
    dense.bias.assign(network.dense_bias)

    dataset = load(data)
    if dataset.spec != info.input or tuple(dataset.labels) != info.labels:
        raise PipelineError(
            f"--data {data}: faces {dataset.spec} with labels {dataset.labels}, but {onnx_path} "
            f"takes {info.input} with labels {info.labels}"
        )
    train = dataset["Training"].images
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.permutation(len(train))[: min(stat_faces, len(train))])
    bns = [bn for _, bn in pairs]
    stats = batchnorm_input_stats(model, backbone, bns, train[pick])
    for (_, bn), conv, (mean, var) in zip(pairs, network.convs, stats, strict=True):
        set_affine(bn, conv.scale, conv.shift, mean, var)

    check = check_against_onnx(model, onnx_path, dataset["PublicTest"].images, meta)
    public = dataset["PublicTest"]
    probs = np.asarray(model.predict(public.images.astype(np.float32), batch_size=256, verbose=0))
    check["network_public_accuracy"] = round(float(np.mean(probs.argmax(1) == public.labels)), 4)
    log.info(
        "rebuilt %s: largest probability gap %.2e, %d of %d PublicTest predictions agree; "
        "network alone %.2f%% PublicTest",
        onnx_path,
        check["max_probability_gap"],
        check["agree"],
        check["faces"],
        100 * check["network_public_accuracy"],
    )
    if not check["max_probability_gap"] <= MAX_PROBABILITY_GAP:  # NaN fails too
        raise PipelineError(
            f"the rebuilt network differs from {onnx_path} by up to "
            f"{check['max_probability_gap']:.2e} in a probability (allowed "
            f"{MAX_PROBABILITY_GAP:.0e}); the file is not the network {arch} builds"
        )
    record = {
        "command": command,
        "source": str(onnx_path),
        "source_sha256": hashlib.sha256(onnx_path.read_bytes()).hexdigest(),
        "source_metadata": meta,
        "data": str(data),
        "statistics_faces": int(len(pick)),
        "check": check,
        "seconds": round(time.time() - t0, 1),
    }
    partial = out.with_name(f".{out.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        partial.mkdir(parents=True)
        keras.Model.save(model, partial / "best.keras")
        (partial / "from_onnx.json").write_text(json.dumps(record, indent=2) + "\n")
        if out.exists():
            out.rmdir()
        os.replace(partial, out)
    except OSError as e:
        shutil.rmtree(partial, ignore_errors=True)
        raise PipelineError(f"cannot write {out}: {e}") from e
    return record


def check_against_onnx(
    model: Any, onnx_path: Path, faces: np.ndarray, meta: dict[str, str]
) -> dict[str, Any]:
    """Compare ``model`` (wrapped with the file's views) with the ONNX file on ``faces``."""
    from fer_onnx_factory.model.build import with_tta
    from fer_onnx_factory.model.predict import predictor

    tta = meta.get("tta", "none")
    wrapped = model if tta in ("", "none") else with_tta(model, tta)
    x = faces.astype(np.float32)
    ours = np.asarray(wrapped.predict(x, batch_size=256, verbose=0))
    theirs = predictor(onnx_path)(faces)
    return {
        "views": tta,
        "faces": int(len(x)),
        "max_probability_gap": float(np.abs(ours - theirs).max()),
        "agree": int(np.sum(ours.argmax(1) == theirs.argmax(1))),
    }


@command()
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="fer-onnx-factory rebuild",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--onnx",
        required=True,
        type=Path,
        help="an fp32 ONNX file written by `fer-onnx-factory bundle`",
    )
    p.add_argument("--data", required=True, type=Path, help="the data it was trained on")
    p.add_argument("--out", required=True, type=Path, help="new folder for best.keras")
    p.add_argument(
        "--stat-faces",
        type=int,
        default=8192,
        help="clean Training faces for the BatchNorm moving statistics",
    )
    args = p.parse_args(argv)
    command = shlex.join(
        ["fer-onnx-factory", "rebuild", *(argv if argv is not None else sys.argv[1:])]
    )
    rebuild(args.onnx, args.data, args.out, args.stat_faces, command=command)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
