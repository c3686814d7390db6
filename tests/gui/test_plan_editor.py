"""The plan editor on the real MiniLM: context-menu edits with undo/redo, badges, the rule dialog's live preview,
save/load, and an export (with progress, and a cancel that leaves nothing) that transformers loads clean."""
from __future__ import annotations

from explorer.gui.panels import PANELS  # noqa: F401  (the window fixture builds these)

import hashlib
import json
from pathlib import Path

import pytest

from explorer.core.plan import Action

from tests.gui.conftest import LOAD_TIMEOUT, open_and_wait

HEAD = "BertForSequenceClassification"


def checksums(folder: str) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(Path(folder).iterdir()) if p.is_file()}


@pytest.fixture
def editor(qtbot, window, minilm):
    from explorer.gui.panels import PlanPanel

    ed = window.panel(PlanPanel)
    open_and_wait(qtbot, window, checkpoint=minilm, arch=HEAD)
    return ed


def frozen(ed) -> set[str]:
    return {k for k, e in ed.entries.items() if e.is_model_key and not e.trainable}


def tree_index(window, path: str):
    from PySide6.QtCore import Qt

    from explorer.gui.models.tree_model import KEY_ROLE

    model = window.tree.model()
    flags = Qt.MatchFlag.MatchRecursive | Qt.MatchFlag.MatchExactly
    hits = model.match(model.index(0, 0), KEY_ROLE, path, 1, flags)
    assert hits, path
    return hits[0]


def test_defaults_and_tab(editor, window):
    assert window.tabs.tabText(window.tabs.indexOf(editor)) == "Plan"
    assert {k for k, e in editor.entries.items() if e.action is Action.REINIT} == {"classifier.weight", "classifier.bias"}
    assert editor.badge("classifier.weight") == "↻ reinit"
    assert editor.badge("classifier") == "↻ 2"
    assert "103 keep · 2 reinit · 0 drop · 0 frozen" in editor.summary.text()


def test_context_menu_freeze_undo_redo_reset(qtbot, editor, window):
    idx = tree_index(window, "bert.encoder.layer.0")
    menu = window.context_menu(window.tree, idx)
    texts = [a.text() for a in menu.actions()]
    assert texts[0] == "Plan: bert.encoder.layer.0"
    assert {"Freeze subtree", "Unfreeze subtree", "Re-initialise", "Drop", "Reset to default"} <= set(texts)
    with qtbot.waitSignal(editor.planChanged):
        next(a for a in menu.actions() if a.text() == "Freeze subtree").trigger()
    assert len(frozen(editor)) == 16 and all(k.startswith("bert.encoder.layer.0.") for k in frozen(editor))
    assert editor.badge("bert.encoder.layer.0") == "❄"
    assert editor.badge("bert.encoder") == "❄ 16/96"
    assert editor.badge_for_index(idx) == "❄"
    assert editor.rules.count() == 1 and "16 key(s)" in editor.rules.item(0).text()

    editor.freeze(["bert.encoder.layer.1"])
    editor.unfreeze(["bert.encoder.layer.1.output"])
    assert len(frozen(editor)) == 16 + 16 - 4
    editor.undo_stack.undo()
    assert len(frozen(editor)) == 32
    editor.undo_stack.undo()
    editor.undo_stack.undo()
    assert not frozen(editor) and editor.plan.rules == ()
    editor.undo_stack.redo()
    assert len(frozen(editor)) == 16

    editor.reinit(["bert.pooler"])
    assert editor.badge("bert.pooler.dense.weight") == "↻ reinit"
    editor.reset(["bert"])  # removes every per-node rule under bert
    assert editor.plan.rules == () and not frozen(editor)
    editor.undo_stack.undo()
    assert len(editor.plan.rules) == 2


def test_table_rows_and_lr_scale(editor, window):
    from PySide6.QtCore import QItemSelectionModel

    from explorer.gui.models.tree_model import KEY_ROLE

    model = window.table.model()
    rows = [r for r in range(model.rowCount()) if str(model.index(r, 0).data(KEY_ROLE)).startswith("bert.embeddings.")]
    sm = window.table.selectionModel()
    for r in rows:
        sm.select(model.index(r, 0), QItemSelectionModel.SelectionFlag.Select | QItemSelectionModel.SelectionFlag.Rows)
    paths = window.context_paths(window.table, model.index(rows[0], 2))
    assert len(paths) == len(rows) == 5
    editor.set_lr_scale(paths, 0.01)
    assert {k for k, e in editor.entries.items() if e.lr_scale == 0.01} == set(paths)
    assert editor.badge(paths[0]) == "×0.01"
    editor.undo_stack.undo()
    assert not any(e.lr_scale for e in editor.entries.values())


