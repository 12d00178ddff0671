"""Dataset loaders on tiny generated files, including every bad-data case."""

from __future__ import annotations

import gzip
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("pandas")  # the [train] extra
from fer_onnx.preprocessing import InputSpec
from fer_onnx_factory.data.datasets import (
    FER2013_LABELS,
    DataError,
    Dataset,
    add_training,
    apply_ferplus,
    load,
    load_fer2013_csv,
    load_folder_tree,
)

FERPLUS_HEADER = (
    "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF"
)


def pixels(seed: int, n: int = 2304) -> str:
    return " ".join(str(v) for v in np.random.default_rng(seed).integers(0, 256, n))


def write_csv(
    path: Path, rows: list[tuple[object, str, str]], header: str = "emotion,pixels,Usage"
) -> Path:
    text = header + "\n" + "".join(f"{e},{p},{u}\n" for e, p, u in rows)
    if path.suffix == ".gz":
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path


def good_rows() -> list[tuple[object, str, str]]:
    usages = ["Training"] * 6 + ["PublicTest"] * 2 + ["PrivateTest"] * 2
    return [(i % 7, pixels(i), u) for i, u in enumerate(usages)]


@pytest.mark.parametrize("name", ["fer.csv", "fer.csv.gz"])
def test_fer2013_csv_plain_and_gzipped(tmp_path: Path, name: str) -> None:
    ds = load_fer2013_csv(write_csv(tmp_path / name, good_rows()))
    assert {k: len(v) for k, v in ds.splits.items()} == {
        "Training": 6,
        "PublicTest": 2,
        "PrivateTest": 2,
    }
    train = ds["Training"]
    assert train.images.shape == (6, 48, 48, 1)
    assert train.images.dtype == np.uint8
    assert train.labels.tolist() == [0, 1, 2, 3, 4, 5]
    assert train.targets.argmax(1).tolist() == train.labels.tolist()
    first = np.array(pixels(0).split(), dtype=np.uint8).reshape(48, 48)
    np.testing.assert_array_equal(train.images[0, :, :, 0], first)
    assert ds["PublicTest"].rows.tolist() == [6, 7]
    assert ds.labels == FER2013_LABELS


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (
            lambda rows: rows.__setitem__(3, (1, pixels(3, 2303), "Training")),
            r"line 5: expected 2304 pixel values.*2303",
        ),
        (
            lambda rows: rows.__setitem__(2, (9, pixels(2), "Training")),
            r"line 4: emotion 9 outside",
        ),
        (lambda rows: rows.__setitem__(2, ("x", pixels(2), "Training")), r"line 4: emotion 'x'"),
        (
            lambda rows: rows.__setitem__(1, (1, pixels(1), "Validation")),
            r"line 3: unknown Usage 'Validation'",
        ),
        (
            lambda rows: rows.__setitem__(0, (1, "1 2 x", "Training")),
            r"line 2: pixels are not integers",
        ),
        (
            lambda rows: rows.__setitem__(
                0,
                (
                    1,
                    pixels(0).replace("1", "999", 1) if "1" in pixels(0) else "999 " * 2304,
                    "Training",
                ),
            ),
            r"line 2",
        ),
        (lambda rows: [rows.pop() for _ in range(2)], r"split 'PrivateTest' is empty"),
    ],
)
def test_fer2013_bad_rows(tmp_path: Path, mutate: object, match: str) -> None:
    rows = good_rows()
    mutate(rows)  # type: ignore[operator]
    path = write_csv(tmp_path / "bad.csv", rows)
    with pytest.raises(DataError, match=match) as info:
        load_fer2013_csv(path)
    assert str(path) in str(info.value)


def test_fer2013_wrong_columns_and_missing_file(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "cols.csv", good_rows(), header="label,pixels,Usage")
    with pytest.raises(DataError, match=r"missing column.*emotion"):
        load_fer2013_csv(path)
    with pytest.raises(DataError, match="no such file"):
        load_fer2013_csv(tmp_path / "nope.csv")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match="empty file"):
        load_fer2013_csv(empty)


def make_tree(
    root: Path, layout: dict[str, dict[str, int]], size: tuple[int, int] = (64, 64)
) -> Path:
    rng = np.random.default_rng(0)
    for split, classes in layout.items():
        for cls, n in classes.items():
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                cv2.imwrite(
                    str(folder / f"{i}.png"), rng.integers(0, 256, (*size, 3), dtype=np.uint8)
                )
    return root


