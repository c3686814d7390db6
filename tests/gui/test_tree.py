"""The module tree: deep names shown in full, the status column gives way first, the tree keeps its width."""
from __future__ import annotations

from tests.gui.conftest import open_and_wait


def test_tree_shows_deep_names_in_full_and_status_gives_way_first(qtbot, window):
    from explorer.gui.widgets.tree_view import tree_widths

    window.resize(1440, 900)
    window.show()
    qtbot.waitExposed(window)
    window.tabs.setCurrentIndex(window.tabs.count() - 1)  # a wide tab (Compare, when installed) must not squeeze the tree
    open_and_wait(qtbot, window, demo=True)
    tree = window.tree
    names, status, status_min = tree_widths(tree)
    fm = tree.fontMetrics()
    # six dotted levels below the model row: bert.encoder.layer.1.attention.output
    assert names >= tree.indentation() * 7 + fm.horizontalAdvance("output")
    assert names >= tree.indentation() * 2 + fm.horizontalAdvance("contrastive_proj.weight")
    assert tree.columnWidth(0) >= names and tree.columnWidth(1) == status
    # the spare width goes to the names, not the status
    window.split.setSizes([window.split.sizes()[0] + 120, window.split.sizes()[1] - 120])
    assert tree.columnWidth(0) > names and tree.columnWidth(1) == status
    # short of room, the status column shrinks (its text elides on the right) before the names are cut
    window.split.setSizes([names + status_min + 150, sum(window.split.sizes()) - names - status_min - 150])
    assert tree.columnWidth(1) < status and tree.columnWidth(0) >= names - 1
