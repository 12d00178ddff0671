"""The typed run record: what a training run was asked to do, where it stands, what it promises.

Keras-free, so that train, resume, report, export and the model card read the same record:

* :class:`TrainConfig` — every option of ``fer-onnx-factory train``, frozen, written once to
  ``config.json`` (``{"args": ..., "command": ..., "versions": ...}``) and read back by
  ``--resume`` (the saved options win) and by export. Keys a run written by an older version
  lacks take their defaults; unknown keys are an error (a typo must not pass silently).
* :class:`RunState` — the resumable progress (``state.json``): epoch, phase, best PublicTest
  accuracy and its epoch, plateau/early-stopping counter, training seconds.
* the model contract — what the trained model expects and returns (labels in output order,
  input size and colour mode, value range, output kind, how its training faces were framed):
  the runtime's own :class:`fer_onnx.metadata.ModelInfo`, written once by training to
  ``contract.json`` (:func:`write_contract`) and read by export (:func:`read_contract`), which
  writes it into the ONNX metadata with the run's provenance added.

``contract.json`` holds exactly the fer-onnx entries of the exported file's metadata::

    {"format": "fer_onnx.metadata", "metadata": {"fer_onnx.labels": "[\"angry\", ...]",
     "fer_onnx.input_size": "[48, 48]", "fer_onnx.color_mode": "gray", ...}}

(the string map of :meth:`~fer_onnx.metadata.ModelInfo.to_metadata`, parsed back by
:meth:`~fer_onnx.metadata.ModelInfo.from_metadata`). Runs written before this format hold
``{"labels": [...], "input_size": [h, w], "color": ..., "value_range": [lo, hi], "output": ...,
"template": {...} | null}``, which :func:`read_contract` still accepts.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fer_onnx.alignment import KEY_CROP_TEMPLATE, CropTemplate
from fer_onnx.errors import ModelLoadError
from fer_onnx.metadata import (
    KEY_COLOR,
    KEY_INPUT_SIZE,
    KEY_LABELS,
    KEY_OUTPUT,
    KEY_VALUE_RANGE,
    REQUIRED_KEYS,
    ModelInfo,
)
from fer_onnx_factory.data.framing import FER2013_TEMPLATE
from fer_onnx_factory.errors import PipelineError

CONFIG = "config.json"
STATE = "state.json"
CONTRACT = "contract.json"
CONTRACT_FORMAT = "fer_onnx.metadata"
"""``format`` of ``contract.json``: its ``metadata`` is a :class:`ModelInfo`'s string map."""

_PATHS = ("data", "out", "ferplus", "init")

SNAPSHOT = re.compile(r"^epoch_(\d{3,})\.keras$")
"""Name of a model kept after an epoch (``--keep-epochs``), with the epochs finished."""


def snapshot_name(epochs_done: int) -> str:
    """File name of the model kept after ``epochs_done`` epochs (``--keep-epochs``)."""
    return f"epoch_{epochs_done:03d}.keras"


