"""stats / diff on a Dask cluster (`--scheduler`, DASK_SCHEDULER_ADDRESS): a LocalCluster of 2 worker processes on
loopback gives the same JSON as the local run; cancel stops the items on the cluster; a scheduler that does not
answer is one line naming it, exit 2. Skipped when dask.distributed is not installed (the `cluster` extra; the `test`
extra has it)."""
from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from explorer.cli import main

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def cluster():
    """2 worker processes, 1 thread each, on 127.0.0.1 (no dashboard)."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None,
                      silence_logs=50) as lc, Client(lc, set_as_default=False) as client:
        yield lc.scheduler_address, client


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[str, str]:
    d = tmp_path_factory.mktemp("pair")
    g = torch.Generator().manual_seed(5)
    a = {"w": torch.randn(900, 1000, generator=g), "b": torch.randn(5000, generator=g).to(torch.bfloat16),
         "e": torch.randn(64, 64, generator=g).to(torch.float16), "ids": torch.arange(3000)}
    b = dict(a, w=a["w"] + 1e-3 * torch.randn(900, 1000, generator=g))
    save_file(a, d / "a.safetensors")
    save_file(b, d / "b.safetensors")
    return str(d / "a.safetensors"), str(d / "b.safetensors")


def _json(capsys, *argv: str) -> tuple[int, dict]:
    capsys.readouterr()
    code = main(list(argv))
    return code, json.loads(capsys.readouterr().out)


def test_stats_and_diff_on_the_cluster_equal_the_local_run(capsys, cluster, pair) -> None:
    address, _ = cluster
    a, b = pair
    for cmd in (["stats", a], ["diff", a, b]):
        local = _json(capsys, *cmd, "--json", "--workers", "1")
        remote = _json(capsys, *cmd, "--json", "--scheduler", address)
        assert remote == local, cmd
    w = {t["name"]: t for t in remote[1]["tensors"]}
    assert w["w"]["status"] == "changed" and w["b"]["status"] == "same"


def test_the_scheduler_can_come_from_the_environment(capsys, cluster, pair, monkeypatch) -> None:
    from distributed import get_task_stream

    address, client = cluster
    a, _ = pair
    local = _json(capsys, "stats", a, "--json", "--workers", "1")
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", address)
    with get_task_stream(client=client) as ts:
        assert _json(capsys, "stats", a, "--json") == local
    assert any(t["key"].startswith("run_item") for t in ts.data), ts.data[:3]  # it ran on the cluster's workers


def test_cancel_stops_the_items_on_the_cluster(cluster, pair) -> None:
    from explorer.core.cluster import DaskExecutor
    from explorer.core.errors import Cancelled
    from explorer.core.stats import stats_many

    address, client = cluster
    a, _ = pair
    stop = threading.Event()

    def progress(done: int, total: int, *_: object) -> None:
        if done:
            stop.set()  # after the first item

    with DaskExecutor(address) as ex, pytest.raises(Cancelled):
        list(stats_many(a, chunk_elems=1 << 12, progress=progress, cancel=stop, workers=ex))
    # nothing of that pass is left queued or running on the cluster
    left = client.run_on_scheduler(lambda dask_scheduler: [str(k) for k, t in dask_scheduler.tasks.items()
                                                             if t.state in ("queued", "processing", "no-worker")])
    assert not [k for k in left if "run_item" in k], left


def test_an_unreachable_scheduler_is_one_line_exit_2(capsys, pair, monkeypatch) -> None:
    import explorer.core.cluster as cluster_mod

    monkeypatch.setattr(cluster_mod, "CONNECT_TIMEOUT", 1.0)  # Dask retries a refused connection until the timeout
    a, b = pair
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    address = f"tcp://127.0.0.1:{port}"
    for cmd in (["stats", a], ["diff", a, b]):
        capsys.readouterr()
        code = main([*cmd, "--scheduler", address])
        out, err = capsys.readouterr()
        assert code == 2 and out == ""
        assert len(err.strip().splitlines()) == 1 and address in err and "Traceback" not in err, err
        assert "within 1 s" in err  # Dask retried until the time limit
    # an address Dask cannot use fails at once: the message does not claim a wait
    with pytest.raises(cluster_mod.ClusterError) as e:
        cluster_mod.connect("bogus://127.0.0.1:1", timeout=30)
    assert "within" not in str(e.value) and "bogus://127.0.0.1:1" in str(e.value) and "scheme" in str(e.value)


def test_scheduler_and_workers_together_is_one_line_exit_2(capsys, pair) -> None:
    a, _ = pair
    capsys.readouterr()
    assert main(["stats", a, "--scheduler", "tcp://127.0.0.1:1", "--workers", "2"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--scheduler and --workers" in err


def test_init_check_on_the_cluster_equals_the_local_run(capsys, cluster, tmp_path) -> None:
    """The cluster's workers build the meta model from the config once each and give the same verdicts."""
    from distributed import get_task_stream

    from tests.cli.test_workers_cli import _half_trained_llama

    address, client = cluster
    _half_trained_llama(tmp_path)
    local = _json(capsys, "init-check", str(tmp_path), "--json", "--workers", "1")
    with get_task_stream(client=client) as ts:
        remote = _json(capsys, "init-check", str(tmp_path), "--json", "--scheduler", address)
    assert remote == local
    assert local[0] == 1 and local[1]["init_like"]  # some tensors look untrained, the others do not
    assert len(local[1]["init_like"]) < len(local[1]["tensors"])
    assert sum(t["key"].startswith("run_item") for t in ts.data) >= 3  # every module an item on the workers


