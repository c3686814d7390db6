"""Interrupted exports leave nothing behind: SIGTERM unwinds like Ctrl-C (staging removed, exit 143); a SIGKILL'd
export's staging folder carries its pid and a marker, and the next export into the same folder removes it and says
so — and removes nothing else (no marker, a live owner, a link, another host). The exporter is paused mid-write
by a progress hook that tells the test through a pipe: no sleeps."""
from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import explorer
from explorer.cli import main
from explorer.core.staging import STAGING_MARKER, remove_stale_staging
from explorer.core.plan import Plan, save_plan
from tests.helpers import save_tiny

PAUSE = """
import os, sys, threading
fd, argv = int(sys.argv[1]), sys.argv[2:]
import explorer.cli.export as export_cli

class Pause:  # stands in for the progress bar: the first chunk is on disk in the staging folder
    def __call__(self, done, total, name=""):
        os.write(fd, b"x")
        threading.Event().wait()

    def close(self):
        pass

export_cli.stderr_progress = lambda *a, **k: Pause()
from explorer.cli import main
sys.exit(main(argv))
"""


@pytest.fixture(scope="module")
def src(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("src")
    save_tiny("bert", "BertModel", d)
    return d


@pytest.fixture
def plan(tmp_path) -> Path:
    p = tmp_path / "plan.json"
    save_plan(Plan(), p)
    return p


def _paused_export(tmp_path: Path, src: Path, plan: Path, out: Path) -> subprocess.Popen:
    """Start `ckpt-explorer export` in a child and return once it is in the middle of writing."""
    script = tmp_path / "pause.py"
    script.write_text(PAUSE)
    r, w = os.pipe()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(explorer.__file__).parents[1]),
                                                       os.environ.get("PYTHONPATH", "")]))
    p = subprocess.Popen([sys.executable, str(script), str(w), "export", str(src), "--plan", str(plan), "-o", str(out)],
                         pass_fds=(w,), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    os.close(w)
    try:
        ready, _, _ = select.select([r], [], [], 300)  # a guard against a hung child, not a timing assertion
        got = os.read(r, 1) if ready else b""
    finally:
        os.close(r)
    if got != b"x":
        p.kill()
        out_, err = p.communicate()
        pytest.fail(f"the export did not reach its first write: {err}")
    return p


def _staging(parent: Path) -> list[Path]:
    return sorted(p for p in parent.iterdir() if ".partial-" in p.name)


def test_sigterm_mid_export_cleans_up_and_exits_143(src, plan, tmp_path):
    parent = tmp_path / "exports"
    parent.mkdir()
    p = _paused_export(tmp_path, src, plan, parent / "out")
    st = _staging(parent)
    assert len(st) == 1 and st[0].name.startswith(f".out.partial-{p.pid}-") and (st[0] / STAGING_MARKER).is_file()
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 143 and err.endswith("ckpt-explorer: terminated\n") and "Traceback" not in err
    assert list(parent.iterdir()) == []  # neither the staging folder nor a half output


def test_sigkill_leaves_a_staging_folder_the_next_export_removes(src, plan, tmp_path, capsys):
    parent = tmp_path / "exports"
    parent.mkdir()
    p = _paused_export(tmp_path, src, plan, parent / "out")
    p.kill()
    p.communicate(timeout=300)
    assert p.returncode == -signal.SIGKILL
    (stale,) = _staging(parent)
    marker = json.loads((stale / STAGING_MARKER).read_text())
    assert marker["pid"] == p.pid and marker["host"] == socket.gethostname()
    assert (stale / "model.safetensors").is_file()  # the partial shard a SIGKILL could not clean up

    # neighbours that must survive: no marker, a live owner (this process), a link, another host, not ours
    dead = p.pid  # reaped: no process has it
    keep = {
        f".x.partial-{dead}-nomarker": None,
        f".y.partial-{os.getpid()}-alive": {"tool": "ckpt-explorer export", "pid": os.getpid(), "host": socket.gethostname()},
        f".z.partial-{dead}-otherhost": {"tool": "ckpt-explorer export", "pid": dead, "host": "elsewhere.example"},
        f".w.partial-{dead}-notus": {"tool": "something else", "pid": dead, "host": socket.gethostname()},
        f".v.partial-{dead}-pidmismatch": {"tool": "ckpt-explorer export", "pid": dead + 1, "host": socket.gethostname()},
    }
    for name, info in keep.items():
        d = parent / name
        d.mkdir()
        (d / "data.bin").write_bytes(b"precious")
        if info is not None:
            (d / STAGING_MARKER).write_text(json.dumps(info))
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / STAGING_MARKER).write_text(json.dumps({"tool": "ckpt-explorer export", "pid": dead, "host": socket.gethostname()}))
    (parent / f".u.partial-{dead}-link").symlink_to(target)
    (parent / "plain-folder").mkdir()

    capsys.readouterr()
    assert main(["export", str(src), "--plan", str(plan), "-o", str(parent / "again")]) == 0
    printed = capsys.readouterr().out
    assert f"note: removed {stale}: left by an interrupted export (pid {p.pid}, " in printed
    assert not stale.exists()
    left = sorted(q.name for q in parent.iterdir())
    assert left == sorted([*keep, f".u.partial-{dead}-link", "again", "plain-folder"])
    assert all((parent / n / "data.bin").read_bytes() == b"precious" for n in keep)
    assert (target / STAGING_MARKER).is_file()
    assert not (parent / "again" / STAGING_MARKER).exists()  # the result carries no staging marker


def test_an_empty_unmarked_staging_folder_of_a_dead_process_goes(tmp_path):
    """Killed between creating the folder and writing its marker: only an empty folder is removed."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    empty = tmp_path / f".o.partial-{dead.pid}-abc"
    empty.mkdir()
    full = tmp_path / f".o.partial-{dead.pid}-def"
    full.mkdir()
    (full / "x").write_text("x")
    notes = remove_stale_staging(tmp_path)
    assert len(notes) == 1 and notes[0].startswith(f"removed {empty}: left by an interrupted export (pid {dead.pid}")
    assert not empty.exists() and (full / "x").is_file()
