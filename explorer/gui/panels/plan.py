"""The plan editor: context menus on the tree and table, a rule dialog with a live preview, the plan as a badge
beside every name, undo/redo, save/load, and an export dialog with progress and cancel.

Everything it decides is done by ``explorer.core.plan`` / ``explorer.core.export``; this module only edits an
immutable ``Plan`` held by the session (each edit is an undoable step on ``session.undo_stack``) and renders
``Plan.resolve(report)``: the tab, its menu, the badges beside names and the plan entries of the context menu.
"""
from __future__ import annotations

import os
from typing import Any

from PySide6.QtCore import QModelIndex, Qt, Signal
from PySide6.QtGui import QAction, QKeySequence, QUndoStack
from PySide6.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QLineEdit,
    QListWidget,
    QMenu,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ...core.fmt import safe_text
from ...core.plan import Action
from .. import palette
from ..request import Source
from ..models.tree_model import KEY_ROLE
from ..workers import JobHandle
from .base import Capability, DropChoice, Panel, PanelHost


class PlanPanel(Panel):
    """The "Plan" panel over ``session.plan`` (None until a report with a model is shown) and its undo stack."""

    title = "Plan"
    menu_title = "&Plan"
    capabilities = frozenset({Capability.TABLE_BADGES})

    planChanged = Signal(object)  # Plan | None
    exportProgress = Signal(int, int)  # permille done, 1000
    exported = Signal(object)  # ExportResult
    exportFailed = Signal(str)

    def __init__(self, host: PanelHost) -> None:
        super().__init__(host)
        self._module_badges: dict[str, str] = {}
        self.last_export: Any = None
        self.export_job: JobHandle | None = None

        self.summary = QLabel("Open a checkpoint with a model to plan what to keep, re-initialise, freeze or drop.")
        self.summary.setWordWrap(True)
        self.rules = QListWidget()
        self.rules.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.rules.setToolTip("Rules apply top to bottom; a later rule wins for each setting it changes")
        buttons = QHBoxLayout()
        self.btn_add = QPushButton("Add rule…")
        self.btn_remove = QPushButton("Remove rule")
        self.btn_undo = QPushButton("Undo")
        self.btn_redo = QPushButton("Redo")
        self.btn_save = QPushButton("Save plan…")
        self.btn_load = QPushButton("Load plan…")
        self.btn_export = QPushButton("Export…")
        for b in (self.btn_add, self.btn_remove, self.btn_undo, self.btn_redo, self.btn_save, self.btn_load, self.btn_export):
            buttons.addWidget(b)
        buttons.addStretch(1)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addLayout(buttons)
        lay.addWidget(self.summary)
        lay.addWidget(self.rules, 1)

        self.btn_add.clicked.connect(lambda: self.rule_dialog())
        self.btn_remove.clicked.connect(self._remove_selected_rule)
        self.btn_undo.clicked.connect(self.undo_stack.undo)
        self.btn_redo.clicked.connect(self.undo_stack.redo)
        self.btn_save.clicked.connect(lambda: self.save_dialog())
        self.btn_load.clicked.connect(lambda: self.load_dialog())
        self.btn_export.clicked.connect(lambda: self.export_dialog())
        self.undo_stack.canUndoChanged.connect(self.btn_undo.setEnabled)
        self.undo_stack.canRedoChanged.connect(self.btn_redo.setEnabled)
        self.session.planChanged.connect(self._on_plan_changed)
        self._set_enabled(False)

    # ------------------------------------------------------------------ state (the session's)
    @property
    def plan(self) -> Any:
        return self.session.plan

    @property
    def entries(self) -> dict[str, Any]:
        return self.session.plan_entries

    @property
    def report(self) -> Any:
        return self.session.report

    @property
    def undo_stack(self) -> QUndoStack:
        return self.session.undo_stack

    def _set_enabled(self, on: bool) -> None:
        for b in (self.btn_add, self.btn_remove, self.btn_save, self.btn_load, self.btn_export):
            b.setEnabled(on)
        self.btn_undo.setEnabled(on and self.undo_stack.canUndo())
        self.btn_redo.setEnabled(on and self.undo_stack.canRedo())

    def _on_plan_changed(self, plan: Any) -> None:
        self._module_badges = self._roll_up()
        self.rules.clear()
        if plan is not None:
            hits = plan.rule_hits(self.entries)
            for r, n in zip(plan.rules, hits):
                self.rules.addItem(f"{r.describe()}  —  {n} key(s)")
        self.summary.setText(self.summary_text())
        self._set_enabled(plan is not None)
        self.planChanged.emit(plan)

    def set_plan(self, plan: Any, text: str) -> None:
        """Replace the plan as one undoable step."""
        self.session.set_plan(plan, text)

    def summary_text(self) -> str:
        if self.plan is None:
            return "No model: a plan needs a checkpoint matched against a model."
        acts = {Action.KEEP: 0, Action.REINIT: 0, Action.DROP: 0}
        frozen = 0
        for e in self.entries.values():
            acts[e.action] += 1
            frozen += e.is_model_key and not e.trainable
        km = f" · key mapping {dict(self.plan.key_mapping)}" if self.plan.key_mapping else ""
        return (f"{acts[Action.KEEP]} keep · {acts[Action.REINIT]} reinit · {acts[Action.DROP]} drop · {frozen} frozen · "
                f"{len(self.plan.rules)} rule(s){km}")

    # ------------------------------------------------------------------ protocol
    def fill_menu(self, menu: QMenu) -> None:
        undo = self.undo_stack.createUndoAction(menu, "&Undo")
        undo.setShortcut(QKeySequence(QKeySequence.StandardKey.Undo))
        redo = self.undo_stack.createRedoAction(menu, "&Redo")
        redo.setShortcuts([QKeySequence("Ctrl+Shift+Z"), QKeySequence("Ctrl+Y")])
        menu.addAction(undo)
        menu.addAction(redo)
        menu.addSeparator()
        for text, slot, key in (("Add &rule…", self.rule_dialog, "Ctrl+R"), ("&Save plan…", self.save_dialog, "Ctrl+S"),
                                ("&Load plan…", self.load_dialog, "Ctrl+L"),
                                ("&Export patched checkpoint…", self.export_dialog, "Ctrl+E")):
            a = QAction(text, menu)
            a.setShortcut(QKeySequence(key))
            a.triggered.connect(lambda _c=False, s=slot: s())
            menu.addAction(a)

    def badges(self, key: str, is_leaf: bool) -> list[tuple[str, str]]:
        return [(self.badge(key), palette.ACCENT)] if self.plan is not None else []

    def drop_choices(self, path: str) -> list[DropChoice]:
        if self.plan is not None and path.lower().endswith(".json") and looks_like_plan(path):
            return [DropChoice("Load as plan", lambda: (self.host.raise_panel(self), self.try_load_plan(path)), only=True)]
        return []

    # ------------------------------------------------------------------ badges
    def badge(self, key: str) -> str:
        """Badge text of a model key, checkpoint key or module path ('' when nothing to say)."""
        e = self.entries.get(key)
        if e is None:
            return self._module_badges.get(key, "")
        parts = []
        if e.action is Action.REINIT:
            parts.append("↻ reinit")
        elif e.action is Action.DROP:
            parts.append("✕ drop")
        if e.is_model_key and not e.trainable:
            parts.append("❄")
        if e.lr_scale is not None and e.trainable:
            parts.append(f"×{e.lr_scale:g}")
        return " ".join(parts)

    def badge_for_index(self, index: QModelIndex) -> str:
        if self.plan is None or not index.isValid():
            return ""
        key = index.data(KEY_ROLE)
        return self.badge(key) if isinstance(key, str) else ""

    def _roll_up(self) -> dict[str, str]:
        agg: dict[str, list[int]] = {}  # path -> [keys, frozen, reinit, drop]
        for k, e in self.entries.items():
            if not e.is_model_key:
                continue
            parts = k.split(".")
            for i in range(0, len(parts)):
                a = agg.setdefault(".".join(parts[:i]), [0, 0, 0, 0])
                a[0] += 1
                a[1] += not e.trainable
                a[2] += e.action is Action.REINIT
                a[3] += e.action is Action.DROP
        out = {}
        for path, (n, fr, ri, dr) in agg.items():
            bits = []
            if fr:
                bits.append("❄" if fr == n else f"❄ {fr}/{n}")
            if ri:
                bits.append(f"↻ {ri}")
            if dr:
                bits.append(f"✕ {dr}")
            if bits:
                out[path] = " ".join(bits)
        return out

    # ------------------------------------------------------------------ edits (what menus and dialogs call)
    def add_rules(self, rules: list[Any], text: str) -> None:
        plan = self.plan
        for r in rules:
            plan = plan.with_rule(r)
        self.set_plan(plan, text)

    def _key_rules(self, paths: list[str], text: str, **attrs: Any) -> None:
        from ...core.plan import Rule

        self.add_rules([Rule(p, "key", **attrs) for p in paths], f"{text} {_short(paths)}")

    def freeze(self, paths: list[str]) -> None:
        self._key_rules(paths, "Freeze", trainable=False)

    def unfreeze(self, paths: list[str]) -> None:
        self._key_rules(paths, "Unfreeze", trainable=True)

    def reinit(self, paths: list[str]) -> None:
        self._key_rules(paths, "Re-initialise", action="reinit")

    def drop(self, paths: list[str]) -> None:
        self._key_rules(paths, "Drop", action="drop")

    def keep(self, paths: list[str]) -> None:
        self._key_rules(paths, "Keep", action="keep")

    def set_lr_scale(self, paths: list[str], scale: float) -> None:
        self._key_rules(paths, f"LR ×{scale:g} for", lr_scale=scale)

    def reset(self, paths: list[str]) -> None:
        """Remove the per-node rules on these paths and below (globs and regexes stay)."""
        from dataclasses import replace

        def hit(r: Any) -> bool:
            return r.match == "key" and any(r.pattern == p or r.pattern.startswith(p + ".") or not p for p in paths)

        rules = tuple(r for r in self.plan.rules if not hit(r))
        self.set_plan(replace(self.plan, rules=rules), f"Reset {_short(paths)}")

    def remove_rule(self, i: int) -> None:
        self.set_plan(self.plan.without_rule(i), f"Remove rule {self.plan.rules[i].describe()}")

    def _remove_selected_rule(self) -> None:
        row = self.rules.currentRow()
        if self.plan is not None and 0 <= row < len(self.plan.rules):
            self.remove_rule(row)

    # ------------------------------------------------------------------ context menus
    def context_menu(self, paths: list[str], menu: QMenu) -> None:
        """The plan entries of the right-click menu on tree/table rows."""
        if self.plan is None or not paths:
            return
        title = QAction(f"Plan: {_short(paths)}", menu)
        title.setEnabled(False)
        menu.addAction(title)
        for text, fn in (
            ("Freeze subtree", self.freeze),
            ("Unfreeze subtree", self.unfreeze),
            ("Re-initialise", self.reinit),
            ("Drop", self.drop),
            ("Keep", self.keep),
        ):
            a = menu.addAction(text)
            a.triggered.connect(lambda _c=False, f=fn, p=paths: f(p))
        a = menu.addAction("Learning-rate scale…")
        a.triggered.connect(lambda _c=False, p=paths: self._ask_lr(p))
        menu.addSeparator()
        a = menu.addAction("Reset to default")
        a.triggered.connect(lambda _c=False, p=paths: self.reset(p))
        a = menu.addAction("Rule from this…")
        a.triggered.connect(lambda _c=False, p=paths: self.rule_dialog(p[0]))

    def lr_dialog(self, paths: list[str]) -> QInputDialog:
        """The LR-scale question: a short title (a long one was cut to "Learnin… te scale"), the rest in the label."""
        dlg = QInputDialog(self)
        dlg.setWindowTitle("LR scale")
        dlg.setInputMode(QInputDialog.InputMode.DoubleInput)
        dlg.setLabelText(f"Learning-rate multiplier for {_short(paths)}:")
        dlg.setDoubleRange(0.0, 1e6)
        dlg.setDoubleDecimals(4)
        dlg.setDoubleValue(0.1)
        return dlg

    def _ask_lr(self, paths: list[str]) -> None:
        dlg = self.lr_dialog(paths)
        if dlg.exec() == QDialog.DialogCode.Accepted:
            self.set_lr_scale(paths, dlg.doubleValue())

    # ------------------------------------------------------------------ dialogs
    def rule_dialog(self, pattern: str = "") -> RuleDialog | None:
        if self.plan is None:
            return None
        dlg = RuleDialog(list(self.entries), pattern=pattern, parent=self)
        dlg.accepted.connect(lambda: self._add_from_dialog(dlg))  # OK adds the rule, however the dialog was shown
        if self.host.interactive:
            dlg.exec()
        return dlg

    def _add_from_dialog(self, dlg: RuleDialog) -> None:
        if dlg.rule is not None and self.plan is not None:
            self.add_rules([dlg.rule], f"Add rule {dlg.rule.describe()}")

    def save_plan(self, path: str, *, force: bool = False) -> None:
        """Write the plan (never over a file the window read; over a non-plan file only with ``force``)."""
        from ...core.plan import save_plan

        save_plan(self.plan, path, inputs=self.host.inputs(), force=force)

    def load_plan(self, path: str) -> None:
        """Load a plan file as one undoable step. Raises ExplorerError."""
        self.session.load_plan(path)

    def try_load_plan(self, path: str) -> bool:
        """``load_plan``, with a bad file shown in the window's message bar instead of raised."""
        return self._guard(self.load_plan, path)

    def save_dialog(self) -> None:
        if self.plan is None:
            return
        path, _ = QFileDialog.getSaveFileName(self, "Save plan", "plan.json", "Plan (*.json)")
        if path:
            self._guard(lambda p: self.save_plan(p, force=True), path)  # the dialog asked before replacing a file

    def load_dialog(self) -> None:
        if self.plan is None:
            return
        path, _ = QFileDialog.getOpenFileName(self, "Load plan", "", "Plan (*.json)")
        if path:
            self.try_load_plan(path)

    def _guard(self, fn: Any, *args: Any) -> bool:
        from ...core.errors import ExplorerError

        try:
            fn(*args)
        except ExplorerError as e:
            self.host.show_error(str(e))
            return False
        return True

    def export_dialog(self) -> ExportDialog | None:
        if self.plan is None:
            return None
        dlg = ExportDialog(self, parent=self)
        if self.host.interactive:
            dlg.show()
        return dlg

    # ------------------------------------------------------------------ export (worker)
    def start_export(self, out_dir: str, *, resize: bool = False, dtype: str | None = None,
                     max_shard_size: str | None = None, seed: int = 0) -> None:
        """Run export_checkpoint in a worker; progress/exported/exportFailed report back."""
        from ...core.export import export_checkpoint

        plan, rep = self.plan, self.report
        spec = rep.spec

        def job(progress: Any, cancelled: Any) -> Any:
            def prog(done: int, total: int, _name: str) -> None:
                progress(int(1000 * done / total) if total else 1000, 1000)

            return export_checkpoint(rep.index, plan, out_dir, resize=resize, dtype=dtype, max_shard_size=max_shard_size,
                                     seed=seed, spec=spec, progress=prog, cancel=cancelled)

        h = self.export_job = self.session.jobs.start(job, purpose="export")
        h.progress.connect(self.exportProgress.emit)
        h.returned.connect(self._on_exported)
        h.errored.connect(self.exportFailed.emit)

    def cancel_export(self) -> None:
        self.session.jobs.cancel("export")

    def _on_exported(self, value: Any) -> None:
        self.last_export = value
        self.exported.emit(value)

    def open_result(self, result: Any) -> None:
        arch = result.report.arch
        self.host.open_source(Source(checkpoint=result.out_dir, config=result.out_dir, arch=arch))


