"""What the window remembers between runs (QSettings): geometry, splitters, histogram options, recent files."""
from __future__ import annotations

import json
import os
from dataclasses import replace
from typing import Any, Callable

from PySide6.QtCore import QByteArray, QSettings
from PySide6.QtWidgets import QMenu, QSplitter

from ..core.fmt import safe_text
from .request import Source

MAX_RECENT = 10


def restore(settings: QSettings, window: Any, splitters: dict[str, QSplitter], histogram: Any) -> set[str]:
    """Restore geometry, splitter states, log-y and bins. Returns the names of the splitters restored."""
    g = settings.value("geometry")
    if isinstance(g, (QByteArray, bytes)):
        window.restoreGeometry(g)
    restored = set()
    for name, sp in splitters.items():
        s = settings.value(name)
        if isinstance(s, (QByteArray, bytes)) and sp.restoreState(s):
            restored.add(name)
    histogram.log_y.setChecked(str(settings.value("logY", "false")).lower() == "true")
    try:
        histogram.bins.setValue(int(settings.value("bins", 256)))
    except (TypeError, ValueError):
        pass
    return restored


def save(settings: QSettings, window: Any, splitters: dict[str, QSplitter], histogram: Any) -> None:
    settings.setValue("geometry", window.saveGeometry())
    for name, sp in splitters.items():
        settings.setValue(name, sp.saveState())
    settings.setValue("logY", histogram.log_y.isChecked())
    settings.setValue("bins", histogram.bins.value())
    settings.sync()


def remote_spelling(path: str) -> bool:
    """A Hub repo id (``org/name``) that is not a local path: remembered as typed, not made absolute."""
    from ..core.errors import ExplorerError
    from ..core.remote import parse_source

    try:
        return parse_source(path) is not None
    except ExplorerError:
        return False


def _local_abs(path: str) -> str:
    """A local path made absolute; a remote source (Hub repo id, hf://, URL) kept as given."""
    if path.startswith(("hf://", "http://", "https://")) or remote_spelling(path):
        return path
    return os.path.abspath(path)


class RecentFiles:
    """File › Recent: the last ``MAX_RECENT`` checkpoints opened, newest first, each with how it was opened
    (``--config``, ``--arch``, ``--model``, ``--model-kwargs``, ``--wrapper``, the key mapping): choosing one opens
    it the same way again. Stored as JSON in the settings (read back as data: anything malformed is skipped)."""

    KEY = "recentSources"

    def __init__(self, settings: QSettings, menu: QMenu, open_source: Callable[[Source], Any]) -> None:
        self.settings, self.menu, self.open_source = settings, menu, open_source
        self.fill()

    def sources(self) -> list[Source]:
        raw = self.settings.value(self.KEY, "")
        try:
            recs = json.loads(raw) if isinstance(raw, str) and raw else []
        except ValueError:
            recs = []
        if not recs:  # written by an older version: paths only
            v = self.settings.value("recent", [])
            recs = [{"checkpoint": str(p)} for p in ([v] if isinstance(v, str) else (v or []))]
        out = []
        for r in recs if isinstance(recs, list) else []:
            src = _source(r)
            if src is not None:
                out.append(src)
        return out[:MAX_RECENT]

    def paths(self) -> list[str]:
        return [s.checkpoint for s in self.sources() if s.checkpoint]

    def add(self, source: Source) -> None:
        if not source.checkpoint or source.demo:
            return
        src = replace(source, checkpoint=_local_abs(source.checkpoint),
                      config=_local_abs(source.config) if source.config else None, auto_fix=False)
        rest = [s for s in self.sources() if s.checkpoint != src.checkpoint]  # the latest way it was opened wins
        self.settings.setValue(self.KEY, json.dumps([_record(s) for s in [src, *rest][:MAX_RECENT]]))
        self.fill()

    def fill(self) -> None:
        self.menu.clear()
        rec = self.sources()
        for src in rec:
            a = self.menu.addAction(label(src).replace("&", "&&"))  # shown escaped; "&" is not a mnemonic
            a.triggered.connect(lambda _c=False, src=src: self.open_source(src))
        self.menu.setEnabled(bool(rec))


def label(src: Source) -> str:
    """``/path/ckpt · --arch BertForMaskedLM · --config /path`` (escaped: paths and names come from files)."""
    parts = [safe_text(src.checkpoint)]
    for opt, v in (("--config", src.config), ("--arch", src.arch), ("--model", src.model), ("--wrapper", src.wrapper)):
        if v:
            parts.append(f"{opt} {safe_text(v)}")
    if src.model_kwargs:
        parts.append("--model-kwargs …")
    if src.key_mapping:
        parts.append("--key-mapping …")
    return " · ".join(parts)


_FIELDS = ("checkpoint", "config", "arch", "model", "wrapper")


def _record(src: Source) -> dict[str, Any]:
    rec: dict[str, Any] = {k: getattr(src, k) for k in _FIELDS if getattr(src, k)}
    if src.model_kwargs:
        rec["model_kwargs"] = dict(src.model_kwargs)
    if src.key_mapping:
        rec["key_mapping"] = dict(src.key_mapping)
    return rec


def _source(r: Any) -> Source | None:
    """A Source from a stored record, or None when it is not one (types checked: the settings file is data)."""
    if not isinstance(r, dict) or not isinstance(r.get("checkpoint"), str) or not r["checkpoint"]:
        return None
    kw: dict[str, Any] = {}
    for k in _FIELDS:
        v = r.get(k)
        if v is not None and not isinstance(v, str):
            return None
        kw[k] = v or None
    for k in ("model_kwargs", "key_mapping"):
        v = r.get(k)
        if v is not None and not isinstance(v, dict):
            return None
        if v and k == "key_mapping" and not all(isinstance(a, str) and isinstance(b, str) for a, b in v.items()):
            return None
        kw[k] = dict(v) if v else ({} if k == "model_kwargs" else None)
    return Source(**kw)
