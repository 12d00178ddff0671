"""Shared fixtures: a tiny ONNX model with fer-onnx metadata, real media when present."""

from __future__ import annotations

import csv
import gzip
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from fer_onnx.metadata import ModelInfo
from fer_onnx.preprocessing import InputSpec

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FER_ONNX_SHARED", ROOT.parent / "shared"))
MEDIA = SHARED / "media"
FER_CSV = SHARED / "data" / "fer2013" / "fer2013.csv.gz"
YUNET = SHARED / "models" / "face_detection_yunet_2023mar.onnx"
GRAY48 = InputSpec(48, 48, "gray")
LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def shared_file(path: Path) -> Path:
    """Return ``path`` or skip the test, with the reason, when ../shared lacks it."""
    if not path.exists():
        pytest.skip(f"{path} not present (set FER_ONNX_SHARED to the shared data folder)")
    return path


def build_tiny_model(
    path: Path,
    *,
    spec: InputSpec = GRAY48,
    labels: tuple[str, ...] = LABELS,
    metadata: dict[str, str] | None = None,
    channels_first: bool = False,
    seed: int = 0,
) -> Path:
    """A linear-softmax classifier over the whole face, with fer-onnx metadata."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    features = spec.height * spec.width * spec.channels
    rng = np.random.default_rng(seed)
    weight = rng.normal(0, 1 / 255 / np.sqrt(features) * 40, (features, len(labels)))
    bias = rng.normal(0, 0.1, len(labels))
    shape = (
        ["N", spec.channels, spec.height, spec.width]
        if channels_first
        else ["N", spec.height, spec.width, spec.channels]
    )
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["faces"], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "W"], ["mm"]),
            helper.make_node("Add", ["mm", "B"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        ],
        "tiny",
        [helper.make_tensor_value_info("faces", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", len(labels)])],
        initializer=[
            numpy_helper.from_array(weight.astype(np.float32), "W"),
            numpy_helper.from_array(bias.astype(np.float32), "B"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    if metadata is None:
        metadata = ModelInfo(labels, spec, (0.0, 255.0), {}).to_metadata()
    helper.set_model_props(model, metadata)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


FER_SMALL_ROWS = 300


@pytest.fixture(scope="session")
def fer_small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first ``FER_SMALL_ROWS`` faces of each FER2013 split, as a csv.gz of their own.

    The training tests' runs read only those faces (``--limit``), but every process would still
    parse all 35,887 rows of the shared file to find them: this copy is read in a blink. The
    faces and their order are the shared file's; only the row numbers of PublicTest and
    PrivateTest change, so it serves no test that matches FER+ votes by row.
    """
    out = tmp_path_factory.mktemp("fer2013") / "fer2013.csv.gz"
    kept: Counter[str] = Counter()
    with (
        gzip.open(shared_file(FER_CSV), "rt", newline="") as source,
        gzip.open(out, "wt", newline="", compresslevel=1) as copy,
    ):
        reader, writer = csv.reader(source), csv.writer(copy)
        header = next(reader)
        writer.writerow(header)
        usage = header.index("Usage")
        for row in reader:
            if kept[row[usage]] < FER_SMALL_ROWS:
                kept[row[usage]] += 1
                writer.writerow(row)
    return out


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny.onnx")


@pytest.fixture(scope="session")
def model_factory(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    counter = iter(range(10**6))

    def make(**kwargs: object) -> Path:
        path = tmp_path_factory.mktemp("models") / f"model{next(counter)}.onnx"
        return build_tiny_model(path, **kwargs)  # type: ignore[arg-type]

    return make


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """A public-domain photo with one real face (BGR uint8), from scikit-image."""
    data = pytest.importorskip("skimage.data")
    return np.ascontiguousarray(data.astronaut()[:, :, ::-1])
