"""``python -m fer_onnx.cli``: the ``fer-onnx`` command line."""

from __future__ import annotations

from fer_onnx.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
