r"""Foreign models: see what fer-onnx knows of any ONNX file, and stamp its metadata into one.

A classifier exported from PyTorch, TensorFlow or any other framework runs in
:class:`~fer_onnx.EmotionRecognizer` once its file carries the metadata contract of
:mod:`fer_onnx.metadata` (labels, input size, colour mode, value range; optionally the output
kind and a crop template). :func:`inspect_model` reports what a file has and lacks;
:func:`stamp_model` writes the contract into a copy, checks that the runtime accepts the result
and that its outputs are what the stamp says (probabilities, or logits with ``softmax=True``).

    fer-onnx model inspect model.onnx
    fer-onnx model stamp model.onnx stamped.onnx --labels angry,happy,neutral \
        --input-size 48 48 --color gray --value-range 0 1 --softmax

Stamping needs the ``onnx`` package (``pip install onnx``); inspecting needs only onnxruntime.
The command line is :mod:`fer_onnx.cli.model`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from fer_onnx.alignment import KEY_CROP_TEMPLATE, CropTemplate
from fer_onnx.errors import InvalidOptionError, InvalidTypeError, ModelLoadError, ModelOutputError
from fer_onnx.metadata import (
    KEY_COLOR,
    KEY_INPUT_SIZE,
    KEY_LABELS,
    KEY_OUTPUT,
    KEY_VALUE_RANGE,
    MAX_INPUT_VALUE,
    REQUIRED_KEYS,
    ModelInfo,
    are_probabilities,
    check_input,
    check_labels,
    check_value_range,
)
from fer_onnx.outputs import AtomicOutput, check_outputs, deferred_signals
from fer_onnx.preprocessing import COLOR_MODES, ColorMode, InputSpec
from fer_onnx.recognizer import EmotionRecognizer, resolve_model
from fer_onnx.session import SessionConfig, create_session
from fer_onnx.yunet import STRIDES

__all__ = [
    "KEY_STAMP",
    "ModelReport",
    "TensorInfo",
    "inspect_model",
    "stamp_model",
]

KEY_STAMP = "fer_onnx.stamp"
"""Metadata key recording how a foreign model was stamped (JSON: source file, options)."""

Kind = Literal["classifier", "detector", "unknown"]
Layout = Literal["NHWC", "NCHW"]

_STAMP_OPTIONS = {
    KEY_LABELS: "--labels",
    KEY_INPUT_SIZE: "--input-size",
    KEY_COLOR: "--color",
    KEY_VALUE_RANGE: "--value-range",
}
_YUNET_OUTPUTS = {f"{kind}_{s}" for kind in ("cls", "obj", "bbox", "kps") for s in STRIDES}
_PROBE_ROWS = 4


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """One input or output of a model.

    Attributes:
        name: Its name in the graph.
        shape: Dimensions: an ``int`` when fixed, a ``str`` (symbolic) or ``None`` when not.
        type: Element type as onnxruntime names it, e.g. ``tensor(float)``.
    """

    name: str
    shape: tuple[int | str | None, ...]
    type: str

    def __str__(self) -> str:
        dims = ", ".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name}: {self.type} [{dims}]"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary."""
        return {"name": self.name, "shape": list(self.shape), "type": self.type}


