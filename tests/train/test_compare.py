"""fer-onnx-factory compare: a candidate replaces the shipped model only if it holds up."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import LABELS, build_tiny_model

from fer_onnx_factory.errors import PipelineError
from fer_onnx_factory.evaluate.compare import Framing, Scores, decide, main


def framing(name: str, acc: tuple[float, float], fear: tuple[float, float]) -> Framing:
    def s(a: float, f: float) -> Scores:
        return Scores(accuracy=a, macro_f1=a - 0.05, recall={"fear": f, "happy": 0.9})

    return Framing(name, 100, s(acc[0], fear[0]), s(acc[1], fear[1]))


@pytest.mark.parametrize(
    ("framings", "replace", "reasons"),
    [
        ([framing("a", (0.67, 0.66), (0.46, 0.45))], True, []),
        ([framing("a", (0.66, 0.66), (0.45, 0.45))], True, []),  # ties do not block
        (
            [framing("a", (0.67, 0.66), (0.46, 0.45)), framing("b", (0.64, 0.65), (0.42, 0.46))],
            False,
            ["b: accuracy 64.00% < 65.00%", "b: fear recall 0.420 < 0.460"],
        ),
        ([framing("a", (0.70, 0.66), (0.44, 0.45))], False, ["a: fear recall 0.440 < 0.450"]),
    ],
)
def test_every_framing_and_every_protected_class_must_hold(
    framings: list[Framing], replace: bool, reasons: list[str]
) -> None:
    assert decide(framings, ["fear"]) == (replace, reasons)


def test_decide_needs_framings_and_known_classes() -> None:
    with pytest.raises(PipelineError, match="at least one --data"):
        decide([], ["fear"])
    with pytest.raises(PipelineError, match="not labels"):
        decide([framing("a", (0.7, 0.6), (0.5, 0.4))], ["contempt"])


def face_tree(root: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    for split in ("train", "val"):
        for label in LABELS:
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(3):
                face = rng.integers(0, 256, (48, 48), dtype=np.uint8)
                cv2.imwrite(str(folder / f"{i}.png"), face)
    return root


def test_compare_command_measures_each_framing_and_decides(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a = build_tiny_model(tmp_path / "a.onnx", seed=0)
    b = build_tiny_model(tmp_path / "b.onnx", seed=1)
    one, two = face_tree(tmp_path / "one", 0), face_tree(tmp_path / "two", 1)
    data = ["--data", str(one), "--data", str(two)]
    report = tmp_path / "compare.json"
    # a model against itself: level everywhere, so it may replace
    assert main(["--candidate", str(a), "--shipped", str(a), *data, "--json", str(report)]) == 0
    out = capsys.readouterr().out
    assert f"{one}: PublicTest, 21 faces" in out
    assert "verdict: replace" in out
    record = json.loads(report.read_text())
    assert record["replace"] is True
    assert [f["faces"] for f in record["framings"]] == [21, 21]
    first = record["framings"][0]
    assert first["candidate"] == first["shipped"]
    assert set(first["candidate"]["recall"]) == set(LABELS)
    # two different models: the verdict follows the measured figures, with its reasons
    code = main(["--candidate", str(b), "--shipped", str(a), *data, "--protect", "fear"])
    out = capsys.readouterr().out
    assert code in (0, 1)
    assert ("verdict: replace" in out) == (code == 0)
    if code == 1:
        assert "verdict: keep the shipped model: " in out
    assert main(["--candidate", str(a), "--shipped", str(b), *data, "--protect", "contempt"]) == 2
    assert "not labels" in capsys.readouterr().err
    assert main(["--candidate", str(tmp_path / "none.onnx"), "--shipped", str(a), *data]) == 2
    assert "model not found" in capsys.readouterr().err
    # the JSON cannot be written, or would overwrite an input: an error, not a verdict
    missing = tmp_path / "no" / "such" / "folder.json"
    assert main(["--candidate", str(a), "--shipped", str(a), *data, "--json", str(missing)]) == 2
    assert "does not exist" in capsys.readouterr().err
    before = b.read_bytes()
    assert main(["--candidate", str(a), "--shipped", str(b), *data, "--json", str(b)]) == 2
    assert "it is the input" in capsys.readouterr().err
    assert b.read_bytes() == before
