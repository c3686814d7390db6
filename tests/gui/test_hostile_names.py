"""The window shows names from a file with control, bidi and invisible format characters escaped (``\\x1b``,
``\\x0a``, ``\\u202e``): tree, table, details, Compare A/B, Looks untrained, summary, title and message bar."""
from __future__ import annotations

from explorer.gui.panels import PANELS  # noqa: F401  (the window fixture builds these)

from pathlib import Path

import pytest
from PySide6.QtCore import QModelIndex, Qt

from tests.cli.test_hostile_text import CLEAR, HOSTILE, HTML_NAME, OSC_TITLE, RENAMED, build_hostile, unsafe_chars
from tests.gui.conftest import LOAD_TIMEOUT, open_and_wait, select_and_measure

ROLES = (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.ToolTipRole)
ZWSP = "\u200b"  # the details title's own break opportunities after dots


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> dict[str, Path]:
    return build_hostile(tmp_path_factory.mktemp("hostile-gui"))


def _texts(model, parent: QModelIndex = QModelIndex()) -> list[tuple[int, str]]:
    """(role, text) of every cell of ``model`` (recursively), for the display and tooltip roles."""
    out = []
    for r in range(model.rowCount(parent)):
        for c in range(model.columnCount(parent)):
            idx = model.index(r, c, parent)
            for role in ROLES:
                v = model.data(idx, role)
                if isinstance(v, str):
                    out.append((role, v))
        first = model.index(r, 0, parent)
        if model.rowCount(first):
            out += _texts(model, first)
    return out


def _check_model(model) -> str:
    texts = _texts(model)
    assert texts
    for role, t in texts:
        allow = "\n" if role == Qt.ItemDataRole.ToolTipRole else ""  # tooltips are multi-line by design
        assert not unsafe_chars(t, allow=allow), (role, t)
    return "\n".join(t for _r, t in texts)


def test_tree_table_details_and_panels_show_names_escaped(qtbot, window, hostile) -> None:
    from explorer.gui.panels import ComparePanel, InitPanel

    init, cmp = window.panel(InitPanel), window.panel(ComparePanel)
    open_and_wait(qtbot, window, checkpoint=str(hostile["src"]))
    tree = _check_model(window.tree_model)
    table = _check_model(window.table_model)
    for name, escaped in HOSTILE.items():
        assert escaped in tree and escaped in table, escaped
        assert name not in tree and name not in table
    assert "classifier.weight\\x1b]0;pwn\\x07" in table
    # a hostile name's newline does not break its tooltip into a forged second line
    row = window.table_model.row_for_name("evil.forged\n  MISSING (0)")
    tip = window.table_model.data(window.table_model.index(row, 1), Qt.ItemDataRole.ToolTipRole)
    assert tip.splitlines()[0] == "evil.forged\\x0a  MISSING (0)"
    assert not unsafe_chars(window.windowTitle()) and not unsafe_chars(window.summary_label.text())

    # details: title, facts and their tooltips
    for name in (f"evil.title{OSC_TITLE}.weight", "evil.forged\n  MISSING (0)", RENAMED):
        select_and_measure(qtbot, window, name)
        d = window.details
        assert d.selection.names == (name,)  # the data stays the exact name; only the display is escaped
        shown = [d.title.text().replace(ZWSP, ""), d.title.toolTip(), d.status.text()]
        for i in range(d.facts.count()):
            w = d.facts.itemAt(i).widget()
            shown += [w.text(), w.toolTip()]
        for t in shown:
            assert not unsafe_chars(t, allow=""), t
        assert HOSTILE.get(name, "classifier.weight\\x1b]0;pwn\\x07") in d.title.toolTip()

    # Compare A/B against a copy whose hostile tensors changed, and the "looks untrained" check
    with qtbot.waitSignal(cmp.diffReady, timeout=LOAD_TIMEOUT):
        cmp.compare_with(str(hostile["b"]))
    cmp.only_diff.setChecked(False)
    compared = _check_model(cmp.model) + _check_model(cmp.roll_model)
    assert all(escaped in compared for escaped in HOSTILE.values())
    assert not unsafe_chars(cmp.summary.text()) and not unsafe_chars(cmp.path_label.text())
    with qtbot.waitSignal(init.checkReady, timeout=LOAD_TIMEOUT):
        init.run()
    checked = _check_model(init.model)
    assert "classifier.weight\\x1b]0;pwn\\x07" in checked or "evil.title\\x1b]0;pwn\\x07.weight" in checked


def test_names_that_look_like_html_are_shown_as_text(qtbot, window, hostile) -> None:
    from PySide6.QtGui import QTextDocument

    open_and_wait(qtbot, window, checkpoint=str(hostile["src"]))
    m = window.table_model
    row = m.row_for_name(HTML_NAME)
    assert m.data(m.index(row, 1)) == HTML_NAME  # item views draw display text literally
    tip = m.data(m.index(row, 1), Qt.ItemDataRole.ToolTipRole)
    doc = QTextDocument()
    doc.setHtml(tip)  # Qt would take this tooltip for rich text: it is HTML that shows the name as it is
    assert doc.toPlainText().splitlines()[0] == HTML_NAME
    select_and_measure(qtbot, window, HTML_NAME)
    d = window.details
    assert d.title.textFormat() == Qt.TextFormat.PlainText and HTML_NAME in d.title.text().replace(ZWSP, "")
    doc.setHtml(d.title.toolTip())
    assert doc.toPlainText() == HTML_NAME
    assert "&lt;img" in window.summary_label.text() or HTML_NAME not in window.summary_label.text()


def test_errors_quoting_names_are_shown_escaped(qtbot, window, hostile) -> None:
    from explorer.gui.session import Source

    missing = hostile["root"] / f"missing{OSC_TITLE}{CLEAR}\n  MISSING (0).safetensors"
    with qtbot.waitSignal(window.session.loadFailed, timeout=LOAD_TIMEOUT) as blocker:
        window.open_source(Source(checkpoint=str(missing)))
    assert str(missing) in blocker.args[0]  # the message keeps the name; the message bar shows it escaped
    text = window.message_label.text()
    assert not unsafe_chars(text, allow="") and "missing\\x1b]0;pwn\\x07\\x1b[2J\\x0a  MISSING (0)" in text
    open_and_wait(qtbot, window, checkpoint=str(hostile["named"]))  # a file name with escapes in it
    assert "m\\x1b]0;pwn\\x07.safetensors" in window.windowTitle() and not unsafe_chars(window.windowTitle())
    assert not unsafe_chars(window.summary_label.text())
    recent = [a.text() for a in window.recent_menu.actions()]
    assert any("m\\x1b]0;pwn\\x07.safetensors" in t for t in recent) and not any(unsafe_chars(t) for t in recent)
