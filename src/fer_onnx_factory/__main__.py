"""``python -m fer_onnx_factory COMMAND ...``, the same as ``fer-onnx-factory COMMAND ...``."""

from fer_onnx_factory.cli import main

raise SystemExit(main())
