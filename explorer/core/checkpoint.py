"""Header-only checkpoint index: every tensor's name, shape, dtype, size and file, without reading tensor data.

Formats: safetensors (single or sharded via ``*.safetensors.index.json``), torch zip pickles (read with
``weights_only=True`` on the meta device: only ``data.pkl`` is read), legacy non-zip torch pickles (read with
``weights_only=True``; the format has no header, so this one reads the data), Hugging Face model directories,
and wrapper dicts (``state_dict``, ``model``, ``module``, ``state_dict_ema``, Lightning checkpoints).
"""
from __future__ import annotations

import json
import math
import mmap
import os
import re
import struct
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from .errors import CheckpointError
from .fmt import safe_text
from .fsio import (
    MAX_HEADER_BYTES,
    MAX_INDEX_BYTES,
    MAX_PICKLE_BYTES,
    MAX_ZIP_RATIO,
    check_regular,
    load_json,
    open_regular,
)

if TYPE_CHECKING:  # torch is imported lazily: a checkpoint-only report should not pay for it twice
    import torch

# safetensors dtype code -> (torch dtype name, bits per element)
SAFETENSORS_DTYPES: dict[str, tuple[str, int]] = {
    "BOOL": ("bool", 8),
    "U8": ("uint8", 8),
    "I8": ("int8", 8),
    "U16": ("uint16", 16),
    "I16": ("int16", 16),
    "F16": ("float16", 16),
    "BF16": ("bfloat16", 16),
    "U32": ("uint32", 32),
    "I32": ("int32", 32),
    "F32": ("float32", 32),
    "U64": ("uint64", 64),
    "I64": ("int64", 64),
    "F64": ("float64", 64),
    "C64": ("complex64", 64),
    "F8_E4M3": ("float8_e4m3fn", 8),
    "F8_E5M2": ("float8_e5m2", 8),
    "F8_E4M3FNUZ": ("float8_e4m3fnuz", 8),
    "F8_E5M2FNUZ": ("float8_e5m2fnuz", 8),
    "F8_E8M0": ("float8_e8m0fnu", 8),
    "F4": ("float4_e2m1fn_x2", 4),
}
_TORCH_TO_SAFETENSORS = {v[0]: k for k, v in SAFETENSORS_DTYPES.items()}

# Priority used by from_pretrained for a local directory.
HF_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
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
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


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
        if self.format.startswith("safetensors"):
            tensors.sort(key=lambda t: t.name)
        for t in tensors:
            if t.dtype.startswith(("float", "bfloat")) and not t.dtype.startswith(("float8", "float4")):
                return t.dtype
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "format": self.format,
            "files": list(self.files),
            "wrapper_key": self.wrapper_key,
            "wrapper_candidates": list(self.wrapper_candidates),
            "metadata": dict(self.metadata),
            "total_bytes": self.total_bytes,
            "total_params": self.total_params,
            "tensors": [t.to_json() for t in self.tensors.values()],
        }


# --------------------------------------------------------------------------------------------- opening


def open_checkpoint(path: str | os.PathLike[str], *, wrapper: str | None = None) -> CheckpointIndex:
    """Index a checkpoint file or Hugging Face directory from its headers.

    ``wrapper`` selects the sub-dict of a wrapper checkpoint (e.g. ``"state_dict_ema"``).
    The format is decided from the name and the first bytes (never from a zip signature found elsewhere in the
    file): ``*.safetensors`` and a safetensors-shaped header are safetensors, ``PK\\x03\\x04`` at offset 0 a torch
    zip, a pickle PROTO opcode a legacy torch pickle. Only regular files are read (a FIFO or device is refused).
    Raises CheckpointError with a one-line message naming the file and the problem.
    """
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{p}: no such file or directory")
    if p.is_dir():
        from . import dcp

        if dcp.is_dcp_folder(p):
            lay = dcp.open_dcp(p, wrapper=wrapper, preferred=WRAPPER_KEYS)
            tensors = {n: TensorInfo(n, t.shape, t.dtype, t.nbytes, t.chunks[0].file if t.chunks else lay.files[0])
                       for n, t in lay.tensors.items()}
            return CheckpointIndex(str(path), "dcp", lay.files, tensors, lay.metadata, lay.group, lay.candidates,
                                   lay.notes, layout=lay)
        p = resolve_weights_in_dir(p)
    name = p.name
    if name.endswith(".index.json"):
        return _open_sharded(p, wrapper=wrapper)
    with open_regular(p, what="checkpoint file", error=CheckpointError) as f:
        st = os.fstat(f.fileno())
        head = f.read(64)
    if st.st_size == 0:
        raise CheckpointError(f"{p}: empty file, expected a safetensors or torch checkpoint")
    kind = _sniff(name, head, st.st_size)
    if kind == "zip":
        return _open_torch(p, wrapper=wrapper, legacy=False)
    if kind == "safetensors":
        if wrapper is not None:
            raise CheckpointError(f"{p}: --wrapper {wrapper!r} given, but a safetensors file is a flat state dict with no sub-dicts")
        tensors, meta, notes = _read_safetensors(p)
        return CheckpointIndex(str(path), "safetensors", (str(p),), tensors, meta, notes=notes, stamps=_stamps(p))
    if kind == "pickle":
        return _open_torch(p, wrapper=wrapper, legacy=True)
    raise CheckpointError(
        f"{p}: not a checkpoint: expected a safetensors header, a torch zip archive or a torch pickle "
        f"({st.st_size} bytes, none of these formats)"
    )


