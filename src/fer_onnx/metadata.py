"""The ONNX metadata contract between the export step and the runtime.

Export writes these keys into the model's ``metadata_props``; the runtime reads them back with
``session.get_modelmeta().custom_metadata_map``. Nothing about a model (labels, input size,
colour mode) is hard-coded anywhere else.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from fer_onnx.alignment import KEY_CROP_TEMPLATE, CropTemplate
from fer_onnx.errors import InvalidOptionError, InvalidTypeError, ModelLoadError
from fer_onnx.preprocessing import COLOR_MODES, ColorMode, InputSpec

__all__ = [
    "KEY_COLOR",
    "KEY_CROP_TEMPLATE",
    "KEY_INPUT_SIZE",
    "KEY_LABELS",
    "KEY_OUTPUT",
    "KEY_VALUE_RANGE",
    "ModelInfo",
]

KEY_LABELS = "fer_onnx.labels"
"""JSON list of class names in output order."""
KEY_INPUT_SIZE = "fer_onnx.input_size"
"""JSON ``[height, width]`` of one face."""
KEY_COLOR = "fer_onnx.color_mode"
"""``gray``, ``rgb`` or ``bgr``."""
KEY_VALUE_RANGE = "fer_onnx.value_range"
"""JSON ``[low, high]`` of input values: faces (0..255) are mapped linearly onto it."""
KEY_OUTPUT = "fer_onnx.output"
"""Optional: ``probabilities`` (default; rows sum to 1) or ``logits`` (the runtime applies
softmax)."""
OUTPUT_KINDS = ("probabilities", "logits")

REQUIRED_KEYS = (KEY_LABELS, KEY_INPUT_SIZE, KEY_COLOR, KEY_VALUE_RANGE)

MAX_LABELS = 1000
"""Most classes a model may have."""
MAX_LABEL_CHARS = 100
"""Longest class name."""
MAX_INPUT_VALUE = 65535.0
"""Largest magnitude of either end of a model's input value range (16-bit pixels)."""
MIN_VALUE_SPAN = 1e-3
"""Smallest ``high - low`` of a value range (a narrower one flattens every face)."""


def check_labels(labels: object) -> tuple[str, ...]:
    """Return ``labels`` as a tuple if they are plausible class names.

    They must be a list or tuple of 1 to :data:`MAX_LABELS` distinct, non-blank, printable
    strings of at most :data:`MAX_LABEL_CHARS` characters.

    Raises:
        InvalidOptionError: They are not (also a ``ValueError``).
    """
    if not isinstance(labels, (list, tuple)) or not 1 <= len(labels) <= MAX_LABELS:
        raise InvalidOptionError(
            f"labels must be a list of 1 to {MAX_LABELS} class names, got "
            f"{type(labels).__name__}"
            + (f" of {len(labels)}" if isinstance(labels, (list, tuple)) else "")
        )
    for label in labels:
        if (
            not isinstance(label, str)
            or not label.strip()
            or len(label) > MAX_LABEL_CHARS
            or not label.isprintable()
        ):
            shown = repr(label) if len(repr(label)) <= 60 else repr(label)[:57] + "..."
            raise InvalidOptionError(
                f"each label must be a non-blank printable string of at most {MAX_LABEL_CHARS} "
                f"characters, got {shown}"
            )
    if len(set(labels)) != len(labels):
        raise InvalidOptionError(f"labels must be distinct, got {list(labels)}")
    return tuple(labels)


def check_value_range(value_range: object) -> tuple[float, float]:
    """Return ``(low, high)`` as floats if it is a plausible input value range.

    Both ends finite, within +-:data:`MAX_INPUT_VALUE`, and ``high - low`` at least
    :data:`MIN_VALUE_SPAN` (``(0, 1)``, ``(-1, 1)``, ``(0, 255)`` all pass).

    Raises:
        InvalidOptionError: It is not (also a ``ValueError``).
    """
    try:
        low, high = (float(v) for v in value_range)  # type: ignore[attr-defined]
    except (TypeError, ValueError, OverflowError) as e:
        raise InvalidOptionError(
            f"value range must be two numbers (low, high), got {value_range!r}"
        ) from e
    if not (
        math.isfinite(low)
        and math.isfinite(high)
        and low >= -MAX_INPUT_VALUE
        and high <= MAX_INPUT_VALUE
        and high - low >= MIN_VALUE_SPAN
    ):
        raise InvalidOptionError(
            f"value range must be finite with low < high, within +-{MAX_INPUT_VALUE:g} and "
            f"high - low >= {MIN_VALUE_SPAN:g} (e.g. 0 1, -1 1 or 0 255), got {low:g} {high:g}"
        )
    return low, high


