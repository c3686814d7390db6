"""Badges beside names (plan actions, the init check's "?"): explained in tooltips and the legend; the plan's in its own table column."""
from __future__ import annotations

from explorer.gui.panels import PlanPanel
from tests.gui.conftest import FRESH_KEY as Q
from tests.gui.conftest import open_and_wait


def test_badges_are_explained_in_tooltips_and_the_legend(qtbot, full_window, demo_dir):
    window = full_window
    from explorer.gui.widgets.badges import BADGE_HELP, badge_delegate, badge_help
    from explorer.gui.panels import PlanPanel

    editor = window.panel(PlanPanel)
    open_and_wait(qtbot, window, demo=True)
    key = "bert.encoder.layer.0.attention.self.query.weight"
    editor.reinit([key])
    d = badge_delegate(window.tree, 0)
    leaf = window.tree_proxy.mapFromSource(window.tree_model.index_for_key(key))
    tip = d.tooltip(leaf)
    assert key in tip and "↻ reinit  reinit — plan: re-initialised" in tip
    module = window.tree_proxy.mapFromSource(window.tree_model.index_for_key("bert.encoder"))
    assert "↻ 1  reinit" in d.tooltip(module)
    assert "2 tensors below" in badge_help("? 2") and "looks untrained" in badge_help("?")  # init-check badges
    html = window.legend_html()
    for glyph, label, _m in BADGE_HELP:
        assert glyph in html and label in html
    assert {"❄", "↻", "✕", "×", "?"} <= {g for g, _l, _m in BADGE_HELP}
    box = window.show_legend()  # not interactive: built, not shown
    assert "looks untrained" in box.text()


def test_plan_badge_has_its_own_table_column(qtbot, full_window, trained_but_one):
    from explorer.gui.models.table_model import TensorTableModel

    win = full_window
    open_and_wait(qtbot, win, checkpoint=str(trained_but_one))
    assert win.table.isColumnHidden(TensorTableModel.PLAN)  # nothing planned: the names get its room
    h = win.table.horizontalHeader()
    assert h.visualIndex(TensorTableModel.PLAN) == h.visualIndex(TensorTableModel.KEY) + 1
    win.panel(PlanPanel).reinit([Q])
    assert not win.table.isColumnHidden(TensorTableModel.PLAN)
    r = win.table_model.row_for_name(Q)
    assert win.table_model.index(r, TensorTableModel.PLAN).data() == "↻ reinit"
    from explorer.gui.models.tree_model import KEY_ROLE

    key_cell = win.table_model.index(r, TensorTableModel.KEY)
    assert key_cell.data() == "= on-disk" and key_cell.data(KEY_ROLE) == Q  # the key cell is the key, no badge over it
    win.panel(PlanPanel).undo_stack.undo()
    assert win.table_model.index(r, TensorTableModel.PLAN).data() == ""
    assert win.table.isColumnHidden(TensorTableModel.PLAN)
