import json

import pytest

from fer_onnx import InputSpec, ModelInfo, ModelLoadError
from fer_onnx.errors import InvalidOptionError, InvalidTypeError
from fer_onnx.metadata import KEY_COLOR, KEY_INPUT_SIZE, KEY_LABELS, KEY_VALUE_RANGE

INFO = ModelInfo(("a", "b"), InputSpec(48, 48, "gray"), (0.0, 255.0), {"dataset": "FER2013"})


def test_round_trip() -> None:
    props = INFO.to_metadata()
    assert json.loads(props[KEY_LABELS]) == ["a", "b"]
    assert ModelInfo.from_metadata(props) == INFO


@pytest.mark.parametrize("key", [KEY_LABELS, KEY_INPUT_SIZE, KEY_COLOR, KEY_VALUE_RANGE])
def test_missing_key_is_named(key: str) -> None:
    props = INFO.to_metadata()
    del props[key]
    with pytest.raises(ModelLoadError, match=key):
        ModelInfo.from_metadata(props, source="m.onnx")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (KEY_LABELS, "not json"),
        (KEY_LABELS, "[]"),
        (KEY_LABELS, '["a", "a"]'),
        (KEY_INPUT_SIZE, "[48]"),
        (KEY_COLOR, "hsv"),
        (KEY_VALUE_RANGE, '["x", 1]'),
    ],
)
def test_malformed_values(key: str, value: str) -> None:
    props = INFO.to_metadata()
    props[key] = value
    with pytest.raises(ModelLoadError, match="malformed"):
        ModelInfo.from_metadata(props, source="m.onnx")


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        (KEY_LABELS, "[]", "1 to 1000"),
        (KEY_LABELS, '["a", "a"]', "distinct"),
        (KEY_LABELS, '["a", " "]', "non-blank"),
        (KEY_LABELS, json.dumps(["a", "x" * 101]), "at most 100"),
        (KEY_LABELS, '["a", "b\\nc"]', "printable"),
        (KEY_LABELS, json.dumps([f"c{i}" for i in range(1001)]), "1 to 1000"),
        (KEY_INPUT_SIZE, "[48.5, 48]", "integers"),
        (KEY_INPUT_SIZE, "[48]", "integers"),
        (KEY_INPUT_SIZE, "[1e400, 48]", "integers|infinity"),
        (KEY_INPUT_SIZE, "[1025, 48]", "at most 1024"),
        (KEY_INPUT_SIZE, "[60000, 60000]", "at most 1024"),
        (KEY_INPUT_SIZE, "[true, 48]", "integers"),
        (KEY_VALUE_RANGE, "[0, 1e-9]", "high - low"),
        (KEY_VALUE_RANGE, "[-1e300, 1e300]", "65535"),
        (KEY_VALUE_RANGE, '["a", 1]', "two numbers"),
        (KEY_LABELS, "[" * 100_000, "malformed"),
    ],
)
def test_implausible_fields_are_refused(key: str, value: str, match: str) -> None:
    props = {**INFO.to_metadata(), key: value}
    with pytest.raises(ModelLoadError, match=match):
        ModelInfo.from_metadata(props, source="m.onnx")


def test_model_info_checks_its_fields_when_built() -> None:
    with pytest.raises(InvalidOptionError, match="distinct"):
        ModelInfo(("a", "a"), InputSpec(48, 48, "gray"), (0.0, 255.0), {})
    with pytest.raises(InvalidOptionError, match="value range"):
        ModelInfo(("a", "b"), InputSpec(48, 48, "gray"), (0.0, float("inf")), {})
    with pytest.raises(InvalidTypeError):
        ModelInfo(("a", "b"), (48, 48), (0.0, 255.0), {})  # type: ignore[arg-type]
    with pytest.raises(InvalidOptionError, match="output"):
        ModelInfo(("a", "b"), InputSpec(48, 48, "gray"), (0.0, 255.0), {}, None, "scores")