@dataclass(frozen=True, slots=True)
class ModelReport:
    """What fer-onnx knows of an ONNX file.

    Attributes:
        path: The file.
        kind: ``"classifier"`` (one 4-D image input, a 2-D output), ``"detector"`` (YuNet's
            outputs), or ``"unknown"``.
        inputs: The graph's inputs.
        outputs: The graph's outputs.
        metadata: Every ``metadata_props`` entry.
        info: The parsed fer-onnx metadata, or ``None`` when missing or malformed.
        layout: ``"NHWC"`` or ``"NCHW"`` when the input shape fits the metadata.
        missing: Required fer-onnx metadata keys the file lacks.
        problems: Why :class:`~fer_onnx.EmotionRecognizer` would refuse the file (empty when
            it accepts it).
        suggestions: ``fer-onnx model stamp`` options read off the model's shapes, for the
            keys it lacks (labels and value range cannot be read off and are left to you).
    """

    path: Path
    kind: Kind
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    metadata: Mapping[str, str]
    info: ModelInfo | None = None
    layout: Layout | None = None
    missing: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()
    suggestions: tuple[str, ...] = field(default=())

    @property
    def usable(self) -> bool:
        """Whether ``EmotionRecognizer(model=path)`` accepts the file as it is."""
        return self.kind == "classifier" and not self.missing and not self.problems

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary."""
        info = self.info
        return {
            "path": str(self.path),
            "kind": self.kind,
            "usable": self.usable,
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "metadata": dict(self.metadata),
            "fer_onnx": None
            if info is None
            else {
                "labels": list(info.labels),
                "input_size": [info.input.height, info.input.width],
                "color": info.input.color,
                "value_range": list(info.value_range),
                "output": info.output,
                "crop_template": info.template is not None,
                "layout": self.layout,
            },
            "missing": list(self.missing),
            "problems": list(self.problems),
            "suggestions": list(self.suggestions),
        }

    def format(self) -> str:
        """A human-readable report (what ``fer-onnx model inspect`` prints)."""
        lines = [f"{self.path}: {self.kind}"]
        lines += ["inputs:"] + [f"  {t}" for t in self.inputs]
        lines += ["outputs:"] + [f"  {t}" for t in self.outputs]
        if self.metadata:
            lines.append("metadata:")
            for key in sorted(self.metadata):
                value = self.metadata[key]
                shown = value if len(value) <= 100 else value[:97] + "..."
                lines.append(f"  {key} = {shown}")
        else:
            lines.append("metadata: none")
        if self.info is not None:
            info = self.info
            lines.append(
                f"fer-onnx reads: {len(info.labels)} labels ({', '.join(info.labels)}); "
                f"{info.input.height}x{info.input.width} {info.input.color}"
                + (f" {self.layout}" if self.layout else "")
                + f"; values {info.value_range[0]:g}..{info.value_range[1]:g}; "
                f"outputs {info.output}; "
                + ("crop template" if info.template is not None else "no crop template")
            )
        if self.kind == "detector":
            lines.append("a YuNet face detector: use it with detector='path/to/file.onnx'")
        for key in self.missing:
            lines.append(f"missing: {key} (fer-onnx model stamp {_STAMP_OPTIONS[key]} ...)")
        lines += [f"problem: {p}" for p in self.problems]
        if self.suggestions:
            lines.append("suggested: fer-onnx model stamp IN OUT " + " ".join(self.suggestions))
        if self.kind != "detector":
            lines.append(
                "usable by EmotionRecognizer: yes"
                if self.usable
                else "usable by EmotionRecognizer: no"
            )
        return "\n".join(lines)


def _tensors(values: Sequence[Any]) -> tuple[TensorInfo, ...]:
    return tuple(
        TensorInfo(
            str(v.name),
            tuple(d if isinstance(d, (int, str)) else None for d in v.shape),
            str(v.type),
        )
        for v in values
    )


def _layout(shape: Sequence[int | str | None], spec: InputSpec) -> Layout | None:
    """NHWC or NCHW as the runtime decides it (NHWC first), or ``None`` if neither fits."""
    if len(shape) != 4:
        return None
    dims = [d if isinstance(d, int) else None for d in shape[1:]]
    for layout, expected in (
        ("NHWC", (spec.height, spec.width, spec.channels)),
        ("NCHW", (spec.channels, spec.height, spec.width)),
    ):
        if all(d is None or d == e for d, e in zip(dims, expected, strict=True)):
            return "NHWC" if layout == "NHWC" else "NCHW"
    return None


def _guess_image(shape: Sequence[int | str | None]) -> tuple[int, int, int, Layout] | None:
    """Height, width, channels and layout read off a 4-D input shape, when unambiguous."""
    if len(shape) != 4 or not all(isinstance(d, int) for d in shape[1:]):
        return None
    a, b, c = (int(d) for d in shape[1:] if isinstance(d, int))
    if a in (1, 3) and c not in (1, 3):
        return b, c, a, "NCHW"
    if c in (1, 3) and a not in (1, 3):
        return a, b, c, "NHWC"
    return None


def _suggest(report_inputs: tuple[TensorInfo, ...], missing: Sequence[str]) -> tuple[str, ...]:
    if not missing or len(report_inputs) != 1:
        return ()
    guess = _guess_image(report_inputs[0].shape)
    out: list[str] = []
    if guess is not None:
        height, width, channels, _ = guess
        if KEY_INPUT_SIZE in missing:
            out.append(f"--input-size {height} {width}")
        if KEY_COLOR in missing:
            out.append("--color gray" if channels == 1 else "--color rgb (or bgr)")
    if KEY_LABELS in missing:
        out.append("--labels NAME,NAME,...")
    if KEY_VALUE_RANGE in missing:
        out.append("--value-range LOW HIGH")
    return tuple(out)


def inspect_model(path: str | os.PathLike[str]) -> ModelReport:
    """Report what fer-onnx knows of an ONNX file: inputs, outputs, metadata, what is missing.

    Args:
        path: Any ONNX file, or a bundled model's name (``"default"``, ``"fp32"``, ``"int8"``)
            as everywhere else.

    Returns:
        The report; ``report.usable`` says whether :class:`~fer_onnx.EmotionRecognizer` runs
        the file as it is.

    Raises:
        ModelLoadError: The file is missing or onnxruntime cannot load it.
        InvalidTypeError: ``path`` is neither a ``str`` nor an ``os.PathLike``.
    """
    model = resolve_model(path)
    session = create_session(model, ["CPUExecutionProvider"], SessionConfig(log_severity=3))
    inputs = _tensors(session.get_inputs())
    outputs = _tensors(session.get_outputs())
    metadata = dict(session.get_modelmeta().custom_metadata_map)
    del session
    if {o.name for o in outputs} >= _YUNET_OUTPUTS:
        return ModelReport(model, "detector", inputs, outputs, metadata)
    image_like = len(inputs) == 1 and len(inputs[0].shape) == 4
    kind: Kind = (
        "classifier" if image_like and outputs and len(outputs[0].shape) == 2 else "unknown"
    )
    missing = tuple(key for key in REQUIRED_KEYS if key not in metadata)
    problems: list[str] = []
    if kind == "unknown":
        problems.append(
            "not an image classifier: fer-onnx needs one 4-D image input (NHWC or NCHW) and a "
            "2-D output (batch, classes)"
        )
    info = None
    layout: Layout | None = None
    if not missing:
        try:
            info = ModelInfo.from_metadata(metadata, source=str(model))
        except ModelLoadError as e:
            problems.append(str(e))
    if info is not None and kind == "classifier":
        layout = _layout(inputs[0].shape, info.input)
        try:
            EmotionRecognizer(model, detector=None, device="cpu").close()
        except ModelLoadError as e:
            problems.append(str(e))
    return ModelReport(
        model,
        kind,
        inputs,
        outputs,
        metadata,
        info,
        layout,
        missing,
        tuple(problems),
        _suggest(inputs, missing) if kind == "classifier" else (),
    )


def _import_onnx() -> Any:
    try:
        import onnx
    except ImportError as e:
        raise ModelLoadError("stamping a model needs the onnx package: pip install onnx") from e
    return onnx


def _template_from(source: str | os.PathLike[str]) -> CropTemplate:
    path = resolve_model(source)
    session = create_session(path, ["CPUExecutionProvider"], SessionConfig(log_severity=3))
    text = session.get_modelmeta().custom_metadata_map.get(KEY_CROP_TEMPLATE)
    del session
    if text is None:
        raise InvalidOptionError(
            f"{path} has no crop template (metadata key {KEY_CROP_TEMPLATE}) to copy; "
            "name a fer-onnx model that has one, e.g. 'default'"
        )
    try:
        return CropTemplate.from_json(text)
    except InvalidOptionError as e:
        raise InvalidOptionError(
            f"{path}: its crop template cannot be copied: {e}; name a model with a plausible "
            "one, e.g. 'default'"
        ) from e


def _input_size(input_size: object) -> tuple[int, int]:
    """``(height, width)`` as ints; whole floats (``48.0``) pass, anything else is refused."""
    try:
        pair = list(input_size)  # type: ignore[call-overload]
        if len(pair) != 2:
            raise ValueError("not two values")
        values = (float(pair[0]), float(pair[1]))
    except (TypeError, ValueError, OverflowError) as e:
        raise InvalidOptionError(
            f"input size must be two integers (height, width), got {input_size!r}"
        ) from e
    if not all(math.isfinite(v) and v.is_integer() for v in values):
        raise InvalidOptionError(
            f"input size must be two integers (height, width), got {input_size!r}"
        )
    return int(values[0]), int(values[1])


def _target_path(target: object) -> Path:
    """The stamped file's path; ``"-"`` (standard output) and non-paths are refused."""
    if isinstance(target, (bytes, bytearray)) or not isinstance(target, (str, os.PathLike)):
        raise InvalidTypeError(f"target must be a path, got {type(target).__name__}")
    if os.fspath(target) in ("-", ""):
        raise InvalidOptionError(
            f"OUT must be the path of the .onnx file to write, got {os.fspath(target)!r}: a "
            "model is not written to standard output"
        )
    return Path(target)


