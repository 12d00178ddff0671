"""The one preprocessing definition shared by training, export and the runtime.

A model's input is a stack of face images, each resized to the model's input size and
converted to its colour mode, as ``float32`` values in ``0..255`` (layout NHWC). Everything
else (scaling to the network's value range, upsampling to the backbone's working size) lives
inside the exported graph, so training, evaluation and inference only ever call
:func:`prepare_faces`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, cast

import cv2
import numpy as np
import numpy.typing as npt

from fer_onnx.errors import InvalidImageError, InvalidOptionError, InvalidTypeError

ColorMode = Literal["gray", "rgb", "bgr"]
COLOR_MODES: tuple[ColorMode, ...] = ("gray", "rgb", "bgr")
MAX_INPUT_SIDE = 1024
"""Largest face height or width a model may take (expression CNNs and ViTs take 48 to 512)."""

__all__ = [
    "COLOR_MODES",
    "MAX_INPUT_SIDE",
    "ColorMode",
    "InputSpec",
    "prepare_faces",
    "to_color_mode",
]


@dataclass(frozen=True, slots=True)
class InputSpec:
    """What a model expects for each face.

    Attributes:
        height: Face height in pixels, 1 to :data:`MAX_INPUT_SIDE`.
        width: Face width in pixels, 1 to :data:`MAX_INPUT_SIDE`.
        color: ``"gray"`` (1 channel) or ``"rgb"`` / ``"bgr"`` (3 channels).

    Raises:
        InvalidOptionError: A size is out of range, or the colour mode unknown (also a
            ``ValueError``; :class:`~fer_onnx.errors.InvalidTypeError` for a size that is not
            an ``int``).
    """

    height: int
    width: int
    color: ColorMode

    def __post_init__(self) -> None:
        for name in ("height", "width"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
                raise InvalidTypeError(
                    f"input {name} must be an int, got {type(value).__name__} {value!r}"
                )
        if not (0 < self.height <= MAX_INPUT_SIDE and 0 < self.width <= MAX_INPUT_SIDE):
            raise InvalidOptionError(
                f"input size must be positive and at most {MAX_INPUT_SIDE} pixels per side, "
                f"got {self.height}x{self.width}"
            )
        object.__setattr__(self, "height", int(self.height))
        object.__setattr__(self, "width", int(self.width))
        if not isinstance(self.color, str) or self.color not in COLOR_MODES:
            raise InvalidOptionError(f"color must be one of {COLOR_MODES}, got {self.color!r}")

    @property
    def channels(self) -> int:
        """Number of channels of one face: 1 for gray, 3 otherwise."""
        return 1 if self.color == "gray" else 3


def to_color_mode(image: npt.NDArray[np.uint8], color: ColorMode) -> npt.NDArray[np.uint8]:
    """Convert a gray (HxW / HxWx1), BGR or BGRA uint8 image to ``color``.

    Args:
        image: The image, in OpenCV's channel order when it has colour.
        color: The wanted colour mode.

    Returns:
        An HxW array for ``"gray"``, else HxWx3.
    """
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        if color == "gray":
            return image
        code = cv2.COLOR_GRAY2BGR if color == "bgr" else cv2.COLOR_GRAY2RGB
        return cast("npt.NDArray[np.uint8]", cv2.cvtColor(image, code))
    channels = image.shape[2]
    codes = {
        (3, "gray"): cv2.COLOR_BGR2GRAY,
        (4, "gray"): cv2.COLOR_BGRA2GRAY,
        (3, "rgb"): cv2.COLOR_BGR2RGB,
        (4, "rgb"): cv2.COLOR_BGRA2RGB,
        (4, "bgr"): cv2.COLOR_BGRA2BGR,
    }
    if (channels, color) == (3, "bgr"):
        return image
    return cast("npt.NDArray[np.uint8]", cv2.cvtColor(image, codes[(channels, color)]))


def prepare_faces(
    faces: Sequence[npt.NDArray[np.uint8]],
    spec: InputSpec,
    out: npt.NDArray[np.float32] | None = None,
) -> npt.NDArray[np.float32]:
    """Resize and colour-convert face crops into one model input batch.

    Shrinking uses area interpolation (no aliasing), enlarging uses bilinear.

    Args:
        faces: uint8 face crops of any size: HxW gray, HxWx1, HxWx3 BGR or HxWx4 BGRA.
        spec: The model's input description.
        out: Optional preallocated ``(len(faces), H, W, C)`` float32 buffer to fill, so that
            a video loop allocates nothing per frame.

    Returns:
        A ``(N, H, W, C)`` float32 array with values in ``0..255``.

    Raises:
        InvalidImageError: If a crop is empty, not uint8 or has an unsupported shape.
    """
    shape = (len(faces), spec.height, spec.width, spec.channels)
    if out is None or out.shape != shape:
        out = np.empty(shape, dtype=np.float32)
    for i, face in enumerate(faces):
        if not isinstance(face, np.ndarray) or face.dtype != np.uint8:
            got = type(face).__name__ if not isinstance(face, np.ndarray) else face.dtype
            raise InvalidImageError(
                f"face {i}: expected a uint8 numpy array, got {got}; "
                "convert with np.clip(x, 0, 255).astype(np.uint8)"
            )
        if (
            face.size == 0
            or face.ndim not in (2, 3)
            or (face.ndim == 3 and face.shape[2] not in (1, 3, 4))
        ):
            raise InvalidImageError(
                f"face {i}: expected a non-empty HxW, HxWx1, HxWx3 or HxWx4 image, "
                f"got shape {face.shape}"
            )
        converted = to_color_mode(face, spec.color)
        h, w = converted.shape[:2]
        if (h, w) != (spec.height, spec.width):
            shrinking = h * w > spec.height * spec.width
            interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
            out[i] = cv2.resize(
                converted, (spec.width, spec.height), interpolation=interpolation
            ).reshape(spec.height, spec.width, spec.channels)
            continue
        out[i] = converted.reshape(spec.height, spec.width, spec.channels)
    return out
