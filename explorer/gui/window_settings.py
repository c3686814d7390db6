"""What the window remembers between runs (QSettings): geometry, splitters, histogram options, recent files."""
from __future__ import annotations

import os
from typing import Any, Callable

from PySide6.QtCore import QByteArray, QSettings
from PySide6.QtWidgets import QMenu, QSplitter

from ..core.fmt import safe_text

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


class RecentFiles:
    """File › Recent: the last ``MAX_RECENT`` checkpoints opened, newest first."""

    def __init__(self, settings: QSettings, menu: QMenu, open_path: Callable[[str], Any]) -> None:
        self.settings, self.menu, self.open_path = settings, menu, open_path
        self.fill()

    def paths(self) -> list[str]:
        v = self.settings.value("recent", [])
        return [str(p) for p in ([v] if isinstance(v, str) else (v or []))]

    def add(self, path: str) -> None:
        if not path.startswith(("hf://", "http://", "https://")) and not remote_spelling(path):
            path = os.path.abspath(path)  # a remote source (Hub repo id, hf://, URL) is kept as given
        self.settings.setValue("recent", [path, *(p for p in self.paths() if p != path)][:MAX_RECENT])
        self.fill()

    def fill(self) -> None:
        self.menu.clear()
        rec = self.paths()
        for p in rec:
            a = self.menu.addAction(safe_text(p).replace("&", "&&"))  # shown escaped; "&" is not a mnemonic
            a.triggered.connect(lambda _c=False, p=p: self.open_path(p))
        self.menu.setEnabled(bool(rec))