def _label_names(labels: object) -> tuple[str, ...]:
    if isinstance(labels, (str, bytes)) or not isinstance(labels, Sequence):
        raise InvalidTypeError(f"labels must be a list of class names, got {type(labels).__name__}")
    return check_labels(tuple(str(label) for label in labels))


def _check_stats(
    name: str, values: Sequence[float] | None, channels: int
) -> npt.NDArray[np.float32] | None:
    if values is None:
        return None
    count = "one finite value" if channels == 1 else f"one or {channels} finite values"
    try:
        array = np.asarray([float(v) for v in values], np.float64)
    except (TypeError, ValueError, OverflowError) as e:
        raise InvalidOptionError(f"{name} needs {count}, got {values!r}") from e
    if array.size == 1:
        array = np.repeat(array, channels)
    if array.size != channels or not np.isfinite(array).all():
        raise InvalidOptionError(
            f"{name} needs {count} (one per channel of the model's colour mode), got {list(values)}"
        )
    if (np.abs(array) > MAX_INPUT_VALUE).any():
        raise InvalidOptionError(
            f"{name} must lie within +-{MAX_INPUT_VALUE:g}, got {list(values)}"
        )
    if name == "std" and (array < 1e-6).any():
        raise InvalidOptionError(f"std must be > 0 (at least 1e-6), got {list(values)}")
    return array.astype(np.float32)


