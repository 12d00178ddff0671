"""Read a PyTorch state dict (``.pth``) into NumPy arrays without PyTorch.

``torch.save`` writes a pickle whose tensors refer to raw storages kept beside it: in the zip
format (PyTorch >= 1.6) ``<name>/data.pkl`` plus one ``<name>/data/<key>`` file per storage,
in the older format one file of consecutive pickles (magic number, protocol, system info, the
object, the storage keys) followed by each storage as an int64 element count and its bytes.
This reader unpickles with a restricted loader that knows only what a state dict of plain
tensors needs (``collections.OrderedDict``, ``torch._utils._rebuild_tensor_v2`` and the
storage types) and refuses every other global, so a file cannot run code while it is read.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from fer_onnx_factory.errors import PipelineError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
"""The first pickle of a pre-zip ``torch.save`` file."""

STORAGE_DTYPES: dict[str, Any] = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}
"""PyTorch storage types and the NumPy dtype of their elements."""


class StateDictError(PipelineError):
    """A file is not a PyTorch state dict of plain tensors this reader understands."""


@dataclass(frozen=True)
class _StorageType:
    dtype: Any


@dataclass(frozen=True)
class _Storage:
    key: str
    dtype: Any
    numel: int


@dataclass(frozen=True)
class _Tensor:
    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor_v2(storage: _Storage, offset: int, size: Any, stride: Any, *_: Any) -> _Tensor:
    return _Tensor(storage, int(offset), tuple(int(d) for d in size), tuple(int(s) for s in stride))


class _Unpickler(pickle.Unpickler):
    """Resolves only the globals a state dict of plain tensors uses."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(STORAGE_DTYPES[name])
        raise StateDictError(
            f"the file refers to {module}.{name}: not a state dict of plain tensors "
            "(only OrderedDict, tensors and storages are read)"
        )

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise StateDictError(f"unexpected persistent id {pid!r}")
        kind, key, numel = pid[1], pid[2], pid[4]
        if not isinstance(kind, _StorageType):
            raise StateDictError(f"storage {key!r} has an unknown type {kind!r}")
        if len(pid) > 5 and pid[5] is not None:
            raise StateDictError(f"storage {key!r} is a view: not supported")
        return _Storage(str(key), kind.dtype, int(numel))


def _materialise(tensor: _Tensor, data: bytes) -> np.ndarray:
    itemsize = np.dtype(tensor.storage.dtype).itemsize
    if len(data) != tensor.storage.numel * itemsize:
        raise StateDictError(
            f"storage {tensor.storage.key}: {len(data)} bytes for "
            f"{tensor.storage.numel} elements of {np.dtype(tensor.storage.dtype)}"
        )
    flat = np.frombuffer(data, dtype=np.dtype(tensor.storage.dtype).newbyteorder("<"))
    last = tensor.offset + sum(
        (d - 1) * s for d, s in zip(tensor.shape, tensor.stride, strict=True)
    )
    if min(tensor.shape, default=1) > 0 and last >= flat.size:
        raise StateDictError(f"a tensor of shape {tensor.shape} runs past its storage")
    view = np.lib.stride_tricks.as_strided(
        flat[tensor.offset :],
        shape=tensor.shape,
        strides=tuple(s * itemsize for s in tensor.stride),
        writeable=False,
    )
    return np.array(view, dtype=np.dtype(tensor.storage.dtype).newbyteorder("="))


def _tensors(obj: Any) -> dict[str, _Tensor]:
    if not isinstance(obj, dict):
        raise StateDictError(f"the file holds a {type(obj).__name__}, not a state dict")
    out = {str(k): v for k, v in obj.items()}
    odd = [k for k, v in out.items() if not isinstance(v, _Tensor)]
    if odd:
        raise StateDictError(f"entries {odd[:5]} are not tensors: not a plain state dict")
    return out


def _read_zip(path: Path) -> dict[str, np.ndarray]:
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise StateDictError(f"{path}: {len(pickles)} data.pkl entries, expected 1")
        root = pickles[0][: -len("data.pkl")]
        order = (
            archive.read(f"{root}byteorder").decode()
            if f"{root}byteorder" in (archive.namelist())
            else "little"
        )
        if order != "little":
            raise StateDictError(f"{path}: {order}-endian storages are not supported")
        tensors = _tensors(_Unpickler(io.BytesIO(archive.read(pickles[0]))).load())
        return {
            name: _materialise(t, archive.read(f"{root}data/{t.storage.key}"))
            for name, t in tensors.items()
        }


def _read_legacy(f: IO[bytes]) -> dict[str, np.ndarray]:
    if _Unpickler(f).load() != LEGACY_MAGIC:
        raise StateDictError("not a torch.save file (no magic number)")
    _protocol, system = _Unpickler(f).load(), _Unpickler(f).load()
    if not isinstance(system, dict):
        raise StateDictError("not a torch.save file (no system information after the magic)")
    if not system.get("little_endian", True):
        raise StateDictError("big-endian storages are not supported")
    tensors = _tensors(_Unpickler(f).load())
    storages = {t.storage.key: t.storage for t in tensors.values()}
    data: dict[str, bytes] = {}
    for key in _Unpickler(f).load():
        storage = storages.get(str(key))
        numel = int.from_bytes(f.read(8), "little", signed=True)
        if storage is None or numel != storage.numel:
            raise StateDictError(f"storage {key!r}: {numel} elements, not what the tensors say")
        data[storage.key] = f.read(numel * np.dtype(storage.dtype).itemsize)
    missing = sorted(set(storages) - set(data))
    if missing:
        raise StateDictError(f"storages {missing[:5]} are missing from the file")
    return {name: _materialise(t, data[t.storage.key]) for name, t in tensors.items()}


def read_state_dict(path: Path) -> dict[str, np.ndarray]:
    """The tensors of a ``torch.save``-d state dict as NumPy arrays, in the file's order.

    Raises:
        StateDictError: The file is unreadable, not a state dict of plain tensors, or refers
            to anything else (no code from the file runs).
    """
    try:
        if zipfile.is_zipfile(path):
            return _read_zip(path)
        with path.open("rb") as f:
            return _read_legacy(f)
    except StateDictError as e:
        raise StateDictError(f"{path}: {e}") from e
    except (OSError, EOFError, KeyError, ValueError, TypeError, pickle.UnpicklingError) as e:
        raise StateDictError(f"{path}: not a readable state dict ({type(e).__name__}: {e})") from e
