"""fer-onnx: fast, typed facial expression recognition on ONNX Runtime.

Example:
    >>> from fer_onnx import EmotionRecognizer
    >>> with EmotionRecognizer() as rec:                 # doctest: +SKIP
    ...     for face in rec.recognize("group.jpg"):
    ...         print(face.box, face.label, face.score)

Importing the package loads no model and changes no global setting.
"""

from importlib.metadata import PackageNotFoundError, version

from fer_onnx.detectors import Detector, HaarDetector, RegionDetector
from fer_onnx.draw import draw_faces
from fer_onnx.errors import (
    DetectorError,
    FerOnnxError,
    ImageNotFoundError,
    InvalidImageError,
    InvalidOptionError,
    InvalidTypeError,
    ModelLoadError,
    ModelOutputError,
    NoDetectorError,
    OutputError,
    ProviderError,
    RecognizerClosedError,
    VideoError,
)
from fer_onnx.images import load_image
from fer_onnx.metadata import ModelInfo
from fer_onnx.preprocessing import InputSpec, prepare_faces
from fer_onnx.recognizer import BUNDLED_MODELS, DEFAULT_MODEL, EmotionRecognizer
from fer_onnx.session import SessionConfig
from fer_onnx.sinks import CsvSink, JsonSink, TimelineSink, VideoSink, finish_all
from fer_onnx.types import Box, Detection, Emotion, FaceEmotion, Landmarks
from fer_onnx.video import (
    Frame,
    VideoRecognizer,
    VideoSource,
    VideoStats,
    open_video,
    read_frames,
)
from fer_onnx.yunet import YuNetDetector

try:
    __version__ = version("fer-onnx")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "BUNDLED_MODELS",
    "DEFAULT_MODEL",
    "Box",
    "CsvSink",
    "Detection",
    "Detector",
    "DetectorError",
    "Emotion",
    "EmotionRecognizer",
    "FaceEmotion",
    "FerOnnxError",
    "Frame",
    "HaarDetector",
    "ImageNotFoundError",
    "InputSpec",
    "InvalidImageError",
    "InvalidOptionError",
    "InvalidTypeError",
    "JsonSink",
    "Landmarks",
    "ModelInfo",
    "ModelLoadError",
    "ModelOutputError",
    "NoDetectorError",
    "OutputError",
    "ProviderError",
    "RecognizerClosedError",
    "RegionDetector",
    "SessionConfig",
    "TimelineSink",
    "VideoError",
    "VideoRecognizer",
    "VideoSink",
    "VideoSource",
    "VideoStats",
    "YuNetDetector",
    "__version__",
    "draw_faces",
    "finish_all",
    "load_image",
    "open_video",
    "prepare_faces",
    "read_frames",
]
