"""Benchmark: `ckpt-explorer report --json` vs `from_pretrained(..., output_loading_info=True)` on the same files.

Two huge checkpoints are generated with sparse-file data (headers only; see make_sparse_checkpoints.py):

* Llama-2-70B shapes, 27 safetensors shards, 723 tensors, 128 GiB apparent.
* DeepSeek-V3 shapes (61 layers, 256 routed experts) in the per-expert on-disk layout that transformers fuses
  on load, plus the MTP layer 61 it ignores: 46k tensors in 257 shards, 1.25 TiB apparent.

Each tool runs as its own process, as a user would run it; wall time, CPU time and peak RSS (``wait4`` rusage)
are measured. ``--before REV`` also runs the CLI of an older commit of this repository (exported with ``git
archive``) on the same files, alternating with the current one, so a speed-up is measured in one run; the load
average (``uptime``) is recorded next to every figure (other jobs share this machine's cores). ``from_pretrained`` runs under a memory watchdog (killed once its RSS passes ``--cap-gb``) and a time
limit, so it cannot take the machine down. Prints a table and writes benchmarks/results/report.md.

    python benchmarks/bench_report.py [--cap-gb 12] [--timeout 600] [--repeat 3] [--keep DIR] [--before REV]
                                      [--only moe|llama70b] [--no-from-pretrained]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from make_sparse_checkpoints import make_llama70b, make_moe  # noqa: E402

FROM_PRETRAINED = """
import json, sys, time
t0 = time.time()
import transformers
cfg = transformers.AutoConfig.from_pretrained(sys.argv[1])
cls = getattr(transformers, cfg.architectures[0])
model, info = cls.from_pretrained(sys.argv[1], output_loading_info=True)
print(json.dumps({"missing": len(info["missing_keys"]), "unexpected": len(info["unexpected_keys"]),
                  "mismatched": len(info["mismatched_keys"]), "seconds": time.time() - t0}))
"""

IMPORT_FLOOR = "import transformers, sys; getattr(transformers, sys.argv[1])"


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for ln in f:
                if ln.startswith("VmRSS:"):
                    return int(ln.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _mem_available() -> int:
    with open("/proc/meminfo") as f:
        for ln in f:
            if ln.startswith("MemAvailable:"):
                return int(ln.split()[1]) * 1024
    return 0


def load_average() -> float:
    """The 1-minute load average (what ``uptime`` shows first)."""
    return os.getloadavg()[0]


def measure(cmd: list[str], *, cap_bytes: int | None = None, timeout: float | None = None, stdout=None,
            env_extra: dict | None = None, cwd: Path | None = None) -> dict:
    """Run ``cmd``; return wall seconds, CPU seconds, peak RSS, outcome ("ok", "exit N", "killed: memory/time")
    and the load average when it started."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error", HF_HUB_DISABLE_PROGRESS_BARS="1",
               **(env_extra or {}))
    load = load_average()
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=stdout or subprocess.DEVNULL, stderr=err, env=env, cwd=cwd)
        killed = None
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if cap_bytes and (_rss_bytes(p.pid) > cap_bytes or _mem_available() < 3 * 1024**3):
                killed = "memory"
            elif timeout and time.perf_counter() - t0 > timeout:
                killed = "time"
            if killed:
                p.kill()
                _, status, ru = os.wait4(p.pid, 0)
                break
            time.sleep(0.02)
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        tail = err.read().decode(errors="replace").strip().splitlines()[-1:] or [""]
    if killed:
        outcome = f"killed: {'RSS over the cap' if killed == 'memory' else 'time limit'}"
    else:
        outcome = "ok" if p.returncode in (0, 1) else f"exit {p.returncode}: {tail[0][:120]}"
    return {"wall": wall, "cpu": ru.ru_utime + ru.ru_stime, "peak_rss": ru.ru_maxrss * 1024, "outcome": outcome,
            "rc": p.returncode, "load": load}


def _ours_cmd(folder: Path) -> list[str]:
    # `python -m explorer` with PYTHONPATH set to the checkout: the code of this checkout (or of --before's
    # export), whatever is installed; a first report each time (see bench_report_cache.py)
    return [sys.executable, "-m", "explorer", "report", str(folder), "--json", "--no-cache"]


def export_revision(rev: str, into: Path) -> Path:
    """``git archive REV`` of this repository unpacked into ``into`` (the CLI of that commit, run by PYTHONPATH)."""
    into.mkdir(parents=True, exist_ok=True)
    data = subprocess.run(["git", "-C", str(HERE.parent), "archive", rev], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=data, check=True)
    return into


