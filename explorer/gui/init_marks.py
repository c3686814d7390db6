"""The init check's marks in the window's own views, from ``session.init_results`` (one place for every view):
the "?" badges in the tree (rolled up: "? 3") and the table, the table's init-check column, the filter bar's
"untrained?" chip (enabled only when a panel can run the check: ``Capability.INIT_CHECK``)."""
from __future__ import annotations

from typing import Callable

from PySide6.QtCore import QModelIndex, QObject
from PySide6.QtWidgets import QTableView, QTreeView

from . import palette
from .kinds import Kind
from .session import Session
from .widgets.filter_bar import FilterBar
from .widgets.table_view import fit_status_column


class InitMarks(QObject):
    def __init__(self, session: Session, tree: QTreeView, table: QTableView, filter_bar: FilterBar, *,
                 can_check: bool, apply_filter: Callable[[], None]) -> None:
        super().__init__(tree)
        self.session, self.tree, self.table, self.filter_bar = session, tree, table, filter_bar
        self.tree_proxy, self.table_proxy = tree.model(), table.model()
        self.tree_model, self.table_model = self.tree_proxy.sourceModel(), self.table_proxy.sourceModel()
        self.can_check, self.apply_filter = can_check, apply_filter
        filter_bar.untrained_button.setVisible(can_check)
        session.initChanged.connect(self.update)
        filter_bar.untrainedToggled.connect(self._on_toggled)

    def update(self) -> None:
        from .models.entries import untrained_rows, untrained_tree

        if not self.session.init_results:
            self.tree_model.set_untrained(None, None)
            self.table_model.set_untrained(None)
            rep = self.session.report
            self.filter_bar.set_untrained(None, can_check=self.can_check and rep is not None and rep.spec is not None)
        else:
            flagged = self.session.untrained
            self.tree_model.set_untrained(*untrained_tree(self.tree_model.tree_index, flagged))
            self.table_model.set_untrained(untrained_rows(self.table_model.rows, flagged))
            self.tree.viewport().update()
            self.table.viewport().update()
            self.filter_bar.set_untrained(len(flagged), can_check=True)
        fit_status_column(self.table, self.table_model, badge=bool(self.session.init_results))  # room for "?"
        self.apply_filter()

    def badge(self, index: QModelIndex) -> list[tuple[str, str]]:
        """The "looks untrained" badge of a tree item (rolled up: "? 3") or table row."""
        if not self.session.init_results or not index.isValid():
            return []
        col = palette.look(Kind.UNTRAINED).text
        if index.model() is self.tree_proxy:
            it = self.tree_proxy.mapToSource(index).internalPointer()
            n = self.tree_model.untrained_count(it)
            return [("?" if it.is_param else f"? {n}", col)] if n else []
        return [("?", col)] if self.table_model.untrained_shown(self.table_proxy.mapToSource(index).row()) else []

    def _on_toggled(self, on: bool) -> None:
        if on and not self.session.init_results:
            self.session.request_init_check()  # the filter applies when its results arrive (initChanged)
        self.apply_filter()
