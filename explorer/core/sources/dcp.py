"""torch.distributed.checkpoint (DCP) folders — FSDP2, torchtitan, ``dcp.save`` — read header-only.

A DCP folder is a ``.metadata`` pickle plus rank files (``__0_0.distcp``, ``__1_0.distcp``, ...). The metadata
holds every tensor's global shape and dtype, its chunks (offsets and sizes in the global tensor) and where
each chunk's bytes lie (file, byte offset, length). With torch's default ``FileSystemWriter`` each chunk is one
``torch.save`` blob (a small uncompressed zip) at that byte range; its storage bytes are read in place (mmap).

``.metadata`` is read with a restricted unpickler that knows only the DCP metadata classes and builds stand-ins
for them (nothing from torch is called): any other GLOBAL is refused before it is looked up. Non-tensor entries
(``BytesStorageMetadata``: pickled Python objects such as a step counter or optimizer hyper-parameters) are
listed, never unpickled. Chunks of a tensor are validated (inside the tensor, no overlap, full coverage, byte
ranges inside their file) when the folder is opened; a chunk's blob is parsed only when its tensor is read.

``open_dcp`` returns the layout; ``open_dcp_index`` wraps it as the :class:`CheckpointIndex` every source fills
(its ``layout`` is what :class:`~explorer.core.sources.reader.TensorReader` reads chunks through).
"""
from __future__ import annotations

import io
import math
import mmap
import os
import pickle
import re
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

from ..errors import CheckpointError
from ..fsio import check_regular, read_bounded
from .index import WRAPPER_KEYS, CheckpointIndex, TensorInfo
from .mapped import MappedFiles
from .torch_records import load_restricted

if TYPE_CHECKING:
    import torch

METADATA_FILE = ".metadata"
MAX_METADATA_BYTES = 1 << 30  #: a 70B model sharded over 1024 ranks has a metadata file of a few hundred MB at most
MAX_BLOB_PICKLE = 1 << 20  #: the data.pkl of one saved chunk is ~150 bytes

# torch dtype name -> bytes per element (the dtypes DCP can hold; no torch import needed to index)
DTYPE_SIZES: dict[str, int] = {
    "float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "complex128": 16, "complex64": 8, "complex32": 4,
    "int64": 8, "int32": 4, "int16": 2, "int8": 1, "uint64": 8, "uint32": 4, "uint16": 2, "uint8": 1, "bool": 1,
    "float8_e4m3fn": 1, "float8_e5m2": 1, "float8_e4m3fnuz": 1, "float8_e5m2fnuz": 1, "float8_e8m0fnu": 1,
}
# sub-trees that hold optimizer state, not weights (``get_state_dict(model, optim)``, torchtitan, Lightning-style)
OPTIMIZER_GROUPS = ("optim", "optimizer", "optimizers", "optim_state", "optimizer_state", "optimizer_states")


# --------------------------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Chunk:
    """One saved piece of a tensor: where it sits in the global tensor and where its bytes lie."""

    offsets: tuple[int, ...]
    sizes: tuple[int, ...]
    file: str  # absolute path of the rank file
    offset: int  # byte offset of the saved item in ``file``
    length: int  # bytes of the saved item (a torch.save blob)

    @property
    def numel(self) -> int:
        return math.prod(self.sizes)


@dataclass(frozen=True)
class DcpTensor:
    """A tensor of the checkpoint: its flattened DCP key, global shape, dtype and chunks."""

    key: str
    shape: tuple[int, ...]
    dtype: str
    chunks: tuple[Chunk, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * DTYPE_SIZES[self.dtype]


@dataclass(frozen=True)
class Group:
    """A top-level sub-tree of the saved state dict (``model``, ``optim``, ...)."""

    name: str
    n_tensors: int
    nbytes: int
    n_objects: int  # non-tensor entries

    @property
    def is_optimizer(self) -> bool:
        return self.name.lower() in OPTIMIZER_GROUPS or "optim" in self.name.lower()


@dataclass(frozen=True)
class DcpLayout:
    """What ``open_dcp`` found: the chosen sub-tree's tensors by name (prefix removed), the other sub-trees and
    the non-tensor entries. Holds no tensor data."""

    folder: str
    files: tuple[str, ...]
    tensors: Mapping[str, DcpTensor]
    group: str | None  # chosen sub-tree, None for top-level tensors
    candidates: tuple[str, ...]  # sub-trees holding tensors
    groups: tuple[Group, ...]
    objects: tuple[str, ...]  # non-tensor entries (full DCP keys)
    version: str = ""
    notes: tuple[str, ...] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)

    def reader(self) -> DcpReader:
        return DcpReader(self)


