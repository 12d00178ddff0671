"""Dataset loaders: Kaggle ``fer2013.csv`` (plain or gzipped), class-folder trees, FER+ votes.

Every loader returns a :class:`Dataset`: uint8 faces already passed through the library's
:func:`fer_onnx.preprocessing.prepare_faces` (so training sees exactly what the runtime feeds
the model), integer labels in FER2013 order, and per-row target distributions.

Bad data stops with a :class:`DataError` naming the file and row or folder. Rows that are
deliberately left out (FER+ rows whose votes are mostly "unknown" or "not a face") are counted
in :attr:`Dataset.notes`, never dropped silently.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from fer_onnx.preprocessing import InputSpec, prepare_faces
from fer_onnx_factory.errors import PipelineError

log = logging.getLogger(__name__)

# The FER2013 label order (emotion column 0..6). This is the dataset's definition; it is
# written into the exported model's metadata, which is where the library reads it from.
FER2013_LABELS: tuple[str, ...] = (
    "angry",
    "disgust",
    "fear",
    "happy",
    "sad",
    "surprise",
    "neutral",
)
FER2013_SPEC = InputSpec(48, 48, "gray")
SPLITS: tuple[str, ...] = ("Training", "PublicTest", "PrivateTest")
PIXELS_PER_FACE = 48 * 48

# Folder names seen in the wild, mapped case-insensitively onto FER2013 labels.
CLASS_ALIASES: dict[str, str] = {
    "angry": "angry",
    "anger": "angry",
    "mad": "angry",
    "disgust": "disgust",
    "disgusted": "disgust",
    "disgusting": "disgust",
    "fear": "fear",
    "fearful": "fear",
    "afraid": "fear",
    "scared": "fear",
    "happy": "happy",
    "happiness": "happy",
    "joy": "happy",
    "sad": "sad",
    "sadness": "sad",
    "surprise": "surprise",
    "surprised": "surprise",
    "neutral": "neutral",
    "calm": "neutral",
}
SPLIT_ALIASES: dict[str, str] = {
    "train": "Training",
    "training": "Training",
    "val": "PublicTest",
    "valid": "PublicTest",
    "validation": "PublicTest",
    "publictest": "PublicTest",
    "test": "PrivateTest",
    "privatetest": "PrivateTest",
}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm"}

# FER+ vote columns and where they go in FER2013's order (None: not one of the 7 classes).
FERPLUS_COLUMNS: tuple[tuple[str, str | None], ...] = (
    ("neutral", "neutral"),
    ("happiness", "happy"),
    ("surprise", "surprise"),
    ("sadness", "sad"),
    ("anger", "angry"),
    ("disgust", "disgust"),
    ("fear", "fear"),
    ("contempt", None),
    ("unknown", None),
    ("NF", None),
)


class DataError(PipelineError, ValueError):
    """The data on disk is not what the loader expects; the message names file and row."""


@dataclass
class Split:
    """One split of a dataset.

    Attributes:
        images: ``(N, H, W, C)`` uint8 faces in the model's input format.
        labels: ``(N,)`` int64 class indices (the label accuracy is reported against).
        targets: ``(N, K)`` float32 training targets (one-hot, or FER+ vote shares).
        rows: ``(N,)`` int64 row numbers in the source (data row index, 0-based).
    """

    images: np.ndarray
    labels: np.ndarray
    targets: np.ndarray
    rows: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray) -> Split:
        return Split(self.images[index], self.labels[index], self.targets[index], self.rows[index])


@dataclass
class Dataset:
    """Splits by name (``Training``, ``PublicTest``, ``PrivateTest``) plus bookkeeping."""

    splits: dict[str, Split]
    labels: tuple[str, ...]
    spec: InputSpec
    source: str
    notes: list[str] = field(default_factory=list)
    template: dict[str, Any] | None = None
    """The crop template the faces were aligned onto (``fer-onnx-factory align``), if any."""

    def __getitem__(self, name: str) -> Split:
        if name not in self.splits:
            raise DataError(f"{self.source}: no {name!r} split (found {sorted(self.splits)})")
        return self.splits[name]

    def summary(self) -> dict[str, object]:
        counts = {
            name: np.bincount(split.labels, minlength=len(self.labels)).tolist()
            for name, split in self.splits.items()
        }
        return {
            "source": self.source,
            "labels": list(self.labels),
            "counts": counts,
            "notes": list(self.notes),
        }


def _one_hot(labels: np.ndarray, k: int) -> np.ndarray:
    out = np.zeros((len(labels), k), dtype=np.float32)
    out[np.arange(len(labels)), labels] = 1.0
    return out


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def _check_file(path: Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    return path


def load_fer2013_csv(path: Path | str, splits: tuple[str, ...] = SPLITS) -> Dataset:
    """Load Kaggle's ``fer2013.csv`` (or ``.csv.gz``) with columns emotion, pixels, Usage.

    Args:
        path: The csv file.
        splits: Which ``Usage`` values to keep; others are counted in ``notes``.

    Raises:
        DataError: Missing columns, a row without 2,304 pixel values, an emotion outside
            0..6, an unknown ``Usage``, or a requested split with no rows.
    """
    path = _check_file(Path(path))
    images: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    labels: dict[str, list[int]] = {s: [] for s in SPLITS}
    rows: dict[str, list[int]] = {s: [] for s in SPLITS}
    try:
        with _open_text(path) as f:
            reader = csv.reader(f)
            header = _fer2013_header(path, next(reader, None))
            for r, rec in enumerate(reader):
                usage, emotion, face = _fer2013_row(path, r + 2, header, rec)
                images[usage].append(face)
                labels[usage].append(emotion)
                rows[usage].append(r)
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: cannot read as csv: {e}") from e
    notes = [
        f"{path.name}: {len(labels[s])} {s} rows not used"
        for s in SPLITS
        if s not in splits and labels[s]
    ]
    out: dict[str, Split] = {}
    for s in splits:
        if not labels[s]:
            raise DataError(f"{path}: split {s!r} is empty (no row with Usage={s})")
        y = np.array(labels[s], dtype=np.int64)
        out[s] = Split(
            np.stack(images[s]),
            y,
            _one_hot(y, len(FER2013_LABELS)),
            np.array(rows[s], dtype=np.int64),
        )
    return Dataset(out, FER2013_LABELS, FER2013_SPEC, str(path), notes)


def _fer2013_header(path: Path, header: list[str] | None) -> list[str]:
    """The csv header, stripped, once it is known to hold emotion, pixels and Usage.

    Raises:
        DataError: The file is empty, or a column is missing.
    """
    if header is None:
        raise DataError(f"{path}: empty file, expected a header emotion,pixels,Usage")
    header = [h.strip() for h in header]
    missing = {"emotion", "pixels", "Usage"} - set(header)
    if missing:
        raise DataError(
            f"{path}: missing column(s) {sorted(missing)}; expected Kaggle's "
            f"fer2013.csv header emotion,pixels,Usage, got {header}"
        )
    return header


def _fer2013_row(
    path: Path, line: int, header: list[str], rec: list[str]
) -> tuple[str, int, np.ndarray]:
    """``(usage, emotion, face)`` of one csv record, or the error naming its ``line``.

    A record must have one field per header column, a ``Usage`` among :data:`SPLITS`, an
    integer emotion in 0..6 and exactly 2,304 integer pixel values in 0..255 (checked in that
    order); the face is returned as a ``(48, 48, 1)`` uint8 array.

    Raises:
        DataError: The first check the record fails.
    """
    if len(rec) != len(header):
        raise DataError(f"{path}, line {line}: expected {len(header)} fields, got {len(rec)}")
    usage = rec[header.index("Usage")].strip()
    if usage not in SPLITS:
        raise DataError(
            f"{path}, line {line}: unknown Usage {usage!r}; expected one of {list(SPLITS)}"
        )
    field = rec[header.index("emotion")]
    try:
        emotion = int(field)
    except ValueError:
        raise DataError(f"{path}, line {line}: emotion {field!r} is not an integer") from None
    if not 0 <= emotion < len(FER2013_LABELS):
        raise DataError(f"{path}, line {line}: emotion {emotion} outside 0..6")
    try:
        pixels = np.array(rec[header.index("pixels")].split(), dtype=np.int64)
    except ValueError:
        raise DataError(f"{path}, line {line}: pixels are not integers") from None
    if pixels.size != PIXELS_PER_FACE:
        raise DataError(
            f"{path}, line {line}: expected {PIXELS_PER_FACE} pixel "
            f"values (48x48), got {pixels.size}"
        )
    if pixels.min() < 0 or pixels.max() > 255:
        raise DataError(f"{path}, line {line}: pixel values outside 0..255")
    return usage, emotion, pixels.astype(np.uint8).reshape(48, 48, 1)


def _iter_images(folder: Path) -> Iterator[Path]:
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
            yield p


Frame = Callable[[np.ndarray], np.ndarray]
"""An image as read (BGR, grey or BGRA uint8) -> the face to keep, before preprocessing."""


def load_folder_tree(
    root: Path | str,
    spec: InputSpec = FER2013_SPEC,
    val_fraction: float = 0.1,
    seed: int = 0,
    frame: Frame | None = None,
) -> Dataset:
    """Load ``root/<split>/<class>/*.png`` (e.g. ``train/angry/0001.png``).

    Split folders: ``train``/``training``; ``val``/``validation``/``publictest`` (selection);
    ``test``/``privatetest`` (final report). Class folders are matched case-insensitively
    (``anger`` -> ``angry``, ``sadness`` -> ``sad``, ...). Images of any size and colour are
    brought to ``spec`` by the library's preprocessing, after ``frame`` (when given) has cut
    the face out of each (``fer-onnx-factory align --photos``). Without a validation folder,
    ``val_fraction`` of the training images (stratified, seeded) becomes ``PublicTest``.

    Raises:
        DataError: No split folders, an unknown split or class folder, an unreadable image,
            or an empty split.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    out: dict[str, Split] = {}
    notes: list[str] = []
    split_dirs = [d for d in sorted(root.iterdir()) if d.is_dir()]
    if not split_dirs:
        raise DataError(f"{root}: expected split folders such as train/ and test/, found none")
    for split_dir in split_dirs:
        split = SPLIT_ALIASES.get(split_dir.name.lower())
        if split is None:
            raise DataError(
                f"{split_dir}: unknown split folder; expected one of {sorted(SPLIT_ALIASES)}"
            )
        if split in out:
            raise DataError(f"{split_dir}: a second folder for split {split}")
        out[split] = _read_split_folder(split_dir, split, spec, frame)
    if "Training" not in out:
        raise DataError(f"{root}: no training folder (train/ or training/)")
    if "PublicTest" not in out:
        train = out["Training"]
        val_mask = _held_out(train.labels, val_fraction, seed)
        if not val_mask.any() or val_mask.all():
            raise DataError(f"{root}: too few training images to hold out a validation split")
        out["PublicTest"] = train.subset(np.flatnonzero(val_mask))
        out["Training"] = train.subset(np.flatnonzero(~val_mask))
        notes.append(
            f"no validation folder: held out {int(val_mask.sum())} training images "
            f"({val_fraction:.0%}, seed {seed}) as PublicTest"
        )
    return Dataset(out, FER2013_LABELS, spec, str(root), notes)


def _read_split_folder(
    split_dir: Path, split: str, spec: InputSpec, frame: Frame | None = None
) -> Split:
    """The images of one split folder, class folder by class folder, brought to ``spec``.

    Class folders are read in name order and their images in name order; each class folder's
    name maps to a FER2013 label through :data:`CLASS_ALIASES`. The rows are numbered from 0.

    Raises:
        DataError: An unknown class folder, an image that is not a readable 8-bit image, or
            no image at all.
    """
    index = {label: i for i, label in enumerate(FER2013_LABELS)}
    faces: list[np.ndarray] = []
    ys: list[int] = []
    for class_dir in sorted(d for d in split_dir.iterdir() if d.is_dir()):
        label = CLASS_ALIASES.get(class_dir.name.lower())
        if label is None:
            raise DataError(
                f"{class_dir}: unknown class folder {class_dir.name!r}; "
                f"expected one of {sorted(CLASS_ALIASES)}"
            )
        for image_path in _iter_images(class_dir):
            image = cv2.imread(str(image_path), cv2.IMREAD_UNCHANGED)
            if image is None or image.dtype != np.uint8:
                raise DataError(f"{image_path}: not a readable 8-bit image")
            faces.append(image if frame is None else frame(image))
            ys.append(index[label])
    if not ys:
        raise DataError(f"{split_dir}: split {split} has no images")
    images = prepare_faces(faces, spec).astype(np.uint8)
    y = np.array(ys, dtype=np.int64)
    return Split(images, y, _one_hot(y, len(FER2013_LABELS)), np.arange(len(y)))


def _held_out(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Which training rows become the validation split when there is no validation folder.

    Stratified: of each class, ``round(n x fraction)`` rows drawn at random (seeded; the
    classes drawn in label order from one generator), and at least one of every class with
    two or more rows, so that every such class is validated.

    Returns:
        A boolean mask over ``labels``.
    """
    rng = np.random.default_rng(seed)
    val_mask = np.zeros(len(labels), dtype=bool)
    for c in range(len(FER2013_LABELS)):
        members = np.flatnonzero(labels == c)
        take = int(round(len(members) * fraction))
        if take == 0 and len(members) >= 2:
            take = 1  # every class with two or more images is represented
        val_mask[rng.choice(members, size=take, replace=False)] = True
    return val_mask


FerPlusMode = Literal["majority", "soft"]


def apply_ferplus(
    dataset: Dataset, path: Path | str, mode: FerPlusMode = "majority", weight: float = 1.0
) -> Dataset:
    """Replace (or blend) the Training targets with FER+ votes (``fer2013new.csv``, row-aligned).

    Votes for contempt, unknown and not-a-face are ignored; a training row whose 7-class votes
    are not the largest share of its votes (mostly unknown / not a face) or sum to zero is
    removed, and the count is recorded in ``notes``. Evaluation splits keep FER2013 labels so
    that reported accuracy stays comparable.

    Args:
        dataset: A dataset from :func:`load_fer2013_csv`.
        path: The FER+ csv.
        mode: ``majority`` (one-hot of the most voted class) or ``soft`` (vote shares).
        weight: Share of the FER+ targets: 1 replaces the FER2013 targets, 0.3 trains on
            ``0.7 x FER2013 + 0.3 x FER+`` (only 67% of FER+ majorities agree with FER2013
            labels, so a partial blend keeps FER2013's labels in charge).

    Raises:
        DataError: Wrong columns, a row count that does not match, non-integer votes, or a
            weight outside [0, 1].
    """
    if not 0.0 < weight <= 1.0:
        raise DataError(
            f"FER+ weight must be in (0, 1], got {weight}; to train on FER2013 alone, leave "
            "out the FER+ file"
        )
    path = _check_file(Path(path))
    if mode not in ("majority", "soft"):
        raise DataError(f"FER+ mode must be 'majority' or 'soft', got {mode!r}")
    votes = read_ferplus_votes(path)
    train = dataset["Training"]
    if len(votes) <= int(train.rows.max()):
        raise DataError(
            f"{path}: {len(votes)} rows, but fer2013.csv has more; the files must be row-aligned"
        )
    v7, keep = ferplus_seven_votes(votes, train.rows, dataset.labels)
    dropped = int((~keep).sum())
    if mode == "majority":
        targets = _one_hot(v7.argmax(axis=1), len(dataset.labels))
    else:
        targets = v7 / np.maximum(v7.sum(axis=1, keepdims=True), 1.0)
    splits = dict(dataset.splits)
    if weight < 1.0:
        # A blend keeps every row: where the FER+ votes are unusable, the FER2013 target stays.
        blended = np.where(
            keep[:, None], weight * targets + (1.0 - weight) * train.targets, train.targets
        )
        splits["Training"] = Split(
            train.images, train.labels, blended.astype(np.float32), train.rows
        )
        what = (
            f"blended {weight:g} FER+ : {1 - weight:g} FER2013; {dropped} training rows keep "
            "their FER2013 target (FER+ votes mostly unknown / not a face / contempt)"
        )
    else:
        new_train = Split(train.images, train.labels, targets.astype(np.float32), train.rows)
        splits["Training"] = new_train.subset(np.flatnonzero(keep))
        what = f"{dropped} training rows removed (votes mostly unknown / not a face / contempt)"
    notes = [*dataset.notes, f"FER+ {mode} targets from {path.name}; {what}"]
    return Dataset(
        splits, dataset.labels, dataset.spec, dataset.source, notes, template=dataset.template
    )


def read_ferplus_votes(path: Path | str) -> np.ndarray:
    """FER+ votes (``fer2013new.csv``) as an ``(N, 10)`` array in :data:`FERPLUS_COLUMNS` order.

    Raises:
        DataError: The file is missing, lacks a vote column, or holds a non-integer vote.
    """
    path = _check_file(Path(path))
    with _open_text(path) as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        needed = [name for name, _ in FERPLUS_COLUMNS]
        missing = [c for c in needed if c not in header]
        if missing:
            raise DataError(f"{path}: missing FER+ vote column(s) {missing}; got {header}")
        cols = [header.index(c) for c in needed]
        votes_list = []
        for r, rec in enumerate(reader):
            try:
                votes_list.append([int(rec[c]) for c in cols])
            except (ValueError, IndexError):
                raise DataError(f"{path}, line {r + 2}: votes are not integers") from None
    return np.array(votes_list, dtype=np.float32)


def ferplus_seven_votes(
    votes: np.ndarray, rows: np.ndarray, labels: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """The seven-class votes of ``rows`` (in ``labels`` order) and which rows are usable.

    A row is usable when its seven-class votes sum above zero and their largest count is at
    least the largest of contempt / unknown / not-a-face.
    """
    index = {label: i for i, label in enumerate(labels)}
    seven = np.zeros((len(rows), len(labels)), dtype=np.float32)
    for j, (_, label) in enumerate(FERPLUS_COLUMNS):
        if label is not None:
            seven[:, index[label]] = votes[rows, j]
    other = votes[rows][:, 7:].max(axis=1)
    keep = (seven.sum(axis=1) > 0) & (seven.max(axis=1) >= other)
    return seven, keep


def add_training(dataset: Dataset, extra: Dataset, repeat: int = 1) -> Dataset:
    """``dataset`` with ``extra``'s Training faces added to its Training split, ``repeat`` times.

    The added faces keep their own targets (their labels, one-hot); ``extra``'s other splits
    are not used, so selection and the reported figures stay on ``dataset``'s. Their rows are
    numbered -1, -2, ... so that nothing reads them as rows of ``dataset``'s source (FER+
    votes and teacher files are matched by row, and apply to ``dataset``'s faces only).

    Raises:
        DataError: ``extra`` has other labels, another input format or another crop
            template than ``dataset``, no Training split, or ``repeat`` is below 1.
    """
    if repeat < 1:
        raise DataError(
            f"extra training faces are added at least once an epoch; got repeat {repeat} "
            "(--extra-repeat 1 or more)"
        )
    if extra.labels != dataset.labels or extra.spec != dataset.spec:
        raise DataError(
            f"{extra.source}: labels {list(extra.labels)} at {extra.spec} cannot join "
            f"{dataset.source} (labels {list(dataset.labels)} at {dataset.spec}); frame "
            "both with `fer-onnx-factory align` onto the same template"
        )
    if None not in (extra.template, dataset.template) and extra.template != dataset.template:
        raise DataError(
            f"{extra.source} was aligned onto another crop template than {dataset.source}; "
            "align both with the same --template"
        )
    train, more = dataset["Training"], extra["Training"]
    numbers = -1 - np.arange(len(more), dtype=np.int64)
    index = np.tile(np.arange(len(more)), repeat)
    added = Split(more.images, more.labels, more.targets, numbers).subset(index)
    splits = dict(dataset.splits)
    splits["Training"] = Split(
        np.concatenate([train.images, added.images]),
        np.concatenate([train.labels, added.labels]),
        np.concatenate([train.targets, added.targets.astype(np.float32)]),
        np.concatenate([train.rows, added.rows]),
    )
    note = (
        f"added {len(more)} Training faces of {extra.source}"
        + (f" {repeat} times" if repeat > 1 else "")
        + f" ({len(added)} rows, their own labels)"
    )
    return Dataset(
        splits,
        dataset.labels,
        dataset.spec,
        dataset.source,
        [*dataset.notes, note],
        template=dataset.template,
    )


def limit_rows(dataset: Dataset, limit: int) -> None:
    """Keep only the first ``limit`` rows of every split (smoke tests), noted in ``notes``."""
    for name, split in list(dataset.splits.items()):
        dataset.splits[name] = split.subset(np.arange(min(limit, len(split))))
    dataset.notes.append(f"--limit {limit}: only the first rows of each split used")


NPZ_FORMAT = "fer_onnx.aligned_dataset/1"


def read_npz_meta(path: Path) -> dict[str, Any]:
    """The metadata of a dataset written by ``fer-onnx-factory align``.

    Raises:
        DataError: The file is not such a dataset.
    """
    try:
        with open(_check_file(path), "rb") as f, np.load(f, allow_pickle=False) as data:
            if "format" not in data.files or str(data["format"]) != NPZ_FORMAT:
                raise DataError(
                    f"{path}: not a dataset written by `fer-onnx-factory align` "
                    f"(format {NPZ_FORMAT})"
                )
            meta = json.loads(str(data["meta"]))
    except DataError:
        raise
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
        raise DataError(
            f"{path}: cannot read as an .npz dataset ({e}); write it again with "
            "`fer-onnx-factory align`"
        ) from e
    if not isinstance(meta, dict):
        raise DataError(f"{path}: its metadata is not a JSON object; write it again")
    return meta


def load_npz(path: Path | str) -> Dataset:
    """Load a dataset written by ``fer-onnx-factory align`` (faces aligned onto a template).

    Raises:
        DataError: The file is not such a dataset.
    """
    path = Path(path)
    meta = read_npz_meta(path)
    splits: dict[str, Split] = {}
    try:
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as data:
            for name in meta["splits"]:
                splits[name] = Split(
                    data[f"{name}.images"],
                    data[f"{name}.labels"],
                    data[f"{name}.targets"],
                    data[f"{name}.rows"],
                )
        height, width, color = meta["spec"]
        labels, source, notes = tuple(meta["labels"]), str(meta["source"]), list(meta["notes"])
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as e:
        raise DataError(
            f"{path}: incomplete .npz dataset ({e}); write it again with `fer-onnx-factory align`"
        ) from e
    return Dataset(
        splits,
        labels,
        InputSpec(int(height), int(width), color),
        source,
        [*notes, f"read from {path.name}"],
        template=meta.get("template"),
    )


def load(path: Path | str) -> Dataset:
    """Load a csv file, an aligned ``.npz`` dataset or a folder tree, whichever ``path`` is."""
    path = Path(path)
    if path.is_dir():
        return load_folder_tree(path)
    if path.suffix == ".npz":
        return load_npz(path)
    return load_fer2013_csv(path)
