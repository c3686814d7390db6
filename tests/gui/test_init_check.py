"""The init check in the main views: badges, roll-ups and the "untrained?" chip; closing the window cancels a running check."""
from __future__ import annotations

from explorer.gui.panels import InitPanel
from tests.gui.conftest import FRESH_KEY, LOAD_TIMEOUT, open_and_wait

Q = FRESH_KEY


def test_init_check_badges_rollup_and_filter(qtbot, full_window, trained_but_one, qtmodeltester):
    from explorer.gui.models.table_model import TensorTableModel

    win = full_window
    open_and_wait(qtbot, win, checkpoint=str(trained_but_one))
    assert not win.session.init_results and win.untrained_button.isEnabled()
    with qtbot.waitSignal(win.session.initChanged, timeout=LOAD_TIMEOUT):
        win.panel(InitPanel).run()
    assert win.session.untrained == {Q}
    # one place: the tab, the tree, the table and the chip all read the session's results
    assert win.panel(InitPanel).flagged() == [Q]
    assert win.untrained_button.text() == "untrained? 1"
    tm = win.tree_model
    assert tm.index_for_key(Q, tm.UNTRAINED).data() == "⚠ untrained?"
    assert tm.index_for_key("encoder.layer.0", tm.UNTRAINED).data() == "⚠ 1 looks untrained"
    assert tm.index_for_key("encoder.layer.1", tm.UNTRAINED).data() == ""
    assert tm.index(0, tm.UNTRAINED).data() == "⚠ 1 looks untrained"  # the model root rolls it up
    from explorer.gui.widgets.badges import badge_delegate

    def badge(index):  # what the views draw right of a name, minus the plan's badges
        d = badge_delegate(win.tree if index.model() is win.tree_proxy else win.table, index.column())
        return [b for b in d.badges(index) if b[0].startswith("?")]

    assert badge(win.tree_proxy.mapFromSource(tm.index_for_key("encoder", 0))) == [("? 1", "#882255")]
    r = win.table_model.row_for_name(Q)
    assert win.table_model.index(r, TensorTableModel.UNTRAINED).data() == "⚠ untrained?"
    assert badge(win.table_proxy.index(r, TensorTableModel.STATUS))[0][0] == "?"
    qtmodeltester.check(tm)
    qtmodeltester.check(win.table_model)
    # the filter chip: only the flagged tensor and its ancestors remain
    win.untrained_button.setChecked(True)
    assert win.table_proxy.rowCount() == 1 and win.table_model.row(0).name == Q
    assert win.match_label.text().startswith("1 of ")
    assert win.select_key(Q)
    assert not win.select_key("encoder.layer.1.attention.self.query.weight")  # filtered out of the tree
    # combined with text: AND
    win.search.setText("layer.1.")
    win.apply_filter()
    assert win.table_proxy.rowCount() == 0
    win.clear_filter()
    assert not win.untrained_button.isChecked() and win.table_proxy.rowCount() == len(win.table_model.rows)
    # sorting by the init-check column puts the flagged tensor first
    win.table.sortByColumn(TensorTableModel.UNTRAINED, __import__("PySide6.QtCore").QtCore.Qt.SortOrder.AscendingOrder)
    assert win.table_model.row(0).name == Q
    # a new report clears the verdicts everywhere
    open_and_wait(qtbot, win, checkpoint=str(trained_but_one))
    assert not win.session.init_results and tm.index(0, tm.UNTRAINED).data() == ""
    assert win.untrained_button.text() == "untrained?"


def test_untrained_chip_runs_the_check_when_none_ran(qtbot, full_window, trained_but_one):
    win = full_window
    open_and_wait(qtbot, win, checkpoint=str(trained_but_one))
    with qtbot.waitSignal(win.session.initChanged, timeout=LOAD_TIMEOUT):
        win.untrained_button.setChecked(True)
    assert [win.table_model.row(i).name for i in range(win.table_proxy.rowCount())] == [Q]


def test_closing_while_the_init_check_runs_cancels_it(qtbot, minilm_head):
    win, _ed, ip = minilm_head
    with qtbot.waitSignal(ip.checkFinished, timeout=LOAD_TIMEOUT):
        ip.run()
        assert win.session.jobs.busy("init_check")
        win.close()
    assert not win.session.jobs.busy("init_check")
