"""File › Open from Hub…: a repo id (completed from the local Hugging Face cache), a revision and an optional
subfolder; which token huggingface_hub will use is shown (never the token). The result is an ``hf://`` source
string, so a local folder of the same name never wins, and File › Recent remembers it as typed."""
from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCompleter,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QVBoxLayout,
    QWidget,
)

from ..core.errors import ExplorerError
from ..core.remote import HubSource, parse_source
from ..core.remote.hub import cached_repo_ids, endpoint, token_source


def hub_source_text(repo: str, revision: str = "", subfolder: str = "") -> str:
    """``hf://org/name[@rev][/subfolder]`` for the dialog's fields (revision "main" or empty: the default)."""
    rev = revision.strip()
    text = f"hf://{repo.strip().strip('/')}" + (f"@{rev}" if rev and rev != "main" else "")
    sub = subfolder.strip().strip("/")
    return text + (f"/{sub}" if sub else "")


class OpenFromHubDialog(QDialog):
    def __init__(self, parent: QWidget | None = None, *, repos: list[str] | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Open from Hub")
        self.source: str | None = None
        self.repo = QLineEdit()
        self.repo.setPlaceholderText("org/name")
        known = cached_repo_ids() if repos is None else repos
        comp = QCompleter(known, self)
        comp.setCaseSensitivity(Qt.CaseSensitivity.CaseInsensitive)
        comp.setFilterMode(Qt.MatchFlag.MatchContains)
        self.repo.setCompleter(comp)
        self.revision = QLineEdit("main")
        self.subfolder = QLineEdit()
        self.subfolder.setPlaceholderText("optional, e.g. unet")
        tok = token_source()
        self.token_label = QLabel(f"Token: from {tok}" if tok else
                                  "Token: none (public repos only; log in with `hf auth login` or set HF_TOKEN)")
        self.token_label.setWordWrap(True)
        self.error = QLabel("")
        self.error.setStyleSheet("color: #D55E00")
        self.error.setWordWrap(True)
        form = QFormLayout()
        form.addRow("Repository", self.repo)
        form.addRow("Revision", self.revision)
        form.addRow("Subfolder", self.subfolder)
        bb = QDialogButtonBox(QDialogButtonBox.StandardButton.Open | QDialogButtonBox.StandardButton.Cancel)
        bb.accepted.connect(self.accept)
        bb.rejected.connect(self.reject)
        lay = QVBoxLayout(self)
        lay.addWidget(QLabel(f"Header-only: only config.json and the safetensors headers are fetched from {endpoint()}."))
        lay.addLayout(form)
        lay.addWidget(self.token_label)
        lay.addWidget(self.error)
        lay.addWidget(bb)
        self.resize(480, 0)

    def accept(self) -> None:
        text = hub_source_text(self.repo.text(), self.revision.text(), self.subfolder.text())
        try:
            src = parse_source(text)
        except ExplorerError as e:
            self.error.setText(str(e))
            return
        if not isinstance(src, HubSource):
            self.error.setText("expected a repo id such as org/name")
            return
        self.source = text
        super().accept()
