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
import struct
import zipfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from .errors import CheckpointError

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
_MAX_HEADER = 100 * 1024 * 1024
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
    if p.stat().st_size == 0:
        raise CheckpointError(f"{p}: empty file, expected a safetensors or torch checkpoint")
    with open(p, "rb") as f:
        head = f.read(8)
    if zipfile.is_zipfile(p):
        return _open_torch(p, wrapper=wrapper, legacy=False)
    if name.endswith(".safetensors") or _looks_like_safetensors(p, head):
        if wrapper is not None:
            raise CheckpointError(f"{p}: --wrapper {wrapper!r} given, but a safetensors file is a flat state dict with no sub-dicts")
        tensors, meta = read_safetensors_header(p)
        return CheckpointIndex(str(path), "safetensors", (str(p),), tensors, meta)
    if head[:2] == b"\x80\x02" or head[:1] == b"\x80":
        return _open_torch(p, wrapper=wrapper, legacy=True)
    raise CheckpointError(
        f"{p}: not a checkpoint: expected a safetensors header or a torch pickle, found bytes {head[:8]!r}"
    )


def resolve_weights_in_dir(folder: Path) -> Path:
    """The weights file ``from_pretrained`` would pick in a local directory (same priority)."""
    cfg = folder / "config.json"
    if cfg.is_file():
        try:
            tw = json.loads(cfg.read_text()).get("transformers_weights")
        except (ValueError, AttributeError, OSError):
            tw = None
        if isinstance(tw, str) and (folder / tw).is_file():
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
    found = ", ".join(q.name for q in candidates[:5]) or "none"
    raise CheckpointError(
        f"{folder}: no weights found: expected one of {', '.join(HF_WEIGHT_FILES)} (weight files present: {found})"
    )


def _looks_like_safetensors(p: Path, head: bytes) -> bool:
    if len(head) < 8:
        return False
    (n,) = struct.unpack("<Q", head)
    if n < 2 or n > _MAX_HEADER:
        return False
    with open(p, "rb") as f:
        f.seek(8)
        return f.read(1) == b"{"