_ZIP_MAGIC = b"PK\x03\x04"  # a zip local file header: torch.save's archives start with one


def _sniff(name: str, head: bytes, size: int) -> str | None:
    """"safetensors", "zip", "pickle" or None, from the file name and its first bytes only."""
    if name.endswith(".safetensors"):
        return "safetensors"
    if head[:4] == _ZIP_MAGIC:
        return "zip"
    if len(head) >= 9:
        (n,) = struct.unpack("<Q", head[:8])
        if 2 <= n <= min(MAX_HEADER_BYTES, size - 8) and head[8:].lstrip(b" \t\r\n")[:1] == b"{":
            return "safetensors"
    if head[:1] == b"\x80":  # pickle PROTO: torch.save(_use_new_zipfile_serialization=False)
        return "pickle"
    return None


def _stamps(*files: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime) of each file now, so a reader can tell a file changed on disk since it was indexed."""
    out = {}
    for f in files:
        try:
            st = os.stat(f)
        except OSError:
            continue
        out[str(f)] = (st.st_size, st.st_mtime_ns)
    return out


def _inside_name(folder: Path, name: str) -> bool:
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


def resolve_weights_in_dir(folder: Path) -> Path:
    """The weights file ``from_pretrained`` would pick in a local directory (same priority).

    A ``transformers_weights`` entry in config.json is followed only inside the folder (transformers refuses
    anything else, and so do we, naming the config and the entry)."""
    cfg = folder / "config.json"
    tw = None
    if cfg.is_file():
        try:
            raw = load_json(cfg, what="config.json", error=CheckpointError)
        except CheckpointError:
            raw = None  # an unreadable config is reported by whoever needs the model; the weights still open
        tw = raw.get("transformers_weights") if isinstance(raw, dict) else None
    if tw is not None:
        if not isinstance(tw, str) or not _inside_name(folder, tw):
            raise CheckpointError(
                f"{cfg}: transformers_weights {_q(tw)} must name a file inside {folder} "
                "(transformers refuses it too); refusing to read outside the folder"
            )
        if not (tw.endswith((".safetensors", ".safetensors.index.json")) or tw == "adapter_model.bin"):
            raise CheckpointError(
                f"{cfg}: transformers_weights {_q(tw)} is neither a *.safetensors file nor a "
                "*.safetensors.index.json index (from_pretrained refuses it)"
            )
        if not (folder / tw).is_file():
            raise CheckpointError(f"{cfg}: transformers_weights names {_q(tw)}, which is not a file in {folder}")
        return folder / tw
    for fname in HF_WEIGHT_FILES:
        if (folder / fname).is_file():
            return folder / fname
    candidates = sorted(
        q for q in folder.iterdir() if q.is_file() and (q.name.endswith(_WEIGHT_SUFFIXES) or q.name.endswith(".index.json"))
    )
    indexes = [q for q in candidates if q.name.endswith(".index.json")]
    if len(indexes) == 1:
        return indexes[0]
    if len(candidates) == 1:
        return candidates[0]
    found = ", ".join(safe_text(q.name) for q in candidates[:5]) or "none"
    raise CheckpointError(
        f"{folder}: no weights found: expected one of {', '.join(HF_WEIGHT_FILES)} (weight files present: {found})"
    )


# --------------------------------------------------------------------------------------------- safetensors header
#
# The header is validated exactly as safetensors (Rust, ``SafeTensors::read_metadata``) validates it, so a file
# is called readable here if and only if ``safe_open`` opens it: UTF-8, serde_json's grammar (no NaN, numbers in
# range, no lone surrogates, 128-level recursion limit), ``__metadata__`` null or an object of strings (once),
# each tensor a map (or serde's 3-element sequence form) with dtype/shape/data_offsets of the right types (no
# repeated field), a duplicated tensor name keeping its last entry (every entry must still parse), shapes and
# offsets fitting u64, the byte size computed with overflow checks, offsets sorted, contiguous from 0 and covering
# the data region up to the end of the file exactly.

_U64 = 1 << 64
_SERDE_MAX_DEPTH = 127  # serde_json's recursion limit (128) counts the top-level object; measured against 0.8
_ESCAPED_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")
_TORCHLESS_DTYPES = {"F6_E2M3", "F6_E3M2"}  # valid safetensors, but no torch dtype: from_pretrained cannot load them
_SAFETENSORS_BITS = {**{k: b for k, (_, b) in SAFETENSORS_DTYPES.items()}, "F6_E2M3": 6, "F6_E3M2": 6}
_FIELDS = ("dtype", "shape", "data_offsets")


class _DupKeys(dict):  # type: ignore[type-arg]
    """A JSON object that repeated a key: the dict keeps the last value (as serde's HashMap), ``pairs`` all."""

    pairs: list[tuple[str, Any]]


def _pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    d = dict(pairs)
    if len(d) != len(pairs):
        d = _DupKeys(d)
        d.pairs = pairs
    return d


def _serde_float(s: str) -> float:
    v = float(s)
    if math.isinf(v):
        raise ValueError("number out of range")
    return v


def _serde_int(s: str) -> int | float:
    return -0.0 if s == "-0" else int(s)  # serde_json parses "-0" as a float, not as the integer 0


def _beyond_f64(obj: Any) -> bool:
    """An integer serde_json could not hold even as a float ("number out of range"), anywhere in ``obj``."""
    stack = [obj]
    while stack:
        o = stack.pop()
        if type(o) is int:
            try:
                float(o)
            except OverflowError:
                return True
        elif isinstance(o, dict):
            stack.extend(o.values())
        elif isinstance(o, list):
            stack.extend(o)
    return False


def _has_surrogate(obj: Any) -> bool:
    stack = [obj]
    while stack:
        o = stack.pop()
        if isinstance(o, str):
            try:
                o.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(o, dict):
            items = o.pairs if isinstance(o, _DupKeys) else o.items()
            for k, v in items:
                stack.append(k)
                stack.append(v)
        elif isinstance(o, list):
            stack.extend(o)
    return False


def _parse_header_json(raw: bytes, p: Path) -> dict[str, Any]:
    def bad(why: str) -> CheckpointError:
        return CheckpointError(f"{p}: corrupt safetensors header: {why}")

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise bad(f"not UTF-8 (byte {e.start})") from None
    slow_ints = b"-0" in raw

    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        header = json.loads(
            text,
            object_pairs_hook=_pairs_hook,
            parse_float=_serde_float,
            parse_int=_serde_int if slow_ints else None,
            parse_constant=no_constants,
        )
    except RecursionError:
        raise bad(f"not valid JSON (nested deeper than {_SERDE_MAX_DEPTH} levels)") from None
    except ValueError as e:
        raise bad(f"not valid JSON ({str(e)[:200]})") from None
    if not isinstance(header, dict):
        raise bad(f"expected a JSON object, found {type(header).__name__}")
    if _ESCAPED_SURROGATE.search(raw) is not None and _has_surrogate(header):
        raise bad("not valid JSON (a lone UTF-16 surrogate in a \\u escape)")
    return header


def _dims(v: Any) -> bool:
    """A JSON array of integers that fit a u64 (serde's Vec<usize>)."""
    return isinstance(v, list) and all(type(d) is int and 0 <= d < _U64 for d in v)


def _dtype_code(v: Any) -> str | None:
    """serde's enum forms of a dtype: "F32", or {"F32": null}."""
    if type(v) is str:
        return v if v in _SAFETENSORS_BITS else None
    if type(v) is dict and len(v) == 1:  # not _DupKeys: {"F32": null, "F32": null} is two entries for serde
        ((k, val),) = v.items()
        if val is None and k in _SAFETENSORS_BITS:
            return k
    return None


def _q(name: object) -> str:
    """A name from a file, quoted and escaped for a one-line message."""
    return safe_text(repr(name))[:200]


def _fast_entry(e: Any) -> tuple[str, list[int], int, int] | None:
    """The common case of a header entry, checked without allocation: a plain object with exactly the three
    fields, a dtype string, integer dims and offsets in u64. None sends the entry to :func:`_tensor_entry`."""
    if type(e) is not dict or len(e) != 3:
        return None
    dt = e.get("dtype")
    shape = e.get("shape")
    offs = e.get("data_offsets")
    if type(dt) is not str or dt not in _SAFETENSORS_BITS or type(shape) is not list or type(offs) is not list or len(offs) != 2:
        return None
    s, t = offs
    if type(s) is not int or type(t) is not int or not (0 <= s < _U64 and 0 <= t < _U64):
        return None
    for d in shape:
        if type(d) is not int or not 0 <= d < _U64:
            return None
    return dt, shape, s, t


def _fold_overflows(shape: list[int]) -> bool:
    """serde multiplies dims left to right with checked u64 arithmetic: [2^63, 4, 0] overflows before the 0."""
    n = 1
    for d in shape:
        n *= d
        if n >= _U64:
            return True
    return False


def _torch_holds(code: str, shape: list[int]) -> bool:
    """Whether torch can make this empty tensor as safetensors' get_tensor does (a uint8 view reshaped). Only asked
    for 0-element shapes with a huge dim: sizes and strides are int64 in torch, u64 in the header."""
    import torch

    if code == "F4":  # two per byte along the last dim (checked even before this is asked)
        shape = shape[:-1] + [shape[-1] // 2]
    try:
        torch.empty(0, dtype=torch.uint8).view(_torch_dtype(SAFETENSORS_DTYPES[code][0])).reshape(shape)
    except Exception:  # noqa: BLE001 - RuntimeError (stride overflow), TypeError/OverflowError (past int64)
        return False
    return True


def _tensor_entry(name: str, e: Any, p: Path) -> tuple[str, list[int], list[int]]:
    """(dtype code, shape, data_offsets) of one header entry, type-checked as serde deserializes TensorInfo."""
    where = f"{p}: corrupt safetensors header: tensor {_q(name)}"
    if type(e) is list:  # serde also reads a struct from a sequence of its fields, in order
        if len(e) != 3:
            raise CheckpointError(f"{where}: expected an object with dtype, shape and data_offsets")
        dt, shape, offs = e
    elif isinstance(e, dict):
        if isinstance(e, _DupKeys):
            seen: set[str] = set()
            for k, _ in e.pairs:
                if k in _FIELDS and k in seen:
                    raise CheckpointError(f"{where}: field {k!r} given twice")
                seen.add(k)
        missing = [f for f in _FIELDS if f not in e]
        if missing:
            raise CheckpointError(f"{where}: header entry must have dtype, shape and data_offsets (missing {', '.join(missing)})")
        if len(e) > 3:  # unknown fields are ignored, but parsed within serde's recursion limit
            from .fsio import json_depth_ok

            for k, v in e.items():
                if k not in _FIELDS and not json_depth_ok(v, _SERDE_MAX_DEPTH - 2):
                    raise CheckpointError(f"{where}: field {_q(k)} nested deeper than safetensors allows")
                if k not in _FIELDS and _beyond_f64(v):
                    raise CheckpointError(f"{where}: field {_q(k)} holds a number out of range")
        dt, shape, offs = e["dtype"], e["shape"], e["data_offsets"]
    else:
        raise CheckpointError(f"{where}: header entry must be an object with dtype, shape and data_offsets, found {type(e).__name__}")
    code = _dtype_code(dt)
    if code is None:
        shown = _q(dt)
        if type(dt) is str:
            raise CheckpointError(f"{where}: unknown dtype {shown}")
        raise CheckpointError(f"{where}: dtype must be a string such as \"F32\", found {type(dt).__name__} {shown}")
    if isinstance(shape, list) and any(type(d) is int and d < 0 for d in shape):
        raise CheckpointError(f"{where}: negative dimension in shape {shape}")
    if not _dims(shape):
        raise CheckpointError(f"{where}: shape must be a list of integers from 0 to 2^64-1, found {_q(shape)}")
    if not (_dims(offs) and len(offs) == 2):
        raise CheckpointError(f"{where}: data_offsets must be two integers from 0 to 2^64-1, found {_q(offs)}")
    return code, shape, offs


def _read_safetensors(p: Path) -> tuple[dict[str, TensorInfo], dict[str, str], tuple[str, ...]]:
    """Parse and validate a safetensors header (8 + header bytes read). Returns (tensors, metadata, notes)."""
    with open_regular(p, what="safetensors file", error=CheckpointError) as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{p}: truncated safetensors file: {size} bytes, expected at least an 8-byte header length")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            raise CheckpointError(f"{p}: safetensors header length {n} is larger than the file ({size} bytes)")
        if n > MAX_HEADER_BYTES:
            raise CheckpointError(f"{p}: safetensors header length {n} exceeds safetensors' limit of {MAX_HEADER_BYTES} bytes")
        raw = f.read(n)
    if len(raw) != n:
        raise CheckpointError(f"{p}: file changed on disk while its header was read")
    header = _parse_header_json(raw, p)
    notes: list[str] = []
    meta_raw: Any = None
    has_meta = False
    rows: list[tuple[int, int, str, str, list[int]]] = []  # (start, end, name, dtype code, shape)
    if isinstance(header, _DupKeys):
        if sum(1 for k, _ in header.pairs if k == "__metadata__") > 1:
            raise CheckpointError(f"{p}: corrupt safetensors header: \"__metadata__\" given twice")
        last: dict[str, tuple[str, list[int], list[int]]] = {}
        for k, v in header.pairs:  # every entry must deserialize; the last of a name wins (serde's HashMap)
            if k != "__metadata__":
                last[k] = _tensor_entry(k, v, p)
        rows = [(o[0], o[1], k, code, shape) for k, (code, shape, o) in last.items()]
        counts = Counter(k for k, _ in header.pairs if k != "__metadata__")
        dups = sorted(k for k, c in counts.items() if c > 1)
        shown = ", ".join(_q(k) for k in dups[:3]) + (", ..." if len(dups) > 3 else "")
        notes.append(
            f"safetensors header names {len(dups)} tensor(s) more than once ({shown}): the last entry of each is "
            "used, as safetensors does"
        )
        pairs: Any = header.pairs
    else:
        pairs = header.items()
        append = rows.append
        for k, v in pairs:
            fast = _fast_entry(v) if k != "__metadata__" else None
            if fast is not None:
                append((fast[2], fast[3], k, fast[0], fast[1]))
            elif k != "__metadata__":
                code, shape, o = _tensor_entry(k, v, p)
                append((o[0], o[1], k, code, shape))
    for k, v in pairs:
        if k == "__metadata__":
            has_meta, meta_raw = True, v
    metadata: dict[str, str] = {}
    if has_meta and meta_raw is not None:
        items = meta_raw.pairs if isinstance(meta_raw, _DupKeys) else meta_raw.items() if type(meta_raw) is dict else None
        if items is None:
            raise CheckpointError(
                f"{p}: corrupt safetensors header: \"__metadata__\" must be an object of strings, found {type(meta_raw).__name__}"
            )
        for k, v in items:
            if type(v) is not str:
                raise CheckpointError(
                    f"{p}: corrupt safetensors header: \"__metadata__\" value {_q(k)} must be a string, found {type(v).__name__}"
                )
        metadata = dict(meta_raw)
    # Metadata::validate: sorted by (start, end), each starting where the previous ended, sizes exact
    rows.sort(key=lambda r: (r[0], r[1]))
    base = 8 + n
    data_size = size - base
    tensors: dict[str, TensorInfo] = {}
    end = 0
    bits_of = _SAFETENSORS_BITS
    for s, e, name, code, shape in rows:
        if s != end or e < s:
            why = (f"starts at byte {s} of the data, but the previous tensor ends at {end}" if s != end
                   else f"data_offsets [{s}, {e}] end before they start")
            raise CheckpointError(f"{p}: corrupt safetensors header: tensor {_q(name)}: {why} (gap or overlap)")
        if e > data_size:
            raise CheckpointError(
                f"{p}: tensor {_q(name)}: data ends at byte {e} but the data region is only {data_size} bytes (truncated file?)"
            )
        end = e
        numel = math.prod(shape)
        nbits = numel * bits_of[code]
        if nbits >= _U64 or (numel == 0 and len(shape) > 1 and _fold_overflows(shape)):
            raise CheckpointError(f"{p}: corrupt safetensors header: tensor {_q(name)}: shape {shape} of {code} overflows 64 bits")
        if nbits % 8:
            raise CheckpointError(
                f"{p}: corrupt safetensors header: tensor {_q(name)}: shape {shape} of {code} is not a whole number of bytes"
            )
        if e - s != nbits >> 3:
            raise CheckpointError(f"{p}: tensor {_q(name)}: {e - s} bytes on disk but shape {shape} of {code} needs {nbits >> 3}")
        if code in _TORCHLESS_DTYPES:
            raise CheckpointError(
                f"{p}: tensor {_q(name)}: dtype {code} is valid safetensors but torch has no such dtype, so from_pretrained "
                "cannot load it"
            )
        if code == "F4" and shape[-1] % 2:
            raise CheckpointError(
                f"{p}: tensor {_q(name)}: F4 shape {shape} is valid safetensors, but torch packs F4 two per byte along the "
                "last dimension, which must be even; from_pretrained cannot load it"
            )
        if numel == 0 and shape and max(shape) >= 1 << 31 and not _torch_holds(code, shape):
            raise CheckpointError(
                f"{p}: tensor {_q(name)}: shape {shape} is valid safetensors but torch cannot hold it (its sizes and "
                "strides are signed 64-bit), so from_pretrained cannot load it"
            )
        tensors[name] = TensorInfo(name, tuple(shape), SAFETENSORS_DTYPES[code][0], nbits >> 3, str(p), base + s)
    if end != data_size:
        raise CheckpointError(
            f"{p}: {data_size - end} trailing byte(s) after the last tensor's data (byte {base + end} of {size}): "
            "safetensors refuses a file its header does not cover exactly"
        )
    return tensors, metadata, tuple(notes)


def read_safetensors_header(p: Path) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Parse and validate a safetensors header exactly as safetensors does. Reads 8 + header bytes only.

    Returns (tensors by name in data order, ``__metadata__``). Raises CheckpointError naming the file."""
    tensors, metadata, _ = _read_safetensors(Path(p))
    return tensors, metadata


def _open_sharded(p: Path, *, wrapper: str | None) -> CheckpointIndex:
    """A sharded index: every shard it names is read (keys come from the shard files, as in from_pretrained).

    Shard names must stay inside the index's folder (no absolute path, no ``..`` escaping it, no other index);
    the name is checked, not where a link points (cache snapshots are links into the blob store)."""
    idx = load_json(p, max_bytes=MAX_INDEX_BYTES, what="index file", error=CheckpointError)
    wm = idx.get("weight_map") if isinstance(idx, dict) else None
    if not isinstance(wm, dict) or not wm:
        raise CheckpointError(f"{p}: invalid index file: expected a non-empty \"weight_map\" object")
    by_shard: dict[str, list[str]] = {}
    for key, s in wm.items():
        if not isinstance(s, str):
            raise CheckpointError(
                f"{p}: invalid index file: weight_map entry {_q(key)} must be a file name, found {type(s).__name__}"
            )
        by_shard.setdefault(s, []).append(key)
    for s, keys in by_shard.items():
        if not _inside_name(p.parent, s):
            raise CheckpointError(
                f"{p}: weight_map entry {_q(keys[0])} names {_q(s)}, which is not a file "
                "inside the index's folder; refusing to read it"
            )
        if s.endswith(".index.json"):
            raise CheckpointError(
                f"{p}: weight_map entry {_q(keys[0])} names another index ({_q(s)}); shards must be weight files"
            )
    tensors: dict[str, TensorInfo] = {}
    files = []
    metadata: dict[str, str] = {}
    stamps: dict[str, tuple[int, int]] = {}
    notes: list[str] = []
    not_in_shard: list[tuple[str, str]] = []
    fmt = "safetensors-sharded"
    for s in sorted(by_shard):
        sp = p.parent / s
        if not sp.exists():
            raise CheckpointError(f"{p}: index names shard {_q(s)}, which does not exist in {p.parent}")
        check_regular(sp, what="shard file", error=CheckpointError)
        sub = open_checkpoint(sp, wrapper=wrapper)
        if sub.format != "safetensors":
            fmt = "torch-sharded"
        files.append(str(sp))
        # keys come from the shard files themselves, as in from_pretrained
        tensors.update(sub.tensors)
        stamps.update(sub.stamps)
        notes.extend(n for n in sub.notes if n not in notes)
        not_in_shard.extend((k, s) for k in by_shard[s] if k not in sub.tensors)
        if not metadata:
            metadata = dict(sub.metadata)
    im = idx.get("metadata")
    if isinstance(im, dict):
        metadata.update({f"index.{k}": str(v) for k, v in im.items()})
    elif "metadata" not in idx:
        notes.append(f"{p.name} has no \"metadata\" object: transformers' from_pretrained fails on such an index (KeyError 'metadata')")
    if not_in_shard:
        k, s = not_in_shard[0]
        more = f" and {len(not_in_shard) - 1} more" if len(not_in_shard) > 1 else ""
        notes.append(
            f"{p.name} lists {len(not_in_shard)} key(s) missing from the shard it names ({_q(k)} in "
            f"{safe_text(s)}{more}): from_pretrained takes keys from the shards, so they are not in the checkpoint"
        )
    return CheckpointIndex(str(p), fmt, tuple(files), tensors, metadata, notes=tuple(notes), stamps=stamps)


# --------------------------------------------------------------------------------------------- torch pickles


def _torch_load(p: Path, *, map_location: str, mmap: bool) -> Any:
    import pickle
    import re
    import warnings

    import torch

    try:
        with warnings.catch_warnings():
            # torch warns about pickle protocols (with a source line) before failing or succeeding: never leak it
            warnings.simplefilter("ignore")
            return torch.load(p, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        text = str(e)
        lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
        op = re.search(r"Unsupported operand \d+", text)
        if op is not None and "GLOBAL" not in text:
            # a pickle opcode the safe unpickler lacks (e.g. protocol 4's MEMOIZE): nothing was found to run
            raise CheckpointError(
                f"{p}: not a weights-only torch checkpoint: the safe unpickler rejected it ({op.group()}); "
                "only torch.load(weights_only=True) is allowed"
            ) from e
        glob = re.search(r"GLOBAL ([\w.]+)", text)
        why = (
            f"GLOBAL {glob.group(1)} is not allowed"
            if glob
            else next((ln for ln in lines if "Unsupported" in ln or "global" in ln.lower()), lines[0] if lines else "")[:200]
        )
        raise CheckpointError(
            f"{p}: refused to unpickle: the file holds objects other than tensors and plain containers, which "
            f"could run code ({why}); only weights_only=True loading is allowed"
        ) from e
    except MemoryError:
        # weights_only still allows e.g. builtins.bytearray(N): a tiny crafted pickle can ask for terabytes
        raise CheckpointError(
            f"{p}: cannot read torch checkpoint: unpickling it asks for more memory than is available "
            "(a crafted pickle?)"
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile, KeyError, AttributeError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{p}: cannot read torch checkpoint: {msg[:300]}") from e


MAX_STATE_DICT_DEPTH = 64  #: nesting of dicts inside a torch checkpoint (Lightning/optimizer states nest ~5)


def _flatten_tensors(obj: Any, p: Path, prefix: str = "") -> dict[str, Any]:
    """Tensors in nested dicts under dotted names, in dict order. Iterative, so a hostile 50k-deep dict is a
    one-line error naming the file rather than a RecursionError."""
    import torch

    out: dict[str, Any] = {}
    if not isinstance(obj, Mapping):
        return out
    stack: list[tuple[str, Iterator[tuple[Any, Any]]]] = [(prefix, iter(obj.items()))]
    while stack:
        pre, items = stack[-1]
        for k, v in items:
            key = f"{pre}{k}"
            if isinstance(v, torch.Tensor):
                out[key] = v
            elif isinstance(v, Mapping):
                if len(stack) >= MAX_STATE_DICT_DEPTH:
                    raise CheckpointError(
                        f"{p}: dicts nested deeper than {MAX_STATE_DICT_DEPTH} levels; not a state dict"
                    )
                stack.append((key + ".", iter(v.items())))
                break
        else:
            stack.pop()
    return out


def _choose_state_dict(obj: Any, p: Path, wrapper: str | None) -> tuple[dict[str, Any], str | None, tuple[str, ...]]:
    """Pick the state dict inside a (possibly wrapper) object. Returns (flat tensors, chosen key, candidates)."""
    import torch

    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{p}: expected a dict of tensors, found {type(obj).__name__}")
    sizes = {str(k): len(_flatten_tensors(v, p)) for k, v in obj.items() if isinstance(v, Mapping)}
    candidates = tuple(k for k, n in sizes.items() if n)
    top_tensors = [str(k) for k, v in obj.items() if isinstance(v, torch.Tensor)]
    if wrapper is not None:
        if wrapper not in candidates:
            raise CheckpointError(
                f"{p}: no sub-dict {wrapper!r} holding tensors (available: {', '.join(candidates) or 'none'})"
            )
        return _flatten_tensors(obj[wrapper], p), wrapper, candidates
    # A plain state dict: tensors at top level under dotted names (nested dicts of tensors are flattened with
    # dots). A wrapper holds a few loose tensors at most (a step counter) next to its big sub-dict.
    biggest = max((sizes[c] for c in candidates), default=0)
    if top_tensors and (len(top_tensors) >= biggest or any("." in k for k in top_tensors)):
        return _flatten_tensors(obj, p), None, candidates
    for k in WRAPPER_KEYS:
        if k in candidates:
            return _flatten_tensors(obj[k], p), k, candidates
    if len(candidates) == 1:
        return _flatten_tensors(obj[candidates[0]], p), candidates[0], candidates
    if candidates:
        raise CheckpointError(
            f"{p}: wrapper dict with several tensor sub-dicts ({', '.join(candidates)}); choose one with --wrapper"
        )
    raise CheckpointError(f"{p}: no tensors found in the checkpoint")


def _torch_dtype_name(dt: Any) -> str:
    return str(dt).removeprefix("torch.")


def _check_zip(p: Path) -> None:
    """Refuse a zip whose members would inflate past the caps before torch reads any of them: torch.load inflates
    data.pkl (and the small records beside it) into memory at their declared sizes. Storages (``*/data/*``) are
    never read here (meta device) and are memory-mapped later, but a compressed one is bounded by the ratio too."""
    try:
        with zipfile.ZipFile(p) as z:
            infos = z.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as e:
        raise CheckpointError(f"{p}: not a torch checkpoint: broken zip archive ({str(e)[:200]})") from None
    for i in infos:
        member = _q(i.filename)
        if i.compress_type != zipfile.ZIP_STORED and i.file_size > MAX_ZIP_RATIO * max(i.compress_size, 1):
            raise CheckpointError(
                f"{p}: zip member {member} would inflate {i.compress_size} bytes to {i.file_size} "
                f"(over {MAX_ZIP_RATIO}x; a zip bomb?); refusing to read it"
            )
        parts = i.filename.split("/")
        if "data" not in parts[:-1] and i.file_size > MAX_PICKLE_BYTES:
            raise CheckpointError(
                f"{p}: zip member {member} declares {i.file_size} bytes, over the {MAX_PICKLE_BYTES >> 20} MiB limit "
                "for a checkpoint's pickle; refusing to read it"
            )


def _open_torch(p: Path, *, wrapper: str | None, legacy: bool) -> CheckpointIndex:
    if not legacy:
        _check_zip(p)
    # zip pickles: map_location="meta" reads data.pkl only, never the storages
    obj = _torch_load(p, map_location="cpu" if legacy else "meta", mmap=False)
    flat, key, candidates = _choose_state_dict(obj, p, wrapper)
    tensors: dict[str, TensorInfo] = {}
    for name, t in flat.items():
        tensors[name] = TensorInfo(
            name, tuple(int(d) for d in t.shape), _torch_dtype_name(t.dtype), t.numel() * t.element_size(), str(p)
        )
    notes = ()
    if legacy:
        notes = ("legacy (non-zip) torch format: no header, so the whole file was read",)
    return CheckpointIndex(
        str(p), "torch-legacy" if legacy else "torch-zip", (str(p),), tensors, {}, key, candidates, notes, stamps=_stamps(p)
    )


# --------------------------------------------------------------------------------------------- reading data


SMALL_COPY_BYTES = 64 << 20  #: a safetensors tensor up to this size is read into memory, larger ones are mmapped


class TensorReader:
    """Reads single tensors lazily, never the whole checkpoint. Keep one per index and reuse it.

    Every read first checks the file against the index (size and mtime when it was opened, and that it still
    holds the tensor's bytes): a file changed or truncated on disk is a CheckpointError, never a SIGBUS from a
    mapping past the end of the file. Streamed reads (:meth:`iter_chunks`: statistics, diff, export) use
    ``pread`` and re-check on a short read, so even a truncation *during* a read is an error. Whole-tensor views
    (:meth:`flat`, :meth:`tensor`) of safetensors tensors up to ``SMALL_COPY_BYTES`` are read the same way; larger
    ones, and torch zip tensors, are memory-mapped after the check (a truncation while such a view is in use is
    the one case the check cannot cover)."""

    def __init__(self, index: CheckpointIndex) -> None:
        self.index = index
        self._maps: dict[str, mmap.mmap] = {}
        self._fds: dict[str, int] = {}
        self._torch_files: dict[str, dict[str, Any]] = {}
        self._chunked = index.layout.reader() if index.layout is not None else None

    def close(self) -> None:
        if self._chunked is not None:
            self._chunked.close()
        for m in self._maps.values():
            try:
                m.close()
            except BufferError:  # a view is still alive; the map is freed with it
                pass
        self._maps.clear()
        for fd in self._fds.values():
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds.clear()
        self._torch_files.clear()

    def __enter__(self) -> TensorReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def check_file(self, file: str, *, need: int = 0) -> None:
        """Raise CheckpointError when ``file`` changed on disk since it was indexed, or holds fewer than ``need``
        bytes (a truncated file would be a SIGBUS through a mapping)."""
        try:
            st = os.fstat(self._fds[file]) if file in self._fds else os.stat(file)
            now = os.stat(file)
        except OSError as e:
            raise CheckpointError(f"{file}: cannot read: {e.strerror or e} (changed on disk since it was opened?)") from None
        stamp = self.index.stamps.get(file)
        if stamp is not None and ((st.st_size, st.st_mtime_ns) != stamp or (now.st_ino, now.st_dev) != (st.st_ino, st.st_dev)):
            raise CheckpointError(
                f"{file}: changed on disk since it was opened (now {st.st_size} bytes, was {stamp[0]}); open it again"
            )
        if st.st_size < need:
            raise CheckpointError(
                f"{file}: changed on disk since it was opened: {st.st_size} bytes, the tensor needs {need}; open it again"
            )

    def _fd(self, file: str) -> int:
        fd = self._fds.get(file)
        if fd is None:
            with open_regular(file, what="checkpoint file", error=CheckpointError) as f:
                fd = os.dup(f.fileno())
            self._fds[file] = fd
        return fd

    def _map(self, file: str, need: int) -> mmap.mmap:
        self._fd(file)
        self.check_file(file, need=need)
        m = self._maps.get(file)
        if m is None:
            # ACCESS_COPY: writable private view (torch.frombuffer wants one); the file is never modified
            m = mmap.mmap(self._fds[file], 0, access=mmap.ACCESS_COPY)
            self._maps[file] = m
        if len(m) < need:
            raise CheckpointError(f"{file}: changed on disk since it was opened: {len(m)} bytes mapped, the tensor needs {need}")
        return m

    def _pread(self, info: TensorInfo, start: int, nbytes: int) -> torch.Tensor:
        """``nbytes`` bytes of ``info``'s data from byte ``start`` of it, as a fresh uint8 tensor."""
        import torch

        assert info.offset is not None
        fd = self._fd(info.file)
        self.check_file(info.file, need=info.offset + info.nbytes)
        buf = torch.empty(nbytes, dtype=torch.uint8)
        view = memoryview(buf.numpy())
        got = 0
        try:
            while got < nbytes:
                n = os.preadv(fd, [view[got:]], info.offset + start + got)
                if n == 0:
                    break
                got += n
        except OSError as e:
            self.check_file(info.file, need=info.offset + info.nbytes)
            raise CheckpointError(f"{info.file}: cannot read tensor {_q(info.name)}: {e.strerror or e}") from None
        if got < nbytes:
            self.check_file(info.file, need=info.offset + info.nbytes)
            raise CheckpointError(f"{info.file}: changed on disk since it was opened: tensor {_q(info.name)} ends early")
        return buf

    def _readable(self, info: TensorInfo) -> torch.dtype:
        if info.dtype == "float4_e2m1fn_x2":
            raise CheckpointError(f"{info.file}: tensor {_q(info.name)}: packed float4 data cannot be read as numbers")
        return _torch_dtype(info.dtype)

    def flat(self, name: str) -> torch.Tensor:
        """The tensor as a flat tensor: read into memory (safetensors up to ``SMALL_COPY_BYTES``) or a mmap view."""
        import torch

        info = self._info(name)
        if info.offset is not None:
            if info.numel == 0:
                return torch.empty(0, dtype=_torch_dtype(info.dtype))
            dt = self._readable(info)
            if info.nbytes <= SMALL_COPY_BYTES:
                return self._pread(info, 0, info.nbytes).view(dt)
            m = self._map(info.file, info.offset + info.nbytes)
            return torch.frombuffer(m, dtype=dt, count=info.numel, offset=info.offset)
        return self.tensor(name).reshape(-1)

    def tensor(self, name: str) -> torch.Tensor:
        """The tensor with its shape (see :meth:`flat` for how its data are read)."""
        info = self._info(name)
        if info.offset is not None:
            return self.flat(name).reshape(info.shape)
        if self._chunked is not None:
            return self._chunked.tensor(name)
        self.check_file(info.file)
        loaded = self._torch_files.get(info.file)
        if loaded is None:
            legacy = self.index.format == "torch-legacy"
            obj = _torch_load(Path(info.file), map_location="cpu", mmap=not legacy)
            loaded, _, _ = _choose_state_dict(obj, Path(info.file), self.index.wrapper_key)
            self._torch_files[info.file] = loaded
        try:
            return loaded[name]
        except KeyError:
            raise CheckpointError(f"{info.file}: changed on disk since it was opened: no tensor {_q(name)} now") from None

    def info(self, name: str) -> TensorInfo:
        """The header record of tensor ``name``; CheckpointError naming the checkpoint if it has none."""
        return self._info(name)

    def _info(self, name: str) -> TensorInfo:
        try:
            return self.index.tensors[name]
        except KeyError:
            raise CheckpointError(f"{self.index.path}: no tensor named {name!r}") from None

    def iter_chunks(self, name: str, *, chunk_elems: int = 1 << 24) -> Iterator[torch.Tensor]:
        """Flat chunks of a tensor, so huge tensors are streamed instead of copied whole. Safetensors chunks are
        read with ``pread`` into fresh buffers (the consumer may keep them)."""
        if self._chunked is not None:
            self._info(name)
            yield from self._chunked.iter_flat(name, chunk_elems=chunk_elems)
            return
        info = self._info(name)
        if info.offset is None or info.numel == 0:
            flat = self.flat(name)
            for start in range(0, flat.numel(), chunk_elems):
                yield flat[start : start + chunk_elems]
            return
        dt = self._readable(info)
        item = dt.itemsize
        for start in range(0, info.numel, chunk_elems):
            n = min(chunk_elems, info.numel - start)
            yield self._pread(info, start * item, n * item).view(dt)


def open_reader(source: TensorReader | CheckpointIndex | str | os.PathLike[str]) -> tuple[TensorReader, bool]:
    """A reader for ``source`` and whether the caller owns it (must close it): a TensorReader is used as is."""
    if isinstance(source, TensorReader):
        return source, False
    if isinstance(source, CheckpointIndex):
        return TensorReader(source), True
    return TensorReader(open_checkpoint(source)), True


def _torch_dtype(name: str) -> torch.dtype:
    import torch

    dt = getattr(torch, name, None)
    if dt is None:
        raise CheckpointError(f"dtype {name!r} is not supported by this torch version")
    return dt


def safetensors_dtype_code(torch_name: str) -> str:
    """torch dtype name -> safetensors dtype code ("bfloat16" -> "BF16")."""
    return _TORCH_TO_SAFETENSORS[torch_name]