# --------------------------------------------------------------------------------------------- restricted unpickler


class _Stub:
    """Stand-in for a DCP metadata dataclass: records the pickled state, runs nothing."""

    kind = "?"

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2 and (state[0] is None or isinstance(state[0], dict)):
            d = dict(state[0] or {})
            if isinstance(state[1], dict):
                d.update(state[1])
            state = d
        if isinstance(state, dict):
            self.__dict__.update({str(k): v for k, v in state.items()})
        else:
            self.__dict__["_state"] = state

    def get(self, name: str, default: Any = None) -> Any:
        return self.__dict__.get(name, default)


def _stub_class(name: str) -> type:
    return type(name, (_Stub,), {"kind": name})


_METADATA_CLASSES = {
    n: _stub_class(n)
    for n in ("Metadata", "TensorStorageMetadata", "BytesStorageMetadata", "ChunkStorageMetadata", "TensorProperties",
              "MetadataIndex", "StorageMeta", "_StorageInfo")
}


class DtypeName(str):
    """A torch dtype named in the metadata (``torch.float32`` -> ``"float32"``), never the torch object."""


def _size(*args: Any) -> tuple[int, ...]:
    seq = args[0] if args else ()
    if not isinstance(seq, (tuple, list)) or not all(isinstance(d, int) and not isinstance(d, bool) for d in seq):
        raise pickle.UnpicklingError("torch.Size of something other than integers")
    return tuple(seq)


def _layout(name: Any) -> str:
    return str(name)


def _mem_format(value: Any) -> int:
    return value if isinstance(value, int) else -1


def _path(*parts: Any) -> str:
    return "/".join(str(p) for p in parts)


