"""Align a dataset's faces onto a crop template once, into an ``.npz`` dataset.

    fer-onnx-factory align --data ../shared/data/fer2013/fer2013.csv.gz \\
        --out data/fer2013-aligned.npz

At run time the library warps every face with landmarks onto the model's crop template
(``fer_onnx.alignment``). A model trained on the dataset's own framing sees slightly different
faces there; this command gives training the runtime's framing instead. YuNet finds the 5
landmarks on each face (upsampled 4x with a replicated border, as ``fer-onnx-factory template
measure``
does), and :func:`fer_onnx.alignment.align_face` — the runtime's own function — warps the face
onto the template. Faces where YuNet finds no landmarks keep their framing, which is the
template's box framing by construction of the template; they are counted in the notes.

``fer-onnx-factory train --data data/fer2013-aligned.npz`` and ``fer-onnx-factory bundle
--data data/fer2013-aligned.npz`` read the file like any dataset, so training, PublicTest
selection and the reported figures all see aligned faces; the template stored in the file
becomes the model's contract template, which the runtime then aligns to.

Photos (film frames, studio portraits) in a folder tree are framed the way ``recognize`` frames
them instead, detection included::

    fer-onnx-factory align --photos --data ../shared/data/sfew2 --keep-original \\
        --out data/sfew2-both.npz

and join FER2013 in training with ``fer-onnx-factory train --extra data/sfew2-both.npz``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from fer_onnx_factory.cli import command
from fer_onnx_factory.data.datasets import (
    FER2013_SPEC,
    NPZ_FORMAT,
    Dataset,
    Split,
    limit_rows,
    load,
    load_folder_tree,
)
from fer_onnx_factory.errors import PipelineError

log = logging.getLogger(__name__)


def align_split(
    images: np.ndarray, template: Any, detector: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Aligned faces, which were aligned, and the landmarks found (NaN where none).

    Args:
        images: ``(N, H, W, C)`` uint8 faces.
        template: A :class:`fer_onnx.alignment.CropTemplate`.
        detector: A full-size :class:`fer_onnx.yunet.YuNetDetector`.
    """
    from fer_onnx.alignment import align_face
    from fer_onnx_factory.data.framing import frame_landmarks

    found, landmarks = frame_landmarks(images, detector)
    out = images.copy()
    size = (images.shape[1], images.shape[2])
    for i in np.flatnonzero(found):
        face = images[i]
        warped = align_face(face, landmarks[i], template, size)
        out[i] = warped.reshape(face.shape)
    return out, found, landmarks


def _joined(first: Split, second: Split) -> Split:
    """``first``'s faces, then ``second``'s."""
    return Split(
        np.concatenate([first.images, second.images]),
        np.concatenate([first.labels, second.labels]),
        np.concatenate([first.targets, second.targets]),
        np.concatenate([first.rows, second.rows]),
    )


def frame_photos(
    root: Path, template_path: Path, keep_original: bool = False, limit: int = 0
) -> Dataset:
    """A folder tree of photos (``train/angry/x.jpg``...) framed as the runtime frames them.

    Each photo goes through :class:`~fer_onnx_factory.data.framing.PhotoFramer` (YuNet, the
    face nearest the centre, warped onto the template) before it is brought to FER2013's
    input format. With ``keep_original`` each split holds every photo twice: whole (the crop
    the dataset gives, as ``suite``'s crop sets classify it) first, then framed. ``limit``
    keeps the first photos of each split (in both framings).

    Raises:
        DataError: ``root`` is not a folder tree :func:`load_folder_tree` reads.
    """
    from fer_onnx_factory.data.framing import PhotoFramer, load_template

    template = load_template(template_path)
    framer = PhotoFramer(template, (FER2013_SPEC.height, FER2013_SPEC.width))
    framed = load_folder_tree(root, FER2013_SPEC, frame=framer)
    notes = [*framed.notes, framer.note(str(root), template_path.name)]
    if limit:
        limit_rows(framed, limit)
    splits = framed.splits
    if keep_original:
        whole = load_folder_tree(root, FER2013_SPEC)
        if limit:
            limit_rows(whole, limit)
        splits = {name: _joined(whole[name], split) for name, split in splits.items()}
        notes.append("each photo also kept whole, before its framed face")
    return Dataset(
        splits,
        framed.labels,
        framed.spec,
        framed.source,
        notes,
        template=json.loads(template.to_json()),
    )


