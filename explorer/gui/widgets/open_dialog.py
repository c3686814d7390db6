"""File › Open: one dialog for a checkpoint file *or* folder (issue 10 finding 11). A Hugging Face folder, a sharded
folder or a DCP folder is the README's first-class input, but Qt's file dialog only returns files: here, "Open"
on a selected folder that holds a checkpoint (``core.checkpoint.is_checkpoint_folder``) chooses the folder;
any other folder is entered as usual, and "Open" with nothing selected inside a checkpoint folder chooses it."""
from __future__ import annotations

import os

from PySide6.QtWidgets import QDialog, QFileDialog, QWidget

CHECKPOINT_FILTER = ("Checkpoints and PEFT adapters (*.safetensors *.bin *.pt *.pth *.ckpt *.index.json adapter_config.json);;"
                     "All files (*)")  # an adapter folder or its adapter_config.json opens the adapter on its base


class CheckpointDialog(QFileDialog):
    """``exec()``, then ``chosen``: the file or folder to open (None when cancelled)."""

    def __init__(self, parent: QWidget | None, directory: str) -> None:
        super().__init__(parent, "Open checkpoint (a file, or a folder: select it and press Open)", directory,
                         CHECKPOINT_FILTER)
        self.setOption(QFileDialog.Option.DontUseNativeDialog, True)  # a native dialog cannot return folders here
        self.setFileMode(QFileDialog.FileMode.ExistingFile)
        self.setAcceptMode(QFileDialog.AcceptMode.AcceptOpen)
        self.chosen: str | None = None

    def folder_choice(self) -> str | None:
        """The checkpoint folder "Open" means now: the selected folder, else (nothing selected) the one shown."""
        picked = [f for f in self.selectedFiles() if f]
        if picked and os.path.isdir(picked[0]):
            return picked[0] if is_folder(picked[0]) else None
        if not picked or os.path.normpath(picked[0]) == os.path.normpath(self.directory().absolutePath()):
            here = self.directory().absolutePath()
            return here if is_folder(here) else None
        return None

    def accept(self) -> None:
        folder = self.folder_choice()
        if folder is not None:
            self.chosen = folder
            QDialog.accept(self)  # not QFileDialog.accept: that would enter the folder
            return
        super().accept()
        if self.result() == QDialog.DialogCode.Accepted:
            files = self.selectedFiles()
            self.chosen = files[0] if files else None


def is_folder(path: str) -> bool:
    from ...core.checkpoint import is_checkpoint_folder

    return is_checkpoint_folder(path)
