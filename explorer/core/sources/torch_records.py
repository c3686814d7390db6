"""torch zip files (``torch.save``) read as *records*: the ``data.pkl`` unpickled by a restricted unpickler that
turns every tensor into a :class:`TensorRef` (its storage key, dtype, offset, shape and stride) and every storage
into the byte range of its ``data/<key>`` member, without reading tensor data or calling anything torch would.

The allow-list: torch's tensor-rebuild functions and storage classes, ``torch.Size``, ``OrderedDict``, ``set``,
``_codecs.encode`` (bytes at protocol 2), and the DeepSpeed checkpoint classes (``ZeroStageEnum`` -> its int value;
``LossScaler``, ``DynamicLossScaler``, ``fragment_address`` -> inert stand-ins), plus the argparse/numpy objects
Megatron-DeepSpeed puts in its model states (inert too). Every other GLOBAL is refused before it is looked up: the
file's own names are never imported, so nothing in it runs. DeepSpeed need not be installed.
"""
from __future__ import annotations

import io
import math
import os
import pickle
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CheckpointError
from ..fsio import MAX_PICKLE_BYTES, MAX_ZIP_RATIO, open_regular

# storage class named in a torch pickle -> (dtype name, bytes per element)
_STORAGES: dict[str, tuple[str, int]] = {
    "FloatStorage": ("float32", 4), "DoubleStorage": ("float64", 8), "HalfStorage": ("float16", 2),
    "BFloat16Storage": ("bfloat16", 2), "LongStorage": ("int64", 8), "IntStorage": ("int32", 4),
    "ShortStorage": ("int16", 2), "CharStorage": ("int8", 1), "ByteStorage": ("uint8", 1), "BoolStorage": ("bool", 1),
    "UntypedStorage": ("uint8", 1),
}
DTYPE_SIZES = {"float32": 4, "float64": 8, "float16": 2, "bfloat16": 2, "int64": 8, "int32": 4, "int16": 2, "int8": 1,
               "uint8": 1, "bool": 1}


# --------------------------------------------------------------------------------------------- the unpickler


@dataclass(frozen=True)
class StorageRef:
    key: str
    dtype: str
    numel: int


@dataclass(frozen=True)
class TensorRef:
    """A tensor in a torch zip pickle: its storage and view, never its data."""

    storage: StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    @property
    def dtype(self) -> str:
        return self.storage.dtype

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def contiguous(self) -> bool:
        want, acc = [], 1
        for d in reversed(self.shape):
            want.append(acc)
            acc *= d
        return all(d == 1 or s == w for d, s, w in zip(self.shape, self.stride, reversed(want)))


class Inert:
    """Stand-in for an allowed class (a DeepSpeed loss scaler, a fragment address, ...): records its state only."""

    kind = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.__dict__["_args"] = args

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2 and (state[0] is None or isinstance(state[0], dict)):
            state = {**(state[0] or {}), **(state[1] if isinstance(state[1], dict) else {})}
        if isinstance(state, dict):
            self.__dict__.update({str(k): v for k, v in state.items()})
        else:
            self.__dict__["_state"] = state

    def __repr__(self) -> str:
        return f"<{self.kind}>"


def _inert(name: str) -> type:
    return type(name, (Inert,), {"kind": name})


class _StorageType(str):
    """A storage class named in the pickle (``torch.FloatStorage``): its dtype name."""


def _rebuild_tensor_v2(storage: Any, storage_offset: Any, size: Any, stride: Any, *rest: Any) -> TensorRef:
    if not isinstance(storage, StorageRef):
        raise pickle.UnpicklingError("a tensor rebuilt from something other than a storage record")
    shape, strides = int_tuple(size), int_tuple(stride)
    if shape is None or strides is None or len(shape) != len(strides) or not isinstance(storage_offset, int):
        raise pickle.UnpicklingError("a tensor with an invalid size, stride or offset")
    return TensorRef(storage, storage_offset, shape, strides)


def _rebuild_parameter(data: Any, *rest: Any) -> Any:
    return data


def _rebuild_from_type_v2(func: Any, new_type: Any, args: Any, state: Any) -> Any:
    if func is not _rebuild_tensor_v2 and func is not _rebuild_parameter:
        raise pickle.UnpicklingError("_rebuild_from_type_v2 of a function outside the allow-list")
    return func(*args)


def int_tuple(v: Any) -> tuple[int, ...] | None:
    if isinstance(v, (tuple, list)) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in v):
        return tuple(v)
    return None


def _size(*args: Any) -> tuple[int, ...]:
    t = int_tuple(args[0] if args else ())
    if t is None:
        raise pickle.UnpicklingError("torch.Size of something other than non-negative integers")
    return t