@dataclass(frozen=True)
class TrainConfig:
    """Every training option (the defaults are ``fer-onnx-factory train``'s)."""

    data: Path
    out: Path
    ferplus: Path | None = None
    ferplus_mode: str = "majority"
    ferplus_weight: float = 1.0
    teacher: tuple[Path, ...] = ()
    teacher_weight: float = 0.5
    teacher_temperature: float = 2.0
    extra: tuple[Path, ...] = ()
    extra_repeat: int = 1
    repeat: int = 1
    limit: int = 0
    arch: str = "mobilenetv2"
    alpha: float = 1.0
    image_size: int = 64
    weights: str = "imagenet"
    init: Path | None = None
    pooling: str = "avg"
    dense: tuple[int, ...] = ()
    dropout: float = 0.2
    members: int = 1
    bn_momentum: float = 0.99
    head_epochs: int = 5
    epochs: int = 40
    batch_size: int = 128
    head_lr: float = 1e-3
    lr: float | None = None
    weight_decay: float = 5e-5
    schedule: str = "cosine"
    warmup_epochs: float = 2.0
    plateau_factor: float = 0.5
    plateau_patience: int = 3
    early_stopping: int = 0
    label_smoothing: float = 0.1
    mixup: float = 0.0
    cutmix: float = 0.0
    class_weights: str = "none"
    rotation: float = 15.0
    shift: float = 0.1
    zoom: float = 0.1
    shear: float = 0.0
    no_flip: bool = False
    erasing: float = 0.0
    keep_epochs: int = 0
    end_at_epoch: int = 0
    seed: int = 42
    verbose: int = 2
    resume: bool = False

    def __post_init__(self) -> None:
        self._normalise_types()
        self._check_ferplus()
        self._check_teacher()
        if self.extra_repeat < 1:
            raise PipelineError(f"extra_repeat must be >= 1, got {self.extra_repeat}")
        if not self.extra and self.extra_repeat != 1:
            raise PipelineError("extra_repeat needs extra data (--extra DATA ...)")
        if self.lr is None:  # the documented default depends on the weights
            object.__setattr__(self, "lr", 2e-3 if self.pretrained is False else 2e-4)
        if self.members < 1:
            raise PipelineError(f"members must be at least 1, got {self.members}")
        self._check_augmentation()
        self._check_epochs()

    def _normalise_types(self) -> None:
        """Store paths as :class:`~pathlib.Path` and ``dense`` as ints, whatever was given.

        ``config.json`` and argparse hand over strings and lists; the record keeps one type
        per field so that equality and ``to_dict`` do not depend on where it came from.
        """
        for name in _PATHS:
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))
        object.__setattr__(self, "dense", tuple(int(d) for d in self.dense))
        object.__setattr__(self, "teacher", tuple(Path(t) for t in self.teacher))
        object.__setattr__(self, "extra", tuple(Path(t) for t in self.extra))

    def _check_ferplus(self) -> None:
        """``ferplus_weight`` is in ``(0, 1]``, and other than 1 only with a FER+ file."""
        if not 0.0 < self.ferplus_weight <= 1.0:
            raise PipelineError(f"ferplus_weight must be in (0, 1], got {self.ferplus_weight}")
        if self.ferplus is None and self.ferplus_weight != 1.0:
            raise PipelineError("ferplus_weight needs a FER+ file (--ferplus fer2013new.csv)")

    def _check_teacher(self) -> None:
        """The distillation options are valid, and set only with teacher models.

        ``teacher_weight`` and ``teacher_temperature`` keep their defaults without
        ``teacher``; the weight is in ``[0, 1]`` and the temperature positive.
        """
        if not self.teacher and (self.teacher_weight != 0.5 or self.teacher_temperature != 2.0):
            raise PipelineError(
                "teacher_weight / teacher_temperature need teacher models (--teacher ...)"
            )
        if not 0.0 <= self.teacher_weight <= 1.0:
            raise PipelineError(f"teacher_weight must be in [0, 1], got {self.teacher_weight}")
        if not self.teacher_temperature > 0:
            raise PipelineError(f"teacher_temperature must be > 0, got {self.teacher_temperature}")

    def _check_augmentation(self) -> None:
        """The augmentation strengths are in range, and mixup and cutmix not both on.

        ``erasing`` is a probability; ``mixup`` (>= 0) and ``cutmix`` (in ``[0, 1]``) are
        Beta parameters, 0 meaning off.
        """
        if not 0.0 <= self.erasing <= 1.0:
            raise PipelineError(f"erasing must be a probability in [0, 1], got {self.erasing}")
        if self.mixup < 0:
            raise PipelineError(f"mixup takes a Beta parameter >= 0 (0 = off), got {self.mixup}")
        if not 0.0 <= self.cutmix <= 1.0:
            raise PipelineError(
                f"cutmix takes a Beta parameter in (0, 1] (0 = off), got {self.cutmix}"
            )
        if self.mixup > 0 and self.cutmix > 0:
            raise PipelineError("choose one of mixup and cutmix, not both")

    def _check_epochs(self) -> None:
        """The epoch counts are not negative and a batch holds at least one face.

        The counts: ``keep_epochs``, ``end_at_epoch``, ``epochs`` and ``head_epochs``.
        """
        if self.keep_epochs < 0 or self.end_at_epoch < 0:
            raise PipelineError("keep_epochs and end_at_epoch must be >= 0")
        if self.epochs < 0 or self.head_epochs < 0 or self.batch_size < 1:
            raise PipelineError("epochs and head_epochs must be >= 0 and batch_size >= 1")

    @property
    def pretrained(self) -> bool:
        """Whether the backbone starts from pretrained weights (not ``--weights none``).

        ``init`` (a whole trained model) does not count: the run fine-tunes every layer from
        the first epoch, with ``lr`` as given.
        """
        return self.weights.lower() != "none"

    @property
    def total_epochs(self) -> int:
        """Epochs of both phases (the head phase only counts with pretrained weights)."""
        return self.epochs + (self.head_epochs if self.pretrained else 0)

    @property
    def peak_lr(self) -> float:
        """The phase-2 learning rate (``lr`` with its default resolved)."""
        assert self.lr is not None
        return self.lr

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Every option's default, by field name (``data`` and ``out`` have none)."""
        return {
            f.name: f.default
            for f in dataclasses.fields(cls)
            if f.default is not dataclasses.MISSING
        }

    @classmethod
    def from_args(cls, args: Any) -> TrainConfig:
        """From an ``argparse.Namespace`` (or any object with the same attributes)."""
        return cls.from_dict(vars(args))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """From a dictionary such as ``config.json``'s ``args``.

        Raises:
            PipelineError: It names an option that does not exist, or misses ``data``/``out``.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise PipelineError(f"unknown training options {unknown}; known: {sorted(names)}")
        clean: dict[str, Any] = {k: (None if v == "None" else v) for k, v in values.items()}
        for required in ("data", "out"):
            if clean.get(required) is None:
                raise PipelineError(f"a training config needs {required!r}")
        return cls(**clean)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (paths as strings)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = (
                str(value)
                if isinstance(value, Path)
                else [str(v) for v in value]
                if f.name in ("teacher", "extra")
                else list(value)
                if f.name == "dense"
                else value
            )
        return out

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes``."""
        return dataclasses.replace(self, **changes)

    def write(self, folder: Path, command: str, versions: dict[str, str]) -> None:
        """Write ``config.json`` (options, the command line, library versions)."""
        record = {"args": self.to_dict(), "command": command, "versions": versions}
        _write_json(folder / CONFIG, record)

    @classmethod
    def read(cls, folder: Path) -> tuple[TrainConfig, dict[str, Any]]:
        """Read ``config.json``: the config and the whole record (command, versions).

        Raises:
            PipelineError: The file is missing or malformed.
        """
        record = _read_json(folder / CONFIG)
        if not isinstance(record.get("args"), dict):
            raise PipelineError(f"{folder / CONFIG} has no 'args' object")
        return cls.from_dict(record["args"]), record


