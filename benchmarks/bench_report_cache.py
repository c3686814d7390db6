"""Benchmark: a repeat `ckpt-explorer report` answered from the report cache, vs a first report and vs
`from_pretrained(..., output_loading_info=True)`, on the Llama-2-70B-shaped sparse checkpoint (27 shards,
723 tensors, 128 GiB apparent; see make_sparse_checkpoints.py). Every figure is a whole process, as a user runs it,
side by side in one run: wall time and peak RSS (bench_report.measure). Also checks that the repeat imports
neither torch nor transformers. Writes benchmarks/results/report_cache.md.

    python benchmarks/bench_report_cache.py [--repeat 3] [--keep DIR] [--cap-gb 12] [--timeout 600]
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
from importlib.metadata import version
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_report import FROM_PRETRAINED, _mem_available, gib, measure  # noqa: E402

IMPORTS = ("import sys\nfrom explorer.cli import main\nrc = main(['report', sys.argv[1], '--json'])\n"
           "print('torch' in sys.modules, 'transformers' in sys.modules, file=sys.stderr)\n")


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
    p.add_argument("--out", type=Path, default=HERE / "results" / "report_cache.md")
    a = p.parse_args()
    root = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="ckpt-bench-cache-"))
    folder = root / "llama70b"
    cache = Path(tempfile.mkdtemp(prefix="ckpt-report-cache-"))
    make = [sys.executable, str(HERE / "make_sparse_checkpoints.py"), "llama70b", str(folder)]
    os.environ["CKPT_EXPLORER_CACHE"] = str(cache)  # measure() passes os.environ on: an empty cache to start
    os.environ.pop("CKPT_EXPLORER_REPORT_CACHE", None)
    try:
        if not (folder / "model.safetensors.index.json").exists():
            # in a child: this process stays small (a child's peak RSS counts the image it was forked from)
            subprocess.run(make, check=True, stdout=subprocess.DEVNULL)
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
        if _mem_available() < a.cap_gb * 1024**3 + 3 * 1024**3:
            theirs = {"wall": float("nan"), "peak_rss": 0, "outcome": "skipped: not enough free RAM for the cap"}
        else:
            theirs = measure([sys.executable, "-c", FROM_PRETRAINED, str(folder)], cap_bytes=a.cap_gb * 1024**3, timeout=a.timeout)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
        if not a.keep:
            shutil.rmtree(root, ignore_errors=True)
    med = lambda rs: statistics.median(r["wall"] for r in rs)  # noqa: E731
    rows = [
        ("`report --json --no-cache` (a first report)", med(first), max(r["peak_rss"] for r in first), [r["wall"] for r in first]),
        ("`report --json`, empty cache (computes, stores)", miss["wall"], miss["peak_rss"], [miss["wall"]]),
        ("`report --json`, repeat (answered from the cache)", med(hits), max(r["peak_rss"] for r in hits), [r["wall"] for r in hits]),
        ("`report --json`, repeat, bytecode kept (a normal install)", med(hits_pyc), max(r["peak_rss"] for r in hits_pyc), [r["wall"] for r in hits_pyc]),
        ("`from_pretrained(output_loading_info=True)`", theirs["wall"], theirs["peak_rss"], [theirs["wall"]]),
    ]
    vers = ", ".join(f"{n} {version(n)}" for n in ("torch", "transformers", "safetensors"))
    lines = [
        "# Report cache: repeat report of the Llama-2-70B-shaped checkpoint (27 shards, 723 tensors, 128 GiB apparent)",
        "",
        f"Whole process each, one run, side by side. {platform.machine()}, {os.cpu_count()} CPUs (shared), Python "
        f"{platform.python_version()}, {vers}. Repeat run imports (torch, transformers): {imported}. "
        f"from_pretrained: {theirs['outcome']}.",
        "",
        "| command | wall (median) | peak RSS | runs |",
        "|---|---|---|---|",
        *[f"| {n} | {w:.2f} s | {gib(r)} | {', '.join(f'{x:.2f}' for x in runs)} |" for n, w, r, runs in rows],
        "",
        f"Repeat vs first report: {med(first) / med(hits):.1f}x faster ({med(first) / med(hits_pyc):.1f}x with bytecode "
        f"kept); vs from_pretrained: {theirs['wall'] / med(hits):.1f}x ({theirs['wall'] / med(hits_pyc):.1f}x).",
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
