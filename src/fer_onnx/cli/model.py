"""``fer-onnx model inspect|stamp``: what fer-onnx knows of any ONNX file, and stamping.

    fer-onnx model inspect model.onnx [--json]
    fer-onnx model stamp in.onnx out.onnx --labels ... --input-size H W --color gray
                            --value-range 0 1 [--softmax]

The work is done by :func:`fer_onnx.model_tools.inspect_model` and
:func:`fer_onnx.model_tools.stamp_model`; this module parses the command line. ``inspect``
exits with 0 when EmotionRecognizer can run the file (or it is a YuNet detector), 1 when not.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fer_onnx.metadata import KEY_OUTPUT, OUTPUT_KINDS
from fer_onnx.model_tools import inspect_model, stamp_model
from fer_onnx.preprocessing import COLOR_MODES

__all__ = ["add_model_parser"]


def _labels(values: Sequence[str]) -> list[str]:
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def _cmd_inspect(args: argparse.Namespace) -> int:
    report = inspect_model(args.path)
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.format())
    return 0 if report.usable or report.kind == "detector" else 1


def _cmd_stamp(args: argparse.Namespace) -> int:
    report = stamp_model(
        args.source,
        args.target,
        labels=_labels(args.labels),
        input_size=(args.input_size[0], args.input_size[1]),
        color=args.color,
        value_range=(args.value_range[0], args.value_range[1]),
        softmax=args.softmax,
        mean=args.mean,
        std=args.std,
        crop_template=args.crop_template_from,
    )
    print(report.format())
    print(f"wrote {args.target}: EmotionRecognizer(model={str(args.target)!r}) runs it")
    return 0


def add_model_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``fer-onnx model inspect|stamp`` on the CLI's subparsers.

    Args:
        subparsers: The top-level parser's sub-command action (from ``add_subparsers``).

    Returns:
        The ``model`` parser; its sub-commands' ``args.func(args)`` returns the exit code.
    """
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "model",
        help="inspect any ONNX file; stamp fer-onnx metadata into a foreign classifier",
        description="What fer-onnx knows of an ONNX file, and how to make a classifier "
        "exported elsewhere (PyTorch, TensorFlow, ...) usable by EmotionRecognizer.",
    )
    sub = parser.add_subparsers(dest="model_command", required=True, metavar="{inspect,stamp}")
    p = sub.add_parser(
        "inspect",
        help="inputs, outputs, metadata and what is missing",
        description="Print inputs, outputs, metadata, what fer-onnx reads from it and what it "
        "lacks. Exit code 0 when EmotionRecognizer can run it (or it is a YuNet detector), "
        "1 when not.",
    )
    p.add_argument(
        "path",
        help="an .onnx file, or a bundled model: 'default', 'accurate', 'fast', 'fp32' or 'int8'",
    )
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_inspect)

    p = sub.add_parser(
        "stamp",
        help="write fer-onnx metadata into a copy of a foreign classifier",
        description="Copy IN to OUT with the fer-onnx metadata, check that the runtime accepts "
        "it and that its outputs are what you said (probabilities, or logits with --softmax).",
    )
    p.add_argument("source", metavar="IN", help="the foreign .onnx classifier")
    p.add_argument(
        "target", type=Path, metavar="OUT", help="the stamped copy to write (a file, not '-')"
    )
    p.add_argument(
        "--labels",
        nargs="+",
        required=True,
        help="class names in output order, comma- or space-separated",
    )
    p.add_argument(
        "--input-size",
        nargs=2,
        type=int,
        required=True,
        metavar=("HEIGHT", "WIDTH"),
        help="face size the model takes",
    )
    p.add_argument("--color", choices=COLOR_MODES, required=True, help="model's colour mode")
    p.add_argument(
        "--value-range",
        nargs=2,
        type=float,
        required=True,
        metavar=("LOW", "HIGH"),
        help="input range the model was trained on (0 1 for ToTensor, 0 255 for raw pixels)",
    )
    p.add_argument(
        "--softmax",
        action="store_true",
        help=f"the model outputs logits: the runtime applies softmax ({KEY_OUTPUT} = logits; "
        f"kinds: {', '.join(OUTPUT_KINDS)})",
    )
    p.add_argument(
        "--mean",
        nargs="+",
        type=float,
        default=None,
        help="per-channel mean subtracted after --value-range (transforms.Normalize)",
    )
    p.add_argument(
        "--std", nargs="+", type=float, default=None, help="per-channel std, with --mean"
    )
    p.add_argument(
        "--crop-template-from",
        default=None,
        metavar="MODEL",
        help="copy the face framing (crop template) from a bundled model ('default', "
        "'accurate', 'fast', 'fp32', 'int8') or a path",
    )
    p.set_defaults(func=_cmd_stamp)
    return parser
