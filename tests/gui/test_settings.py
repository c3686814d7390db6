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
    assert [a.text() for a in again.recent_menu.actions()] == [str(Path(minilm).resolve())]
    again.session.close()
