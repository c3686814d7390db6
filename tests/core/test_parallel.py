"""Whole-checkpoint passes on several workers (explorer.core.parallel): the same figures for 1 and 2 threads and for
2 processes, equal to a float64 torch reference; progress reaches its total; cancel stops a parallel pass."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from explorer.core.checkpoint import open_checkpoint
from explorer.core.errors import Cancelled, ExplorerError
from explorer.core.parallel import ProcessExecutor, check_workers, default_workers, executor_for
from explorer.core.stats import aggregate_stats, stats_many

CHUNK = 10_000  # small work items: every tensor below is cut into many


def _checkpoint(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    w = torch.randn(300, 257, generator=g) * 0.02 + 0.5
    w[3, :7] = 0
    w[100, 5] = float("nan")
    w[200, 9] = float("inf")
    t = {
        "w": w,
        "b": (torch.randn(123_457, generator=g) * 3).to(torch.bfloat16),
        "h": (torch.randn(54_321, generator=g)).half(),
        "ids": torch.randint(-5, 90, (77_777,), generator=g),
        "big_ids": torch.randint(0, 1 << 40, (33_333,), generator=g),
        "ln": torch.ones(64),
        "tiny": torch.tensor([1.5, -2.0, 0.0]),
    }
    p = tmp_path / "m.safetensors"
    save_file(t, p)
    return p, t


def _reference(s, t: torch.Tensor) -> None:
    x = t.reshape(-1).to(torch.float64)
    fin = x[torch.isfinite(x)]
    assert s.nan == int(torch.isnan(x).sum()) and s.inf == int(torch.isinf(x).sum())
    assert s.mean == pytest.approx(float(fin.mean()), rel=1e-12, abs=1e-15)
    assert s.std == pytest.approx(float(fin.std(correction=0)), rel=1e-9, abs=1e-15)
    assert (s.min, s.max) == (float(fin.min()), float(fin.max()))
    assert s.zeros == float((x == 0).sum()) / x.numel()
    assert s.l2 == pytest.approx(float(fin.norm()), rel=1e-12)
    assert sum(s.counts) == fin.numel()
    if not s.integer and not s.constant:  # the histogram is torch.histc's, bin for bin
        f = t.reshape(-1).float()
        f = f[torch.isfinite(f)]
        assert list(s.counts) == [int(c) for c in torch.histc(f, bins=len(s.counts), min=s.min, max=s.max)]


def test_one_two_threads_and_two_processes_give_identical_figures(tmp_path: Path) -> None:
    p, tensors = _checkpoint(tmp_path)
    index = open_checkpoint(p)
    runs = {}
    with ProcessExecutor(2) as processes:
        for name, workers in (("serial", 1), ("threads", 2), ("processes", processes)):
            runs[name] = [s.to_json() for s in stats_many(index, bins=256, chunk_elems=CHUNK, workers=workers)]
    assert runs["serial"] == runs["threads"] == runs["processes"]  # bit for bit, whatever the workers
    for s in stats_many(index, bins=256, chunk_elems=CHUNK, workers=2):
        _reference(s, tensors[s.name])
    # a pooled group over tensors of several dtypes, with a range the caller fixed
    names = ["w", "b", "h"]
    one = aggregate_stats(index, names, bins=64, chunk_elems=CHUNK, workers=1)
    two = aggregate_stats(index, names, bins=64, chunk_elems=CHUNK, workers=2)
    assert one == two
    _reference(two, torch.cat([tensors[n].reshape(-1).float() for n in names]))
    fixed = aggregate_stats(index, names, bins=8, hist_range=(-1.0, 1.0), chunk_elems=CHUNK, workers=2)
    pooled = torch.cat([tensors[n].reshape(-1).float() for n in names])
    assert list(fixed.counts) == [int(c) for c in torch.histc(pooled[torch.isfinite(pooled)], bins=8, min=-1, max=1)]


def test_progress_reaches_total_and_cancel_stops_a_parallel_pass(tmp_path: Path) -> None:
    p, tensors = _checkpoint(tmp_path)
    total = 2 * sum(t.numel() for t in tensors.values())
    seen: list[tuple[int, int]] = []
    list(stats_many(p, chunk_elems=CHUNK, workers=2, progress=lambda d, t: seen.append((d, t))))
    assert seen[-1] == (total, total) and all(b[0] >= a[0] for a, b in zip(seen, seen[1:]))
    steps: list[int] = []

    def cancel() -> bool:
        return len(steps) >= 3

    with pytest.raises(Cancelled):
        list(stats_many(p, chunk_elems=CHUNK, workers=2, progress=lambda d, t: steps.append(d), cancel=cancel))
    assert steps and steps[-1] < total // 4  # stopped after a few items, far from the end


def test_worker_counts_are_checked() -> None:
    assert default_workers() >= 1
    assert executor_for(1).workers == 1 and executor_for(2).workers == 2
    for bad in (0, -1, "2", 2.0, True, 10_000):
        with pytest.raises(ExplorerError, match="workers must be a whole number"):
            check_workers(bad)


def test_diff_is_the_same_for_one_and_two_workers_and_equals_float64(tmp_path: Path) -> None:
    from explorer.core.diff import diff_checkpoints

    p, a = _checkpoint(tmp_path)
    g = torch.Generator().manual_seed(2)
    b = {k: (v + 1e-2 * torch.randn(v.shape, generator=g)).to(v.dtype) if v.is_floating_point() and k != "ln" else v
         for k, v in a.items()}
    save_file(b, tmp_path / "b.safetensors")
    one = diff_checkpoints(p, tmp_path / "b.safetensors", chunk_elems=CHUNK, workers=1)
    two = diff_checkpoints(p, tmp_path / "b.safetensors", chunk_elems=CHUNK, workers=2)
    assert one == two
    by = {e.name: e for e in two}
    assert by["ln"].status == "same" and by["ids"].status == "same"
    for k in ("b", "h"):
        x, y = a[k].reshape(-1).double(), b[k].reshape(-1).double()
        e = by[k]
        assert e.status == "changed"
        assert e.rel_change == pytest.approx(float((y - x).norm() / x.norm()), rel=1e-12)
        assert e.cosine == pytest.approx(float(x @ y / (x.norm() * y.norm())), rel=1e-12)
        assert e.max_abs_diff == float((y - x).abs().max())
    assert by["w"].nonfinite == 0 and by["w"].status == "changed"  # NaN/Inf at the same places on both sides


def test_half_precision_tensors_are_counted_exactly_in_one_pass(tmp_path: Path) -> None:
    """bf16 / fp16 / fp8: value counts of the bit patterns give every figure; the histogram still equals torch.histc
    of the values (also over a fixed range) and the moments the float64 reference."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(200_003, generator=g)
    x[:11] = 0
    x[20] = float("nan")
    t = {"bf": x.to(torch.bfloat16), "hf": (x * 100).half(), "f8": x.to(torch.float8_e4m3fn),
         "const": torch.full((999,), 0.25, dtype=torch.bfloat16)}
    save_file(t, tmp_path / "h.safetensors")
    index = open_checkpoint(tmp_path / "h.safetensors")
    seen: list[int] = []
    one = list(stats_many(index, chunk_elems=CHUNK, workers=1, progress=lambda d, tot: seen.append(tot - d)))
    assert seen[-1] == 0
    assert one == list(stats_many(index, chunk_elems=CHUNK, workers=2))
    for s in one:
        _reference(s, t[s.name])
    const = next(s for s in one if s.name == "const")
    assert const.constant and const.counts == (999,) and const.mean == 0.25
    f = t["bf"].float()
    f = f[torch.isfinite(f)]
    fixed = aggregate_stats(index, ["bf"], bins=16, hist_range=(-1.0, 2.0), chunk_elems=CHUNK, workers=2)
    assert list(fixed.counts) == [int(c) for c in torch.histc(f, bins=16, min=-1.0, max=2.0)]


