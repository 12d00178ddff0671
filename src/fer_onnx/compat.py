"""A drop-in for users of the ``fer`` package: ``from fer_onnx.compat import FER, Video``.

The classes here keep the public behaviour of ``fer`` 25.10.3 (``fer.FER``, ``fer.Video``,
``fer.exceptions.InvalidImage``) and run fer-onnx underneath: the bundled ONNX classifier and
the library's face detectors (``mtcnn=True`` selects YuNet, the default is OpenCV's Haar
cascade with fer's parameters, so the boxes are the ones ``fer`` finds).

Example:
    >>> from fer_onnx.compat import FER                          # doctest: +SKIP
    >>> FER().detect_emotions("justin.jpg")
    [{'box': [..], 'emotions': {'angry': 0.0, 'disgust': 0.0, 'fear': 0.0, 'happy': 0.98, ...}}]

What is kept from ``fer``:

* results are ``[{"box": [x, y, w, h], "emotions": {label: score}}]``, labels in fer's order
  (:data:`FER_LABELS`), scores rounded to two decimals as ``fer`` rounds them; each box is
  typed as ``fer`` types it (a row of OpenCV's int32 array with the Haar cascade, a list of
  ints with ``mtcnn=True``), and a box passed in ``face_rectangles`` comes back as the caller's
  object, unchanged;
* images are numpy arrays (BGR or grey), paths, ``data:image/...`` base64 URIs or
  ``http(s)://`` URLs; ``None``, unreadable files and other types raise :class:`InvalidImage`;
* ``Video.analyze`` writes the same files (annotated frames zipped into ``images.zip``, an
  annotated ``<name>_output<ext>`` video, ``data.csv`` in the working directory for
  ``output="csv"``) and returns the same list of per-frame dicts.

What differs is listed in the documentation page ``docs/compat.md``: unsupported options
(``tfserving``, ``lang`` other than ``"en"``, ``include_audio``) raise instead of being
silently used, options that would change ``fer``'s results and not ours (``use_tflite=False``,
``offsets``) warn, errors during a video are raised instead of logged, and pandas is optional.
"""

from __future__ import annotations

import base64
import binascii
import csv
import importlib
import logging
import os
import re
import urllib.error
import urllib.request
import warnings
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Protocol

import cv2
import numpy as np
import numpy.typing as npt

from fer_onnx import (
    Box,
    Detection,
    Detector,
    EmotionRecognizer,
    Frame,
    HaarDetector,
    InvalidImageError,
    InvalidOptionError,
    ModelLoadError,
    OutputError,
    VideoError,
    VideoSink,
    VideoSource,
    YuNetDetector,
    finish_all,
    load_image,
    open_video,
)
from fer_onnx.detectors import scale_boxes, to_gray
from fer_onnx.images import decode_image
from fer_onnx.session import Device

log = logging.getLogger(__name__)

__all__ = [
    "FER",
    "FER_LABELS",
    "FaceResult",
    "InvalidImage",
    "Video",
    "draw_annotations",
    "read_image",
]

FER_LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
"""The labels of ``fer``'s results, in its order (``FER._get_labels()``).

This is ``fer``'s output format, not a description of the model: each model label is mapped
onto it by name.
"""

FaceResult = dict[str, Any]
"""One face as ``fer`` returns it: ``{"box": [x, y, w, h], "emotions": {label: score}}``.

The box is a row of OpenCV's int32 array with the Haar cascade, a list of ints with
``mtcnn=True``, or the caller's own object when it came in ``face_rectangles``.
"""

URL_TIMEOUT_S = 10.0
"""Seconds to wait for an image URL, as ``fer`` waits."""

_VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".avi")
"""Input suffixes whose annotated copy keeps the suffix; any other input gets ``.mp4``."""

_BOX_COLOR = (0, 155, 255)
_SCORE_COLOR = (0, 255, 0)
_FAINT_COLOR = (211, 211, 211)


class InvalidImage(InvalidImageError):  # noqa: N818 - fer's name, kept for drop-in use
    """``fer.exceptions.InvalidImage``: the image is missing, unreadable or not an image.

    It derives from :class:`~fer_onnx.InvalidImageError` (and so from ``ValueError``), so
    ``except InvalidImage`` and ``except fer_onnx.InvalidImageError`` both catch it.
    """


