"""Measure how a dataset frames its faces, and write that framing into a model.

    python -m export.template measure --data ../shared/data/fer2013/fer2013.csv.gz \\
        --out export/templates/fer2013.json
    python -m export.template stamp src/fer_onnx/models/int8.onnx \\
        --template export/templates/fer2013.json

``measure`` runs the bundled YuNet detector on the Training faces (each 48x48 face upsampled
4x and padded with a replicated border, so the detector sees a whole face at a size it knows),
keeps the best detection per face, and averages the 5 landmarks in the face's own frame, then
with their mirror image (training flips faces, so the template is symmetric). Faces that come
with a box only (the Haar cascade, a caller's boxes) are cut to the template's box: the mean
box OpenCV's frontal-face cascade finds on the same upsampled faces (on ``--box-faces`` of
them). The result, as fractions of the frame, is a :class:`fer_onnx.alignment.CropTemplate`:
the runtime warps faces onto it (rotation, scale, shift) so that they look like the training
data. ``stamp`` writes a template into an ONNX model's metadata (key
``fer_onnx.crop_template``); ``export.bundle --template`` does the same for new models.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from export.onnx import ExportError, save
from fer_onnx.alignment import KEY_CROP_TEMPLATE, CropTemplate
from fer_onnx.detectors import HaarDetector
from fer_onnx.yunet import YuNetDetector
from training.errors import PipelineError

UPSAMPLE = 4
PAD = 64


def _upsampled(face: np.ndarray) -> np.ndarray:
    face = face.reshape(face.shape[0], face.shape[1])
    big = cv2.resize(face, None, fx=UPSAMPLE, fy=UPSAMPLE, interpolation=cv2.INTER_CUBIC)
    return np.asarray(cv2.copyMakeBorder(big, PAD, PAD, PAD, PAD, cv2.BORDER_REPLICATE))


def frame_landmarks(faces: np.ndarray, detector: YuNetDetector) -> tuple[np.ndarray, np.ndarray]:
    """YuNet's best landmarks on each face, in pixels of the face's own frame.

    Args:
        faces: ``(N, H, W[, 1])`` uint8 grey faces.
        detector: A YuNet detector (full size, no downscaling).

    Returns:
        ``found`` ``(N,)`` bool and ``landmarks`` ``(N, 5, 2)`` (NaN where nothing was found).
    """
    landmarks = np.full((len(faces), 5, 2), np.nan)
    for i, face in enumerate(faces):
        found = [d for d in detector.detect(_upsampled(face)) if d.landmarks is not None]
        if found:
            best = max(found, key=lambda d: d.score or 0.0)
            landmarks[i] = (np.asarray(best.landmarks) - PAD) / UPSAMPLE
    return ~np.isnan(landmarks[:, 0, 0]), landmarks


def frame_boxes(faces: np.ndarray, detector: HaarDetector) -> np.ndarray:
    """The box of faces where ``detector`` finds exactly one, in the face's frame, ``(M, 4)``."""
    boxes = []
    for face in faces:
        found = detector.detect(_upsampled(face))
        if len(found) == 1:
            b = found[0].box
            boxes.append([b.x - PAD, b.y - PAD, b.width, b.height])
    return np.asarray(boxes, np.float64).reshape(-1, 4) / UPSAMPLE


MIRROR = (1, 0, 2, 4, 3)
"""Landmark order after a horizontal flip: the eyes swap, and so do the mouth corners."""


def symmetric(points: np.ndarray, width: int) -> np.ndarray:
    """Average ``(5, 2)`` landmarks with their mirror image (training flips faces at random)."""
    mirrored = points[list(MIRROR)].copy()
    mirrored[:, 0] = width - mirrored[:, 0]
    return np.asarray((points + mirrored) / 2, np.float64)


def measure(
    faces: np.ndarray, score_threshold: float = 0.5, box_faces: int = 5000
) -> tuple[CropTemplate, dict[str, Any]]:
    """The mean framing of ``faces`` as a template, and a report of how it was measured."""
    if len(faces) == 0:
        raise ExportError("no faces to measure")
    height, width = faces.shape[1:3]
    detector = YuNetDetector(detect_width=None, score_threshold=score_threshold, device="cpu")
    start = time.perf_counter()
    found, landmarks = frame_landmarks(faces, detector)
    if found.sum() < 10:
        raise ExportError(f"YuNet found landmarks on only {int(found.sum())} of {len(faces)} faces")
    boxes = frame_boxes(faces[:box_faces], HaarDetector(detect_width=None))
    if len(boxes) < 10:
        raise ExportError(f"the Haar cascade found one face on only {len(boxes)} faces")
    scale = np.array([width, height], np.float64)
    mean_points = symmetric(landmarks[found].mean(axis=0), width) / scale
    box = boxes.mean(axis=0)
    box[0] = (box[0] + (width - box[0] - box[2])) / 2  # centred, like the mirrored faces
    mean_box = box / np.array([width, height, width, height])
    spread = float(
        np.sqrt(((landmarks[found] - landmarks[found].mean(axis=0)) ** 2).sum(-1)).mean()
    )
    template = CropTemplate(
        tuple((float(x), float(y)) for x, y in mean_points),
        (float(mean_box[0]), float(mean_box[1]), float(mean_box[2]), float(mean_box[3])),
    )
    report = {
        "faces": len(faces),
        "landmarks_found": int(found.sum()),
        "frame": [int(height), int(width)],
        "landmarks_px": np.round(landmarks[found].mean(axis=0), 2).tolist(),
        "box_faces": min(len(faces), box_faces),
        "box_found": len(boxes),
        "box_px": np.round(boxes.mean(axis=0), 2).tolist(),
        "mean_landmark_spread_px": round(spread, 2),
        "score_threshold": score_threshold,
        "seconds": round(time.perf_counter() - start, 1),
    }
    return template, report


def stamp(model: Path, template: CropTemplate, out: Path | None = None) -> None:
    """Write ``template`` into the metadata of the ONNX file ``model`` (in place by default)."""
    import onnx

    if not model.is_file():
        raise ExportError(f"model not found: {model}")
    proto = onnx.load(str(model))
    props = {p.key: p.value for p in proto.metadata_props}
    props[KEY_CROP_TEMPLATE] = template.to_json()
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, dict(sorted(props.items())))
    save(proto, out or model)


def load_template(path: Path) -> CropTemplate:
    """Read a template written by ``measure`` (its ``template`` entry)."""
    if not path.is_file():
        raise ExportError(f"template file not found: {path}")
    try:
        return CropTemplate.from_json(json.dumps(json.loads(path.read_text())["template"]))
    except (ValueError, KeyError, TypeError) as e:
        raise ExportError(
            f"{path} is not a template written by export.template measure: {e}"
        ) from e


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m export.template",
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
    try:
        if args.command == "measure":
            from training.data import DataError, load_fer2013_csv

            try:
                faces = load_fer2013_csv(args.data, splits=(args.split,))[args.split].images
            except DataError as e:
                raise ExportError(str(e)) from e
            if args.limit:
                faces = faces[: args.limit]
            template, report = measure(faces, args.score_threshold, args.box_faces)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(
                json.dumps(
                    {"template": json.loads(template.to_json()), "measured": report}, indent=2
                )
                + "\n"
            )
            print(json.dumps(report))
            print(f"wrote {args.out}")
        else:
            template = load_template(args.template)
            for model in args.models:
                stamp(model, template)
                print(f"stamped {model}")
    except PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
