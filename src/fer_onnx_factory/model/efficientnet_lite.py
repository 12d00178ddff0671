"""EfficientNet-Lite0 as a Keras model, and the mapping of its PyTorch state dict onto it.

EfficientNet-Lite (Google's ``tensorflow/tpu`` ``efficientnet/lite``) is EfficientNet-B0's
MBConv network made friendly to quantisation and to mobile accelerators: no squeeze-and-
excitation, ReLU6 instead of swish, and the stem (32 channels) and head (1280 channels) kept
at their width whatever the scaling. Lite0 has width and depth 1.0 and works at 224 px:

* stem: 3x3 convolution, stride 2, 32 channels, BatchNormalization, ReLU6;
* 16 MBConv blocks in 7 stages (:data:`LITE0_STAGES`): an optional 1x1 expansion (BN,
  ReLU6), a depthwise kxk convolution (BN, ReLU6), a 1x1 projection (BN, no activation), and
  the input added back where stride is 1 and the width does not change;
* head: 1x1 convolution to 1280 channels, BN, ReLU6 (then pooling and the classifier, which
  are not part of the backbone).

Every convolution pads like TensorFlow's ``SAME`` (PyTorch's port pads statically to the
same effect) and has no bias; every BN has epsilon ``1e-3``. The Keras layers are named after
their place in the network; :func:`lite_layer_weights` maps the tensors of the PyTorch port
(``efficientnet-lite-pytorch``'s names: ``_conv_stem``, ``_bn0``, ``_blocks.{i}.
_expand_conv`` ...) onto them one to one, and :func:`torch_features` runs the state dict as
that port does (PyTorch, for the conversion check only).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fer_onnx_factory.errors import PipelineError

EPSILON = 1e-3
"""BatchNormalization epsilon of EfficientNet-Lite (TensorFlow's and the PyTorch port's)."""


@dataclass(frozen=True)
class Stage:
    """One stage of MBConv blocks (the first one carries the stride and the width change)."""

    repeats: int
    kernel: int
    stride: int
    expand: int
    c_in: int
    c_out: int


@dataclass(frozen=True)
class Block:
    """One MBConv block."""

    kernel: int
    stride: int
    expand: int
    c_in: int
    c_out: int

    @property
    def residual(self) -> bool:
        """Whether the block's input is added to its output."""
        return self.stride == 1 and self.c_in == self.c_out


LITE0_STAGES = (
    Stage(1, 3, 1, 1, 32, 16),
    Stage(2, 3, 2, 6, 16, 24),
    Stage(2, 5, 2, 6, 24, 40),
    Stage(3, 3, 2, 6, 40, 80),
    Stage(3, 5, 1, 6, 80, 112),
    Stage(4, 5, 2, 6, 112, 192),
    Stage(1, 3, 1, 6, 192, 320),
)
"""EfficientNet-Lite0's stages (``efficientnet_lite_builder``: ``r1_k3_s11_e1_i32_o16`` ...)."""

STEM, HEAD = 32, 1280
"""Lite0's stem and head widths."""


def blocks(stages: Sequence[Stage]) -> list[Block]:
    """The blocks of ``stages`` in order: each stage's first block strides and widens."""
    out: list[Block] = []
    for s in stages:
        out.append(Block(s.kernel, s.stride, s.expand, s.c_in, s.c_out))
        out.extend(Block(s.kernel, 1, s.expand, s.c_out, s.c_out) for _ in range(s.repeats - 1))
    return out


