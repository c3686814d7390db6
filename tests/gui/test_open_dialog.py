"""File › Open picks a checkpoint folder, the README's first-class input (issue 10 finding 11)."""
from __future__ import annotations

from pathlib import Path

from tests.gui.conftest import LOAD_TIMEOUT


def test_open_dialog_chooses_a_checkpoint_folder_and_enters_others(qtbot, window, minilm) -> None:
    folder = Path(minilm)
    dlg = window.opener.open_dialog()  # built, not run (the window is not interactive)
    dlg.setDirectory(str(folder.parent))
    dlg.selectFile(folder.name)
    with qtbot.waitSignal(window.session.loaded, timeout=LOAD_TIMEOUT):
        dlg.accept()
    assert dlg.chosen == str(folder) and window.session.report.index.path == str(folder)
    # a folder without a checkpoint (1_Pooling holds only a config) is entered, as in any file dialog
    dlg2 = window.opener.open_dialog()
    dlg2.setDirectory(str(folder))
    dlg2.selectFile("1_Pooling")
    dlg2.accept()
    assert dlg2.chosen is None and Path(dlg2.directory().absolutePath()) == folder / "1_Pooling"
    # inside a checkpoint folder with nothing selected, Open means that folder
    dlg3 = window.opener.open_dialog()
    dlg3.setDirectory(str(folder))
    with qtbot.waitSignal(window.session.loaded, timeout=LOAD_TIMEOUT):
        dlg3.accept()
    assert dlg3.chosen == str(folder)


def test_is_checkpoint_folder_follows_open_checkpoint(tmp_path, minilm) -> None:
    from explorer.core.checkpoint import is_checkpoint_folder

    assert is_checkpoint_folder(minilm)
    assert not is_checkpoint_folder(tmp_path) and not is_checkpoint_folder(Path(minilm) / "1_Pooling")
    assert not is_checkpoint_folder(Path(minilm) / "model.safetensors")  # a file is not a folder
