"""Convert a trained Keras model to ONNX with tf2onnx and embed fer-onnx metadata.

    fer-onnx-factory export --keras runs/ship/best.keras --out build/fp32.onnx

The ONNX file gets a fixed opset, a dynamic batch dimension, the input name ``faces`` and the
output name ``probabilities``, and the metadata the library reads (``fer_onnx.metadata``): the
run's model contract (``contract.json``: labels, input size, colour mode, value range, output
kind, crop template) plus dataset, accuracies, training command and versions taken from the run
folder (``config.json``, ``metrics.json`` next to the model).
The same Keras model exported twice gives byte-identical files.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any

from fer_onnx_factory.cli import command
from fer_onnx_factory.errors import PipelineError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from fer_onnx.alignment import CropTemplate
from fer_onnx.metadata import ModelInfo
from fer_onnx.model_tools import write_metadata
from fer_onnx.preprocessing import InputSpec
from fer_onnx_factory.train.config import CONTRACT, read_contract

OPSET = 17
INPUT_NAME = "faces"
OUTPUT_NAME = "probabilities"


class ExportError(PipelineError, RuntimeError):
    """A missing or unusable input to the export."""


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ExportError(f"{path} is not valid JSON: {e}") from e
    return data if isinstance(data, dict) else {}


def run_metadata(run_dir: Path) -> dict[str, str]:
    """Provenance entries from a training run folder (all values strings)."""
    config = _read_json(run_dir / "config.json")
    metrics = _read_json(run_dir / "metrics.json")
    out: dict[str, str] = {}
    args = config.get("args", {})
    if args:
        out["dataset"] = Path(str(args.get("data", ""))).name
        if args.get("extra"):
            out["extra_datasets"] = " ".join(Path(str(e)).name for e in args["extra"])
        out["dataset_splits"] = "train=Training select=PublicTest report=PrivateTest"
        out["architecture"] = str(args.get("arch"))
        out["alpha"] = str(args.get("alpha"))
        out["working_size"] = str(args.get("image_size"))
        out["weights_init"] = str(args.get("weights"))
    if "command" in config:
        out["training_command"] = str(config["command"])
    for name, value in (config.get("versions") or {}).items():
        if name in ("tensorflow", "keras"):
            out[f"{name}_version"] = str(value)
    for split, m in (metrics.get("splits") or {}).items():
        out[f"keras_{split}_accuracy"] = f"{m['accuracy']:.4f}"
    if "wall_time_s" in metrics:
        out["training_wall_time_s"] = str(metrics["wall_time_s"])
    return out


def keras_to_onnx(keras_path: Path, opset: int = OPSET) -> tuple[Any, InputSpec]:
    """Load a Keras model and convert it; returns the ONNX ModelProto and the input spec."""
    if not keras_path.is_file():
        raise ExportError(f"Keras model not found: {keras_path}")
    import tensorflow as tf
    import tf2onnx

    from fer_onnx_factory.model.build import load_model

    try:
        model = load_model(keras_path)
    except ValueError as e:
        raise ExportError(str(e)) from e
    shape = tuple(model.inputs[0].shape[1:])
    if len(shape) != 3 or None in shape or shape[2] not in (1, 3):
        raise ExportError(f"{keras_path}: expected an (H, W, 1|3) image input, got {shape}")
    height, width, channels = (int(v) for v in shape)
    spec = InputSpec(height, width, "gray" if channels == 1 else "rgb")
    signature = [tf.TensorSpec((None, height, width, channels), tf.float32, name=INPUT_NAME)]
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=signature, opset=opset)
    outputs = [o.name for o in proto.graph.output]
    if len(outputs) != 1:
        raise ExportError(f"{keras_path}: expected one output, got {outputs}")
    if outputs[0] != OUTPUT_NAME:
        for node in proto.graph.node:
            node.output[:] = [OUTPUT_NAME if o == outputs[0] else o for o in node.output]
        proto.graph.output[0].name = OUTPUT_NAME
    canonicalize(proto)
    return proto, spec


_COUNTER = re.compile(r"__\d+(?=(:\d+)?$)")


def canonicalize(proto: Any) -> None:
    """Make conversion output byte-stable.

    tf2onnx names helper tensors with a process-wide counter (``pad_const__268``), merges equal
    constants under whichever name it met first, and emits initializers in hash order. Node
    order is stable, so initializers are renamed ``const_<k>`` in order of first use, counter
    suffixes of other tensors are renumbered the same way, and initializers are sorted.
    """
    graph = proto.graph
    constants = {t.name for t in graph.initializer}
    order: dict[str, str] = {}
    for node in graph.node:
        for name in [*node.input, *node.output]:
            if name in order:
                continue
            if name in constants:
                order[name] = f"const_{len(order)}"
            elif _COUNTER.search(name):
                order[name] = _COUNTER.sub(f"__c{len(order)}", name)

    def rename(name: str) -> str:
        return order.get(name, name)

    for i, node in enumerate(graph.node):
        node.input[:] = [rename(n) for n in node.input]
        node.output[:] = [rename(n) for n in node.output]
        node.name = _COUNTER.sub(f"__n{i}", node.name)
    for collection in (graph.initializer, graph.value_info, graph.input, graph.output):
        for item in collection:
            item.name = rename(item.name)
    dims: dict[str, str] = {}
    for item in [*graph.input, *graph.output]:
        batch = item.type.tensor_type.shape.dim[0]
        if batch.HasField("dim_param"):
            dims[batch.dim_param] = "batch"
    for item in [*graph.input, *graph.output, *graph.value_info]:
        for dim in item.type.tensor_type.shape.dim:
            if dim.HasField("dim_param") and _COUNTER.search(dim.dim_param):
                dim.dim_param = dims.setdefault(dim.dim_param, f"dim{len(dims)}")
    initializers = sorted(graph.initializer, key=lambda t: int(t.name.split("_")[1]))
    del graph.initializer[:]
    graph.initializer.extend(initializers)


def model_contract(
    run_dir: Path,
    labels: tuple[str, ...],
    spec: InputSpec,
    keras_path: Path,
    template: CropTemplate | None = None,
    contract_template: bool = True,
) -> ModelInfo:
    """What the exported file promises: the run's ``contract.json``, checked against the graph.

    A run without a contract gets ``labels``, the graph's input ``spec`` and the defaults
    (values ``0..255``, probabilities, no template). ``template`` replaces the contract's
    crop template; ``contract_template=False`` drops it.

    Raises:
        ExportError: The labels or the graph's input differ from the contract.
    """
    if not (run_dir / CONTRACT).is_file():
        return ModelInfo(labels, spec, (0.0, 255.0), {}, template)
    # The run's contract is the truth; the graph must agree with it.
    contract = read_contract(run_dir)
    if tuple(labels) != contract.labels:
        raise ExportError(f"labels {labels} differ from the run's contract {contract.labels}")
    promised = contract.input
    if (spec.height, spec.width, spec.channels) != (
        promised.height,
        promised.width,
        promised.channels,
    ):
        raise ExportError(
            f"{keras_path}: input {spec.height}x{spec.width}x{spec.channels} differs from "
            f"the run's contract {(promised.height, promised.width)} {promised.color}"
        )
    if template is not None or not contract_template:
        contract = dataclasses.replace(contract, template=template)
    return contract


def export(
    keras_path: Path,
    out: Path,
    *,
    labels: tuple[str, ...] | None = None,
    run_dir: Path | None = None,
    opset: int = OPSET,
    extra: dict[str, str] | None = None,
    template: CropTemplate | None = None,
    contract_template: bool = True,
) -> ModelInfo:
    """Convert ``keras_path`` to ``out`` with metadata; returns what was written.

    Args:
        keras_path: The trained ``.keras`` model.
        out: Destination ``.onnx`` (written atomically).
        labels: Class names in output order (default: ``labels`` of the run's metrics.json).
        run_dir: Training run folder for provenance (default: the model's folder).
        opset: ONNX opset.
        extra: More metadata entries.
        template: How the training data framed a face (``fer_onnx.crop_template``); default:
            the run's ``contract.json`` (unless ``contract_template`` is false), which also
            gives colour mode, value range and output.
    """
    import onnx

    if not keras_path.is_file():
        raise ExportError(f"Keras model not found: {keras_path}")
    run_dir = run_dir or keras_path.parent
    if labels is None:
        labels = tuple(_read_json(run_dir / "metrics.json").get("labels") or ())
        if not labels:
            raise ExportError(f"no labels: {run_dir / 'metrics.json'} has none; pass --labels")
    proto, spec = keras_to_onnx(keras_path, opset)
    contract = model_contract(run_dir, tuple(labels), spec, keras_path, template, contract_template)
    n_out = proto.graph.output[0].type.tensor_type.shape.dim[-1].dim_value
    if n_out and n_out != len(labels):
        raise ExportError(f"model has {n_out} outputs but {len(labels)} labels were given")
    import tf2onnx

    props = {
        **run_metadata(run_dir),
        "tf2onnx_version": tf2onnx.__version__,
        "opset": str(opset),
        "precision": "fp32",
        **(extra or {}),
    }
    info = dataclasses.replace(contract, extra={**contract.extra, **props})
    write_metadata(proto, info.to_metadata())
    proto.producer_version = tf2onnx.__version__
    onnx.checker.check_model(proto)
    save(proto, out)
    return info


def save(proto: Any, out: Path) -> None:
    """Write a ModelProto atomically (no half-written file on failure)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        tmp.write_bytes(proto.SerializeToString(deterministic=True))
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


@command()
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="fer-onnx-factory export",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--keras", required=True, type=Path, help="trained .keras model")
    p.add_argument("--out", required=True, type=Path, help="output .onnx path")
    p.add_argument(
        "--run-dir",
        type=Path,
        default=None,
        help="training run folder with config.json / metrics.json (default: the model's folder)",
    )
    p.add_argument(
        "--labels",
        nargs="+",
        default=None,
        help="class names in output order (default: from the run's metrics.json)",
    )
    p.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset (default {OPSET})")
    args = p.parse_args(argv)
    info = export(
        args.keras,
        args.out,
        labels=tuple(args.labels) if args.labels else None,
        run_dir=args.run_dir,
        opset=args.opset,
    )
    print(
        f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB): labels {list(info.labels)}, "
        f"input {info.input.height}x{info.input.width} {info.input.color}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
