"""What the window's start-up leaves out until its first coloured paint, checked structurally (never by timing):
``ckpt-explorer open`` in a child process, its CKPT_EXPLORER_TIMING milestones (explorer/gui/timing.py) saying which
heavy modules were imported when each was painted. And the guard that keeps PySide6 6.12 from aborting CPython 3.11
(``explorer.gui.none_refcount``)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import save_tiny

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def ckpt(tmp_path) -> Path:
    d = tmp_path / "bert"
    save_tiny("bert", "BertForMaskedLM", d)
    return d


def _open(ckpt: Path, tmp: Path, cache: Path, name: str) -> dict[str, dict]:
    log = tmp / f"{name}.jsonl"
    env = dict(os.environ, HF_HUB_OFFLINE="1", QT_QPA_PLATFORM="offscreen", PYTHONPATH=str(ROOT),
               CKPT_EXPLORER_CACHE=str(cache), CKPT_EXPLORER_TIMING=str(log))
    env.pop("CKPT_EXPLORER_REPORT_CACHE", None)
    shot = tmp / f"{name}.png"
    subprocess.run([sys.executable, "-m", "explorer", "open", str(ckpt), "--screenshot", str(shot)], env=env,
                   capture_output=True, text=True, timeout=600, check=True)
    assert shot.stat().st_size > 0  # and the screenshot (it waits for the first histogram) still comes
    return {e["event"]: e for e in map(json.loads, log.read_text().splitlines())}


def test_first_paints_need_neither_pyqtgraph_nor_torch(ckpt, tmp_path):
    """A first open paints the header-only tensors before pyqtgraph is imported (the histogram's plot is built after
    the first paint), and a re-open paints the coloured report from the cache before pyqtgraph and torch."""
    cache = tmp_path / "cache"
    first = _open(ckpt, tmp_path, cache, "first")
    again = _open(ckpt, tmp_path, cache, "again")
    for e in (first["shown"], again["shown"], again["colours"]):
        assert not {"pyqtgraph", "torch", "transformers"} & set(e["imported"]), e
    # (the preview is painted while the worker goes on to import torch: only pyqtgraph is sure to be absent)
    assert "pyqtgraph" not in first["preview"]["imported"]
    assert "preview" not in again  # from the cache: coloured at once
    assert "torch" in first["colours"]["imported"]  # (a miss makes the report with torch/transformers)


def test_void_qt_calls_do_not_abort_the_interpreter():
    """Each void Qt call of PySide6 6.12 on CPython 3.11 drops a reference to None: 50,000 of them aborted the
    process ("deallocating None") before the guard; a window makes ~70 per repaint of a view."""
    code = ("import sys\nfrom explorer.gui.app import make_app\nfrom PySide6.QtWidgets import QWidget\n"
            "app = make_app()\nw = QWidget()\nfor _ in range(50_000):\n    w.update()\nprint('ok')\n")
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]
