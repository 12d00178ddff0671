"""Class-bias calibration (fer_onnx_factory.tune.calibrate): the grid choice, without Keras."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fer_onnx.preprocessing import InputSpec
from fer_onnx_factory.data.datasets import Dataset, Split
from fer_onnx_factory.errors import PipelineError
from fer_onnx_factory.tune.calibrate import (
    adjust,
    choose_biases,
    choose_biases_across,
    main,
    recall,
)


def test_adjust_is_softmax_per_view_then_the_mean() -> None:
    views = np.array([[[0.7, 0.2, 0.1]], [[0.1, 0.6, 0.3]]])
    np.testing.assert_allclose(adjust(views, np.zeros(3)), [[0.4, 0.4, 0.2]])
    biased = adjust(views[:1], np.array([0.0, np.log(3.5), 0.0]))
    np.testing.assert_allclose(biased, [[0.7 / 1.5, 0.7 / 1.5, 0.1 / 1.5]])


def faces() -> tuple[np.ndarray, np.ndarray]:
    """65 faces, one view; class 1 is rare and under-predicted."""
    groups = [
        (40, [0.80, 0.10, 0.10], 0),  # clear class 0
        (10, [0.10, 0.10, 0.80], 2),  # clear class 2
        (5, [0.05, 0.25, 0.70], 2),  # class 2, lost to class 1 only past a bias of 1.03
        (2, [0.45, 0.40, 0.15], 1),  # rare class 1, won with a bias past log(0.45/0.40) = 0.12
        (2, [0.50, 0.30, 0.20], 1),  # rare class 1, won with a bias past log(0.5/0.3) = 0.51
        (6, [0.40, 0.45, 0.15], 0),  # class 0 taken for class 1 at any bias
    ]
    rows = [row for n, row, _ in groups for _ in range(n)]
    labels = [label for n, _, label in groups for _ in range(n)]
    return np.array(rows)[None], np.array(labels)


def test_the_most_accurate_bias_that_keeps_the_floor() -> None:
    probs, labels = faces()
    assert recall(labels, adjust(probs, np.zeros(3)).argmax(1), 1) == 0.0
    choice = choose_biases(probs, labels, {1: 0.5}, step=0.05, max_bias=1.0)
    # 0.15 .. 0.50 reach the floor (2 of 4) with 57 of 65 right; 0.55 .. 1.0 get all 4 rare
    # faces, 59 right: the most accurate wins, and of those the smallest bias.
    assert choice.biases == (0.0, 0.55, 0.0)
    assert choice.recalls == {1: 1.0}
    assert choice.recalls_before == {1: 0.0}
    assert choice.floors == {1: 0.5}
    assert choice.accuracy_before == pytest.approx(55 / 65)
    assert choice.accuracy == pytest.approx(59 / 65)
    assert (choice.evaluated, choice.feasible) == (21, 18)
    low = choose_biases(probs, labels, {1: 0.5}, step=0.05, max_bias=0.5)
    assert low.biases == (0.0, 0.15, 0.0)  # ties at 57: the smallest bias
    assert low.accuracy == pytest.approx(57 / 65)
    far = choose_biases(probs, labels, {1: 0.5}, step=0.05, max_bias=1.5)
    assert far.biases == (0.0, 0.55, 0.0)  # past 1.03 the 5 class-2 faces are lost


def test_no_feasible_setting_and_bad_arguments_are_clear_errors() -> None:
    probs, labels = faces()
    with pytest.raises(PipelineError, match=r"no bias up to 0.1 .*class 1: 0.000 < 1.000"):
        choose_biases(probs, labels, {1: 1.0}, step=0.05, max_bias=0.1)
    with pytest.raises(PipelineError, match="among the 3 outputs"):
        choose_biases(probs, labels, {3: 0.5})
    with pytest.raises(PipelineError, match="step > 0"):
        choose_biases(probs, labels, {1: 0.5}, step=0.0)
    with pytest.raises(PipelineError, match="one label per face"):
        choose_biases(probs[0], labels, {1: 0.5})


def test_one_setting_keeps_the_floors_in_every_framing() -> None:
    """A second framing of the same faces whose rare faces need a larger bias decides it."""
    probs, labels = faces()
    other = probs.copy()
    other[0, 55:57] = [0.50, 0.30, 0.20]  # the rare faces won past 0.12 in the first framing
    both = [(probs, labels, {1: 0.5}), (other, labels, {1: 0.25})]
    alone = choose_biases(probs, labels, {1: 0.5}, step=0.05, max_bias=0.5)
    assert alone.biases == (0.0, 0.15, 0.0)
    with pytest.raises(
        PipelineError, match=r"framing 1: class 1: 0.000 < 0.500; framing 2: class 1: 0.000 < 0.250"
    ):
        choose_biases_across(both, step=0.05, max_bias=0.5)
    first, second = choose_biases_across(both, step=0.05, max_bias=1.0)
    assert first.biases == second.biases == (0.0, 0.55, 0.0)
    assert (first.floors, second.floors) == ({1: 0.5}, {1: 0.25})
    assert first.recalls == second.recalls == {1: 1.0}
    assert first.accuracy == second.accuracy == pytest.approx(59 / 65)
    assert (first.evaluated, first.feasible) == (21, 10)
    with pytest.raises(PipelineError, match="the same classes"):
        choose_biases_across([(probs, labels, {1: 0.5}), (other, labels, {2: 0.5})])
    with pytest.raises(PipelineError, match="no framing"):
        choose_biases_across([])


def rows(*groups: tuple[int, list[float], int]) -> tuple[np.ndarray, np.ndarray]:
    """``(1, N, 3)`` one-view probabilities and ``(N,)`` labels from ``(count, row, label)``."""
    probs = [row for n, row, _ in groups for _ in range(n)]
    labels = [label for n, _, label in groups for _ in range(n)]
    return np.array(probs)[None], np.array(labels)


def test_the_mean_accuracy_over_framings_decides() -> None:
    """Class 1 wins a face past a bias of 0.12, 0.51 or 0.85 (log of the odds of 0 over 1).

    Accuracy out of 20 below 0.12 / up to 0.5 / up to 0.8 / beyond: the first framing 13 / 15 /
    19 / 20, the second 15 / 17 / 14 / 10. Alone, each picks its own best (0.85 and 0.15); the
    worse of the two would also pick 0.15; their mean (16.5 of 20) picks 0.55.
    """
    early, middle, late = [0.45, 0.40, 0.15], [0.50, 0.30, 0.20], [0.56, 0.24, 0.20]
    first = rows((13, [0.8, 0.1, 0.1], 0), (2, early, 1), (4, middle, 1), (1, late, 1))
    second = rows(
        (8, [0.8, 0.1, 0.1], 0),
        (3, [0.8, 0.1, 0.1], 2),  # never right
        (2, early, 1),
        (3, middle, 0),
        (4, late, 0),
    )
    no_floor = {1: 0.0}
    assert choose_biases(*first, no_floor, max_bias=1.0).biases == (0.0, 0.85, 0.0)
    assert choose_biases(*second, no_floor, max_bias=1.0).biases == (0.0, 0.15, 0.0)
    a, b = choose_biases_across([(*first, no_floor), (*second, no_floor)], max_bias=1.0)
    assert a.biases == b.biases == (0.0, 0.55, 0.0)
    assert (a.accuracy, b.accuracy) == (19 / 20, 14 / 20)
    assert (a.accuracy_before, b.accuracy_before) == (13 / 20, 15 / 20)


def test_an_unmet_floor_is_named_by_its_framing() -> None:
    probs, labels = faces()
    both = [(probs, labels, {1: 0.0}), (probs, labels, {1: 1.0})]
    with pytest.raises(PipelineError, match=r"\(aligned.npz: class 1: 0.000 < 1.000\)"):
        choose_biases_across(both, max_bias=0.1, names=["fer2013.csv", "aligned.npz"])


def test_floor_arguments_are_checked(capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--run", "r", "--out", "o", "--protect", "fear"]
    with pytest.raises(SystemExit):
        main([*base, "--floor", "fear:0.4"])
    assert "--floor takes CLASS=RECALL" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*base, "--floor", "fear=0.4", "--reference", "m.onnx"])
    assert "not allowed with argument" in capsys.readouterr().err
    assert main([*base, "--floor", "fear=0.4"]) == 2
    assert "has no best.keras" in capsys.readouterr().err


def views_model(path: object, tta: str = "flip", average: bool = True) -> np.ndarray:
    """An ONNX classifier with two views stacked along the batch (the face and a dimmer copy),
    one Softmax, and the mean over views as its output (or, with ``average=False``, the first
    view's rows only). Returns its weight."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = rng.normal(0, 0.002, (48 * 48, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Flatten", ["faces"], ["flat"], axis=1),
        helper.make_node("Mul", ["flat", "dim"], ["dimmed"]),
        helper.make_node("Concat", ["flat", "dimmed"], ["stacked"], axis=0),
        helper.make_node("MatMul", ["stacked", "W"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["rows"], axis=1),
        helper.make_node("Reshape", ["rows", "shape"], ["views"]),
    ]
    if average:
        nodes.append(helper.make_node("ReduceMean", ["views"], ["probabilities"], axes=[0]))
        nodes[-1].attribute.append(helper.make_attribute("keepdims", 0))
    else:
        nodes.append(helper.make_node("Gather", ["views", "zero"], ["probabilities"], axis=0))
    graph = helper.make_graph(
        nodes,
        "views",
        [helper.make_tensor_value_info("faces", TensorProto.FLOAT, ["N", 48, 48, 1])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 3])],
        initializer=[
            numpy_helper.from_array(weight, "W"),
            numpy_helper.from_array(np.array(0.5, np.float32), "dim"),
            numpy_helper.from_array(np.array([2, -1, 3], np.int64), "shape"),
            numpy_helper.from_array(np.array(0, np.int64), "zero"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    helper.set_model_props(model, {"tta": tta})
    onnx.save(model, str(path))
    return weight


def test_per_view_probabilities_of_an_export(tmp_path: object) -> None:
    from fer_onnx_factory.tune.calibrate import onnx_view_probabilities

    path = Path(str(tmp_path)) / "views.onnx"
    weight = views_model(path)
    faces = np.random.default_rng(1).integers(0, 256, (5, 48, 48, 1)).astype(np.float32)
    probs = onnx_view_probabilities(path, faces, "flip", batch_size=2)
    assert probs.shape == (2, 5, 3)

    def softmax(z: np.ndarray) -> np.ndarray:
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    flat = faces.reshape(5, -1)
    np.testing.assert_allclose(probs[0], softmax(flat @ weight), atol=1e-5)
    np.testing.assert_allclose(probs[1], softmax(0.5 * flat @ weight), atol=1e-5)

    with pytest.raises(PipelineError, match="exported with views 'flip', not --tta 'zoomflip'"):
        onnx_view_probabilities(path, faces, "zoomflip")
    with pytest.raises(PipelineError, match="must be one of"):
        onnx_view_probabilities(path, faces, "sideways")
    views_model(path, average=False)
    with pytest.raises(PipelineError, match="not its output"):
        onnx_view_probabilities(path, faces, "flip")
    views_model(path, tta="flip+zoom")  # four views named, two in the graph
    with pytest.raises(PipelineError, match="gives 10 rows for 5 faces and 4 views"):
        onnx_view_probabilities(path, faces, "flip+zoom")
    path.write_bytes(b"not onnx")
    with pytest.raises(PipelineError, match="cannot read it as ONNX"):
        onnx_view_probabilities(path, faces, "flip")


def test_protection_and_its_floors_are_checked() -> None:
    from fer_onnx_factory.tune.calibrate import _check_protection

    labels = ["angry", "disgust", "fear"]
    _check_protection(labels, ["fear"], None, {"fear": 0.4})
    _check_protection(labels, ["fear", "disgust"], Path("m.onnx"), None)
    for protect, reference, floors, error in [
        ([], None, {}, "--protect takes class names among"),
        (["joy"], None, {"joy": 0.4}, "--protect takes class names among"),
        (["fear"], None, None, "either --reference"),
        (["fear"], Path("m.onnx"), {"fear": 0.4}, "either --reference"),
        (["fear"], None, {"disgust": 0.4}, "one recall in \\[0, 1\\] for each protected"),
        (["fear"], None, {"fear": 1.5}, "one recall in \\[0, 1\\] for each protected"),
    ]:
        with pytest.raises(PipelineError, match=error):
            _check_protection(labels, protect, reference, floors)


def public_split(rows: list[int], labels: list[int]) -> Split:
    n = len(rows)
    return Split(
        np.zeros((n, 1, 1, 1), np.uint8),
        np.array(labels),
        np.zeros((n, 3), np.float32),
        np.array(rows),
    )


def in_memory(public: Split, labels: tuple[str, ...] = ("a", "b", "c")) -> Dataset:
    return Dataset({"PublicTest": public}, labels, InputSpec(1, 1, "gray"), "memory")


def test_framings_must_frame_the_runs_public_test_in_one_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """--framing: same classes, the same faces (after --limit), listed in the same order."""
    from fer_onnx_factory.tune.calibrate import _choosing_splits

    own = in_memory(public_split([0, 1, 2], [0, 1, 2]))
    framings = {
        "csv": in_memory(public_split([0, 1, 2, 3], [0, 1, 2, 0])),  # one row past --limit 3
        "aligned": in_memory(public_split([0, 1, 2], [0, 1, 2])),
        "shuffled": in_memory(public_split([2, 1, 0], [2, 1, 0])),
        "relabelled": in_memory(public_split([0, 1, 2], [0, 1, 1])),
        "fewer": in_memory(public_split([0, 1], [0, 1])),
        "classes": in_memory(public_split([0, 1, 2], [0, 1, 2]), ("a", "b", "x")),
    }
    monkeypatch.setattr("fer_onnx_factory.data.datasets.load", lambda path: framings[str(path)])
    data = Path("run.csv")
    assert _choosing_splits(own, data, 0, []) == {data: own["PublicTest"]}
    chosen = _choosing_splits(own, data, 3, [Path("csv"), Path("aligned")])
    assert list(chosen) == [Path("csv"), Path("aligned")]
    np.testing.assert_array_equal(chosen[Path("csv")].rows, [0, 1, 2])
    for names, error in [
        (["csv", "shuffled"], "shuffled: its PublicTest faces are not in the order of csv's"),
        (["csv", "relabelled"], "relabelled: its PublicTest faces are not in the order of"),
        (["fewer"], r"its PublicTest \(2 faces\) holds other faces than the run's \(3 faces"),
        (["classes"], r"classes \['a', 'b', 'x'\], the run's are \['a', 'b', 'c'\]"),
        (["csv", "./csv"], "names the same file twice"),
    ]:
        with pytest.raises(PipelineError, match=error):
            _choosing_splits(own, data, 3, [Path(n) for n in names])
