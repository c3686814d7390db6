"""Where output goes (item 3 and part of 2): never over an input, a device/FIFO or a file the command did not write."""
from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from tests.security.harness import assert_refused, run_all, snapshot, tree_changes


def _copy_good(good: Path, d: Path) -> Path:
    shutil.copytree(good, d)
    return d


# id -> (argv template, what the line names, what it says, command); {m} = a private copy of the good model folder
OUTPUT_CASES = {
    "screenshot-devnull-link": (["open", "{m}", "--screenshot", "{run}/null.png"], "null.png", r"regular|device|FIFO"),
    "plan-over-fifo": (["plan", "{m}", "-o", "{run}/fifo.json"], "fifo.json", r"regular|FIFO"),
    "plan-devnull-link": (["plan", "{m}", "-o", "{run}/null.json"], "null.json", r"regular|device|FIFO"),
    "plan-over-checkpoint": (["plan", "{m}", "-o", "{m}/model.safetensors"], "model.safetensors", r"input|refus"),
    "plan-over-unrelated": (["plan", "{m}", "-o", "{run}/notes.txt"], "notes.txt", r"force|not a|refus"),
    "export-inside-source": (["export", "{m}", "--plan", "{plan}", "-o", "{m}/out"], "out", r"inside|source"),
    "export-over-fifo": (["export", "{m}", "--plan", "{plan}", "-o", "{run}/fifo"], "fifo", r"regular|FIFO|folder|empty|exist"),
    "export-over-file": (["export", "{m}", "--plan", "{plan}", "-o", "{run}/notes.txt"], "notes.txt", r"folder|exist|empty|file"),
}


@pytest.fixture(scope="module")
def world(tmp_path_factory, good, good_plan):
    root = tmp_path_factory.mktemp("sec-out")
    jobs = {}
    for oid, (argv, _, _) in OUTPUT_CASES.items():
        d = root / oid
        m = _copy_good(good, d / "m")
        run = d / "run"
        run.mkdir()
        (run / "notes.txt").write_text("my notes\n")
        os.mkfifo(run / "fifo.json")
        os.mkfifo(run / "fifo")
        os.symlink("/dev/null", run / "null.png")
        os.symlink("/dev/null", run / "null.json")
        jobs[oid] = ([a.replace("{m}", str(m)).replace("{run}", str(run)).replace("{plan}", str(good_plan)) for a in argv], run)
    devnull = os.stat("/dev/null")
    before = snapshot(root)
    results = run_all(jobs)
    after = snapshot(root)
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode) and os.stat("/dev/null").st_ino == devnull.st_ino
    return dict(root=root, results=results, before=before, after=after)


@pytest.mark.parametrize("oid", list(OUTPUT_CASES))
def test_output_refused_and_nothing_replaced(world, oid):
    _, names, says = OUTPUT_CASES[oid]
    assert_refused(world["results"][oid], names=names, says=says)
    b = {k: v for k, v in world["before"].items() if k.startswith(oid + "/")}
    a = {k: v for k, v in world["after"].items() if k.startswith(oid + "/")}
    assert not tree_changes(b, a), tree_changes(b, a)