def _enum_value(value: Any = None, *rest: Any) -> Any:
    return value  # ZeroStageEnum(1) -> 1 (an IntEnum: its value is all zero_to_fp32 looks at)


class _OrderedDict(dict):  # type: ignore[type-arg]
    """``collections.OrderedDict`` as a dict; a state dict's ``_metadata`` attribute (BUILD state) is kept aside."""

    def __setstate__(self, state: Any) -> None:
        self.__dict__["_state"] = state


def _codecs_encode(text: Any, encoding: str = "utf-8", *rest: Any) -> bytes:
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1", "utf-8", "utf8"):
        raise pickle.UnpicklingError("_codecs.encode of something other than text")
    return text.encode(encoding)


_INERT: dict[tuple[str, str], Any] = {
    ("deepspeed.runtime.fp16.loss_scaler", "LossScaler"): _inert("LossScaler"),
    ("deepspeed.runtime.fp16.loss_scaler", "DynamicLossScaler"): _inert("DynamicLossScaler"),
    ("deepspeed.runtime.fp16.loss_scaler", "LossScalerBase"): _inert("LossScalerBase"),
    ("deepspeed.utils.tensor_fragment", "fragment_address"): _inert("fragment_address"),
    ("argparse", "Namespace"): _inert("Namespace"),  # Megatron-DeepSpeed saves its args
    ("numpy.core.multiarray", "_reconstruct"): _inert("ndarray"),  # Megatron-DeepSpeed's RNG states
    ("numpy._core.multiarray", "_reconstruct"): _inert("ndarray"),
    ("numpy", "ndarray"): _inert("ndarray"),
    ("numpy", "dtype"): _inert("dtype"),
}
_FUNCS: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch", "Tensor"): "Tensor",
    ("torch.nn.parameter", "Parameter"): "Parameter",
    ("torch", "Size"): _size,
    ("collections", "OrderedDict"): _OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("_codecs", "encode"): _codecs_encode,
    ("deepspeed.runtime.zero.config", "ZeroStageEnum"): _enum_value,
}


class RecordUnpickler(pickle.Unpickler):
    """The data.pkl of a DeepSpeed checkpoint file: the allow-list above, tensors as :class:`TensorRef`."""

    def find_class(self, module: str, name: str) -> Any:
        got = _FUNCS.get((module, name)) or _INERT.get((module, name))
        if got is not None:
            return got
        if module == "torch" and name in _STORAGES:
            return _StorageType(name)
        if module == "torch" and name in DTYPE_SIZES:
            return name
        raise pickle.UnpicklingError(f"GLOBAL {module}.{name} is not allowed")

    def persistent_load(self, pid: Any) -> Any:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unknown persistent id {str(pid)[:80]}")
        stype, key, numel = pid[1], pid[2], pid[4]
        if isinstance(stype, _StorageType):
            dtype = _STORAGES[str(stype)][0]
        elif isinstance(stype, str) and stype in DTYPE_SIZES:
            dtype = stype
        else:
            raise pickle.UnpicklingError(f"storage of unknown type {str(stype)[:80]}")
        if not isinstance(key, str) or not isinstance(numel, int) or numel < 0:
            raise pickle.UnpicklingError("storage record without key or size")
        return StorageRef(key, dtype, numel)


def load_restricted(unpickler: type[pickle.Unpickler], raw: bytes, p: Path, *, what: str, allowed: str) -> Any:
    """``raw`` unpickled by a restricted ``unpickler`` whose refusals start with ``"GLOBAL "``; any failure is one
    CheckpointError naming ``p`` (a refused GLOBAL says what is ``allowed``)."""
    try:
        return unpickler(io.BytesIO(raw)).load()
    except pickle.UnpicklingError as e:
        msg = str(e)
        if msg.startswith("GLOBAL "):
            raise CheckpointError(f"{p}: refused to unpickle {what}: {msg} ({allowed})") from None
        raise CheckpointError(f"{p}: corrupt {what}: {msg[:200]}") from None
    except (EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, MemoryError, RecursionError,
            struct.error) as e:
        why = "truncated file" if isinstance(e, EOFError) else f"{type(e).__name__}: {str(e)[:200]}"
        raise CheckpointError(f"{p}: corrupt {what} ({why})") from None