def _normalise_in_graph(
    onnx: Any, model: Any, input_name: str, layout: Layout, mean: Any, std: Any
) -> None:
    """Prepend ``(x - mean) / std`` per channel to the graph, in place."""
    from onnx import helper, numpy_helper

    graph = model.graph
    taken = {n for node in graph.node for n in (*node.input, *node.output)}
    taken |= {i.name for i in graph.initializer} | {i.name for i in graph.input}

    def fresh(base: str) -> str:
        name, k = base, 1
        while name in taken:
            name, k = f"{base}_{k}", k + 1
        taken.add(name)
        return name

    normalised = fresh(f"{input_name}_fer_onnx_normalised")
    centred = fresh(f"{input_name}_fer_onnx_centred")
    shape = (1, len(mean), 1, 1) if layout == "NCHW" else (1, 1, 1, len(mean))
    mean_name, std_name = fresh("fer_onnx_mean"), fresh("fer_onnx_std")

    def rename(nodes: Any) -> None:
        for node in nodes:
            for i, name in enumerate(node.input):
                if name == input_name:
                    node.input[i] = normalised
            for attribute in node.attribute:
                if attribute.type == onnx.AttributeProto.GRAPH:
                    rename(attribute.g.node)
                elif attribute.type == onnx.AttributeProto.GRAPHS:
                    for sub in attribute.graphs:
                        rename(sub.node)

    rename(graph.node)
    graph.initializer.extend(
        [
            numpy_helper.from_array(mean.reshape(shape), mean_name),
            numpy_helper.from_array(std.reshape(shape), std_name),
        ]
    )
    prelude = [
        helper.make_node("Sub", [input_name, mean_name], [centred], name=fresh("fer_onnx_sub")),
        helper.make_node("Div", [centred, std_name], [normalised], name=fresh("fer_onnx_div")),
    ]
    nodes = [*prelude, *graph.node]
    del graph.node[:]
    graph.node.extend(nodes)