def _json_ints(text: str, count: int) -> tuple[int, ...]:
    values = json.loads(text)
    if (
        not isinstance(values, list)
        or len(values) != count
        or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and float(v).is_integer()
            for v in values
        )
    ):
        raise ValueError(f"expected a JSON list of {count} integers, got {text[:100]!r}")
    return tuple(int(v) for v in values)


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What a model says about itself.

    Attributes:
        labels: Class names in the order of the model's output.
        input: Size and colour mode of one face.
        value_range: Range of input values the model expects (``(0.0, 255.0)``).
        extra: Every other metadata entry (dataset, accuracy, versions, ...).
        template: How the training data framed a face (optional key
            ``fer_onnx.crop_template``); ``None``: faces are cropped at their box.
        output: What the model returns: ``"probabilities"`` or ``"logits"`` (optional key
            ``fer_onnx.output``; the runtime applies softmax to logits).

    Raises:
        InvalidOptionError: A field is implausible (see :meth:`from_metadata`); a field of
            the wrong type raises its subclass :class:`~fer_onnx.errors.InvalidTypeError`.
    """

    labels: tuple[str, ...]
    input: InputSpec
    value_range: tuple[float, float]
    extra: Mapping[str, str]
    template: CropTemplate | None = None
    output: str = "probabilities"

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", check_labels(self.labels))
        if not isinstance(self.input, InputSpec):
            raise InvalidTypeError(
                f"ModelInfo.input must be an InputSpec, got {type(self.input).__name__}"
            )
        object.__setattr__(self, "value_range", check_value_range(self.value_range))
        if not isinstance(self.extra, Mapping):
            raise InvalidTypeError(
                f"ModelInfo.extra must be a mapping of metadata entries, got "
                f"{type(self.extra).__name__}"
            )
        if self.template is not None and not isinstance(self.template, CropTemplate):
            raise InvalidTypeError(
                f"ModelInfo.template must be a CropTemplate or None, got "
                f"{type(self.template).__name__}"
            )
        if self.output not in OUTPUT_KINDS:
            raise InvalidOptionError(f"output must be one of {OUTPUT_KINDS}, got {self.output!r}")

    def to_metadata(self) -> dict[str, str]:
        """Serialise to the string map stored in ``metadata_props``."""
        props = dict(self.extra)
        props[KEY_LABELS] = json.dumps(list(self.labels))
        props[KEY_INPUT_SIZE] = json.dumps([self.input.height, self.input.width])
        props[KEY_COLOR] = self.input.color
        props[KEY_VALUE_RANGE] = json.dumps(list(self.value_range))
        if self.template is not None:
            props[KEY_CROP_TEMPLATE] = self.template.to_json()
        if self.output != "probabilities":
            props[KEY_OUTPUT] = self.output
        return props

    @classmethod
    def from_metadata(cls, props: Mapping[str, str], source: str = "model") -> ModelInfo:
        """Parse the string map read from a model.

        Every field is checked for plausibility: labels (:func:`check_labels`), input size
        (:class:`~fer_onnx.InputSpec`: 1 to 1024 pixels per side), value range
        (:func:`check_value_range`), colour mode, output kind and crop template
        (:class:`~fer_onnx.alignment.CropTemplate`), so a model that loads also runs.

        Args:
            props: The ``custom_metadata_map`` of an onnxruntime session.
            source: Name of the model, used in error messages.

        Raises:
            ModelLoadError: If a key is missing, malformed or implausible.
        """
        missing = [key for key in REQUIRED_KEYS if key not in props]
        if missing:
            raise ModelLoadError(
                f"{source} lacks the metadata fer-onnx needs: {', '.join(missing)}. "
                "Write them with `fer-onnx model stamp IN.onnx OUT.onnx --labels ... "
                "--input-size ... --color ... --value-range ...` (see `fer-onnx model stamp "
                "--help`)."
            )
        try:
            labels = check_labels(json.loads(props[KEY_LABELS]))
            height, width = _json_ints(props[KEY_INPUT_SIZE], 2)
            value_range = check_value_range(json.loads(props[KEY_VALUE_RANGE]))
            color = props[KEY_COLOR]
            if color not in COLOR_MODES:
                raise ValueError(f"{KEY_COLOR} must be one of {COLOR_MODES}, got {color!r}")
            spec = InputSpec(height, width, _color(color))
            template = (
                CropTemplate.from_json(props[KEY_CROP_TEMPLATE])
                if KEY_CROP_TEMPLATE in props
                else None
            )
            output = props.get(KEY_OUTPUT, "probabilities")
            if output not in OUTPUT_KINDS:
                raise ValueError(f"{KEY_OUTPUT} must be one of {OUTPUT_KINDS}, got {output!r}")
            known = (*REQUIRED_KEYS, KEY_CROP_TEMPLATE, KEY_OUTPUT)
            extra = {k: v for k, v in props.items() if k not in known}
            return cls(labels, spec, value_range, extra, template, output)
        except (ValueError, TypeError, OverflowError, RecursionError) as e:
            raise ModelLoadError(f"{source} has malformed fer-onnx metadata: {e}") from e


def check_input(source: str, elem_type: str, shape: Sequence[object]) -> None:
    """Refuse a classifier input fer-onnx cannot feed: not float32, or a fixed batch size.

    Raises:
        ModelLoadError: Saying what to change in the export.
    """
    if elem_type != "tensor(float)":
        raise ModelLoadError(
            f"{source}: its input is {elem_type}; fer-onnx feeds float32 faces (tensor(float)). "
            "Re-export it with a float32 input (cast inside the graph if the network needs "
            "another type)."
        )
    if shape and isinstance(shape[0], int):
        raise ModelLoadError(
            f"{source}: its batch dimension is fixed at {shape[0]}; fer-onnx runs all faces of an "
            "image in one batch. Re-export it with a dynamic batch dimension (e.g. "
            "dynamic_axes={'input': {0: 'batch'}} in torch.onnx.export)."
        )


def are_probabilities(values: npt.NDArray[np.float32]) -> bool:
    """Whether each row is >= 0 and sums to 1 (within int8 quantisation: 1/255 per class)."""
    return bool((values >= -1e-4).all() and (np.abs(values.sum(axis=1) - 1.0) <= 0.05).all())


def _color(value: str) -> ColorMode:
    for mode in COLOR_MODES:
        if mode == value:
            return mode
    raise ValueError(value)
