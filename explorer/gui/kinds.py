"""How the window groups display kinds (core's ``report.DisplayKind``; the rule ``display_kind`` is core's)."""
from __future__ import annotations

from ..core.report import DisplayKind as Kind
from ..core.report import display_kind as kind_of

LOADED = (Kind.MATCHED, Kind.RENAMED, Kind.TIED, Kind.DTYPE)  # what "N/M loaded" counts
TROUBLE = (Kind.MISSING, Kind.MISMATCHED, Kind.UNEXPECTED)  # drawn on a tinted background, expanded on load
NOT_MODEL_KEYS = (Kind.COMPUTED, Kind.UNEXPECTED, Kind.IGNORED, Kind.IN_CHECKPOINT)  # left out of a roll-up's total of model keys

__all__ = ["LOADED", "NOT_MODEL_KEYS", "TROUBLE", "Kind", "kind_of"]
