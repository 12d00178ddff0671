"""The validation suite's metrics and the class-prior correction chosen on it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import build_tiny_model

from fer_onnx import EmotionRecognizer
from fer_onnx_factory.errors import PipelineError
from fer_onnx_factory.evaluate.suite import (
    LABELS,
    MEAN_SETS,
    SetOutputs,
    differences_table,
    ferplus_majority,
    metrics,
    paired_differences,
    table,
)
from fer_onnx_factory.tune.prior import bake, choose_weights, mean_accuracy


def test_metrics_count_a_missed_face_as_wrong() -> None:
    truth = np.array([0, 0, 1, 3])
    predicted = np.array([0, -1, 1, 1])
    m = metrics(truth, predicted, missed=1)
    assert m["accuracy"] == 0.5
    assert m["missed"] == 1
    assert m["recall"] == {"angry": 0.5, "disgust": 1.0, "happy": 0.0}
    # F1: angry 2/3 (precision 1, recall 1/2), disgust 2/3 (precision 1/2, recall 1), happy 0
    assert m["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)


def test_set_outputs_weigh_classes_and_keep_missed_rows_wrong() -> None:
    probs = np.array([[0.6, 0.4, 0, 0, 0, 0, 0], [np.nan] * 7, [0.5, 0.3, 0, 0, 0, 0, 0.2]])
    out = SetOutputs(np.array([1, 1, 1]), probs)
    assert out.predicted().tolist() == [0, -1, 0]
    weights = np.ones(7)
    weights[1] = 2.0
    assert out.predicted(weights).tolist() == [1, -1, 1]
    assert out.metrics(weights)["missed"] == 1


def test_choose_weights_finds_the_prior_that_fixes_a_biased_model() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 7, 600)
    # A model that knows the class but leans towards neutral (index 6): its share times 9.
    probs = np.full((600, 7), 0.05)
    probs[np.arange(600), labels] = 0.4
    probs[:, 6] *= 9.0
    probs /= probs.sum(axis=1, keepdims=True)
    outputs = {"a": SetOutputs(labels, probs), "b": SetOutputs(labels[::-1], probs[::-1])}
    before = mean_accuracy(outputs, ["a", "b"], np.zeros(7))
    logw, best = choose_weights(outputs, ["a", "b"])
    assert before < 0.3
    assert best == 1.0
    assert logw[6] < logw[:6].min()  # neutral weighed down against every other class
    with pytest.raises(PipelineError, match="not scored"):
        choose_weights(outputs, ["a", "nope"])


def test_bake_multiplies_and_renormalises_the_probabilities(tmp_path: Path) -> None:
    model = build_tiny_model(tmp_path / "tiny.onnx")
    weights = np.array([1.0, 3.0, 0.5, 1.0, 1.0, 2.0, 0.25])
    out = tmp_path / "prior.onnx"
    bake(model, out, weights, {"class_weights": json.dumps(weights.tolist())})
    faces = list(np.random.default_rng(1).integers(0, 256, (5, 48, 48, 1), dtype=np.uint8))
    with EmotionRecognizer(model, detector=None) as a, EmotionRecognizer(out, detector=None) as b:
        p, q = a.predict(faces), b.predict(faces)
        assert b.info.extra["class_weights"] == json.dumps(weights.tolist())
    expected = p * weights / (p * weights).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(q, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(PipelineError, match="exists"):
        bake(model, out, weights, {})


def test_ferplus_majority_keeps_rows_whose_seven_votes_lead(tmp_path: Path) -> None:
    header = (
        "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF"
    )
    rows = [
        "PublicTest,a,0,8,2,0,0,0,0,0,0,0",  # happy
        "PublicTest,b,1,0,0,0,0,0,0,0,9,0",  # mostly unknown: left out
        "PublicTest,c,0,0,0,0,5,0,0,0,0,5",  # anger ties not-a-face: kept
        "PublicTest,d,0,0,0,0,0,0,0,0,0,0",  # no votes: left out
    ]
    path = tmp_path / "votes.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    kept, labels = ferplus_majority(path, np.arange(4))
    assert kept.tolist() == [0, 2]
    assert [LABELS[i] for i in labels] == ["happy", "angry"]


def test_table_shows_each_set_that_was_scored() -> None:
    m = {"accuracy": 0.5, "macro_f1": 0.25}
    text = table({"x": {"fer2013": m, "nimstim": m}, "y": {"fer2013": m}})
    assert "| model | fer2013 | nimstim |" in text
    assert "| y | 50.0% (0.250) | — |" in text


def _outputs(truth: np.ndarray, predicted: np.ndarray) -> SetOutputs:
    """Outputs whose arg-max is ``predicted`` (-1: no face found)."""
    probs = np.full((len(truth), len(LABELS)), np.nan)
    found = predicted >= 0
    probs[found] = np.eye(len(LABELS))[predicted[found]]
    return SetOutputs(truth, probs)


def test_paired_differences_measure_the_gain_and_its_interval() -> None:
    rng = np.random.default_rng(1)
    truth = {s: rng.integers(0, 7, 400) for s in MEAN_SETS}
    base = {
        s: _outputs(t, np.where(rng.random(400) < 0.6, t, (t + 1) % 7)) for s, t in truth.items()
    }
    same = paired_differences(base, base)
    assert same.keys() == {*MEAN_SETS, "mean"}
    assert all(d == {"difference": 0.0, "low": 0.0, "high": 0.0} for d in same.values())
    # the candidate is right on every photo of fer2013, and wrong (or finds no face) on nimstim
    better = dict(base)
    better["fer2013"] = _outputs(truth["fer2013"], truth["fer2013"])
    better["nimstim"] = _outputs(truth["nimstim"], np.full(400, -1))
    diff = paired_differences(base, better, resamples=500, seed=3)
    right = {s: float((base[s].predicted() == truth[s]).mean()) for s in MEAN_SETS}
    assert diff["fer2013"]["difference"] == pytest.approx(1 - right["fer2013"])
    assert diff["nimstim"]["difference"] == pytest.approx(-right["nimstim"])
    assert diff["ferplus"] == {"difference": 0.0, "low": 0.0, "high": 0.0}
    for d in diff.values():
        assert d["low"] < d["difference"] < d["high"] or d["low"] == d["high"] == d["difference"]
    assert diff["fer2013"]["low"] > 0 > diff["nimstim"]["high"]
    mean = (diff["fer2013"]["difference"] + diff["nimstim"]["difference"]) / len(MEAN_SETS)
    assert diff["mean"]["difference"] == pytest.approx(mean)
    assert paired_differences(base, better, resamples=500, seed=3) == diff  # repeatable
    # without every one of the five sets there is no mean; another set's photos are refused
    partial = {s: base[s] for s in ("fer2013", "nimstim")}
    assert paired_differences(partial, better).keys() == {"fer2013", "nimstim"}
    empty = _outputs(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    assert "nimstim" not in paired_differences(
        {**base, "nimstim": empty}, {**base, "nimstim": empty}
    )
    shuffled = {**base, "taiwanese": _outputs(truth["taiwanese"][::-1], truth["taiwanese"])}
    with pytest.raises(PipelineError, match="taiwanese: the two models were scored on different"):
        paired_differences(base, shuffled)


def test_differences_table_gives_points_and_intervals() -> None:
    d = {"fer2013": {"difference": 0.0036, "low": -0.0053, "high": 0.0131}}
    text = differences_table("a.onnx", {"b.onnx": d, "c.onnx": {}})
    assert text.splitlines()[0] == "difference from a.onnx, points (95% paired-bootstrap interval):"
    assert "| model | fer2013 |" in text
    assert "| b.onnx | +0.4 [-0.5, +1.3] |" in text
    assert "| c.onnx | — |" in text
