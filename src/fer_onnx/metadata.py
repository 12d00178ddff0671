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
from fer_onnx.errors import ModelLoadError
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
    """

    labels: tuple[str, ...]
    input: InputSpec
    value_range: tuple[float, float]
    extra: Mapping[str, str]
    template: CropTemplate | None = None
    output: str = "probabilities"

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

        Args:
            props: The ``custom_metadata_map`` of an onnxruntime session.
            source: Name of the model, used in error messages.

        Raises:
            ModelLoadError: If a key is missing or malformed.
        """
        missing = [key for key in REQUIRED_KEYS if key not in props]
        if missing:
            raise ModelLoadError(
                f"{source} lacks the metadata fer-onnx needs: {', '.join(missing)}. "
                "Export the model with `python -m export.onnx`, or add these keys to its "
                "metadata_props (see fer_onnx.metadata)."
            )
        try:
            labels = json.loads(props[KEY_LABELS])
            height, width = (int(v) for v in json.loads(props[KEY_INPUT_SIZE]))
            low, high = (float(v) for v in json.loads(props[KEY_VALUE_RANGE]))
            color = props[KEY_COLOR]
            if color not in COLOR_MODES:
                raise ValueError(f"{KEY_COLOR} must be one of {COLOR_MODES}, got {color!r}")
            if (
                not isinstance(labels, list)
                or not labels
                or not all(isinstance(label, str) for label in labels)
                or len(set(labels)) != len(labels)
            ):
                raise ValueError(f"{KEY_LABELS} must be a JSON list of distinct strings")
            spec = InputSpec(height, width, _color(color))
            template = (
                CropTemplate.from_json(props[KEY_CROP_TEMPLATE])
                if KEY_CROP_TEMPLATE in props
                else None
            )
            output = props.get(KEY_OUTPUT, "probabilities")
            if output not in OUTPUT_KINDS:
                raise ValueError(f"{KEY_OUTPUT} must be one of {OUTPUT_KINDS}, got {output!r}")
            if not (math.isfinite(low) and math.isfinite(high) and low < high):
                raise ValueError(f"{KEY_VALUE_RANGE} must be finite with low < high")
        except (ValueError, TypeError) as e:
            raise ModelLoadError(f"{source} has malformed fer-onnx metadata: {e}") from e
        known = (*REQUIRED_KEYS, KEY_CROP_TEMPLATE, KEY_OUTPUT)
        extra = {k: v for k, v in props.items() if k not in known}
        return cls(tuple(labels), spec, (low, high), extra, template, output)


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
