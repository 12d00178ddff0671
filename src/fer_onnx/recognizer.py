"""``EmotionRecognizer``: face detection, cropping and one batched ONNX run per image."""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from fer_onnx._checks import _shown, check_bool, is_real_number
from fer_onnx.alignment import frame_face
from fer_onnx.detectors import Detector, HaarDetector, fit_detections
from fer_onnx.errors import (
    FerOnnxError,
    InvalidImageError,
    InvalidOptionError,
    InvalidTypeError,
    ModelLoadError,
    ModelOutputError,
    NoDetectorError,
    RecognizerClosedError,
)
from fer_onnx.images import BoxLike, ImageInput, crop_faces, load_image, to_box
from fer_onnx.metadata import ModelInfo, are_probabilities, check_input
from fer_onnx.preprocessing import prepare_faces
from fer_onnx.session import (
    Device,
    ProviderSpec,
    SessionConfig,
    check_model_file,
    create_session,
    resolve_providers,
)
from fer_onnx.types import Box, Detection, Emotion, FaceEmotion
from fer_onnx.yunet import YuNetDetector

log = logging.getLogger(__name__)

__all__ = [
    "BUNDLED_MODELS",
    "DEFAULT_MODEL",
    "MAX_BATCH",
    "DetectorSpec",
    "EmotionRecognizer",
    "bundled_model_path",
    "make_detector",
    "resolve_model",
]

BUNDLED_MODELS = ("accurate", "fast", "fp32", "int8")
"""Names of the classifiers shipped inside the package (``model="accurate"`` ...).

* ``"accurate"``: MobileNet v1 at 96 px fine-tuned from a face-pretrained start, int8;
* ``"fast"``: the MobileNetV2 at 64 px, int8;
* ``"fp32"``: the ``fast`` network in float32; ``"int8"``: another name of ``"fast"``
  (``"fp32"`` and ``"int8"`` named the only two files of earlier releases, and still do).

See the model card for how each was made and measured.
"""
BUNDLED_FILES = {"accurate": "accurate", "fast": "int8", "fp32": "fp32", "int8": "int8"}
"""The file (``models/<file>.onnx``) each bundled name loads."""
BUFFER_BYTES = 32 << 20
"""Most bytes of input buffers a recognizer keeps per thread (larger batches allocate anew)."""
MAX_BATCH = 64
"""Most faces per session run: more faces (a crowd, 10,000 boxes, a long list of crops) are
cut, prepared and classified in chunks of this many, so memory stays bounded whatever the
count. A chunk also holds at most :data:`BUFFER_BYTES` of input (fewer faces for large inputs)."""
DEFAULT_MODEL = "accurate"
"""The bundled model used by ``EmotionRecognizer()`` and ``model="default"``.

It is ``"accurate"`` when a still 640x480 frame with one face stays at least 5x faster with it
than with the ``fer`` package (measured side by side by the benchmarks), otherwise ``"fast"``;
a package that lacks the file falls back to ``"fast"``, then ``"fp32"``.
"""


def _bundled_file(name: str) -> Path:
    file = BUNDLED_FILES.get(name, name)
    return Path(str(resources.files("fer_onnx") / "models" / f"{file}.onnx"))


def bundled_model_path(name: str) -> Path:
    """Path of a bundled model (one of :data:`BUNDLED_MODELS`, or ``"default"``).

    Raises:
        InvalidTypeError: ``name`` is not a ``str``.
        ModelLoadError: The name is unknown or the file is not in this installation.
    """
    if not isinstance(name, str):
        raise InvalidTypeError(
            f"a bundled model name must be a str {('default', *BUNDLED_MODELS)}, got "
            f"{type(name).__name__}"
        )
    if name == "default":
        name = next(
            (n for n in (DEFAULT_MODEL, "fast", "fp32") if _bundled_file(n).is_file()), "fp32"
        )
    if name not in BUNDLED_MODELS:
        raise ModelLoadError(
            f"unknown bundled model {name!r}; choose one of "
            f"{('default', *BUNDLED_MODELS)} or pass a path to an .onnx file"
        )
    path = _bundled_file(name)
    if not path.is_file():
        raise ModelLoadError(
            f"the bundled {name!r} model is not in this installation ({path} is missing). "
            "Reinstall fer-onnx, or pass model='path/to/model.onnx' (a classifier carrying "
            "fer-onnx metadata; `fer-onnx model stamp` adds it to a foreign one)."
        )
    return path


