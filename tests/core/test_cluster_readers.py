"""A cluster worker process keeps its open readers between items (explorer.core.cluster): an idle one is closed
once one of its files is deleted (its descriptor would keep the disk space in use) or after READER_IDLE_SECONDS.
Run in this process, as a worker runs an item (run_item), without a cluster."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from explorer.core import cluster
from explorer.core.checkpoint import open_checkpoint
from explorer.core.parallel import Part, Span, WorkItem
from explorer.core.stats_kernels import range_kernel


def _item(index, name: str) -> WorkItem:
    info = index.tensors[name]
    return WorkItem(range_kernel, (Part((Span(0, name, 0, info.numel, info.file, info.dtype),), (0, False)),))


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture(autouse=True)
def _empty_cache():
    cluster.sweep_idle_readers(now=float("inf"))
    yield
    cluster.sweep_idle_readers(now=float("inf"))


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_an_idle_reader_of_a_deleted_file_is_closed_and_its_space_freed(tmp_path: Path) -> None:
    p = tmp_path / "m.safetensors"
    x = torch.randn(10_000)
    save_file({"w": x}, p)
    index = open_checkpoint(p)
    ((lo, hi, _, _),) = cluster.run_item((index,), _item(index, "w"), 1 << 20)
    assert (lo, hi) == (float(x.min()), float(x.max()))
    assert cluster.reader_cache_info()["idle"] == 1  # kept open for the next item
    fds = _fd_count()
    assert cluster.sweep_idle_readers() == 0  # fresh and its file still there: kept
    p.unlink()
    swept = cluster.reader_cache_info()["swept"]
    assert cluster.sweep_idle_readers() == 1  # the file is gone: its descriptor let go
    assert cluster.reader_cache_info()["idle"] == 0 and cluster.reader_cache_info()["swept"] == swept + 1
    assert _fd_count() == fds - 1


def test_an_idle_reader_is_closed_after_the_idle_time_on_its_own(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(cluster, "READER_IDLE_SECONDS", 0.2)  # the sweep timer runs every 0.2 s then
    p = tmp_path / "m.safetensors"
    save_file({"w": torch.randn(100)}, p)
    index = open_checkpoint(p)
    cluster.run_item((index,), _item(index, "w"), 1 << 20)
    assert cluster.reader_cache_info()["idle"] == 1
    deadline = time.monotonic() + 30
    while cluster.reader_cache_info()["idle"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert cluster.reader_cache_info()["idle"] == 0  # closed by the timer, with no other item to trigger it
