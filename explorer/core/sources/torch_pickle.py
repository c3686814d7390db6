"""torch.save pickles, read only through ``torch.load(weights_only=True)``: zip archives on the meta device
(only ``data.pkl`` is inflated, after the zip is checked for bombs) and legacy non-zip pickles (no header, so the
whole file is read). Wrapper dicts (``state_dict``, ``model``, Lightning checkpoints, ...) are flattened and the
state dict inside chosen here.
"""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any, Iterator, Mapping

from ..errors import CheckpointError
from .. import fsio
from ..fsio import MAX_PICKLE_BYTES, MAX_ZIP_RATIO
from .index import WRAPPER_KEYS, CheckpointIndex, TensorInfo, file_stamps, quoted, torch_dtype_name

ZIP_MAGIC = b"PK\x03\x04"  # a zip local file header: torch.save's archives start with one


def is_zip(name: str, head: bytes, size: int) -> bool:
    return head[:4] == ZIP_MAGIC


def is_pickle(name: str, head: bytes, size: int) -> bool:
    """A pickle PROTO opcode first: torch.save(_use_new_zipfile_serialization=False)."""
    return head[:1] == b"\x80"


def open_torch_zip(p: Path, path: str, wrapper: str | None) -> CheckpointIndex:
    return open_torch(p, wrapper=wrapper, legacy=False)


def open_torch_legacy(p: Path, path: str, wrapper: str | None) -> CheckpointIndex:
    return open_torch(p, wrapper=wrapper, legacy=True)


def torch_load(p: Path, *, map_location: str, mmap: bool) -> Any:
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


MAX_WRAPPER_OTHERS = 64  #: a wrapper's non-tensor keys kept in the index (names only)


def choose_state_dict(obj: Any, p: Path, wrapper: str | None) -> tuple[dict[str, Any], str | None, tuple[str, ...]]:
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
        member = quoted(i.filename)
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


def check_legacy_size(p: Path) -> None:
    """Refuse a legacy (non-zip) pickle larger than a share of the memory available: it has no header, torch reads
    every storage into memory, so its size is the memory it takes (a zip checkpoint is read header-only instead)."""
    size, avail = p.stat().st_size, fsio.available_memory()
    if avail is not None and size > fsio.LEGACY_MEMORY_SHARE * avail:
        raise CheckpointError(
            f"{p}: legacy (non-zip) torch format has no header, so reading it takes its whole size in memory "
            f"({size / 2**30:.1f} GiB, over {fsio.LEGACY_MEMORY_SHARE:.0%} of the {avail / 2**30:.1f} GiB available); "
            "re-save it with a current torch.save (zip format) or as safetensors to read it header-only"
        )


def open_torch(p: Path, *, wrapper: str | None, legacy: bool) -> CheckpointIndex:
    if legacy:
        check_legacy_size(p)
    else:
        _check_zip(p)
    # zip pickles: map_location="meta" reads data.pkl only, never the storages
    obj = torch_load(p, map_location="cpu" if legacy else "meta", mmap=False)
    flat, key, candidates = choose_state_dict(obj, p, wrapper)
    tensors: dict[str, TensorInfo] = {}
    for name, t in flat.items():
        tensors[name] = TensorInfo(
            name, tuple(int(d) for d in t.shape), torch_dtype_name(t.dtype), t.numel() * t.element_size(), str(p)
        )
    notes = ()
    if legacy:
        notes = ("legacy (non-zip) torch format: no header, so the whole file was read",)
    # the wrapper's other entries (a "meta" dict, an "epoch"): named, so the reader sees what was left aside
    others = tuple(str(k) for k in obj if str(k) != key and str(k) not in candidates)[:MAX_WRAPPER_OTHERS] if key else ()
    return CheckpointIndex(
        str(p), "torch-legacy" if legacy else "torch-zip", (str(p),), tensors, {}, key, candidates, notes, stamps=file_stamps(p),
        wrapper_others=others,
    )