def resolve_model(model: str | os.PathLike[str]) -> Path:
    """The file ``model`` names: a bundled model or the path of an existing ONNX file.

    Bundled models are named by a ``str``: ``"default"`` or one of :data:`BUNDLED_MODELS`.

    Every entry point that takes a model (``EmotionRecognizer``, ``fer-onnx model inspect``,
    ``model stamp``'s input and ``--crop-template-from``) resolves it here.

    Raises:
        InvalidTypeError: ``model`` is neither a ``str`` nor an ``os.PathLike``.
        ModelLoadError: The bundled model is not installed, or the file does not exist.
    """
    if isinstance(model, str) and (model == "default" or model in BUNDLED_MODELS):
        return bundled_model_path(model)
    if isinstance(model, (bytes, bytearray)) or not isinstance(model, (str, os.PathLike)):
        raise InvalidTypeError(
            f"model must be {('default', *BUNDLED_MODELS)} or the path of an .onnx file "
            f"(str or os.PathLike), got {type(model).__name__}"
        )
    path = Path(model)
    if str(model) in ("", "-"):
        raise ModelLoadError(
            f"model {str(model)!r} is not a file: give the path of an .onnx file or one of "
            f"the bundled models {('default', *BUNDLED_MODELS)}"
        )
    try:
        check_model_file(path)
    except ModelLoadError as e:
        raise ModelLoadError(
            f"{e}. Pass an existing .onnx path or one of the bundled models "
            f"{('default', *BUNDLED_MODELS)}."
        ) from None
    return path


DetectorSpec = Detector | str | os.PathLike[str] | None
"""What ``detector=`` accepts: ``"yunet"``, ``"haar"``, a YuNet file path, an object, ``None``."""


def make_detector(
    detector: DetectorSpec,
    providers: Sequence[ProviderSpec],
    session_config: SessionConfig | None = None,
) -> Detector | None:
    """Build the detector named by ``detector`` (see :class:`EmotionRecognizer`).

    YuNet models run on ``providers`` with ``session_config``, like the classifier.
    """
    if detector is None:
        return None
    if isinstance(detector, str) and detector == "yunet":
        return YuNetDetector(providers=providers, session_config=session_config)
    if isinstance(detector, str) and detector == "haar":
        return HaarDetector()
    if isinstance(detector, (str, os.PathLike)):
        path = Path(detector)
        if not path.is_file():
            raise InvalidOptionError(
                f"detector must be 'yunet', 'haar', the path of a YuNet .onnx file or a "
                f"Detector object; {str(detector)!r} is none of these (no such file)"
            )
        return YuNetDetector(path, providers=providers, session_config=session_config)
    if not isinstance(detector, Detector) or not callable(getattr(detector, "detect", None)):
        raise InvalidTypeError(
            "detector must be 'yunet', 'haar', the path of a YuNet .onnx file, None, or an "
            "object with a detect(image) -> Sequence[Detection | Box] method; got "
            f"{type(detector).__name__}"
        )
    return detector


