"""Issue 4 in the main views: an init check flows through the session into tree/table badges, the
"untrained?" filter chip and per-module roll-ups; dropped files offer open / compare / config / plan; the
screenshot path waits for the fresh-init overlay; shortcuts are listed in Help."""
from __future__ import annotations

from explorer.gui.panels import PANELS  # noqa: F401  (the window fixture builds these)

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from explorer.gui.panels import ComparePanel, InitPanel, PlanPanel
from tests.gui.conftest import LOAD_TIMEOUT, open_and_wait
from tests.helpers import save_tiny

Q = "encoder.layer.0.attention.self.query.weight"


@pytest.fixture(scope="module")
def trained_but_one(tmp_path_factory) -> Path:
    """A tiny BERT whose weights were all moved away from their init ("trained"), except one tensor replaced by a
    fresh init of the model itself — the case init-check must flag."""
    from explorer.core.fresh import fresh_tensor
    from explorer.core.model import ModelSpec

    d = tmp_path_factory.mktemp("one_fresh")
    save_tiny("bert", "BertModel", d)
    sd = load_file(d / "model.safetensors")
    g = torch.Generator().manual_seed(1)
    for k, v in sd.items():
        if v.is_floating_point():
            sd[k] = v * 1.7 + 0.05 * torch.randn(v.shape, generator=g)
    sd[Q] = fresh_tensor(ModelSpec(config=str(d)), Q, seed=3).to(sd[Q].dtype)
    save_file(sd, d / "model.safetensors")
    return d


@pytest.fixture
def full(window):
    return window  # every panel of panels.PANELS is built by the window


def test_init_check_badges_rollup_and_filter(qtbot, full, trained_but_one, qtmodeltester):
    from explorer.gui.models.table_model import TensorTableModel

    win = full
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


def test_untrained_chip_runs_the_check_when_none_ran(qtbot, full, trained_but_one):
    win = full
    open_and_wait(qtbot, win, checkpoint=str(trained_but_one))
    with qtbot.waitSignal(win.session.initChanged, timeout=LOAD_TIMEOUT):
        win.untrained_button.setChecked(True)
    assert [win.table_model.row(i).name for i in range(win.table_proxy.rowCount())] == [Q]


def _mime(path: Path):
    from PySide6.QtCore import QMimeData, QUrl

    m = QMimeData()
    m.setUrls([QUrl.fromLocalFile(str(path))])
    return m


def test_drop_menu_open_compare_config_and_plan(qtbot, full, trained_but_one, tmp_path):
    from PySide6.QtCore import QPoint, QPointF, Qt
    from PySide6.QtGui import QDropEvent

    win = full
    other = tmp_path / "other"
    save_tiny("bert", "BertModel", other)
    # nothing open: a drop opens the checkpoint at once
    with qtbot.waitSignal(win.session.loaded, timeout=LOAD_TIMEOUT):
        assert win.handle_drop(_mime(trained_but_one)) is None
    # something open: a menu offers what the file can be
    menu = win.handle_drop(_mime(other / "model.safetensors"), QPoint(10, 10))
    texts = [a.text() for a in menu.actions() if a.isEnabled() and not a.isSeparator()]
    assert texts == ["Open as checkpoint", "Compare with current"]
    act = {a.text(): a for a in menu.actions()}
    with qtbot.waitSignal(win.panel(ComparePanel).diffReady, timeout=LOAD_TIMEOUT):
        act["Compare with current"].trigger()
    assert win.tabs.currentWidget() is win.panel(ComparePanel)
    assert win.session.report.index.folder == str(trained_but_one)  # A stays open
    # a folder with a config.json can also be the config
    menu = win.handle_drop(_mime(other))
    assert [a.text() for a in menu.actions()][-1] == "Open as config"
    with qtbot.waitSignal(win.session.loaded, timeout=LOAD_TIMEOUT) as blocker:
        {a.text(): a for a in menu.actions()}["Open as checkpoint"].trigger()
    assert blocker.args[0].report.index.folder == str(other)
    # config.json: only "Open as config"
    menu = win.handle_drop(_mime(trained_but_one / "config.json"))
    assert [a.text() for a in menu.actions() if a.isEnabled() and not a.isSeparator()] == ["Open as config"]
    with qtbot.waitSignal(win.session.loaded, timeout=LOAD_TIMEOUT) as blocker:
        menu.actions()[-1].trigger()
    assert blocker.args[0].source.config == str(trained_but_one / "config.json")
    # a plan JSON goes straight to the plan editor
    ed = win.panel(PlanPanel)
    ed.freeze(["encoder"])
    plan_path = tmp_path / "plan.json"
    ed.save_plan(str(plan_path))
    ed.undo_stack.undo()
    assert ed.badge("encoder") == ""
    assert win.handle_drop(_mime(plan_path)) is None
    assert win.tabs.currentWidget() is ed and ed.badge("encoder") == "❄"
    # a real QDropEvent takes the same path (and is accepted)
    mime = _mime(plan_path)  # the event does not own its mime data: keep it alive
    ev = QDropEvent(QPointF(20, 20), Qt.DropAction.CopyAction, mime, Qt.MouseButton.NoButton,
                    Qt.KeyboardModifier.NoModifier)
    win.dropEvent(ev)
    assert ev.isAccepted()


