"""Exceptions raised by fer-onnx.

Every error the library raises on bad input derives from :class:`FerOnnxError`, so callers can
catch one type; the subclasses say which part failed, and derive from the matching built-in
exception where there is a natural one (``ValueError`` for bad values, ``OSError`` for files).
"""

from __future__ import annotations

__all__ = [
    "DetectorError",
    "FerOnnxError",
    "ImageNotFoundError",
    "InvalidImageError",
    "InvalidOptionError",
    "InvalidTypeError",
    "ModelLoadError",
    "ModelOutputError",
    "NoDetectorError",
    "OutputError",
    "ProviderError",
    "RecognizerClosedError",
    "VideoError",
]


class FerOnnxError(Exception):
    """Base class of every error raised by fer-onnx."""


class InvalidOptionError(FerOnnxError, ValueError):
    """An option (threshold, size, count, ...) is out of range or of the wrong type."""


class InvalidTypeError(InvalidOptionError, TypeError):
    """An argument is of the wrong type (e.g. ``model=None``, ``detector=5``).

    Also a ``TypeError`` (and a ``ValueError``, through :class:`InvalidOptionError`), so code
    written against the built-in exceptions keeps working.
    """


class ModelLoadError(FerOnnxError):
    """A model file is missing, corrupt, or lacks the metadata fer-onnx needs."""


class ModelOutputError(FerOnnxError):
    """A model returned something that is not a valid probability distribution."""


class ProviderError(FerOnnxError):
    """An onnxruntime execution provider was asked for but is not available."""


class InvalidImageError(FerOnnxError, ValueError):
    """An image or face crop is not something the library can read."""


class ImageNotFoundError(InvalidImageError, FileNotFoundError):
    """An image path does not exist."""


class DetectorError(FerOnnxError):
    """A face detector could not be created or run."""


class NoDetectorError(FerOnnxError):
    """``recognize`` was called without boxes on a recognizer created with ``detector=None``."""


class RecognizerClosedError(FerOnnxError):
    """The recognizer was used after ``close()``."""


class VideoError(FerOnnxError):
    """A video source cannot be opened or read."""


class OutputError(FerOnnxError, OSError):
    """An output file cannot be written, or writing it would destroy something the user had."""
