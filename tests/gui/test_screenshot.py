"""Screenshots: the PNG is written, waits for what it should show, and a failed run says why."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from explorer.gui.panels import InitPanel
from tests.gui.conftest import FRESH_KEY as Q
from tests.gui.conftest import LOAD_TIMEOUT, open_and_wait


def _shot(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "explorer", "open", *args, "--screenshot", str(tmp_path / "x.png")],
                          env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)


def test_screenshot_mode_says_why_it_failed_on_stderr(tmp_path, demo_dir):
    r = _shot(tmp_path, "nope/")
    assert r.returncode == 2
    assert "ckpt-explorer: error: nope: no such file or directory" in r.stderr.splitlines()
    # a failed compare is not a success: message on stderr, exit 2 (and the PNG shows it in the message bar)
    r = _shot(tmp_path, str(demo_dir), "--compare", "nope2/")
    assert r.returncode == 2, r.stderr
    err = [ln for ln in r.stderr.splitlines() if ln.startswith("ckpt-explorer: error:")]
    assert len(err) == 1 and "compare with checkpoint B failed" in err[0] and "nope2" in err[0]
    assert (tmp_path / "x.png").is_file()


def test_screenshot_waits_for_init_check_and_overlay(qtbot, full_window, trained_but_one):
    win = full_window
    win.when_ready()  # every panel prepares its part of the shot (the init check, for a small checkpoint)
    overlays = []
    win.panel(InitPanel).overlayReady.connect(overlays.append)
    from explorer.gui.session import Source

    with qtbot.waitSignal(win.ready, timeout=LOAD_TIMEOUT):
        win.open_source(Source(checkpoint=str(trained_but_one)))
    # by the time the window says ready: the check ran, the flagged tensor is selected and overlaid
    assert win.session.untrained == {Q}
    assert win.details.selection.names == (Q,)
    assert overlays and overlays[-1][0] == (Q,)
    assert win.details.histogram.overlay.isVisible()
    assert "looks untrained" in win.details.histogram_note.text()


def test_screenshot_cli_writes_png(qtbot, tmp_path, demo_dir):
    import os
    import subprocess
    import sys

    from PySide6.QtGui import QImage

    png = tmp_path / "shot.png"
    png.write_text("not a PNG")  # a file of another kind: replaced only because --force is given
    # a real process: the CLI creates its own QApplication and exits when the PNG is written
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", HF_HUB_OFFLINE="1")
    r = subprocess.run([sys.executable, "-m", "explorer", "open", "--demo", "--screenshot", str(png), "--force"],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    img = QImage(str(png))
    assert not img.isNull()
    assert img.width() >= 1200 and img.height() >= 750