def test_shortcuts_are_set_and_listed(full):
    win = full
    keys = {text: k for _menu, text, k in win.shortcuts()}
    assert keys["Open checkpoint…"] == "Ctrl+O"
    assert keys["Find…"] == "Ctrl+F"
    assert keys["Reload"] == "F5"
    assert keys["Clear filter"] == "Esc"
    assert keys["Quit"] == "Ctrl+Q"
    assert keys["Compare with…"] == "Ctrl+Shift+C"
    assert keys["Save plan…"] == "Ctrl+S"
    assert keys["Export patched checkpoint…"] == "Ctrl+E"
    assert keys["Keyboard shortcuts"] == "F1"
    assert keys["Check for untrained tensors"] == "Ctrl+Shift+U"
    assert "Ctrl+Shift+Z" in keys["Redo"] and keys["Undo"] == "Ctrl+Z"
    every = [k for _m, _t, ks in win.shortcuts() for k in ks.split(", ")]
    assert len(every) == len(set(every)), "a shortcut is bound twice"
    html = win.show_shortcuts().text()
    assert "Ctrl+Shift+C" in html and "Compare with" in html and "drop a file" in html
    assert "Ctrl+O" in win.show_about().text()
    menus = [a.text() for a in win.menuBar().actions()]
    assert menus[-1] == "&Help"  # panels' menus go before Help


def test_screenshot_waits_for_init_check_and_overlay(qtbot, full, trained_but_one):
    win = full
    win.when_ready()  # every panel prepares its part of the shot (the init check, for a small checkpoint)
    overlays = []
    win.panel(InitPanel).overlayReady.connect(overlays.append)
    from explorer.gui.session import Source

    with qtbot.waitSignal(win.ready, timeout=LOAD_TIMEOUT):
        win.open_source(Source(checkpoint=str(trained_but_one)))
    # by the time the window says ready: the check ran, the flagged tensor is selected and overlaid
    assert win.session.untrained == {Q}
    assert win.details.selection.names == (Q,)
    assert overlays and overlays[-1][0] == (Q,)
    assert win.details.histogram.overlay.isVisible()
    assert "looks untrained" in win.details.histogram_note.text()


def test_plan_badge_has_its_own_table_column(qtbot, full, trained_but_one):
    from explorer.gui.models.table_model import TensorTableModel

    win = full
    open_and_wait(qtbot, win, checkpoint=str(trained_but_one))
    assert not win.table.isColumnHidden(TensorTableModel.PLAN)
    h = win.table.horizontalHeader()
    assert h.visualIndex(TensorTableModel.PLAN) == h.visualIndex(TensorTableModel.KEY) + 1
    win.panel(PlanPanel).reinit([Q])
    r = win.table_model.row_for_name(Q)
    assert win.table_model.index(r, TensorTableModel.PLAN).data() == "↻ reinit"
    from explorer.gui.models.tree_model import KEY_ROLE

    key_cell = win.table_model.index(r, TensorTableModel.KEY)
    assert key_cell.data() == "= on-disk" and key_cell.data(KEY_ROLE) == Q  # the key cell is the key, no badge over it
    win.panel(PlanPanel).undo_stack.undo()
    assert win.table_model.index(r, TensorTableModel.PLAN).data() == ""


def test_key_paths_shorten_one_way_on_dot_boundaries():
    from explorer.gui.widgets.badges import elide_key

    n = "bert.encoder.layer.5.attention.self.query.weight"
    assert elide_key(n, lambda s: True) == n  # room to spare: the full name
    assert elide_key(n, lambda s: len(s) <= 45) == "…encoder.layer.5.attention.self.query.weight"
    assert elide_key(n, lambda s: len(s) <= 30) == "…5.attention.self.query.weight"
    assert elide_key(n, lambda s: len(s) <= 21) == "…5.…self.query.weight"  # the layer index survives
    # not even the index and the last component fit: Qt's ElideLeft (here a stand-in)
    assert elide_key(n, lambda s: len(s) <= 9, elide_left=lambda s: "…" + s[-9:]) == "…ry.weight"
    assert elide_key("a.b.c.d.e (+1)", lambda s: len(s) <= 12) == "…c.d.e (+1)"  # the tied-count suffix stays