@dataclass
class TorchFile:
    """A torch zip file's unpickled ``data.pkl`` (inert) and where each storage's bytes lie in the file."""

    path: str
    obj: Any
    storages: dict[str, tuple[int, int]]  # storage key -> (absolute data offset, bytes)
    size: int

    def locate(self, ref: TensorRef, what: str) -> tuple[int, int]:
        """(absolute byte offset of the tensor's first element, bytes per element); checks the view fits."""
        loc = self.storages.get(ref.storage.key)
        if loc is None:
            raise CheckpointError(f"{self.path}: {what}: its storage {ref.storage.key!r} is not in the archive")
        start, nbytes = loc
        item = DTYPE_SIZES[ref.dtype]
        if nbytes != ref.storage.numel * item:
            raise CheckpointError(f"{self.path}: {what}: storage of {nbytes} bytes, the pickle says "
                                  f"{ref.storage.numel} {ref.dtype} values")
        if ref.numel:
            last = ref.offset + sum((d - 1) * s for d, s in zip(ref.shape, ref.stride))
            if ref.offset < 0 or last >= ref.storage.numel:
                raise CheckpointError(f"{self.path}: {what}: its view {list(ref.shape)} runs past its storage")
        return start + ref.offset * item, item


def read_torch_file(path: str | os.PathLike[str], what: str) -> TorchFile:
    """Unpickle a torch zip file's ``data.pkl`` with the restricted unpickler. Raises CheckpointError."""
    p = Path(path)
    with open_regular(p, what=what, error=CheckpointError) as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise CheckpointError(f"{p}: empty {what}")
        try:
            z = zipfile.ZipFile(f)
            infos = z.infolist()
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as e:
            raise CheckpointError(f"{p}: not a torch checkpoint (broken zip archive: {str(e)[:120]}; truncated?)") from None
        pkls = [i for i in infos if i.filename.count("/") == 1 and i.filename.endswith("/data.pkl")]
        if len(pkls) != 1:
            raise CheckpointError(f"{p}: not a torch checkpoint: {len(pkls)} data.pkl records in the archive")
        info = pkls[0]
        prefix = info.filename[: -len("data.pkl")]
        if info.file_size > MAX_PICKLE_BYTES or (info.compress_type != zipfile.ZIP_STORED
                                                 and info.file_size > MAX_ZIP_RATIO * max(info.compress_size, 1)):
            raise CheckpointError(f"{p}: its data.pkl declares {info.file_size} bytes, over the "
                                  f"{MAX_PICKLE_BYTES >> 20} MiB limit")
        try:
            raw = z.read(info)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
            raise CheckpointError(f"{p}: cannot read its data.pkl ({str(e)[:120]}; truncated?)") from None
        storages: dict[str, tuple[int, int]] = {}
        for i in infos:
            if not i.filename.startswith(prefix + "data/"):
                continue
            key = i.filename[len(prefix) + 5 :]
            if i.compress_type != zipfile.ZIP_STORED:
                raise CheckpointError(f"{p}: storage {key!r} is compressed; torch.save never does that")
            f.seek(i.header_offset)
            hdr = f.read(30)
            if len(hdr) < 30 or hdr[:4] != b"PK\x03\x04":
                raise CheckpointError(f"{p}: corrupt zip entry header of storage {key!r}")
            n_name, n_extra = struct.unpack("<HH", hdr[26:30])
            start = i.header_offset + 30 + n_name + n_extra
            if start + i.file_size > size:
                raise CheckpointError(f"{p}: storage {key!r} ends at byte {start + i.file_size}, past the end of the "
                                      f"file ({size} bytes; truncated?)")
            storages[key] = (start, i.file_size)
    obj = load_restricted(RecordUnpickler, raw, p, what="data.pkl",
                          allowed="only torch's tensor records and DeepSpeed's checkpoint classes are; nothing named "
                          "in the file is imported or run")
    return TorchFile(str(p), obj, storages, size)



def storage_table(file: str) -> TorchFile:
    """Where each storage of a torch zip file lies (the central directory only; data.pkl not unpickled)."""
    p = Path(file)
    storages: dict[str, tuple[int, int]] = {}
    with open_regular(p, what="DeepSpeed checkpoint file", error=CheckpointError) as f:
        size = os.fstat(f.fileno()).st_size
        try:
            infos = zipfile.ZipFile(f).infolist()
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
            raise CheckpointError(f"{p}: changed on disk since it was opened ({str(e)[:100]})") from None
        for i in infos:
            parts = i.filename.split("/")
            if len(parts) != 3 or parts[1] != "data":
                continue
            f.seek(i.header_offset)
            hdr = f.read(30)
            if len(hdr) < 30 or hdr[:4] != b"PK\x03\x04":
                raise CheckpointError(f"{p}: corrupt zip entry header (changed on disk since it was opened?)")
            n_name, n_extra = struct.unpack("<HH", hdr[26:30])
            storages[parts[2]] = (i.header_offset + 30 + n_name + n_extra, i.file_size)
    return TorchFile(str(p), None, storages, size)
