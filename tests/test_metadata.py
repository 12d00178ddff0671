import json

import pytest

from fer_onnx import InputSpec, ModelInfo, ModelLoadError
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
