"""Small dialogs of the main window: choosing a head class, and rich-text information boxes."""
from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QLineEdit, QListWidget, QMessageBox, QVBoxLayout, QWidget


def rich_box(parent: QWidget, title: str, html: str, *, show: bool) -> QMessageBox:
    """A rich-text information box, shown modally only when ``show`` (tests and scripts inspect it)."""
    box = QMessageBox(QMessageBox.Icon.NoIcon, title, html, parent=parent)
    box.setTextFormat(Qt.TextFormat.RichText)
    if show:
        box.exec()
    return box


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
