"""`ckpt-explorer open` on a machine without the X11 libraries Qt's xcb plugin needs (issue 10 finding 17): one line
naming the Debian packages and exit 2, never Qt's abort with a core dump."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from explorer.gui.xcb_check import XCB_LIBRARIES, missing_xcb_libraries, uses_xcb, xcb_problem

ROOT = Path(__file__).resolve().parents[2]


def test_uses_xcb_only_where_qt_would() -> None:
    assert uses_xcb({"DISPLAY": ":0"}, "linux")
    assert uses_xcb({"QT_QPA_PLATFORM": "xcb", "DISPLAY": ":0"}, "linux")
    assert not uses_xcb({"QT_QPA_PLATFORM": "offscreen", "DISPLAY": ":0"}, "linux")
    assert not uses_xcb({"DISPLAY": ":0", "WAYLAND_DISPLAY": "wayland-0"}, "linux")
    assert not uses_xcb({}, "linux")
    assert not uses_xcb({"DISPLAY": ":0"}, "darwin")


def test_the_line_names_the_missing_libraries_and_their_packages() -> None:
    gone = {"libxcb-cursor.so.0", "libxcb-icccm.so.4", "libxcb-keysyms.so.1"}
    msg = xcb_problem({"DISPLAY": ":0"}, loadable=lambda so: so not in gone)
    assert msg is not None and "\n" not in msg
    assert "sudo apt-get install libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1" in msg
    assert xcb_problem({"DISPLAY": ":0"}, loadable=lambda so: True) is None
    assert xcb_problem({"QT_QPA_PLATFORM": "offscreen"}, loadable=lambda so: False) is None


def test_what_is_missing_agrees_with_ldd_on_the_real_plugin() -> None:
    import PySide6

    plugin = Path(PySide6.__file__).parent / "Qt" / "plugins" / "platforms" / "libqxcb.so"
    if not plugin.is_file() or shutil.which("ldd") is None:
        pytest.skip("no xcb plugin or no ldd here")
    out = subprocess.run(["ldd", str(plugin)], capture_output=True, text=True).stdout
    not_found = {ln.split()[0] for ln in out.splitlines() if "not found" in ln}
    assert not_found <= set(XCB_LIBRARIES)  # every library the plugin can lack has a package to name
    assert set(missing_xcb_libraries()) == not_found


def test_open_prints_one_line_instead_of_aborting(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("QT_QPA_PLATFORM", "WAYLAND_DISPLAY")}
    env.update(DISPLAY=":97", PYTHONPATH=str(ROOT), HOME=str(tmp_path))
    code = ("import sys\n"
            "import explorer.gui.xcb_check as x\n"
            "x._loadable = lambda so: so not in ('libxcb-icccm.so.4', 'libxcb-keysyms.so.1')\n"
            "from explorer.cli import main\n"
            "sys.exit(main(['open', '--demo']))\n")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "libxcb-icccm4 libxcb-keysyms1" in lines[0] and lines[0].startswith("ckpt-explorer: error:")
