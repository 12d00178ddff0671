from pathlib import Path

import onnxruntime as ort
import pytest

from fer_onnx import InvalidOptionError, ModelLoadError, ProviderError, SessionConfig
from fer_onnx.session import create_session, resolve_providers

CPU = "CPUExecutionProvider"


def test_cpu_and_auto() -> None:
    assert resolve_providers("cpu") == [CPU]
    auto = resolve_providers("auto")
    assert auto[-1] == CPU
    if "CUDAExecutionProvider" in ort.get_available_providers():
        assert auto[0] == "CUDAExecutionProvider"
    else:
        assert auto == [CPU]


def test_explicit_providers_pass_through() -> None:
    providers = [(CPU, {"arena_extend_strategy": "kSameAsRequested"})]
    assert resolve_providers(providers=providers) == providers


def test_unavailable_provider_lists_available() -> None:
    with pytest.raises(ProviderError, match=r"not available.*available: \[.*CPUExecutionProvider"):
        resolve_providers(providers=["NoSuchExecutionProvider"])
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(ProviderError, match="gpu"):
            resolve_providers("cuda")


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"device": "tpu"}, ValueError),
        ({"providers": []}, ProviderError),
        ({"providers": "CPUExecutionProvider"}, ProviderError),
        ({"providers": [None]}, ProviderError),
        ({"providers": [("CPUExecutionProvider", "opts")]}, ProviderError),
    ],
)
def test_bad_arguments(kwargs: dict, error: type) -> None:
    with pytest.raises(error):
        resolve_providers(**kwargs)


@pytest.mark.filterwarnings("ignore:Specified provider:UserWarning")
def test_silent_fallback_is_warned(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA really is available here")
    # Pretend this build offers CUDA: the session then falls back to CPU, which must be warned.
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", CPU])
    providers = resolve_providers("cuda")
    with pytest.warns(RuntimeWarning, match="fell back"):
        session = create_session(tiny_model, providers)
    assert session.get_providers() == [CPU]


def test_session_config() -> None:
    options = SessionConfig(intra_op_threads=2, graph_optimization="basic").to_options()
    assert options.intra_op_num_threads == 2
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    with pytest.raises(InvalidOptionError, match="graph_optimization"):
        SessionConfig(graph_optimization="max")  # type: ignore[arg-type]
    with pytest.raises(InvalidOptionError, match="intra_op_threads"):
        SessionConfig(intra_op_threads=-1)
    with pytest.raises(InvalidOptionError, match="log_severity"):
        SessionConfig(log_severity=9)


def test_missing_and_corrupt_models(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="not found"):
        create_session(tmp_path / "none.onnx", [CPU])
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x00not an onnx model")
    with pytest.raises(ModelLoadError, match="cannot load ONNX model"):
        create_session(corrupt, [CPU])
