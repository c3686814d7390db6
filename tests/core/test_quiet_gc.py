"""The cyclic garbage collector is held off while a report is made (``core.jobs.quiet_gc``): its full collections
walk every object of the process (torch's and transformers' modules too) and were a quarter of the MoE report's
CPU time. Checked by counting the collections that start (``gc.callbacks``), never by timing."""
from __future__ import annotations

import gc

import pytest

from explorer.cli import main
from explorer.core.demo import build_demo
from explorer.core.jobs import quiet_gc
from explorer.core.matching import report
from explorer.core.model import ModelSpec

from tests.helpers import held_in_thread


@pytest.fixture
def collections():
    """A list that receives the generation of every automatic or explicit collection started meanwhile."""
    seen: list[int] = []

    def cb(phase: str, info: dict) -> None:
        if phase == "start":
            seen.append(info["generation"])

    gc.callbacks.append(cb)
    try:
        yield seen
    finally:
        gc.callbacks.remove(cb)


def test_quiet_gc_restores_the_state_it_found():
    assert gc.isenabled()
    with quiet_gc():
        assert not gc.isenabled()
        with quiet_gc():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer block still holds it
    assert gc.isenabled()
    gc.disable()
    try:
        with quiet_gc():
            pass
        assert not gc.isenabled()  # off before, off after
    finally:
        gc.enable()


def test_quiet_gc_nests_across_threads():
    states: list[bool] = []
    with held_in_thread(quiet_gc()) as other:
        with quiet_gc():
            pass
        states.append(gc.isenabled())  # this thread's block ended first: the other's still holds GC off
        other.release()
        states.append(gc.isenabled())
    assert states == [False, True]


def test_freeze_when_the_last_block_ends():
    gc.unfreeze()
    try:
        with quiet_gc():
            with quiet_gc(freeze=True):
                pass
            assert gc.get_freeze_count() == 0  # not before the outer block ends
        assert gc.get_freeze_count() > 0
        gc.unfreeze()
        with quiet_gc():
            pass
        assert gc.get_freeze_count() == 0  # a library call does not freeze
    finally:
        gc.unfreeze()


def test_a_report_runs_no_collection(tmp_path, monkeypatch, collections):
    monkeypatch.setenv("CKPT_EXPLORER_CACHE", str(tmp_path / "cache"))
    demo = build_demo()
    spec = ModelSpec(config=str(demo.folder), arch=demo.arch)
    report(demo.folder, spec)  # first: imports and warm-up, whatever the test order
    collections.clear()
    rep = report(demo.folder, spec)
    during = len(collections)  # len: no allocation, so no collection of its own
    # at most the one that the first allocation after the block starts (the counts piled up meanwhile)
    assert during <= 1, collections
    assert rep.counts()["matched"] > 0
    assert gc.isenabled()


def test_the_report_command_runs_no_collection(tmp_path, monkeypatch, capsys, collections):
    monkeypatch.setenv("CKPT_EXPLORER_CACHE", str(tmp_path / "cache"))
    demo = build_demo()
    assert main(["report", str(demo.folder), "--no-cache"]) in (0, 1)
    capsys.readouterr()
    collections.clear()
    for args in (["--no-cache", "--json"], ["--json"], []):  # fresh, a cache miss (stored), a cache hit
        collections.clear()
        code = main(["report", str(demo.folder), *args])
        during = len(collections)
        assert code in (0, 1)
        assert capsys.readouterr().out
        assert during <= 1, (args, collections)
    assert gc.isenabled()