def efficientnet_lite(
    input_shape: tuple[int, int, int],
    stages: Sequence[Stage] = LITE0_STAGES,
    stem: int = STEM,
    head: int = HEAD,
    name: str = "efficientnet_lite0",
) -> Any:
    """The EfficientNet-Lite backbone (no pooling, no classifier) as a Keras functional model.

    Takes images already scaled to what the weights expect (Lite0: ``(x - 127) / 128``).
    """
    import keras

    layers = keras.layers

    def conv_bn(x: Any, filters: int, prefix: str, relu: bool) -> Any:
        x = layers.Conv2D(filters, 1, padding="same", use_bias=False, name=f"{prefix}_conv")(x)
        x = layers.BatchNormalization(epsilon=EPSILON, name=f"{prefix}_bn")(x)
        return layers.ReLU(6.0, name=f"{prefix}_relu")(x) if relu else x

    inputs = keras.Input(input_shape, name="images")
    x = layers.Conv2D(stem, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = layers.BatchNormalization(epsilon=EPSILON, name="stem_bn")(x)
    x = layers.ReLU(6.0, name="stem_relu")(x)
    for i, b in enumerate(blocks(stages)):
        p = f"block{i}"
        y = conv_bn(x, b.c_in * b.expand, f"{p}_expand", relu=True) if b.expand != 1 else x
        y = layers.DepthwiseConv2D(
            b.kernel, strides=b.stride, padding="same", use_bias=False, name=f"{p}_dw_conv"
        )(y)
        y = layers.BatchNormalization(epsilon=EPSILON, name=f"{p}_dw_bn")(y)
        y = layers.ReLU(6.0, name=f"{p}_dw_relu")(y)
        y = conv_bn(y, b.c_out, f"{p}_project", relu=False)
        x = layers.Add(name=f"{p}_add")([y, x]) if b.residual else y
    x = conv_bn(x, head, "head", relu=True)
    return keras.Model(inputs, x, name=name)


def _layer_names(stages: Sequence[Stage]) -> dict[str, tuple[str, str]]:
    """Keras layer name -> (PyTorch module prefix, kind: conv / depthwise / bn)."""
    names = {"stem_conv": ("_conv_stem", "conv"), "stem_bn": ("_bn0", "bn")}
    for i, b in enumerate(blocks(stages)):
        k, t = f"block{i}", f"_blocks.{i}."
        if b.expand != 1:
            names[f"{k}_expand_conv"] = (f"{t}_expand_conv", "conv")
            names[f"{k}_expand_bn"] = (f"{t}_bn0", "bn")
        names[f"{k}_dw_conv"] = (f"{t}_depthwise_conv", "depthwise")
        names[f"{k}_dw_bn"] = (f"{t}_bn1", "bn")
        names[f"{k}_project_conv"] = (f"{t}_project_conv", "conv")
        names[f"{k}_project_bn"] = (f"{t}_bn2", "bn")
    names["head_conv"] = ("_conv_head", "conv")
    names["head_bn"] = ("_bn1", "bn")
    return names


_BN_FIELDS = ("weight", "bias", "running_mean", "running_var")
"""PyTorch BN tensors in the order of Keras' weights (gamma, beta, moving mean, variance)."""

IGNORED = ("_fc.weight", "_fc.bias")
"""The ImageNet classifier: not part of the backbone."""


def lite_layer_weights(
    state: dict[str, np.ndarray], stages: Sequence[Stage] = LITE0_STAGES
) -> dict[str, list[np.ndarray]]:
    """Map the PyTorch port's state dict onto :func:`efficientnet_lite`'s layers, one to one.

    Convolutions go from PyTorch's ``(out, in, h, w)`` to Keras' ``(h, w, in, out)``,
    depthwise kernels from ``(channels, 1, h, w)`` to ``(h, w, channels, 1)``, BN layers take
    weight, bias, running mean and running variance. Every tensor of the state dict but the
    classifier and the BN step counters must be used.

    Raises:
        PipelineError: A tensor is missing, or left over (not the expected network).
    """
    used: set[str] = set()

    def get(key: str) -> np.ndarray:
        if key not in state:
            raise PipelineError(f"the state dict lacks {key!r}: not an EfficientNet-Lite")
        used.add(key)
        return np.asarray(state[key], np.float32)

    out: dict[str, list[np.ndarray]] = {}
    for layer, (prefix, kind) in _layer_names(stages).items():
        if kind == "bn":
            out[layer] = [get(f"{prefix}.{field}") for field in _BN_FIELDS]
        elif kind == "conv":
            out[layer] = [get(f"{prefix}.weight").transpose(2, 3, 1, 0)]
        else:
            out[layer] = [get(f"{prefix}.weight").transpose(2, 3, 0, 1)]
    left = sorted(
        k for k in set(state) - used - set(IGNORED) if not k.endswith(".num_batches_tracked")
    )
    if left:
        raise PipelineError(f"the state dict has tensors the network does not use: {left[:5]}")
    return out


def torch_features(
    state: dict[str, np.ndarray], stages: Sequence[Stage] = LITE0_STAGES
) -> Callable[[Any], np.ndarray]:
    """The PyTorch port's network as ``f(images NHWC, scaled) -> pooled head features``.

    Runs the state dict the way ``efficientnet-lite-pytorch`` 0.1.0's ``EfficientNet.
    extract_features`` does in eval mode (TensorFlow-style ``SAME`` padding, BN with running
    statistics and epsilon 1e-3, ReLU6, residuals where stride is 1 and the width is kept),
    then averages over space. Needs PyTorch; for checking conversions only.

    Raises:
        PipelineError: PyTorch is not installed.
    """
    try:
        import torch
        import torch.nn.functional as F  # noqa: N812
    except ImportError as e:
        raise PipelineError(
            "checking the EfficientNet-Lite conversion runs the original PyTorch network: "
            "install PyTorch (the CPU build is enough: pip install torch) and run again"
        ) from e
    t = {k: torch.from_numpy(np.array(v)) for k, v in state.items() if k not in IGNORED}

    def same(x: Any, key: str, stride: int, groups: int = 1) -> Any:
        w = t[f"{key}.weight"]
        pads = []
        for size, k in zip(reversed(x.shape[-2:]), reversed(w.shape[-2:]), strict=True):
            total = max((math.ceil(size / stride) - 1) * stride + k - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), w, None, stride, 0, 1, groups)

    def bn(x: Any, key: str, relu: bool = True) -> Any:
        m, v, g, b = (t[f"{key}.{f}"] for f in ("running_mean", "running_var", "weight", "bias"))
        y = F.batch_norm(x, m, v, g, b, False, 0.0, EPSILON)
        return F.relu6(y) if relu else y

    def forward(images: Any) -> np.ndarray:
        with torch.no_grad():
            x = torch.from_numpy(np.array(images, np.float32)).permute(0, 3, 1, 2)
            x = bn(same(x, "_conv_stem", 2), "_bn0")
            for i, b in enumerate(blocks(stages)):
                p = f"_blocks.{i}."
                y = bn(same(x, f"{p}_expand_conv", 1), f"{p}_bn0") if b.expand != 1 else x
                y = bn(same(y, f"{p}_depthwise_conv", b.stride, groups=y.shape[1]), f"{p}_bn1")
                y = bn(same(y, f"{p}_project_conv", 1), f"{p}_bn2", relu=False)
                x = y + x if b.residual else y
            x = bn(same(x, "_conv_head", 1), "_bn1")
            return np.asarray(x.mean(dim=(2, 3)).numpy())

    return forward