def align_dataset(
    dataset: Dataset,
    template_path: Path,
    score_threshold: float = 0.5,
    keep_original: bool = False,
) -> Dataset:
    """Every split of ``dataset`` aligned onto the template in ``template_path``.

    With ``keep_original`` each split holds every face twice, in the dataset's own framing
    (first) and aligned (after it): training on it sees both framings, and selection on its
    PublicTest weighs both equally. Faces without landmarks appear twice in their own framing.
    """
    from fer_onnx.yunet import YuNetDetector
    from fer_onnx_factory.data.framing import load_template

    template = load_template(template_path)
    detector = YuNetDetector(detect_width=None, score_threshold=score_threshold, device="cpu")
    splits: dict[str, Split] = {}
    notes = list(dataset.notes)
    for name, split in dataset.splits.items():
        t0 = time.time()
        images, found, _ = align_split(split.images, template, detector)
        if keep_original:
            splits[name] = _joined(split, Split(images, split.labels, split.targets, split.rows))
        else:
            splits[name] = Split(images, split.labels, split.targets, split.rows)
        missed = int((~found).sum())
        notes.append(
            f"aligned onto {template_path.name}: {name} {len(split) - missed} of {len(split)} "
            f"faces ({missed} without landmarks keep their framing)"
            + (
                f"; each face also kept in its own framing ({2 * len(split)} faces)"
                if keep_original
                else ""
            )
        )
        log.info("%s: %d faces aligned in %.0fs", name, len(split) - missed, time.time() - t0)
    return Dataset(
        splits,
        dataset.labels,
        dataset.spec,
        dataset.source,
        notes,
        template=json.loads(template.to_json()),
    )


def save(dataset: Dataset, path: Path) -> None:
    """Write ``dataset`` (with its template, when it has one) as an ``.npz`` file, atomically."""
    arrays: dict[str, Any] = {
        "format": np.array(NPZ_FORMAT),
        "meta": np.array(
            json.dumps(
                {
                    "labels": list(dataset.labels),
                    "spec": [dataset.spec.height, dataset.spec.width, dataset.spec.color],
                    "source": dataset.source,
                    "notes": dataset.notes,
                    "template": dataset.template,
                    "splits": list(dataset.splits),
                }
            )
        ),
    }
    for name, split in dataset.splits.items():
        for field in ("images", "labels", "targets", "rows"):
            arrays[f"{name}.{field}"] = getattr(split, field)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.npz")
    np.savez_compressed(tmp, **arrays)
    tmp.replace(path)


@command()
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="fer-onnx-factory align",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from fer_onnx_factory.data.framing import FER2013_TEMPLATE

    p.add_argument("--data", required=True, type=Path, help="fer2013.csv[.gz] or folder tree")
    p.add_argument(
        "--photos",
        action="store_true",
        help="--data is a folder tree of photos (train/<class>/*.jpg ...), each framed as the "
        "runtime frames it: YuNet on the whole photo, the face nearest the centre aligned; "
        "a photo without a face is kept whole. Without it, each image is taken to be a "
        "face framed like FER2013's",
    )
    p.add_argument("--out", required=True, type=Path, help="the aligned .npz dataset to write")
    p.add_argument(
        "--template",
        type=Path,
        default=FER2013_TEMPLATE,
        help="crop template JSON (`fer-onnx-factory template measure`)",
    )
    p.add_argument(
        "--limit", type=int, default=0, help="only the first N faces of each split; 0 = all"
    )
    p.add_argument(
        "--keep-original",
        action="store_true",
        help="keep every face twice, in its own framing and then aligned, to train and select "
        "on both framings (a run's --limit N then keeps the first N of each split: the "
        "original framing only; limit here instead)",
    )
    args = p.parse_args(argv)
    if args.out.suffix != ".npz":
        raise PipelineError(f"--out must end in .npz, got {args.out}")
    if args.out.exists():
        raise PipelineError(f"{args.out} exists; remove it or choose another --out")
    if args.photos:
        if not args.data.is_dir():
            raise PipelineError(
                f"--photos needs a folder tree of photos (train/<class>/*.jpg, val/<class>/...); "
                f"{args.data} is not a folder"
            )
        dataset = frame_photos(args.data, args.template, args.keep_original, args.limit)
        save(dataset, args.out)
    else:
        dataset = load(args.data)
        if args.limit:
            limit_rows(dataset, args.limit)
        save(align_dataset(dataset, args.template, keep_original=args.keep_original), args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
