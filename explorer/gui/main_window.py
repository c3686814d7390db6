"""The main window: module tree | tensor table over the details panel, with a summary and filter bar.

Extension points for other panels:

- ``MainWindow.add_panel(title, widget) -> int`` adds a tab next to "Tensors" (e.g. an A-vs-B table or a
  plan editor) and returns its tab index; ``MainWindow.details.histogram`` is the ``HistogramWidget``
  whose ``set_overlay(label, edges, counts)`` / ``clear_overlay()`` draw a second series.
- ``MainWindow.session`` (``Session``) emits ``loaded(Loaded)`` for every new report; ``selectionChanged``
  on the window carries the details ``Selection`` (title, on-disk names, is_module) the user is looking at.
"""
from __future__ import annotations

import os
import time
from typing import Any

from PySide6.QtCore import QByteArray, QItemSelection, QItemSelectionModel, QModelIndex, QSettings, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFrame,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListWidget,
    QMainWindow,
    QMenu,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSplitter,
    QTableView,
    QTabWidget,
    QToolButton,
    QTreeView,
    QVBoxLayout,
    QWidget,
)

from ..core.fmt import human_count, safe_text
from . import palette
from .details import DetailsPanel, Selection, selection_for_item, selection_for_row
from .entries import LOADED_KINDS, TreeItem, fmt_percent
from .filtering import MODES, Filter, FilterProxy
from .histogram import save_png
from .session import Loaded, Session, Source
from .table_model import TensorTableModel
from .tree_model import ModuleTreeModel, install_column_menu, size_tree_columns, tree_width_needed

FILTER_KINDS = ("matched", "renamed", "tied", "dtype", "missing", "mismatched", "unexpected", "ignored")
MAX_RECENT = 10
CHIP_LABELS = {"dtype": "dtype", "mismatched": "mismatch", "untrained": "untrained?"}  # short: the bar fits 1280 px