# -- images -----------------------------------------------------------------------------------


def _decode(data: bytes, what: str) -> npt.NDArray[np.uint8]:
    """Decode through the library's guarded decoder (declared size checked before decoding)."""
    try:
        return decode_image(data, what)
    except InvalidImageError as e:
        raise InvalidImage(str(e)) from e


def _from_base64(uri: str) -> npt.NDArray[np.uint8]:
    _, _, payload = uri.partition(",")
    try:
        data = base64.b64decode(payload, validate=False)
    except (binascii.Error, ValueError) as e:
        raise InvalidImage(f"cannot decode the base64 image URI: {e}") from e
    return _decode(data, "the base64 image URI")


def _from_url(url: str) -> npt.NDArray[np.uint8]:
    try:
        with urllib.request.urlopen(url, timeout=URL_TIMEOUT_S) as response:
            data = response.read()
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise InvalidImage(f"failed to download image from URL {url}: {e}") from e
    return _decode(data, f"the download of {url}")


def read_image(img: object) -> npt.NDArray[np.uint8]:
    """Load an image as ``fer`` accepts it; every failure is :class:`InvalidImage`.

    Args:
        img: A numpy image (BGR, BGRA or grey, uint8), a path (``str`` or ``os.PathLike``),
            a ``data:image/...;base64,...`` URI, an ``http(s)://`` URL or a PIL image.

    Returns:
        The validated uint8 image (grey, BGR or BGRA).

    Raises:
        InvalidImage: The image is ``None``, missing, unreadable or of another type.
    """
    if isinstance(img, str) and img.startswith("data:image/"):
        return _from_base64(img)
    if isinstance(img, str) and img.startswith(("http://", "https://")):
        return _from_url(img)
    try:
        return load_image(img)  # type: ignore[arg-type]  # validated inside
    except InvalidImageError as e:
        raise InvalidImage(str(e)) from e


# -- FER ----------------------------------------------------------------------------------------


def _caller_box(rect: object, index: int, width: int, height: int) -> Box | None:
    """The part of a caller's ``(x, y, w, h)`` inside the image, or ``None`` if none is."""
    try:
        values = np.asarray(rect, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as e:
        raise InvalidImage(f"face_rectangles[{index}]: expected (x, y, w, h), got {rect!r}") from e
    if values.size != 4 or not np.isfinite(values).all():
        raise InvalidImage(f"face_rectangles[{index}]: expected (x, y, w, h), got {rect!r}")
    x, y, w, h = (round(float(v)) for v in values)
    x1, y1, x2, y2 = max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)
    if x2 <= x1 or y2 <= y1:
        return None
    return Box(x1, y1, x2 - x1, y2 - y1)


class _FerCascade(HaarDetector):
    """``fer``'s cascade search: the whole image at full size, with ``fer``'s flags.

    Unlike :class:`~fer_onnx.HaarDetector`, a large photo is not shrunk first (``fer`` has no
    cap), and :meth:`rects` gives OpenCV's own result, which ``fer`` returns as it is.
    """

    def rects(self, image: npt.NDArray[np.uint8]) -> npt.NDArray[np.int32] | tuple[()]:
        """``detectMultiScale``'s ``(N, 4)`` int32 array of ``x, y, w, h``, or ``()``."""
        p = self.params
        found = self._classifier().detectMultiScale(
            to_gray(image),
            scaleFactor=p.scale_factor,
            minNeighbors=p.min_neighbors,
            flags=cv2.CASCADE_SCALE_IMAGE,
            minSize=(p.min_size, p.min_size),
        )
        return np.asarray(found, dtype=np.int32) if len(found) else ()

    def detect_gray(self, gray: npt.NDArray[np.uint8]) -> list[Box]:
        """Faces of a grey image searched at full size, as ``fer`` searches it."""
        return scale_boxes(self.rects(gray), 1.0, gray.shape[1], gray.shape[0])


