"""Benchmark: a 70B checkpoint on a Hub over HTTP (loopback stand-in), header-only, vs what a user would do instead.

The Llama-2-70B-shaped checkpoint (27 safetensors shards, data = sparse-file holes: make_sparse_checkpoints.py) is
served by tests/remote_helpers.HubStandIn (model info, resolve with a 302 to a "CDN", Range requests), which counts
every body byte it sends. Side by side, in one process (imports paid once, before timing):

* ``report`` of the local folder (the floor), of ``org/llama-70b`` cold (empty header cache) and warm (cached);
* huggingface_hub's ``get_safetensors_metadata`` alone (headers only, no matching);
* downloading the files (what one would do without header-only reads): bytes = the repo's size; time
  extrapolated from streaming 1 GiB of one shard over the same loopback server (writing 128 GiB is not possible);
* one tensor's statistics over HTTP (its byte range only) vs downloading its shard (extrapolated the same way).

    python benchmarks/bench_remote.py [--repeat 3] [--keep DIR]

Prints a table and writes benchmarks/results/remote.md.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from make_sparse_checkpoints import make_llama70b  # noqa: E402

REPO = "org/llama-70b"
TENSOR = "model.layers.0.self_attn.k_proj.weight"


def _mb(n: float) -> str:
    return f"{n / 1e6:.2f} MB"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--keep", type=Path, default=None, help="build the checkpoint here and keep it")
    a = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-remote-"))
    folder = a.keep or tmp / "llama70b"
    if not (folder / "model.safetensors.index.json").is_file():
        make_llama70b(folder)
    os.environ["HF_HUB_CACHE"] = str(tmp / "hf-cache")
    os.environ["HF_HUB_OFFLINE"] = "0"
    from tests.remote_helpers import HubStandIn

    hub = HubStandIn().__enter__()  # before huggingface_hub is imported: it reads HF_ENDPOINT once
    os.environ["HF_ENDPOINT"] = hub.endpoint

    import huggingface_hub
    import transformers
    from huggingface_hub import HfApi, constants
    from huggingface_hub.utils import get_session

    import explorer
    from explorer.core.checkpoint import TensorReader
    from explorer.core.matching import report
    from explorer.core.stats import aggregate_stats
    from explorer.core.target import TargetSpec

    assert constants.ENDPOINT == hub.endpoint and not constants.HF_HUB_OFFLINE
    rows: list[tuple[str, str, str]] = []
    with hub:
        hub.add_repo(REPO, folder)
        repo_bytes = sum(f.stat().st_size for f in folder.iterdir())

        def timed(fn, *, fresh_cache: bool) -> tuple[float, int, list[float], object]:
            runs, served, out = [], 0, None
            for i in range(a.repeat):
                if fresh_cache:
                    os.environ["CKPT_EXPLORER_CACHE"] = str(tmp / f"ck-{fn.__name__}-{i}-{time.time_ns()}")
                hub.reset_counts()
                t = time.perf_counter()
                out = fn()
                runs.append(time.perf_counter() - t)
                served = hub.bytes_served
            return statistics.median(runs), served, runs, out

        def local():
            return report(TargetSpec(str(folder)).resolve())

        def remote():
            return report(TargetSpec(REPO).resolve())

        def hf_metadata():
            return HfApi(endpoint=hub.endpoint).get_safetensors_metadata(REPO)

        local()  # warm imports and the page cache for the local floor
        t_local, _, r_local, rep_l = timed(local, fresh_cache=False)
        t_cold, b_cold, r_cold, rep_r = timed(remote, fresh_cache=True)
        gets = [r for m, pth, r in hub.requests if m == "GET" and "/cdn/" in pth]
        os.environ["CKPT_EXPLORER_CACHE"] = str(tmp / "ck-warm")
        remote()
        t_warm, b_warm, r_warm, _ = timed(remote, fresh_cache=False)
        t_meta, b_meta, r_meta, _ = timed(hf_metadata, fresh_cache=False)
        same = rep_l.counts() == rep_r.counts() and list(rep_l.model_keys) == list(rep_r.model_keys)

        # streaming throughput of the loopback server, to extrapolate downloads
        shard = sorted(folder.glob("model-*.safetensors"))[0]
        url = f"{hub.endpoint}/{REPO}/resolve/main/{shard.name}"
        probe = 1 << 30
        hub.reset_counts()
        t = time.perf_counter()
        with get_session().stream("GET", url, headers={"Range": f"bytes=0-{probe - 1}"}, follow_redirects=True) as r:
            for _ in r.iter_raw(1 << 20):
                pass
        rate = hub.bytes_served / (time.perf_counter() - t)

        # one tensor's statistics over HTTP vs downloading its shard
        idx = rep_r.index
        info = idx.tensors[TENSOR]
        shard_size = next(f.stat().st_size for f in folder.iterdir() if f.name == idx.layout.offsets[TENSOR][0].rsplit("/", 1)[1])
        hub.reset_counts()
        t = time.perf_counter()
        with TensorReader(idx) as reader:
            st = aggregate_stats(reader, [TENSOR], bins=128)
        t_stats, b_stats = time.perf_counter() - t, hub.bytes_served
        assert st.numel == info.numel
        with TensorReader(rep_l.index) as reader:
            t = time.perf_counter()
            aggregate_stats(reader, [TENSOR], bins=128)
            t_stats_local = time.perf_counter() - t

    def runs(xs: list[float]) -> str:
        return ", ".join(f"{x:.2f}" for x in xs)

    rows = [
        ("`report` of the local folder (floor)", f"{t_local:.2f} s ({runs(r_local)})", "0 (local disk)"),
        (f"`report {REPO}` over HTTP, empty header cache", f"{t_cold:.2f} s ({runs(r_cold)})", _mb(b_cold)),
        (f"`report {REPO}` again (headers cached; 1 request: which commit is main)", f"{t_warm:.2f} s ({runs(r_warm)})", _mb(b_warm)),
        ("huggingface_hub `get_safetensors_metadata` alone (no matching)", f"{t_meta:.2f} s ({runs(r_meta)})", _mb(b_meta)),
        ("downloading the repo (extrapolated from the loopback rate)", f"~{repo_bytes / rate:.0f} s", _mb(repo_bytes)),
        (f"stats of `{TENSOR}` ({_mb(info.nbytes)}) over HTTP", f"{t_stats:.2f} s", _mb(b_stats)),
        ("same stats on the local file", f"{t_stats_local:.2f} s", "0 (local disk)"),
        ("downloading its shard first (extrapolated)", f"~{shard_size / rate:.0f} s", _mb(shard_size)),
    ]
    versions = (f"Python {platform.python_version()}, huggingface_hub {huggingface_hub.__version__}, transformers "
                f"{transformers.__version__}, checkpoint-explorer {explorer.__version__}")
    text = [
        "# Remote checkpoints: header-only over HTTP vs downloading",
        "",
        f"Llama-2-70B shapes, 27 shards, 723 tensors, {repo_bytes / 2**30:.2f} GiB, served over loopback by "
        f"`tests/remote_helpers.HubStandIn` (model info, resolve -> 302 -> CDN, Range). Machine: {platform.machine()}, "
        f"{os.cpu_count()} cores shared with other jobs. {versions}. In-process, imports paid before timing; median of "
        f"{a.repeat} runs. Loopback streaming rate {rate / 1e6:.0f} MB/s (downloads are extrapolated from it; "
        "on a real 100 MB/s link a download takes longer still). Generated by `python benchmarks/bench_remote.py`.",
        "",
        "| what | time | bytes served |",
        "|---|---|---|",
        *[f"| {w} | {t} | {b} |" for w, t, b in rows],
        "",
        f"Reports identical (counts and keys): {same}. Range requests per shard (cold): "
        f"{len(gets) // 27 if gets else 0} ({gets[:1]} ...). Overhead over the local report: {t_cold - t_local:+.2f} s cold, "
        f"{t_warm - t_local:+.2f} s warm. Goals: <= 3 MB transferred, <= 1.5 s beyond the local report.",
    ]
    out = "\n".join(text) + "\n"
    print(out)
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "remote.md").write_text(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