class EmotionRecognizer:
    """Recognise facial expressions in images with an ONNX model.

    Example:
        >>> with EmotionRecognizer() as rec:                      # doctest: +SKIP
        ...     for face in rec.recognize("group.jpg"):
        ...         print(face.box, face.label, face.score)

    Args:
        model: ``"default"``, a bundled model name (``"accurate"``, ``"fast"``, ``"fp32"``,
            ``"int8"``: see :data:`BUNDLED_MODELS`) or the path of an ONNX file with fer-onnx
            metadata (labels, input size, colour mode, value range).
        detector: ``"yunet"`` (default: the bundled YuNet CNN, run on the same providers and
            session options as the classifier), ``"haar"`` (OpenCV's frontal-face cascade, the
            original notebooks' detector), the path of another YuNet ``.onnx`` file, any
            object with ``detect(image) -> Sequence[Detection | Box]``, or ``None`` to only
            classify given boxes/crops.
        device: ``"auto"`` (CUDA when onnxruntime offers it, else CPU), ``"cpu"`` or
            ``"cuda"``; leave it at ``"auto"`` when ``providers`` is given (both at once is
            an :class:`~fer_onnx.InvalidOptionError`).
        providers: Explicit onnxruntime providers, names or ``(name, options)`` pairs.
        session_config: Threads and graph optimisation of the onnxruntime session.
        align: ``True`` or ``False``. When the model describes its framing (a crop template
            in its metadata), warp faces with landmarks onto it and cut box-only faces to
            match it. ``False``, or a model without a template, crops each box as it is
            (grown by ``margin``).
        margin: Grow each box by this fraction of its size on every side before a plain
            crop. Only plain crops use it: with ``align=True`` and a model that carries a
            crop template (every bundled model does), every face is framed by the template,
            whatever the detector, so a ``margin`` above 0 is refused there.

    Raises:
        ModelLoadError: The model is missing, corrupt, or lacks fer-onnx metadata (or has
            implausible metadata, see :meth:`~fer_onnx.metadata.ModelInfo.from_metadata`).
        InvalidTypeError: ``model``, ``detector`` or ``align`` is of the wrong type
            (``align`` must be a bool: ``align="no"`` would be true).
        InvalidOptionError: ``margin`` or ``device`` is out of range, or ``margin`` is above
            0 where it cannot apply (``align=True`` with a model that carries a crop
            template).
        ProviderError: A requested execution provider is not available.
        DetectorError: The face detector cannot be created.
    """

    def __init__(
        self,
        model: str | Path = "default",
        *,
        detector: DetectorSpec = "yunet",
        device: Device = "auto",
        providers: Sequence[ProviderSpec] | None = None,
        session_config: SessionConfig | None = None,
        align: bool = True,
        margin: float = 0.0,
    ) -> None:
        if (
            not isinstance(margin, (int, float))
            or isinstance(margin, bool)
            or not math.isfinite(margin)
            or not 0.0 <= margin <= 1.0
        ):
            raise InvalidOptionError(f"margin must be a number within 0..1, got {margin!r}")
        align = check_bool("align", align)
        if providers is not None and device != "auto":
            raise InvalidOptionError(
                f"pass either device={device!r} or providers=[...], not both: providers "
                "already say where to run"
            )
        path = resolve_model(model)
        self.model_path = path
        self.margin = margin
        chosen = resolve_providers(device, providers)
        self._session: ort.InferenceSession | None = create_session(path, chosen, session_config)
        self.info = ModelInfo.from_metadata(
            self._session.get_modelmeta().custom_metadata_map, source=str(path)
        )
        low, high = self.info.value_range
        # Faces are prepared as 0..255; a model that wants another range gets a linear map.
        self._value_map = None if (low, high) == (0.0, 255.0) else ((high - low) / 255.0, low)
        self._input_name, self._channels_first = self._check_io()
        if margin > 0 and align and self.info.template is not None:
            raise InvalidOptionError(
                f"margin={margin:g} cannot apply: {path.name} frames every face with its crop "
                "template (align=True), and margin only grows plain box crops. Pass "
                "align=False (--no-align on the command line) to crop boxes grown by the "
                "margin, or leave margin at 0"
            )
        self.align = align
        self.detector = make_detector(detector, chosen, session_config)
        self._closed = False
        self._lock = threading.Lock()
        self._buffers = threading.local()

    def _check_io(self) -> tuple[str, bool]:
        assert self._session is not None
        inputs = self._session.get_inputs()
        outputs = self._session.get_outputs()
        if len(inputs) != 1 or len(outputs) < 1:
            raise ModelLoadError(
                f"{self.model_path}: expected one input and one output, got "
                f"{len(inputs)} inputs and {len(outputs)} outputs"
            )
        spec = self.info.input
        shape = list(inputs[0].shape)
        if len(shape) != 4:
            raise ModelLoadError(f"{self.model_path}: expected a 4-D image input, got {shape}")
        check_input(str(self.model_path), inputs[0].type, shape)
        nhwc = [spec.height, spec.width, spec.channels]
        nchw = [spec.channels, spec.height, spec.width]
        dims = [d if isinstance(d, int) else None for d in shape[1:]]

        def fits(expected: list[int]) -> bool:
            return all(d is None or d == e for d, e in zip(dims, expected, strict=True))

        if fits(nhwc):
            channels_first = False
        elif fits(nchw):
            channels_first = True
        else:
            raise ModelLoadError(
                f"{self.model_path}: input shape {shape} does not match its metadata "
                f"({spec.height}x{spec.width}, {spec.color})"
            )
        out_shape = outputs[0].shape
        if len(out_shape) != 2 or (
            isinstance(out_shape[1], int) and out_shape[1] != len(self.info.labels)
        ):
            raise ModelLoadError(
                f"{self.model_path}: output shape {out_shape} does not match "
                f"its {len(self.info.labels)} labels"
            )
        return str(inputs[0].name), channels_first

    # -- public API -------------------------------------------------------------------------

    @property
    def labels(self) -> tuple[str, ...]:
        """Class names in model order, read from the model's metadata."""
        return self.info.labels

    @property
    def providers(self) -> list[str]:
        """Execution providers the session really uses, in priority order."""
        return list(self._live_session().get_providers())

    def recognize(
        self, image: ImageInput, boxes: Sequence[BoxLike] | None = None
    ) -> list[FaceEmotion]:
        """Find faces in an image and classify their expressions.

        Faces go through batched session runs of at most :data:`MAX_BATCH` faces (one run
        for a typical photo).

        Boxes, the detector's or the caller's, are clipped to the image: a face partly
        outside is cut at the edge and its result's ``box`` is the clipped one. A box wholly
        outside the image is refused (a caller's with
        :class:`~fer_onnx.InvalidImageError`, a detector's with
        :class:`~fer_onnx.DetectorError`): no emotion is ever given for a face that cannot
        be seen. A detector's landmarks that cannot frame a face (5 (nearly) identical
        points, points far from the box) are dropped with a logged warning: that face is cut
        at its box and its result has ``landmarks=None``.

        Args:
            image: A path, a numpy image (HxW gray, HxWx1, HxWx3 BGR, HxWx4 BGRA; uint8) or
                a PIL image.
            boxes: Faces in image pixels, to skip detection: a list of boxes, each
                ``(x, y, width, height)`` (four numbers), a :class:`~fer_onnx.Box` or a
                :class:`~fer_onnx.Detection` (whose landmarks, if any, frame the face as a
                detector's do, and whose score is the result's ``detection_score``). Boxes
                are clipped to the image; one box is passed as ``[box]``.

        Returns:
            One :class:`FaceEmotion` per face, left to right (or in ``boxes`` order); ``[]``
            when there is no face.

        Raises:
            InvalidImageError: The image (or a box) is not valid; the message says why
                (one box not wrapped in a list, a value that is not a finite number, a box
                wholly outside the image).
            DetectorError: The detector returned something other than a list of Detection or
                Box objects, or a box outside the image.
            FerOnnxError: The recognizer is closed, or has no detector and no boxes were given.
        """
        self._check_open()
        array = load_image(image)
        height, width = array.shape[:2]
        detector = self.detector  # read once: close() may clear it from another thread
        if boxes is None:
            if detector is None:
                self._check_open()
                raise NoDetectorError(
                    "this recognizer has no detector: pass boxes=[...] or create "
                    "it with detector='yunet'"
                )
            # Reading order (left to right, then top to bottom) makes results deterministic.
            found = sorted(
                fit_detections(
                    detector.detect(array), width, height, source="the detector's detect()"
                ),
                key=lambda d: (d.box.x, d.box.y),
            )
        else:
            found = _given_faces(
                boxes, width, height, source="recognize(boxes=...)", error=InvalidImageError
            )
        if not found:
            return []
        probs = np.concatenate([self._run(self._cut(array, part)) for part in self._chunks(found)])
        return [
            FaceEmotion(d.box, *self._top(p), detection_score=d.score, landmarks=d.landmarks)
            for d, p in zip(found, probs, strict=True)
        ]

    def cut_faces(
        self, image: npt.NDArray[np.uint8], detections: Sequence[BoxLike]
    ) -> list[npt.NDArray[np.uint8]]:
        """The crop/align stage: one face image per detection, framed as the model expects.

        With ``align`` and a model that carries a crop template, faces with landmarks are
        warped onto it at the model's input size and box-only faces are cut to match its box;
        otherwise each box is cropped as it is, grown by ``margin``. Detections are checked
        as :meth:`recognize` checks a detector's: boxes are clipped to the image, landmarks
        that cannot frame a face are ignored (the face is cut at its box).

        Args:
            image: The image the detections were found in.
            detections: Faces in pixels of ``image``, as :meth:`recognize` takes ``boxes``:
                :class:`~fer_onnx.Detection` or :class:`~fer_onnx.Box` objects, or
                ``(x, y, width, height)`` numbers.

        Returns:
            One uint8 face image per detection, in order.

        Raises:
            InvalidImageError: ``image`` is not a valid image.
            InvalidOptionError: ``detections`` is not a list of boxes (Detection, Box or four
                numbers), or a box lies outside the image.
        """
        array = load_image(image)
        height, width = array.shape[:2]
        found = _given_faces(
            detections, width, height, source="cut_faces()", error=InvalidOptionError
        )
        return self._cut(array, found)

    def _cut(
        self, image: npt.NDArray[np.uint8], detections: Sequence[Detection]
    ) -> list[npt.NDArray[np.uint8]]:
        template = self.info.template if self.align else None
        if template is None:
            return crop_faces(image, [d.box for d in detections], self.margin)
        size = (self.info.input.height, self.info.input.width)
        return [frame_face(image, d, template, size) for d in detections]

    def classify(self, crops: Sequence[ImageInput] | npt.NDArray[Any]) -> list[Emotion]:
        """Classify already-cropped faces of any size in batched session runs.

        Crops are read (paths decoded), prepared and classified :data:`MAX_BATCH` at a time,
        so memory stays bounded however many there are.

        Args:
            crops: A sequence of face images (each a path, numpy image or PIL image), or a
                ``(N, H, W, C)`` uint8 array (a stack of grey crops as ``crops[..., None]``).

        Returns:
            One :class:`Emotion` per crop, in order.

        Raises:
            InvalidImageError: A crop is not a valid image; the message names its index.
        """
        return [Emotion(*self._top(p)) for p in self._predict_items(crops, "classify")]

    def close(self) -> None:
        """Release the onnxruntime sessions and buffers.

        Later calls raise :class:`~fer_onnx.RecognizerClosedError`.
        """
        with self._lock:
            self._closed = True
            self._session = None
            self._buffers = threading.local()
            self.detector = None

    def __enter__(self) -> EmotionRecognizer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        self.close()
        return False

    def __repr__(self) -> str:
        state = "closed" if self._closed else ",".join(self.providers)
        return (
            f"EmotionRecognizer(model={str(self.model_path)!r}, labels={len(self.labels)}, "
            f"detector={self.detector!r}, {state})"
        )

    # -- internals --------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise RecognizerClosedError("this EmotionRecognizer is closed; create a new one")

    def _live_session(self) -> ort.InferenceSession:
        session = self._session
        if session is None:
            raise RecognizerClosedError("this EmotionRecognizer is closed; create a new one")
        return session

    def _top(self, probs: npt.NDArray[np.floating[Any]]) -> tuple[str, float, dict[str, float]]:
        index = int(np.argmax(probs))
        values = probs.astype(np.float64)
        values = values / values.sum()
        distribution = dict(zip(self.labels, (float(v) for v in values), strict=True))
        return self.labels[index], distribution[self.labels[index]], distribution

    def predict(self, faces: Sequence[ImageInput] | npt.NDArray[Any]) -> npt.NDArray[np.float32]:
        """Class probabilities for face crops, as an ``(N, K)`` array.

        The low-level batch entry point (no result objects): session runs of at most
        :data:`MAX_BATCH` faces. Accepts what :meth:`classify` accepts, and rejects what it
        rejects.
        """
        return self._predict_items(faces, "predict")

    def _predict_items(self, crops: Any, method: str) -> npt.NDArray[np.float32]:
        """:meth:`predict` with the method named in error messages (``classify``/``predict``)."""
        self._check_open()
        items = _as_crops(crops, method)
        parts = [np.zeros((0, len(self.labels)), np.float32)]
        for start, chunk in self._chunks_at(items):
            images = []
            for i, crop in enumerate(chunk, start):
                try:
                    images.append(load_image(crop))
                except InvalidImageError as e:
                    raise type(e)(f"crop {i}: {e}") from e
            parts.append(self._run(images))
        return np.concatenate(parts)

    def _batch_size(self) -> int:
        """Faces per session run: :data:`MAX_BATCH`, fewer when one face's input is large."""
        spec = self.info.input
        per_face = spec.height * spec.width * spec.channels * 4
        return max(1, min(MAX_BATCH, BUFFER_BYTES // per_face))

    def _chunks(self, items: Sequence[Detection]) -> list[Sequence[Detection]]:
        size = self._batch_size()
        return [items[i : i + size] for i in range(0, len(items), size)]

    def _chunks_at(
        self, items: Sequence[Any] | npt.NDArray[Any]
    ) -> list[tuple[int, Sequence[Any] | npt.NDArray[Any]]]:
        size = self._batch_size()
        return [(i, items[i : i + size]) for i in range(0, len(items), size)]

    def _buffer(self, n: int) -> npt.NDArray[np.float32]:
        """A per-thread input buffer for ``n`` faces; at most :data:`BUFFER_BYTES` are kept."""
        spec = self.info.input
        local = self._buffers
        buffers: dict[int, npt.NDArray[np.float32]] = local.__dict__.setdefault("by_size", {})
        buffer = buffers.get(n)
        if buffer is None:
            buffer = np.empty((n, spec.height, spec.width, spec.channels), np.float32)
            kept = sum(b.nbytes for b in buffers.values())
            if kept + buffer.nbytes <= BUFFER_BYTES:
                buffers[n] = buffer
        return buffer

    def _run(self, faces: Sequence[npt.NDArray[np.uint8]]) -> npt.NDArray[np.float32]:
        # One input buffer per thread and batch size: a video loop allocates no new batch.
        batch = prepare_faces(faces, self.info.input, out=self._buffer(len(faces)))
        if self._value_map is not None:
            scale, offset = self._value_map
            batch = batch * np.float32(scale) + np.float32(offset)
        if self._channels_first:
            batch = np.ascontiguousarray(batch.transpose(0, 3, 1, 2))
        session = self._live_session()
        (out,) = session.run(None, {self._input_name: batch})[:1]
        values = np.asarray(out, dtype=np.float32)
        if values.shape != (len(faces), len(self.labels)):
            raise ModelOutputError(
                f"model returned shape {values.shape}, expected ({len(faces)}, {len(self.labels)})"
            )
        if not np.isfinite(values).all():
            raise ModelOutputError(
                f"{self.model_path.name} returned non-finite values (NaN or inf) for "
                f"{int((~np.isfinite(values).all(axis=1)).sum())} of {len(faces)} faces"
            )
        if self.info.output == "logits":
            values = values - values.max(axis=1, keepdims=True)
            np.exp(values, out=values)
            values /= values.sum(axis=1, keepdims=True)
        elif not are_probabilities(values):
            raise ModelOutputError(
                f"{self.model_path.name} returned values that are not probabilities (rows must "
                "be >= 0 and sum to 1). If it outputs logits, say so in its metadata: "
                "fer-onnx model stamp ... --softmax (metadata key fer_onnx.output = logits)."
            )
        else:
            # an int8 model's softmax output is quantized (steps of 1/255), so its rows sum to 1
            # only within about 1%: every row returned is >= 0 and sums to 1
            np.clip(values, 0.0, None, out=values)
            values /= values.sum(axis=1, keepdims=True)
        return values


_BOXES = "a list of boxes, each (x, y, width, height), a Box or a Detection"


def _given_faces(
    boxes: object, width: int, height: int, *, source: str, error: type[FerOnnxError]
) -> list[Detection]:
    """A caller's faces (``recognize``'s ``boxes``, ``cut_faces``' detections), checked.

    Each item is ``(x, y, width, height)`` (:func:`~fer_onnx.images.to_box`), a
    :class:`~fer_onnx.Box` or a :class:`~fer_onnx.Detection`; then all go through
    :func:`~fer_onnx.detectors.fit_detections` as a detector's faces do.

    Raises:
        FerOnnxError: ``error``: not a list of boxes (one box not wrapped in a list is named
            as such), a malformed box, or a box wholly outside the image.
    """
    if isinstance(boxes, (Box, Detection)):
        raise error(
            f"{source} takes {_BOXES}; got one {type(boxes).__name__}: wrap it in a list, "
            f"[{type(boxes).__name__.lower()}]"
        )
    if (
        isinstance(boxes, (str, bytes, bytearray))
        or not isinstance(boxes, (Sequence, np.ndarray))
        or (isinstance(boxes, np.ndarray) and boxes.ndim == 0)
    ):
        raise error(f"{source} takes {_BOXES}; got {type(boxes).__name__}")
    if len(boxes) == 4 and all(is_real_number(v) for v in boxes):
        shown = _shown(tuple(boxes.tolist() if isinstance(boxes, np.ndarray) else boxes))
        raise error(f"{source} takes {_BOXES}; got one box {shown}: wrap it in a list, [{shown}]")
    faces = [
        item if isinstance(item, (Box, Detection)) else to_box(item, width, height, i, error=error)
        for i, item in enumerate(boxes)
    ]
    return fit_detections(faces, width, height, source=source, error=error)


def _as_crops(crops: Any, method: str) -> Sequence[Any] | npt.NDArray[Any]:
    """Check the container of crops for ``classify`` / ``predict`` (each crop is read later)."""
    if crops is None:
        raise InvalidImageError(f"{method}() expects a sequence of face crops, got None")
    if isinstance(crops, np.ndarray) and not (crops.ndim == 1 and crops.dtype == object):
        if crops.ndim in (2, 3) and crops.dtype != object:
            raise InvalidImageError(
                f"{method}() takes a batch: a list of crops or an (N, H, W, C) array, got one "
                f"array of shape {crops.shape}; wrap a single crop as [crop] (a stack of grey "
                "crops as crops[..., None])"
            )
        if crops.ndim not in (3, 4):
            raise InvalidImageError(
                f"{method}() takes a list of crops or an (N, H, W, C) array, got an array of "
                f"shape {crops.shape}"
            )
    elif isinstance(crops, (str, bytes, os.PathLike)) or not isinstance(crops, Sequence):
        what = type(crops).__name__
        raise InvalidImageError(
            f"{method}() takes a list of crops (paths, numpy or PIL images), got {what}; wrap "
            "one crop as [crop]"
        )
    return crops if isinstance(crops, np.ndarray) else list(crops)
