"""fer-onnx: fast facial expression recognition on ONNX Runtime."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("fer-onnx")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = ["__version__"]
