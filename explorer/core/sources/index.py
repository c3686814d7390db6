"""The record every checkpoint source fills: :class:`CheckpointIndex` (tensor name -> :class:`TensorInfo`: shape,
dtype, bytes, file, offset), plus the small helpers every source shares. Holds no tensor data; torch is imported only
when a dtype is asked for (``torch_dtype``).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, TypeVar

from ..errors import CheckpointError
from ..fmt import safe_text

if TYPE_CHECKING:
    import torch

# Wrapper dict keys, most specific first; the first that holds tensors is chosen by default.
WRAPPER_KEYS = (
    "state_dict",
    "model_state_dict",
    "model",
    "module",
    "net",
    "network",
    "params",
    "weights",
    "state_dict_ema",
    "model_ema",
    "ema",
)


@dataclass(frozen=True)
class TensorInfo:
    """One tensor as stored: on-disk name, shape, dtype (torch name, e.g. ``bfloat16``), bytes and file."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    nbytes: int
    file: str
    offset: int | None = None  # absolute byte offset of the data in ``file`` (safetensors only)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def is_floating(self) -> bool:
        return self.dtype.startswith(("float", "bfloat", "complex"))

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "nbytes": self.nbytes,
            "file": self.file,
        }


_R = TypeVar("_R")


def frozen_record(cls: type[_R], **fields: Any) -> _R:
    """An instance of the frozen dataclass ``cls`` with ``fields``, about twice as fast as ``cls(**fields)`` (a frozen
    dataclass's ``__init__`` goes through ``object.__setattr__`` per field): for records made once per tensor of a
    large checkpoint (47k for the MoE). The same object: equal, hashable, immutable through attribute assignment.
    ``fields`` must name every field (no defaults, no ``__post_init__`` are applied)."""
    obj = object.__new__(cls)
    obj.__dict__.update(fields)
    return obj


def new_tensor_info(name: str, shape: tuple[int, ...], dtype: str, nbytes: int, file: str, offset: int | None) -> TensorInfo:
    """``TensorInfo(name, shape, dtype, nbytes, file, offset)`` through :func:`frozen_record`."""
    return frozen_record(TensorInfo, name=name, shape=shape, dtype=dtype, nbytes=nbytes, file=file, offset=offset)


