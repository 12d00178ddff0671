"""Exceptions raised by fer-onnx.

Every error the library raises on bad input derives from :class:`FerOnnxError`, so callers can
catch one type; the subclasses say which part failed.
"""

from __future__ import annotations

__all__ = [
    "DetectorError",
    "FerOnnxError",
    "InvalidImageError",
    "ModelLoadError",
    "ProviderError",
    "VideoError",
]


class FerOnnxError(Exception):
    """Base class of every error raised by fer-onnx."""


class ModelLoadError(FerOnnxError):
    """A model file is missing, corrupt, or lacks the metadata fer-onnx needs."""


class ProviderError(FerOnnxError):
    """An onnxruntime execution provider was asked for but is not available."""


class InvalidImageError(FerOnnxError, ValueError):
    """An image or face crop is not something the library can read."""


class DetectorError(FerOnnxError):
    """A face detector could not be created or run."""


class VideoError(FerOnnxError):
    """A video source or output cannot be opened, read or written."""