def check_code(code: Path) -> None:
    """Stop unless a child run as _run_report runs it imports explorer from ``code``."""
    got = subprocess.run([sys.executable, "-c", "import explorer; print(explorer.__file__)"], cwd=code, check=True,
                         capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(code))).stdout.strip()
    if not Path(got).resolve().is_relative_to(code.resolve()):
        sys.exit(f"the code under test at {code} imports explorer from {got}")


def _run_report(folder: Path, code: Path) -> tuple[dict, dict]:
    with tempfile.TemporaryFile() as out:
        # run in the code's own folder: `python -m` puts the working directory first on sys.path, so from this
        # checkout's root --before's export would be shadowed by this checkout (both columns the same code)
        r = measure(_ours_cmd(folder), stdout=out, env_extra={"PYTHONPATH": str(code)}, cwd=code)
        out.seek(0)
        raw = out.read()
    r["digest"] = hashlib.sha256(raw).hexdigest()[:16]
    return r, (json.loads(raw) if r["outcome"] == "ok" else {})


def gib(n: float) -> str:
    return f"{n / 1024**3:.2f} GiB"


def run(args: argparse.Namespace) -> list[dict]:
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="ckpt-bench-"))
    free = shutil.disk_usage(root).free
    if free < 1024**3:
        sys.exit(f"{root}: only {gib(free)} free; need ~1 GiB for headers")
    rows = []
    before = export_revision(args.before, root / "before-code") if args.before else None
    for code in (HERE.parent, before):
        if code is not None:
            check_code(code)
    try:
        for name, make, arch in (
            ("Llama-2-70B shapes, 27 shards", make_llama70b, "LlamaForCausalLM"),
            ("DeepSeek-V3 shapes, per-expert layout", make_moe, "DeepseekV3ForCausalLM"),
        ):
            if args.only and make.__name__.removeprefix("make_") != args.only:
                continue
            folder = root / make.__name__.removeprefix("make_")
            if not (folder / "model.safetensors.index.json").exists():
                info = make(folder)
            else:
                idx = json.loads((folder / "model.safetensors.index.json").read_text())
                info = {"tensors": len(idx["weight_map"]), "files": len(set(idx["weight_map"].values())),
                        "apparent_bytes": idx["metadata"]["total_size"]}
            print(f"\n{name}: {info['tensors']} tensors, {info['files']} files, {gib(info['apparent_bytes'])} apparent", flush=True)
            ours, old = [], []
            for _ in range(args.repeat):  # alternating, so both see the same load
                r, rep = _run_report(folder, HERE.parent)
                ours.append(r)
                print(f"  ckpt-explorer report --json: {r['wall']:.2f} s, {r['cpu']:.2f} CPU s, {gib(r['peak_rss'])} "
                      f"({r['outcome']}, load {r['load']:.2f}, output {r['digest']})", flush=True)
                if before is not None:
                    b, _ = _run_report(folder, before)
                    old.append(b)
                    print(f"  {args.before} report --json: {b['wall']:.2f} s, {b['cpu']:.2f} CPU s, {gib(b['peak_rss'])} "
                          f"({b['outcome']}, load {b['load']:.2f}, output {b['digest']})", flush=True)
            floor = measure([sys.executable, "-c", IMPORT_FLOOR, arch])
            print(f"  import transformers + {arch} alone: {floor['wall']:.2f} s (load {floor['load']:.2f})", flush=True)
            if args.no_from_pretrained:
                theirs = {"wall": float("nan"), "peak_rss": 0, "outcome": "not run (--no-from-pretrained)", "load": load_average()}
            elif _mem_available() < args.cap_gb * 1024**3 + 3 * 1024**3:
                theirs = {"wall": float("nan"), "peak_rss": 0, "outcome": "skipped: not enough free RAM for the cap"}
            else:
                theirs = measure([sys.executable, "-c", FROM_PRETRAINED, str(folder)], cap_bytes=args.cap_gb * 1024**3, timeout=args.timeout)
            print(f"  from_pretrained(output_loading_info=True): {theirs['wall']:.2f} s, {gib(theirs['peak_rss'])} ({theirs['outcome']})", flush=True)
            row = {
                "name": name, "info": info, "counts": rep["counts"],
                "ours_wall": statistics.median(r["wall"] for r in ours), "ours_rss": max(r["peak_rss"] for r in ours),
                "ours_all": [round(r["wall"], 2) for r in ours], "ours_cpu": statistics.median(r["cpu"] for r in ours),
                "ours_load": [round(r["load"], 2) for r in ours], "floor": floor["wall"], "floor_load": floor["load"],
                "theirs": theirs,
            }
            if old:
                row.update(before_wall=statistics.median(r["wall"] for r in old), before_all=[round(r["wall"], 2) for r in old],
                           before_cpu=statistics.median(r["cpu"] for r in old), before_load=[round(r["load"], 2) for r in old],
                           same_output=len({r["digest"] for r in ours + old}) == 1)
            rows.append(row)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return rows