def _warn_ignored(use_tflite: bool, offsets: tuple[Any, ...]) -> None:
    """Warn once per call for a ``fer`` option that changes ``fer``'s results and not ours."""
    if not use_tflite:
        warnings.warn(
            "use_tflite=False is ignored: fer-onnx always runs its ONNX model (fer would run "
            "its Keras model)",
            UserWarning,
            stacklevel=3,
        )
    if offsets != (10, 10):
        warnings.warn(
            f"offsets={offsets} is ignored: fer-onnx frames each face as its model was trained "
            "to (fer would pad its crop by these offsets)",
            UserWarning,
            stacklevel=3,
        )


class FER:
    """``fer.FER`` on fer-onnx: find faces and score their expressions.

    Args:
        cascade_file: A Haar cascade XML file (default: OpenCV's frontal-face cascade, as
            ``fer``).
        mtcnn: ``True`` detects faces with the bundled YuNet CNN instead of the Haar cascade
            (``fer`` uses MTCNN; YuNet plays its part: a CNN detector that also finds turned
            faces). ``scale_factor``, ``min_face_size`` and ``min_neighbors`` are Haar options.
        tfserving: Not supported (the model runs in-process); ``True`` raises.
        use_tflite: Accepted for ``fer`` 25.10 compatibility and ignored (``False`` warns):
            ONNX Runtime always runs the model.
        scale_factor: Haar pyramid step, greater than 1.
        min_face_size: Smallest face the Haar cascade looks for, in pixels.
        min_neighbors: Haar detections needed to keep a face.
        offsets: ``fer``'s padding around each face before classification; validated as
            ``fer`` does, but not used (a value other than ``(10, 10)`` warns): the model
            frames faces as it was trained to (see :meth:`fer_onnx.EmotionRecognizer.cut_faces`).
        model: fer-onnx only: a bundled model name (``"default"``, ``"accurate"``,
            ``"fast"``, ``"fp32"``, ``"int8"``) or the path of an ONNX model whose labels are
            among :data:`FER_LABELS`.
        device: fer-onnx only: ``"auto"``, ``"cpu"`` or ``"cuda"``.

    Raises:
        ValueError: An option is out of range (:class:`~fer_onnx.InvalidOptionError`).
        ModelLoadError: The model cannot be loaded or has labels ``fer`` does not know.
        DetectorError: The cascade file cannot be loaded.
    """

    def __init__(
        self,
        cascade_file: str | os.PathLike[str] | None = None,
        mtcnn: bool = False,
        tfserving: bool = False,
        use_tflite: bool = True,
        scale_factor: float = 1.1,
        min_face_size: int = 50,
        min_neighbors: int = 5,
        offsets: tuple[int, int] | list[int] = (10, 10),
        *,
        model: str | os.PathLike[str] = "default",
        device: Device = "auto",
    ) -> None:
        if scale_factor <= 1.0:
            raise InvalidOptionError("scale_factor must be greater than 1.0")
        if min_face_size < 1:
            raise InvalidOptionError("min_face_size must be at least 1")
        if min_neighbors < 0:
            raise InvalidOptionError("min_neighbors must be non-negative")
        if not isinstance(offsets, (tuple, list)) or len(offsets) != 2:
            raise InvalidOptionError("offsets must be a tuple or list of length 2")
        if tfserving:
            raise InvalidOptionError(
                "tfserving=True is not supported: fer-onnx runs the model in-process with ONNX "
                "Runtime (no TensorFlow Serving); drop tfserving=True"
            )
        _warn_ignored(use_tflite, tuple(offsets))
        self.tfserving = False
        self.use_tflite = use_tflite
        self.offsets = tuple(offsets)
        self.emotions: list[FaceResult] = []
        if mtcnn:
            self.detector: Detector = YuNetDetector(device=device)
        else:
            self.detector = _FerCascade(
                scale_factor=scale_factor,
                min_neighbors=min_neighbors,
                min_size=min_face_size,
                detect_width=None,
                cascade=None if cascade_file is None else Path(cascade_file),
            )
        self.recognizer = EmotionRecognizer(
            Path(model) if isinstance(model, os.PathLike) else model, detector=None, device=device
        )
        unknown = [label for label in self.recognizer.labels if label not in FER_LABELS]
        if unknown:
            self.recognizer.close()
            raise ModelLoadError(
                f"{self.recognizer.model_path} has labels {unknown} that fer does not know; "
                f"fer_onnx.compat needs a model whose labels are among {list(FER_LABELS)}"
            )
        labels = self.recognizer.labels
        self._columns = [labels.index(name) if name in labels else None for name in FER_LABELS]

    def __repr__(self) -> str:
        return f"FER(detector={self.detector!r}, model={self.recognizer.model_path.name!r})"

    def __enter__(self) -> FER:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        self.close()
        return False

    def close(self) -> None:
        """Release the ONNX Runtime sessions (``fer`` has no such method; optional)."""
        self.recognizer.close()

    @staticmethod
    def _get_labels() -> dict[int, str]:
        """``fer``'s label of each output column: ``{0: "angry", ..., 6: "neutral"}``."""
        return dict(enumerate(FER_LABELS))

    def _faces(self, image: npt.NDArray[np.uint8]) -> tuple[list[Any], list[Detection]]:
        """Each face's box as ``fer`` returns it, and as a detection to classify.

        The Haar cascade's boxes are rows of OpenCV's int32 array, as in ``fer``; YuNet's (the
        ``mtcnn=True`` detector) are lists of ints, as ``fer``'s MTCNN path makes them.
        """
        if isinstance(self.detector, _FerCascade):
            rows = list(self.detector.rects(image))
            return rows, [Detection(Box(*(int(v) for v in row))) for row in rows]
        detections = [
            d if isinstance(d, Detection) else Detection(d) for d in self.detector.detect(image)
        ]
        return [list(d.box.to_tuple()) for d in detections], detections

    def find_faces(
        self, img: object, bgr: bool = True, gray_img: npt.NDArray[np.uint8] | None = None
    ) -> Any:
        """Face boxes ``x, y, w, h`` in the detector's order, typed as ``fer`` types them.

        Args:
            img: An image, as :meth:`detect_emotions` takes it.
            bgr: Kept for ``fer`` compatibility: colour or grey is read from the array.
            gray_img: A grey copy of ``img`` to search instead (as ``fer``'s Haar path).

        Returns:
            With the Haar cascade, OpenCV's ``(N, 4)`` int32 array, or ``()`` when there is no
            face (what ``fer`` returns); with ``mtcnn=True``, a list of ``[x, y, w, h]`` lists.

        Raises:
            InvalidImage: The image is not valid.
        """
        del bgr  # the array's shape says whether it is grey
        image = read_image(gray_img if gray_img is not None else img)
        if isinstance(self.detector, _FerCascade):
            return self.detector.rects(image)
        return self._faces(image)[0]

    def _scores(self, probabilities: npt.NDArray[np.float32]) -> dict[str, float]:
        return {
            label: 0.0 if column is None else round(float(probabilities[column]), 2)
            for label, column in zip(FER_LABELS, self._columns, strict=True)
        }

    def detect_emotions(
        self, img: object, face_rectangles: Iterable[Any] | None = None
    ) -> list[FaceResult]:
        """Find faces (or take ``face_rectangles``) and score their expressions.

        Args:
            img: A numpy image (BGR or grey, uint8), a path, a ``data:image/`` base64 URI or an
                ``http(s)://`` URL.
            face_rectangles: Boxes ``(x, y, w, h)`` to classify instead of detecting faces.
                Boxes are clipped to the image; an empty box, or one wholly outside the
                image, is skipped with a logged warning.

        Returns:
            ``[{"box": box, "emotions": {label: score}}]``, one per face, in detection order
            (or in ``face_rectangles`` order, each box as given; a found box is typed as
            :meth:`find_faces` types it); scores are rounded to two
            decimals; ``[]`` when there is no face.

        Raises:
            InvalidImage: The image (or a rectangle) is not valid.
        """
        image = read_image(img)
        if face_rectangles is None:
            boxes, detections = self._faces(image)
        else:
            height, width = image.shape[:2]
            detections, boxes = [], []
            for index, rect in enumerate(face_rectangles):
                box = _caller_box(rect, index, width, height)
                if box is None:
                    log.warning(
                        "face_rectangles[%d] %r is empty or lies outside the %dx%d image: skipped",
                        index,
                        rect,
                        width,
                        height,
                    )
                    continue
                detections.append(Detection(box))
                boxes.append(rect)
        if not detections:
            return []
        probabilities = self.recognizer.predict(self.recognizer.cut_faces(image, detections))
        emotions = [
            {"box": box, "emotions": self._scores(p)}
            for box, p in zip(boxes, probabilities, strict=True)
        ]
        self.emotions = emotions
        return emotions

    def batch_detect_emotions(self, imgs: Sequence[object]) -> list[list[FaceResult]]:
        """:meth:`detect_emotions` for each image, in order."""
        return [self.detect_emotions(img) for img in imgs]

    def top_emotion(self, img: object) -> tuple[str, float] | tuple[None, None]:
        """The top label and score of the first face, or ``(None, None)`` with no face.

        Ties (of the rounded scores) go to the label first in :data:`FER_LABELS`, as in ``fer``.

        Raises:
            InvalidImage: The image is not valid.
        """
        faces = self.detect_emotions(img)
        if not faces:
            return (None, None)
        scores: dict[str, float] = faces[0]["emotions"]
        label = max(scores, key=lambda key: scores[key])
        return label, scores[label]


