"""`open --screenshot PATH` is checked before the window starts: never over the checkpoint being opened, a file
of its folder's checkpoint (weights, index, config.json), --config or --compare — not even with --force — never
over a FIFO, a device or a link to one, and over a file that is not a PNG only with --force. One line, exit 2."""
from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from explorer.cli import main
from tests.helpers import save_tiny


def _sums(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def src(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("ckpt")
    save_tiny("bert", "BertModel", d)
    return d


def _run(capsys, *args: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(list(args))
    cap = capsys.readouterr()
    assert cap.out == ""
    return code, cap.err


@pytest.mark.parametrize("force", [[], ["--force"]])
@pytest.mark.parametrize("how", ["file", "folder", "config", "compare"])
def test_screenshot_over_an_input_is_refused_even_forced(src, tmp_path, capsys, how, force):
    weights, cfg = src / "model.safetensors", src / "config.json"
    other = tmp_path / "other.safetensors"
    other.write_bytes(weights.read_bytes())
    args, target = {
        "file": (["open", str(weights)], weights),           # --screenshot ckpt/model.safetensors turned it into a PNG
        "folder": (["open", str(src)], cfg),                  # or its config.json
        "config": (["open", str(other), "--config", str(cfg)], cfg),
        "compare": (["open", str(weights), "--compare", str(other)], other),
    }[how]
    before, other_before = _sums(src), hashlib.sha256(other.read_bytes()).hexdigest()
    code, err = _run(capsys, *args, "--screenshot", str(target), *force)
    assert code == 2
    assert err.startswith(f"ckpt-explorer: error: {target}: refusing to write the screenshot PNG over an input of this command")
    assert err.count("\n") == 1
    assert _sums(src) == before and hashlib.sha256(other.read_bytes()).hexdigest() == other_before


def test_screenshot_over_a_fifo_or_a_device_link_is_refused(src, tmp_path, capsys):
    fifo = tmp_path / "shot.png"
    os.mkfifo(fifo)
    null = tmp_path / "null.png"
    null.symlink_to(os.devnull)  # a character device reports size 0; the real /dev/null is never opened
    for target in (fifo, null):
        code, err = _run(capsys, "open", str(src), "--screenshot", str(target), "--force")
        assert code == 2 and err == (f"ckpt-explorer: error: {target}: refusing to write the screenshot PNG over "
                                     "something that is not a regular file (a FIFO, socket or device)\n")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and null.is_symlink()


def test_screenshot_over_a_file_of_another_kind_needs_force(src, tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    code, err = _run(capsys, "open", str(src), "--screenshot", str(notes))
    assert code == 2 and err == (f"ckpt-explorer: error: {notes}: exists and is not a screenshot PNG this command wrote; "
                                 "refusing to replace it (--force to overwrite)\n")
    assert notes.read_text() == "mine"
    code, err = _run(capsys, "open", str(src), "--force")
    assert code == 2 and err == "ckpt-explorer: error: --force only applies to --screenshot\n"
    code, err = _run(capsys, "open", str(src), "--screenshot", str(tmp_path / "no" / "shot.png"))
    assert code == 2 and "folder" in err and "does not exist" in err