def _probe(
    path: Path, input_name: str, layout: Layout, spec: InputSpec, value_range: tuple[float, float]
) -> npt.NDArray[np.float32]:
    """Raw outputs of the model for a few random faces, prepared as the runtime prepares them."""
    rng = np.random.default_rng(0)
    faces = rng.integers(0, 256, (_PROBE_ROWS, spec.height, spec.width, spec.channels))
    low, high = value_range
    batch = (faces * ((high - low) / 255.0) + low).astype(np.float32)
    if layout == "NCHW":
        batch = np.ascontiguousarray(batch.transpose(0, 3, 1, 2))
    session = create_session(path, ["CPUExecutionProvider"], SessionConfig(log_severity=3))
    (out,) = session.run(None, {input_name: batch})[:1]
    return np.asarray(out, np.float32)


@dataclass(frozen=True, slots=True)
class _StampOptions:
    """The checked options of :func:`stamp_model`, before the model is looked at."""

    names: tuple[str, ...]
    spec: InputSpec
    value_range: tuple[float, float]
    mean: npt.NDArray[np.float32] | None
    std: npt.NDArray[np.float32] | None
    template: CropTemplate | None


def _color_mode(color: object) -> ColorMode:
    """The colour mode named by ``color``; anything but ``gray``/``rgb``/``bgr`` is refused."""
    if not isinstance(color, str) or color not in COLOR_MODES:
        raise InvalidOptionError(f"color must be one of {COLOR_MODES}, got {color!r}")
    return "gray" if color == "gray" else "rgb" if color == "rgb" else "bgr"


def _stamp_options(
    labels: Sequence[str],
    input_size: tuple[int, int],
    color: str,
    value_range: tuple[float, float],
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    crop_template: CropTemplate | str | os.PathLike[str] | None,
) -> _StampOptions:
    """Check every option of :func:`stamp_model` in the order it names them.

    Decides: the labels, size, colour and range are plausible; mean and std, if given, have
    one value or one per channel and come together; a crop template given as a model is read
    from that model.
    """
    names = _label_names(labels)
    mode = _color_mode(color)  # the colour is checked before the size
    spec = InputSpec(*_input_size(input_size), mode)
    low, high = check_value_range(value_range)
    mean_array = _check_stats("mean", mean, spec.channels)
    std_array = _check_stats("std", std, spec.channels)
    if (mean_array is None) != (std_array is None):
        raise InvalidOptionError("give mean and std together (transforms.Normalize(mean, std))")
    template = (
        crop_template
        if crop_template is None or isinstance(crop_template, CropTemplate)
        else _template_from(crop_template)
    )
    return _StampOptions(names, spec, (low, high), mean_array, std_array, template)


def _stamp_input(src: Path, options: _StampOptions) -> tuple[TensorInfo, Layout]:
    """The image input of the classifier at ``src`` and its layout (NHWC or NCHW).

    Decides: the file is a classifier (not a detector, not something else), its input is one
    the runtime can feed, its shape fits the stamped size and colour, and its class count (when
    fixed) matches the labels.
    """
    report = inspect_model(src)
    if report.kind == "detector":
        raise ModelLoadError(f"{src} is a YuNet face detector, not an expression classifier")
    if report.kind != "classifier":
        raise ModelLoadError(f"{src}: {report.problems[0]}")
    tensor = report.inputs[0]
    check_input(str(src), tensor.type, tensor.shape)
    spec = options.spec
    layout = _layout(tensor.shape, spec)
    if layout is None:
        raise ModelLoadError(
            f"{src}: input shape {list(tensor.shape)} fits neither NHWC nor NCHW for "
            f"{spec.height}x{spec.width} {spec.color} ({spec.channels} channel(s)); check "
            "--input-size and --color"
        )
    classes = report.outputs[0].shape[1]
    if isinstance(classes, int) and classes != len(options.names):
        raise InvalidOptionError(
            f"{src} outputs {classes} classes but {len(options.names)} labels were given"
        )
    return tensor, layout


def _load_proto(onnx: Any, src: Path) -> Any:
    """The model at ``src`` as an ONNX protobuf; any onnx failure is a :class:`ModelLoadError`."""
    try:
        return onnx.load(str(src))
    except Exception as e:  # onnx raises several untyped errors for a bad file
        raise ModelLoadError(f"cannot read {src} with onnx: {e}") from e