def test_folder_tree_aliases_and_sizes(tmp_path: Path) -> None:
    root = make_tree(
        tmp_path / "tree",
        {
            "train": {"Anger": 3, "sadness": 2, "HAPPY": 2},
            "test": {"angry": 1, "surprised": 1},
        },
    )
    ds = load(root)
    assert ds["Training"].images.shape[1:] == (48, 48, 1)
    counts = dict(
        zip(
            FER2013_LABELS,
            np.bincount(
                np.concatenate([ds["Training"].labels, ds["PublicTest"].labels]), minlength=7
            ),
            strict=False,
        )
    )
    assert counts["angry"] == 3
    assert counts["sad"] == 2
    assert counts["happy"] == 2
    assert sorted(ds["PrivateTest"].labels.tolist()) == [0, 5]
    assert any("held out" in note for note in ds.notes)  # no val folder: counted, not silent


@pytest.mark.parametrize(
    ("layout", "match"),
    [
        ({"train": {"angry": 1, "contempt": 1}}, r"contempt.*unknown class folder"),
        ({"train": {"angry": 2}, "holdout": {"angry": 1}}, r"holdout.*unknown split folder"),
        ({"train": {"angry": 2}, "val": {}}, r"val.*no images"),
        ({"test": {"angry": 2}}, r"no training folder"),
    ],
)
def test_folder_tree_errors(tmp_path: Path, layout: dict, match: str) -> None:
    root = make_tree(tmp_path / "tree", layout)
    (root / "val").mkdir(exist_ok=True) if "val" in layout else None
    with pytest.raises(DataError, match=match):
        load_folder_tree(root)


def test_folder_tree_unreadable_image_is_named(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "tree", {"train": {"angry": 2}, "val": {"angry": 1}})
    broken = root / "train" / "angry" / "broken.png"
    broken.write_text("not a png")
    with pytest.raises(DataError, match=r"broken\.png: not a readable"):
        load_folder_tree(root)