class MainWindow(QMainWindow):
    selectionChanged = Signal(object)  # details Selection or None
    ready = Signal()  # a report is shown and its first histogram drawn (or there is nothing to measure)
    readyLoaded = Signal()  # (when_ready) a report arrived, before the interesting tensor is selected

    def __init__(self, *, settings: QSettings | None = None, interactive: bool = True) -> None:
        super().__init__()
        self.settings = settings or QSettings("ckpt-explorer", "ckpt-explorer")
        self.interactive = interactive  # False: errors go to the message bar only (screenshots, scripts)
        self.persist = interactive  # save geometry/splitters on close
        self.session = Session(self)
        self._syncing = False
        self._t_open = 0.0
        self.errors: list[str] = []
        self.setWindowTitle("Checkpoint Explorer")
        self.setAcceptDrops(True)
        self.resize(1400, 860)

        # models
        self.tree_model = ModuleTreeModel(self)
        self.tree_proxy = FilterProxy(self, tree=True)
        self.tree_proxy.setSourceModel(self.tree_model)
        self.table_model = TensorTableModel(self)
        self.table_proxy = FilterProxy(self)
        self.table_proxy.setSourceModel(self.table_model)

        # views
        self.tree = QTreeView()
        self.tree.setModel(self.tree_proxy)
        self.tree.setUniformRowHeights(True)
        self.tree.setAlternatingRowColors(False)
        self.tree.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.tree.setSortingEnabled(False)
        self.tree.setAnimated(False)
        self.tree.setAllColumnsShowFocus(True)
        size_tree_columns(self.tree, first=True)  # name stretches, status fits the roll-ups, dtype/how on demand

        self.table = QTableView()
        self.table.setModel(self.table_proxy)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(TensorTableModel.STATUS, Qt.SortOrder.AscendingOrder)  # trouble first
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.setWordWrap(False)
        # names differ in their tails (layer numbers, weight/bias): elide the start, the tooltip has it all
        self.table.setTextElideMode(Qt.TextElideMode.ElideLeft)
        self.table.setShowGrid(False)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(22)
        self.table.horizontalHeader().setHighlightSections(False)
        size_table_columns(self.table)
        from .badges import KeyDelegate, badge_delegate

        self._key_delegate = KeyDelegate(self.table)
        for col in (TensorTableModel.NAME, TensorTableModel.KEY):
            self.table.setItemDelegateForColumn(col, self._key_delegate)
        badge_delegate(self.tree, 0).providers.append(self._untrained_badge)
        badge_delegate(self.table, TensorTableModel.STATUS).providers.append(self._untrained_badge)

        self.details = DetailsPanel(self.session)
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.tabs.addTab(self.table, "Tensors")

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
        self.split.splitterMoved.connect(self._on_split_moved)
        self.right.setSizes([400, 380])

        # bars
        self.message_bar = self._build_message_bar()
        self.summary = self._build_summary()
        self.filter_bar = self._build_filter_bar()
        central = QWidget()
        lay = QVBoxLayout(central)
        lay.setContentsMargins(6, 4, 6, 2)
        lay.setSpacing(4)
        lay.addWidget(self.message_bar)
        lay.addWidget(self.summary)
        lay.addWidget(self.filter_bar)
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
        self._build_actions()

        # wiring
        self.session.loadingStarted.connect(self._on_loading)
        self.session.loaded.connect(self._on_loaded)
        self.session.loadFailed.connect(self._on_load_failed)
        self.session.busyChanged.connect(self.busy.setVisible)
        self.session.initChanged.connect(self._on_init_changed)
        self.session.jobs.result.connect(self._on_job_result)
        self.session.jobs.error.connect(self._on_job_error)
        self.tree.selectionModel().currentChanged.connect(self._on_tree_current)
        self.table.selectionModel().currentChanged.connect(self._on_table_current)
        self.details.statsReady.connect(lambda _s: self._maybe_ready())
        self.details.statsFailed.connect(lambda _m: self._maybe_ready())
        self._waiting_ready = False
        self._ready_holds: set[str] = set()  # panels still drawing something the screenshot should show
        # (screenshots) callables tried in order before interesting_key(): each may select something and return True
        self.interesting_hooks: list[Any] = []
        self.tabs.currentChanged.connect(self._on_tab_changed)
        self._filter_timer = QTimer(self, singleShot=True, interval=120)
        self._filter_timer.timeout.connect(self.apply_filter)
        self._restore_settings()
        self._show_welcome()

    # ------------------------------------------------------------------ extension points
    def add_panel(self, title: str, widget: QWidget) -> int:
        """Add a tab beside "Tensors" (other features' tables/editors). Returns the tab index."""
        return self.tabs.addTab(widget, title)

    # ------------------------------------------------------------------ building
    def _build_actions(self) -> None:
        m = self.menuBar()
        fm = m.addMenu("&File")
        self.act_open = self._action("&Open checkpoint…", QKeySequence.StandardKey.Open, self.open_dialog, fm)
        self.act_config = self._action("Open &config…", "Ctrl+Shift+O", self.open_config_dialog, fm)
        self.act_head = self._action("Choose &head class…", "Ctrl+H", self.choose_head, fm)
        self.act_demo = self._action("Open &demo", None, lambda: self.open_source(Source(demo=True)), fm)
        self.recent_menu = fm.addMenu("&Recent")
        self._fill_recent()
        fm.addSeparator()
        self.act_reload = self._action("&Reload", "F5", self.reload, fm)
        fm.addSeparator()
        self.act_quit = self._action("&Quit", "Ctrl+Q", self.close, fm)
        vm = m.addMenu("&View")
        self._action("&Find…", QKeySequence.StandardKey.Find, self.focus_search, vm)
        self._action("Clear &filter", "Esc", self.clear_filter, vm)
        self._action("Expand &trouble", "Ctrl+T", self.expand_trouble, vm)
        self._action("&Collapse all", "Ctrl+Shift+T", self.tree.collapseAll, vm)
        self.help_menu = hm = m.addMenu("&Help")
        self._action("&Keyboard shortcuts", "F1", self.show_shortcuts, hm)
        self._action("&Legend", None, self._show_legend, hm)
        self._action("&About Checkpoint Explorer", None, self.show_about, hm)
        tb = self.addToolBar("Main")
        tb.setObjectName("mainToolbar")
        tb.setMovable(False)
        tb.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
        for a in (self.act_open, self.act_config, self.act_head, self.act_reload, self.act_demo):
            tb.addAction(a)
            if not a.shortcut().isEmpty():
                a.setToolTip(f"{a.text().replace('&', '').rstrip('…')} ({a.shortcut().toString(QKeySequence.SequenceFormat.NativeText)})")

    def add_menu(self, title: str) -> Any:
        """A top-level menu for a panel, placed before Help."""
        menu = QMenu(title, self)
        self.menuBar().insertMenu(self.help_menu.menuAction(), menu)
        return menu

    def shortcuts(self) -> list[tuple[str, str, str]]:
        """(menu, action, shortcut) for every menu action that has a shortcut, in menu order."""
        out = []

        def walk(menu: Any, where: str) -> None:
            for a in menu.actions():
                if a.menu() is not None:
                    walk(a.menu(), where)
                elif not a.isSeparator() and a.shortcuts():
                    keys = ", ".join(k.toString(QKeySequence.SequenceFormat.NativeText) for k in a.shortcuts())
                    out.append((where, a.text().replace("&", "").split("\t")[0], keys))

        for top in self.menuBar().actions():
            if top.menu() is not None:
                walk(top.menu(), top.text().replace("&", ""))
        return out

    def shortcuts_html(self) -> str:
        rows, last = [], None
        for where, text, keys in self.shortcuts():
            if where != last:
                rows.append(f"<tr><td colspan=2 style='padding-top:6px'><b>{_esc(where)}</b></td></tr>")
                last = where
            rows.append(f"<tr><td style='padding-right:18px'><code>{_esc(keys)}</code></td><td>{_esc(text)}</td></tr>")
        extra = ("<tr><td colspan=2 style='padding-top:6px'><b>Elsewhere</b></td></tr>"
                 "<tr><td><code>right-click</code></td><td>plan menu on a module or tensor; column menu on a header</td></tr>"
                 "<tr><td><code>drop a file</code></td><td>open it, compare with it, use it as the config, or load a plan</td></tr>")
        return f"<table cellspacing=2>{''.join(rows)}{extra}</table>"

    def _rich_box(self, title: str, html: str) -> QMessageBox:
        """A rich-text information box, shown modally only when the window is interactive (tests inspect it)."""
        box = QMessageBox(QMessageBox.Icon.NoIcon, title, html, parent=self)
        box.setTextFormat(Qt.TextFormat.RichText)
        if self.interactive:
            box.exec()
        return box

    def show_shortcuts(self) -> QMessageBox:
        return self._rich_box("Keyboard shortcuts", self.shortcuts_html())

    def show_about(self) -> QMessageBox:
        from .. import __version__ as ver
        text = (f"<h3>Checkpoint Explorer {ver}</h3>"
                "<p>Does this checkpoint load into this model, and is what loads actually trained?<br>"
                "Module tree and tensors colour-coded by how they load, histograms beside a fresh initialisation, "
                "checkpoint A vs B, and a plan to export a patched checkpoint.</p>"
                "<p>The same answers from the command line: <code>ckpt-explorer report | init-check | diff | stats | plan | export</code>.</p>"
                f"<p><b>Shortcuts</b></p>{self.shortcuts_html()}")
        box = QMessageBox(QMessageBox.Icon.NoIcon, "About Checkpoint Explorer", text, parent=self)
        box.setTextFormat(Qt.TextFormat.RichText)
        if self.interactive:
            box.exec()
        return box

    def _action(self, text: str, shortcut: Any, slot: Any, menu: Any) -> QAction:
        a = QAction(text, self)
        if shortcut is not None:
            a.setShortcut(QKeySequence(shortcut))
        a.triggered.connect(lambda _c=False: slot())
        menu.addAction(a)
        return a

    def _build_message_bar(self) -> QFrame:
        bar = QFrame()
        bar.setObjectName("messageBar")
        lay = QHBoxLayout(bar)
        lay.setContentsMargins(8, 4, 4, 4)
        self.message_label = QLabel("")
        self.message_label.setTextFormat(Qt.TextFormat.PlainText)  # error messages quote names from files
        self.message_label.setWordWrap(True)
        self.message_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        close = QToolButton(text="✕")
        close.setAutoRaise(True)
        close.clicked.connect(bar.hide)
        lay.addWidget(self.message_label, 1)
        lay.addWidget(close)
        bar.hide()
        return bar

    def _build_summary(self) -> QFrame:
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
        return box

    def _build_filter_bar(self) -> QWidget:
        w = QWidget()
        lay = QHBoxLayout(w)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(4)
        self.search = QLineEdit()
        self.search.setPlaceholderText("Filter names (Ctrl+F): substring, glob (*.attention.*) or regex")
        self.search.setClearButtonEnabled(True)
        self.search.textChanged.connect(lambda _t: self._filter_timer.start())
        self.search.returnPressed.connect(self.apply_filter)
        self.search.setMinimumWidth(150)
        self.mode = QComboBox()
        self.mode.addItems(list(MODES))
        self.mode.setToolTip("How the filter text matches names")
        self.mode.currentIndexChanged.connect(lambda _i: self.apply_filter())
        lay.addWidget(self.search, 2)
        lay.addWidget(self.mode)
        self.kind_buttons: dict[str, QToolButton] = {}
        for k in FILTER_KINDS:
            lk = palette.look(k)
            b = QToolButton()
            b.setCheckable(True)
            b.setIcon(palette.icon(k))
            b.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
            b.setText(CHIP_LABELS.get(k, lk.label))
            b.setToolTip(f"{lk.label}: {lk.meaning}\nClick to show only this status (several can be combined)")
            b.setObjectName("kindChip")
            b.toggled.connect(lambda _c: self.apply_filter())
            lay.addWidget(b)
            self.kind_buttons[k] = b
        ul = palette.look("untrained")
        self.untrained_button = b = QToolButton()
        b.setCheckable(True)
        b.setIcon(palette.icon("untrained"))
        b.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        b.setText(CHIP_LABELS["untrained"])
        b.setObjectName("kindChip")
        b.setToolTip(f"{ul.label}: {ul.meaning}\nClick to show only these (runs the init check first if needed)")
        b.setEnabled(False)
        b.toggled.connect(self._on_untrained_toggled)
        lay.addWidget(b)
        self.match_label = QLabel("")
        self.match_label.setObjectName("muted")
        lay.addWidget(self.match_label)
        # never force the window wider than the screen: on a narrow window the last chips are clipped
        w.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        return w

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
        start = self.settings.value("lastDir", os.getcwd())
        path, _ = QFileDialog.getOpenFileName(
            self, "Open checkpoint", str(start),
            "Checkpoints (*.safetensors *.bin *.pt *.pth *.ckpt *.index.json);;All files (*)",
        )
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

    def reload(self) -> None:
        if self.session.source is not None:
            self._t_open = time.perf_counter()
            self.session.reload()

    def choose_head(self) -> None:
        src = self.session.source
        if src is None or src.model:
            self.show_error("Choosing a head class needs a transformers config: open a checkpoint with a config.json first.")
            return
        cfg = src.config or (self.session.report.index.folder if self.session.report else src.checkpoint)

        def job(progress: Any, cancelled: Any) -> Any:
            from ..core.model import head_classes, load_config

            return head_classes(load_config(cfg))

        self.session.jobs.start("heads", job)

    def apply_suggestion(self) -> None:
        rep = self.session.report
        if rep is not None and rep.suggested_key_mapping:
            self._t_open = time.perf_counter()
            self.session.reload(key_mapping=dict(rep.suggested_key_mapping), auto_fix=False)

    def _on_job_result(self, channel: str, value: object) -> None:
        if channel == "heads":
            self._head_dialog(list(value))  # type: ignore[arg-type]

    def _on_job_error(self, channel: str, msg: str) -> None:
        if channel == "heads":
            self.show_error(msg)

    def _head_dialog(self, names: list[str]) -> None:
        dlg = HeadClassDialog(names, current=self.session.report.arch if self.session.report else None, parent=self)
        if dlg.exec() == QDialog.DialogCode.Accepted and dlg.choice:
            self._t_open = time.perf_counter()
            self.session.reload(arch=dlg.choice)

    # ------------------------------------------------------------------ session events
    def _on_loading(self, what: str) -> None:
        self.summary_label.setText(f"<b>Opening</b> {_esc(what)} … <span style='color:{palette.MUTED_TEXT}'>"
                                   "reading headers, building the model on the meta device</span>")
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
        self._update_summary(loaded)
        self.apply_filter()
        self.expand_trouble()
        if loaded.source.checkpoint and not loaded.source.demo:
            self._add_recent(loaded.source.checkpoint)
        dt = time.perf_counter() - self._t_open if self._t_open else 0.0
        name = os.path.basename(os.path.normpath(rep.index.path))
        self.setWindowTitle(f"{safe_text(name)} → {safe_text(rep.arch or 'checkpoint only')} — Checkpoint Explorer")
        self.status_label.setText(f"{len(rep.index.tensors):,} tensors in {len(rep.index.files)} file(s) · "
                                  f"{rep.index.format} · {loaded.timing_text() or f'report in {dt:.2f} s'}")

    def _on_load_failed(self, msg: str) -> None:
        self.status_label.setText("load failed")
        if self.session.current is None:
            self._show_welcome()
        else:
            self._update_summary(self.session.current)
        self.show_error(msg)
        self._maybe_ready(force=True)

    def show_error(self, msg: str) -> None:
        """Message bar always; a dialog too when interactive. The window stays usable. ``errors`` keeps every
        message shown (a screenshot run prints them on stderr)."""
        self.errors.append(msg)
        shown = safe_text(msg)  # control/bidi characters from a file name or a header shown escaped
        self.message_label.setText(f"⚠ {shown}")
        self.message_bar.show()
        if self.interactive:
            QMessageBox.warning(self, "Checkpoint Explorer", shown)

    def _show_welcome(self) -> None:
        self.summary_label.setText(
            "<b>Open a checkpoint</b> (Ctrl+O) or drop a file or folder here — with its config.json beside it, "
            "every key is checked against the model class. No data? Try <b>File › Open demo</b>."
        )

    def _update_summary(self, loaded: Loaded) -> None:
        rep = loaded.report
        counts = loaded.tree.counts  # one place: the tree's roll-up (model keys; "(not in model)": checkpoint tensors)
        n_keys = sum(v for k, v in counts.items() if k not in ("computed", "unexpected", "ignored"))
        n_loading = sum(counts.get(k, 0) for k in LOADED_KINDS)
        for k, b in self.kind_buttons.items():
            n = counts.get(k, 0)
            b.setText(f"{CHIP_LABELS.get(k, palette.look(k).label)} {n:,}")
            b.setToolTip(chip_tooltip(k, n, n_loading=n_loading, n_keys=n_keys))
            b.setVisible(n > 0 or b.isChecked())  # only the statuses present: a legend of this report
        model = f"<b>{_esc(rep.arch)}</b>" if rep.arch else "<b>no model</b> (tensor list only; open a config to check loading)"
        parts = [f"{_esc(os.path.basename(os.path.normpath(rep.index.path)))} → {model}"]
        if rep.has_model:
            top = next((c for c in loaded.tree.children if c.path != "(not in model)"), None)
            total = top.numel if top is not None else 0
            fresh = top.fresh if top is not None else 0
            loaded_n = total - fresh
            bad = sum(counts.get(k, 0) for k in palette.TROUBLE)
            verdict = (f"<span style='color:{palette.look('matched').color}'><b>✓ everything loads</b></span>" if rep.is_clean
                       else f"<span style='color:{palette.look('missing').color}'><b>{bad} key{'s' if bad != 1 else ''} need attention</b></span>")
            parts.append(verdict)
            parts.append(f"{n_loading}/{n_keys} keys load · {human_count(loaded_n, digits=1)} params loaded · "
                         f"<b>{human_count(fresh, digits=1)}</b> newly initialised ({fmt_percent(100 * fresh / (total or 1))})")
            if rep.load_dtype:
                parts.append(f"loads as {rep.load_dtype}")
        else:
            parts.append(f"{len(rep.index.tensors):,} tensors, {human_count(rep.index.total_params, digits=1)} values")
        text = " &nbsp;·&nbsp; ".join(parts)
        trouble = []
        for k, keys in (("missing", rep.missing), ("mismatched", [m[0] for m in rep.mismatched]), ("unexpected", rep.unexpected)):
            if keys:
                lk = palette.look(k)
                shown = ", ".join(_esc(x) for x in list(keys)[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
                trouble.append(f"<span style='color:{lk.color}'><b>{lk.glyph} {lk.label}:</b></span> {shown}")
        if trouble:
            text += "<br>" + " &nbsp;&nbsp; ".join(trouble)
        self.summary_label.setText(text)
        sugg = rep.suggested_key_mapping
        if sugg:
            eff = rep.suggestion_effect or {}
            txt = ", ".join(f"{k!s} → {v!r}" for k, v in sugg.items())
            after = f" (then {eff.get('missing', '?')} missing, {eff.get('unexpected', '?')} unexpected)" if eff else ""
            self.suggest_label.setText(f"Suggested key mapping: <code>{_esc(txt)}</code>{after}")
            self.suggest_label.show()
            self.suggest_btn.show()
        else:
            self.suggest_label.hide()
            self.suggest_btn.hide()
        km = rep.key_mapping
        if km:
            self.summary_label.setText(self.summary_label.text() + f" &nbsp;·&nbsp; key mapping: <code>{_esc(str(dict(km)))}</code>")

    # ------------------------------------------------------------------ init check (published by the session)
    def _on_init_changed(self) -> None:
        """Badges, column and filter chip from ``session.init_results`` (one place for every view)."""
        from .entries import untrained_rows, untrained_tree

        res = self.session.init_results
        b = self.untrained_button
        if not res:
            self.tree_model.set_untrained(None, None)
            self.table_model.set_untrained(None)
            rep = self.session.report
            b.setText(CHIP_LABELS["untrained"])
            b.setEnabled(rep is not None and rep.spec is not None and hasattr(self, "init_panel"))
        else:
            flagged = self.session.untrained
            self.tree_model.set_untrained(*untrained_tree(self.tree_model.tree_index, flagged))
            self.table_model.set_untrained(untrained_rows(self.table_model.rows, flagged))
            self.tree.viewport().update()
            self.table.viewport().update()
            b.setText(f"{CHIP_LABELS['untrained']} {len(flagged):,}")
            b.setEnabled(bool(flagged) or b.isChecked())
        self.apply_filter()

    def _untrained_badge(self, index: QModelIndex) -> list[tuple[str, str]]:
        """The "looks untrained" badge of a tree item (rolled up: "3 untrained") or table row."""
        if not self.session.init_results or not index.isValid():
            return []
        col = palette.look("untrained").color
        if index.model() is self.tree_proxy:
            it = self.tree_proxy.mapToSource(index).internalPointer()
            n = self.tree_model.untrained_count(it)
            return [("?" if it.is_param else f"? {n}", col)] if n else []
        row = self.table_proxy.mapToSource(index).row()
        return [("?", col)] if self.table_model.untrained_text(self.table_model._vis[row]) else []

    def _on_untrained_toggled(self, on: bool) -> None:
        if on and not self.session.init_results and hasattr(self, "init_panel"):
            self.init_panel.run()  # the filter applies when its results arrive (initChanged)
        self.apply_filter()

    # ------------------------------------------------------------------ filtering
    def current_filter(self) -> Filter:
        kinds = frozenset(k for k, b in self.kind_buttons.items() if b.isChecked())
        return Filter(self.search.text().strip(), self.mode.currentText(), kinds or None,
                      untrained=self.untrained_button.isChecked())

    def apply_filter(self) -> None:
        from ..core.errors import ExplorerError, PatternTooSlow

        flt = self.current_filter()
        try:
            flt.matcher()
            self.tree_proxy.set_filter(flt)  # vectorised masks, regexes under a time budget; see filtering.py
            n_rows = self.table_proxy.set_filter(flt)
        except Exception as e:  # a half-typed or catastrophic regex: say so, keep the last filter
            self.search.setStyleSheet(f"border: 1px solid {palette.look('missing').color};")
            slow = isinstance(e, PatternTooSlow)
            self.match_label.setText("regex too slow" if slow else str(e) if isinstance(e, ExplorerError) else f"bad regex: {e}")
            self.match_label.setToolTip(str(e))
            if slow:  # the tree may already show the new filter: both views go back to the last one that ran
                good = getattr(self, "_good_filter", None) or Filter()
                self.tree_proxy.set_filter(good)
                self.table_proxy.set_filter(good)
            return
        self._good_filter = flt
        self.search.setStyleSheet("")
        self.match_label.setToolTip("")
        if flt.active:
            self.match_label.setText(f"{n_rows:,} of {len(self.table_model.rows):,} tensors")
            self._expand_matches()
        else:
            self.match_label.setText("")

    def _expand_matches(self, limit: int = 200) -> None:
        """Expand the branches that lead to the first ``limit`` matching parameters."""
        seen: set[int] = set()
        for it in self.tree_proxy.first_matches(limit):
            p = it.parent
            chain = []
            while p is not None and p is not self.tree_model.root and id(p) not in seen:
                seen.add(id(p))
                chain.append(p)
                p = p.parent
            for q in reversed(chain):
                idx = self.tree_proxy.mapFromSource(self.tree_model.createIndex(q.row, 0, q))
                if idx.isValid():
                    self.tree.expand(idx)

    def focus_search(self) -> None:
        self.search.setFocus()
        self.search.selectAll()

    def clear_filter(self) -> None:
        self.search.clear()
        for b in (*self.kind_buttons.values(), self.untrained_button):
            b.blockSignals(True)
            b.setChecked(False)
            b.blockSignals(False)
        self.apply_filter()

    def expand_trouble(self, limit: int = 300) -> None:
        """Expand the top of the tree and every branch that holds a missing/mismatched/unexpected entry."""
        top = self.tree_proxy.index(0, 0)
        if top.isValid():
            self.tree.expand(top)
        n = 0
        for it in self.tree_model.param_items():
            if it.kind in palette.TROUBLE and n < limit:
                p = it.parent
                while p is not None and p is not self.tree_model.root:
                    idx = self.tree_proxy.mapFromSource(self.tree_model.createIndex(p.row, 0, p))
                    if idx.isValid():
                        self.tree.expand(idx)
                    p = p.parent
                n += 1
        for i in range(self.tree_proxy.rowCount()):
            idx = self.tree_proxy.index(i, 0)
            if self.tree_proxy.mapToSource(idx).internalPointer().name == "(not in model)":
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

    def _on_tree_current(self, cur: QModelIndex, _prev: QModelIndex) -> None:
        if self._syncing or not cur.isValid():
            return
        it: TreeItem = self.tree_proxy.mapToSource(cur).internalPointer()
        rep = self.session.report
        if rep is None:
            return
        self._syncing = True
        try:
            if it.is_param:
                rows = self.table_model.rows_for_key(it.path)
                if not rows:
                    r = self.table_model.row_for_name(it.path)
                    rows = [r] if r is not None else []
            else:
                rows = self.table_model.rows_under(it.path) if it.path != "(not in model)" else [
                    self.table_model.row_for_name(c.path) for c in it.children]
            self._select_table_rows([r for r in rows if r is not None])
        finally:
            self._syncing = False
        self._set_selection(selection_for_item(rep, it))

    def _select_table_rows(self, rows: list[int]) -> None:
        sm = self.table.selectionModel()
        sel = QItemSelection()
        proxy_rows = sorted(r2 for r2 in (self.table_proxy.mapFromSource(self.table_model.index(r, 0)).row() for r in rows) if r2 >= 0)
        last_col = self.table_proxy.columnCount() - 1
        start = prev = None
        for r in proxy_rows + [None]:
            if start is not None and (r is None or r != prev + 1):
                sel.select(self.table_proxy.index(start, 0), self.table_proxy.index(prev, last_col))
                start = None
            if r is not None and start is None:
                start = r
            prev = r
        sm.select(sel, QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows)
        if proxy_rows:
            first = self.table_proxy.index(proxy_rows[0], 0)
            sm.setCurrentIndex(first, QItemSelectionModel.SelectionFlag.NoUpdate)
            self.table.scrollTo(first, QAbstractItemView.ScrollHint.PositionAtTop if len(proxy_rows) > 1 else QAbstractItemView.ScrollHint.EnsureVisible)

    def _on_table_current(self, cur: QModelIndex, _prev: QModelIndex) -> None:
        if self._syncing or not cur.isValid():
            return
        row = self.table_model.row(self.table_proxy.mapToSource(cur).row())
        rep = self.session.report
        if rep is None:
            return
        self._syncing = True
        try:
            key = row.key.split(" (+", 1)[0] if row.key else row.name
            src = self.tree_model.index_for_key(key)
            idx = self.tree_proxy.mapFromSource(src) if src.isValid() else QModelIndex()
            if idx.isValid():
                self.tree.selectionModel().setCurrentIndex(idx, QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows)
                self.tree.scrollTo(idx)
            else:
                self.tree.selectionModel().clearSelection()
        finally:
            self._syncing = False
        self._set_selection(selection_for_row(rep, row))

    def _set_selection(self, sel: Selection) -> None:
        self.details.show_selection(sel)
        self.selectionChanged.emit(sel)
        if not sel.names:
            self._maybe_ready()

    def show_selection(self, sel: Selection) -> None:
        """Show a selection that has no row in the tree or table (e.g. a tensor only in checkpoint B)."""
        self._syncing = True
        try:
            self.tree.selectionModel().clearSelection()
            self.table.selectionModel().clearSelection()
        finally:
            self._syncing = False
        self._set_selection(sel)

    def select_tensor(self, name: str) -> bool:
        """Select an on-disk tensor (or model key / module path) as if clicked in the tree or table, so the
        details panel shows it — what the Compare and Looks-untrained tabs call for their rows. A tensor a
        filter hides is still shown in the details panel. Reselecting what is shown redraws it (a tab may
        have changed what the histogram overlays). True if found."""
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

    def _on_tab_changed(self, _i: int) -> None:
        # the open tab decides the histogram's overlay (fresh init, or checkpoint B on the Compare tab)
        if self.details.selection is not None:
            self.details.redraw()

    # ------------------------------------------------------------------ screenshots / readiness
    def interesting_key(self) -> str | None:
        """A tensor worth showing first. With a model: one the init check flagged, else the largest loaded 2-D
        weight (its fresh-init overlay shows pretrained vs fresh). Without: a mismatched/unexpected one."""
        rep = self.session.report
        if rep is None:
            return None
        flagged = self.session.untrained
        if rep.spec is not None and flagged:
            rows = [r for r in self.table_model.rows if r.name in flagged and r.kind in LOADED_KINDS]
            if rows:
                r = max(rows, key=lambda r: (rep.index.tensors[r.name].numel, r.name))
                return r.key.split(" (+", 1)[0] or r.name
        best = None
        odd = [(rep.index.tensors[r.name].numel, r.name) for r in self.table_model.rows
               if r.name and r.kind in ("mismatched", "unexpected") and rep.index.tensors[r.name].is_floating]
        if rep.spec is None and odd and max(odd)[0] >= 256:
            return max(odd)[1]
        for r in self.table_model.rows:
            info = rep.index.tensors.get(r.name) if r.name else None
            if info is not None and info.is_floating and len(info.shape) == 2 and r.kind in LOADED_KINDS:
                if "embed" in r.name and best is not None:
                    continue
                if best is None or info.numel > best[0] and "embed" not in r.name:
                    best = (info.numel, r.key or r.name)
        if best is None and odd:
            return max(odd)[1]
        return best[1] if best else None

    def when_ready(self) -> None:
        """Emit ``ready`` once the current report is shown, its first histogram drawn, and every panel holding
        the ready state (``hold_ready``: the fresh-init overlay, a screenshot's init check) has released it."""
        self._waiting_ready = True
        self.session.loaded.connect(self._on_loaded_for_ready)

    def _on_loaded_for_ready(self, _loaded: Any = None) -> None:
        if not self._waiting_ready:
            return
        self.readyLoaded.emit()  # panels may hold the ready state here (e.g. run the init check first)
        if not self._preparing():
            self._select_interesting()

    def _preparing(self) -> bool:
        return any(h.startswith("prepare") for h in self._ready_holds)

    def _select_interesting(self, _loaded: Any = None) -> None:
        for hook in self.interesting_hooks:
            if hook():
                return
        key = self.interesting_key()
        if key is None or not self.select_key(key):
            self._maybe_ready(force=True)

    def hold_ready(self, name: str) -> None:
        """Keep ``ready`` from firing until ``release_ready(name)`` (only while waiting for it). Holds named
        ``prepare…`` (an init check, a diff) also delay choosing the tensor to show until all are released."""
        if self._waiting_ready:
            self._ready_holds.add(name)

    def release_ready(self, name: str) -> None:
        if name not in self._ready_holds:
            return
        self._ready_holds.discard(name)
        if name.startswith("prepare"):
            if not self._preparing():
                self._select_interesting()
        else:
            self._maybe_ready()

    def _maybe_ready(self, force: bool = False) -> None:
        if self._waiting_ready and (force or self.session.current is not None):
            if force:
                self._ready_holds.clear()
            # checked on the next turn: slots connected after ours (the overlay) may still take a hold
            QTimer.singleShot(0, self._emit_ready)

    def _emit_ready(self) -> None:
        if self._waiting_ready and not self._ready_holds:
            self._waiting_ready = False
            self.ready.emit()

    def _on_split_moved(self, _pos: int, _index: int) -> None:
        self._split_chosen = True

    def _fit_split(self) -> None:
        """Unless the user chose a width, give the tree what its names (``NAME_LEVELS``) and roll-ups need, up to
        60% of the window; the tabs and details take the rest."""
        if self._split_chosen:
            return
        sizes = self.split.sizes()
        total = sum(sizes)
        if total <= 0:
            return
        tree = min(max(tree_width_needed(self.tree), sizes[0]), int(0.6 * total))
        if tree != sizes[0]:
            self.split.blockSignals(True)  # not a user's move
            try:
                self.split.setSizes([tree, total - tree])
            finally:
                self.split.blockSignals(False)

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
        cmp = getattr(self, "compare_panel", None)
        out += map(str, named_inputs(s.extras.get("compare"), getattr(cmp, "other", None)))
        idx_b = getattr(cmp, "index_b", None)
        if idx_b is not None:
            out += [idx_b.path, *idx_b.files]
        return list(dict.fromkeys(out))

    def save_screenshot(self, path: str, *, force: bool = False) -> None:
        """Render the whole window to a PNG (atomically). Never over an input of the window or anything but a
        regular file; over an existing file that is not a PNG only with ``force``. Raises ExplorerError or OSError."""
        from ..core.fsio import check_output
        from ..core.outputs import is_png

        check_output(path, inputs=self.input_files(), is_ours=is_png, force=force, what="screenshot PNG")
        save_png(self.grab(), path)

    # ------------------------------------------------------------------ recent files, settings, drops
    def _add_recent(self, path: str) -> None:
        path = os.path.abspath(path)
        rec = [p for p in self._recent() if p != path]
        rec.insert(0, path)
        self.settings.setValue("recent", rec[:MAX_RECENT])
        self._fill_recent()

    def _recent(self) -> list[str]:
        v = self.settings.value("recent", [])
        if isinstance(v, str):
            v = [v]
        return [str(p) for p in (v or [])]

    def _fill_recent(self) -> None:
        self.recent_menu.clear()
        rec = self._recent()
        for p in rec:
            a = self.recent_menu.addAction(safe_text(p).replace("&", "&&"))  # shown escaped; "&" is not a mnemonic
            a.triggered.connect(lambda _c=False, p=p: self.open_path(p))
        self.recent_menu.setEnabled(bool(rec))

    def _restore_settings(self) -> None:
        g = self.settings.value("geometry")
        if isinstance(g, (QByteArray, bytes)):
            self.restoreGeometry(g)
        for name, sp in (("split", self.split), ("rightSplit", self.right)):
            s = self.settings.value(name)
            if isinstance(s, (QByteArray, bytes)) and sp.restoreState(s) and sp is self.split:
                self._split_chosen = True
        self.details.histogram.log_y.setChecked(str(self.settings.value("logY", "false")).lower() == "true")
        try:
            self.details.histogram.bins.setValue(int(self.settings.value("bins", 256)))
        except (TypeError, ValueError):
            pass

    def _save_settings(self) -> None:
        self.settings.setValue("geometry", self.saveGeometry())
        self.settings.setValue("split", self.split.saveState())
        self.settings.setValue("rightSplit", self.right.saveState())
        self.settings.setValue("logY", self.details.histogram.log_y.isChecked())
        self.settings.setValue("bins", self.details.histogram.bins.value())
        self.settings.sync()

    def closeEvent(self, event: Any) -> None:
        if self.persist:
            self._save_settings()
        self.session.close()
        super().closeEvent(event)

    def dragEnterEvent(self, event: Any) -> None:
        if event.mimeData().hasUrls() and any(u.isLocalFile() for u in event.mimeData().urls()):
            event.acceptProposedAction()

    def dragMoveEvent(self, event: Any) -> None:
        self.dragEnterEvent(event)

    def dropEvent(self, event: Any) -> None:
        if self.handle_drop(event.mimeData(), event.position().toPoint()) is not False:
            event.acceptProposedAction()

    def drop_choices(self, path: str) -> list[tuple[str, Any]]:
        """What a file dropped on the window can be, as (menu text, action) — first is the default."""
        from .plan_editor import looks_like_plan

        ed = getattr(self, "plan_editor", None)
        cmp = getattr(self, "compare_panel", None)
        is_json = path.lower().endswith(".json") and os.path.isfile(path)
        name = os.path.basename(path)
        if is_json and ed is not None and ed.plan is not None and looks_like_plan(path):
            return [("Load as plan", lambda: self._load_dropped_plan(path))]
        out: list[tuple[str, Any]] = []
        if not (is_json and name != "model.safetensors.index.json" and not name.endswith(".index.json")):
            out.append(("Open as checkpoint", lambda: self.open_path(path, as_checkpoint=True)))
            if cmp is not None:
                out.append(("Compare with current", lambda: self._compare_dropped(path)))
        if is_json or os.path.isfile(os.path.join(path, "config.json")):
            out.append(("Open as config", lambda: self._config_dropped(path)))
        return out

    def handle_drop(self, mime: Any, pos: Any = None) -> Any:
        """Act on dropped files. Nothing open yet: open it. Otherwise a menu at the drop position offers
        open / compare / use as config (a dropped plan JSON goes to the plan editor). Returns the menu (it is
        only shown when interactive), None when acted at once, False when there was nothing to drop."""
        paths = [u.toLocalFile() for u in mime.urls() if u.isLocalFile()]
        if not paths:
            return False
        path = paths[0]
        if self.session.current is None and not (path.lower().endswith(".json") and os.path.basename(path) == "config.json"):
            self.open_path(path)
            return None
        choices = self.drop_choices(path)
        if len(choices) == 1 and choices[0][0] == "Load as plan":
            choices[0][1]()
            return None
        menu = QMenu(self)
        title = menu.addAction(os.path.basename(os.path.normpath(path)) or path)
        title.setEnabled(False)
        menu.addSeparator()
        for text, fn in choices:
            menu.addAction(text).triggered.connect(lambda _c=False, f=fn: f())
        if self.interactive:
            from PySide6.QtCore import QPoint

            menu.exec(self.mapToGlobal(pos if pos is not None else QPoint(self.width() // 2, self.height() // 2)))
        return menu

    def _load_dropped_plan(self, path: str) -> None:
        ed = self.plan_editor
        self.tabs.setCurrentWidget(ed)
        ed._guard(ed.load_plan, path)

    def _compare_dropped(self, path: str) -> None:
        self.tabs.setCurrentWidget(self.compare_panel)
        self.compare_panel.compare_with(path)

    def _config_dropped(self, path: str) -> None:
        if self.session.source is None:
            self.show_error("Open a checkpoint first, then drop the config to check it against.")
            return
        self._t_open = time.perf_counter()
        self.session.reload(config=path)

    def legend_html(self) -> str:
        """Help › Legend: every status (colour, glyph, meaning) and every badge drawn beside names."""
        from .badges import BADGE_HELP

        rows = "".join(
            f"<tr><td style='color:{lk.color};font-weight:bold'>{lk.glyph}</td><td><b>{lk.label}</b></td><td>{lk.meaning}</td></tr>"
            for lk in palette.LOOKS.values()
        )
        rows += "<tr><td colspan=3 style='padding-top:8px'><b>Badges</b> (right of a name; on a module they count what is below)</td></tr>"
        rows += "".join(f"<tr><td style='font-weight:bold'>{_esc(g)}</td><td><b>{_esc(label)}</b></td><td>{_esc(meaning)}</td></tr>"
                        for g, label, meaning in BADGE_HELP)
        return f"<table cellspacing=6>{rows}</table>"

    def _show_legend(self) -> QMessageBox:
        return self._rich_box("Legend", self.legend_html())


def chip_tooltip(kind: str, n: int, *, n_loading: int, n_keys: int) -> str:
    """What a status chip counts. Model-key statuses count keys of the model (so matched + renamed + tied + dtype
    is the tree's "N/M loaded"); unexpected and ignored count checkpoint tensors, which have no model key."""
    lk = palette.look(kind)
    if kind in ("unexpected", "ignored"):
        what = f"{n:,} checkpoint tensor{'s' if n != 1 else ''} (not model keys): {lk.meaning}"
    else:
        what = f"{n:,} model key{'s' if n != 1 else ''}: {lk.meaning}"
        if kind in LOADED_KINDS:
            what += (f"\nmatched + renamed + tied + dtype = {n_loading:,} of {n_keys:,} model keys load "
                     "(the tree's “loaded”)")
    return f"{lk.label}: {what}\nClick to show only this status (several can be combined)"


TABLE_HIDDEN = (TensorTableModel.DTYPE, TensorTableModel.SIZE, TensorTableModel.HOW, TensorTableModel.PLAN,
                TensorTableModel.UNTRAINED)


def size_table_columns(view: QTableView) -> None:
    """The tensor table's columns: the two names share the free width (they are what a user reads); status,
    plan, init check and shape are as wide as their longest usual text and resizable; dtype, size and how
    (all in the details panel and the row tooltip) wait behind the header's right-click menu. The plan and
    init-check columns sit beside the key and appear when their panels have something to show."""
    T = TensorTableModel
    h = view.horizontalHeader()
    fm = view.fontMetrics()
    h.setStretchLastSection(False)
    h.setMinimumSectionSize(36)
    for col, visual in ((T.PLAN, 3), (T.UNTRAINED, 4)):
        h.moveSection(h.visualIndex(col), visual)
    for col in range(h.count()):
        h.setSectionResizeMode(col, QHeaderView.ResizeMode.Interactive)
    for col in (T.NAME, T.KEY):
        h.setSectionResizeMode(col, QHeaderView.ResizeMode.Stretch)
    widths = {T.STATUS: fm.horizontalAdvance("unexpected") + 54, T.PLAN: fm.horizontalAdvance("↻ reinit") + 16,
              T.UNTRAINED: fm.horizontalAdvance("⚠ untrained?") + 14, T.SHAPE: fm.horizontalAdvance("1536×384") + 18,
              T.DTYPE: fm.horizontalAdvance("bfloat16") + 16, T.SIZE: fm.horizontalAdvance("88.0 MiB") + 18, T.HOW: 240}
    for col, w in widths.items():
        view.setColumnWidth(col, w)
    for col in TABLE_HIDDEN:
        view.setColumnHidden(col, True)
    install_column_menu(h)


def fit_key_column(view: QTableView, model: TensorTableModel) -> None:
    """When nearly every Model key is the on-disk name (or it with a prefix added/removed, shown as "= on-disk" /
    "+ bert."), the Model key column shrinks to those short notes and the On-disk name column takes the width;
    otherwise both names share it."""
    T = TensorTableModel
    h = view.horizontalHeader()
    full, notes = model.key_notes()
    if model.rows and len(full) <= len(model.rows) // 2:
        fm = view.fontMetrics()
        w = max([fm.horizontalAdvance(n) for n in notes] + [fm.horizontalAdvance(T.COLUMNS[T.KEY])]
                + [min(fm.horizontalAdvance(k), 130) for k in full[:200]]) + 24
        h.setSectionResizeMode(T.KEY, QHeaderView.ResizeMode.Interactive)
        view.setColumnWidth(T.KEY, w)
    else:
        h.setSectionResizeMode(T.KEY, QHeaderView.ResizeMode.Stretch)


class HeadClassDialog(QDialog):
    """A searchable list of transformers classes for the config's model type."""

    def __init__(self, names: list[str], *, current: str | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Choose head class")
        self.choice: str | None = None
        self.filter = QLineEdit()
        self.filter.setPlaceholderText("Filter classes…")
        self.list = QListWidget()
        self.list.addItems(names)
        if current in names:
            self.list.setCurrentRow(names.index(current))
        self.filter.textChanged.connect(self._on_filter)
        self.list.itemDoubleClicked.connect(lambda _i: self.accept())
        bb = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        bb.accepted.connect(self.accept)
        bb.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addWidget(self.filter)
        lay.addWidget(self.list)
        lay.addWidget(bb)
        self.resize(420, 480)

    def _on_filter(self, text: str) -> None:
        t = text.lower()
        first = None
        for i in range(self.list.count()):
            it = self.list.item(i)
            hide = t not in it.text().lower()
            it.setHidden(hide)
            if not hide and first is None:
                first = i
        if first is not None:
            self.list.setCurrentRow(first)

    def accept(self) -> None:
        it = self.list.currentItem()
        self.choice = it.text() if it is not None and not it.isHidden() else None
        super().accept()


def _esc(s: Any) -> str:
    """Text from a file for a rich-text label: control/bidi characters escaped visibly, then HTML-escaped."""
    import html

    return html.escape(safe_text(s))
