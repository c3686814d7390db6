"""The filter bar: search text (substring, glob or regex), mode, one chip per status, the "untrained?" chip."""
from __future__ import annotations

from collections import Counter

from typing import Any

from PySide6.QtCore import QEvent, Qt, QTimer, Signal
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QLineEdit, QSizePolicy, QToolButton, QWidget

from ..kinds import LOADED, NOT_MODEL_KEYS, Kind
from .. import palette
from ..models.filtering import MODES, Filter

FILTER_KINDS = (Kind.MATCHED, Kind.RENAMED, Kind.TIED, Kind.DTYPE, Kind.MISSING, Kind.MISMATCHED, Kind.UNEXPECTED,
                Kind.IGNORED)
# the one rule for the status chips: said in their tooltips, Help › Keyboard shortcuts and the README
CHIPS_HELP = ("Status chips: click one to show only that status; click more to add theirs (rows of any of them "
              "are shown); click a checked chip again to remove it.")
CHIP_LABELS = {Kind.DTYPE: "dtype", Kind.MISMATCHED: "mismatch", Kind.UNTRAINED: "untrained?"}  # short: fits 1280 px


class FilterBar(QWidget):
    """Emits ``changed`` when the filter should be applied again (typing is debounced)."""

    changed = Signal()
    untrainedToggled = Signal(bool)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.timer = QTimer(self, singleShot=True, interval=120)
        self.timer.timeout.connect(self.changed.emit)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(4)
        self.search = QLineEdit()
        self.search.setPlaceholderText("Filter names (Ctrl+F): substring, glob (*.attention.*) or regex")
        self.search.setClearButtonEnabled(True)
        self.search.textChanged.connect(lambda _t: self.timer.start())
        self.search.returnPressed.connect(self.changed.emit)
        self.search.setMinimumWidth(150)
        self.mode = QComboBox()
        self.mode.addItems(list(MODES))
        self.mode.setToolTip("How the filter text matches names")
        self.mode.currentIndexChanged.connect(lambda _i: self.changed.emit())
        lay.addWidget(self.search, 2)
        lay.addWidget(self.mode)
        self.kind_buttons: dict[str, QToolButton] = {}
        for k in FILTER_KINDS:
            lk = palette.look(k)
            b = self._chip(k, CHIP_LABELS.get(k, lk.label))
            b.setToolTip(f"{lk.label}: {lk.meaning}\n{CHIPS_HELP}")
            b.toggled.connect(lambda _c: self.changed.emit())
            lay.addWidget(b)
            self.kind_buttons[k] = b
        ul = palette.look(Kind.UNTRAINED)
        self.untrained_button = b = self._chip(Kind.UNTRAINED, CHIP_LABELS[Kind.UNTRAINED])
        b.setToolTip(f"{ul.label}: {ul.meaning}\nClick to show only these (runs the init check first if needed)")
        b.setEnabled(False)
        b.toggled.connect(self.untrainedToggled.emit)
        lay.addWidget(b)
        # the count ("16 of 50 rows") and a regex error sit inside the search box, at its right end: their text
        # never moves or squeezes the chips (a click landed on the wrong chip when it did)
        self.match_label = QLabel("", self.search)
        self.match_label.setObjectName("muted")
        self._count_text = ""
        self.search.installEventFilter(self)
        # never force the window wider than the screen: on a narrow window the last chips are clipped
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)

    @staticmethod
    def _chip(kind: str, text: str) -> QToolButton:
        b = QToolButton()
        b.setCheckable(True)
        b.setIcon(palette.icon(kind))
        b.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        b.setText(text)
        b.setObjectName("kindChip")
        return b

    def current_filter(self) -> Filter:
        kinds = frozenset(k for k, b in self.kind_buttons.items() if b.isChecked())
        return Filter(self.search.text().strip(), self.mode.currentText(), kinds or None,
                      untrained=self.untrained_button.isChecked())

    def show_error(self, msg: str, *, tip: str = "") -> None:
        """A half-typed or too slow regex: "bad regex" in the search box, the whole message in its tooltip (the
        last good filter stays applied)."""
        self.search.setStyleSheet(f"border: 1px solid {palette.look(Kind.MISSING).color};")
        short = msg.split(":", 1)[0] if msg.startswith("bad regex") else msg
        self._set_count(short, tip=tip or msg)

    def show_count(self, shown: int | None, total: int, *, keys: int | None = None, tip: str = "") -> None:
        """"16 of 50 rows" while a filter is active ('' otherwise); ``keys``: the model keys those rows load into,
        said when fewer than the rows (a fused MoE expert tensor is one key for many on-disk tensors)."""
        self.search.setStyleSheet("")
        text = ""
        if shown is not None:
            text = f"{shown:,} of {total:,} rows" + (f" · {keys:,} model keys" if keys is not None else "")
        self._set_count(text, tip=tip)

    def _set_count(self, text: str, *, tip: str) -> None:
        self._count_text = text
        self.match_label.setToolTip(tip)
        self.search.setToolTip(tip)
        self._place_count()

    def _place_count(self) -> None:
        """Put the count at the right end of the search box (left of its clear button), elided to leave room for
        a few typed characters, and keep typed text out from under it."""
        lab, box = self.match_label, self.search
        fm = lab.fontMetrics()
        text = fm.elidedText(self._count_text, Qt.TextElideMode.ElideRight, max(40, box.width() - 64))
        lab.setText(text)
        lab.setVisible(bool(text))
        w = fm.horizontalAdvance(text) + 2
        right = min([b.x() for b in box.findChildren(QToolButton) if b.isVisible()] or [box.width() - 4])
        lab.setGeometry(max(0, right - w - 4), 0, w, box.height())
        box.setTextMargins(0, 0, w + 8 if text else 0, 0)

    def eventFilter(self, obj: Any, event: Any) -> bool:  # noqa: N802 (Qt API)
        if obj is self.search and event.type() in (QEvent.Type.Resize, QEvent.Type.Show):
            self._place_count()
        return False

    def set_counts(self, counts: Counter) -> None:
        """Chip texts, tooltips and visibility for a report's roll-up (only the statuses present: a legend)."""
        n_keys = sum(v for k, v in counts.items() if k not in NOT_MODEL_KEYS)
        n_loading = sum(counts.get(k, 0) for k in LOADED)
        for k, b in self.kind_buttons.items():
            n = counts.get(k, 0)
            b.setText(f"{CHIP_LABELS.get(k, palette.look(k).label)} {n:,}")
            b.setToolTip(chip_tooltip(k, n, n_loading=n_loading, n_keys=n_keys))
            b.setVisible(n > 0 or b.isChecked())

    def set_untrained(self, n: int | None, *, can_check: bool) -> None:
        """The "untrained?" chip: ``n`` flagged by the last init check (None: not run; ``can_check``: a model)."""
        b = self.untrained_button
        if n is None:
            b.setText(CHIP_LABELS[Kind.UNTRAINED])
            b.setEnabled(can_check)
        else:
            b.setText(f"{CHIP_LABELS[Kind.UNTRAINED]} {n:,}")
            b.setEnabled(bool(n) or b.isChecked())

    def focus(self) -> None:
        self.search.setFocus()
        self.search.selectAll()

    def clear(self) -> None:
        self.search.clear()
        for b in (*self.kind_buttons.values(), self.untrained_button):
            b.blockSignals(True)
            b.setChecked(False)
            b.blockSignals(False)
        self.changed.emit()


def chip_tooltip(kind: str, n: int, *, n_loading: int, n_keys: int) -> str:
    """What a status chip counts. Model-key statuses count keys of the model (so matched + renamed + tied + dtype
    is the tree's "N/M loaded"); unexpected and ignored count checkpoint tensors, which have no model key."""
    lk = palette.look(kind)
    if kind in (Kind.UNEXPECTED, Kind.IGNORED):
        what = f"{n:,} checkpoint tensor{'s' if n != 1 else ''} (not model keys): {lk.meaning}"
    else:
        what = f"{n:,} model key{'s' if n != 1 else ''}: {lk.meaning}"
        if kind in LOADED:
            what += (f"\nmatched + renamed + tied + dtype = {n_loading:,} of {n_keys:,} model keys load "
                     "(the tree's “loaded”)")
    return f"{lk.label}: {what}\n{CHIPS_HELP}"
