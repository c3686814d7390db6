"""Benchmark: reading every shard header of the 47k-tensor MoE (DeepSeek-V3 shapes, per-expert layout, 257 shards,
46,183 tensors; see make_sparse_checkpoints.py), warm page cache, side by side in one run:

- ours: ``open_checkpoint(folder)`` (the index file, every shard header validated as strictly as safetensors
  validates it, one TensorInfo per tensor);
- safetensors' own reader: ``safe_open`` on each shard, its keys, metadata, and each tensor's shape and dtype
  (``get_slice``), which is what a user's script would call to list a checkpoint;
- a floor: ``json.loads`` of each header (8-byte length, header bytes), no validation, no records.

With ``--baseline TREE`` (a checkout of an earlier commit, e.g. ``git worktree add /tmp/old main``) ours is also
timed from that tree, in child processes alternating with children running this tree, so a before/after figure
comes from one run too. Each figure: the median of ``--repeat`` timed calls after one warm-up call. Writes
benchmarks/results/headers.md.

    python benchmarks/make_sparse_checkpoints.py moe /tmp/moe
    python benchmarks/bench_headers.py /tmp/moe [--baseline TREE] [--repeat 5]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import struct
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    fn()  # warm-up: page cache, imports, first-call costs
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def shards(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.safetensors"))


def ours(folder: Path) -> int:
    from explorer.core.checkpoint import open_checkpoint

    return len(open_checkpoint(folder).tensors)


def with_safe_open(folder: Path) -> int:
    from safetensors import safe_open

    n = 0
    for f in shards(folder):
        with safe_open(str(f), framework="pt") as sf:
            sf.metadata()
            for k in sf.keys():
                s = sf.get_slice(k)
                s.get_shape()
                s.get_dtype()
                n += 1
    return n


def plain_json(folder: Path) -> int:
    n = 0
    for f in shards(folder):
        with open(f, "rb") as fh:
            (size,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(size))
        n += len(header) - ("__metadata__" in header)
    return n


def child(tree: str, folder: Path, repeat: int) -> list[float]:
    """``ours`` timed in a fresh process importing explorer from ``tree``, torch imported first (as in a report or
    the window, where the headers are read with torch loaded)."""
    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); sys.path.insert(0, sys.argv[2])\n"
        "from pathlib import Path; import torch, bench_headers as b, explorer\n"
        "assert explorer.__file__.startswith(sys.argv[1]), explorer.__file__\n"
        "print(json.dumps(b.timed(lambda: b.ours(Path(sys.argv[3])), int(sys.argv[4]))))\n"
    )
    env = {**os.environ, "PYTHONPATH": ""}
    r = subprocess.run([sys.executable, "-c", code, str(Path(tree).resolve()), str(HERE), str(folder), str(repeat)],
                       capture_output=True, text=True, env=env, check=True)
    return json.loads(r.stdout)


def fmt(ts: list[float]) -> str:
    return f"{statistics.median(ts):.3f} s"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", type=Path, help="the MoE folder from make_sparse_checkpoints.py moe")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--rounds", type=int, default=3, help="child processes per tree with --baseline (alternating)")
    p.add_argument("--baseline", metavar="TREE", help="a checkout of an earlier commit to time ours from as well")
    p.add_argument("--out", type=Path, default=HERE / "results" / "headers.md")
    a = p.parse_args()
    sys.path.insert(0, str(ROOT))
    files = shards(a.folder)
    load_before = os.getloadavg()
    counts = {"ours": ours(a.folder), "safe_open": with_safe_open(a.folder), "json": plain_json(a.folder)}
    if len(set(counts.values())) != 1:
        raise SystemExit(f"the readers disagree on the tensor count: {counts}")
    rows: list[tuple[str, list[float]]] = []
    base: list[float] = []
    this: list[float] = []
    if a.baseline:
        for _ in range(a.rounds):  # alternating, so machine load falls on both alike
            base += child(a.baseline, a.folder, a.repeat)
            this += child(str(ROOT), a.folder, a.repeat)
    rows.append(("ours: `open_checkpoint(folder)` (strict validation, index file, records)", timed(lambda: ours(a.folder), a.repeat)))
    rows.append(("safetensors: `safe_open` per shard, keys, metadata, each `get_slice` shape + dtype",
                 timed(lambda: with_safe_open(a.folder), a.repeat)))
    rows.append(("floor: `json.loads` of each header, no validation, no records", timed(lambda: plain_json(a.folder), a.repeat)))
    load_after = os.getloadavg()
    ref = statistics.median(rows[0][1])
    lines = [
        f"# Reading {len(files)} shard headers ({counts['ours']:,} tensors, the DeepSeek-V3-shaped MoE), warm page cache",
        "",
        f"One run, side by side, in-process (torch imported, as in a report), median of {a.repeat} after one warm-up call. {platform.machine()}, "
        f"{os.cpu_count()} CPUs (shared with other jobs), Python {platform.python_version()}, "
        f"safetensors {version('safetensors')}, torch {version('torch')}. "
        f"Load average (1 min) {load_before[0]:.2f} before, {load_after[0]:.2f} after.",
        "",
        "| reader | wall (median) | vs ours | runs |",
        "|---|---|---|---|",
    ]
    for name, ts in rows:
        lines.append(f"| {name} | {fmt(ts)} | {statistics.median(ts) / ref:.2f}x | {', '.join(f'{t:.3f}' for t in ts)} |")
    if a.baseline:
        lines += [
            "",
            f"Before/after, child processes alternating ({a.rounds} each, {a.repeat} timed calls per child):",
            "",
            "| tree | `open_checkpoint` (median) |",
            "|---|---|",
            f"| baseline `{a.baseline}` | {fmt(base)} |",
            f"| this tree | {fmt(this)} ({statistics.median(base) / statistics.median(this):.2f}x faster) |",
        ]
    lines += ["", f"Command: `python benchmarks/bench_headers.py FOLDER{' --baseline TREE' if a.baseline else ''}`", ""]
    a.out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
