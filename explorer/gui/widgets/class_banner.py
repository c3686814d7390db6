"""The banner over the summary when the model class is not the one the user meant (issue 10 findings 4 and 12):

* ``--arch`` with a typo: the checkpoint was loaded with the config's own class; the banner says so, with the
  "did you mean" and a head chooser preset to the suggestion;
* a class of another model family than the config (``--arch GPT2LMHeadModel`` on a BERT config): almost nothing
  loads; the banner says why and offers the classes of the config's own family.

A chooser right in the banner (the family's classes, base model first) and a button that reloads with the one
chosen: no modal over an empty window. Text is plain (names come from files and the command line).
"""
from __future__ import annotations

from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QPushButton, QWidget

from ...core.fmt import safe_text
from .message_bar import MessageBar


class ClassBanner(MessageBar):
    """The message bar with a class chooser: emits ``chosen(class name)`` when the user asks to load with another
    class."""

    chosen = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("classBanner")
        self.classes = QComboBox()
        self.classes.setToolTip("Classes for the config's model type (base model first)")
        self.load_btn = QPushButton("Load with this class")
        self.load_btn.clicked.connect(lambda _c=False: self.classes.currentText() and self.chosen.emit(self.classes.currentText()))
        lay = self.layout()
        lay.insertWidget(1, self.classes)  # label | classes | button | close
        lay.insertWidget(2, self.load_btn)

    def show_for(self, loaded: Any) -> None:
        """Show what is wrong with the class of ``loaded`` (a session ``Loaded``), or hide when nothing is."""
        rep = loaded.report
        problem = getattr(loaded, "class_problem", None)
        if problem is not None:
            text = f"⚠ {problem.message}; loaded with the config's own class {rep.arch} instead. Choose the head:"
            heads, preset = problem.heads, problem.suggestion
        elif rep.family is not None:
            f = rep.family
            keys = sum(1 for k in rep.model_keys.values() if k.status.value != "computed")
            text = (f"⚠ Wrong model family: {f.message(classes=False)} ({rep.counts()['matched']} of {keys} model "
                    f"keys load). Choose a class for {f.config_type!r}:")
            heads, preset = f.heads, (f.heads[0] if f.heads else None)
        else:
            self.hide()
            return
        self.label.setText(safe_text(text))
        self.classes.clear()
        self.classes.addItems([safe_text(h) for h in heads])
        if preset and preset in heads:
            self.classes.setCurrentIndex(list(heads).index(preset))
        self.classes.setVisible(bool(heads))
        self.load_btn.setVisible(bool(heads))
        self.show()
