"""Recognise expressions in one image and save an annotated copy.

    python examples/image.py photo.jpg [--out annotated.jpg] [--model int8]

Without a path it uses scikit-image's astronaut photo (public domain), so it runs offline.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from fer_onnx import EmotionRecognizer, draw_faces, load_image


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "image", nargs="?", type=Path, help="image file (default: skimage astronaut)"
    )
    parser.add_argument("--out", type=Path, default=None, help="write an annotated copy here")
    parser.add_argument(
        "--model", default="default", help="'default', 'fp32', 'int8' or an .onnx path"
    )
    args = parser.parse_args(argv)
    if args.image is None:
        from skimage import data

        image = np.ascontiguousarray(data.astronaut()[:, :, ::-1])
    else:
        image = load_image(args.image)
    with EmotionRecognizer(args.model) as rec:
        faces = rec.recognize(image)
    for face in faces:
        top3 = sorted(face.probabilities.items(), key=lambda kv: -kv[1])[:3]
        print(
            face.box.to_tuple(),
            face.label,
            f"{face.score:.3f}",
            "top-3:",
            ", ".join(f"{k} {v:.2f}" for k, v in top3),
        )
    if not faces:
        print("no face found")
    if args.out is not None:
        cv2.imwrite(str(args.out), draw_faces(image, faces))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
