"""Errors raised by the core. Every message names the file (or key) and what was expected and found."""
from __future__ import annotations


class ExplorerError(Exception):
    """Base class: a user-facing problem with an input. ``str(err)`` is a complete one-line message."""


class CheckpointError(ExplorerError):
    """A checkpoint file or directory cannot be read."""


class ConfigError(ExplorerError):
    """A model config, architecture or class path cannot be used."""


class PlanError(ExplorerError):
    """A plan file is invalid or does not fit the checkpoint/model."""


class ExportError(ExplorerError):
    """A patched checkpoint cannot be written."""


class Cancelled(ExplorerError):
    """A long job (statistics, init check, diff, export) was stopped by its ``cancel`` callback."""


class PatternTooSlow(ExplorerError):
    """A user's pattern (a regex rule, a key mapping, the window's filter) did not finish within its time budget."""


def one_line(e: BaseException) -> str:
    """The first line of an exception's message (its type name if empty), at most 300 characters: for messages
    that quote what a library raised. A first line that only introduces the next ("Validation error for field
    'hidden_size':", huggingface_hub's strict dataclasses) takes the next line with it."""
    s = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    if not s:
        return type(e).__name__
    text = s[0]
    if text.endswith(":") and len(s) > 1:
        text = f"{text} {s[1]}"
    return text if len(text) <= 300 else text[:299] + "…"
