"""The main window: module tree | tabs (tensor table and the panels of ``panels.PANELS``) over the details panel,
with a summary and a filter bar. Layout, menus and selection sync; everything else lives in its own module.

The window builds every panel with a ``PanelHost`` (the session and a few typed hooks) and asks them, through
the ``Panel`` protocol, for their menus, badges, context-menu entries and drop meanings. The open tab sets the
session's overlay choice (``Panel.overlay``); who draws the histogram overlay follows from that state.
"""
from __future__ import annotations

import os
import time
from typing import Any, Sequence

from PySide6.QtCore import QItemSelection, QItemSelectionModel, QModelIndex, QSettings, Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemView, QDialog, QFileDialog, QFrame, QHBoxLayout, QLabel, QMainWindow, QMenu, QMessageBox,
    QProgressBar, QPushButton, QScrollArea, QSplitter, QTableView, QTabWidget, QToolButton, QTreeView, QVBoxLayout,
    QWidget,
)

from ..core.fmt import safe_text
from . import drops, help as help_text, palette, summary, window_settings
from .kinds import TROUBLE, Kind
from .badges import KeyDelegate, badge_delegate
from .dialogs import HeadClassDialog, rich_box
from .entries import TreeItem
from .filter_bar import FilterBar
from .filtering import Filter, FilterProxy
from .histogram import save_png
from .panels import PANELS, Panel, PanelHost
from .panels.details import DetailsPanel, Selection, selection_for_item, selection_for_row
from .screenshot import ReadyGate
from .session import Loaded, Overlay, Session, Source
from .table_model import TensorTableModel
from .table_view import fit_key_column, size_table_columns
from .tree_model import ModuleTreeModel, size_tree_columns, tree_width_needed

