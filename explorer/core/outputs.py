"""What a command's output may replace: never one of its inputs, never anything but a regular file, and — unless
the user forces it — only a file of the kind the command writes (a PNG for a screenshot, a plan for ``plan -o``).

:func:`explorer.core.fsio.check_output` does the checking; this module says which files are a command's inputs
and what a PNG is, so the CLI, the window and the API agree.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .matching import Report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Files of a checkpoint folder that a command may read: weights, shard indexes, configs, DCP metadata.
_MEMBER_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".distcp", ".pkl", ".index.json")
_MEMBER_NAMES = frozenset({"config.json", "adapter_config.json", ".metadata"})


def starts_with(path: str | os.PathLike[str], prefix: bytes) -> bool:
    """True when ``path`` is a regular file whose first bytes are ``prefix`` (opened non-blocking: a FIFO never
    hangs us; checked on the open descriptor)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return False
    try:
        return stat.S_ISREG(os.fstat(fd).st_mode) and os.read(fd, len(prefix)) == prefix
    except OSError:
        return False
    finally:
        os.close(fd)


def is_png(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a regular file that starts with the PNG signature."""
    return starts_with(path, PNG_SIGNATURE)


def _members(folder: Path) -> list[Path]:
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    return [Path(e.path) for e in entries if e.name in _MEMBER_NAMES or e.name.endswith(_MEMBER_SUFFIXES)]


def named_inputs(*paths: str | os.PathLike[str] | None) -> list[Path]:
    """The files a command may read given the paths the user named (``None`` and inline-JSON values are skipped):
    each named file, and the weights, indexes and configs of its folder (of a named folder: its own). Used before
    anything is read — and when reading failed, so no report says which files were read."""
    out: list[Path] = []
    for raw in paths:
        if raw is None:
            continue
        p = Path(raw).expanduser()
        try:
            is_dir = p.is_dir()
            is_file = not is_dir and p.exists()
        except (OSError, ValueError):  # a name too long or with NUL (inline JSON given to --key-mapping)
            continue
        if is_dir:
            out.extend(_members(p))
        elif is_file:
            out.append(p)
            out.extend(_members(p.parent))
    return out


def report_inputs(rep: Report) -> list[str]:
    """The files a match report was read from: the checkpoint (index and shards) and the model's config.json."""
    idx = rep.index
    out = [idx.path, *idx.files]
    cfg = getattr(rep.spec, "config", None) if rep.spec is not None else None
    if cfg:
        p = Path(cfg)
        out.append(str(p / "config.json" if p.is_dir() else p))
    return out