class _MetadataUnpickler(pickle.Unpickler):
    """Admits only the names a DCP ``.metadata`` references (checked against torch 2.13's by pickletools) and
    maps each to a harmless stand-in; everything else is refused before it is imported."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch.distributed.checkpoint.metadata" and name in _METADATA_CLASSES:
            return _METADATA_CLASSES[name]
        if module == "torch.distributed.checkpoint.metadata" and name == "_MEM_FORMAT_ENCODING":
            return _mem_format
        if module == "torch.distributed.checkpoint.filesystem" and name == "_StorageInfo":
            return _METADATA_CLASSES["_StorageInfo"]
        if module == "torch" and name in DTYPE_SIZES:
            return DtypeName(name)
        if module == "torch" and name == "Size":
            return _size
        if module == "torch.serialization" and name == "_get_layout":
            return _layout
        if module == "torch" and name in ("strided", "sparse_coo", "contiguous_format", "preserve_format"):
            return name
        if module == "pathlib" and name in ("PosixPath", "WindowsPath", "PurePosixPath", "PureWindowsPath", "Path"):
            return _path
        if module == "collections" and name == "OrderedDict":
            return dict
        raise pickle.UnpicklingError(f"GLOBAL {module}.{name} is not allowed")


def read_metadata(folder: str | os.PathLike[str]) -> Any:
    """The unpickled ``.metadata`` of a DCP folder (stand-in objects). Raises CheckpointError."""
    p = Path(folder) / METADATA_FILE
    raw = read_bounded(p, max_bytes=MAX_METADATA_BYTES, what="DCP metadata file", error=CheckpointError)
    if not raw:
        raise CheckpointError(f"{p}: empty DCP metadata file")
    md = load_restricted(_MetadataUnpickler, raw, p, what="DCP metadata",
                         allowed="only torch.distributed.checkpoint metadata classes are")
    if not isinstance(md, _METADATA_CLASSES["Metadata"]):
        raise CheckpointError(f"{p}: not DCP metadata: the pickle holds {type(md).__name__}, expected Metadata")
    return md


# --------------------------------------------------------------------------------------------- opening


def is_dcp_folder(p: str | os.PathLike[str]) -> bool:
    q = Path(p)
    return q.is_dir() and (q / METADATA_FILE).is_file()


def open_dcp_index(p: Path, path: str, wrapper: str | None) -> CheckpointIndex:
    """A DCP folder as an index: its chosen sub-tree's tensors, each named by its first chunk's rank file."""
    lay = open_dcp(p, wrapper=wrapper, preferred=WRAPPER_KEYS)
    tensors = {n: TensorInfo(n, t.shape, t.dtype, t.nbytes, t.chunks[0].file if t.chunks else lay.files[0])
               for n, t in lay.tensors.items()}
    return CheckpointIndex(path, "dcp", lay.files, tensors, lay.metadata, lay.group, lay.candidates, lay.notes, layout=lay)


def _ints(v: Any) -> tuple[int, ...] | None:
    if isinstance(v, (tuple, list)) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in v):
        return tuple(v)
    return None


_SAFE_NAME = re.compile(r"^[^/\\\x00]+$")


def open_dcp(folder: str | os.PathLike[str], *, wrapper: str | None = None,
             preferred: Sequence[str] = ("model",)) -> DcpLayout:
    """Index a DCP folder from its ``.metadata`` alone (the rank files are only stat'ed).

    ``wrapper`` selects a top-level sub-tree (``model``, ``optim``, ...); by default top-level tensors, else the
    first of ``preferred`` present, else the only non-optimizer sub-tree. Raises CheckpointError naming the file."""
    root = Path(folder)
    mpath = root / METADATA_FILE
    md = read_metadata(root)
    sdm = md.get("state_dict_metadata")
    storage = md.get("storage_data")
    planner = md.get("planner_data")
    if not isinstance(sdm, dict) or not isinstance(storage, dict):
        raise CheckpointError(f"{mpath}: corrupt DCP metadata: no state_dict_metadata / storage_data mapping")
    if not isinstance(planner, dict):
        planner = {}

    # where each chunk's bytes lie: (fqn, chunk offsets) -> (file name, offset, length)
    where: dict[tuple[str, tuple[int, ...] | None], tuple[str, int, int]] = {}
    for k, v in storage.items():
        if not isinstance(k, _METADATA_CLASSES["MetadataIndex"]) or not isinstance(v, _METADATA_CLASSES["_StorageInfo"]):
            raise CheckpointError(f"{mpath}: corrupt DCP metadata: storage_data maps {type(k).__name__} to {type(v).__name__}")
        fqn, rel, off, length = k.get("fqn"), v.get("relative_path"), v.get("offset"), v.get("length")
        if not isinstance(fqn, str) or not isinstance(rel, str) or not isinstance(off, int) or not isinstance(length, int):
            raise CheckpointError(f"{mpath}: corrupt DCP metadata: storage entry {fqn!r} has no file/offset/length")
        if not _SAFE_NAME.match(rel) or rel in (".", "..") or rel == METADATA_FILE:
            raise CheckpointError(f"{mpath}: storage entry {fqn!r} points at {rel!r}, not a file in the checkpoint folder")
        if off < 0 or length < 0:
            raise CheckpointError(f"{mpath}: storage entry {fqn!r}: negative byte range ({off}, {length})")
        if v.get("transform_descriptors"):
            raise CheckpointError(f"{root / rel}: {fqn!r} is stored through transforms "
                                  f"{list(v.get('transform_descriptors'))[:3]!r} (compression?), which are not supported")
        koff = k.get("offset")
        where[(fqn, _ints(koff) if koff is not None else None)] = (rel, off, length)

    sizes: dict[str, int] = {}

    def file_size(rel: str) -> int:
        if rel not in sizes:
            p = root / rel
            if not p.exists():
                raise CheckpointError(f"{p}: rank file named in {mpath} is missing")
            sizes[rel] = check_regular(p, what="DCP rank file", error=CheckpointError).st_size
        return sizes[rel]

    tensors: dict[str, DcpTensor] = {}
    objects: list[str] = []
    ranges: dict[str, list[tuple[int, int, str]]] = {}
    for fqn, entry in sdm.items():
        if not isinstance(fqn, str):
            raise CheckpointError(f"{mpath}: corrupt DCP metadata: key {fqn!r} is not a string")
        kind = getattr(entry, "kind", None)
        if kind == "BytesStorageMetadata":
            if (fqn, None) not in where:
                raise CheckpointError(f"{mpath}: non-tensor entry {fqn!r} has no storage location")
            rel, off, length = where[(fqn, None)]
            if off + length > file_size(rel):
                raise CheckpointError(f"{root / rel}: entry {fqn!r} ends at byte {off + length}, past the end of the file "
                                      f"({sizes[rel]} bytes; truncated?)")
            ranges.setdefault(rel, []).append((off, off + length, fqn))
            objects.append(fqn)
            continue
        if kind != "TensorStorageMetadata":
            raise CheckpointError(f"{mpath}: corrupt DCP metadata: entry {fqn!r} is {type(entry).__name__}")
        t = _tensor(mpath, root, fqn, entry, where, file_size, ranges)
        tensors[fqn] = t
    for rel, rs in ranges.items():
        rs.sort()
        for (a0, a1, an), (b0, b1, bn) in zip(rs, rs[1:]):
            if b0 < a1:
                raise CheckpointError(f"{root / rel}: the bytes of {an!r} and {bn!r} overlap (bytes {b0}..{min(a1, b1)})")

    # top-level sub-trees, from the planner's original paths (("model", "layers.0.weight") for {"model": {...}})
    def split(fqn: str) -> tuple[str | None, str]:
        path = planner.get(fqn)
        if isinstance(path, (tuple, list)) and len(path) > 1 and fqn.startswith(f"{path[0]}."):
            return str(path[0]), fqn[len(str(path[0])) + 1 :]
        return None, fqn

    by_group: dict[str | None, dict[str, DcpTensor]] = {}
    obj_group: dict[str | None, list[str]] = {}
    for fqn, t in tensors.items():
        g, name = split(fqn)
        by_group.setdefault(g, {})[name] = t
    for fqn in objects:
        g, _ = split(fqn)
        obj_group.setdefault(g, []).append(fqn)
    names = list(dict.fromkeys([*by_group, *obj_group]))
    groups = tuple(
        Group(g, len(by_group.get(g, {})), sum(t.nbytes for t in by_group.get(g, {}).values()), len(obj_group.get(g, [])))
        for g in names if g is not None
    )
    candidates = tuple(g.name for g in groups if g.n_tensors)
    top = by_group.get(None, {})
    chosen: str | None
    if wrapper is not None:
        if wrapper not in candidates:
            raise CheckpointError(f"{root}: no sub-tree {wrapper!r} holding tensors in this DCP checkpoint "
                                  f"(available: {', '.join(candidates) or 'none'})")
        chosen = wrapper
    else:
        biggest = max((g.n_tensors for g in groups), default=0)
        weights = [g.name for g in groups if g.n_tensors and not g.is_optimizer]
        if top and (len(top) >= biggest or any("." in k for k in top) or not weights):
            chosen = None
        elif any(p in weights for p in preferred):
            chosen = next(p for p in preferred if p in weights)
        elif len(weights) == 1:
            chosen = weights[0]
        elif weights:
            raise CheckpointError(f"{root}: DCP checkpoint with several tensor sub-trees ({', '.join(candidates)}); "
                                  "choose one with --wrapper")
        elif candidates:
            chosen = candidates[0]
        else:
            raise CheckpointError(f"{root}: no tensors in this DCP checkpoint ({len(objects)} non-tensor entries)")
    picked = by_group.get(chosen, {})

    notes: list[str] = []
    for g in groups:
        if g.name == chosen:
            continue
        what = "optimizer state, not model weights" if g.is_optimizer else "another sub-tree"
        parts = []
        if g.n_tensors:
            parts.append(f"{g.n_tensors} tensors ({_human(g.nbytes)})")
        if g.n_objects:
            parts.append(f"{g.n_objects} non-tensor entries")
        hint = f"; --wrapper {g.name} shows it" if g.n_tensors else ""
        notes.append(f"'{g.name}': {what}: {', '.join(parts)}{hint}")
    if chosen is not None and top:
        notes.append(f"{len(top)} top-level tensors outside '{chosen}' are not part of it")
    own_objs = obj_group.get(chosen, [])
    if own_objs:
        shown = ", ".join(own_objs[:5]) + (", ..." if len(own_objs) > 5 else "")
        notes.append(f"{len(own_objs)} non-tensor entries (pickled objects, not read): {shown}")
    loose = obj_group.get(None, []) if chosen is not None else []
    if loose:
        notes.append(f"top-level non-tensor entries (not read): {', '.join(loose[:5])}" + (", ..." if len(loose) > 5 else ""))
    files = tuple(str(root / rel) for rel in sorted(sizes, key=_natural))
    used = {c.file for t in picked.values() for c in t.chunks}
    version = md.get("version")
    meta = {"dcp.version": str(version) if version is not None else "", "dcp.rank_files": str(len(files))}
    if chosen is not None:
        meta["dcp.subtree"] = chosen
    return DcpLayout(
        str(root), tuple(f for f in files if f in used) or files, picked, chosen, candidates, groups, tuple(objects),
        str(version or ""), tuple(notes), meta,
    )


def _natural(s: str) -> list[Any]:
    return [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", s)]


def _human(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _tensor(mpath: Path, root: Path, fqn: str, entry: Any, where: Mapping, file_size: Any,
            ranges: dict[str, list[tuple[int, int, str]]]) -> DcpTensor:
    props = entry.get("properties")
    dtype = props.get("dtype") if isinstance(props, _Stub) else None
    if dtype is None and isinstance(props, _Stub) and isinstance(props.get("_state"), tuple) and props.get("_state"):
        dtype = props.get("_state")[0]  # TensorProperties pickles its fields as a tuple (dtype first)
    if not isinstance(dtype, DtypeName):
        raise CheckpointError(f"{mpath}: tensor {fqn!r}: unknown or missing dtype {dtype!r}")
    shape = _ints(entry.get("size"))
    if shape is None:
        raise CheckpointError(f"{mpath}: tensor {fqn!r}: invalid size {entry.get('size')!r}")
    raw_chunks = entry.get("chunks")
    if not isinstance(raw_chunks, (list, tuple)):
        raise CheckpointError(f"{mpath}: tensor {fqn!r}: no chunk list")
    itemsize = DTYPE_SIZES[str(dtype)]
    chunks: list[Chunk] = []
    for c in raw_chunks:
        offs, szs = (_ints(c.get("offsets")), _ints(c.get("sizes"))) if isinstance(c, _Stub) else (None, None)
        if offs is None or szs is None or len(offs) != len(shape) or len(szs) != len(shape):
            raise CheckpointError(f"{mpath}: tensor {fqn!r}: chunk with invalid offsets/sizes for shape {list(shape)}")
        if any(o + s > d for o, s, d in zip(offs, szs, shape)):
            raise CheckpointError(f"{mpath}: tensor {fqn!r}: chunk at {list(offs)} of size {list(szs)} lies outside "
                                  f"the tensor's shape {list(shape)}")
        loc = where.get((fqn, offs))
        if loc is None:
            raise CheckpointError(f"{mpath}: tensor {fqn!r}: chunk at {list(offs)} has no storage location")
        rel, off, length = loc
        need = math.prod(szs) * itemsize
        if off + length > file_size(rel):
            raise CheckpointError(f"{root / rel}: tensor {fqn!r}: chunk at {list(offs)} ends at byte {off + length}, past "
                                  f"the end of the file ({file_size(rel)} bytes; truncated?)")
        if length < need:
            raise CheckpointError(f"{root / rel}: tensor {fqn!r}: chunk at {list(offs)} has {length} bytes, its "
                                  f"{list(szs)} {dtype} values need {need}")
        ranges.setdefault(rel, []).append((off, off + length, fqn))
        chunks.append(Chunk(offs, szs, str(root / rel), off, length))
    numel = math.prod(shape)
    _check_tiling(mpath, fqn, shape, chunks)
    covered = sum(c.numel for c in chunks)
    if covered != numel:
        raise CheckpointError(f"{mpath}: tensor {fqn!r}: its chunks hold {covered} of its {numel} elements")
    return DcpTensor(fqn, shape, str(dtype), tuple(chunks))


def _check_tiling(mpath: Path, fqn: str, shape: tuple[int, ...], chunks: Sequence[Chunk]) -> None:
    """No two chunks of a tensor overlap (with the element count check, the chunks tile it exactly)."""
    cs = [c for c in chunks if c.numel]
    if len(cs) < 2:
        return
    if len(cs) <= 256:
        for i, a in enumerate(cs):
            for b in cs[i + 1 :]:
                if all(max(ao, bo) < min(ao + az, bo + bz) for ao, az, bo, bz in zip(a.offsets, a.sizes, b.offsets, b.sizes)):
                    raise CheckpointError(f"{mpath}: tensor {fqn!r}: chunks at {list(a.offsets)} and {list(b.offsets)} overlap")
        return
    import numpy as np  # many ranks: vectorised pairwise test

    lo = np.array([c.offsets for c in cs], dtype=np.int64)
    hi = lo + np.array([c.sizes for c in cs], dtype=np.int64)
    for i in range(len(cs) - 1):
        inter = (np.maximum(lo[i], lo[i + 1 :]) < np.minimum(hi[i], hi[i + 1 :])).all(axis=1)
        if inter.any():
            j = i + 1 + int(np.argmax(inter))
            raise CheckpointError(f"{mpath}: tensor {fqn!r}: chunks at {list(cs[i].offsets)} and {list(cs[j].offsets)} overlap")


# --------------------------------------------------------------------------------------------- reading


class _Window(io.RawIOBase):
    """A read-only, seekable view of ``[start, start + length)`` of a mapped file (no copy)."""

    def __init__(self, buf: mmap.mmap, start: int, length: int) -> None:
        self._buf, self._start, self._len, self._pos = buf, start, length, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._len}[whence]
        self._pos = max(0, base + pos)
        return self._pos

    def readinto(self, b: Any) -> int:
        n = max(0, min(len(b), self._len - self._pos))
        a = self._start + self._pos
        b[:n] = self._buf[a : a + n]
        self._pos += n
        return n


class DcpReader:
    """Reads DCP tensors by assembling their chunks from the rank files (each chunk's bytes mmapped in place)."""

    def __init__(self, layout: DcpLayout) -> None:
        self.layout = layout
        self._files = MappedFiles("rank file")

    def close(self) -> None:
        self._files.close()

    def _map(self, file: str) -> mmap.mmap:
        return self._files.map(file)

    def _entry(self, name: str) -> DcpTensor:
        try:
            return self.layout.tensors[name]
        except KeyError:
            raise CheckpointError(f"{self.layout.folder}: no tensor named {name!r}") from None

    def chunk(self, t: DcpTensor, c: Chunk) -> torch.Tensor:
        """One chunk as a tensor of ``c.sizes``, a view of the mapped rank file."""
        import torch

        m = self._map(c.file)
        size = self._files.size_now(c.file)  # the file now, not the mapping (a truncated file would be a SIGBUS)
        if c.offset + c.length > size:
            raise CheckpointError(f"{c.file}: tensor {t.key!r}: chunk ends at byte {c.offset + c.length}, past the end "
                                  f"of the file ({size} bytes; changed on disk since it was opened?)")
        where = f"{c.file}: tensor {t.key!r}: chunk at {list(c.offsets)}"
        try:
            z = zipfile.ZipFile(_Window(m, c.offset, c.length))
            infos = z.infolist()
        except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
            raise CheckpointError(f"{where}: not a torch.save blob at bytes {c.offset}..{c.offset + c.length} ({e})") from None
        pkl = [i for i in infos if i.filename.endswith("/data.pkl")]
        data = [i for i in infos if re.search(r"/data/[^/]+$", i.filename)]
        if len(pkl) != 1 or len(data) != 1:
            raise CheckpointError(f"{where}: expected one tensor in its torch.save blob, found {len(data)} storages")
        if pkl[0].file_size > MAX_BLOB_PICKLE:
            raise CheckpointError(f"{where}: its data.pkl is {pkl[0].file_size} bytes, over the 1 MiB limit")
        bo = [i for i in infos if i.filename.endswith("/byteorder")]
        if bo and z.read(bo[0]).strip() not in (b"little",):
            raise CheckpointError(f"{where}: big-endian data is not supported")
        info = data[0]
        if info.compress_type != zipfile.ZIP_STORED:
            raise CheckpointError(f"{where}: compressed storage is not supported")
        try:
            meta = torch.load(_Window(m, c.offset, c.length), map_location="meta", weights_only=True)
        except Exception as e:  # noqa: BLE001 - weights_only refusals and corrupt blobs alike become one line
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise CheckpointError(f"{where}: cannot read its torch.save blob ({first})") from None
        if not isinstance(meta, torch.Tensor):
            raise CheckpointError(f"{where}: the blob holds {type(meta).__name__}, not a tensor")
        if tuple(meta.shape) != c.sizes or str(meta.dtype).removeprefix("torch.") != t.dtype:
            raise CheckpointError(f"{where}: the blob holds {list(meta.shape)} {meta.dtype}, the metadata says "
                                  f"{list(c.sizes)} {t.dtype}")
        st_bytes = meta.untyped_storage().nbytes()
        if info.file_size != st_bytes:
            raise CheckpointError(f"{where}: storage record of {info.file_size} bytes, the tensor's storage is {st_bytes}")
        hdr_at = c.offset + info.header_offset
        hdr = bytes(m[hdr_at : hdr_at + 30])
        if len(hdr) < 30 or hdr[:4] != b"PK\x03\x04":
            raise CheckpointError(f"{where}: corrupt zip entry header")
        n_name, n_extra = struct.unpack("<HH", hdr[26:30])
        start = hdr_at + 30 + n_name + n_extra
        if start + st_bytes > c.offset + c.length:
            raise CheckpointError(f"{where}: storage bytes run past the chunk's byte range")
        if meta.numel() == 0:
            return torch.empty(c.sizes, dtype=meta.dtype)
        itemsize = meta.element_size()
        base = torch.frombuffer(m, dtype=meta.dtype, count=st_bytes // itemsize, offset=start)
        try:
            return base.as_strided(meta.shape, meta.stride(), meta.storage_offset())
        except RuntimeError as e:
            raise CheckpointError(f"{where}: its strides do not fit its storage ({e})") from None

    def _release(self, c: Chunk) -> None:
        """Drop a streamed chunk's pages from this process: a conversion's RSS stays about one chunk."""
        self._files.release(c.file, c.offset, c.length)

    def tensor(self, name: str) -> torch.Tensor:
        """The global tensor, assembled from its chunks (a view, without copy, when one chunk holds it all)."""
        import torch

        t = self._entry(name)
        if len(t.chunks) == 1 and t.chunks[0].sizes == t.shape:
            return self.chunk(t, t.chunks[0])
        out = torch.empty(t.shape, dtype=getattr(torch, t.dtype))
        for c in t.chunks:
            if c.numel:
                out[tuple(slice(o, o + s) for o, s in zip(c.offsets, c.sizes))] = self.chunk(t, c)
        return out

    def iter_flat(self, name: str, *, chunk_elems: int = 1 << 24) -> Iterator[torch.Tensor]:
        """The tensor's values in row-major order, in flat pieces of at most ``chunk_elems``. Chunks that split only
        the first dimension (FSDP's layout) are streamed one by one, never assembled."""
        t = self._entry(name)
        rows_only = all(c.offsets[1:] == (0,) * (len(t.shape) - 1) and c.sizes[1:] == t.shape[1:] for c in t.chunks)
        if t.shape and rows_only:
            for c in sorted((c for c in t.chunks if c.numel), key=lambda c: c.offsets[0]):
                flat = self.chunk(t, c).reshape(-1)
                for s in range(0, flat.numel(), chunk_elems):
                    yield flat[s : s + chunk_elems]
                del flat
                self._release(c)
            return
        flat = self.tensor(name).reshape(-1)
        for s in range(0, flat.numel(), chunk_elems):
            yield flat[s : s + chunk_elems]
