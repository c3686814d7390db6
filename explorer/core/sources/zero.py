"""DeepSpeed ZeRO checkpoint folders (stages 1-3), read without DeepSpeed and without loading the fp32 partitions.

A ZeRO save is ``latest`` (the tag, e.g. ``global_step100``) beside ``<tag>/`` holding ``mp_rank_00_model_states.pt``
(stages 1-2) or ``zero_pp_rank_R_mp_rank_00_model_states.pt`` (stage 3, one per rank) and one
``[bf16_]zero_pp_rank_R_mp_rank_00_optim_states.pt`` per data-parallel rank. The model-states file names every
parameter with its shape (``param_shapes``, per optimizer group), the frozen ones (``frozen_param_shapes`` and
their values in ``frozen_param_fragments``), the buffers and the shared (tied) names; the fp32 master weights live
flattened in each rank's optimizer file (``single_partition_of_fp32_groups`` for stages 1-2,
``fp32_flat_groups`` for stage 3). The parameters are consolidated exactly as DeepSpeed's own
``deepspeed.utils.zero_to_fp32`` does it (same order, same padding rules, same sanity checks), but piece by piece
from the memory-mapped files: memory stays one piece, never the model.

The files are torch zip pickles that hold DeepSpeed objects (``ZeroStageEnum``, ``LossScaler``,
``fragment_address``); ``torch_records`` reads their ``data.pkl`` with a restricted unpickler (an allow-list mapped
to inert stand-ins, every other GLOBAL refused, nothing named in a file imported or run) into tensor *records*: no
tensor data is read when a folder is opened.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

from ..errors import CheckpointError
from ..fsio import check_regular, confined_to
from .index import CheckpointIndex, TensorInfo, file_stamps
from .mapped import MappedFiles
from .torch_records import DTYPE_SIZES, TensorRef, TorchFile, int_tuple, read_torch_file, storage_table

if TYPE_CHECKING:
    import torch

LATEST = "latest"
MAX_LATEST_BYTES = 4096
_MODEL_RE = re.compile(r"^(?:zero_pp_rank_(\d+)_)?mp_rank_(\d+)_model_states\.pt$")
_OPTIM_RE = re.compile(r"^(?:bf16_)?zero_pp_rank_(\d+)_mp_rank_(\d+)_optim_states\.pt$")
_PIPE_RE = re.compile(r"^layer_\d+-model_\d+-model_states\.pt$")

# --------------------------------------------------------------------------------------------- the layout


@dataclass(frozen=True)
class Piece:
    """A run of a tensor's flattened values: ``count`` elements from element ``start`` of a stored tensor."""

    file: str
    ref: TensorRef
    start: int
    count: int


@dataclass(frozen=True)
class ZeroTensor:
    name: str
    shape: tuple[int, ...]
    dtype: str  # dtype as written by zero_to_fp32 (fp32 for trainable parameters and floating buffers)
    pieces: tuple[Piece, ...]
    kind: str  # "param" | "frozen" | "buffer" | "shared"

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * DTYPE_SIZES[self.dtype]


@dataclass(frozen=True)
class ZeroLayout:
    folder: str  # the tag folder
    files: tuple[str, ...]
    tensors: Mapping[str, ZeroTensor]
    stage: int
    world_size: int
    tag: str
    version: str
    notes: tuple[str, ...] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)

    def reader(self) -> ZeroReader:
        return ZeroReader(self)


