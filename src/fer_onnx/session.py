"""The one place that makes onnxruntime sessions; providers are checked, not hoped for."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import onnxruntime as ort

from fer_onnx.errors import InvalidOptionError, ModelLoadError, ProviderError

log = logging.getLogger(__name__)

Device = Literal["auto", "cpu", "cuda"]
ProviderSpec = str | tuple[str, dict[str, Any]]

__all__ = ["Device", "ProviderSpec", "SessionConfig", "create_session", "resolve_providers"]

_LEVELS = {
    "all": "ORT_ENABLE_ALL",
    "extended": "ORT_ENABLE_EXTENDED",
    "basic": "ORT_ENABLE_BASIC",
    "disabled": "ORT_DISABLE_ALL",
}
_CPU = "CPUExecutionProvider"
_CUDA = "CUDAExecutionProvider"


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """onnxruntime session options, with defaults suited to small CNNs on few cores.

    Attributes:
        intra_op_threads: Threads inside one operator. 1 is fastest for a ~2 MB CNN at batch
            sizes of a few faces (thread hand-off costs more than it saves) and leaves other
            cores to face detection and the caller; raise it for large batches. 0 lets
            onnxruntime choose.
        inter_op_threads: Threads across operators (only used with parallel execution).
        graph_optimization: ``"all"``, ``"extended"``, ``"basic"`` or ``"disabled"``.
        log_severity: onnxruntime log level for this session (0 verbose .. 4 fatal).
    """

    intra_op_threads: int = 1
    inter_op_threads: int = 1
    graph_optimization: Literal["all", "extended", "basic", "disabled"] = "all"
    log_severity: int = 3

    def __post_init__(self) -> None:
        for name in ("intra_op_threads", "inter_op_threads"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 1024:
                raise InvalidOptionError(f"SessionConfig.{name} must be an int >= 0, got {value!r}")
        if self.graph_optimization not in _LEVELS:
            raise InvalidOptionError(
                f"SessionConfig.graph_optimization must be one of {sorted(_LEVELS)}, "
                f"got {self.graph_optimization!r}"
            )
        if not isinstance(self.log_severity, int) or not 0 <= self.log_severity <= 4:
            raise InvalidOptionError(
                f"SessionConfig.log_severity must be an int within 0..4, got {self.log_severity!r}"
            )

    def to_options(self) -> ort.SessionOptions:
        """Build the onnxruntime ``SessionOptions``."""
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.intra_op_threads
        options.inter_op_num_threads = self.inter_op_threads
        options.graph_optimization_level = getattr(
            ort.GraphOptimizationLevel, _LEVELS[self.graph_optimization]
        )
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = self.log_severity
        return options


def _name(provider: ProviderSpec) -> str:
    if isinstance(provider, str):
        return provider
    if (
        isinstance(provider, tuple)
        and len(provider) == 2
        and isinstance(provider[0], str)
        and isinstance(provider[1], dict)
    ):
        return provider[0]
    raise ProviderError(
        "each provider must be a name such as 'CPUExecutionProvider' or a (name, options dict) "
        f"pair, got {provider!r}"
    )


def resolve_providers(
    device: Device = "auto", providers: Sequence[ProviderSpec] | None = None
) -> list[ProviderSpec]:
    """Choose execution providers.

    Args:
        device: ``"auto"`` (CUDA when onnxruntime offers it, else CPU), ``"cpu"`` or
            ``"cuda"``. Ignored when ``providers`` is given.
        providers: An explicit onnxruntime provider list, names or ``(name, options)``.

    Returns:
        The providers to pass to ``InferenceSession``, CPU always last as a fallback.

    Raises:
        ProviderError: A provider asked for explicitly (or ``device="cuda"``) is not
            available in this onnxruntime build; the message lists the available ones.
    """
    available = ort.get_available_providers()
    if providers is not None:
        if isinstance(providers, str) or not isinstance(providers, (list, tuple)):
            raise ProviderError(
                "providers must be a list of provider names or (name, options) pairs, got "
                f"{providers!r}"
            )
        chosen = list(providers)
        if not chosen:
            raise ProviderError(f"providers is empty; available: {available}")
        missing = [_name(p) for p in chosen if _name(p) not in available]
        if missing:
            raise ProviderError(
                f"execution provider(s) {missing} not available in this onnxruntime build; "
                f"available: {available}. For CUDA install the 'gpu' extra "
                "(onnxruntime-gpu replaces onnxruntime)."
            )
        return chosen
    if device == "cpu":
        return [_CPU]
    if device == "cuda":
        if _CUDA not in available:
            raise ProviderError(
                f"device='cuda' but CUDAExecutionProvider is not available; available: "
                f"{available}. Install the 'gpu' extra (pip uninstall onnxruntime && "
                "pip install 'fer-onnx[gpu]') or use device='cpu'."
            )
        return [_CUDA, _CPU]
    if device == "auto":
        return [_CUDA, _CPU] if _CUDA in available else [_CPU]
    raise InvalidOptionError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")


def check_model_file(path: Path) -> None:
    """Refuse a path that cannot be a model file, saying what it is instead."""
    if path.is_dir():
        raise ModelLoadError(f"{path} is a folder, not an ONNX model file")
    if not path.is_file():
        raise ModelLoadError(f"model file not found: {path}")
    if path.stat().st_size == 0:
        raise ModelLoadError(f"{path} is empty (0 bytes), not an ONNX model")


def create_session(
    model: str | Path | bytes,
    providers: Sequence[ProviderSpec],
    config: SessionConfig | None = None,
    warn_on_fallback: bool = True,
) -> ort.InferenceSession:
    """Create an ``InferenceSession`` and check the providers it really got.

    Args:
        model: Path to an ONNX file, or its bytes.
        providers: Providers from :func:`resolve_providers`.
        config: Session options; defaults to :class:`SessionConfig`.
        warn_on_fallback: Warn (``RuntimeWarning``) when a requested accelerator was not
            used and onnxruntime fell back to the CPU.

    Raises:
        ModelLoadError: The file is missing or is not a valid ONNX model.
    """
    config = config or SessionConfig()
    if not isinstance(config, SessionConfig):
        raise InvalidOptionError(
            f"session_config must be a fer_onnx.SessionConfig, got {type(config).__name__}"
        )
    options = config.to_options()
    name = "<bytes>" if isinstance(model, bytes) else str(model)
    if not isinstance(model, bytes):
        check_model_file(Path(model))
    source: str | bytes = model if isinstance(model, bytes) else str(model)
    try:
        session = ort.InferenceSession(source, sess_options=options, providers=list(providers))
    except Exception as e:  # onnxruntime raises its own untyped exceptions
        raise ModelLoadError(
            f"cannot load ONNX model {name}: {type(e).__name__}: {str(e).rstrip('. ')}. Is it "
            "a valid ONNX file (`fer-onnx model inspect FILE` tells what a model holds)?"
        ) from e
    got = session.get_providers()
    wanted = [_name(p) for p in providers if _name(p) != _CPU]
    lost = [p for p in wanted if p not in got]
    if lost and warn_on_fallback:
        warnings.warn(
            f"onnxruntime could not use {lost} (check CUDA/cuDNN libraries) and fell back to "
            f"{got} for {name}",
            RuntimeWarning,
            stacklevel=3,
        )
    log.debug("session for %s on %s", name, got)
    return session
