"""Plain format conversion: every tensor of a checkpoint (any input format — safetensors, torch pickles, DCP rank
shards) written as Hugging Face safetensors, streamed tensor piece by tensor piece.

No model and no plan: nothing is matched, renamed (unless a key mapping is given), re-initialised or dropped.
Peak memory is one piece of one tensor for every format whose reader streams (safetensors, DCP chunks split
along the first dimension, FSDP's layout); a DCP tensor split along other dimensions is assembled once, so the
bound is the largest tensor. Written into a staging folder beside the output, fsynced, renamed at the end.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from .checkpoint import CheckpointIndex, TensorInfo, TensorReader, open_checkpoint, safetensors_dtype_code
from .errors import ExportError
from .export import ExportCancelled
from .export_options import parse_dtype, parse_size
from .fsio import load_json, write_all
from .staging import check_target, copy_companions, shard_names, staged, weights_mode, write_config, write_shard_index
from .jobs import Progress, is_cancelled

_PIECE_ELEMS = 8 << 20


@dataclass(frozen=True)
class ConvertResult:
    out_dir: str
    files: tuple[str, ...]
    n_tensors: int
    total_bytes: int
    seconds: float
    source_format: str
    notes: tuple[str, ...] = ()
    copied: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "out_dir": self.out_dir, "files": list(self.files), "tensors": self.n_tensors, "bytes": self.total_bytes,
            "seconds": round(self.seconds, 3), "source_format": self.source_format, "notes": list(self.notes),
            "copied": list(self.copied), "clean": True,
        }


@dataclass(frozen=True)
class _Item:
    name: str  # written name
    src: TensorInfo
    dtype: str
    permute: int = 0  # torchtitan q/k rows -> Hugging Face RoPE layout over this many heads (0: none)

    @property
    def nbytes(self) -> int:
        import torch

        return math.prod(self.src.shape) * getattr(torch, self.dtype).itemsize


def convert_checkpoint(
    checkpoint: str | os.PathLike[str] | CheckpointIndex,
    out_dir: str | os.PathLike[str],
    *,
    wrapper: str | None = None,
    dtype: str | None = None,
    max_shard_size: int | str | None = None,
    key_mapping: Mapping[str, str] | None = None,
    config: str | os.PathLike[str] | None = None,
    auto_fix: bool = False,
    rope_permute: bool = True,
    progress: Progress | None = None,
    cancel: Any = None,
) -> ConvertResult:
    """Write every tensor of ``checkpoint`` (its chosen sub-tree / wrapper) into the new folder ``out_dir`` as
    safetensors (``model.safetensors`` or shards + ``model.safetensors.index.json``).

    ``dtype`` casts floating tensors; ``key_mapping`` renames as ``from_pretrained(key_mapping=...)`` would;
    ``config`` (a config.json or its folder, default the checkpoint's folder when it has one) is copied beside
    the weights. ``auto_fix`` (without ``key_mapping``) applies the mapping a report against that config suggests
    (prefix trouble, torchtitan naming). torchtitan q/k weights that the mapping renames to Hugging Face
    ``q_proj`` / ``k_proj`` are permuted to Hugging Face's RoPE layout (``rope_permute``; the head counts come from
    the config). The result is re-opened and checked tensor by tensor (names, shapes, dtypes). Raises
    ExportError (ExportCancelled when cancelled); on failure nothing is left behind."""
    from .keys import apply_key_mapping

    t0 = time.perf_counter()
    dtype = parse_dtype(dtype)
    limit = parse_size(max_shard_size)
    index = checkpoint if isinstance(checkpoint, CheckpointIndex) else open_checkpoint(checkpoint, wrapper=wrapper)
    if not index.tensors:
        raise ExportError(f"{index.path}: no tensors to write")
    cfg_file: Path | None = None
    if config is not None:
        c = Path(config)
        cfg_file = c / "config.json" if c.is_dir() else c
        if not cfg_file.is_file():
            raise ExportError(f"{cfg_file}: no such config file")
    elif (Path(index.folder) / "config.json").is_file():
        cfg_file = Path(index.folder) / "config.json"
    cfg_json = load_json(cfg_file, what="config file", error=ExportError) if cfg_file is not None else None
    if cfg_file is not None and not isinstance(cfg_json, dict):
        raise ExportError(f"{cfg_file}: expected a JSON object")
    notes: list[str] = list(index.notes)
    if auto_fix and key_mapping is None:
        key_mapping = _suggested_mapping(index, cfg_file, notes)
    items: list[_Item] = []
    seen: dict[str, str] = {}
    for n, t in index.tensors.items():
        new = apply_key_mapping(n, key_mapping)
        if new in seen:
            raise ExportError(f"{index.path}: {seen[new]!r} and {n!r} would both be written as {new!r}; the key mapping collides")
        seen[new] = n
        if t.dtype == "float4_e2m1fn_x2":
            raise ExportError(f"{index.path}: tensor {n!r}: packed float4 data cannot be converted")
        out_dt = dtype if dtype and t.is_floating and not t.dtype.startswith("complex") else t.dtype
        items.append(_Item(new, t, out_dt))
    if rope_permute:
        from .naming import rope_permutes

        try:
            perm = rope_permutes({it.src.name: it.name for it in items}, cfg_json, where=f"{index.path}: ")
        except ValueError as e:
            raise ExportError(str(e)) from None
        if perm:
            items = [dataclasses.replace(it, permute=perm.get(it.src.name, 0)) for it in items]
            notes.append(f"{len(perm)} torchtitan q/k weights permuted from Meta's interleaved RoPE rows to Hugging Face's "
                         "layout (as torchtitan's Llama3StateDictAdapter.to_hf)")
    shards: list[list[_Item]] = [[]]
    size = 0
    for it in items:
        if limit and shards[-1] and size + it.nbytes > limit:
            shards.append([])
            size = 0
        shards[-1].append(it)
        size += it.nbytes

    out = Path(out_dir).expanduser().absolute()
    inputs = [Path(f).resolve() for f in index.files] + ([cfg_file.resolve()] if cfg_file is not None else [])
    out = check_target(out, Path(index.folder).resolve(), inputs)  # the export's rules: inputs, devices, links
    if not out.parent.is_dir():
        raise ExportError(f"{out}: parent folder {out.parent} does not exist")

    from .version import __version__

    metadata = {"format": "pt", "explorer_source": str(Path(index.path).absolute()), "explorer_version": __version__,
                "explorer_source_format": index.format}
    if dtype:
        metadata["explorer_dtype"] = dtype
    total = sum(it.nbytes for it in items)
    names = shard_names(len(shards))
    written: list[str] = []
    done = [0]
    mode = weights_mode(index.files)
    with staged(out, notes) as staging:  # removes stale staging folders of killed runs first (noted)
        with TensorReader(index) as reader:
            for fname, shard in zip(names, shards):
                _write_shard(staging / fname, shard, metadata, reader, done, total, progress, cancel, mode)
                written.append(fname)
        if len(shards) > 1:
            written.append(write_shard_index(staging, {"total_size": total},
                                             {it.name: fname for fname, shard in zip(names, shards) for it in shard}))
        if cfg_file is not None:
            cfg = dict(cfg_json or {})
            written.append(write_config(staging, cfg, dtype))
        copied = copy_companions(Path(index.folder), staging, skip=set(inputs), notes=notes)  # links checked
        if is_cancelled(cancel):
            raise ExportCancelled(f"{out}: conversion cancelled; nothing was written")
    _verify(out, items)
    return ConvertResult(str(out), tuple(str(out / n) for n in written), len(items), total,
                         time.perf_counter() - t0, index.format, tuple(notes), tuple(copied))


def _verify(out: Path, items: list[_Item]) -> None:
    """The written folder holds exactly the planned tensors (names, shapes, dtypes), read back from its headers."""
    back = open_checkpoint(out)
    want = {it.name: (tuple(it.src.shape), it.dtype) for it in items}
    got = {n: (tuple(t.shape), t.dtype) for n, t in back.tensors.items()}
    if want != got:
        diff = sorted(set(want.items()) ^ set(got.items()))[:3]
        raise ExportError(f"{out}: the written checkpoint differs from what was planned ({diff})")


def _header(shard: list[_Item], metadata: Mapping[str, str]) -> bytes:
    h: dict[str, Any] = {"__metadata__": dict(metadata)}
    off = 0
    for it in shard:
        h[it.name] = {"dtype": safetensors_dtype_code(it.dtype), "shape": list(it.src.shape), "data_offsets": [off, off + it.nbytes]}
        off += it.nbytes
    raw = json.dumps(h, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw


def _write_shard(path: Path, shard: list[_Item], metadata: Mapping[str, str], reader: TensorReader, done: list[int],
                 total: int, progress: Progress | None, cancel: Any, mode: int) -> None:
    import torch

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        write_all(fd, _header(shard, metadata))
        for it in shard:
            n = 0
            if it.permute:
                from .naming import permute_to_hf

                try:
                    t = permute_to_hf(reader.tensor(it.src.name).reshape(it.src.shape), it.permute)
                except ValueError as e:
                    raise ExportError(f"{it.src.file}: tensor {it.src.name!r}: {e}") from None
                raw = t.to(getattr(torch, it.dtype)).contiguous().view(torch.uint8).numpy()
                write_all(fd, raw)
                n = raw.size
                done[0] += n
                if progress is not None:
                    progress(done[0], total, it.name)
                del t, raw
            elif it.src.numel:
                for piece in reader.iter_chunks(it.src.name, chunk_elems=_PIECE_ELEMS):
                    if it.dtype != it.src.dtype:
                        piece = piece.to(getattr(torch, it.dtype))
                    raw = piece.contiguous().view(torch.uint8).numpy()
                    write_all(fd, raw)
                    n += raw.size
                    done[0] += raw.size
                    if progress is not None:
                        progress(done[0], total, it.name)
                    if is_cancelled(cancel):
                        raise ExportCancelled("conversion cancelled; nothing was written")
            if n != it.nbytes:
                raise ExportError(f"{it.src.file}: tensor {it.src.name!r}: read {n} bytes, expected {it.nbytes}")
        os.fsync(fd)
    finally:
        os.close(fd)


def _suggested_mapping(index: CheckpointIndex, cfg_file: Path | None, notes: list[str]) -> dict[str, str] | None:
    """--auto-fix: the key mapping a report of ``index`` against the config suggests (None when it loads as is)."""
    from .matching import report
    from .model import ModelSpec

    if cfg_file is None:
        raise ExportError(f"{index.path}: --auto-fix needs the model's config (none beside the checkpoint); pass --config")
    rep = report(index, ModelSpec(config=str(cfg_file)))
    if not rep.suggested_key_mapping:
        notes.append("--auto-fix: no key mapping suggested (the names load as they are)" if rep.is_clean else
                     "--auto-fix: no key mapping found that helps; names written unchanged")
        return None
    notes.append(f"--auto-fix: applied the key mapping suggested for {rep.suggestion_reason or 'prefix trouble'}: "
                 + json.dumps(dict(rep.suggested_key_mapping)))
    return dict(rep.suggested_key_mapping)
