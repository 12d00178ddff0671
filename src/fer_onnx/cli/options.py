"""Options that several sub-commands share: paths, the model and the face detector.

``image``, ``video`` and ``webcam`` take :func:`add_model_options` and build their recognizer
with :func:`recognizer`; ``batch`` takes :func:`add_detector_options` in its own group and
hands the settings to its workers.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from fer_onnx.detectors import HaarDetector
from fer_onnx.errors import DetectorError, InvalidOptionError
from fer_onnx.recognizer import EmotionRecognizer
from fer_onnx.session import Device
from fer_onnx.yunet import YuNetDetector

__all__ = [
    "HAAR_OPTIONS",
    "add_detector_options",
    "add_model_options",
    "path_argument",
    "positive_int",
    "provider_list",
    "recognizer",
]

HAAR_OPTIONS = ("scale_factor", "min_neighbors", "min_size")
"""The ``argparse`` destinations of the options only the Haar detector takes."""


def path_argument(text: str) -> Path:
    """A path argument (``type=``): ``Path("")`` would silently be the current folder.

    Args:
        text: The argument as given.

    Returns:
        The path.

    Raises:
        argparse.ArgumentTypeError: ``text`` is empty.
    """
    if not text:
        raise argparse.ArgumentTypeError("an empty path; name a file")
    return Path(text)


def provider_list(text: str) -> list[str]:
    """``--providers``' comma-separated onnxruntime provider names (``type=``).

    Args:
        text: The argument as given.

    Returns:
        The names, in order.

    Raises:
        argparse.ArgumentTypeError: A name is empty (``''``, ``'a,,b'``, a trailing comma).
    """
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(
            f"expected comma-separated onnxruntime provider names (such as "
            f"CUDAExecutionProvider,CPUExecutionProvider), got {text!r}"
        )
    return names


def positive_int(text: str) -> int:
    """A whole-number argument of at least 1 (``type=``), refused by its own sub-command.

    Args:
        text: The argument as given.

    Returns:
        The number.

    Raises:
        argparse.ArgumentTypeError: ``text`` is not a whole number of at least 1.
    """
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def add_detector_options(group: Any) -> None:
    """The detector options that ``image``, ``video``, ``webcam`` and ``batch`` share.

    Args:
        group: The parser or argument group to add them to.
    """
    group.add_argument(
        "--detector",
        default="yunet",
        help="'yunet' (default, bundled), 'haar' (OpenCV cascade) or the path of a YuNet .onnx",
    )
    group.add_argument(
        "--score-threshold", type=float, default=None, help="YuNet minimum face score (default 0.7)"
    )
    group.add_argument("--scale-factor", type=float, default=None, help="Haar scale factor")
    group.add_argument("--min-neighbors", type=int, default=None, help="Haar min neighbours")
    group.add_argument(
        "--min-size",
        type=int,
        default=None,
        help="Haar smallest face, pixels of the detection image",
    )
    group.add_argument(
        "--detect-width",
        type=int,
        default=None,
        metavar="N",
        help="detect on a copy this wide (0 = full size; default 320)",
    )


def add_model_options(
    parser: argparse.ArgumentParser, *, workers: bool = False
) -> argparse._ArgumentGroup:
    """The "model and detector" group of ``image``, ``video``, ``webcam`` and ``batch``.

    Args:
        parser: The sub-command's parser.
        workers: The options apply to every worker of a pool (``batch``), as their help says.

    Returns:
        The group, for a sub-command to add options of its own.
    """
    every = " of every worker" if workers else ""
    g = parser.add_argument_group("model and detector")
    g.add_argument(
        "--model",
        default="default",
        help="'default' (= 'accurate'), 'accurate', 'fast', 'fp32', 'int8' (= 'fast') or the "
        "path of an .onnx model (default: default)",
    )
    g.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help=f"execution device{every} (default: auto = CUDA when available)",
    )
    g.add_argument(
        "--providers",
        type=provider_list,
        default=None,
        metavar="LIST" if workers else None,
        help=f"comma-separated onnxruntime providers{every}, overrides --device",
    )
    add_detector_options(g)
    g.add_argument(
        "--no-align",
        action="store_true",
        help="crop boxes as they are instead of framing faces like the model's training data",
    )
    g.add_argument(
        "--margin", type=float, default=0.0, help="grow boxes by this fraction (plain crops)"
    )
    return g


def _check_detector_options(args: argparse.Namespace) -> None:
    """Refuse options of the other detector: they would be silently ignored."""
    haar = [f"--{n.replace('_', '-')}" for n in HAAR_OPTIONS if getattr(args, n) is not None]
    if args.detector == "haar" and args.score_threshold is not None:
        raise InvalidOptionError(
            "--score-threshold is a YuNet option, and --detector haar has no face score; "
            "tune Haar with --scale-factor, --min-neighbors or --min-size, or drop it"
        )
    if args.detector != "haar" and haar:
        raise InvalidOptionError(
            f"{', '.join(haar)} {'is a Haar option' if len(haar) == 1 else 'are Haar options'}, "
            f"and the detector is {args.detector!r}; add --detector haar, or drop "
            f"{'it' if len(haar) == 1 else 'them'} (YuNet takes --score-threshold)"
        )


def _detector(
    args: argparse.Namespace, providers: list[str] | None
) -> HaarDetector | YuNetDetector:
    """The face detector that ``--detector`` and its settings name."""
    kwargs: dict[str, Any] = {}
    if args.detect_width is not None:
        kwargs["detect_width"] = args.detect_width or None
    if args.detector == "haar":
        for name in HAAR_OPTIONS:
            if getattr(args, name) is not None:
                kwargs[name] = getattr(args, name)
        return HaarDetector(**kwargs)
    if args.score_threshold is not None:
        kwargs["score_threshold"] = args.score_threshold
    model = None if args.detector == "yunet" else Path(args.detector)
    if model is not None and not model.is_file():
        raise DetectorError(
            f"--detector {args.detector!r}: expected 'yunet', 'haar' or the path of a YuNet "
            ".onnx file, and no such file exists"
        )
    device: Device = "auto" if providers else args.device
    return YuNetDetector(model, device=device, providers=providers, **kwargs)


def recognizer(args: argparse.Namespace) -> EmotionRecognizer:
    """The recognizer that the options of :func:`add_model_options` describe.

    Args:
        args: The parsed command line.

    Returns:
        An open recognizer; the caller closes it (``with``).

    Raises:
        InvalidOptionError: An option of the other detector was given.
        DetectorError: ``--detector`` is neither a known name nor a file.
    """
    _check_detector_options(args)
    providers: list[str] | None = args.providers
    detector = _detector(args, providers)
    return EmotionRecognizer(
        args.model,
        detector=detector,
        device="auto" if providers else args.device,  # --providers overrides --device
        providers=providers,
        align=not args.no_align,
        margin=args.margin,
    )