def write_ferplus(path: Path, votes: list[list[int]]) -> Path:
    lines = [FERPLUS_HEADER] + [
        f"Training,fer{i:07d}.png," + ",".join(map(str, v)) for i, v in enumerate(votes)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_ferplus_majority_soft_and_dropped_rows(tmp_path: Path) -> None:
    ds = load_fer2013_csv(write_csv(tmp_path / "fer.csv", good_rows()))
    votes = [[0] * 10 for _ in range(10)]
    votes[0][1] = 8
    votes[0][0] = 2  # happiness majority -> happy
    votes[1][4] = 5
    votes[1][6] = 5  # anger/fear tie -> soft 0.5/0.5
    votes[2][9] = 10  # not a face -> removed
    votes[3][8] = 6
    votes[3][0] = 4  # mostly unknown -> removed
    votes[4][3] = 10  # sadness
    votes[5][2] = 10  # surprise
    path = write_ferplus(tmp_path / "ferplus.csv", votes)
    majority = apply_ferplus(ds, path, "majority")
    assert len(majority["Training"]) == 4
    assert [FER2013_LABELS[i] for i in majority["Training"].targets.argmax(1)] == [
        "happy",
        "angry",
        "sad",
        "surprise",
    ]
    assert any("2 training rows removed" in n for n in majority.notes)
    soft = apply_ferplus(ds, path, "soft")
    np.testing.assert_allclose(soft["Training"].targets[1][[0, 2]], [0.5, 0.5])
    np.testing.assert_allclose(soft["Training"].targets[0][[3, 6]], [0.8, 0.2])
    assert len(soft["PublicTest"]) == 2  # evaluation splits keep FER2013 labels
    blend = apply_ferplus(ds, path, "soft", weight=0.25)
    original = ds["Training"].targets
    assert len(blend["Training"]) == len(original)  # a blend keeps every row
    usable = [0, 1, 4, 5]  # the rows with usable FER+ votes, in order
    np.testing.assert_allclose(
        blend["Training"].targets[usable],
        0.25 * soft["Training"].targets + 0.75 * original[usable],
        atol=1e-6,
    )
    np.testing.assert_allclose(blend["Training"].targets[[2, 3]], original[[2, 3]])
    assert any("blended 0.25 FER+ : 0.75 FER2013" in n for n in blend.notes)
    for bad in (0.0, 1.5):
        with pytest.raises(DataError, match=r"\(0, 1\]"):
            apply_ferplus(ds, path, "soft", weight=bad)


def test_ferplus_errors(tmp_path: Path) -> None:
    ds = load_fer2013_csv(write_csv(tmp_path / "fer.csv", good_rows()))
    short = write_ferplus(tmp_path / "short.csv", [[1] + [0] * 9] * 3)
    with pytest.raises(DataError, match="row-aligned"):
        apply_ferplus(ds, short)
    cols = tmp_path / "cols.csv"
    cols.write_text("Usage,Image name,neutral\nTraining,a.png,1\n")
    with pytest.raises(DataError, match=r"missing FER\+ vote column"):
        apply_ferplus(ds, cols)
    bad = write_ferplus(tmp_path / "bad.csv", [[1] + [0] * 9] * 10)
    bad.write_text(
        bad.read_text().replace("Training,fer0000004.png,1", "Training,fer0000004.png,x")
    )
    with pytest.raises(DataError, match="line 6: votes are not integers"):
        apply_ferplus(ds, bad)


def test_fer2013_field_count_and_unused_splits(tmp_path: Path) -> None:
    rows = good_rows()
    path = write_csv(tmp_path / "fer.csv", rows)
    ds = load_fer2013_csv(path, splits=("Training",))
    assert list(ds.splits) == ["Training"]
    assert ds.notes == [
        "fer.csv: 2 PublicTest rows not used",
        "fer.csv: 2 PrivateTest rows not used",
    ]
    extra = write_csv(tmp_path / "extra.csv", [(0, pixels(0), "Training,x")])
    with pytest.raises(DataError, match="line 2: expected 3 fields, got 4"):
        load_fer2013_csv(extra)


def test_held_out_validation_rows_are_stratified_and_seeded() -> None:
    from fer_onnx_factory.data.datasets import _held_out

    labels = np.array([0] * 25 + [1] * 2 + [2] * 1 + [3] * 7)
    mask = _held_out(labels, 0.1, seed=0)
    taken = np.bincount(labels[mask], minlength=7).tolist()
    # round(2.5) = 2; a pair gives one; a single image stays in training; round(0.7) = 1
    assert taken == [2, 1, 0, 1, 0, 0, 0]
    np.testing.assert_array_equal(_held_out(labels, 0.1, seed=0), mask)
    assert not np.array_equal(_held_out(labels, 0.1, seed=1), mask)
    # round(12.5), 1, round(0.5) = 0, round(3.5)
    assert _held_out(labels, 0.5, seed=0).sum() == 12 + 1 + 0 + 4


@pytest.mark.parametrize(
    ("layout", "match"),
    [
        ({"train": {"angry": 2}, "training": {"angry": 1}}, r"training: a second folder for split"),
        ({"train": {"angry": 1}}, r"too few training images to hold out"),
    ],
)
def test_folder_tree_split_errors(tmp_path: Path, layout: dict, match: str) -> None:
    with pytest.raises(DataError, match=match):
        load_folder_tree(make_tree(tmp_path / "tree", layout))


def test_folder_tree_without_split_folders(tmp_path: Path) -> None:
    (tmp_path / "tree").mkdir()
    with pytest.raises(DataError, match="expected split folders such as train/"):
        load_folder_tree(tmp_path / "tree")
    with pytest.raises(DataError, match="no such folder"):
        load_folder_tree(tmp_path / "nope")


def test_extra_faces_join_training_only_with_their_own_labels(tmp_path: Path) -> None:
    base = load_fer2013_csv(write_csv(tmp_path / "fer.csv", good_rows()))
    extra = load(make_tree(tmp_path / "tree", {"train": {"fear": 2, "sad": 1}, "val": {"sad": 1}}))
    joined = add_training(base, extra, repeat=2)
    train, more = joined["Training"], extra["Training"]
    assert len(train) == 6 + 2 * 3
    assert np.array_equal(train.images[6:], np.concatenate([more.images, more.images]))
    assert train.labels[6:].tolist() == 2 * more.labels.tolist()
    assert np.array_equal(train.targets[6:], np.concatenate([more.targets, more.targets]))
    assert train.rows[6:].tolist() == [-1, -2, -3, -1, -2, -3]  # never a row of fer.csv
    assert np.array_equal(train.images[:6], base["Training"].images)
    assert np.array_equal(joined["PublicTest"].images, base["PublicTest"].images)
    assert len(base["Training"]) == 6  # the dataset given is not changed
    assert any("added 3 Training faces" in n and "2 times" in n for n in joined.notes)


def test_extra_faces_must_match_the_data(tmp_path: Path) -> None:
    base = load_fer2013_csv(write_csv(tmp_path / "fer.csv", good_rows()))
    tree = make_tree(tmp_path / "tree", {"train": {"fear": 2}, "val": {"fear": 1}})
    with pytest.raises(DataError, match="at least once an epoch"):
        add_training(base, load(tree), repeat=0)
    with pytest.raises(DataError, match="cannot join"):
        add_training(base, load_folder_tree(tree, InputSpec(64, 64, "gray")))
    one = {"landmarks": [[0.3, 0.4]] * 5, "box": [0.1, 0.1, 0.8, 0.8]}
    other = {"landmarks": [[0.3, 0.5]] * 5, "box": [0.1, 0.1, 0.8, 0.8]}
    extra = load(tree)
    aligned = Dataset(base.splits, base.labels, base.spec, "a.npz", template=one)
    with pytest.raises(DataError, match="another crop template"):
        add_training(aligned, Dataset(extra.splits, extra.labels, extra.spec, "b", template=other))