@dataclass(frozen=True)
class CheckpointIndex:
    """A checkpoint's tensors by on-disk name, with where they came from. Holds no tensor data."""

    path: str
    format: str  # "safetensors", "safetensors-sharded", "torch-zip", "torch-legacy", "torch-sharded"
    files: tuple[str, ...]
    tensors: Mapping[str, TensorInfo]
    metadata: Mapping[str, str] = field(default_factory=dict)
    wrapper_key: str | None = None  # sub-dict chosen inside a wrapper dict ("state_dict", ...)
    wrapper_candidates: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    layout: Any = field(default=None, compare=False, repr=False)  # chunked formats (DCP): has reader() -> tensor/iter_flat/close
    stamps: Mapping[str, tuple[int, int]] = field(default_factory=dict)  # file -> (size, mtime_ns) when indexed
    wrapper_others: tuple[str, ...] = ()  # keys beside the chosen sub-dict that hold no tensors ("meta", "epoch")

    def wrapper_text(self) -> str:
        """What was chosen inside a wrapper dict, e.g. ``sub-dict 'state_dict' chosen; 'meta' holds no tensors``
        ("" for a plain state dict)."""
        if not self.wrapper_key:
            return ""
        text = f"sub-dict {self.wrapper_key!r} chosen"
        others = [c for c in self.wrapper_candidates if c != self.wrapper_key]
        if others:
            text += f"; {', '.join(map(repr, others))} also hold{'s' if len(others) == 1 else ''} tensors (--wrapper)"
        if self.wrapper_others:
            shown = ", ".join(map(repr, self.wrapper_others[:8])) + (", ..." if len(self.wrapper_others) > 8 else "")
            text += f"; {shown} {'holds' if len(self.wrapper_others) == 1 else 'hold'} no tensors"
        return text

    @property
    def total_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())

    @property
    def total_params(self) -> int:
        return sum(t.numel for t in self.tensors.values())

    @property
    def folder(self) -> str:
        p = Path(self.path)
        return str(p if p.is_dir() else p.parent)

    def first_float_dtype(self) -> str | None:
        """What ``from_pretrained(dtype="auto")`` picks without a config dtype: a sharded index's ``metadata.dtype``,
        else the first floating dtype (fp8/fp4 skipped) of the first file, in the order transformers reads its keys
        (sorted names for safetensors, dict order for pickles). None without a floating tensor (transformers would then
        try the first tensor's integer dtype and fail; the default dtype is more useful here)."""
        meta = self.metadata.get("index.dtype")
        if meta:
            return str(meta).removeprefix("torch.")
        if not self.tensors:
            return None
        first_file = self.files[0] if self.files else None
        tensors = [t for t in self.tensors.values() if first_file is None or t.file == first_file] or list(self.tensors.values())
        if self.format.startswith("safetensors") or self.format == "deepspeed-zero":  # ZeRO: as its safetensors export
            tensors.sort(key=lambda t: t.name)
        for t in tensors:
            if t.dtype.startswith(("float", "bfloat")) and not t.dtype.startswith(("float8", "float4")):
                return t.dtype
        return None

    def meta_tensors(self, *, shared: bool = False) -> dict[str, torch.Tensor]:
        """Every tensor as an empty tensor on the meta device with its shape and dtype (uint8 for a dtype this
        torch lacks): what loading code runs on, header-only.

        ``shared``: tensors of the same shape and dtype are one tensor object (a meta tensor has no data; a 47k-tensor
        MoE has a few dozen distinct ones, and making 47k costs ~0.3 s). For code that only reads them, e.g.
        transformers' loading, which takes ``tensor[...]`` of each (a fresh view) before using it."""
        import torch

        out = {}
        made: dict[tuple[tuple[int, ...], str], torch.Tensor] = {}
        for name, t in self.tensors.items():
            if shared:
                m = made.get((t.shape, t.dtype))
                if m is not None:
                    out[name] = m
                    continue
            dt = getattr(torch, t.dtype, None) or torch.uint8
            out[name] = m = torch.empty(t.shape, dtype=dt, device="meta")
            if shared:
                made[(t.shape, t.dtype)] = m
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "format": self.format,
            "files": list(self.files),
            "wrapper_key": self.wrapper_key,
            "wrapper_candidates": list(self.wrapper_candidates),
            "wrapper_others": list(self.wrapper_others),
            "metadata": dict(self.metadata),
            "total_bytes": self.total_bytes,
            "total_params": self.total_params,
            "tensors": [t.to_json() for t in self.tensors.values()],
        }


def file_stamps(*files: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime) of each file now, so a reader can tell a file changed on disk since it was indexed."""
    out = {}
    for f in files:
        try:
            st = os.stat(f)
        except OSError:
            continue
        out[str(f)] = (st.st_size, st.st_mtime_ns)
    return out


def name_inside(folder: Path, name: str) -> bool:
    """True when ``name`` (from a file) is a relative path that stays inside ``folder`` textually, as transformers
    checks ``transformers_weights`` (os.path.commonpath of the absolute paths). Links are not followed: a Hugging
    Face cache snapshot's files are links into its blob store, and that is fine."""
    if not name or "\0" in name or os.path.isabs(name):
        return False
    base = os.path.abspath(folder)
    try:
        return os.path.commonpath([base, os.path.abspath(os.path.join(base, name))]) == base
    except ValueError:
        return False


def quoted(name: object) -> str:
    """A name from a file, quoted and escaped for a one-line message."""
    return safe_text(repr(name))[:200]


def torch_dtype(name: str) -> torch.dtype:
    import torch

    dt = getattr(torch, name, None)
    if dt is None:
        raise CheckpointError(f"dtype {name!r} is not supported by this torch version")
    return dt


def torch_dtype_name(dt: Any) -> str:
    """``torch.bfloat16`` -> ``"bfloat16"``."""
    return str(dt).removeprefix("torch.")
