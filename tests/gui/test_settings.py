"""Remembered settings and recent files."""
from __future__ import annotations

from pathlib import Path

from tests.gui.conftest import MINILM_HEAD, open_and_wait


def test_settings_and_recent_files_are_remembered(qtbot, tmp_path, minilm):
    from PySide6.QtCore import QSettings

    from explorer.gui.main_window import MainWindow

    ini = str(tmp_path / "s.ini")
    win = MainWindow(settings=QSettings(ini, QSettings.Format.IniFormat), interactive=False)
    qtbot.addWidget(win)
    win.persist = True
    win.show()
    open_and_wait(qtbot, win, checkpoint=minilm, arch=MINILM_HEAD)
    win.details.histogram.log_y.setChecked(True)
    win.close()
    again = MainWindow(settings=QSettings(ini, QSettings.Format.IniFormat), interactive=False)
    qtbot.addWidget(again)
    assert again.details.histogram.log_y.isChecked()
    # the recent entry remembers how it was opened (issue 10 finding 11: it forgot --arch / --model)
    assert [a.text() for a in again.recent_menu.actions()] == [f"{Path(minilm).resolve()} · --arch {MINILM_HEAD}"]
    with qtbot.waitSignal(again.session.loaded, timeout=120_000):
        again.recent_menu.actions()[0].trigger()
    assert again.session.report.arch == MINILM_HEAD
    again.session.close()


def test_recent_entries_are_read_back_as_data(qtbot, tmp_path):
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QMenu

    from explorer.gui.request import Source
    from explorer.gui.window_settings import RecentFiles

    s = QSettings(str(tmp_path / "r.ini"), QSettings.Format.IniFormat)
    s.setValue("recent", ["/old/style/path"])  # what an older version wrote
    r = RecentFiles(s, QMenu(), lambda src: None)
    assert r.paths() == ["/old/style/path"]
    r.add(Source(checkpoint="/a/ckpt", model="pkg.mod:Net", model_kwargs={"layers": 2}))
    r.add(Source(checkpoint="/a/ckpt", arch="BertModel"))  # the latest way it was opened wins
    assert [x.arch for x in r.sources()] == ["BertModel", None]
    s.setValue(RecentFiles.KEY, '[{"checkpoint": 7}, {"checkpoint": "/b", "arch": ["x"]}, "junk", {"checkpoint": "/c"}]')
    assert r.paths() == ["/c"]  # malformed records are skipped, never an error