class RuleDialog(QDialog):
    """Glob or regex + what to set, with a live count of the keys it hits. ``rule`` is the valid Rule or None."""

    def __init__(self, keys: list[str], *, pattern: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Add plan rule")
        self.keys = keys
        self.rule: Any = None
        self.pattern = QLineEdit(pattern)
        self.pattern.setPlaceholderText("encoder.layer.[0-5]   (* crosses dots; whole name components)")
        self.kind = QComboBox()
        self.kind.addItems(["glob", "regex", "key"])
        if pattern:
            self.kind.setCurrentText("key")
        self.action = QComboBox()
        self.action.addItems(["(unchanged)", "keep", "reinit", "drop"])
        self.trainable = QComboBox()
        self.trainable.addItems(["(unchanged)", "trainable", "frozen"])
        self.lr = QLineEdit()
        self.lr.setPlaceholderText("(unchanged)  e.g. 0.01")
        self.preview = QLabel("")
        self.preview.setWordWrap(True)
        self.preview.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        # a long preview wraps within the dialog's width in a box of its own height: the fields are never squashed
        self.preview.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.preview.setFixedHeight(4 * self.preview.fontMetrics().lineSpacing() + 4)
        self.preview.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        form = QFormLayout()
        form.addRow("Pattern", self.pattern)
        form.addRow("Match", self.kind)
        form.addRow("Action", self.action)
        form.addRow("Training", self.trainable)
        form.addRow("LR scale", self.lr)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        lay.addWidget(self.preview)
        lay.addWidget(self.buttons)
        self.setMinimumWidth(460)
        for w in (self.pattern, self.lr):
            w.textChanged.connect(lambda _t: self.update_preview())
        for c in (self.kind, self.action, self.trainable):
            c.currentIndexChanged.connect(lambda _i: self.update_preview())
        self.update_preview()

    def update_preview(self) -> None:
        from ...core.errors import PlanError
        from ...core.keys import FILTER_BUDGET
        from ...core.plan import Rule

        self.rule = None
        ok = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        text = self.pattern.text().strip()
        if not text:
            self.preview.setText("Type a pattern to see which keys it selects.")
            ok.setEnabled(False)
            return
        action = None if self.action.currentIndex() == 0 else self.action.currentText()
        trainable = {0: None, 1: True, 2: False}[self.trainable.currentIndex()]
        lr_text = self.lr.text().strip()
        try:
            lr = float(lr_text) if lr_text else None
        except ValueError:
            self.preview.setText(f"⚠ LR scale must be a number, found {lr_text!r}")
            ok.setEnabled(False)
            return
        try:
            probe = Rule(text, self.kind.currentText(), trainable=True)  # validates the pattern alone
            hits = probe.select(self.keys, budget=FILTER_BUDGET)  # on the GUI thread: the filter's short budget
            if action is not None or trainable is not None or lr is not None:
                self.rule = Rule(text, self.kind.currentText(), action, trainable, lr)
        except PlanError as e:
            self.preview.setText(f"⚠ {e}")
            ok.setEnabled(False)
            return
        shown = safe_text(", ".join(hits[:3])) + (f", … (+{len(hits) - 3})" if len(hits) > 3 else "")
        need = "" if self.rule is not None else "  — choose an action, training or LR scale"
        self.preview.setText(f"hits {len(hits)} key(s){': ' + shown if hits else ''}{need}")
        ok.setEnabled(self.rule is not None)


class ExportDialog(QDialog):
    """Where and how to export; progress, cancel, and an offer to open the result."""

    def __init__(self, editor: PlanPanel, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.editor = editor
        self.setWindowTitle("Export patched checkpoint")
        rep = editor.report
        base = os.path.normpath(rep.index.folder)
        self.out = QLineEdit(f"{base}-patched")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.out, 1)
        row.addWidget(browse)
        self.resize_box = QCheckBox("Resize mismatched tensors (keep the overlap, init the rest)")
        from ...core.export_options import EXPORT_DTYPES

        self.dtype = QComboBox()
        self.dtype.addItems(["(as stored)", *EXPORT_DTYPES])  # core's list: what export can cast to
        self.shard = QLineEdit()
        self.shard.setPlaceholderText("no sharding, e.g. 2GB")
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setTextVisible(False)  # "1%" drawn over the chunk was unreadable: the figure sits beside it
        self.percent = QLabel("")
        self.percent.setMinimumWidth(self.percent.fontMetrics().horizontalAdvance("100%") + 4)
        self.percent.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.btn_export = QPushButton("Export")
        self.btn_cancel = QPushButton("Cancel export")
        self.btn_cancel.setEnabled(False)
        self.btn_open = QPushButton("Open result")
        self.btn_open.setEnabled(False)
        close = QPushButton("Close")
        form = QFormLayout()
        form.addRow("Output folder", row)
        form.addRow("", self.resize_box)
        form.addRow("dtype", self.dtype)
        form.addRow("Max shard size", self.shard)
        form.addRow("Seed", self.seed)
        btns = QHBoxLayout()
        for b in (self.btn_export, self.btn_cancel, self.btn_open):
            btns.addWidget(b)
        btns.addStretch(1)
        btns.addWidget(close)
        lay = QVBoxLayout(self)
        lay.addLayout(form)
        prow = QHBoxLayout()
        prow.addWidget(self.progress, 1)
        prow.addWidget(self.percent)
        lay.addLayout(prow)
        lay.addWidget(self.status)
        lay.addLayout(btns)
        self.btn_export.clicked.connect(self.start)
        self.btn_cancel.clicked.connect(self.cancel)
        self.btn_open.clicked.connect(self._open)
        close.clicked.connect(self.close)
        editor.exportProgress.connect(self._on_progress)
        editor.exported.connect(self._on_done)
        editor.exportFailed.connect(self._on_failed)

    def _browse(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Output folder (new or empty)", os.path.dirname(self.out.text()))
        if path:
            self.out.setText(path)

    def start(self) -> None:
        dtype = None if self.dtype.currentIndex() == 0 else self.dtype.currentText()
        self.progress.setValue(0)
        self.status.setText("exporting…")
        self.btn_export.setEnabled(False)
        self.btn_cancel.setEnabled(True)
        self.btn_open.setEnabled(False)
        self.editor.start_export(self.out.text().strip(), resize=self.resize_box.isChecked(), dtype=dtype,
                                 max_shard_size=self.shard.text().strip() or None, seed=self.seed.value())

    def cancel(self) -> None:
        self.editor.cancel_export()
        self.status.setText("cancelled: nothing was written")
        self.btn_export.setEnabled(True)
        self.btn_cancel.setEnabled(False)

    def _on_progress(self, done: int, total: int) -> None:
        self.progress.setValue(done)
        self.percent.setText(f"{100 * done / (total or 1):.0f}%")

    def _on_done(self, res: Any) -> None:
        self.progress.setValue(1000)
        self.percent.setText("100%")
        self.btn_export.setEnabled(True)
        self.btn_cancel.setEnabled(False)
        self.btn_open.setEnabled(True)
        c = res.report.counts()
        if res.is_clean:
            self.status.setText(f"✔ wrote {res.out_dir}: loads clean into {res.report.arch} "
                                f"({c['matched']} keys, nothing missing, unexpected or mismatched)")
        else:
            self.status.setText(f"⚠ wrote {res.out_dir}, but it does not load clean: {c['missing']} missing, "
                                f"{c['unexpected']} unexpected, {c['mismatched']} mismatched")
        if self.editor.host.interactive and QMessageBox.question(
            self, "Export finished", f"{self.status.text()}\n\nOpen the result?"
        ) == QMessageBox.StandardButton.Yes:
            self._open()

    def _on_failed(self, msg: str) -> None:
        self.status.setText(f"⚠ {safe_text(msg)}")
        self.btn_export.setEnabled(True)
        self.btn_cancel.setEnabled(False)

    def _open(self) -> None:
        if self.editor.last_export is not None:
            self.editor.open_result(self.editor.last_export)
            self.close()


def looks_like_plan(path: str) -> bool:
    """A plan file, as opposed to a config.json or a shard index (core's one test of it)."""
    from ...core.plan import is_plan_file

    return is_plan_file(path)


def _short(paths: list[str]) -> str:
    if len(paths) == 1:
        return paths[0] or "(model)"
    return f"{paths[0]} (+{len(paths) - 1})"
