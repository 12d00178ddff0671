"""Static QDQ per-channel int8 quantization with onnxruntime, calibrated on real faces.

    fer-onnx-factory quantize --onnx build/fp32.onnx --out build/int8.onnx \\
        --data ../shared/data/fer2013/fer2013.csv.gz --calibration 300

Dynamic quantization is not offered: it makes this CNN about 10x slower on CPU. The int8 model
keeps the fp32 model's metadata (labels, input format, provenance) with ``precision=int8``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from fer_onnx_factory.cli import command


class _Faces:
    """onnxruntime CalibrationDataReader over a stack of faces."""

    def __init__(self, input_name: str, faces: np.ndarray, batch: int = 32) -> None:
        self._batches = iter(
            [
                {input_name: faces[i : i + batch].astype(np.float32)}
                for i in range(0, len(faces), batch)
            ]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def calibration_faces(images: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """``n`` faces drawn without replacement with a fixed seed."""
    if n <= 0 or n > len(images):
        raise ValueError(f"calibration size must be within 1..{len(images)}, got {n}")
    index = np.sort(np.random.default_rng(seed).choice(len(images), size=n, replace=False))
    return images[index]


def quantize(
    fp32_path: Path, out: Path, faces: np.ndarray, extra: dict[str, str] | None = None
) -> Any:
    """Quantize ``fp32_path`` into ``out`` (QDQ, per-channel, s8 weights, u8 activations)."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from fer_onnx.metadata import ModelInfo
    from fer_onnx.model_tools import write_metadata
    from fer_onnx_factory.export.onnx import save

    source = onnx.load(str(fp32_path))
    info = ModelInfo.from_metadata({p.key: p.value for p in source.metadata_props}, str(fp32_path))
    input_name = source.graph.input[0].name
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        q = Path(tmp) / "int8.onnx"
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre),
            str(q),
            _Faces(input_name, faces),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QUInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
        proto = onnx.load(str(q))
    props = {
        **info.extra,
        "precision": "int8",
        "quantization": f"static QDQ per-channel (s8 weights, u8 activations), MinMax "
        f"calibration on {len(faces)} training faces",
        **(extra or {}),
    }
    # Accuracy figures measured on the fp32 model do not describe this one.
    props = {k: v for k, v in props.items() if not k.startswith("onnx_")}
    write_metadata(proto, dataclasses.replace(info, extra=props).to_metadata())
    save(proto, out)
    return proto


@command(ValueError)
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="fer-onnx-factory quantize",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--onnx",
        required=True,
        type=Path,
        help="fp32 model exported by `fer-onnx-factory export`",
    )
    p.add_argument("--out", required=True, type=Path, help="output int8 .onnx")
    p.add_argument("--data", required=True, type=Path, help="fer2013.csv[.gz] (Training split)")
    p.add_argument("--calibration", type=int, default=300, help="number of calibration faces")
    p.add_argument("--seed", type=int, default=0, help="seed for drawing calibration faces")
    args = p.parse_args(argv)
    from fer_onnx_factory.data.datasets import load

    if not args.onnx.is_file():
        print(f"error: {args.onnx} not found", file=sys.stderr)
        return 2
    faces = calibration_faces(load(args.data)["Training"].images, args.calibration, args.seed)
    quantize(args.onnx, args.out, faces)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