class MainWindow(QMainWindow):
    def __init__(self, *, settings: QSettings | None = None, interactive: bool = True,
                 panels: Sequence[type[Panel]] = PANELS) -> None:
        super().__init__()
        self.settings = settings or QSettings("ckpt-explorer", "ckpt-explorer")
        self.interactive = interactive  # False: errors go to the message bar only (screenshots, scripts)
        self.persist = interactive  # save geometry/splitters on close
        self.session = s = Session(self)
        self._syncing = False
        self._good_filter = Filter()  # the last filter that ran (a too-slow regex falls back to it)
        self._t_open = 0.0
        self.errors: list[str] = []
        self.setWindowTitle("Checkpoint Explorer")
        self.setAcceptDrops(True)
        self.resize(1400, 860)

        # models adapt the session
        self.tree_model = ModuleTreeModel(self)
        self.tree_proxy = FilterProxy(self, tree=True)
        self.tree_proxy.setSourceModel(self.tree_model)
        self.table_model = TensorTableModel(self, plan_badge=self._plan_text)
        self.table_proxy = FilterProxy(self)
        self.table_proxy.setSourceModel(self.table_model)
        self.tree, self.table = self._build_tree(), self._build_table()

        self.details = DetailsPanel(s)
        self.ready_gate = ReadyGate(s, self.select_key, self)
        self.ready = self.ready_gate.ready  # (screenshots) a report is shown and its first histogram drawn
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.tabs.addTab(self.table, "Tensors")
        host = PanelHost(session=s, details=self.details, ready=self.ready_gate, select=self.select_tensor,
                         show_selection=self.show_selection, show_error=self.show_error, open_source=self.open_source,
                         raise_panel=self.tabs.setCurrentWidget, interactive=interactive, inputs=self.input_files)
        self.panels: list[Panel] = [cls(host) for cls in panels]
        for p in self.panels:
            self.tabs.addTab(p, p.title)
        self._build_layout()
        self._build_actions()
        self.table.setColumnHidden(TensorTableModel.PLAN, not any(p.title == "Plan" for p in self.panels))

        s.loadingStarted.connect(self._on_loading)
        s.loaded.connect(self._on_loaded)
        s.loadFailed.connect(self._on_load_failed)
        s.busyChanged.connect(self.busy.setVisible)
        s.initChanged.connect(self._on_init_changed)
        s.planChanged.connect(self._on_plan_changed)
        self.tree.selectionModel().currentChanged.connect(self._on_tree_current)
        self.table.selectionModel().currentChanged.connect(self._on_table_current)
        self.details.statsReady.connect(lambda _s: self.ready_gate.settle())
        self.details.statsFailed.connect(lambda _m: self.ready_gate.settle())
        self.tabs.currentChanged.connect(self._on_tab_changed)
        self.filter_bar.changed.connect(self.apply_filter)
        self.filter_bar.untrainedToggled.connect(self._on_untrained_toggled)
        self._restore_settings()
        self.summary_label.setText(summary.WELCOME)

    def panel(self, cls: type[Panel]) -> Any:
        """The panel of type ``cls`` (KeyError when this window was built without it)."""
        for p in self.panels:
            if isinstance(p, cls):
                return p
        raise KeyError(cls.__name__)

    # ------------------------------------------------------------------ building
    def _build_tree(self) -> QTreeView:
        tree = QTreeView()
        tree.setModel(self.tree_proxy)
        tree.setUniformRowHeights(True)
        tree.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        tree.setAnimated(False)
        tree.setAllColumnsShowFocus(True)
        size_tree_columns(tree, first=True)  # name stretches, status fits the roll-ups, dtype/how on demand
        badge_delegate(tree, 0).providers.append(self._tree_badges)
        return tree

    def _build_table(self) -> QTableView:
        table = QTableView()
        table.setModel(self.table_proxy)
        table.setSortingEnabled(True)
        table.sortByColumn(TensorTableModel.STATUS, Qt.SortOrder.AscendingOrder)  # trouble first
        table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        table.setWordWrap(False)
        # names differ in their tails (layer numbers, weight/bias): elide the start, the tooltip has it all
        table.setTextElideMode(Qt.TextElideMode.ElideLeft)
        table.setShowGrid(False)
        table.verticalHeader().setVisible(False)
        table.verticalHeader().setDefaultSectionSize(22)
        table.horizontalHeader().setHighlightSections(False)
        size_table_columns(table)
        self._key_delegate = KeyDelegate(table)
        for col in (TensorTableModel.NAME, TensorTableModel.KEY):
            table.setItemDelegateForColumn(col, self._key_delegate)
        badge_delegate(table, TensorTableModel.STATUS).providers.append(self._untrained_badge)
        return table

    def _build_layout(self) -> None:
        for view in (self.tree, self.table):
            view.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
            view.customContextMenuRequested.connect(lambda pos, v=view: self._on_context_menu(v, pos))
        self.right = QSplitter(Qt.Orientation.Vertical)
        self.right.addWidget(self.tabs)
        self.right.addWidget(self.details)
        self.right.setStretchFactor(0, 1)
        self.right.setStretchFactor(1, 1)
        # the right side scrolls when a tab (Compare) wants more width than is left: it never squeezes the tree
        self.right_scroll = QScrollArea()
        self.right_scroll.setWidget(self.right)
        self.right_scroll.setWidgetResizable(True)
        self.right_scroll.setFrameShape(QFrame.Shape.NoFrame)
        self.right_scroll.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.right_scroll.setMinimumWidth(200)
        self.split = QSplitter(Qt.Orientation.Horizontal)
        self.split.setChildrenCollapsible(False)
        self.split.addWidget(self.tree)
        self.split.addWidget(self.right_scroll)
        self.split.setStretchFactor(0, 1)
        self.split.setStretchFactor(1, 1)
        self.split.setSizes([690, 750])  # the tree carries the roll-ups; the table's two names need the rest
        self._split_chosen = False  # the user moved the splitter (now or in a saved session): keep their width
        self.split.splitterMoved.connect(lambda _p, _i: setattr(self, "_split_chosen", True))
        self.right.setSizes([400, 380])

        self.message_bar = QFrame()
        self.message_bar.setObjectName("messageBar")
        lay = QHBoxLayout(self.message_bar)
        lay.setContentsMargins(8, 4, 4, 4)
        self.message_label = QLabel("")
        self.message_label.setTextFormat(Qt.TextFormat.PlainText)  # error messages quote names from files
        self.message_label.setWordWrap(True)
        self.message_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        close = QToolButton(text="✕")
        close.setAutoRaise(True)
        close.clicked.connect(self.message_bar.hide)
        lay.addWidget(self.message_label, 1)
        lay.addWidget(close)
        self.message_bar.hide()

        box = QFrame()
        box.setObjectName("summary")
        lay = QHBoxLayout(box)
        lay.setContentsMargins(8, 4, 8, 4)
        self.summary_label = QLabel("")
        self.summary_label.setObjectName("summaryText")
        self.summary_label.setTextFormat(Qt.TextFormat.RichText)
        self.summary_label.setWordWrap(True)
        self.summary_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.suggest_label = QLabel("")
        self.suggest_label.setObjectName("suggestion")
        self.suggest_label.setWordWrap(True)
        self.suggest_btn = QPushButton("Apply key mapping")
        self.suggest_btn.setToolTip("Recompute the report with the suggested key mapping")
        self.suggest_btn.clicked.connect(self.apply_suggestion)
        self.suggest_label.hide()
        self.suggest_btn.hide()
        lay.addWidget(self.summary_label, 1)
        lay.addWidget(self.suggest_label)
        lay.addWidget(self.suggest_btn)

        self.filter_bar = fb = FilterBar()
        self.search, self.mode, self.kind_buttons = fb.search, fb.mode, fb.kind_buttons
        self.untrained_button, self.match_label = fb.untrained_button, fb.match_label
        central = QWidget()
        lay = QVBoxLayout(central)
        lay.setContentsMargins(6, 4, 6, 2)
        lay.setSpacing(4)
        for w in (self.message_bar, box, fb):
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

    def _build_actions(self) -> None:
        m = self.menuBar()
        fm = m.addMenu("&File")
        self.act_open = self._action("&Open checkpoint…", QKeySequence.StandardKey.Open, self.open_dialog, fm)
        self.act_config = self._action("Open &config…", "Ctrl+Shift+O", self.open_config_dialog, fm)
        self.act_head = self._action("Choose &head class…", "Ctrl+H", self.choose_head, fm)
        self.act_demo = self._action("Open &demo", None, lambda: self.open_source(Source(demo=True)), fm)
        self.recent_menu = fm.addMenu("&Recent")
        self.recent = window_settings.RecentFiles(self.settings, self.recent_menu, self.open_path)
        fm.addSeparator()
        self.act_reload = self._action("&Reload", "F5", self.reload, fm)
        fm.addSeparator()
        self.act_quit = self._action("&Quit", "Ctrl+Q", self.close, fm)
        vm = m.addMenu("&View")
        self._action("&Find…", QKeySequence.StandardKey.Find, self.filter_bar.focus, vm)
        self._action("Clear &filter", "Esc", self.clear_filter, vm)
        self._action("Expand &trouble", "Ctrl+T", self.expand_trouble, vm)
        self._action("&Collapse all", "Ctrl+Shift+T", self.tree.collapseAll, vm)
        for p in self.panels:
            if p.menu_title:
                p.fill_menu(m.addMenu(p.menu_title))
        hm = m.addMenu("&Help")
        self._action("&Keyboard shortcuts", "F1", self.show_shortcuts, hm)
        self._action("&Legend", None, self.show_legend, hm)
        self._action("&About Checkpoint Explorer", None, self.show_about, hm)
        tb = self.addToolBar("Main")
        tb.setObjectName("mainToolbar")
        tb.setMovable(False)
        tb.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        for a in (self.act_open, self.act_config, self.act_head, self.act_reload, self.act_demo):
            tb.addAction(a)
            if not a.shortcut().isEmpty():
                a.setToolTip(f"{a.text().replace('&', '').rstrip('…')} ({a.shortcut().toString(QKeySequence.SequenceFormat.NativeText)})")

    def _action(self, text: str, shortcut: Any, slot: Any, menu: Any) -> QAction:
        a = QAction(text, self)
        if shortcut is not None:
            a.setShortcut(QKeySequence(shortcut))
        a.triggered.connect(lambda _c=False: slot())
        menu.addAction(a)
        return a

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

    # ------------------------------------------------------------------ opening
    def open_source(self, source: Source) -> None:
        self._t_open = time.perf_counter()
        self.session.open(source)

    def open_path(self, path: str, *, as_checkpoint: bool = False) -> None:
        if not as_checkpoint and os.path.basename(path) == "config.json" and self.session.source is not None:
            self.session.reload(config=path)
            return
        self.open_source(Source(checkpoint=path))

    def open_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Open checkpoint", str(self.settings.value("lastDir", os.getcwd())),
            "Checkpoints (*.safetensors *.bin *.pt *.pth *.ckpt *.index.json);;All files (*)")
        if path:
            self.settings.setValue("lastDir", os.path.dirname(path))
            self.open_path(path)

    def open_config_dialog(self) -> None:
        if self.session.source is None:
            self.show_error("Open a checkpoint first, then choose the config to compare it with.")
            return
        path, _ = QFileDialog.getOpenFileName(self, "Open config.json", str(self.settings.value("lastDir", "")), "config.json (*.json)")
        if path:
            self.session.reload(config=path)

    def open_config(self, path: str) -> None:
        if self.session.source is None:
            self.show_error("Open a checkpoint first, then drop the config to check it against.")
            return
        self._t_open = time.perf_counter()
        self.session.reload(config=path)

    def reload(self, **changes: Any) -> None:
        if self.session.source is not None:
            self._t_open = time.perf_counter()
            self.session.reload(**changes)

    def choose_head(self) -> None:
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
        dlg = HeadClassDialog(list(names), current=self.session.report.arch if self.session.report else None, parent=self)
        if dlg.exec() == QDialog.DialogCode.Accepted and dlg.choice:
            self.reload(arch=dlg.choice)

    def apply_suggestion(self) -> None:
        rep = self.session.report
        if rep is not None and rep.suggested_key_mapping:
            self.reload(key_mapping=dict(rep.suggested_key_mapping), auto_fix=False)

    # ------------------------------------------------------------------ session events
    def _on_loading(self, what: str) -> None:
        self.summary_label.setText(summary.loading_html(what))
        self.status_label.setText("loading…")

    def _on_loaded(self, loaded: Loaded) -> None:
        rep = loaded.report
        self.message_bar.hide()
        self.tree_model.set_root(loaded.tree, loaded.tree_index)
        size_tree_columns(self.tree)
        self._fit_split()
        # a usable tree on every tab: the names of NAME_LEVELS levels stay readable whatever the right side wants
        self.tree.setMinimumWidth(min(tree_width_needed(self.tree, names_only=True), max(self.width() // 2, 240)))
        self.table_model.set_rows(loaded.rows, loaded.table_index)
        fit_key_column(self.table, self.table_model)
        self._show_summary(loaded)
        self.apply_filter()
        self.expand_trouble()
        if loaded.source.checkpoint and not loaded.source.demo:
            self.recent.add(loaded.source.checkpoint)
        dt = time.perf_counter() - self._t_open if self._t_open else 0.0
        name = os.path.basename(os.path.normpath(rep.index.path))
        self.setWindowTitle(f"{safe_text(name)} → {safe_text(rep.arch or 'checkpoint only')} — Checkpoint Explorer")
        self.status_label.setText(f"{len(rep.index.tensors):,} tensors in {len(rep.index.files)} file(s) · "
                                  f"{rep.index.format} · {loaded.timing_text() or f'report in {dt:.2f} s'}")

    def _show_summary(self, loaded: Loaded) -> None:
        self.filter_bar.set_counts(loaded.tree.counts)
        self.summary_label.setText(summary.summary_html(loaded))
        sugg = summary.suggestion_html(loaded.report)
        self.suggest_label.setText(sugg)
        self.suggest_label.setVisible(bool(sugg))
        self.suggest_btn.setVisible(bool(sugg))

    def _on_load_failed(self, msg: str) -> None:
        self.status_label.setText("load failed")
        if self.session.current is None:
            self.summary_label.setText(summary.WELCOME)
        else:
            self._show_summary(self.session.current)
        self.show_error(msg)
        self.ready_gate.settle(force=True)

    def show_error(self, msg: str) -> None:
        """Message bar always; a dialog too when interactive. The window stays usable. ``errors`` keeps every
        message shown (a screenshot run prints them on stderr)."""
        self.errors.append(msg)
        shown = safe_text(msg)  # control/bidi characters from a file name or a header shown escaped
        self.message_label.setText(f"⚠ {shown}")
        self.message_bar.show()
        if self.interactive:
            QMessageBox.warning(self, "Checkpoint Explorer", shown)

    def _on_plan_changed(self, _plan: Any) -> None:
        self.table_model.plan_changed()
        self.tree.viewport().update()

    def _plan_text(self, key: str) -> str:
        return " ".join(t for p in self.panels for t, _c in p.badges(key, True) if t) if self.session.plan else ""

    def _tree_badges(self, index: QModelIndex) -> list[tuple[str, str]]:
        """Badges right of a tree name: every panel's (the plan's), then the init check's."""
        if not index.isValid():
            return []
        it = self.tree_proxy.mapToSource(index).internalPointer()
        return [b for p in self.panels for b in p.badges(it.path, it.is_param)] + self._untrained_badge(index)

    # ------------------------------------------------------------------ init check (published by the session)
    def _on_init_changed(self) -> None:
        """Badges, column and filter chip from ``session.init_results`` (one place for every view)."""
        from .entries import untrained_rows, untrained_tree

        if not self.session.init_results:
            self.tree_model.set_untrained(None, None)
            self.table_model.set_untrained(None)
            rep = self.session.report
            self.filter_bar.set_untrained(None, can_check=rep is not None and rep.spec is not None)
        else:
            flagged = self.session.untrained
            self.tree_model.set_untrained(*untrained_tree(self.tree_model.tree_index, flagged))
            self.table_model.set_untrained(untrained_rows(self.table_model.rows, flagged))
            self.tree.viewport().update()
            self.table.viewport().update()
            self.filter_bar.set_untrained(len(flagged), can_check=True)
        self.apply_filter()

    def _untrained_badge(self, index: QModelIndex) -> list[tuple[str, str]]:
        """The "looks untrained" badge of a tree item (rolled up: "3 untrained") or table row."""
        if not self.session.init_results or not index.isValid():
            return []
        col = palette.look(Kind.UNTRAINED).color
        if index.model() is self.tree_proxy:
            it = self.tree_proxy.mapToSource(index).internalPointer()
            n = self.tree_model.untrained_count(it)
            return [("?" if it.is_param else f"? {n}", col)] if n else []
        return [("?", col)] if self.table_model.untrained_shown(self.table_proxy.mapToSource(index).row()) else []

    def _on_untrained_toggled(self, on: bool) -> None:
        if on and not self.session.init_results:
            self.session.request_init_check()  # the filter applies when its results arrive (initChanged)
        self.apply_filter()

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
        self.filter_bar.show_count(n_rows if flt.active else None, len(self.table_model.rows))
        if flt.active:
            self._expand_items(self.tree_proxy.first_matches(200))

    def clear_filter(self) -> None:
        self.filter_bar.clear()

    def _expand_items(self, items: Sequence[TreeItem]) -> None:
        """Expand the branches that lead to ``items``."""
        seen: set[int] = set()
        for it in items:
            p, chain = it.parent, []
            while p is not None and p is not self.tree_model.root and id(p) not in seen:
                seen.add(id(p))
                chain.append(p)
                p = p.parent
            for q in reversed(chain):
                idx = self.tree_proxy.mapFromSource(self.tree_model.createIndex(q.row, 0, q))
                if idx.isValid():
                    self.tree.expand(idx)

    def expand_trouble(self, limit: int = 300) -> None:
        """Expand the top of the tree, every branch that holds a missing/mismatched/unexpected entry and the
        "(not in model)" branch."""
        top = self.tree_proxy.index(0, 0)
        if top.isValid():
            self.tree.expand(top)
        self._expand_items([it for it in self.tree_model.param_items() if it.kind in TROUBLE][:limit])
        for i in range(self.tree_proxy.rowCount()):
            idx = self.tree_proxy.index(i, 0)
            if self.tree_proxy.mapToSource(idx).internalPointer().group:
                self.tree.expand(idx)

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
        if self._syncing or not cur.isValid() or self.session.report is None:
            return
        it: TreeItem = self.tree_proxy.mapToSource(cur).internalPointer()
        tm = self.table_model
        if it.is_param:
            rows = tm.rows_for_key(it.path) or [tm.row_for_name(it.path)]
        else:
            rows = [tm.row_for_name(c.path) for c in it.children] if it.group else tm.rows_under(it.path)
        self._syncing = True
        try:
            self._select_table_rows([r for r in rows if r is not None])
        finally:
            self._syncing = False
        self._set_selection(selection_for_item(self.session.report, it))

    def _select_table_rows(self, rows: list[int]) -> None:
        sm, proxy = self.table.selectionModel(), self.table_proxy
        sel = QItemSelection()
        proxy_rows = sorted(r2 for r2 in (proxy.mapFromSource(self.table_model.index(r, 0)).row() for r in rows) if r2 >= 0)
        last_col = proxy.columnCount() - 1
        start = prev = None
        for r in proxy_rows + [None]:
            if start is not None and (r is None or r != prev + 1):
                sel.select(proxy.index(start, 0), proxy.index(prev, last_col))
                start = None
            if r is not None and start is None:
                start = r
            prev = r
        sm.select(sel, QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows)
        if proxy_rows:
            first = proxy.index(proxy_rows[0], 0)
            sm.setCurrentIndex(first, QItemSelectionModel.SelectionFlag.NoUpdate)
            self.table.scrollTo(first, QAbstractItemView.ScrollHint.PositionAtTop if len(proxy_rows) > 1
                                else QAbstractItemView.ScrollHint.EnsureVisible)

    def _on_table_current(self, cur: QModelIndex, _prev: QModelIndex) -> None:
        if self._syncing or not cur.isValid() or self.session.report is None:
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
        from .tree_model import ITEM_ROLE, KEY_ROLE

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
        """Act on dropped files. Nothing open yet: open it. Otherwise a menu at the drop position offers what it
        can be (a plan JSON goes to the plan at once). Returns the menu (shown only when interactive), None when
        acted at once, False when there was nothing to drop."""
        paths = [u.toLocalFile() for u in mime.urls() if u.isLocalFile()]
        if not paths:
            return False
        path = paths[0]
        if self.session.current is None and not (path.lower().endswith(".json") and os.path.basename(path) == "config.json"):
            self.open_path(path)
            return None
        choices = self.drop_choices(path)
        if len(choices) == 1 and choices[0].only:
            choices[0].run()
            return None
        menu = drops.choice_menu(self, path, choices)
        if self.interactive:
            drops.show_menu(menu, self, pos)
        return menu

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
        """Every file the window read or was asked to read (checkpoint and config, checkpoint B): whatever the
        window writes (screenshot, histogram PNG/CSV, plan) never replaces one of them."""
        from ..core.outputs import named_inputs, report_inputs

        s = self.session
        src = s.current.source if s.current is not None else s.source
        out: list[str] = []
        if src is not None:
            out += map(str, named_inputs(src.checkpoint, src.config))
        if s.current is not None:
            out += report_inputs(s.current.report)
        out += map(str, named_inputs(s.compare_path))
        if s.comparison is not None:
            out += [s.comparison.index_b.path, *s.comparison.index_b.files]
        return list(dict.fromkeys(out))

    def save_screenshot(self, path: str, *, force: bool = False) -> None:
        """Render the whole window to a PNG (atomically). Never over an input of the window or anything but a
        regular file; over an existing file that is not a PNG only with ``force``. Raises ExplorerError or OSError."""
        from ..core.fsio import check_output
        from ..core.outputs import is_png

        check_output(path, inputs=self.input_files(), is_ours=is_png, force=force, what="screenshot PNG")
        save_png(self.grab(), path)

    def _fit_split(self) -> None:
        """Unless the user chose a width, give the tree what its names (``NAME_LEVELS``) and roll-ups need, up to
        60% of the window; the tabs and details take the rest."""
        sizes = self.split.sizes()
        total = sum(sizes)
        if self._split_chosen or total <= 0:
            return
        tree = min(max(tree_width_needed(self.tree), sizes[0]), int(0.6 * total))
        if tree != sizes[0]:
            self.split.blockSignals(True)  # not a user's move
            try:
                self.split.setSizes([tree, total - tree])
            finally:
                self.split.blockSignals(False)

    # ------------------------------------------------------------------ settings
    def _splitters(self) -> dict[str, QSplitter]:
        return {"split": self.split, "rightSplit": self.right}

    def _restore_settings(self) -> None:
        if "split" in window_settings.restore(self.settings, self, self._splitters(), self.details.histogram):
            self._split_chosen = True

    def closeEvent(self, event: Any) -> None:  # noqa: N802 (Qt API)
        if self.persist:
            window_settings.save(self.settings, self, self._splitters(), self.details.histogram)
        self.session.close()
        super().closeEvent(event)