def _refuse_second_normalisation(
    src: Path, previous: Mapping[str, str], options: _StampOptions
) -> None:
    """Refuse ``mean``/``std`` for a file whose earlier stamp already normalises in its graph."""
    if options.mean is None or KEY_STAMP not in previous:
        return
    earlier = json.loads(previous[KEY_STAMP])
    if isinstance(earlier, dict) and earlier.get("mean") is not None:
        raise InvalidOptionError(
            f"{src} was stamped with --mean/--std already (its graph normalises); stamp "
            f"the original file {earlier.get('source')!r} instead"
        )


def _stamp_metadata(
    src: Path, previous: Mapping[str, str], options: _StampOptions, softmax: bool
) -> dict[str, str]:
    """The metadata of the stamped file: foreign keys kept, every ``fer_onnx.`` key replaced.

    Decides the output kind (``logits`` with ``softmax``, else ``probabilities``) and records
    the source's name and the mean/std added to the graph under :data:`KEY_STAMP`.
    """
    info = ModelInfo(
        options.names,
        options.spec,
        options.value_range,
        {k: v for k, v in previous.items() if not k.startswith("fer_onnx.")},
        options.template,
        "logits" if softmax else "probabilities",
    )
    props = info.to_metadata()
    props[KEY_OUTPUT] = info.output
    props[KEY_STAMP] = json.dumps(
        {
            "source": src.name,
            "mean": None if options.mean is None else [float(v) for v in options.mean],
            "std": None if options.std is None else [float(v) for v in options.std],
        }
    )
    return props


def write_metadata(proto: Any, props: Mapping[str, str]) -> None:
    """Replace the ``metadata_props`` of an ONNX model with ``props``, sorted by name.

    The one writer of ONNX metadata: :func:`stamp_model`, the model factory's export,
    quantisation and template stamping all go through it, so every file lists its entries
    the same way (sorted, which also keeps an export byte-stable).

    Args:
        proto: An ``onnx.ModelProto``, changed in place (the ``onnx`` package itself is not
            needed here).
        props: Every entry the model is to carry (e.g. :meth:`ModelInfo.to_metadata` with
            provenance added); names and values are strings. Entries not in it are dropped.

    Raises:
        InvalidTypeError: A name or value is not a string.
    """
    bad = [k for k, v in props.items() if not (isinstance(k, str) and isinstance(v, str))]
    if bad:
        raise InvalidTypeError(f"metadata names and values must be strings, not so for {bad[:5]!r}")
    del proto.metadata_props[:]
    for key in sorted(props):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, props[key]


def _set_metadata(onnx: Any, proto: Any, src: Path, props: Mapping[str, str]) -> None:
    """Replace the metadata of ``proto`` by ``props``; the result must pass onnx's checker."""
    write_metadata(proto, props)
    try:
        onnx.checker.check_model(proto)
    except Exception as e:  # onnx.checker.ValidationError and friends
        raise ModelLoadError(f"{src}: the stamped graph does not validate: {e}") from e


def _check_probe_outputs(
    src: Path, raw: npt.NDArray[np.float32], labels: int, softmax: bool
) -> None:
    """Decide that the probed outputs are one score per label, of the kind ``softmax`` says.

    Probabilities stamped with ``softmax``, or anything else stamped without it, is refused.
    """
    if raw.ndim != 2 or raw.shape != (_PROBE_ROWS, labels):
        raise ModelOutputError(
            f"{src} returns shape {raw.shape} for {_PROBE_ROWS} faces, expected "
            f"({_PROBE_ROWS}, {labels}): one score per label"
        )
    if softmax and are_probabilities(raw):
        raise ModelOutputError(
            f"{src} already outputs probabilities (rows >= 0 summing to 1); stamp it "
            "without --softmax"
        )
    if not softmax and not are_probabilities(raw):
        raise ModelOutputError(
            f"{src} outputs values that are not probabilities (rows must be >= 0 and sum "
            "to 1; got row sums "
            f"{', '.join(f'{s:.3g}' for s in raw.sum(axis=1))}): if they are logits, "
            "stamp with --softmax"
        )


