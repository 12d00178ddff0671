"""Make a folder of photos for the batch throughput benchmark.

    python benchmarks/make_batch_corpus.py --out /tmp/fer_corpus [--count 2000] [--shared ../shared]

Each photo is a 640x480 JPEG canvas (a smooth random background with noise) with real faces
pasted on it: about one canvas in three carries one of the shared photos (``media/*.jpg|png``),
scaled to 200..420 px tall; every canvas carries 1..3 FER2013 faces (48x48 grey, from
``data/fer2013/fer2013.csv.gz``) scaled to 90..170 px with a blurred border, so that the detector
sees a head rather than a tight crop. Canvases go into subfolders of 500 (``000/``, ``001/``, ...)
to exercise the folder search. The same ``--seed`` gives the same corpus. Nothing from the shared
folder is copied whole, and the corpus belongs in a temporary folder, never in the repository.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import os
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WIDTH, HEIGHT = 640, 480


def fer_faces(csv_path: Path, count: int) -> list[np.ndarray]:
    """The first ``count`` FER2013 faces (any split), as 48x48 uint8 arrays."""
    faces = []
    with gzip.open(csv_path, "rt", newline="") as stream:
        for row in csv.DictReader(stream):
            faces.append(np.array(row["pixels"].split(), dtype=np.uint8).reshape(48, 48))
            if len(faces) == count:
                break
    return faces


def background(rng: np.random.Generator) -> np.ndarray:
    small = rng.integers(40, 220, (6, 8, 3), dtype=np.uint8)
    canvas = cv2.resize(small, (WIDTH, HEIGHT), interpolation=cv2.INTER_CUBIC).astype(np.int16)
    canvas += rng.integers(-12, 13, canvas.shape, dtype=np.int16)
    return np.clip(canvas, 0, 255).astype(np.uint8)


def padded_face(face: np.ndarray, size: int) -> np.ndarray:
    """A FER2013 face grown to ``size`` px inside a blurred border (a head, not a crop)."""
    big = cv2.resize(face, (size, size), interpolation=cv2.INTER_CUBIC)
    pad = size // 3
    framed = cv2.copyMakeBorder(big, pad, pad, pad, pad, cv2.BORDER_REFLECT_101)
    blurred = cv2.GaussianBlur(framed, (0, 0), size / 8)
    blurred[pad : pad + size, pad : pad + size] = big
    return cv2.cvtColor(blurred, cv2.COLOR_GRAY2BGR)


def paste(
    canvas: np.ndarray,
    patch: np.ndarray,
    rng: np.random.Generator,
    taken: list[tuple[int, int, int, int]],
) -> None:
    """Paste ``patch`` where it overlaps nothing pasted before (if 50 tries find such a place)."""
    h, w = patch.shape[:2]
    if h > HEIGHT or w > WIDTH:
        scale = min(HEIGHT / h, WIDTH / w)
        patch = cv2.resize(patch, (int(w * scale), int(h * scale)), interpolation=cv2.INTER_AREA)
        h, w = patch.shape[:2]
    for _ in range(50):
        y = int(rng.integers(0, HEIGHT - h + 1))
        x = int(rng.integers(0, WIDTH - w + 1))
        if all(x >= x2 or x + w <= x1 or y >= y2 or y + h <= y1 for x1, y1, x2, y2 in taken):
            break
    taken.append((x, y, x + w, y + h))
    canvas[y : y + h, x : x + w] = patch


def make(out: Path, count: int, shared: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    photos = []
    for path in sorted((shared / "media").iterdir()):
        image = cv2.imread(str(path)) if path.suffix.lower() in (".jpg", ".png") else None
        if image is not None:
            photos.append(image)
    faces = fer_faces(shared / "data" / "fer2013" / "fer2013.csv.gz", 3000)
    for i in range(count):
        canvas = background(rng)
        taken: list[tuple[int, int, int, int]] = []
        if rng.random() < 1 / 3:
            photo = photos[int(rng.integers(len(photos)))]
            height = int(rng.integers(200, 421))
            width = int(photo.shape[1] * height / photo.shape[0])
            paste(
                canvas, cv2.resize(photo, (width, height), interpolation=cv2.INTER_AREA), rng, taken
            )
        for _ in range(int(rng.integers(1, 4))):
            face = faces[int(rng.integers(len(faces)))]
            paste(canvas, padded_face(face, int(rng.integers(90, 171))), rng, taken)
        folder = out / f"{i // 500:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        ok, data = cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, 90])
        if not ok:
            raise SystemExit(f"cannot encode canvas {i}")
        data.tofile(str(folder / f"canvas_{i:05d}.jpg"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder to fill (created)")
    parser.add_argument("--count", type=int, default=2000, help="photos to make (default 2000)")
    parser.add_argument(
        "--shared",
        type=Path,
        default=Path(os.environ.get("FER_ONNX_SHARED", ROOT.parent / "shared")),
        help="the shared data folder (default: $FER_ONNX_SHARED or ../shared)",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for need in (args.shared / "media", args.shared / "data" / "fer2013" / "fer2013.csv.gz"):
        if not need.exists():
            raise SystemExit(f"{need} not found: pass --shared (or set FER_ONNX_SHARED)")
    make(args.out, args.count, args.shared, args.seed)
    print(f"wrote {args.count} photos to {args.out}")


if __name__ == "__main__":
    main()