def test_workers_keep_their_readers_and_never_read_a_replaced_file(capsys, cluster, tmp_path) -> None:
    """A second pass reuses the readers the workers opened for the first; a file replaced by another of the same
    size and mtime (the same stamps: the same cache key) is not read through the old handle."""
    import os

    from explorer.core.cluster import reader_cache_info

    address, client = cluster
    f = tmp_path / "w.safetensors"
    g = torch.Generator().manual_seed(11)
    save_file({"w": torch.randn(700, 900, generator=g), "v": torch.randn(3000, generator=g)}, f)
    before = client.run(reader_cache_info)
    first = _json(capsys, "stats", str(f), "--json", "--scheduler", address)
    assert first == _json(capsys, "stats", str(f), "--json", "--workers", "1")
    mid = client.run(reader_cache_info)
    again = _json(capsys, "stats", str(f), "--json", "--scheduler", address)
    after = client.run(reader_cache_info)
    assert again == first
    assert sum(after[w]["reused"] - mid[w]["reused"] for w in after) >= 1  # the second pass reused open readers
    assert sum(after[w]["opened"] - mid[w]["opened"] for w in after) < sum(mid[w]["opened"] - before[w]["opened"] for w in mid)
    # the same names, shapes and size, other values; the old mtime put back: the index's stamps are unchanged
    st = os.stat(f)
    new = tmp_path / "new.safetensors"
    save_file({"w": torch.randn(700, 900, generator=g), "v": torch.randn(3000, generator=g)}, new)
    assert new.stat().st_size == st.st_size
    os.replace(new, f)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    replaced = _json(capsys, "stats", str(f), "--json", "--scheduler", address)
    assert replaced == _json(capsys, "stats", str(f), "--json", "--workers", "1") and replaced != first
    final = client.run(reader_cache_info)
    assert sum(final[w]["stale"] - after[w]["stale"] for w in final) >= 1  # the old handles were dropped


def test_a_reused_reader_never_serves_a_replaced_torch_zip_file(capsys, cluster, tmp_path) -> None:
    """The same for a torch zip file (pytorch_model.bin): its tensors are loaded through torch (a mapping of the
    file, no descriptor the reader keeps), so the open-file check alone saw nothing to compare and a reused reader
    served the replaced file's old values."""
    import os

    from explorer.core.cluster import reader_cache_info

    address, client = cluster
    f = tmp_path / "pytorch_model.bin"
    g = torch.Generator().manual_seed(12)
    torch.save({"w": torch.randn(700, 900, generator=g), "v": torch.randn(3000, generator=g)}, f)
    first = _json(capsys, "stats", str(f), "--json", "--scheduler", address)
    assert first == _json(capsys, "stats", str(f), "--json", "--workers", "1")
    mid = client.run(reader_cache_info)
    assert _json(capsys, "stats", str(f), "--json", "--scheduler", address) == first
    assert sum(client.run(reader_cache_info)[w]["reused"] - mid[w]["reused"] for w in mid) >= 1  # cached: the case
    st = os.stat(f)
    (tmp_path / "n").mkdir()
    new = tmp_path / "n" / f.name  # the zip's record names come from the file's name
    torch.save({"w": torch.randn(700, 900, generator=g), "v": torch.randn(3000, generator=g)}, new)
    assert new.stat().st_size == st.st_size
    os.replace(new, f)
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    replaced = _json(capsys, "stats", str(f), "--json", "--scheduler", address)
    assert replaced == _json(capsys, "stats", str(f), "--json", "--workers", "1") and replaced != first
