"""GUI fixtures: a MainWindow with throw-away settings, and helpers that wait on signals (never sleep)."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

LOAD_TIMEOUT = 120_000


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> Path:
    import os

    os.environ["CKPT_EXPLORER_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    from explorer.core.demo import build_demo

    return build_demo().folder


@pytest.fixture
def window(qtbot, tmp_path, request):
    """A MainWindow with the panels the test module lists in its ``PANELS`` (none: the bare window)."""
    from PySide6.QtCore import QSettings

    from explorer.gui.app import make_app
    from explorer.gui.main_window import MainWindow

    make_app()
    win = MainWindow(settings=QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat), interactive=False,
                     panels=getattr(request.module, "PANELS", ()))
    qtbot.addWidget(win)
    win.resize(1300, 800)
    win.show()
    yield win
    win.session.close()


@pytest.fixture
def full_window(qtbot, tmp_path):
    """A MainWindow with every panel of ``panels.PANELS``."""
    from PySide6.QtCore import QSettings

    from explorer.gui.app import make_app
    from explorer.gui.main_window import MainWindow
    from explorer.gui.panels import PANELS

    make_app()
    win = MainWindow(settings=QSettings(str(tmp_path / "full.ini"), QSettings.Format.IniFormat), interactive=False,
                     panels=PANELS)
    qtbot.addWidget(win)
    win.resize(1300, 800)
    win.show()
    yield win
    win.session.close()


def open_and_wait(qtbot, win, **source):
    from explorer.gui.session import Source

    with qtbot.waitSignal(win.session.loaded, timeout=LOAD_TIMEOUT):
        win.open_source(Source(**source))
    return win.session.current


def select_and_measure(qtbot, win, key: str):
    """Select ``key`` and wait for its statistics to be drawn."""
    with qtbot.waitSignal(win.details.statsReady, timeout=LOAD_TIMEOUT) as blocker:
        assert win.select_key(key), key
    return blocker.args[0]


def write_safetensors(path: Path, tensors: dict, *, hole: tuple[str, str, list[int]] | None = None) -> None:
    """A safetensors file written by hand; ``hole=(name, dtype_code, shape)`` appends a tensor whose data is a
    sparse hole (f.truncate), so a huge tensor costs no disk."""
    import numpy as np

    codes = {"float32": "F32", "int64": "I64", "float16": "F16", "bfloat16": "BF16"}
    header, blobs, off = {}, [], 0
    for name, (code, shape, raw) in tensors.items():
        header[name] = {"dtype": code, "shape": shape, "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    extra = 0
    if hole is not None:
        name, code, shape = hole
        size = {"F16": 2, "BF16": 2, "F32": 4}[code] * int(np.prod(shape))
        header[name] = {"dtype": code, "shape": shape, "data_offsets": [off, off + size]}
        extra = size
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
        f.truncate(8 + len(h) + off + extra)
    del codes
