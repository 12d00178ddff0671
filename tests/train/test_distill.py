"""Knowledge distillation: softened teacher probabilities blended into the Training targets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fer_onnx.metadata import ModelInfo
from fer_onnx_factory.data.datasets import FER2013_LABELS, FER2013_SPEC, Dataset, Split
from fer_onnx_factory.errors import PipelineError
from fer_onnx_factory.train.config import TrainConfig
from fer_onnx_factory.train.distill import TEACHER, blend, describe, distil, soften


def _contract(labels: tuple[str, ...]) -> ModelInfo:
    """A teacher run's contract: ``labels`` on 48x48 grey faces."""
    return ModelInfo(labels, FER2013_SPEC, (0.0, 255.0), {})


def _dataset(n: int = 6) -> Dataset:
    labels = np.arange(n) % 7
    targets = np.eye(7, dtype=np.float32)[labels]
    images = np.zeros((n, 48, 48, 1), np.uint8)
    train = Split(images, labels, targets, np.arange(n) * 3)
    public = Split(images[:2], labels[:2], targets[:2], np.arange(2))
    return Dataset({"Training": train, "PublicTest": public}, FER2013_LABELS, FER2013_SPEC, "t")


def test_soften_keeps_the_order_and_flattens() -> None:
    p = np.array([[0.7, 0.2, 0.1], [0.05, 0.05, 0.9]], np.float32)
    assert np.allclose(soften(p, 1.0), p, atol=1e-6)
    soft = soften(p, 3.0)
    assert np.allclose(soft.sum(axis=1), 1.0, atol=1e-6)
    assert (soft.argmax(axis=1) == p.argmax(axis=1)).all()
    assert (soft.max(axis=1) < p.max(axis=1)).all()
    # softmax(log p / T) is p^(1/T), renormalised
    expected = p[0] ** (1 / 3) / (p[0] ** (1 / 3)).sum()
    assert np.allclose(soft[0], expected, atol=1e-6)
    with pytest.raises(PipelineError, match="> 0"):
        soften(p, 0.0)


def test_blend_mixes_and_checks_its_weight() -> None:
    hard = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    teacher = np.array([[0.5, 0.5], [0.2, 0.8]], np.float32)
    assert np.allclose(blend(hard, teacher, 0.25), [[0.875, 0.125], [0.05, 0.95]])
    assert np.allclose(blend(hard, teacher, 0.0), hard)
    for bad in (-0.1, 1.5):
        with pytest.raises(PipelineError, match=r"\[0, 1\]"):
            blend(hard, teacher, bad)
    with pytest.raises(PipelineError, match="differ"):
        blend(hard, teacher[:1], 0.5)


def test_cached_teacher_is_reused_and_a_stale_cache_refused(tmp_path: Path) -> None:
    teacher_file = tmp_path / "t.onnx"
    teacher_file.write_bytes(b"not run: the cache answers")
    data = _dataset()
    train = data["Training"]
    probs = np.full((len(train), 7), 0.02, np.float32)
    probs[np.arange(len(train)), (train.labels + 1) % 7] = 0.88  # disagrees with every label
    np.savez_compressed(
        tmp_path / TEACHER,
        rows=train.rows,
        probabilities=probs,
        teachers=np.array(json.dumps(describe([teacher_file]))),
    )
    out = distil(data, [teacher_file], weight=0.5, temperature=1.0, out=tmp_path)
    targets = out["Training"].targets
    assert np.allclose(targets, 0.5 * train.targets + 0.5 * probs, atol=1e-6)
    assert np.array_equal(out["PublicTest"].targets, data["PublicTest"].targets)
    assert any("0.0%" in note and "distilled" in note for note in out.notes)

    teacher_file.write_bytes(b"another teacher")  # same path, other contents
    with pytest.raises(PipelineError, match="other teacher files"):
        distil(data, [teacher_file], 0.5, 1.0, tmp_path)


def test_missing_teacher_and_bad_options_are_clear(tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match="teacher model not found"):
        distil(_dataset(), [tmp_path / "nope.keras"], 0.5, 2.0, tmp_path)
    base = {"data": "d.csv", "out": "o"}
    with pytest.raises(PipelineError, match="teacher_weight"):
        TrainConfig.from_dict({**base, "teacher_weight": 2.0})
    with pytest.raises(PipelineError, match="teacher_temperature"):
        TrainConfig.from_dict({**base, "teacher_temperature": 0})
    cfg = TrainConfig.from_dict({**base, "teacher": ["a.keras", "b.onnx"]})
    assert cfg.teacher == (Path("a.keras"), Path("b.onnx"))
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.to_dict()["teacher"] == ["a.keras", "b.onnx"]
    with pytest.raises(PipelineError, match="need teacher models"):
        TrainConfig.from_dict({**base, "teacher_weight": 0.7})
    with pytest.raises(PipelineError, match="needs a FER"):
        TrainConfig.from_dict({**base, "ferplus_weight": 0.3})
    blend = TrainConfig.from_dict({**base, "ferplus": "fp.csv", "ferplus_weight": 0.3})
    assert TrainConfig.from_dict(blend.to_dict()) == blend