def test_rule_dialog_live_preview(editor):
    dlg = editor.rule_dialog()
    from PySide6.QtWidgets import QDialogButtonBox

    ok = dlg.buttons.button(QDialogButtonBox.StandardButton.Ok)
    dlg.pattern.setText("encoder.layer.[0-2]")
    assert dlg.preview.text().startswith("hits 48 key(s): bert.encoder.layer.0.")
    assert not ok.isEnabled()  # nothing to set yet
    dlg.trainable.setCurrentText("frozen")
    assert ok.isEnabled() and dlg.rule.trainable is False
    dlg.pattern.setText("encoder.layer.[0-")
    assert dlg.preview.text().startswith("⚠ bad glob") and not ok.isEnabled()
    dlg.kind.setCurrentText("regex")
    dlg.pattern.setText(r"layer\.[45]\.")
    assert dlg.preview.text().startswith("hits 32 key(s)")
    dlg.lr.setText("abc")
    assert "LR scale must be a number" in dlg.preview.text() and not ok.isEnabled()
    dlg.lr.setText("0.5")
    editor.add_rules([dlg.rule], "Add rule")
    assert sum(1 for e in editor.entries.values() if e.lr_scale == 0.5 and not e.trainable) == 32


def test_save_and_load_plan(editor, window, tmp_path):
    editor.freeze(["bert.encoder.layer.2"])
    path = tmp_path / "p.json"
    editor.save_plan(str(path))
    assert json.loads(path.read_text())["rules"] == [{"match": "key", "pattern": "bert.encoder.layer.2", "trainable": False}]
    editor.undo_stack.undo()
    assert not frozen(editor)
    editor.load_plan(str(path))
    assert len(frozen(editor)) == 16
    editor.undo_stack.undo()
    assert not frozen(editor)
    bad = tmp_path / "bad.json"
    bad.write_text('{"version": 9}')
    assert not editor.try_load_plan(str(bad))
    assert "unsupported plan version 9" in window.message_label.text()


def test_export_dialog_exports_clean_and_opens_result(qtbot, editor, window, minilm, tmp_path):
    before = checksums(minilm)
    editor.freeze(["bert.encoder.layer.0"])
    dlg = editor.export_dialog()
    out = tmp_path / "patched"
    dlg.out.setText(str(out))
    dlg.shard.setText("40MB")
    progress = []
    editor.exportProgress.connect(lambda d, t: progress.append(d))
    with qtbot.waitSignal(editor.exported, timeout=LOAD_TIMEOUT) as blocker:
        dlg.btn_export.click()
    res = blocker.args[0]
    assert res.is_clean and progress and progress[-1] == 1000
    assert dlg.progress.value() == 1000 and dlg.status.text().startswith("✔ wrote")
    assert (out / "model.safetensors.index.json").is_file()
    from transformers import BertForSequenceClassification

    _, info = BertForSequenceClassification.from_pretrained(out, output_loading_info=True)
    assert not (info["missing_keys"] or info["unexpected_keys"] or info["mismatched_keys"])
    with qtbot.waitSignal(window.session.loaded, timeout=LOAD_TIMEOUT) as loaded:
        dlg.btn_open.click()
    assert loaded.args[0].report.is_clean
    assert checksums(minilm) == before


def test_cancelled_export_leaves_nothing(qtbot, editor, window, minilm, tmp_path):
    before = checksums(minilm)
    out = tmp_path / "never"
    editor.start_export(str(out))
    with qtbot.waitSignal(editor.export_job.finished, timeout=LOAD_TIMEOUT):
        editor.cancel_export()
    # the worker may have started before the cancel: wait for it to stop, then nothing of it may remain
    assert window.session.jobs.pool.waitForDone(LOAD_TIMEOUT)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("settings")) == []
    assert editor.last_export is None
    assert checksums(minilm) == before


def test_export_error_is_reported(qtbot, editor, minilm):
    with qtbot.waitSignal(editor.exportFailed, timeout=LOAD_TIMEOUT) as blocker:
        editor.start_export(minilm)
    assert "refusing to write into the source checkpoint's folder" in blocker.args[0]


def test_rule_dialog_ok_adds_the_rule(qtbot, minilm_head):
    from PySide6.QtWidgets import QDialogButtonBox

    _win, ed, _ip = minilm_head
    dlg = ed.rule_dialog()
    dlg.pattern.setText("bert.encoder.layer.[0-2].*")
    dlg.trainable.setCurrentText("frozen")
    assert dlg.preview.text().startswith("hits 48 key(s)")
    with qtbot.waitSignal(ed.planChanged):
        dlg.buttons.button(QDialogButtonBox.StandardButton.Ok).click()
    assert sum(1 for e in ed.entries.values() if e.is_model_key and not e.trainable) == 48
    assert "48 frozen" in ed.summary.text() and ed.rules.count() == 1
    ed.undo_stack.undo()
    assert "0 frozen" in ed.summary.text()
    ed.undo_stack.redo()
    assert "48 frozen" in ed.summary.text()
    cancelled = ed.rule_dialog()
    cancelled.pattern.setText("classifier")
    cancelled.action.setCurrentText("drop")
    cancelled.buttons.button(QDialogButtonBox.StandardButton.Cancel).click()
    assert ed.rules.count() == 1