def _versions() -> str:
    from importlib.metadata import version

    return ", ".join(f"{d} {version(d)}" for d in ("torch", "transformers", "safetensors"))


def table(rows: list[dict], args: argparse.Namespace) -> str:
    before = args.before
    lines = [
        "# `ckpt-explorer report` vs `from_pretrained` on huge sharded checkpoints",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores (shared with other jobs while measuring: the load "
        f"average at each run's start is given), "
        f"{gib(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES'))} RAM, Python {platform.python_version()}, "
        f"{_versions()}. Tensor data are sparse-file holes; every run is a fresh process. `from_pretrained` is killed "
        f"once its RSS passes {args.cap_gb} GiB or after {args.timeout} s. Generated by `python benchmarks/bench_report.py"
        f"{' --before ' + before if before else ''}`.",
        "",
        "| checkpoint | tensors / files / apparent size | ckpt-explorer report --json (median; runs) | CPU s | peak RSS | "
        + (f"same command at {before} (median; runs) | CPU s | " if before else "")
        + "from_pretrained(output_loading_info=True) | peak RSS | import floor |",
        "|---|---|---|---|---|" + ("---|---|" if before else "") + "---|---|---|",
    ]
    for r in rows:
        th = r["theirs"]
        i = r["info"]
        cells = [r["name"], f"{i['tensors']} / {i['files']} / {gib(i['apparent_bytes'])}",
                 f"{r['ours_wall']:.2f} s ({', '.join(map(str, r['ours_all']))}; load {', '.join(map(str, r['ours_load']))})",
                 f"{r['ours_cpu']:.2f}", gib(r["ours_rss"])]
        if before:
            cells += [f"{r['before_wall']:.2f} s ({', '.join(map(str, r['before_all']))}; load "
                      f"{', '.join(map(str, r['before_load']))}){'' if r['same_output'] else ' OUTPUT DIFFERS'}",
                      f"{r['before_cpu']:.2f}"]
        ratio = th["wall"] / r["ours_wall"] if th["wall"] == th["wall"] else float("nan")
        sp = "" if ratio != ratio else (f" ({ratio:.1f}x ours)" if th["outcome"] == "ok" else f" (> {ratio:.1f}x ours)")
        cells += [f"{th['wall']:.1f} s, {th['outcome']}{sp}; load {th.get('load', float('nan')):.2f}",
                  gib(th["peak_rss"]), f"{r['floor']:.2f} s (load {r['floor_load']:.2f})"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Report counts: " + "; ".join(f"{r['name']}: {r['counts']}" for r in rows),
    ]
    if before:
        lines.append("Output: the --json text of every run, current and " + before + ", "
                     + ("byte-identical (SHA-256)." if all(r["same_output"] for r in rows) else "NOT identical."))
    lines += [
        "",
        "*import floor*: a process that only imports transformers and the model class; both tools pay it.",
        "",
        "Notes: with sparse files `from_pretrained` on the 70B finishes with little RSS because safetensors mmaps",
        "the shards and the parameters stay views of zero pages (no disk reads); on real data it would read 128 GiB.",
        "Its time varies with the page cache. On the MoE, `from_pretrained` fuses the experts in memory and passes",
        "the RSS cap.",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cap-gb", type=float, default=12.0, help="kill from_pretrained above this RSS (GiB)")
    p.add_argument("--timeout", type=float, default=600.0, help="kill from_pretrained after this many seconds")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--keep", metavar="DIR", help="generate into DIR and keep it (reused if present)")
    p.add_argument("--out", type=Path, default=HERE / "results" / "report.md")
    p.add_argument("--before", metavar="REV", help="also time the CLI of this older commit (git archive), alternating")
    p.add_argument("--only", choices=("llama70b", "moe"), help="one checkpoint only")
    p.add_argument("--no-from-pretrained", action="store_true", help="skip the from_pretrained column")
    args = p.parse_args()
    rows = run(args)
    md = table(rows, args)
    print("\n" + md)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