def test_a_keras_teacher_without_a_contract_is_refused(tmp_path: Path) -> None:
    lone = tmp_path / "lone.keras"
    lone.write_bytes(b"x")
    with pytest.raises(PipelineError, match=r"no contract\.json beside it"):
        distil(_dataset(), [lone], 0.5, 2.0, tmp_path)


def _fake_teacher(monkeypatch: pytest.MonkeyPatch, calls: list[int]) -> None:
    import fer_onnx_factory.train.distill as distill_module

    def predictor(model: Path) -> object:
        def run(x: np.ndarray) -> np.ndarray:
            calls.append(len(x))
            p = np.full((len(x), 7), 0.05, np.float32)
            p[:, 3] = 0.7
            return p

        return run

    monkeypatch.setattr(distill_module, "_teacher_predictor", predictor)


def test_teachers_label_once_and_the_cache_is_keyed_by_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    _fake_teacher(monkeypatch, calls)
    from fer_onnx_factory.train.config import write_contract

    write_contract(tmp_path, _contract(FER2013_LABELS))
    teachers = [tmp_path / "a.keras", tmp_path / "b.keras"]
    for t in teachers:
        t.write_bytes(t.name.encode())
    data = _dataset()
    out = distil(data, teachers, weight=1.0, temperature=1.0, out=tmp_path)
    assert calls == [6, 6]  # each teacher ran once over the 6 Training faces
    assert np.allclose(out["Training"].targets[:, 3], 0.7)
    from fer_onnx_factory.train.distill import labelling_seconds

    seconds = labelling_seconds(tmp_path)
    assert seconds is not None
    assert seconds >= 0
    distil(data, teachers, 1.0, 1.0, tmp_path)
    assert calls == [6, 6]  # read from teacher.npz
    fewer = Dataset(
        {"Training": data["Training"].subset(np.arange(4))}, data.labels, data.spec, "t"
    )
    with pytest.raises(PipelineError, match="other Training rows"):
        distil(fewer, teachers, 1.0, 1.0, tmp_path)
    (tmp_path / TEACHER).write_bytes(b"truncated")
    with pytest.raises(PipelineError, match="move it away"):
        distil(data, teachers, 1.0, 1.0, tmp_path)


def test_a_teacher_with_other_classes_is_refused_before_labelling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fer_onnx_factory.train.config import write_contract

    calls: list[int] = []
    _fake_teacher(monkeypatch, calls)
    run = tmp_path / "run"
    run.mkdir()
    (run / "best.keras").write_bytes(b"x")
    swapped = (FER2013_LABELS[1], FER2013_LABELS[0], *FER2013_LABELS[2:])
    write_contract(run, _contract(swapped))
    with pytest.raises(PipelineError, match="same order"):
        distil(_dataset(), [run / "best.keras"], 0.5, 2.0, tmp_path)
    assert calls == []
    write_contract(run, _contract(FER2013_LABELS))
    distil(_dataset(), [run / "best.keras"], 0.5, 2.0, tmp_path)
    assert calls == [6]


def test_the_shipped_onnx_teacher_names_its_classes() -> None:
    from conftest import ROOT

    from fer_onnx_factory.train.distill import teacher_labels

    assert teacher_labels(ROOT / "src/fer_onnx/models/fp32.onnx") == FER2013_LABELS


@pytest.mark.parametrize(("total", "accepted"), [(0.99, True), (1.015, True), (0.9, False)])
def test_quantized_teacher_rows_are_renormalised_and_others_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, total: float, accepted: bool
) -> None:
    # an int8 teacher's softmax output comes in steps of 1/255: its rows sum to 1 within ~1%
    import fer_onnx_factory.train.distill as distill_module

    def predictor(model: Path) -> object:
        def run(x: np.ndarray) -> np.ndarray:
            p = np.full((len(x), 7), 0.05, np.float32)
            p[:, 3] = total - 0.3
            return p

        return run

    monkeypatch.setattr(distill_module, "_teacher_predictor", predictor)
    teacher = tmp_path / "t.onnx"
    teacher.write_bytes(b"x")
    if not accepted:
        with pytest.raises(PipelineError, match="does not return probabilities"):
            distill_module.teacher_probabilities([teacher], np.zeros((4, 48, 48, 1), np.uint8))
        return
    p = distill_module.teacher_probabilities([teacher], np.zeros((4, 48, 48, 1), np.uint8))
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-6)
    assert (p.argmax(axis=1) == 3).all()


def _soft_file(path: Path, rows: np.ndarray, probs: np.ndarray, **extra: Any) -> Path:
    """A soft-target file as a distilled run caches it (``teacher.npz``)."""
    fields = {
        "rows": rows,
        "probabilities": probs,
        "labels": np.array(FER2013_LABELS),
        "teachers": np.array(json.dumps([{"path": "a.onnx", "sha256": "0" * 64}])),
        "seconds": np.array(51.5),
        **extra,
    }
    np.savez_compressed(path, **{k: v for k, v in fields.items() if v is not None})
    return path


