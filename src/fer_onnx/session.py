"""The one place that makes onnxruntime sessions; providers are checked, not hoped for."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import onnxruntime as ort

from fer_onnx.errors import ModelLoadError, ProviderError

log = logging.getLogger(__name__)

Device = Literal["auto", "cpu", "cuda"]
ProviderSpec = str | tuple[str, dict[str, Any]]

__all__ = ["Device", "ProviderSpec", "SessionConfig", "create_session", "resolve_providers"]

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

    def to_options(self) -> ort.SessionOptions:
        """Build the onnxruntime ``SessionOptions``."""
        levels = {
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        }
        if self.graph_optimization not in levels:
            raise ValueError(
                f"graph_optimization must be one of {sorted(levels)}, "
                f"got {self.graph_optimization!r}"
            )
        if self.intra_op_threads < 0 or self.inter_op_threads < 0:
            raise ValueError("thread counts must be >= 0")
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.intra_op_threads
        options.inter_op_num_threads = self.inter_op_threads
        options.graph_optimization_level = levels[self.graph_optimization]
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = self.log_severity
        return options


def _name(provider: ProviderSpec) -> str:
    return provider if isinstance(provider, str) else provider[0]


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
        if isinstance(providers, str):
            raise TypeError("providers must be a list of provider names, not a string")
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
    raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")


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
    name = "<bytes>" if isinstance(model, bytes) else str(model)
    if not isinstance(model, bytes) and not Path(model).is_file():
        raise ModelLoadError(f"model file not found: {name}")
    source: str | bytes = model if isinstance(model, bytes) else str(model)
    try:
        session = ort.InferenceSession(
            source, sess_options=config.to_options(), providers=list(providers)
        )
    except Exception as e:  # onnxruntime raises its own untyped exceptions
        raise ModelLoadError(
            f"cannot load ONNX model {name}: {type(e).__name__}: {e}. Is it a valid ONNX "
            "file exported by fer-onnx (python -m export.onnx)?"
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