def _threads_seen(readers, item):
    import torch

    return tuple(torch.get_num_threads() for _ in item.parts)


def test_workers_n_means_n_cores_and_torchs_threads_come_back() -> None:
    """One worker runs torch on one intra-op thread, as each of N threads does (``--workers N`` = N cores); the
    caller's setting is restored after every item; a pass serial only because its sources are the caller's keeps it."""
    import torch

    from explorer.core.parallel import Part, Span, WorkItem, intra_op_threads, ordered_map

    before = torch.get_num_threads()
    if before < 2:
        torch.set_num_threads(2)
    try:
        n = torch.get_num_threads()
        items = [WorkItem(_threads_seen, (Part((Span(0, "x", 0, 1),)),)) for _ in range(3)]
        assert list(executor_for(1).map((None,), items)) == [(1,)] * 3
        assert torch.get_num_threads() == n
        assert list(executor_for(2).map((None,), items)) == [(1,)] * 3  # each thread: one
        assert list(executor_for(2, local_only=True).map((None,), items)) == [(n,)] * 3
        assert list(ordered_map(lambda j: torch.get_num_threads(), range(3), workers=1)) == [1] * 3
        assert list(ordered_map(lambda j: torch.get_num_threads(), range(3), workers=1, threads=None)) == [n] * 3
        assert list(ordered_map(lambda j: torch.get_num_threads(), range(3), workers=2)) == [1] * 3
        with intra_op_threads(1):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == n
    finally:
        torch.set_num_threads(before)