@dataclass
class RunState:
    """A run's progress, saved after every epoch (``state.json``)."""

    epoch: int = 0
    phase: int = 1
    best: float = -1.0
    best_epoch: int = -1
    wait: int = 0
    train_seconds: float = 0.0
    stopped_early: bool = False

    def write(self, folder: Path) -> None:
        """Write ``state.json`` atomically."""
        _write_json(folder / STATE, dataclasses.asdict(self))

    @classmethod
    def read(cls, folder: Path) -> RunState:
        """Read ``state.json``.

        Raises:
            PipelineError: It is missing or malformed.
        """
        values = _read_json(folder / STATE)
        names = {f.name for f in dataclasses.fields(cls)}
        try:
            return cls(**{k: v for k, v in values.items() if k in names})
        except TypeError as e:
            raise PipelineError(f"{folder / STATE} is malformed: {e}") from e


def write_contract(folder: Path, info: ModelInfo) -> None:
    """Write the run's model contract ``info`` to ``contract.json`` (without its extras).

    The provenance entries of ``info.extra`` are export's business, not the contract's.
    """
    props = dataclasses.replace(info, extra={}).to_metadata()
    _write_json(
        folder / CONTRACT, {"format": CONTRACT_FORMAT, "metadata": dict(sorted(props.items()))}
    )


