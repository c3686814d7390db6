"""Sharded checkpoints: a ``*.index.json`` whose ``weight_map`` names shard files beside it. Each shard is opened by
the file dispatch it is handed (any single-file format), and keys come from the shards, as in from_pretrained.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..errors import CheckpointError
from ..fmt import safe_text
from ..fsio import MAX_INDEX_BYTES, check_regular, load_json
from .index import CheckpointIndex, TensorInfo, name_inside, quoted

OpenFile = Callable[[Path, str, "str | None"], CheckpointIndex]  # (file, path as named, wrapper) -> index


def is_index(name: str) -> bool:
    return name.endswith(".index.json")


def open_sharded(p: Path, *, wrapper: str | None, open_file: OpenFile) -> CheckpointIndex:
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
                f"{p}: invalid index file: weight_map entry {quoted(key)} must be a file name, found {type(s).__name__}"
            )
        by_shard.setdefault(s, []).append(key)
    for s, keys in by_shard.items():
        if not name_inside(p.parent, s):
            raise CheckpointError(
                f"{p}: weight_map entry {quoted(keys[0])} names {quoted(s)}, which is not a file "
                "inside the index's folder; refusing to read it"
            )
        if s.endswith(".index.json"):
            raise CheckpointError(
                f"{p}: weight_map entry {quoted(keys[0])} names another index ({quoted(s)}); shards must be weight files"
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
            raise CheckpointError(f"{p}: index names shard {quoted(s)}, which does not exist in {p.parent}")
        check_regular(sp, what="shard file", error=CheckpointError)
        sub = open_file(sp, str(sp), wrapper)
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
            f"{p.name} lists {len(not_in_shard)} key(s) missing from the shard it names ({quoted(k)} in "
            f"{safe_text(s)}{more}): from_pretrained takes keys from the shards, so they are not in the checkpoint"
        )
    return CheckpointIndex(str(p), fmt, tuple(files), tensors, metadata, notes=tuple(notes), stamps=stamps)
