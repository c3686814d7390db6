"""The front of checkpoint reading: ``open_checkpoint(path)`` -> :class:`CheckpointIndex` (every tensor's name, shape,
dtype, size and file, from headers alone) and :class:`TensorReader` (one tensor's bytes at a time).

The formats live in ``explorer/core/sources/``, one module per format; this module only decides which one opens a
path, from two ordered tables:

- ``FOLDER_SOURCES``: tried in order on a directory (``claims(folder)`` looks at file names only); a folder no
  entry claims is a Hugging Face model folder, whose weights file is picked as ``from_pretrained`` picks it.
- ``FILE_SOURCES``: tried in order on a file, ``sniff(name, first 64 bytes, size)``; the first that says yes opens
  it. The format is decided from the name and the first bytes only (never from a zip signature found elsewhere
  in the file). A ``*.index.json`` is a sharded checkpoint whose shards go through the same table.

A new format is one module under ``sources/`` that fills a ``CheckpointIndex`` plus one row in one of the tables
(see docs/architecture.md, "Where a new thing goes").
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .errors import CheckpointError
from .fsio import confined_to, open_regular
from .jobs import quiet_gc
from .sources import dcp, hf_folder, safetensors, sharded, torch_pickle, zero
from .sources.index import WRAPPER_KEYS, CheckpointIndex, TensorInfo
from .sources.reader import SMALL_COPY_BYTES, TensorReader
from .sources.safetensors import SAFETENSORS_DTYPES, read_safetensors_header, safetensors_dtype_code

__all__ = [
    "CheckpointIndex", "TensorInfo", "TensorReader", "open_checkpoint", "open_reader", "FOLDER_SOURCES",
    "FILE_SOURCES", "FolderSource", "FileSource", "WRAPPER_KEYS", "SAFETENSORS_DTYPES", "SMALL_COPY_BYTES",
    "read_safetensors_header", "safetensors_dtype_code", "resolve_weights_in_dir", "is_checkpoint_folder",
]

#: (file, the path as the user named it, --wrapper) -> index
Opener = Callable[[Path, str, "str | None"], CheckpointIndex]


@dataclass(frozen=True)
class FolderSource:
    """A folder layout: ``claims`` decides from names in the folder, ``open`` indexes it."""

    format: str
    claims: Callable[[Path], bool]
    open: Opener


@dataclass(frozen=True)
class FileSource:
    """A single-file format: ``sniff(name, head, size)`` decides from the name and the first 64 bytes only."""

    format: str
    sniff: Callable[[str, bytes, int], bool]
    open: Opener


FOLDER_SOURCES: tuple[FolderSource, ...] = (
    FolderSource("dcp", dcp.is_dcp_folder, dcp.open_dcp_index),
    FolderSource("deepspeed-zero", zero.is_zero_folder, zero.open_zero_index),
)

FILE_SOURCES: tuple[FileSource, ...] = (
    FileSource("safetensors", safetensors.named_safetensors, safetensors.open_safetensors),
    FileSource("deepspeed-zero", zero.is_rank_file, zero.open_rank_file),
    FileSource("torch-zip", torch_pickle.is_zip, torch_pickle.open_torch_zip),
    FileSource("safetensors", safetensors.looks_like_safetensors, safetensors.open_safetensors),
    FileSource("torch-legacy", torch_pickle.is_pickle, torch_pickle.open_torch_legacy),
)

resolve_weights_in_dir = hf_folder.resolve_weights_in_dir


def open_checkpoint(path: str | os.PathLike[str], *, wrapper: str | None = None) -> CheckpointIndex:
    """Index a checkpoint file or folder from its headers.

    ``wrapper`` selects the sub-dict of a wrapper checkpoint (e.g. ``"state_dict_ema"``). Only regular files are
    read (a FIFO or device is refused). Raises CheckpointError with a one-line message naming the file and the
    problem.
    """
    # headers make ~10 containers per tensor (46k tensors: ~0.5M) and no cycles, yet each allocation burst would
    # trigger collections walking every object of the process (with torch imported, half of opening the MoE:
    # benchmarks/results/headers.md)
    p = Path(path)
    # every file found from here (a folder's weights, an index's shards, rank files) must stay inside the folder
    with quiet_gc(), (confined_to(p) if p.is_dir() else confined_to(p.parent, named=p)):
        return _open_checkpoint(path, wrapper)


def _open_checkpoint(path: str | os.PathLike[str], wrapper: str | None) -> CheckpointIndex:
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"{p}: no such file or directory")
    if p.is_dir():
        for src in FOLDER_SOURCES:
            if src.claims(p):
                return src.open(p, str(path), wrapper)
        p = hf_folder.resolve_weights_in_dir(p)
    if sharded.is_index(p.name):
        return sharded.open_sharded(p, wrapper=wrapper, open_file=_open_file)
    return _open_file(p, str(path), wrapper)


def is_checkpoint_folder(path: str | os.PathLike[str]) -> bool:
    """Whether :func:`open_checkpoint` would open the folder ``path`` as one checkpoint (a folder layout such as DCP,
    or weights ``from_pretrained`` would pick): what an open dialog accepts as a choice instead of entering it.
    Looks at names only (and config.json's ``transformers_weights``)."""
    p = Path(path)
    if not p.is_dir():
        return False
    if any(src.claims(p) for src in FOLDER_SOURCES):
        return True
    try:
        hf_folder.resolve_weights_in_dir(p)
    except (CheckpointError, OSError):
        return False
    return True


def _open_file(p: Path, path: str, wrapper: str | None) -> CheckpointIndex:
    with open_regular(p, what="checkpoint file", error=CheckpointError) as f:
        st = os.fstat(f.fileno())
        head = f.read(64)
    if st.st_size == 0:
        raise CheckpointError(f"{p}: empty file, expected a safetensors or torch checkpoint")
    for src in FILE_SOURCES:
        if src.sniff(p.name, head, st.st_size):
            return src.open(p, path, wrapper)
    raise CheckpointError(
        f"{p}: not a checkpoint: expected a safetensors header, a torch zip archive or a torch pickle "
        f"({st.st_size} bytes, none of these formats)"
    )


def open_reader(source: TensorReader | CheckpointIndex | str | os.PathLike[str]) -> tuple[TensorReader, bool]:
    """A reader for ``source`` and whether the caller owns it (must close it): a TensorReader is used as is."""
    if isinstance(source, TensorReader):
        return source, False
    if isinstance(source, CheckpointIndex):
        return TensorReader(source), True
    return TensorReader(open_checkpoint(source)), True
