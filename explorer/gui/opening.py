"""Opening things: a checkpoint (dialog, path, demo, a Hub repo: ``hub_dialog``), a config for the open checkpoint, a head class, a
reload with changes (the suggested key mapping). Every open goes through the session; ``t_open`` is when the
last one started (the status line's "report in N s")."""
from __future__ import annotations

import os
import time
from typing import Any, Callable

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QDialog, QFileDialog, QWidget

from .session import Session, Source
from .widgets.dialogs import HeadClassDialog
from .widgets.open_dialog import CheckpointDialog


def adapter_folder(path: str) -> str | None:
    """The PEFT adapter folder ``path`` names (the folder, its adapter_config.json or its adapter weights), else None."""
    from ..core.adapter import ADAPTER_CONFIG, ADAPTER_WEIGHTS, is_adapter

    p = os.path.abspath(path)
    if os.path.basename(p) in (ADAPTER_CONFIG, *ADAPTER_WEIGHTS):
        p = os.path.dirname(p)
    return p if is_adapter(p) else None


class Opener:
    def __init__(self, parent: QWidget, session: Session, settings: QSettings,
                 show_error: Callable[[str], None], *, interactive: bool = True) -> None:
        self.parent, self.session, self.settings, self.show_error = parent, session, settings, show_error
        self.interactive = interactive  # False: dialogs are built but not run (tests, screenshots)
        self.t_open = 0.0

    def open_source(self, source: Source) -> None:
        self.t_open = time.perf_counter()
        self.session.open(source)

    def open_path(self, path: str, *, as_checkpoint: bool = False) -> None:
        """Open ``path`` as the checkpoint; a config.json dropped or picked while one is open checks it instead."""
        if not as_checkpoint and os.path.basename(path) == "config.json" and self.session.source is not None:
            self.session.reload(config=path)
            return
        folder = adapter_folder(path)
        if folder is not None:
            self.open_adapter(folder)
            return
        self.open_source(Source(checkpoint=path))

    def open_adapter(self, folder: str) -> None:
        """A PEFT adapter: on the base the window shows (a plain checkpoint, or the open adapter's base), else on
        the adapter's own base_model_name_or_path."""
        src = self.session.current.source if self.session.current is not None else None
        if src is not None and src.adapter is None and src.checkpoint:
            self.open_source(Source(checkpoint=src.checkpoint, arch=src.arch, adapter=folder))
        elif src is not None and src.adapter is not None:
            self.open_source(Source(checkpoint=src.checkpoint, config=src.config, arch=src.arch, adapter=folder))
        else:
            self.open_source(Source(adapter=folder))

    def open_dialog(self) -> CheckpointDialog:
        """The open dialog (a file or a checkpoint folder); opens the choice. Returns the dialog (tests drive it)."""
        dlg = CheckpointDialog(self.parent, str(self.settings.value("lastDir", os.getcwd())))
        dlg.finished.connect(lambda _r: self._opened(dlg.chosen))
        if self.interactive:
            dlg.exec()
        return dlg

    def _opened(self, path: str | None) -> None:
        if path:
            self.settings.setValue("lastDir", os.path.dirname(os.path.normpath(path)))
            self.open_path(path)

    def open_hub_dialog(self, *, show: bool = True):  # -> OpenFromHubDialog
        """File › Open from Hub…: a repo id, revision and subfolder, opened header-only (``show=False``: tests)."""
        from .hub_dialog import OpenFromHubDialog

        dlg = OpenFromHubDialog(self.parent)
        if show and dlg.exec() and dlg.source:
            self.open_path(dlg.source, as_checkpoint=True)
        return dlg

    def open_config_dialog(self) -> None:
        if self.session.source is None:
            self.show_error("Open a checkpoint first, then choose the config to compare it with.")
            return
        path, _ = QFileDialog.getOpenFileName(self.parent, "Open config.json", str(self.settings.value("lastDir", "")),
                                              "config.json (*.json)")
        if path:
            self.session.reload(config=path)

    def open_config(self, path: str) -> None:
        if self.session.source is None:
            self.show_error("Open a checkpoint first, then drop the config to check it against.")
            return
        self.t_open = time.perf_counter()
        self.session.reload(config=path)

    def reload(self, **changes: Any) -> None:
        if self.session.source is not None:
            self.t_open = time.perf_counter()
            self.session.reload(**changes)

    def apply_suggestion(self) -> None:
        rep = self.session.report
        if rep is not None and rep.suggested_key_mapping:
            self.reload(key_mapping=dict(rep.suggested_key_mapping), auto_fix=False)

    def choose_head(self) -> None:
        """The head classes the config's family has (found in a job), then reload with the one chosen."""
        src = self.session.source
        if src is None or src.model:
            self.show_error("Choosing a head class needs a transformers config: open a checkpoint with a config.json first.")
            return
        cfg = src.config or (self.session.report.index.folder if self.session.report else src.checkpoint)

        def job(progress: Any, cancelled: Any) -> Any:
            from ..core.model import head_classes, load_config

            return head_classes(load_config(cfg))

        h = self.session.jobs.start(job, purpose="heads")
        h.returned.connect(self._head_dialog)
        h.errored.connect(self.show_error)

    def _head_dialog(self, names: list[str]) -> None:
        rep = self.session.report
        dlg = HeadClassDialog(list(names), current=rep.arch if rep else None, parent=self.parent)
        if dlg.exec() == QDialog.DialogCode.Accepted and dlg.choice:
            self.reload(arch=dlg.choice)