def read_safetensors_header(p: Path) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Parse and validate a safetensors header. Reads 8 + header bytes only."""
    size = p.stat().st_size
    with open(p, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{p}: truncated safetensors file: {size} bytes, expected at least an 8-byte header length")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            raise CheckpointError(f"{p}: safetensors header length {n} is larger than the file ({size} bytes)")
        if n > _MAX_HEADER:
            raise CheckpointError(f"{p}: safetensors header length {n} exceeds the 100 MB limit")
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(f"{p}: corrupt safetensors header: not valid JSON ({e})") from e
    if not isinstance(header, dict):
        raise CheckpointError(f"{p}: corrupt safetensors header: expected a JSON object, found {type(header).__name__}")
    data_size = size - 8 - n
    base = 8 + n
    meta_raw = header.pop("__metadata__", None) or {}
    metadata = {str(k): str(v) for k, v in meta_raw.items()} if isinstance(meta_raw, dict) else {}
    entries: list[tuple[int, TensorInfo]] = []
    for name, e in header.items():
        if not isinstance(e, dict) or not {"dtype", "shape", "data_offsets"} <= e.keys():
            raise CheckpointError(f"{p}: tensor {name!r}: header entry must have dtype, shape and data_offsets")
        code = e["dtype"]
        if code not in SAFETENSORS_DTYPES:
            raise CheckpointError(f"{p}: tensor {name!r}: unknown dtype {code!r}")
        shape = e["shape"]
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
            raise CheckpointError(f"{p}: tensor {name!r}: shape must be a list of integers, found {shape!r}")
        if any(d < 0 for d in shape):
            raise CheckpointError(f"{p}: tensor {name!r}: negative dimension in shape {shape}")
        offs = e["data_offsets"]
        if (
            not isinstance(offs, list)
            or len(offs) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offs)
            or offs[0] < 0
            or offs[1] < offs[0]
        ):
            raise CheckpointError(f"{p}: tensor {name!r}: invalid data_offsets {offs!r}")
        if offs[1] > data_size:
            raise CheckpointError(
                f"{p}: tensor {name!r}: data ends at byte {offs[1]} but the data region is only {data_size} bytes "
                "(truncated file?)"
            )
        tdtype, bits = SAFETENSORS_DTYPES[code]
        nbytes = math.prod(shape) * bits // 8
        if offs[1] - offs[0] != nbytes:
            raise CheckpointError(
                f"{p}: tensor {name!r}: {offs[1] - offs[0]} bytes on disk but shape {shape} of {code} needs {nbytes}"
            )
        entries.append((offs[0], TensorInfo(name, tuple(shape), tdtype, nbytes, str(p), base + offs[0])))
    entries.sort(key=lambda x: x[0])
    return {t.name: t for _, t in entries}, metadata


def _open_sharded(p: Path, *, wrapper: str | None) -> CheckpointIndex:
    try:
        idx = json.loads(p.read_text())
    except (UnicodeDecodeError, ValueError, OSError) as e:
        raise CheckpointError(f"{p}: invalid index file: {e}") from e
    wm = idx.get("weight_map") if isinstance(idx, dict) else None
    if not isinstance(wm, dict) or not wm:
        raise CheckpointError(f"{p}: invalid index file: expected a non-empty \"weight_map\" object")
    shard_names = sorted(set(map(str, wm.values())))
    tensors: dict[str, TensorInfo] = {}
    files = []
    metadata: dict[str, str] = {}
    fmt = "safetensors-sharded"
    for s in shard_names:
        sp = p.parent / s
        if not sp.is_file():
            raise CheckpointError(f"{p}: index names shard {s!r}, which does not exist in {p.parent}")
        sub = open_checkpoint(sp, wrapper=wrapper)
        if sub.format != "safetensors":
            fmt = "torch-sharded"
        files.append(str(sp))
        # keys come from the shard files themselves, as in from_pretrained
        tensors.update(sub.tensors)
        if not metadata:
            metadata = dict(sub.metadata)
    im = idx.get("metadata")
    if isinstance(im, dict):
        metadata.update({f"index.{k}": str(v) for k, v in im.items()})
    return CheckpointIndex(str(p), fmt, tuple(files), tensors, metadata)


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


def _flatten_tensors(obj: Any, prefix: str = "") -> dict[str, Any]:
    import torch

    out: dict[str, Any] = {}
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            key = f"{prefix}{k}"
            if isinstance(v, torch.Tensor):
                out[key] = v
            elif isinstance(v, Mapping):
                out.update(_flatten_tensors(v, key + "."))
    return out


def _choose_state_dict(obj: Any, p: Path, wrapper: str | None) -> tuple[dict[str, Any], str | None, tuple[str, ...]]:
    """Pick the state dict inside a (possibly wrapper) object. Returns (flat tensors, chosen key, candidates)."""
    import torch

    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{p}: expected a dict of tensors, found {type(obj).__name__}")
    sizes = {str(k): len(_flatten_tensors(v)) for k, v in obj.items() if isinstance(v, Mapping)}
    candidates = tuple(k for k, n in sizes.items() if n)
    top_tensors = [str(k) for k, v in obj.items() if isinstance(v, torch.Tensor)]
    if wrapper is not None:
        if wrapper not in candidates:
            raise CheckpointError(
                f"{p}: no sub-dict {wrapper!r} holding tensors (available: {', '.join(candidates) or 'none'})"
            )
        return _flatten_tensors(obj[wrapper]), wrapper, candidates
    # A plain state dict: tensors at top level under dotted names (nested dicts of tensors are flattened with
    # dots). A wrapper holds a few loose tensors at most (a step counter) next to its big sub-dict.
    biggest = max((sizes[c] for c in candidates), default=0)
    if top_tensors and (len(top_tensors) >= biggest or any("." in k for k in top_tensors)):
        return _flatten_tensors(obj), None, candidates
    for k in WRAPPER_KEYS:
        if k in candidates:
            return _flatten_tensors(obj[k]), k, candidates
    if len(candidates) == 1:
        return _flatten_tensors(obj[candidates[0]]), candidates[0], candidates
    if candidates:
        raise CheckpointError(
            f"{p}: wrapper dict with several tensor sub-dicts ({', '.join(candidates)}); choose one with --wrapper"
        )
    raise CheckpointError(f"{p}: no tensors found in the checkpoint")


def _torch_dtype_name(dt: Any) -> str:
    return str(dt).removeprefix("torch.")


def _open_torch(p: Path, *, wrapper: str | None, legacy: bool) -> CheckpointIndex:
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
        str(p), "torch-legacy" if legacy else "torch-zip", (str(p),), tensors, {}, key, candidates, notes
    )


# --------------------------------------------------------------------------------------------- reading data


class TensorReader:
    """Reads single tensors lazily (mmap), never the whole checkpoint. Keep one per index and reuse it."""

    def __init__(self, index: CheckpointIndex) -> None:
        self.index = index
        self._maps: dict[str, mmap.mmap] = {}
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
        self._torch_files.clear()

    def __enter__(self) -> TensorReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _map(self, file: str) -> mmap.mmap:
        m = self._maps.get(file)
        if m is None:
            with open(file, "rb") as f:
                # ACCESS_COPY: writable private view (torch.frombuffer wants one); the file is never modified
                m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
            self._maps[file] = m
        return m

    def flat(self, name: str) -> torch.Tensor:
        """The tensor as a flat, mmap-backed view (no copy for safetensors; zip pickles are mmapped)."""
        import torch

        info = self._info(name)
        if info.offset is not None:
            if info.numel == 0:
                return torch.empty(0, dtype=_torch_dtype(info.dtype))
            if info.dtype == "float4_e2m1fn_x2":
                raise CheckpointError(f"{info.file}: tensor {name!r}: packed float4 data cannot be read as numbers")
            return torch.frombuffer(self._map(info.file), dtype=_torch_dtype(info.dtype), count=info.numel, offset=info.offset)
        return self.tensor(name).reshape(-1)

    def tensor(self, name: str) -> torch.Tensor:
        """The tensor with its shape. Data is read on access (mmap)."""
        info = self._info(name)
        if info.offset is not None:
            return self.flat(name).reshape(info.shape)
        if self._chunked is not None:
            return self._chunked.tensor(name)
        loaded = self._torch_files.get(info.file)
        if loaded is None:
            legacy = self.index.format == "torch-legacy"
            obj = _torch_load(Path(info.file), map_location="cpu", mmap=not legacy)
            loaded, _, _ = _choose_state_dict(obj, Path(info.file), self.index.wrapper_key)
            self._torch_files[info.file] = loaded
        return loaded[name]

    def info(self, name: str) -> TensorInfo:
        """The header record of tensor ``name``; CheckpointError naming the checkpoint if it has none."""
        return self._info(name)

    def _info(self, name: str) -> TensorInfo:
        try:
            return self.index.tensors[name]
        except KeyError:
            raise CheckpointError(f"{self.index.path}: no tensor named {name!r}") from None

    def iter_chunks(self, name: str, *, chunk_elems: int = 1 << 24) -> Iterator[torch.Tensor]:
        """Flat chunks of a tensor, so huge tensors are streamed instead of copied whole."""
        if self._chunked is not None:
            self._info(name)
            yield from self._chunked.iter_flat(name, chunk_elems=chunk_elems)
            return
        flat = self.flat(name)
        for start in range(0, flat.numel(), chunk_elems):
            yield flat[start : start + chunk_elems]


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
