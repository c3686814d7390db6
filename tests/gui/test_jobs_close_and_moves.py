"""Closing during a job and quick moves through the tensors (issue 10 findings 5 and 6): close never waits for a
job's long step, a job cancelled while queued never runs, and a per-expert row works on its own bytes only."""
from __future__ import annotations

import threading

from tests.gui.conftest import LOAD_TIMEOUT, open_and_wait, select_and_measure


def test_close_returns_while_a_job_is_in_a_long_step(qtbot, window) -> None:
    # a job in a step it cannot interrupt (one tensor's init on a 70B): the window used to wait 10 s for it
    release, seen, closed = threading.Event(), {}, {"returned": False}

    def job(progress, cancelled):
        release.wait(5)
        seen["close_returned_first"], seen["cancelled"] = closed["returned"], cancelled()

    window.session.jobs.start(job, purpose="init_check")
    qtbot.waitUntil(lambda: window.session.jobs.started["init_check"] == 1, timeout=10_000)
    window.close()
    closed["returned"] = True
    release.set()
    assert window.session.jobs.pool.waitForDone(10_000)
    assert seen == {"close_returned_first": True, "cancelled": True}


def test_a_job_cancelled_while_queued_never_runs(qtbot) -> None:
    from explorer.gui.workers import JobHandle, Jobs

    jobs = Jobs()
    pool = jobs.pool
    pool.setMaxThreadCount(1)
    busy, ran = threading.Event(), []
    jobs.start(lambda p, c: busy.wait(10), purpose="init_check")  # holds the only thread
    qtbot.waitUntil(lambda: jobs.started["init_check"] == 1, timeout=10_000)
    for i in range(30):  # 30 quick moves: each selection's statistics replace the previous one's
        jobs.start(lambda p, c, i=i: ran.append(i), purpose="stats")
    busy.set()
    assert pool.waitForDone(10_000)
    assert ran == [29] and jobs.started["stats"] == 1  # the 29 stale ones were cancelled, not run and ignored
    qtbot.waitUntil(lambda: not jobs.findChildren(JobHandle), timeout=10_000)  # every handle let go of


def test_a_per_expert_row_never_builds_the_fused_tensors_init(qtbot, full_window, small_moe) -> None:
    win = full_window
    open_and_wait(qtbot, win, checkpoint=str(small_moe))
    rep = win.session.report
    name = "model.layers.1.mlp.experts.11.down_proj.weight"
    assert rep.checkpoint_keys[name].targets == ("model.layers.1.mlp.experts.down_proj",)
    from explorer.gui.panels import InitPanel

    fused = next(m for k, m in rep.model_keys.items() if k == "model.layers.1.mlp.experts.down_proj")
    before = win.session.jobs.started["fresh"]
    with qtbot.waitSignal(win.panel(InitPanel).overlayReady, timeout=LOAD_TIMEOUT) as ov:
        st = select_and_measure(qtbot, win, name)
    assert st.numel == rep.index.tensors[name].numel  # its own bytes, not the fused tensor's
    _names, fst, res = ov.args[0]
    # checked against a fresh init of one expert (it used to be skipped: "fused on load"), never of every expert
    experts = fused.model_shape[0]
    assert res.kind == "random" and fst.numel * experts == __import__("math").prod(fused.model_shape)
    assert win.session.jobs.started["fresh"] == before + 1
    assert "differs from a fresh init" in win.details.histogram_note.text()  # its values are a hole of zeros
