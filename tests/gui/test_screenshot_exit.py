"""``open --screenshot`` always ends: a failure while saving the shot that is not one of the expected refusals (an
OSError, an ExplorerError) is one error line and exit 2, never a Qt slot's traceback followed by a process idling
in its event loop for ever (the timeout handler used to fail the same way and leave it running)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import sys
    from explorer.gui.main_window import MainWindow

    def broken(self, path, *, force=False):
        raise RuntimeError("the renderer broke")

    MainWindow.save_screenshot = broken  # the test's own code, standing in for a bug in the save path
    from explorer.cli import main
    sys.exit(main(["open", "--demo", "--screenshot", sys.argv[1]]))
""")


def test_an_unexpected_failure_while_saving_exits_with_one_line(tmp_path):
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "HF_HUB_OFFLINE": "1",
           "CKPT_EXPLORER_CACHE": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "shot.png")], capture_output=True, text=True,
                       env=env, cwd=tmp_path, timeout=240)
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr, r.stderr[-2000:]
    errors = [line for line in r.stderr.splitlines() if line.startswith("ckpt-explorer: error:")]
    assert errors == ["ckpt-explorer: error: the screenshot failed: RuntimeError: the renderer broke"], r.stderr
    assert not (tmp_path / "shot.png").exists()
