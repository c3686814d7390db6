"""Benchmark: the window's start-up, whole process, from launch (`python -m explorer open DIR --screenshot`, offscreen):
seconds to the empty window painted, to the tensors painted from the headers (a cache miss, before torch) and to the
coloured report (a re-open answered from the report cache), with the process's CPU seconds at each milestone and
which heavy modules (numpy, pyqtgraph, torch, transformers) were imported by then — read from the window's
CKPT_EXPLORER_TIMING milestones (explorer/gui/timing.py). On the Llama-2-70B-shaped sparse checkpoint
(make_sparse_checkpoints.py llama70b) unless --checkpoint is given.

A/B in one run: --tree DIR (repeatable) runs each source tree in turn (PYTHONPATH=DIR), interleaved, e.g. the
current tree against a `git worktree add /tmp/base <commit>`. Compiled bytecode is kept (as a normal install has
it) unless --no-bytecode (this machine sets PYTHONDONTWRITEBYTECODE: our own modules are then compiled each run).

    python benchmarks/bench_window_start.py [--repeat 5] [--tree DIR ...] [--checkpoint DIR] [--no-bytecode]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run(tree: Path, folder: Path, cache: Path, pyc: Path | None, *, fresh: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix="ckpt-bench-start-") as tmp:
        log = Path(tmp) / "t.jsonl"
        env = dict(os.environ, QT_QPA_PLATFORM="offscreen", HF_HUB_OFFLINE="1", PYTHONPATH=str(tree),
                   CKPT_EXPLORER_CACHE=str(cache), CKPT_EXPLORER_TIMING=str(log))
        env.pop("CKPT_EXPLORER_REPORT_CACHE", None)
        if pyc is not None:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = str(pyc)
        if fresh:
            shutil.rmtree(cache / "reports", ignore_errors=True)
        t0 = time.time()
        subprocess.run([sys.executable, "-m", "explorer", "open", str(folder), "--screenshot", str(Path(tmp) / "s.png")],
                       env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600, check=True)
        return {e["event"]: {**e, "t": e["t"] - t0} for e in map(json.loads, log.read_text().splitlines())}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--tree", action="append", type=Path, help="a source tree to run (default: this one)")
    p.add_argument("--checkpoint", type=Path, help="default: the 70B-shaped sparse checkpoint, generated")
    p.add_argument("--no-bytecode", action="store_true", help="as this machine runs by default: no .pyc kept")
    a = p.parse_args()
    trees = a.tree or [HERE.parent]
    work = Path(tempfile.mkdtemp(prefix="ckpt-bench-start-"))
    try:
        folder = a.checkpoint
        if folder is None:
            folder = work / "llama70b"
            subprocess.run([sys.executable, str(HERE / "make_sparse_checkpoints.py"), "llama70b", str(folder)],
                           check=True, stdout=subprocess.DEVNULL)
        loads = [os.getloadavg()[0]]
        res: dict[tuple[str, str], list[dict]] = {}
        for i in range(a.repeat + 1):  # the first round warms the page cache and writes the bytecode: not counted
            for t in trees:
                pyc = None if a.no_bytecode else work / f"pyc-{trees.index(t)}"
                cache = work / f"cache-{trees.index(t)}"
                miss = run(t, folder, cache, pyc, fresh=True)
                hit = run(t, folder, cache, pyc, fresh=False)
                if i:
                    res.setdefault((str(t), "first open (cache miss)"), []).append(miss)
                    res.setdefault((str(t), "re-open (from the cache)"), []).append(hit)
        loads.append(os.getloadavg()[0])
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def med(runs: list[dict], ev: str, key: str = "t") -> str:
        xs = [r[ev][key] for r in runs if ev in r]
        return f"{statistics.median(xs):.2f} s" if xs else "—"

    lines = [f"Window start-up, `{folder.name}`, {a.repeat} runs each (medians), bytecode "
             f"{'not kept' if a.no_bytecode else 'kept'}; load average (1 min) {loads[0]:.2f} at the start, "
             f"{loads[1]:.2f} at the end, {os.cpu_count()} CPUs.", "",
             "| tree | open | window painted | tensors from the headers | coloured | CPU s at the paint | imported by then |",
             "|---|---|---|---|---|---|---|"]
    for (t, kind), runs in res.items():
        ev = "preview" if "miss" in kind else "colours"
        imported = ", ".join(runs[-1][ev]["imported"]) if ev in runs[-1] else "?"
        lines.append(f"| {t} | {kind} | {med(runs, 'shown')} | {med(runs, 'preview')} | {med(runs, 'colours')} | "
                     f"{med(runs, ev, 'cpu')} | {imported or 'none'} |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
