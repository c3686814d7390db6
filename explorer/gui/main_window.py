"""The main window: module tree | tabs (tensor table and the panels of ``panels.PANELS``) over the details panel,
with a summary and a filter bar. Layout, menus and selection sync; everything else lives in its own module
(``menus``, ``drops``, ``screenshot``, ``window_settings``, ``widgets/``, ``models/``).

The window builds every panel with a ``PanelHost`` (the session and a few typed hooks) and asks them, through
the ``Panel`` protocol, for their menus, badges, context-menu entries, drop meanings and capabilities (the
table's Plan column, the "untrained?" chip). The open tab sets the session's overlay choice (``Panel.overlay``);
who draws the histogram overlay follows from that state.
"""
from __future__ import annotations

import time
from typing import Any, Sequence

from PySide6.QtCore import QItemSelectionModel, QModelIndex, QSettings, Qt, QTimer
from PySide6.QtWidgets import (
    QAbstractItemView, QLabel, QMainWindow, QMenu, QMessageBox, QProgressBar, QSplitter,
    QTabWidget, QVBoxLayout, QWidget,
)

from ..core.fmt import safe_text
from . import drops, help as help_text, timing, window_settings
from .init_marks import InitMarks
from .menus import MenuSlots, build_menus
from .models.entries import TreeItem
from .models.filtering import Filter, FilterProxy
from .models.table_model import TensorTableModel
from .models.tree_model import ModuleTreeModel
from .opening import Opener
from .panels import PANELS, Capability, Panel, PanelHost
from .panels.details import DetailsPanel, Selection, selection_for_item, selection_for_row
from .screenshot import ReadyGate, save_window_png
from .session import Loaded, Overlay, Session, Source
from .widgets import summary
from .widgets.badges import badge_delegate
from .widgets.dialogs import rich_box
from .widgets.filter_bar import FilterBar
from .widgets.class_banner import ClassBanner
from .widgets.message_bar import MessageBar
from .widgets.shortcuts import WindowShortcutsFirst
from .widgets.table_view import fit_key_column, fit_shape_column, fit_status_column, make_table_view, select_rows
from .widgets.tree_view import TreeSplit, expand_items, expand_trouble, make_tree_view, size_tree_columns


