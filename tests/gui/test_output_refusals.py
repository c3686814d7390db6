"""What the window writes (screenshot, histogram PNG/CSV, plan) never replaces a file it read — not even when the
user confirmed "replace" in a save dialog (``force``) — nor a FIFO, a device or a link to one; a file of another
kind is replaced only with ``force``. Each case builds the hostile target and checks the bytes on disk."""
from __future__ import annotations

import hashlib
import os
import shutil
import stat
from pathlib import Path

import pytest

from explorer.core.errors import ExplorerError
from tests.gui.conftest import open_and_wait, select_and_measure

PNG = b"\x89PNG\r\n\x1a\n"


def _sums(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture
def opened(qtbot, window, demo_dir, tmp_path):
    """The window on a private copy of the demo checkpoint (its weights and config.json are inputs)."""
    src = tmp_path / "ckpt"
    shutil.copytree(demo_dir, src)
    open_and_wait(qtbot, window, checkpoint=str(src), config=str(src))
    return window, src


def test_window_inputs_are_the_files_it_read(opened):
    win, src = opened
    files = {os.path.realpath(p) for p in win.input_files()}
    assert {os.path.realpath(src / "model.safetensors"), os.path.realpath(src / "config.json")} <= files


@pytest.mark.parametrize("name", ["model.safetensors", "config.json"])
def test_screenshot_never_replaces_an_input_even_forced(opened, name):
    win, src = opened
    before = _sums(src)
    for force in (False, True):
        with pytest.raises(ExplorerError, match=rf"{name}: refusing to write the screenshot PNG over an input"):
            win.save_screenshot(str(src / name), force=force)
    # a link to an input is the input
    link = src.parent / "shot.png"
    link.symlink_to(src / name)
    with pytest.raises(ExplorerError, match="over an input"):
        win.save_screenshot(str(link), force=True)
    assert _sums(src) == before and link.is_symlink()


def test_screenshot_over_other_files_needs_force_and_never_a_fifo(opened, tmp_path):
    win, _src = opened
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    with pytest.raises(ExplorerError, match=r"notes.txt: exists and is not a screenshot PNG this command wrote; "
                                            r"refusing to replace it \(--force to overwrite\)$"):
        win.save_screenshot(str(notes))
    assert notes.read_text() == "mine"
    win.save_screenshot(str(notes), force=True)
    assert notes.read_bytes()[:8] == PNG
    win.save_screenshot(str(notes))  # now a PNG: replaced without asking
    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)
    null = tmp_path / "null.png"
    null.symlink_to(os.devnull)  # stat: a character device of size 0; never opened
    for target in (fifo, null):
        with pytest.raises(ExplorerError, match="over something that is not a regular file"):
            win.save_screenshot(str(target), force=True)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and null.is_symlink()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left


def test_histogram_exports_refuse_inputs_devices_and_other_files(qtbot, opened, tmp_path):
    win, src = opened
    select_and_measure(qtbot, win, "bert.embeddings.word_embeddings.weight")
    h = win.details.histogram
    before = _sums(src)
    for export in (h.export_png, h.export_csv):
        for name in ("model.safetensors", "config.json"):
            with pytest.raises(ExplorerError, match="over an input of this command"):
                export(str(src / name), force=True)
        fifo = tmp_path / f"fifo-{export.__name__}"
        os.mkfifo(fifo)
        with pytest.raises(ExplorerError, match="not a regular file"):
            export(str(fifo), force=True)
        other = tmp_path / f"other-{export.__name__}"
        other.write_text("keep me")
        with pytest.raises(ExplorerError, match=r"exists and is not a histogram (PNG|CSV) this command wrote"):
            export(str(other))
        assert other.read_text() == "keep me"
        export(str(other), force=True)  # the save dialog's "replace?" is the user's --force
    assert _sums(src) == before
    csv, png = tmp_path / "h.csv", tmp_path / "h.png"
    h.export_csv(str(csv))
    h.export_csv(str(csv))  # our own CSV is replaced
    h.export_png(str(png))
    h.export_png(str(png))
    assert csv.read_text().startswith("# histogram of ") and png.read_bytes()[:8] == PNG
    assert csv.read_text().splitlines()[1] == "left,right,count"
    with pytest.raises(ExplorerError, match="is not a histogram CSV"):
        h.export_csv(str(png))  # a PNG is not our CSV


def test_plan_editor_save_never_replaces_an_input(qtbot, full_window, demo_dir, tmp_path):
    from explorer.core.errors import PlanError
    from explorer.core.plan import load_plan
    from explorer.gui.panels import PlanPanel
    from explorer.gui.panels.plan import looks_like_plan

    window = full_window
    ed = window.panel(PlanPanel)
    src = tmp_path / "ckpt"
    shutil.copytree(demo_dir, src)
    open_and_wait(qtbot, window, checkpoint=str(src), config=str(src))
    assert ed.plan is not None
    before = _sums(src)
    with pytest.raises(PlanError, match="over an input of this command"):
        ed.save_plan(str(src / "config.json"), force=True)
    assert _sums(src) == before
    p = tmp_path / "plan.json"
    ed.save_plan(str(p))
    assert looks_like_plan(str(p)) and load_plan(p).arch == ed.plan.arch
    for not_plan in (src / "config.json", src / "model.safetensors", tmp_path / "absent.json"):
        assert not looks_like_plan(str(not_plan))