def test_a_soft_target_file_teaches_alone_and_keeps_its_record(tmp_path: Path) -> None:
    """An earlier run's teacher.npz distils a student without the model that wrote it."""
    from fer_onnx_factory.train.distill import labelling_seconds

    data = _dataset()
    train = data["Training"]
    probs = np.full((len(train), 7), 0.05, np.float32)
    probs[:, 5] = 0.7
    soft = _soft_file(tmp_path / "soft.npz", train.rows, probs)
    run = tmp_path / "run"
    run.mkdir()
    out = distil(data, [soft], weight=1.0, temperature=1.0, out=run)
    assert np.allclose(out["Training"].targets, probs, atol=1e-6)
    # the run's own cache is a soft-target file in turn: it names the classes, the file it
    # was read from, and that file's own teachers
    with np.load(run / TEACHER, allow_pickle=False) as cached:
        assert tuple(cached["labels"]) == FER2013_LABELS
        assert json.loads(str(cached["teachers"]))[0]["path"] == str(soft)
        source = json.loads(str(cached["source"]))
    assert source == {"teachers": [{"path": "a.onnx", "sha256": "0" * 64}], "seconds": 51.5}
    seconds = labelling_seconds(run)
    assert seconds is not None
    assert seconds < 51.5  # reading, not the original labelling
    # a resumed run (same teacher, same --out) trains on the same targets from its cache
    assert np.array_equal(
        distil(data, [soft], 1.0, 1.0, run)["Training"].targets, out["Training"].targets
    )
    again = tmp_path / "again"
    again.mkdir()
    copied = distil(data, [run / TEACHER], 1.0, 1.0, again)
    assert np.array_equal(copied["Training"].targets, out["Training"].targets)


def test_a_soft_target_file_must_fit_the_faces_and_stand_alone(tmp_path: Path) -> None:
    data = _dataset()
    train = data["Training"]
    probs = np.full((len(train), 7), 1 / 7, np.float32)
    soft = _soft_file(tmp_path / "soft.npz", train.rows, probs)
    fewer = Dataset({"Training": train.subset(np.arange(4))}, data.labels, data.spec, "t")
    with pytest.raises(PipelineError, match=r"other Training faces \(6 rows; this run has 4\)"):
        distil(fewer, [soft], 1.0, 1.0, tmp_path / "fewer")
    shifted = _soft_file(tmp_path / "shifted.npz", train.rows + 1, probs)  # same count
    with pytest.raises(PipelineError, match="--data, --ferplus and --limit"):
        distil(data, [shifted], 1.0, 1.0, tmp_path / "shifted")
    other = tmp_path / "other.keras"  # never read: the mix is refused first
    other.write_bytes(b"x")
    with pytest.raises(PipelineError, match="pass it alone"):
        distil(data, [soft, other], 1.0, 1.0, tmp_path / "mixed")
    run = tmp_path / "run"
    run.mkdir()
    own = _soft_file(run / TEACHER, train.rows, probs)
    with pytest.raises(PipelineError, match="this run's own cache"):
        distil(data, [own], 1.0, 1.0, run)
    assert own.is_file()


def test_a_soft_target_file_must_name_the_classes_and_hold_probabilities(
    tmp_path: Path,
) -> None:
    data = _dataset()
    rows = data["Training"].rows
    good = np.full((len(rows), 7), 1 / 7, np.float32)
    cases: dict[str, dict[str, Any]] = {
        "stores no class names": {"labels": None},
        "same order": {"labels": np.array(FER2013_LABELS[::-1])},
        "one probability distribution per face": {"probabilities": good * 3},
        "cannot be read .*teacher.npz written by": {"rows": None},
    }
    for i, (message, change) in enumerate(cases.items()):
        fields: dict[str, Any] = {"rows": rows, "probabilities": good, **change}
        bad = _soft_file(
            tmp_path / f"bad{i}.npz", fields.pop("rows"), fields.pop("probabilities"), **fields
        )
        with pytest.raises(PipelineError, match=message):
            distil(data, [bad], 1.0, 1.0, tmp_path / f"run{i}")
    flat = _soft_file(tmp_path / "flat.npz", rows, good.ravel())
    with pytest.raises(PipelineError, match="one probability distribution per face"):
        distil(data, [flat], 1.0, 1.0, tmp_path / "flat")


def test_a_resumed_cache_with_other_classes_is_refused(tmp_path: Path) -> None:
    teacher_file = tmp_path / "t.onnx"
    teacher_file.write_bytes(b"cached")
    data = _dataset()
    train = data["Training"]
    _soft_file(
        tmp_path / TEACHER,
        train.rows,
        np.full((len(train), 7), 1 / 7, np.float32),
        labels=np.array(FER2013_LABELS[::-1]),
        teachers=np.array(json.dumps(describe([teacher_file]))),
    )
    with pytest.raises(PipelineError, match="names the classes"):
        distil(data, [teacher_file], 0.5, 1.0, tmp_path)
