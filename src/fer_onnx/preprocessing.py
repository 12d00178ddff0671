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

from fer_onnx.errors import InvalidImageError

ColorMode = Literal["gray", "rgb", "bgr"]
COLOR_MODES: tuple[ColorMode, ...] = ("gray", "rgb", "bgr")

__all__ = ["COLOR_MODES", "ColorMode", "InputSpec", "prepare_faces", "to_color_mode"]


@dataclass(frozen=True, slots=True)
class InputSpec:
    """What a model expects for each face.

    Attributes:
        height: Face height in pixels.
        width: Face width in pixels.
        color: ``"gray"`` (1 channel) or ``"rgb"`` / ``"bgr"`` (3 channels).
    """

    height: int
    width: int
    color: ColorMode

    def __post_init__(self) -> None:
        if self.height <= 0 or self.width <= 0:
            raise ValueError(f"input size must be positive, got {self.height}x{self.width}")
        if self.color not in COLOR_MODES:
            raise ValueError(f"color must be one of {COLOR_MODES}, got {self.color!r}")

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