class MainWindow(QMainWindow):
    def __init__(self, *, settings: QSettings | None = None, interactive: bool = True,
                 panels: Sequence[type[Panel]] = PANELS) -> None:
        super().__init__()
        self.settings = settings or QSettings("ckpt-explorer", "ckpt-explorer")
        self.interactive = interactive  # False: errors go to the message bar only (screenshots, scripts)
        self.persist = interactive  # save geometry/splitters on close
        self.session = s = Session(self)
        self._syncing = False
        self.previewing = False  # the tensors shown are a checkpoint-only preview (Session.previewed)
        self.tree_split: TreeSplit | None = None
        self._good_filter = Filter()  # the last filter that ran (a too-slow regex falls back to it)
        self.errors: list[str] = []
        self.setWindowTitle("Checkpoint Explorer")
        self.setAcceptDrops(True)
        self.resize(1400, 860)
        # an explicit minimum: the layout's own (the tree's names in full + the right side) does not hold the window
        # wider than the screen; when narrower, the tree's names give way (``TreeSplit.fit_minimum`` on resize)
        self.setMinimumSize(820, 560)

        # models adapt the session
        self.tree_model = ModuleTreeModel(self)
        self.tree_proxy = FilterProxy(self, tree=True)
        self.tree_proxy.setSourceModel(self.tree_model)
        self.opener = o = Opener(self, s, self.settings, self.show_error, interactive=interactive)
        self.open_source, self.open_path, self.open_config, self.reload = o.open_source, o.open_path, o.open_config, o.reload
        self.table_model = TensorTableModel(self, plan_badge=self._plan_text)
        self.table_proxy = FilterProxy(self)
        self.table_proxy.setSourceModel(self.table_model)
        self.tree = make_tree_view(self.tree_proxy)
        badge_delegate(self.tree, 0).providers.append(self._tree_badges)
        self.table, self._key_delegate = make_table_view(self.table_proxy)

        self.details = DetailsPanel(s)
        self.ready_gate = ReadyGate(s, self.select_key, self)
        self.ready = self.ready_gate.ready  # (screenshots) a report is shown and its first histogram drawn
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.tabs.addTab(self.table, "Tensors")
        host = PanelHost(session=s, details=self.details, ready=self.ready_gate, select=self.select_tensor,
                         show_selection=self.show_selection, show_error=self.show_error, open_source=self.open_source,
                         raise_panel=self.tabs.setCurrentWidget, interactive=interactive, inputs=s.input_files)
        self.panels: list[Panel] = [cls(host) for cls in panels]
        for p in self.panels:
            self.tabs.addTab(p, p.title)
        self._build_layout()
        self.menu_actions = build_menus(self, MenuSlots(
            open_dialog=o.open_dialog, open_config_dialog=o.open_config_dialog, open_hub_dialog=o.open_hub_dialog,
            choose_head=o.choose_head,
            open_demo=lambda: self.open_source(Source(demo=True)), open_source=self.open_source, reload=self.reload,
            quit=self.close, find=self.filter_bar.focus, clear_filter=self.clear_filter,
            expand_trouble=self.expand_trouble, collapse_all=self.tree.collapseAll, show_shortcuts=self.show_shortcuts,
            show_legend=self.show_legend, show_about=self.show_about), self.panels, self.settings)
        self.recent_menu, self.recent = self.menu_actions.recent_menu, self.menu_actions.recent
        self.table.setColumnHidden(TensorTableModel.PLAN, True)  # until the plan has something to show
        self.init_marks = InitMarks(s, self.tree, self.table, self.filter_bar, can_check=self.has(Capability.INIT_CHECK),
                                    apply_filter=self.apply_filter)
        badge_delegate(self.table, TensorTableModel.STATUS).providers.append(self.init_marks.badge)

        s.loadingStarted.connect(self._on_loading)
        s.loaded.connect(self._on_loaded)
        s.previewed.connect(self._on_preview)
        s.loadFailed.connect(self._on_load_failed)
        s.loadStatus.connect(lambda text: self.status_label.setText(f"loading… {safe_text(text)}"))
        s.busyChanged.connect(self.busy.setVisible)
        s.planChanged.connect(self._on_plan_changed)
        self.tree.selectionModel().currentChanged.connect(self._on_tree_current)
        self.table.selectionModel().currentChanged.connect(self._on_table_current)
        self.details.statsReady.connect(lambda _s: self.ready_gate.settle())
        self.details.statsFailed.connect(lambda _m: self.ready_gate.settle())
        self.tabs.currentChanged.connect(self._on_tab_changed)
        self.filter_bar.changed.connect(self.apply_filter)
        self.summary_box.suggest_btn.clicked.connect(o.apply_suggestion)
        self.search.installEventFilter(WindowShortcutsFirst(self))  # Ctrl+Z, Ctrl+E, ... work from the filter box
        self._restore_settings()

    def panel(self, cls: type[Panel]) -> Any:
        """The panel of type ``cls`` (KeyError when this window was built without it)."""
        for p in self.panels:
            if isinstance(p, cls):
                return p
        raise KeyError(cls.__name__)

    def finish_startup(self) -> None:
        """What the first paint does without (pyqtgraph and the details histogram's plot, ~0.2 s): built once the
        window has shown its first checkpoint (tensors or colours), its load failed, or it opened empty. Idempotent;
        anything that needs the plot earlier builds it on demand."""
        self.details.histogram.ensure_plot()

    def _finish_startup_soon(self) -> None:
        if not self.details.histogram.built:
            QTimer.singleShot(0, self.finish_startup)  # after this paint

    def has(self, capability: Capability) -> bool:
        """Whether some panel of this window has ``capability`` (its column or chip is shown)."""
        return any(capability in p.capabilities for p in self.panels)

    # ------------------------------------------------------------------ layout
    def _build_layout(self) -> None:
        for view in (self.tree, self.table):
            view.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
            view.customContextMenuRequested.connect(lambda pos, v=view: self._on_context_menu(v, pos))
        self.right = QSplitter(Qt.Orientation.Vertical)
        self.right.addWidget(self.tabs)
        self.right.addWidget(self.details)
        self.right.setStretchFactor(0, 1)
        self.right.setStretchFactor(1, 1)
        # no scroll area around the right side: its minimum is what its content needs (TreeSplit.right_needs), so
        # it never scrolls sideways and never grows past the window; the tree's names give way instead
        self.right.setMinimumWidth(200)
        self.split = QSplitter(Qt.Orientation.Horizontal)
        self.split.setChildrenCollapsible(False)
        self.split.addWidget(self.tree)
        self.split.addWidget(self.right)
        self.split.setStretchFactor(0, 1)
        self.split.setStretchFactor(1, 1)
        self.split.setSizes([690, 750])  # the tree carries the roll-ups; the table's two names need the rest
        self.tree_split = TreeSplit(self.split, self.tree)  # fits the tree to its names unless the user moved it
        self.right.setSizes([400, 380])

        self.message_bar = MessageBar()
        self.message_label = self.message_bar.label
        self.class_banner = ClassBanner()  # --arch typo / another model family: say so, offer the config's classes
        self.class_banner.chosen.connect(lambda arch: self.reload(arch=arch))
        self.summary_box = summary.SummaryBox()
        self.summary_label = self.summary_box.label
        self.suggest_btn = self.summary_box.suggest_btn
        self.filter_bar = fb = FilterBar()
        self.search, self.mode, self.kind_buttons = fb.search, fb.mode, fb.kind_buttons
        self.untrained_button, self.match_label = fb.untrained_button, fb.match_label
        central = QWidget()
        lay = QVBoxLayout(central)
        lay.setContentsMargins(6, 4, 6, 2)
        lay.setSpacing(4)
        for w in (self.message_bar, self.class_banner, self.summary_box, fb):
            lay.addWidget(w)
        lay.addWidget(self.split, 1)
        self.setCentralWidget(central)

        self.busy = QProgressBar()
        self.busy.setRange(0, 0)
        self.busy.setMaximumWidth(160)
        self.busy.setFixedHeight(12)
        self.busy.hide()
        self.status_label = QLabel("")
        self.statusBar().addWidget(self.status_label, 1)
        self.statusBar().addPermanentWidget(self.busy)

    # ------------------------------------------------------------------ help
    def shortcuts(self) -> list[tuple[str, str, str]]:
        return help_text.shortcuts(self.menuBar())

    def legend_html(self) -> str:
        return help_text.legend_html()

    def show_shortcuts(self) -> QMessageBox:
        return rich_box(self, "Keyboard shortcuts", help_text.shortcuts_html(self.menuBar()), show=self.interactive)

    def show_about(self) -> QMessageBox:
        return rich_box(self, "About Checkpoint Explorer", help_text.about_html(self.menuBar()), show=self.interactive)

    def show_legend(self) -> QMessageBox:
        return rich_box(self, "Legend", help_text.legend_html(), show=self.interactive)

    # ------------------------------------------------------------------ session events
    def _on_loading(self, what: str) -> None:
        self.summary_label.setText(summary.loading_html(what))
        self.status_label.setText("loading…")

    def _show_records(self, loaded: Loaded, *, fit_split: bool = True) -> None:
        rep = loaded.report
        self.tree_model.set_root(loaded.tree, loaded.tree_index)
        size_tree_columns(self.tree)
        if fit_split:  # (the splitter only ever widens the tree: a preview's roll-up text must not widen it)
            self.tree_split.fit(self.width())
        self.table_model.set_rows(loaded.rows, loaded.table_index)
        fit_shape_column(self.table, self.table_model)
        fit_key_column(self.table, self.table_model)
        fit_status_column(self.table, self.table_model, badge=bool(self.session.init_results))
        # no model: no model keys (every row would say "—"); no plan entry: no Plan column
        self.table.setColumnHidden(TensorTableModel.KEY, not rep.has_model)
        self._show_plan_column()

    def _on_preview(self, loaded: Loaded) -> None:
        """The checkpoint's tensors from its headers while torch is imported and the report made (a cache miss):
        shown as on disk, not selectable until the report replaces them."""
        self.previewing = True
        self._show_records(loaded, fit_split=False)
        self.filter_bar.set_counts(loaded.tree.counts)
        self.apply_filter()
        rep = loaded.report
        n, nf = len(rep.index.tensors), len(rep.index.files)
        self.summary_label.setText(summary.matching_html(rep.index))
        self.status_label.setText(f"{n:,} on-disk tensor{'s' if n != 1 else ''} in {nf} file{'s' if nf != 1 else ''} "
                                  "read from the headers · importing torch/transformers and matching…")
        timing.mark("preview", self)
        self._finish_startup_soon()

    def _on_loaded(self, loaded: Loaded) -> None:
        rep = loaded.report
        self.previewing = False
        self.message_bar.hide()
        self.class_banner.show_for(loaded)
        self._show_records(loaded)
        self._show_summary(loaded)
        self.apply_filter()
        self.expand_trouble()
        if loaded.source.checkpoint and not loaded.source.demo:
            self.recent.add(loaded.source)  # with its --config / --arch / --model, to be opened the same way
        dt = time.perf_counter() - self.opener.t_open if self.opener.t_open else 0.0
        name = summary.display_name(rep.index)
        self.setWindowTitle(f"{safe_text(name)} → {safe_text(rep.arch or 'checkpoint only')} — Checkpoint Explorer")
        from ..core.remote import remote_note

        remote = remote_note(rep.index)  # where a Hub repo's / URL's headers came from and what they cost
        n, nf = len(rep.index.tensors), len(rep.index.files)
        self.status_label.setText(f"{n:,} on-disk tensor{'s' if n != 1 else ''} in {nf} file{'s' if nf != 1 else ''} · "
                                  f"{rep.index.format} · {loaded.timing_text() or f'report in {dt:.2f} s'}"
                                  + (f" · {safe_text(remote)}" if remote else ""))
        self.status_label.setToolTip("\n".join(safe_text(n) for n in rep.index.notes))  # what the reader found
        timing.mark("colours", self)
        self._finish_startup_soon()

    def _show_summary(self, loaded: Loaded) -> None:
        self.filter_bar.set_counts(loaded.tree.counts)
        self.summary_box.show_loaded(loaded)

    def _on_load_failed(self, msg: str) -> None:
        self.status_label.setText("load failed")
        if self.previewing:  # the tensors of a checkpoint whose report failed: show the last report again
            self.previewing = False
            if self.session.current is not None:
                self._show_records(self.session.current)
                self.apply_filter()
        if self.session.current is None:
            self.summary_label.setText(summary.WELCOME)
        else:
            self._show_summary(self.session.current)
        self.show_error(msg)
        self.ready_gate.settle(force=True)
        self._finish_startup_soon()

    def show_error(self, msg: str) -> None:
        """Message bar always; a dialog too when interactive. The window stays usable. ``errors`` keeps every
        message shown (a screenshot run prints them on stderr)."""
        self.errors.append(msg)
        shown = self.message_bar.show_message(msg)  # control/bidi characters from a file name or a header escaped
        if self.interactive:
            QMessageBox.warning(self, "Checkpoint Explorer", shown)

    def _on_plan_changed(self, _plan: Any) -> None:
        self.table_model.plan_changed()
        self._show_plan_column()
        self.tree.viewport().update()

    def _show_plan_column(self) -> None:
        """The Plan column shows while the plan has something to say (a rule, a default reinit or drop): an
        empty column would only take the names' room."""
        plan = self.session.plan
        self.table.setColumnHidden(TensorTableModel.PLAN, not (
            self.has(Capability.TABLE_BADGES) and plan is not None and not self.previewing
            and bool(plan.rules or plan.default_reinit or plan.default_drop)))

    def _plan_text(self, key: str) -> str:
        if not self.session.plan:
            return ""
        return " ".join(t for p in self.panels if Capability.TABLE_BADGES in p.capabilities
                        for t, _c in p.badges(key, True) if t)

    def _tree_badges(self, index: QModelIndex) -> list[tuple[str, str]]:
        """Badges right of a tree name: every panel's (the plan's), then the init check's."""
        if not index.isValid():
            return []
        it = self.tree_proxy.mapToSource(index).internalPointer()
        return [b for p in self.panels for b in p.badges(it.path, it.is_param)] + self.init_marks.badge(index)

    # ------------------------------------------------------------------ filtering
    def current_filter(self) -> Filter:
        return self.filter_bar.current_filter()

    def apply_filter(self) -> None:
        from ..core.errors import ExplorerError, PatternTooSlow

        flt = self.current_filter()
        try:
            flt.matcher()
            self.tree_proxy.set_filter(flt)  # vectorised masks, regexes under a time budget; see filtering.py
            n_rows = self.table_proxy.set_filter(flt)
        except Exception as e:  # a half-typed or catastrophic regex: say so, keep the last filter
            slow = isinstance(e, PatternTooSlow)
            self.filter_bar.show_error("regex too slow" if slow else str(e) if isinstance(e, ExplorerError)
                                       else f"bad regex: {e}", tip=str(e))
            if slow:  # the tree may already show the new filter: both views go back to the last one that ran
                self.tree_proxy.set_filter(self._good_filter)
                self.table_proxy.set_filter(self._good_filter)
            return
        self._good_filter = flt
        tm = self.table_model
        keys = tm.shown_keys() if flt.active else None
        with_key = sum(1 for i in range(n_rows) if tm.row(i).key) if flt.active else 0
        self.filter_bar.show_count(n_rows if flt.active else None, len(tm.rows),
                                   keys=keys if keys is not None and keys < with_key else None, tip=tm.rows_note())
        if flt.active:
            expand_items(self.tree, self.tree_proxy.first_matches(200))

    def clear_filter(self) -> None:
        self.filter_bar.clear()

    def expand_trouble(self, limit: int = 300) -> None:
        """Expand the top of the tree, every branch with a missing/mismatched/unexpected entry, "(not in model)"."""
        expand_trouble(self.tree, limit)

    # ------------------------------------------------------------------ selection sync
    def select_key(self, key: str) -> bool:
        """Select a model key, module path or on-disk name in the tree (and so in the table). True if found."""
        src = self.tree_model.index_for_key(key)
        if not src.isValid():
            r = self.table_model.row_for_name(key)
            if r is None:
                return False
            idx = self.table_proxy.mapFromSource(self.table_model.index(r, 0))
            self.table.setCurrentIndex(idx)
            return idx.isValid()
        idx = self.tree_proxy.mapFromSource(src)
        if not idx.isValid():
            return False
        self.tree.setCurrentIndex(idx)
        self.tree.scrollTo(idx)
        return True

    def select_tensor(self, name: str) -> bool:
        """Select an on-disk tensor (or model key / module path) as if clicked in the tree or table — what the
        panels call for their rows. A tensor a filter hides is still shown in the details panel. Reselecting what
        is shown redraws it (the overlay choice may have changed). True if found."""
        sel = self.details.selection
        if sel is not None and (sel.title == name or sel.names == (name,)):
            self.details.redraw()
            return True
        if self.select_key(name):
            return True
        rep = self.session.report
        r = self.table_model.row_for_name(name)
        if rep is None or r is None:
            return False
        self.show_selection(selection_for_row(rep, self.table_model.row(r)))
        return True

    def show_selection(self, sel: Selection) -> None:
        """Show a selection that has no row in the tree or table (e.g. a tensor only in checkpoint B)."""
        self._syncing = True
        try:
            self.tree.selectionModel().clearSelection()
            self.table.selectionModel().clearSelection()
        finally:
            self._syncing = False
        self._set_selection(sel)

    def _set_selection(self, sel: Selection) -> None:
        self.session.select(sel)
        if not sel.names:
            self.ready_gate.settle()

    def _on_tree_current(self, cur: QModelIndex, _prev: QModelIndex) -> None:
        if self._syncing or self.previewing or not cur.isValid() or self.session.report is None:
            return
        it: TreeItem = self.tree_proxy.mapToSource(cur).internalPointer()
        tm = self.table_model
        if it.is_param:
            rows = tm.rows_for_key(it.path) or [tm.row_for_name(it.path)]
        else:
            rows = [tm.row_for_name(c.path) for c in it.children] if it.group else tm.rows_under(it.path)
        self._syncing = True
        try:
            select_rows(self.table, [r for r in rows if r is not None])
        finally:
            self._syncing = False
        self._set_selection(selection_for_item(self.session.report, it))

    def _on_table_current(self, cur: QModelIndex, _prev: QModelIndex) -> None:
        if self._syncing or self.previewing or not cur.isValid() or self.session.report is None:
            return
        row = self.table_model.row(self.table_proxy.mapToSource(cur).row())
        self._syncing = True
        try:
            src = self.tree_model.index_for_key(row.target)
            idx = self.tree_proxy.mapFromSource(src) if src.isValid() else QModelIndex()
            if idx.isValid():
                self.tree.selectionModel().setCurrentIndex(
                    idx, QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows)
                self.tree.scrollTo(idx)
            else:
                self.tree.selectionModel().clearSelection()
        finally:
            self._syncing = False
        self._set_selection(selection_for_row(self.session.report, row))

    def _on_tab_changed(self, _i: int) -> None:
        # the open tab chooses the histogram's overlay (fresh init, or checkpoint B on the Compare tab)
        w = self.tabs.currentWidget()
        self.session.set_overlay((w.overlay if isinstance(w, Panel) else None) or Overlay.FRESH_INIT)
        if self.details.selection is not None:
            self.details.redraw()

    # ------------------------------------------------------------------ context menus
    def context_paths(self, view: QAbstractItemView, index: QModelIndex) -> list[str]:
        """Keys/module paths of the clicked row (and the other selected rows in the table)."""
        from .models.tree_model import ITEM_ROLE, KEY_ROLE

        indexes = [index]
        if view is self.table:
            sel = list(view.selectionModel().selectedRows())
            if index in sel or any(i.row() == index.row() for i in sel):
                indexes = sel
        paths: list[str] = []
        for i in indexes:
            item, key = i.data(ITEM_ROLE), i.data(KEY_ROLE)
            if view is self.tree and isinstance(item, TreeItem) and item.group:
                continue  # a grouping row: the "(not in model)" branch
            if isinstance(key, str) and key not in paths:
                paths.append(key)
        return paths

    def context_menu(self, view: QAbstractItemView, index: QModelIndex) -> QMenu | None:
        """The right-click menu of a tree/table row: every panel's entries (None when none has any)."""
        if not index.isValid():
            return None
        paths = self.context_paths(view, index)
        menu = QMenu(view)
        for p in self.panels:
            p.context_menu(paths, menu)
        return menu if menu.actions() else None

    def _on_context_menu(self, view: QAbstractItemView, pos: Any) -> None:
        menu = self.context_menu(view, view.indexAt(pos))
        if menu is not None:
            menu.exec(view.viewport().mapToGlobal(pos))

    # ------------------------------------------------------------------ drops
    def drop_choices(self, path: str) -> list[drops.DropChoice]:
        return drops.drop_choices(path, open_checkpoint=lambda: self.open_path(path, as_checkpoint=True),
                                  open_config=lambda: self.open_config(path), panels=self.panels)

    def handle_drop(self, mime: Any, pos: Any = None) -> Any:
        """Act on dropped files (``drops.route_drop``): the menu (shown only when interactive), None when acted at
        once, False when there was nothing to drop."""
        return drops.route_drop([u.toLocalFile() for u in mime.urls() if u.isLocalFile()],
                                nothing_open=self.session.current is None, open_path=self.open_path,
                                choices=self.drop_choices, parent=self, pos=pos, interactive=self.interactive)

    def dragEnterEvent(self, event: Any) -> None:  # noqa: N802 (Qt API)
        if event.mimeData().hasUrls() and any(u.isLocalFile() for u in event.mimeData().urls()):
            event.acceptProposedAction()

    def dragMoveEvent(self, event: Any) -> None:  # noqa: N802
        self.dragEnterEvent(event)

    def dropEvent(self, event: Any) -> None:  # noqa: N802
        if self.handle_drop(event.mimeData(), event.position().toPoint()) is not False:
            event.acceptProposedAction()

    # ------------------------------------------------------------------ screenshots
    def when_ready(self) -> None:
        """Emit ``ready`` once the next report is shown, the tensor worth showing selected and drawn, and every
        job the panels wait for (a small checkpoint's init check, a diff, an overlay) has finished."""
        for p in self.panels:
            pick = p.prepare_screenshot()
            if pick is not None:
                self.ready_gate.pickers.append(pick)
        self.ready_gate.start()

    def input_files(self) -> list[str]:
        """Every file the window read or was asked to read: what it writes never replaces one (``Session``)."""
        return self.session.input_files()

    def save_screenshot(self, path: str, *, force: bool = False) -> None:
        """Render the whole window to a PNG (atomically); the refusals of ``screenshot.save_window_png``."""
        save_window_png(self, path, inputs=self.input_files(), force=force)

    def resizeEvent(self, event: Any) -> None:  # noqa: N802 (Qt API)
        super().resizeEvent(event)
        if self.tree_split is not None:  # (None while the window is being built)
            self.tree_split.fit_minimum(self.width())  # the tree's names give way so the right side always fits

    # ------------------------------------------------------------------ settings
    def _splitters(self) -> dict[str, QSplitter]:
        return {"split": self.split, "rightSplit": self.right}

    def _restore_settings(self) -> None:
        if "split" in window_settings.restore(self.settings, self, self._splitters(), self.details.histogram):
            self.tree_split.chosen = True

    def closeEvent(self, event: Any) -> None:  # noqa: N802 (Qt API)
        if self.persist:
            window_settings.save(self.settings, self, self._splitters(), self.details.histogram)
        self.session.close()
        super().closeEvent(event)
