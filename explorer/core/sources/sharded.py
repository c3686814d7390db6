"""Sharded checkpoints: a ``*.index.json`` whose ``weight_map`` names shard files beside it. Each shard is opened by
the file dispatch it is handed (any single-file format), and keys come from the shards, as in from_pretrained.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

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

    def shard(s: str) -> CheckpointIndex:
        sp = p.parent / s
        if not sp.exists():
            raise CheckpointError(f"{p}: index names shard {quoted(s)}, which does not exist in {p.parent}")
        check_regular(sp, what="shard file", error=CheckpointError)
        return open_file(sp, str(sp), wrapper)

    return assemble_sharded(p, idx, shard)


def sharded_names(p: Path | str, idx: Any) -> list[str]:
    """The shard names a parsed index's ``weight_map`` names (sorted), each checked: a name that stays inside the
    index's folder, not another index. ``p`` names the index in errors (a path, or a remote file's label)."""
    return sorted(_by_shard(p, idx))


def _by_shard(p: Path | str, idx: Any) -> dict[str, list[str]]:
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
        if not name_inside(_FOLDER, s):  # textual: the same answer for a local folder and a remote one
            raise CheckpointError(
                f"{p}: weight_map entry {quoted(keys[0])} names {quoted(s)}, which is not a file "
                "inside the index's folder; refusing to read it"
            )
        if s.endswith(".index.json"):
            raise CheckpointError(
                f"{p}: weight_map entry {quoted(keys[0])} names another index ({quoted(s)}); shards must be weight files"
            )
    return by_shard


_FOLDER = Path("/index-folder")


def assemble_sharded(p: Path | str, idx: Any, open_shard: Callable[[str], CheckpointIndex]) -> CheckpointIndex:
    """The index of a sharded checkpoint from its parsed index file ``idx`` and ``open_shard(name)`` -> that shard's
    index (a local file, or a remote header): keys come from the shards, as in from_pretrained; the index's
    metadata; the notes transformers' loading would give."""
    by_shard = _by_shard(p, idx)
    name = Path(str(p)).name
    tensors: dict[str, TensorInfo] = {}
    files = []
    metadata: dict[str, str] = {}
    stamps: dict[str, tuple[int, int]] = {}
    notes: list[str] = []
    not_in_shard: list[tuple[str, str]] = []
    fmt = "safetensors-sharded"
    for s in sorted(by_shard):
        sub = open_shard(s)
        if sub.format != "safetensors":
            fmt = "torch-sharded"
        files.append(sub.path)
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
        notes.append(f"{name} has no \"metadata\" object: transformers' from_pretrained fails on such an index (KeyError 'metadata')")
    if not_in_shard:
        k, s = not_in_shard[0]
        more = f" and {len(not_in_shard) - 1} more" if len(not_in_shard) > 1 else ""
        notes.append(
            f"{name} lists {len(not_in_shard)} key(s) missing from the shard it names ({quoted(k)} in "
            f"{safe_text(s)}{more}): from_pretrained takes keys from the shards, so they are not in the checkpoint"
        )
    return CheckpointIndex(str(p), fmt, tuple(files), tensors, metadata, notes=tuple(notes), stamps=stamps)
