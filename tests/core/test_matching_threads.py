"""Matches running at once in several threads (the window's report, its init check, a comparison) give each
exactly the answer they give alone: transformers' loading functions are patched module-wide while a match
records its renames, so concurrent matches must not see each other's patches."""
from __future__ import annotations

import threading

from explorer.core.demo import build_demo
from explorer.core.matching import report
from explorer.core.model import ModelSpec


def _summary(rep):
    return (sorted(rep.missing), sorted(rep.unexpected), sorted(rep.mismatched),
            sorted((k, m.status, m.how, m.sources, m.tied_to) for k, m in rep.model_keys.items()))


def test_concurrent_matches_equal_the_lone_match(tmp_path, monkeypatch):
    monkeypatch.setenv("CKPT_EXPLORER_CACHE", str(tmp_path / "cache"))
    demo = build_demo()
    spec = ModelSpec(config=str(demo.folder), arch=demo.arch)
    alone = report(demo.folder, spec)
    want = _summary(alone)
    tied_alone = sorted(k for k, m in alone.model_keys.items() if m.tied_to)
    assert tied_alone, "the demo has a tied weight"

    results: list = []
    errors: list = []
    start = threading.Barrier(4)

    def run() -> None:
        try:
            start.wait()
            for _ in range(3):
                results.append(report(demo.folder, spec))
        except Exception as e:  # surfaced below with the thread's error
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors
    assert len(results) == 12
    for rep in results:
        assert sorted(k for k, m in rep.model_keys.items() if m.tied_to) == tied_alone
        assert _summary(rep) == want
    # and nothing was left patched: a match after the storm still equals the lone one
    assert _summary(report(demo.folder, spec)) == want
