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
    that quote what a library raised."""
    s = str(e).strip().splitlines()
    return (s[0] if s else type(e).__name__)[:300]
