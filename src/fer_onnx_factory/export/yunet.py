"""Make OpenCV's YuNet face detector run on onnxruntime at any input size, and bundle it.

    fer-onnx-factory yunet --src ../shared/models/face_detection_yunet_2023mar.onnx \\
        --out-dir src/fer_onnx/models

The upstream file (OpenCV Zoo, Apache-2.0) fixes its input at 1x3x640x640. Its graph is fully
convolutional and its reshapes use -1, so only the declared shapes pin the size: this rewrites
the input's height and width as symbolic dimensions and drops the recorded intermediate
shapes (outputs keep a symbolic cell count). Weights and operators are unchanged. The result,
with the licence text and a notice of the change beside it, is what ``fer_onnx`` ships in
``src/fer_onnx/models/``.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import onnx

from fer_onnx_factory.cli import command
from fer_onnx_factory.export.onnx import ExportError

NAME = "face_detection_yunet_2023mar.onnx"
NOTICE = """\
face_detection_yunet_2023mar.onnx: YuNet face detector from the OpenCV Zoo
(https://github.com/opencv/opencv_zoo, models/face_detection_yunet), licensed under the
Apache License 2.0 (text in LICENSE.yunet.txt beside this file).

Modified by fer-onnx (fer_onnx_factory/export/yunet.py): the input's height and width are
declared as symbolic dimensions, recorded intermediate shapes are removed and the outputs'
cell counts made symbolic, so onnxruntime accepts any input size that is a multiple of 32.
Weights and operators are unchanged.
"""


def make_dynamic(model: onnx.ModelProto) -> onnx.ModelProto:
    """Return a copy of the YuNet model with symbolic input height and width."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    if len(out.graph.input) != 1:
        raise ExportError(f"expected a YuNet model with one input, got {len(out.graph.input)}")
    dims = out.graph.input[0].type.tensor_type.shape.dim
    if len(dims) != 4:
        raise ExportError(f"expected a 4-D NCHW input, got {len(dims)} dimensions")
    for dim, name in ((dims[2], "height"), (dims[3], "width")):
        dim.Clear()
        dim.dim_param = name
    del out.graph.value_info[:]
    for output in out.graph.output:  # (1, cells, values): the cell count follows the size
        out_dims = output.type.tensor_type.shape.dim
        if len(out_dims) == 3:
            out_dims[1].Clear()
            out_dims[1].dim_param = f"{output.name}_cells"
    onnx.checker.check_model(out)
    return out


@command()
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fer-onnx-factory yunet",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--src", type=Path, required=True, help="upstream face_detection_yunet_2023mar.onnx"
    )
    parser.add_argument(
        "--license",
        type=Path,
        default=None,
        help="its licence text (default: LICENSE.yunet.txt beside --src)",
    )
    parser.add_argument(
        "--out-dir",
        type=Path,
        required=True,
        help="where to write the bundled files (in a checkout: src/fer_onnx/models)",
    )
    args = parser.parse_args(argv)
    licence = args.license or args.src.with_name("LICENSE.yunet.txt")
    for path in (args.src, licence):
        if not path.is_file():
            raise ExportError(f"{path} not found")
    model = make_dynamic(onnx.load(str(args.src)))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(args.out_dir / NAME))
    shutil.copyfile(licence, args.out_dir / "LICENSE.yunet.txt")
    (args.out_dir / "NOTICE.yunet.txt").write_text(NOTICE)
    print(f"wrote {args.out_dir / NAME}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