def test_a_run_of_half_precision_tensors_streams_in_file_order(tmp_path: Path) -> None:
    """Consecutive 16-bit tensors (one cut into many items, one empty) between float32 ones: stats_many yields every
    tensor in file order, each with the figures tensor_stats gives it alone, for 1 and 2 workers."""
    from explorer.core.checkpoint import TensorReader
    from explorer.core.stats import tensor_stats

    g = torch.Generator().manual_seed(7)
    t = {
        "a32": torch.randn(5_000, generator=g),
        "b16": (torch.randn(95_001, generator=g) * 2).to(torch.bfloat16),
        "empty": torch.zeros(0, dtype=torch.bfloat16),
        "h16": torch.randn(31, generator=g).half(),
        "c16": (torch.randn(40_000, generator=g) + 3).to(torch.bfloat16),
        "z32": torch.randn(77, generator=g),
    }
    save_file(t, tmp_path / "m.safetensors")
    index = open_checkpoint(tmp_path / "m.safetensors")
    one = list(stats_many(index, chunk_elems=CHUNK, workers=1))
    assert [s.name for s in one] == list(index.tensors)
    assert one == list(stats_many(index, chunk_elems=CHUNK, workers=2))
    with TensorReader(index) as r:
        for s in one:
            assert s == tensor_stats(r, s.name, chunk_elems=CHUNK)
            if s.numel:
                _reference(s, t[s.name])
    empty = next(s for s in one if s.name == "empty")
    assert empty.numel == 0 and empty.nan == 0 and empty.counts == ()


def test_progress_over_several_batches_never_passes_the_total(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A checkpoint measured in several batches: the count rises to the total and never beyond (a batch once reported
    the whole total when it ended, and the next batches counted on past it)."""
    import explorer.core.stats as stats

    p, tensors = _checkpoint(tmp_path)
    monkeypatch.setattr(stats, "BATCH_ELEMS", 50_000)  # every float/int tensor its own batch
    total = 2 * sum(t.numel() for t in tensors.values())
    seen: list[int] = []
    out = list(stats_many(p, chunk_elems=CHUNK, workers=2, progress=lambda d, t: seen.append(d)))
    assert len(out) == len(tensors)
    assert seen[-1] == total and max(seen) == total and seen == sorted(seen)


def test_ordered_map_runs_on_past_a_long_first_job_within_its_budget() -> None:
    """The budget bounds the jobs queued or running, not the finished ones waiting for their turn: while a long first
    job runs, the others run on (each within the budget), and the results still come in job order."""
    import threading
    import time

    from explorer.core.parallel import ordered_map

    later_ran = threading.Event()
    running = [0]
    peak = [0]
    lock = threading.Lock()

    def job(i: int) -> tuple[int, bool]:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        try:
            if i == 0:
                return i, later_ran.wait(10)  # finishes only once job 5 has run (or after 10 s: the old behaviour)
            if i == 5:
                later_ran.set()
            time.sleep(0.01)
            return i, True
        finally:
            with lock:
                running[0] -= 1

    out = list(ordered_map(job, range(12), workers=2, cost=lambda i: 5, budget=10, window=8))
    assert out == [(i, True) for i in range(12)]
    assert peak[0] <= 2