# -- Video --------------------------------------------------------------------------------------


class _EmotionDetector(Protocol):
    def detect_emotions(self, img: Any) -> list[FaceResult]: ...


def draw_annotations(
    frame: npt.NDArray[np.uint8], faces: Sequence[Mapping[str, Any]], size_multiplier: int = 1
) -> npt.NDArray[np.uint8]:
    """Draw ``fer``'s annotations on a copy of ``frame``: each box and its seven scores below.

    Args:
        frame: A BGR (or grey) uint8 image.
        faces: Results of :meth:`FER.detect_emotions`, in ``frame``'s pixels.
        size_multiplier: Scales the text, as in ``fer``.

    Returns:
        The annotated BGR copy.
    """
    out = frame.copy() if frame.ndim == 3 and frame.shape[2] == 3 else _bgr(frame)
    step = 15 * size_multiplier
    for face in faces:
        x, y, w, h = (int(v) for v in face["box"])
        cv2.rectangle(out, (x, y), (x + w, y + h), _BOX_COLOR, 2)
        for idx, (emotion, score) in enumerate(face["emotions"].items()):
            faint = score < 0.01
            cv2.putText(
                out,
                f"{emotion}: " if faint else f"{emotion}: {score:.2f}",
                (x, y + h + step + idx * step),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.5 * size_multiplier,
                _FAINT_COLOR if faint else _SCORE_COLOR,
                size_multiplier,
                cv2.LINE_AA,
            )
    return out


