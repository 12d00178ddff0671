"""The one base error of the training and export pipeline.

Every command of ``fer-onnx-factory`` catches :class:`PipelineError` and prints one
line (no traceback) with exit code 2.
"""

from __future__ import annotations


class PipelineError(Exception):
    """A training or export step cannot go on: bad data, missing files, failed checks."""
