"""What the window is asked to open: plain frozen records, no Qt (the ``open`` command builds them).

``OpenRequest`` is the whole request (``Source``, ``--compare``, ``--screenshot``); ``Source`` is what the session
loads. Resolving a Source into an index + model spec is one call (``session.resolve``), the seam for
``core.target`` once it exists.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Source:
    """What to open. ``checkpoint=None`` with ``demo=True`` opens the built-in demo."""

    checkpoint: str | None = None
    config: str | None = None
    arch: str | None = None
    model: str | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    wrapper: str | None = None
    key_mapping: dict[str, str] | None = None
    auto_fix: bool = False
    demo: bool = False
    # a PEFT adapter folder: shown on its base (``checkpoint`` = the base folder with weights, or ``config`` alone,
    # or neither: the adapter's base_model_name_or_path), matched as peft loads it
    adapter: str | None = None
    use_cache: bool = True  # read and write the report cache (``open --no-cache``: False)

    def describe(self) -> str:
        if self.adapter:
            base = os.path.basename(os.path.normpath(self.checkpoint or self.config or "")) or "its base_model_name_or_path"
            return f"adapter {os.path.basename(os.path.normpath(self.adapter))} on {base}"
        name = "demo" if self.demo else os.path.basename(os.path.normpath(self.checkpoint or "")) or "?"
        return f"{name} → {self.arch or self.model or 'config architecture'}"


@dataclass(frozen=True)
class OpenRequest:
    """``ckpt-explorer open``: what to load (None: an empty window), a checkpoint B, a PNG to save and exit."""

    source: Source | None = None
    compare: str | None = None  # absolute path
    screenshot: str | None = None
    force: bool = False  # the screenshot may replace an existing file that is not a PNG (never an input)