def read_contract(folder: Path) -> ModelInfo:
    """Read the run's model contract from ``contract.json``, in either format.

    Raises:
        PipelineError: It is missing, malformed or implausible (bad labels, size, colour,
            value range, output kind or crop template).
    """
    path = folder / CONTRACT
    try:
        props = _contract_props(_read_json(path))
    except (KeyError, TypeError, ValueError) as e:
        raise PipelineError(f"{path} is malformed: {e}") from e
    try:
        return ModelInfo.from_metadata(props, str(path))
    except ModelLoadError as e:  # "<path> has malformed fer-onnx metadata: ..."
        raise PipelineError(str(e)) from e


def _contract_props(data: dict[str, Any]) -> dict[str, str]:
    """The metadata string map of a ``contract.json`` of either format.

    Raises:
        KeyError, TypeError, ValueError: It is neither format.
    """
    if "format" not in data:
        return _old_contract_props(data)
    if data["format"] != CONTRACT_FORMAT:
        raise ValueError(f"unknown format {data['format']!r}, expected {CONTRACT_FORMAT!r}")
    props = data["metadata"]
    if not isinstance(props, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in props.items()
    ):
        raise TypeError("'metadata' must map names to strings")
    missing = [key for key in REQUIRED_KEYS if key not in props]
    if missing:
        raise ValueError(f"'metadata' lacks {', '.join(missing)}")
    return props


def _old_contract_props(data: dict[str, Any]) -> dict[str, str]:
    """The metadata string map of a run from before the format key (plain JSON fields)."""
    old = {
        KEY_LABELS: json.dumps(data["labels"]),
        KEY_INPUT_SIZE: json.dumps(data["input_size"]),
        KEY_COLOR: str(data["color"]),
        KEY_VALUE_RANGE: json.dumps(data["value_range"]),
        KEY_OUTPUT: str(data.get("output", "probabilities")),
    }
    if data.get("template") is not None:
        old[KEY_CROP_TEMPLATE] = json.dumps(data["template"])
    return old


def template_for(data: Path) -> CropTemplate | None:
    """The framing template that fits ``data``, else ``None``.

    An aligned ``.npz`` dataset (``fer-onnx-factory align``) carries the template its faces
    were aligned onto; FER2013 csv files get the template measured on them.

    Raises:
        PipelineError: The template found is not a plausible :class:`CropTemplate`.
    """
    if data.suffix == ".npz":
        from fer_onnx_factory.data.datasets import read_npz_meta

        source, template = data, read_npz_meta(data).get("template")
    elif "fer2013" in data.name.lower() and FER2013_TEMPLATE.is_file():
        source, template = FER2013_TEMPLATE, _read_json(FER2013_TEMPLATE).get("template")
    else:
        return None
    if not isinstance(template, dict):
        return None
    try:
        return CropTemplate.from_json(json.dumps(template))
    except ValueError as e:
        raise PipelineError(f"{source}: its crop template is implausible: {e}") from e


def write_record(folder: Path, record: dict[str, Any]) -> None:
    """Rewrite a run's whole ``config.json`` record (e.g. after ``--end-at-epoch``)."""
    if not isinstance(record.get("args"), dict):
        raise PipelineError("a run record needs an 'args' object")
    TrainConfig.from_dict(record["args"])  # still a valid config
    _write_json(folder / CONFIG, record)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as e:
        raise PipelineError(f"{path} not found") from e
    except (OSError, json.JSONDecodeError) as e:
        raise PipelineError(f"cannot read {path}: {e}") from e
    if not isinstance(data, dict):
        raise PipelineError(f"{path} does not hold a JSON object")
    return data
