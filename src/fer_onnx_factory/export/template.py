"""Measure how a dataset frames its faces, and write that framing into a model.

    fer-onnx-factory template measure --data ../shared/data/fer2013/fer2013.csv.gz \\
        --out src/fer_onnx_factory/data/templates/fer2013.json
    fer-onnx-factory template stamp src/fer_onnx/models/int8.onnx \\
        --template src/fer_onnx_factory/data/templates/fer2013.json

``measure`` is :func:`fer_onnx_factory.data.framing.measure`; ``stamp`` writes a template into
an ONNX model's metadata (key ``fer_onnx.crop_template``); ``fer-onnx-factory bundle
--template`` does the same for new models.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fer_onnx.alignment import KEY_CROP_TEMPLATE, CropTemplate
from fer_onnx.model_tools import write_metadata
from fer_onnx_factory.cli import command
from fer_onnx_factory.data.framing import load_template, measure
from fer_onnx_factory.export.onnx import ExportError, save


def stamp(model: Path, template: CropTemplate, out: Path | None = None) -> None:
    """Write ``template`` into the metadata of the ONNX file ``model`` (in place by default)."""
    import onnx

    if not model.is_file():
        raise ExportError(f"model not found: {model}")
    proto = onnx.load(str(model))
    props = {p.key: p.value for p in proto.metadata_props}
    props[KEY_CROP_TEMPLATE] = template.to_json()
    write_metadata(proto, props)
    save(proto, out or model)


@command()
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="fer-onnx-factory template",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    m = sub.add_parser("measure", help="measure the mean framing of a dataset's Training faces")
    m.add_argument("--data", type=Path, required=True, help="fer2013.csv[.gz]")
    m.add_argument("--split", default="Training", help="split to measure (default Training)")
    m.add_argument("--limit", type=int, default=0, help="only the first N faces (0 = all)")
    m.add_argument("--score-threshold", type=float, default=0.5, help="YuNet minimum score")
    m.add_argument("--box-faces", type=int, default=5000, help="faces the Haar box is measured on")
    m.add_argument("--out", type=Path, required=True, help="template JSON to write")
    s = sub.add_parser("stamp", help="write a template into ONNX models' metadata")
    s.add_argument("models", type=Path, nargs="+", help="ONNX files to update in place")
    s.add_argument("--template", type=Path, required=True, help="JSON written by measure")
    args = parser.parse_args(argv)
    if args.command == "measure":
        from fer_onnx_factory.data.datasets import DataError, load_fer2013_csv

        try:
            faces = load_fer2013_csv(args.data, splits=(args.split,))[args.split].images
        except DataError as e:
            raise ExportError(str(e)) from e
        if args.limit:
            faces = faces[: args.limit]
        template, report = measure(faces, args.score_threshold, args.box_faces)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps({"template": json.loads(template.to_json()), "measured": report}, indent=2)
            + "\n"
        )
        print(json.dumps(report))
        print(f"wrote {args.out}")
    else:
        template = load_template(args.template)
        for model in args.models:
            stamp(model, template)
            print(f"stamped {model}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