def _bgr(image: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    if image.ndim == 2 or image.shape[2] == 1:
        return np.asarray(cv2.cvtColor(image.reshape(image.shape[:2]), cv2.COLOR_GRAY2BGR))
    return np.asarray(cv2.cvtColor(image, cv2.COLOR_BGRA2BGR))


def _crop(frame: npt.NDArray[np.uint8], box: Mapping[str, int]) -> npt.NDArray[np.uint8]:
    return frame[box.get("y_min") : box.get("y_max"), box.get("x_min") : box.get("x_max")]


def _offset(faces: list[FaceResult], box: Mapping[str, int]) -> list[FaceResult]:
    """Move boxes found in a ``detection_box`` crop to frame pixels (a tuple, as ``fer``)."""
    for face in faces:
        x, y, w, h = face["box"]
        face["box"] = (x + box.get("x_min", 0), y + box.get("y_min", 0), w, h)
    return faces


def _show(image: npt.NDArray[np.uint8]) -> bool:
    """Show a frame in a window; ``True`` when the user pressed ``q``."""
    try:
        cv2.imshow("Video", image)
        return (cv2.waitKey(1) & 0xFF) == ord("q")
    except cv2.error as e:
        raise InvalidOptionError(
            "display=True needs OpenCV with GUI support (pip install opencv-python instead of "
            "opencv-python-headless); use display=False to only write the outputs"
        ) from e


def _pandas() -> Any:
    try:
        return importlib.import_module("pandas")
    except ImportError as e:
        raise ImportError(
            "fer_onnx.compat.Video.to_pandas and output='pandas' need pandas: pip install pandas"
        ) from e


def _column_key(name: str) -> tuple[str, int]:
    match = re.match(r"^(\D+)(\d+)$", name)
    if match is None:
        return name, -1
    return match.group(1), int(match.group(2))


def _check_analyze_options(output: str, lang: str, include_audio: bool) -> None:
    """Refuse the options of ``Video.analyze`` that fer-onnx does not serve, before any work.

    Decides: ``output`` is ``"csv"`` or ``"pandas"`` (pandas then importable), ``lang`` is
    ``"en"`` and ``include_audio`` is off.
    """
    if output not in ("csv", "pandas"):
        raise InvalidOptionError(f"output must be 'csv' or 'pandas', got {output!r}")
    if output == "pandas":
        _pandas()  # fail before the work, not after it
    if lang != "en":
        raise InvalidOptionError(
            f"lang={lang!r} is not supported: fer_onnx.compat annotates in English only"
        )
    if include_audio:
        raise InvalidOptionError(
            "include_audio=True is not supported: mux the audio with ffmpeg afterwards"
        )


def _analyze_frame(
    detector: _EmotionDetector,
    image: npt.NDArray[np.uint8],
    detection_box: Mapping[str, int] | None,
    annotate: bool,
    size_multiplier: int,
) -> tuple[list[FaceResult], npt.NDArray[np.uint8]]:
    """The faces of one frame (in frame pixels) and the image to show and write.

    With a ``detection_box`` only that region is searched, and shown; the boxes found are moved
    back to frame pixels after the annotations are drawn on the region.
    """
    region = image if detection_box is None else _crop(image, detection_box)
    faces = detector.detect_emotions(region)
    shown = draw_annotations(region, faces, size_multiplier) if annotate else region
    if detection_box is not None:
        faces = _offset(faces, detection_box)
    return faces, shown


def _stop_after(
    count: int, shown: npt.NDArray[np.uint8], display: bool, max_results: int | None
) -> bool:
    """Whether ``analyze`` stops after its ``count``-th frame.

    With ``display`` the frame is shown first, and ``q`` stops; otherwise it stops once
    ``max_results`` frames (if given and not 0) are analysed.
    """
    return bool((display and _show(shown)) or (max_results and count >= max_results))


class Video:
    """``fer.Video``: analyse a video file frame by frame with a :class:`FER` detector.

    Args:
        video_file: The video's path.
        outdir: Folder for the annotated frames, ``images.zip`` and the annotated video
            (created now, as ``fer`` does).
        first_face_only: :meth:`to_pandas` keeps only the first face's columns.
        tempfile: Write the annotated video here, then move it to its place in ``outdir``.

    Raises:
        VideoError: The file does not exist (``fer`` fails an ``assert``).
    """

    def __init__(
        self,
        video_file: str | os.PathLike[str],
        outdir: str | os.PathLike[str] = "output",
        first_face_only: bool = True,
        tempfile: str | os.PathLike[str] | None = None,
    ) -> None:
        path = os.fspath(video_file)
        if not os.path.isfile(path):
            raise VideoError(f"Video file not found at {os.path.abspath(path)}")
        os.makedirs(outdir, exist_ok=True)
        self.outdir = os.fspath(outdir)
        self.first_face_only = first_face_only
        self.tempfile = None if tempfile is None else os.fspath(tempfile)
        self.filepath = path
        self.filename = os.path.basename(path)

    def analyze(
        self,
        detector: _EmotionDetector,
        display: bool = False,
        output: str = "csv",
        frequency: int | None = None,
        max_results: int | None = None,
        save_fps: float | None = None,
        video_id: str | None = None,
        save_frames: bool = True,
        save_video: bool = True,
        annotate_frames: bool = True,
        zip_images: bool = True,
        detection_box: Mapping[str, int] | None = None,
        lang: str = "en",
        include_audio: bool = False,
        size_multiplier: int = 1,
        batch_size: int = 1,
        use_async_io: bool = True,
    ) -> Any:
        """Recognise the expressions of every ``frequency``-th frame, as ``fer`` does.

        Args:
            detector: A :class:`FER` (anything with ``detect_emotions(frame)``).
            display: Show each annotated frame in a window (needs OpenCV with GUI support);
                ``q`` stops.
            output: ``"csv"``: write ``data.csv`` in the working directory and return its rows
                (``[{"angry0": .., "box0": [..], ...}]``, one dict per frame with faces);
                ``"pandas"``: return :meth:`to_pandas` of the results.
            frequency: Analyse every ``frequency``-th frame (default 1: all).
            max_results: Stop after this many analysed frames (with or without faces).
            save_fps: Analyse ``fps // save_fps`` frames apart (overrides ``frequency``).
            video_id: Prefix of the frame images' names (default: the video's name).
            save_frames: Write each analysed frame to ``outdir`` as ``<prefix><index>.jpg``.
            save_video: Write the analysed frames to ``outdir/<name>_output<ext>`` (``.mp4``
                for suffixes the writer does not serve).
            annotate_frames: Draw boxes and scores on the written frames.
            zip_images: Move the written frames into ``outdir/images.zip``.
            detection_box: Only search ``{"x_min", "x_max", "y_min", "y_max"}`` of each frame;
                boxes are moved back to frame pixels.
            lang: Only ``"en"`` (other languages raise).
            include_audio: Not supported (``True`` raises).
            size_multiplier: Scales the annotation text.
            batch_size: Accepted and ignored (each frame is one batched session run).
            use_async_io: Accepted and ignored.

        Returns:
            See ``output``.

        Raises:
            InvalidOptionError: An option is not valid or not supported.
            VideoError: The video cannot be opened.
            OutputError: An output file cannot be written.
        """
        del batch_size, use_async_io  # fer's performance knobs: no effect on the results
        _check_analyze_options(output, lang, include_audio)
        every = self._frequency(frequency, save_fps)
        root, outfile = self._output_names()
        written: list[Path] = []
        data: list[list[FaceResult]] = []
        with ExitStack() as stack:
            source = stack.enter_context(VideoSource(self.filepath, every=every))
            sink: VideoSink | None = None
            for count, frame in enumerate(source, 1):
                faces, shown = _analyze_frame(
                    detector, frame.image, detection_box, annotate_frames, size_multiplier
                )
                if save_frames:
                    written.append(self._save_frame(shown, f"{video_id or root}{frame.index}.jpg"))
                if save_video:
                    sink = self._write_video_frame(stack, sink, outfile, source, frame, shown)
                if faces:
                    data.append(faces)
                if _stop_after(count, shown, display, max_results):
                    break
            if sink is not None:
                self._finish_video(sink, outfile)
        self._close(written, display, save_frames and zip_images)
        return self.to_format(data, output)

    def _output_names(self) -> tuple[str, str]:
        """The video's name without suffix (the frames' default prefix) and the output video.

        The output is ``outdir/<name>_output<ext>``, ``.mp4`` when the writer does not serve
        the input's suffix.
        """
        root, ext = os.path.splitext(os.path.basename(self.filepath))
        ext = ext if ext.lower() in _VIDEO_SUFFIXES else ".mp4"
        return root, os.path.join(self.outdir, f"{root}_output{ext}")

    def _write_video_frame(
        self,
        stack: ExitStack,
        sink: VideoSink | None,
        outfile: str,
        source: VideoSource,
        frame: Frame,
        shown: npt.NDArray[np.uint8],
    ) -> VideoSink:
        """Append ``shown`` to the output video, opening it (sized by this frame) on first use.

        Returns the sink to pass for the next frame; ``stack`` closes it.
        """
        if sink is None:
            sink = self._open_sink(outfile, source, shown)
            stack.enter_context(sink)
        sink.write(Frame(frame.index, frame.timestamp, shown), [])
        return sink

    def _finish_video(self, sink: VideoSink, outfile: str) -> None:
        """Finish the output video and move it from the temporary file, if any, to ``outfile``."""
        finish_all([sink])
        if self.tempfile:
            os.replace(self.tempfile, outfile)

    def _frequency(self, frequency: int | None, save_fps: float | None) -> int:
        if save_fps is not None:
            if not save_fps > 0:
                raise InvalidOptionError(f"save_fps must be positive, got {save_fps!r}")
            cap, stats = open_video(self.filepath)
            cap.release()
            frequency = max(1, int(stats.fps // save_fps))
            log.info("Saving every %d frames", frequency)
        every = 1 if frequency is None else int(frequency)
        if every < 1:
            raise InvalidOptionError(f"frequency must be at least 1, got {frequency!r}")
        return every

    def _save_frame(self, image: npt.NDArray[np.uint8], name: str) -> Path:
        path = Path(self.outdir) / name
        if not cv2.imwrite(str(path), image):
            raise OutputError(f"cannot write {path}")
        return path

    def _open_sink(
        self, outfile: str, source: VideoSource, first: npt.NDArray[np.uint8]
    ) -> VideoSink:
        if os.path.isfile(outfile):
            log.info("Deleted pre-existing %s", outfile)
            os.remove(outfile)
        size = (first.shape[1], first.shape[0])
        return VideoSink(self.tempfile or outfile, source.stats.fps, size)

    def _close(self, written: list[Path], display: bool, zip_images: bool) -> None:
        if display:
            cv2.destroyAllWindows()
        if zip_images:
            with zipfile.ZipFile(Path(self.outdir) / "images.zip", "w") as archive:
                for path in sorted(written):
                    archive.write(path, arcname=path.name)
            for path in written:
                path.unlink()

    # -- results --------------------------------------------------------------------------

    def to_format(self, data: list[Any], format: str) -> Any:
        """``"csv"``: :meth:`to_csv`; ``"pandas"``: :meth:`to_pandas`."""
        if format == "csv":
            return self.to_csv(data)
        if format == "pandas":
            return self.to_pandas(data)
        raise InvalidOptionError(f"format must be 'csv' or 'pandas', got {format!r}")

    @staticmethod
    def _to_dict(data: list[Any]) -> list[dict[str, Any]]:
        """One flat dict per frame: ``box0``, ``angry0``, ..., ``box1``, ... (as ``fer``)."""
        if not data or isinstance(data[0], dict):
            return list(data)
        try:
            emotions = list(data[0][0]["emotions"])
        except IndexError as e:
            raise InvalidOptionError("No data in 'data'") from e
        rows = []
        for frame in data:
            row: dict[str, Any] = {}
            for idx, face in enumerate(frame):
                if not isinstance(face, dict):
                    break
                row[f"box{idx}"] = face["box"]
                row.update({f"{emo}{idx}": face["emotions"][emo] for emo in emotions})
            rows.append(row)
        return rows

    def to_csv(
        self, data: list[Any], filename: str | os.PathLike[str] = "data.csv"
    ) -> list[dict[str, Any]]:
        """Write the results as CSV (``fer`` writes ``data.csv``); return the rows.

        Columns are sorted by name, then face number (``angry0, angry1, box0, ...``).
        """
        rows = self._to_dict(data)
        columns = sorted({key for row in rows for key in row}, key=_column_key)
        try:
            with open(filename, "w", newline="") as handle:
                writer = csv.DictWriter(handle, columns, lineterminator="\n")
                if columns:
                    writer.writeheader()
                writer.writerows(rows)
        except OSError as e:
            raise OutputError(f"cannot write {os.fspath(filename)}: {e.strerror or e}") from e
        return rows

    def to_pandas(self, data: Any) -> Any:
        """The results as a pandas ``DataFrame``.

        With ``first_face_only``, only the first face's columns, named without the ``0``.

        Raises:
            ImportError: pandas is not installed.
        """
        pd = _pandas()
        if isinstance(data, pd.DataFrame):
            return data
        if not len(data):
            return pd.DataFrame()
        frame = pd.DataFrame(self._to_dict(data))
        return self.get_first_face(frame) if self.first_face_only else frame

    @staticmethod
    def get_first_face(df: Any) -> Any:
        """The first face's columns of ``df``, named without the ``0`` (``box``, ``angry``...).

        A frame whose columns carry no face number is returned as it is.

        Raises:
            TypeError: ``df`` is not a ``DataFrame``.
        """
        pd = _pandas()
        if not isinstance(df, pd.DataFrame):
            raise TypeError(f"get_first_face needs a pandas DataFrame, got {type(df).__name__}")
        if not len(df.columns) or not str(df.columns[0])[-1:].isdigit():
            return df  # already one face
        columns = [c for c in df.columns if re.fullmatch(r"\D+0", str(c))]
        single = df[columns]
        single.columns = [str(c)[:-1] for c in columns]
        return single

    @staticmethod
    def get_emotions(df: Any) -> Any:
        """The emotion columns of ``df`` (every column but the boxes)."""
        return df[[c for c in df.columns if "box" not in str(c)]]
