"""Benchmark: a repeat `ckpt-explorer report` answered from the report cache, vs a first report and vs
`from_pretrained(..., output_loading_info=True)`, on the Llama-2-70B-shaped sparse checkpoint (27 shards,
723 tensors, 128 GiB apparent) and the 47k-tensor DeepSeek-V3-shaped MoE (see make_sparse_checkpoints.py). Every
figure is a whole process, as a user runs it, side by side in one run: wall time and peak RSS (bench_report.measure).
Also checks that the repeat imports neither torch nor transformers (nor numpy).

The window (`ckpt-explorer open DIR`, offscreen): seconds from launch to the empty window painted, to the
checkpoint's tensors painted from the headers (a cache miss: before torch is imported) and to the coloured report,
on a first open (empty cache) and a re-open (from the cache); read from the window's CKPT_EXPLORER_TIMING
milestones (explorer/gui/timing.py), with screenshots of each milestone kept with --shots DIR.
Writes benchmarks/results/report_cache.md.

    python benchmarks/bench_report_cache.py [--repeat 3] [--keep DIR] [--cap-gb 12] [--timeout 600] [--shots DIR]
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import json
import time
from importlib.metadata import version
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_report import FROM_PRETRAINED, _mem_available, gib, measure  # noqa: E402

IMPORTS = ("import sys\nfrom explorer.cli import main\nrc = main(['report', sys.argv[1], '--json'])\n"
           "print('torch' in sys.modules, 'transformers' in sys.modules, 'numpy' in sys.modules, file=sys.stderr)\n")


def window(folder: Path, *, shots: Path | None = None, extra: tuple[str, ...] = (), timeout: float = 600) -> dict:
    """One window run, offscreen, until its screenshot is saved: seconds from launch to each milestone."""
    exe = Path(sys.executable).with_name("ckpt-explorer")
    base = [str(exe)] if exe.exists() else [sys.executable, "-m", "explorer"]
    with tempfile.TemporaryDirectory(prefix="ckpt-bench-window-") as tmp:
        log = Path(tmp) / "timing.jsonl"
        env = dict(os.environ, QT_QPA_PLATFORM="offscreen", HF_HUB_OFFLINE="1", CKPT_EXPLORER_TIMING=str(log))
        if shots is not None:
            shots.mkdir(parents=True, exist_ok=True)
            env["CKPT_EXPLORER_SHOTS"] = str(shots)
        t0 = time.time()
        subprocess.run([*base, "open", str(folder), *extra, "--screenshot", str(Path(tmp) / "shot.png")],
                       env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout, check=True)
        events = [json.loads(line) for line in log.read_text().splitlines()]
    return {e["event"]: e["t"] - t0 for e in events}


def load() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def ours(folder: Path, *extra: str) -> list[str]:
    exe = Path(sys.executable).with_name("ckpt-explorer")
    base = [str(exe)] if exe.exists() else [sys.executable, "-c", "import sys; from explorer.cli import main; sys.exit(main())"]
    return [*base, "report", str(folder), "--json", *extra]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--keep", metavar="DIR", help="generate into DIR and keep it (reused if present)")
    p.add_argument("--cap-gb", type=float, default=12.0)
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--shots", metavar="DIR", help="keep a PNG of the window at each milestone under DIR")
    p.add_argument("--out", type=Path, default=HERE / "results" / "report_cache.md")
    a = p.parse_args()
    root = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="ckpt-bench-cache-"))
    folder = root / "llama70b"
    cache = Path(tempfile.mkdtemp(prefix="ckpt-report-cache-"))
    os.environ["CKPT_EXPLORER_CACHE"] = str(cache)  # measure() passes os.environ on: an empty cache to start
    os.environ.pop("CKPT_EXPLORER_REPORT_CACHE", None)
    moe = root / "moe"
    shots = Path(a.shots) if a.shots else None
    loads = [load()]
    try:
        for f, kind in ((folder, "llama70b"), (moe, "moe")):
            if not (f / "model.safetensors.index.json").exists():
                # in a child: this process stays small (a child's peak RSS counts the image it was forked from)
                subprocess.run([sys.executable, str(HERE / "make_sparse_checkpoints.py"), kind, str(f)], check=True,
                               stdout=subprocess.DEVNULL)
        first = [measure(ours(folder, "--no-cache")) for _ in range(a.repeat)]
        miss = measure(ours(folder))  # computes and stores
        hits = [measure(ours(folder)) for _ in range(a.repeat)]
        # with compiled bytecode kept (as a normal install has it; this machine sets PYTHONDONTWRITEBYTECODE)
        saved = {k: os.environ.get(k) for k in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")}
        os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
        os.environ["PYTHONPYCACHEPREFIX"] = str(cache / "pycache")
        measure(ours(folder))  # writes the bytecode
        hits_pyc = [measure(ours(folder)) for _ in range(a.repeat)]
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        env = dict(os.environ, HF_HUB_OFFLINE="1")
        probe = subprocess.run([sys.executable, "-c", IMPORTS, str(folder)], capture_output=True, text=True, env=env)
        imported = probe.stderr.strip().splitlines()[-1] if probe.stderr.strip() else "?"
        loads.append(load())
        moe_first = measure(ours(moe, "--no-cache"))
        moe_miss = measure(ours(moe))
        moe_hits = [measure(ours(moe)) for _ in range(a.repeat)]
        moe_size = sum(p.stat().st_size for p in (cache / "reports").rglob("*.z"))
        loads.append(load())
        if _mem_available() < a.cap_gb * 1024**3 + 3 * 1024**3:
            theirs = {"wall": float("nan"), "peak_rss": 0, "outcome": "skipped: not enough free RAM for the cap"}
        else:
            theirs = measure([sys.executable, "-c", FROM_PRETRAINED, str(folder)], cap_bytes=a.cap_gb * 1024**3, timeout=a.timeout)
        loads.append(load())
        wins = {}
        for name, f in (("70B", folder), ("MoE", moe)):
            shutil.rmtree(cache / "reports", ignore_errors=True)
            wins[(name, "first open (empty cache)")] = window(f, shots=shots / f"{name}-first" if shots else None, timeout=a.timeout)
            wins[(name, "re-open (from the cache)")] = window(f, shots=shots / f"{name}-again" if shots else None, timeout=a.timeout)
            wins[(name, "re-open, --no-cache")] = window(f, extra=("--no-cache",), timeout=a.timeout)
        loads.append(load())
    finally:
        shutil.rmtree(cache, ignore_errors=True)
        if not a.keep:
            shutil.rmtree(root, ignore_errors=True)
    med = lambda rs: statistics.median(r["wall"] for r in rs)  # noqa: E731
    rows = [
        ("70B `report --json --no-cache` (a first report)", med(first), max(r["peak_rss"] for r in first), [r["wall"] for r in first]),
        ("70B `report --json`, empty cache (computes, stores)", miss["wall"], miss["peak_rss"], [miss["wall"]]),
        ("70B `report --json`, repeat (answered from the cache)", med(hits), max(r["peak_rss"] for r in hits), [r["wall"] for r in hits]),
        ("70B `report --json`, repeat, bytecode kept (a normal install)", med(hits_pyc), max(r["peak_rss"] for r in hits_pyc), [r["wall"] for r in hits_pyc]),
        ("70B `from_pretrained(output_loading_info=True)`", theirs["wall"], theirs["peak_rss"], [theirs["wall"]]),
        ("MoE `report --json --no-cache`", moe_first["wall"], moe_first["peak_rss"], [moe_first["wall"]]),
        ("MoE `report --json`, empty cache (computes, stores)", moe_miss["wall"], moe_miss["peak_rss"], [moe_miss["wall"]]),
        ("MoE `report --json`, repeat (answered from the cache)", med(moe_hits), max(r["peak_rss"] for r in moe_hits), [r["wall"] for r in moe_hits]),
    ]
    fmt = lambda d, k: f"{d[k]:.2f} s" if k in d else "—"  # noqa: E731
    import PySide6

    vers = ", ".join(f"{n} {version(n)}" for n in ("torch", "transformers", "safetensors")) + f", PySide6 {PySide6.__version__}"
    lines = [
        "# Report cache: repeat report and re-open of the Llama-2-70B-shaped checkpoint (27 shards, 723 tensors, "
        "128 GiB apparent) and the DeepSeek-V3-shaped MoE (257 shards, 47k tensors)",
        "",
        f"Whole process each, one run, side by side. {platform.machine()}, {os.cpu_count()} CPUs (shared), Python "
        f"{platform.python_version()}, {vers}. Repeat run imports (torch, transformers, numpy): {imported}. "
        f"from_pretrained: {theirs['outcome']}. Load average (1/5/15 min) at the start and after each part: "
        f"{'; '.join(loads)}.",
        "",
        "| command | wall (median) | peak RSS | runs |",
        "|---|---|---|---|",
        *[f"| {n} | {w:.2f} s | {gib(r)} | {', '.join(f'{x:.2f}' for x in runs)} |" for n, w, r, runs in rows],
        "",
        f"70B repeat vs first report: {med(first) / med(hits):.1f}x faster ({med(first) / med(hits_pyc):.1f}x with bytecode "
        f"kept); vs from_pretrained: {theirs['wall'] / med(hits):.1f}x ({theirs['wall'] / med(hits_pyc):.1f}x). "
        f"MoE: {moe_first['wall'] / med(moe_hits):.1f}x; its cache entry is {moe_size / 2**20:.1f} MiB on disk.",
        "",
        "## The window (`ckpt-explorer open DIR`, offscreen, seconds from launch)",
        "",
        "| checkpoint | open | window painted | tensors painted from the headers (before torch) | coloured report |",
        "|---|---|---|---|---|",
        *[f"| {c} | {o} | {fmt(d, 'shown')} | {fmt(d, 'preview')} | {fmt(d, 'colours')} |" for (c, o), d in wins.items()],
        "",
        "A re-open from the cache shows the coloured report directly (no header-only step); `—`: no such step.",
        "",
        "Command: `python benchmarks/bench_report_cache.py`",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    a.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
