"""The "Files" tab: the checkpoint's files (a single file, the shards of a sharded index, the ranks of a DCP
folder) with how many tensors each holds, their bytes and dtypes. Choosing a file selects its largest tensor.

Written as the example of a panel added in one file plus one line in ``PANELS``.
"""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from typing import Any

from PySide6.QtWidgets import QLabel, QVBoxLayout

from ...core.fmt import human_bytes, safe_text
from ..widgets.records import RecordProxy, RecordTable, RecordTableModel
from .base import Panel, PanelHost


@dataclass(frozen=True)
class FileRecord:
    name: str  # the file's name (its folder is the checkpoint's)
    tensors: int
    nbytes: int
    dtypes: str  # "bfloat16 ×290, float32 ×2"
    largest: str  # on-disk name of its largest tensor


def file_records(index: Any) -> list[FileRecord]:
    """One record per file of a ``CheckpointIndex``, in the index's file order."""
    per: dict[str, list[Any]] = {f: [] for f in index.files}
    for name, t in index.tensors.items():
        per.setdefault(t.file, []).append((name, t))
    out = []
    for f, items in per.items():
        dt = Counter(t.dtype for _n, t in items)
        largest = max(items, key=lambda it: it[1].nbytes)[0] if items else ""
        out.append(FileRecord(os.path.basename(f), len(items), sum(t.nbytes for _n, t in items),
                              ", ".join(f"{d} ×{n:,}" for d, n in dt.most_common()), largest))
    return out


class FilesPanel(Panel):
    title = "Files"

    def __init__(self, host: PanelHost) -> None:
        super().__init__(host)
        self.model = RecordTableModel([
            ("file", lambda r: safe_text(r.name), lambda r: r.name),
            ("tensors", lambda r: f"{r.tensors:,}", lambda r: r.tensors),
            ("size", lambda r: human_bytes(r.nbytes), lambda r: r.nbytes),
            ("dtypes", lambda r: r.dtypes, lambda r: r.dtypes),
        ], self)
        self.table = RecordTable(self.model, RecordProxy(self))
        self.table.fit_columns(("", "123,456", "9.31 GiB", "bfloat16 ×1,234"), stretch_first=True)
        self.table.recordChosen.connect(lambda r: r.largest and self.host.select(r.largest))
        self.summary = QLabel("")
        self.summary.setObjectName("muted")
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addWidget(self.summary)
        lay.addWidget(self.table, 1)
        self.session.loaded.connect(self._on_loaded)

    def _on_loaded(self, loaded: Any) -> None:
        recs = file_records(loaded.report.index)
        self.model.set_records(recs)
        total = sum(r.nbytes for r in recs)
        self.summary.setText(f"{len(recs)} file{'s' if len(recs) != 1 else ''} · {human_bytes(total)} · "
                             "choose a file to select its largest tensor")