def _write_checked(
    onnx: Any,
    proto: Any,
    src: Path,
    dst: Path,
    input_name: str,
    layout: Layout,
    options: _StampOptions,
    softmax: bool,
) -> None:
    """Save ``proto`` to ``dst`` atomically, committing only a file the runtime loads and runs.

    The temporary copy is probed (:func:`_check_probe_outputs`) and opened by an
    :class:`EmotionRecognizer`; any failure leaves ``dst`` as it was.
    """
    with contextlib.ExitStack() as stack:
        with deferred_signals():  # a signal while it is created leaves no temporary file
            out = stack.enter_context(AtomicOutput(dst))
        onnx.save(proto, str(out.tmp))
        raw = _probe(out.tmp, input_name, layout, options.spec, options.value_range)
        _check_probe_outputs(src, raw, len(options.names), softmax)
        EmotionRecognizer(out.tmp, detector=None, device="cpu").close()
        out.commit()


def stamp_model(
    source: str | os.PathLike[str],
    target: str | os.PathLike[str],
    *,
    labels: Sequence[str],
    input_size: tuple[int, int],
    color: str,
    value_range: tuple[float, float],
    softmax: bool = False,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    crop_template: CropTemplate | str | os.PathLike[str] | None = None,
) -> ModelReport:
    """Write fer-onnx metadata into a copy of a classifier exported elsewhere.

    The copy keeps the graph and every other metadata entry; only the fer-onnx keys are set.
    The runtime feeds faces as float32 ``0..255`` mapped linearly onto ``value_range``, in the
    layout the input shape says (NHWC or NCHW).

    Every option is checked for plausibility before anything is written, as the runtime
    checks the metadata when it loads a model (:meth:`fer_onnx.metadata.ModelInfo.from_metadata`):
    a stamped file always loads and runs.

    Args:
        source: The foreign ONNX classifier: one float32 4-D image input with a dynamic batch
            dimension, a ``(batch, classes)`` output.
        target: Where to write the stamped copy (replaced atomically; never ``source``, never
            ``"-"``: a model is not written to standard output).
        labels: Class names in the order of the model's output (1 to 1000 distinct,
            printable names of at most 100 characters).
        input_size: ``(height, width)`` of one face, 1 to 1024 pixels each.
        color: ``"gray"``, ``"rgb"`` or ``"bgr"`` (channel order the model was trained on).
        value_range: ``(low, high)`` input range the model was trained on, e.g. ``(0, 1)``
            for ``torchvision.transforms.ToTensor`` (finite, within +-65535, ``high - low``
            at least 0.001).
        softmax: The model outputs logits (or log-probabilities): the runtime applies softmax
            (metadata ``fer_onnx.output = logits``).
        mean: Per-channel means subtracted after scaling to ``value_range``
            (``transforms.Normalize``); one value or one per channel. Added to the graph.
        std: Per-channel standard deviations to divide by, with ``mean``.
        crop_template: How the model's training data framed faces: a :class:`CropTemplate`,
            or a model to copy it from (``"default"``, ``"fp32"``, ``"int8"`` or a path; its
            template must be plausible, see :class:`CropTemplate`). Without one, faces are
            cropped at their detector box.

    Returns:
        The report of the stamped file (``report.usable`` is ``True``).

    Raises:
        ModelLoadError: The source is missing, not loadable, or not an image classifier the
            runtime can feed (input type, rank, fixed batch, shape not matching the options).
        InvalidOptionError: An option is malformed or implausible (labels, size, colour, range,
            mean/std, crop template), or ``target`` is ``"-"``.
        ModelOutputError: The outputs contradict ``softmax`` (probabilities stamped as logits,
            or logits stamped as probabilities) or do not match the labels.
        OutputError: ``target`` cannot be written, or is the source.
    """
    dst = _target_path(target)
    onnx = _import_onnx()
    src = resolve_model(source)
    check_outputs([dst], [src])
    options = _stamp_options(labels, input_size, color, value_range, mean, std, crop_template)
    tensor, layout = _stamp_input(src, options)
    proto = _load_proto(onnx, src)
    if options.mean is not None and options.std is not None:
        _normalise_in_graph(onnx, proto, tensor.name, layout, options.mean, options.std)
    previous = {p.key: p.value for p in proto.metadata_props}
    _refuse_second_normalisation(src, previous, options)
    _set_metadata(onnx, proto, src, _stamp_metadata(src, previous, options, softmax))
    _write_checked(onnx, proto, src, dst, tensor.name, layout, options, softmax)
    return inspect_model(dst)