def _natural(s: str) -> list[Any]:
    return [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", s)]


def tag_folder(path: str | os.PathLike[str]) -> tuple[Path, str] | None:
    """The folder holding the rank files and its tag, for a ZeRO save folder (with ``latest``) or a tag folder;
    None when ``path`` is neither. Raises CheckpointError for a ``latest`` that names no tag folder."""
    p = Path(path)
    if not p.is_dir():
        return None
    latest = p / LATEST
    if latest.is_file() and not any(_MODEL_RE.match(n) for n in os.listdir(p)):
        st = check_regular(latest, what="DeepSpeed 'latest' file", error=CheckpointError, max_bytes=MAX_LATEST_BYTES)
        try:
            tag = latest.read_bytes()[: st.st_size].decode("utf-8").strip()
        except UnicodeDecodeError:
            raise CheckpointError(f"{latest}: not a DeepSpeed 'latest' file (not text)") from None
        if not tag or "/" in tag or "\\" in tag or "\0" in tag or tag in (".", "..") or "\n" in tag:
            raise CheckpointError(f"{latest}: names {tag[:80]!r}, not a tag folder inside {p}")
        d = p / tag
        if not d.is_dir() or d.is_symlink():
            raise CheckpointError(f"{latest}: names the tag {tag!r}, but {d} is not a folder")
        return d, tag
    try:
        names = os.listdir(p)
    except OSError:
        return None
    if any(_MODEL_RE.match(n) for n in names) and any(_OPTIM_RE.match(n) for n in names):
        return p, p.name
    return None


def is_zero_folder(path: str | os.PathLike[str]) -> bool:
    """A ZeRO save folder (``latest``) or tag folder. A folder that also holds Hugging Face weights (a Trainer
    checkpoint saved with gathered weights) is left to them, as ``from_pretrained`` would read them; its tag folder
    opens the ZeRO state."""
    from .hf_folder import HF_WEIGHT_FILES

    p = Path(path)
    if not p.is_dir():
        return False
    if (p / LATEST).is_file():
        return not any((p / n).is_file() for n in HF_WEIGHT_FILES)
    try:
        names = os.listdir(p)
    except OSError:
        return False
    return any(_MODEL_RE.match(n) for n in names) and any(_OPTIM_RE.match(n) for n in names)


def _get(d: Any, key: str, f: str, kinds: type | tuple[type, ...], default: Any = ...) -> Any:
    if not isinstance(d, dict):
        raise CheckpointError(f"{f}: not a DeepSpeed checkpoint file: the pickle holds {type(d).__name__}, not a dict")
    if key not in d:
        if default is not ...:
            return default
        raise CheckpointError(f"{f}: not a DeepSpeed ZeRO checkpoint file: no {key!r} entry")
    v = d[key]
    if v is None and default is not ...:
        return default
    if not isinstance(v, kinds):
        raise CheckpointError(f"{f}: {key!r} is {type(v).__name__}, expected {getattr(kinds, '__name__', kinds)}")
    return v


def _shape(v: Any, f: str, name: str) -> tuple[int, ...]:
    t = int_tuple(v)
    if t is None:
        raise CheckpointError(f"{f}: parameter {name!r}: invalid shape {str(v)[:80]}")
    return t


def open_zero(path: str | os.PathLike[str]) -> ZeroLayout:
    """Index a DeepSpeed ZeRO folder (the save folder with ``latest``, or a tag folder) from the pickles alone.

    Every parameter's shape comes from the model-states file and its place in the ranks' fp32 partitions from the
    optimizer files' tensor records; the partitions' sizes are checked against the shapes as zero_to_fp32 checks
    them. No tensor data are read. Raises CheckpointError naming the file and the problem."""
    found = tag_folder(path)
    if found is None:
        raise CheckpointError(f"{path}: not a DeepSpeed ZeRO checkpoint folder (no 'latest' file, no "
                              "*_model_states.pt beside *_optim_states.pt)")
    d, tag = found
    names = sorted(os.listdir(d), key=_natural)
    if any(_PIPE_RE.match(n) for n in names):
        raise CheckpointError(f"{d}: a pipeline-parallel DeepSpeed checkpoint (layer_*-model_states.pt): not supported "
                              "(neither is it by zero_to_fp32; DeepSpeed's ds_to_universal converts it)")
    models = [n for n in names if _MODEL_RE.match(n)]
    optims = [n for n in names if _OPTIM_RE.match(n)]
    if any(int(_MODEL_RE.match(n).group(2)) != 0 for n in models) or any(int(_OPTIM_RE.match(n).group(2)) != 0 for n in optims):
        raise CheckpointError(f"{d}: a tensor-parallel DeepSpeed checkpoint (mp_rank_01 and up): not supported "
                              "(neither is it by zero_to_fp32)")
    if not models:
        raise CheckpointError(f"{d}: no *_model_states.pt file: not a DeepSpeed checkpoint")
    if not optims:
        raise CheckpointError(f"{d}: no *_optim_states.pt files: a ZeRO checkpoint keeps its fp32 weights there "
                              "(saved without the optimizer?)")
    # rank 0's optimizer file tells the stage and the world size
    o0 = read_torch_file(d / optims[0], "DeepSpeed optimizer-states file")
    osd0 = _get(o0.obj, "optimizer_state_dict", o0.path, dict)
    stage = _get(osd0, "zero_stage", o0.path, int)
    if isinstance(stage, bool) or stage not in (1, 2, 3):
        raise CheckpointError(f"{o0.path}: unknown ZeRO stage {stage!r}")
    pc = _get(osd0, "partition_count", o0.path, (int, list))
    world = max(pc) if isinstance(pc, list) else pc
    if not isinstance(world, int) or isinstance(world, bool) or world < 1:
        raise CheckpointError(f"{o0.path}: invalid partition_count {pc!r}")
    ranks = {int(_OPTIM_RE.match(n).group(1)): n for n in optims}
    missing = [r for r in range(world) if r not in ranks]
    if missing:
        prefix = "bf16_" if optims[0].startswith("bf16_") else ""
        raise CheckpointError(f"{d / f'{prefix}zero_pp_rank_{missing[0]}_mp_rank_00_optim_states.pt'}: rank file missing "
                              f"(ZeRO stage {stage} saved over {world} ranks, {len(optims)} optimizer files found)")
    if len(optims) != world:
        raise CheckpointError(f"{d}: {len(optims)} optimizer-states files for a world size of {world} (an older save "
                              "overwritten in place?)")
    optim_files = [o0] + [read_torch_file(d / ranks[r], "DeepSpeed optimizer-states file") for r in range(1, world)]
    if stage <= 2:
        mfile = "mp_rank_00_model_states.pt"
        if mfile not in models:
            raise CheckpointError(f"{d / mfile}: model-states file missing (ZeRO stage {stage})")
        model_files = [read_torch_file(d / mfile, "DeepSpeed model-states file")]
    else:
        mranks = {int(m.group(1)): n for n in models if (m := _MODEL_RE.match(n)) and m.group(1) is not None}
        miss = [r for r in range(world) if r not in mranks]
        if miss:
            raise CheckpointError(f"{d / f'zero_pp_rank_{miss[0]}_mp_rank_00_model_states.pt'}: rank file missing "
                                  f"(ZeRO stage 3 saved over {world} ranks)")
        model_files = [read_torch_file(d / mranks[r], "DeepSpeed model-states file") for r in range(world)]
    groups_key = "single_partition_of_fp32_groups" if stage <= 2 else "fp32_flat_groups"
    flat: list[list[TensorRef]] = []
    for of in optim_files:
        osd = _get(of.obj, "optimizer_state_dict", of.path, dict)
        g = _get(osd, groups_key, of.path, (list, TensorRef))
        g = [g] if isinstance(g, TensorRef) else g
        for i, t in enumerate(g):
            if not isinstance(t, TensorRef) or len(t.shape) != 1 or not t.contiguous:
                raise CheckpointError(f"{of.path}: {groups_key}[{i}] is not a flat tensor")
            of.locate(t, f"{groups_key}[{i}]")
        flat.append(g)
    if any(len(g) != len(flat[0]) for g in flat):
        raise CheckpointError(f"{d}: the ranks' optimizer files hold different numbers of parameter groups")

    m0 = model_files[0]
    ms = m0.obj
    param_shapes = _get(ms, "param_shapes", m0.path, (list, dict))
    param_shapes = [param_shapes] if isinstance(param_shapes, dict) else param_shapes
    if not all(isinstance(s, dict) for s in param_shapes):
        raise CheckpointError(f"{m0.path}: 'param_shapes' is not a list of name -> shape mappings")
    buffer_names = _get(ms, "buffer_names", m0.path, (list, tuple))
    module = _get(ms, "module", m0.path, dict, {}) or {}
    shared = _get(ms, "shared_params", m0.path, dict, {}) or {}
    frozen_shapes = _get(ms, "frozen_param_shapes", m0.path, dict, None) or {}
    version = str(ms.get("ds_version") or "") if isinstance(ms, dict) else ""

    tensors: dict[str, ZeroTensor] = {}
    for name in buffer_names:  # zero_to_fp32: the buffers first, floating ones as fp32
        ref = module.get(name)
        if not isinstance(ref, TensorRef):
            raise CheckpointError(f"{m0.path}: buffer {name!r} is named in buffer_names but not in 'module'")
        m0.locate(ref, f"buffer {name!r}")
        dt = "float32" if ref.dtype in ("float16", "bfloat16", "float64", "float32") else ref.dtype
        tensors[str(name)] = ZeroTensor(str(name), ref.shape, dt, (Piece(m0.path, ref, 0, ref.numel),), "buffer")
    for name, shp in frozen_shapes.items():
        shape = _shape(shp, m0.path, name)
        numel = math.prod(shape)
        pieces: list[Piece] = []
        left = numel
        for mf in (model_files if stage == 3 else model_files[:1]):
            frags = _get(mf.obj, "frozen_param_fragments", mf.path, dict)
            ref = frags.get(name)
            if not isinstance(ref, TensorRef):
                raise CheckpointError(f"{mf.path}: frozen parameter {name!r} has no fragment")
            mf.locate(ref, f"frozen parameter {name!r}")
            n = min(left, ref.numel)
            if n:
                pieces.append(Piece(mf.path, ref, 0, n))
            left -= n
        if left:
            raise CheckpointError(f"{model_files[-1].path}: frozen parameter {name!r} of shape {list(shape)}: its "
                                  f"fragments hold {numel - left} of its {numel} values")
        dt = pieces[0].ref.dtype if pieces else "float32"
        tensors[str(name)] = ZeroTensor(str(name), shape, dt, tuple(pieces), "frozen")
    if stage <= 2:
        _trainable_12(tensors, param_shapes, flat, optim_files, osd0, world, m0.path)
    else:
        _trainable_3(tensors, param_shapes, flat, optim_files, world, m0.path)
    for alias, src in shared.items():
        if src in tensors:
            t = tensors[src]
            tensors[str(alias)] = ZeroTensor(str(alias), t.shape, t.dtype, t.pieces, "shared")

    files = [mf.path for mf in model_files] + [of.path for of in optim_files]
    notes = [
        f"DeepSpeed ZeRO stage {stage} checkpoint '{tag}' over {world} ranks"
        + (f" (deepspeed {version})" if version else "")
        + ": parameters are the fp32 master weights from the ranks' optimizer partitions, consolidated as "
        "zero_to_fp32 does; the optimizer moments are not shown",
    ]
    if stage <= 2 and any(isinstance(module.get(n), TensorRef) for n in tensors):
        dts = sorted({module[n].dtype for n in tensors if isinstance(module.get(n), TensorRef)})
        notes.append(f"the module weights in mp_rank_00_model_states.pt ({', '.join(dts)}) are the training copy, not "
                     "used (zero_to_fp32 does not use them either)")
    meta = {"zero.stage": str(stage), "zero.world_size": str(world), "zero.tag": tag, "deepspeed.version": version}
    return ZeroLayout(str(d), tuple(files), tensors, stage, world, tag, version, tuple(notes), meta)


def _trainable_12(tensors: dict[str, ZeroTensor], param_shapes: Sequence[Mapping[str, Any]], flat: list[list[TensorRef]],
                  optim_files: Sequence[TorchFile], osd0: Mapping[str, Any], world: int, mpath: str) -> None:
    """Stages 1-2: group g's params lie one after another in the concatenation over ranks of partition g."""
    if len(param_shapes) != len(flat[0]):
        raise CheckpointError(f"{mpath}: {len(param_shapes)} parameter groups in param_shapes, the optimizer files hold "
                              f"{len(flat[0])} fp32 partitions per rank")
    paddings = osd0.get("param_alignment_paddings")
    align = 2 * world
    for g, shapes in enumerate(param_shapes):
        segs = [(optim_files[r].path, flat[r][g]) for r in range(world)]  # rank r's part of the group's vector
        avail = sum(t.numel for _, t in segs)
        pads = paddings[g] if isinstance(paddings, list) and g < len(paddings) else None
        if pads is not None and (not isinstance(pads, list) or len(pads) != len(shapes)):
            raise CheckpointError(f"{optim_files[0].path}: group {g}: {len(pads) if isinstance(pads, list) else '?'} "
                                  f"alignment paddings for {len(shapes)} parameters")
        offset = 0
        for i, (name, shp) in enumerate(shapes.items()):
            shape = _shape(shp, mpath, name)
            numel = math.prod(shape)
            if offset + numel > avail:
                raise CheckpointError(f"{mpath}: parameter {name!r} {list(shape)} ends at element {offset + numel} of "
                                      f"group {g}, whose fp32 partitions over {world} ranks hold {avail} "
                                      "(the shapes disagree with the partitions)")
            tensors[str(name)] = ZeroTensor(str(name), shape, "float32", _span(segs, offset, numel), "param")
            offset += numel
            if pads is not None:
                offset += int(pads[i])
        if align * math.ceil(offset / align) != align * math.ceil(avail / align):
            raise CheckpointError(f"{mpath}: group {g}: the parameters' shapes use {offset} of the {avail} values in the "
                                  f"fp32 partitions over {world} ranks (zero_to_fp32: 'consumed {offset} numels out of "
                                  f"{avail}'): the shapes disagree with the partitions")


def _span(segs: Sequence[tuple[str, TensorRef]], offset: int, numel: int) -> tuple[Piece, ...]:
    """The pieces of elements [offset, offset + numel) of the concatenation of ``segs``."""
    out: list[Piece] = []
    base = 0
    end = offset + numel
    for f, t in segs:
        lo, hi = max(offset, base), min(end, base + t.numel)
        if lo < hi:
            out.append(Piece(f, t, lo - base, hi - lo))
        base += t.numel
        if base >= end:
            break
    return tuple(out)


def _trainable_3(tensors: dict[str, ZeroTensor], param_shapes: Sequence[Mapping[str, Any]], flat: list[list[TensorRef]],
                 optim_files: Sequence[TorchFile], world: int, mpath: str) -> None:
    """Stage 3: every param is split in ``ceil(numel / world)`` per rank, at the same offset of each rank's
    (concatenated) flat groups; the last rank's part is padded."""
    merged: dict[str, Any] = {}
    for s in param_shapes:
        merged.update(s)
    per_rank = sum(t.numel for t in flat[0])
    if any(sum(t.numel for t in g) != per_rank for g in flat):
        raise CheckpointError(f"{optim_files[0].path}: the ranks' fp32 partitions differ in size")
    offset = 0
    for name, shp in merged.items():
        shape = _shape(shp, mpath, name)
        numel = math.prod(shape)
        part = math.ceil(numel / world)
        if offset + part > per_rank:
            raise CheckpointError(f"{mpath}: parameter {name!r} {list(shape)} needs {part} values per rank from element "
                                  f"{offset}, the fp32 partitions hold {per_rank} per rank (the shapes disagree with "
                                  "the partitions)")
        pieces: list[Piece] = []
        left = numel
        for r in range(world):
            segs = [(optim_files[r].path, t) for t in flat[r]]
            for p in _span(segs, offset, min(part, left)):
                pieces.append(p)
            left -= min(part, left)
        tensors[str(name)] = ZeroTensor(str(name), shape, "float32", tuple(pieces), "param")
        offset += part
    if offset * world != per_rank * world:
        raise CheckpointError(f"{mpath}: the parameters' shapes use {offset * world} of the {per_rank * world} values in "
                              f"the fp32 partitions (zero_to_fp32: 'consumed {offset * world} numels out of "
                              f"{per_rank * world}'): the shapes disagree with the partitions")


def open_zero_index(p: Path, path: str, wrapper: str | None) -> CheckpointIndex:
    """A ZeRO folder as an index of its consolidated tensors, each named by the file its first piece is in."""
    if wrapper is not None:
        raise CheckpointError(f"{path}: --wrapper {wrapper!r} given, but a DeepSpeed ZeRO checkpoint holds one model")
    lay = open_zero(p)
    tensors = {n: TensorInfo(n, t.shape, t.dtype, t.nbytes, t.pieces[0].file if t.pieces else lay.files[0])
               for n, t in lay.tensors.items()}
    return CheckpointIndex(path, "deepspeed-zero", lay.files, tensors, lay.metadata, notes=lay.notes, layout=lay,
                           stamps=file_stamps(*map(Path, lay.files)))


def is_rank_file(name: str, head: bytes, size: int) -> bool:
    """A ZeRO model-states or optimizer-states file (by name, a torch zip by its first bytes)."""
    return head[:4] == b"PK\x03\x04" and bool(_MODEL_RE.match(name) or _OPTIM_RE.match(name))


def open_rank_file(p: Path, path: str, wrapper: str | None) -> CheckpointIndex:
    """One rank's file is not a model: the ZeRO folder it belongs to is opened (consolidated), said in a note.
    A lone file (no optimizer files beside it) is read as the torch zip it is."""
    if wrapper is None and is_zero_folder(p.parent):
        import dataclasses

        top = p.parent.parent  # the save folder (config.json beside `latest`), when its `latest` names this tag
        try:
            named = (top / LATEST).is_file() and tag_folder(top) == (p.parent, p.parent.name)
        except CheckpointError:
            named = False
        folder = top if named else p.parent
        with confined_to(folder, named=p):  # the save folder holding this rank file's tag
            ix = open_zero_index(folder, str(folder), None)
        return dataclasses.replace(ix, notes=(f"{p.name} is one rank's file of a DeepSpeed ZeRO checkpoint: showing the "
                                              f"consolidated model of {folder}",) + tuple(ix.notes))
    from .torch_pickle import open_torch_zip

    return open_torch_zip(p, path, wrapper)


# --------------------------------------------------------------------------------------------- reading


class ZeroReader:
    """Reads consolidated tensors piece by piece from the memory-mapped rank files (pages dropped once used)."""

    def __init__(self, layout: ZeroLayout) -> None:
        self.layout = layout
        self._files = MappedFiles("DeepSpeed checkpoint file (changed on disk since it was opened?)")
        self._stor: dict[str, TorchFile] = {}

    def close(self) -> None:
        self._files.close()

    def _entry(self, name: str) -> ZeroTensor:
        try:
            return self.layout.tensors[name]
        except KeyError:
            raise CheckpointError(f"{self.layout.folder}: no tensor named {name!r}") from None

    def _where(self, file: str) -> TorchFile:
        tf = self._stor.get(file)
        if tf is None:  # the storages' byte ranges, from the zip's directory (data.pkl is not unpickled again)
            tf = self._stor[file] = storage_table(file)
        return tf

    def piece(self, t: ZeroTensor, p: Piece) -> torch.Tensor:
        """``p.count`` values of a stored tensor, flat, as a view of the mapped file (a copy if it is strided)."""
        import torch

        start, item = self._where(p.file).locate(p.ref, f"tensor {t.name!r}")
        m = self._files.map(p.file)
        size = self._files.size_now(p.file)
        dt = getattr(torch, p.ref.dtype)
        if p.ref.contiguous:
            a = start + p.start * item
            if a + p.count * item > size:
                raise CheckpointError(f"{p.file}: tensor {t.name!r}: its values end at byte {a + p.count * item}, past "
                                      f"the end of the file ({size} bytes; changed on disk since it was opened?)")
            if p.count == 0:
                return torch.empty(0, dtype=dt)
            return torch.frombuffer(m, dtype=dt, count=p.count, offset=a)
        sstart = start - p.ref.offset * item
        if sstart + p.ref.storage.numel * item > size:
            raise CheckpointError(f"{p.file}: tensor {t.name!r}: its storage runs past the end of the file ({size} bytes)")
        base = torch.frombuffer(m, dtype=dt, count=p.ref.storage.numel, offset=sstart)
        return base.as_strided(p.ref.shape, p.ref.stride, p.ref.offset).reshape(-1)[p.start : p.start + p.count]

    def _release(self, p: Piece) -> None:
        start, item = self._where(p.file).locate(p.ref, "")
        self._files.release(p.file, start + p.start * item, p.count * item)

    def tensor(self, name: str) -> torch.Tensor:
        """The consolidated tensor (its own memory, the dtype zero_to_fp32 gives it)."""
        import torch

        t = self._entry(name)
        out = torch.empty(t.numel, dtype=getattr(torch, t.dtype))
        pos = 0
        for piece in self.iter_flat(name):
            out[pos : pos + piece.numel()] = piece
            pos += piece.numel()
        return out.reshape(t.shape)

    def iter_flat(self, name: str, *, chunk_elems: int = 1 << 24) -> Iterator[torch.Tensor]:
        """The tensor's values in row-major order, in flat pieces of at most ``chunk_elems``, read rank by rank."""
        import torch

        t = self._entry(name)
        dt = getattr(torch, t.dtype)
        for p in t.pieces:
            flat = self.piece(t, p)
            for s in range(0, flat.numel(), chunk_elems):
                v = flat[s : s + chunk_elems]
                yield v if v.dtype == dt else v.to(dt)
            del flat
            self._release(p)
