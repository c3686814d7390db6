"""The "Files" tab (the example of a panel added in one file + one line): every file of a sharded checkpoint with
its tensors, bytes and dtypes, from the real index; choosing a file selects its largest tensor."""
from __future__ import annotations

import json

from tests.gui.conftest import open_and_wait


def test_files_tab_lists_every_shard_and_selects_its_largest_tensor(qtbot, full_window, small_moe):
    from explorer.core.checkpoint import open_checkpoint
    from explorer.gui.panels.files import FilesPanel

    win = full_window
    panel = win.panel(FilesPanel)
    assert win.tabs.tabText(win.tabs.indexOf(panel)) == "Files"
    open_and_wait(qtbot, win, checkpoint=str(small_moe))
    index = open_checkpoint(str(small_moe))
    wm = json.loads((small_moe / "model.safetensors.index.json").read_text())["weight_map"]
    model = panel.model
    rows = {model.index(i, 0).data(): int(model.index(i, 1).data().replace(",", "")) for i in range(model.rowCount())}
    assert rows == {f: sum(1 for v in wm.values() if v == f) for f in set(wm.values())}
    assert sum(rows.values()) == len(index.tensors) == 171
    assert "bfloat16" in model.index(0, 3).data()
    assert panel.summary.text().startswith(f"{len(rows)} file")
    rec = model.records[0]
    biggest = max((n for n, t in index.tensors.items() if t.file.endswith(rec.name)), key=lambda n: index.tensors[n].nbytes)
    panel.table.setCurrentIndex(panel.table.proxy.mapFromSource(model.index(0, 0)))
    qtbot.waitUntil(lambda: win.details.selection is not None and win.details.selection.names == (biggest,))
