"""Screenshot readiness: ``ReadyGate.ready`` fires once a report is shown, the tensor worth showing is selected,
its histogram is drawn and every job a panel asked the gate to wait for has finished.

Panels wait on job handles (``wait_for(handle)``), never on names: ``before_pick=True`` for work that decides
what to show (an init check, a diff), plain for what draws on the selection (an overlay).
"""
from __future__ import annotations

from typing import Any, Callable

from PySide6.QtCore import QObject, QTimer, Signal
from PySide6.QtWidgets import QWidget

from .kinds import LOADED, Kind
from .widgets.histogram import save_png
from .workers import JobHandle


class ReadyGate(QObject):
    ready = Signal()
    loaded = Signal()  # (while waiting) a report arrived; panels may start and wait_for() jobs here

    def __init__(self, session: Any, select: Callable[[str], bool], parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.session, self.select = session, select
        self.waiting = False
        self.pickers: list[Callable[[], bool]] = []  # tried in order before interesting_key()
        self._before_pick: set[JobHandle] = set()
        self._drawing: set[JobHandle] = set()

    def start(self) -> None:
        """Wait for the next report (call before opening it)."""
        self.waiting = True
        self.session.loaded.connect(self._on_loaded)

    def wait_for(self, handle: JobHandle, *, before_pick: bool = False) -> None:
        """Hold ``ready`` until ``handle`` finishes (only while waiting). ``before_pick``: also hold choosing the
        tensor to show."""
        if not self.waiting or not handle.running:
            return
        holds = self._before_pick if before_pick else self._drawing
        holds.add(handle)
        handle.finished.connect(lambda: self._release(handle))

    def settle(self, *, force: bool = False) -> None:
        """Something was drawn (or failed): fire ``ready`` on the next turn if nothing is held. ``force`` drops
        every hold (a load failed: nothing more will come)."""
        if self.waiting and (force or self.session.current is not None):
            if force:
                self._before_pick.clear()
                self._drawing.clear()
            # checked on the next turn: slots connected after ours (an overlay) may still start a job to wait for
            QTimer.singleShot(0, self._emit_ready)

    def _on_loaded(self, _loaded: Any = None) -> None:
        if self.waiting:
            QTimer.singleShot(0, self._after_loaded)  # after every panel has handled the new report

    def _after_loaded(self) -> None:
        self.loaded.emit()
        if not self._before_pick:
            self._pick()

    def _release(self, handle: JobHandle) -> None:
        if handle in self._before_pick:
            self._before_pick.discard(handle)
            if not self._before_pick:
                self._pick()
        elif handle in self._drawing:
            self._drawing.discard(handle)
            self.settle()

    def _pick(self) -> None:
        for pick in self.pickers:
            if pick():
                return
        key = interesting_key(self.session)
        if key is None or not self.select(key):
            self.settle(force=True)

    def _emit_ready(self) -> None:
        if self.waiting and not self._before_pick and not self._drawing:
            self.waiting = False
            self.ready.emit()


def interesting_key(session: Any) -> str | None:
    """A tensor worth showing first. With a model: one the init check flagged, else the largest loaded 2-D
    weight (its fresh-init overlay shows pretrained vs fresh). Without: the largest floating tensor as stored."""
    rep, cur = session.report, session.current
    if rep is None:
        return None
    rows = cur.rows
    flagged = session.untrained
    if rep.spec is not None and flagged:
        hit = [r for r in rows if r.name in flagged and r.kind in LOADED]
        if hit:
            r = max(hit, key=lambda r: (rep.index.tensors[r.name].numel, r.name))
            return r.key or r.name
    best = None
    odd = [(rep.index.tensors[r.name].numel, r.name) for r in rows
           if r.name and r.kind in (Kind.MISMATCHED, Kind.UNEXPECTED, Kind.IN_CHECKPOINT)
           and rep.index.tensors[r.name].is_floating]
    if rep.spec is None and odd and max(odd)[0] >= 256:
        return max(odd)[1]
    for r in rows:
        info = rep.index.tensors.get(r.name) if r.name else None
        if info is not None and info.is_floating and len(info.shape) == 2 and r.kind in LOADED:
            if "embed" in r.name and best is not None:
                continue
            if best is None or info.numel > best[0] and "embed" not in r.name:
                best = (info.numel, r.key or r.name)
    if best is None and odd:
        return max(odd)[1]
    return best[1] if best else None



def save_window_png(widget: QWidget, path: str, *, inputs: list[str], force: bool = False) -> None:
    """Render ``widget`` to a PNG (atomically). Never over an input of the window or anything but a regular file;
    over an existing file that is not a PNG only with ``force``. Raises ExplorerError or OSError."""
    from ..core.fsio import check_output
    from ..core.outputs import is_png

    check_output(path, inputs=inputs, is_ours=is_png, force=force, what="screenshot PNG")
    save_png(widget.grab(), path)
