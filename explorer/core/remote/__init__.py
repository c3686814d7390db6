"""Checkpoints on a Hugging Face Hub endpoint or any HTTP server, header-only.

``open_source(text)`` is the one entry point a command or the window uses for "a checkpoint the user named": a local
path that exists is opened with :func:`explorer.core.checkpoint.open_checkpoint` (a local path always wins over a
repo id of the same spelling, and the index says so); ``org/name`` (``--revision``, default main),
``hf://org/name[@rev][/subfolder][/file]`` and ``https://.../model.safetensors[.index.json]`` URLs are read
remotely (:mod:`.opening`). ``config_source(text)`` does the same for ``--config``.

Modules: :mod:`.source` (parsing), :mod:`.fetch` (bounded range reads, shared checks), :mod:`.hub`
(huggingface_hub), :mod:`.urls` (fsspec), :mod:`.cache` (headers, listings and refs on disk), :mod:`.opening`.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

from ..checkpoint import CheckpointIndex, open_checkpoint
from ..fmt import safe_text
from .opening import config_of, hub_config, is_remote, local_note, open_remote, remote_note
from .source import HubSource, UrlSource, looks_remote, parse_source

__all__ = ["open_source", "remote_note", "config_source", "parse_source", "is_remote", "config_of", "looks_remote", "HubSource", "UrlSource"]


def open_source(text: str | os.PathLike[str], *, revision: str | None = None, wrapper: str | None = None,
                download: bool = False, progress: Any = None, cancel: Any = None) -> CheckpointIndex:
    """Index the checkpoint ``text`` names, local or remote. Raises CheckpointError with one line naming it."""
    from ..errors import CheckpointError

    src = parse_source(text, revision=revision)
    if src is None:
        idx = open_checkpoint(text, wrapper=wrapper)
        note = local_note(os.fspath(text))
        return dataclasses.replace(idx, notes=(*idx.notes, note)) if note else idx
    if wrapper is not None:
        raise CheckpointError(f"{src.label}: --wrapper applies to torch pickles; a remote safetensors checkpoint has no sub-dicts")
    try:
        return open_remote(src, download=download, progress=progress, cancel=cancel)
    except CheckpointError as e:
        s = os.fspath(text)
        if isinstance(src, HubSource) and not s.startswith("hf://") and "no such repo" in str(e):
            raise CheckpointError(f"{safe_text(s)}: no such local file or folder, and {e}") from None
        raise


def config_source(text: str, *, revision: str | None = None) -> str:
    """``--config``: a local path as given (one that exists always wins), else the config.json of the Hub repo."""
    from ..errors import ConfigError

    src = parse_source(text, revision=revision)
    if src is None:
        return text
    if isinstance(src, UrlSource):
        raise ConfigError(f"{src.label}: --config takes a local file or folder or a Hub repo id, not a URL")
    return hub_config(src)
