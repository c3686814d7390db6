"""init-check, export (casts and re-inits) and adapter merges on 1 vs 2 workers (issue 14, "every core").

Builds a real Llama from a transformers config (``--hidden``, ``--layers``; random weights saved by
``save_pretrained``, a third of them moved so not everything looks untrained) and a LoRA adapter on every linear
layer written by peft (``init_lora_weights=False``, so ΔW ≠ 0), in a temp folder deleted afterwards. Variants, each
in a fresh process with the files in the page cache and the imports and the model build done before the clock
starts; ``--repeat`` runs of each worker count, 1 and 2 workers alternating (both meet the same machine), best and median:

- ``init-check`` of every tensor, ``workers=1`` and ``workers=2``;
- ``export`` with a plan re-initialising every MLP and the lm_head, the rest cast to bf16;
- ``export --adapter`` (merge) of the LoRA into the base.

For each: wall seconds, CPU seconds (user + system of the whole process: the work done, whatever the machine's
load), and the load (``/proc/loadavg``) before each run; the outputs of 1 and 2 workers are compared (init-check:
the same JSON; export: the same bytes in every written file). A loaded machine shows in the wall figures, not in
the CPU ones: compare CPU(2) with CPU(1) for the overhead of the second worker, wall for the speed-up.

    nice -n 5 /work/venv/bin/python benchmarks/bench_passes.py [--hidden 1024] [--layers 8] [--repeat 3]

Writes benchmarks/results/passes.md.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def make_data(folder: Path, hidden: int, layers: int, vocab: int) -> dict[str, int]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(hidden_size=hidden, intermediate_size=hidden * 11 // 4, num_hidden_layers=layers,
                      num_attention_heads=max(1, hidden // 128), num_key_value_heads=max(1, hidden // 128),
                      vocab_size=vocab, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():
        for i, (_n, p) in enumerate(model.named_parameters()):
            if i % 3 == 0:  # "trained": moved away from the init
                p.mul_(1.5).add_(0.01)
    base = folder / "base"
    model.save_pretrained(base)
    lcfg = LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                           "up_proj", "down_proj"], init_lora_weights=False)
    pm = get_peft_model(model, lcfg)
    pm.save_pretrained(folder / "adapter")
    cfgj = json.loads((folder / "adapter" / "adapter_config.json").read_text())
    cfgj["base_model_name_or_path"] = str(base)
    (folder / "adapter" / "adapter_config.json").write_text(json.dumps(cfgj))
    from explorer.core.matching import report
    from explorer.core.plan import Plan, save_plan

    plan = Plan.from_report(report(str(base))).with_rule(r"\.mlp\.|^lm_head\.", match="regex", action="reinit")
    save_plan(plan, folder / "plan.json")
    return {"params": sum(p.numel() for p in model.parameters()),
            "bytes": (base / "model.safetensors").stat().st_size}


# --------------------------------------------------------------------------------------------- child side


def _child(name: str, workers: int, folder: Path, out: Path) -> None:
    import explorer.core.export  # noqa: F401  (imports before the clock starts)
    import explorer.core.fresh  # noqa: F401
    import explorer.core.matching  # noqa: F401
    import explorer.core.merge  # noqa: F401
    import torch  # noqa: F401
    from explorer.core.model import ModelSpec, build_model

    base = folder / "base"
    build_model(ModelSpec(config=str(base)))  # the modeling code imported, as in a window that has a report
    # and the rest of what a process's first report leaves behind: transformers' registry of checkpoint conversions
    # (~1000 regexes, 0.16-0.18 s, built by the first match of a process and kept), the plan's schema validator
    from transformers.conversion_mapping import get_checkpoint_conversion_mapping

    get_checkpoint_conversion_mapping("llama")
    import jsonschema  # noqa: F401
    if name == "merge":
        import peft  # noqa: F401
    import explorer.core.export as export_mod

    in_pass = [0.0]  # the whole-checkpoint pass of an export / merge: its shards written by the workers
    write = export_mod._write_safetensors

    def timed_write(*a, **k):
        t = time.perf_counter()
        try:
            return write(*a, **k)
        finally:
            in_pass[0] += time.perf_counter() - t

    export_mod._write_safetensors = timed_write
    _pretouch()
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    if name == "init-check":
        from explorer.core.fresh import init_check

        res = init_check(str(base), workers=workers)
        out.write_text(json.dumps([r.to_json() for r in res]))
    elif name == "export":
        from explorer.core.export import export_checkpoint
        from explorer.core.plan import load_plan

        export_checkpoint(str(base), load_plan(str(folder / "plan.json")), out, dtype="bfloat16", workers=workers)
    elif name == "merge":
        from explorer.core.merge import export_merged

        export_merged(str(base), str(folder / "adapter"), out, workers=workers)
    else:
        raise SystemExit(f"unknown variant {name}")
    r1, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - t0
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    print(json.dumps({"seconds": wall, "cpu": cpu, "pass": in_pass[0] if name != "init-check" else wall}))


def _pretouch() -> None:
    """``--pretouch``: fault memory in and give it back to this guest's free lists, just before the clock."""
    if PRETOUCH_GIB[0]:
        import numpy as np

        a = np.ones(int(PRETOUCH_GIB[0] * (1 << 30)) // 8)
        del a


def _disk_child(nbytes: int, out: Path) -> None:
    """The disk alone: ``nbytes`` written to a new file in 16 MB pwrites as the export's writer does (a
    :class:`~explorer.core.fsio.Writeback` thread flushing every 64 MB, one fsync at the end), no compute: the
    fastest an output of that size can reach the disk here."""
    from explorer.core.fsio import Writeback

    buf = os.urandom(16 << 20)  # not zeros: a virtual disk may compress or skip those
    _pretouch()
    t0 = time.perf_counter()
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with Writeback() as wb:
            off = 0
            while off < nbytes:
                n = os.pwrite(fd, memoryview(buf)[: min(len(buf), nbytes - off)], off)
                wb.submit(fd, off, n)
                off += n
        os.fsync(fd)
    finally:
        os.close(fd)
    wall = time.perf_counter() - t0
    print(json.dumps({"seconds": wall, "cpu": 0.0, "pass": wall}))


def _memory_child(threads: int) -> None:
    """The machine's memory bus alone: ``threads`` threads (one intra-op thread each) streaming a 256 MB float32
    copy + in-place add, 5 rounds; GB/s moved. A merge's work is mostly this (reads, peft's delta added, the page
    cache): its ceiling on N workers is this figure's N-thread / 1-thread ratio, whatever the code."""
    import threading

    import torch

    torch.set_num_threads(1)
    n = 64 << 20
    pairs = [(torch.ones(n), torch.empty(n)) for _ in range(threads)]

    def work(a, b, reps):
        for _ in range(reps):
            b.copy_(a)
            a.add_(b)

    for a, b in pairs:
        work(a, b, 1)  # faulted in before the clock
    t0 = time.perf_counter()
    ths = [threading.Thread(target=work, args=(a, b, 5)) for a, b in pairs]
    for t in ths:
        t.start()
    for t in ths:
        t.join()
    wall = time.perf_counter() - t0
    moved = threads * 5 * 5 * n * 4  # copy: read + write; add: 2 reads + write
    print(json.dumps({"seconds": wall, "cpu": 0.0, "pass": wall, "gbs": moved / wall / 1e9}))


def filesystem(path: Path) -> str:
    """The type of the filesystem ``path`` is on (/proc/mounts, longest mount point above it)."""
    best, kind = "", "?"
    try:
        with open("/proc/mounts") as f:
            for line in f:
                _dev, mnt, typ, *_ = line.split()
                if (str(path.resolve()) + "/").startswith(mnt.rstrip("/") + "/") and len(mnt) >= len(best):
                    best, kind = mnt, typ
    except OSError:
        pass
    return kind


def page_reporting() -> str:
    """The guest's free page reporting (virtio-balloon), when it is on: the kernel hands freed memory back to the
    host, and touching it again costs a host page fault and zeroing per page, so a run's speed depends on how much
    memory was freed (by the last run's exit, an ``rm`` of its output) and when. ``min_free_ms`` (where the kernel
    has it) holds freed memory that long before reporting it. Every such setting goes in the results' header."""
    d = Path("/sys/module/page_reporting/parameters")
    if not d.is_dir():
        return "no free page reporting module"
    vals = []
    for name in ("page_reporting_order", "min_free_ms", "max_waiting_mib"):
        try:
            vals.append(f"{name}={(d / name).read_text().strip()}")
        except OSError:
            pass
    return "free page reporting on (" + ", ".join(vals) + ")"


def load() -> float:
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def digest(path: Path) -> tuple[str, int]:
    """The outputs' identity: the init-check JSON, or every written file's bytes (by name); and the bytes written."""
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file())
    size = sum(p.stat().st_size for p in files)
    for p in files:
        h.update(b"" if p == path else p.name.encode())
        with open(p, "rb") as f:
            while chunk := f.read(1 << 24):
                h.update(chunk)
    return h.hexdigest(), size


# torch's huge pages for big tensors, as the `ckpt-explorer` command turns them on (explorer.cli.huge_pages_for_torch;
# the API leaves the process's settings alone); --no-thp measures without
THP: dict[str, str] = {"THP_MEM_ALLOC_ENABLE": "1"}


#: GiB each child touches and frees just before its clock starts (``--pretouch``)
PRETOUCH_GIB: list[float] = [0.0]

#: where the children write their outputs (``--out-root``; default the data folder, i.e. the disk a user exports to)
OUT_ROOT: list[Path] = []


def run_once(name: str, workers: int, folder: Path, i: int, nbytes: int = 0) -> tuple[dict, tuple[str, int]]:
    """One run in a fresh process: its seconds and CPU, and the digest and size of what it wrote (then deleted).
    ``name`` "disk": the disk alone writing ``nbytes``."""
    out = (OUT_ROOT[0] if OUT_ROOT else folder) / f"out_{name}_{workers}_{i}"
    if name == "init-check":
        out = out.with_suffix(".json")
    extra = ["--bytes", str(nbytes)] if name == "disk" else []
    if PRETOUCH_GIB[0]:
        extra += ["--pretouch", str(PRETOUCH_GIB[0])]
    p = subprocess.run([sys.executable, __file__, "--child", name, "--workers", str(workers), "--folder",
                        str(folder), "--out", str(out), *extra], capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", **THP})
    if p.returncode:
        raise SystemExit(f"{name} workers={workers} failed:\n{p.stderr[-4000:]}")
    r = json.loads(p.stdout.strip().splitlines()[-1])
    d = digest(out)
    shutil.rmtree(out, ignore_errors=True) if out.is_dir() else out.unlink()
    return r, d


def run_pair(name: str, folder: Path, repeat: int) -> dict[int, dict]:
    """``repeat`` runs with 1 worker and ``repeat`` with 2, alternating (1, 2, 1, 2, ...), so both meet the same
    machine: on this VM a process's first touch of memory and of new page-cache pages costs anywhere from 1x to 5x
    from one run to the next. Per worker count: the best run (by wall) with its CPU, the median wall, every wall,
    the loads, the digests; and the median of the per-pair ratios."""
    runs: dict[int, list[dict]] = {1: [], 2: []}
    loads: dict[int, list[float]] = {1: [], 2: []}
    digests: dict[int, set[str]] = {1: set(), 2: set()}
    disk: list[float] = []  # an export / merge: the disk alone writing the same bytes, once per pair
    nbytes = 0
    for i in range(repeat):
        for w in (1, 2):
            loads[w].append(load())
            r, (d, nbytes) = run_once(name, w, folder, i)
            runs[w].append(r)
            digests[w].add(d)
        if name != "init-check":
            disk.append(run_once("disk", 0, folder, i, nbytes)[0]["seconds"])
    res = {}
    for w in (1, 2):
        best = min(runs[w], key=lambda r: r["seconds"])
        walls = sorted(r["seconds"] for r in runs[w])
        passes = sorted(r["pass"] for r in runs[w])
        res[w] = {**best, "median": walls[len(walls) // 2], "walls": [r["seconds"] for r in runs[w]],
                  "pass_median": passes[len(passes) // 2], "loads": loads[w], "digests": digests[w]}
    ratios = sorted(a["seconds"] / b["seconds"] for a, b in zip(runs[1], runs[2]))
    pass_ratios = sorted(a["pass"] / b["pass"] for a, b in zip(runs[1], runs[2]))
    res[0] = {"pair_median": ratios[len(ratios) // 2], "pass_pair_median": pass_ratios[len(pass_ratios) // 2],
              "bytes": nbytes, "disk": disk, "disk_median": sorted(disk)[len(disk) // 2] if disk else None}
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", default="init-check,export,merge", help="comma-separated: init-check, export, merge, memory (the memory bus alone, 1 vs 2 threads)")
    ap.add_argument("--child")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--folder")
    ap.add_argument("--out", default=str(HERE / "results" / "passes.md"))
    ap.add_argument("--data", help="keep the built checkpoints in this folder and reuse them on the next run "
                    "(default: a temp folder, deleted afterwards)")
    ap.add_argument("--out-root", help="write the outputs here (default: the data folder); e.g. /dev/shm to see the "
                    "passes without the disk's write speed")
    ap.add_argument("--bytes", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--pretouch", type=float, default=0.0, metavar="GIB",
                    help="each child first touches and frees GIB of memory, before its clock: on a VM with free page "
                         "reporting (virtio-balloon) the pass then meets memory this guest already holds, not memory "
                         "the host took back after the last run (whose re-touch costs a host fault per page)")
    ap.add_argument("--no-thp", action="store_true", help="children without torch's huge pages (THP_MEM_ALLOC_ENABLE)")
    args = ap.parse_args()
    PRETOUCH_GIB[0] = args.pretouch
    if args.no_thp:
        THP.clear()
    if args.child == "memory":
        _memory_child(args.workers)
        return
    if args.child == "disk":
        _disk_child(args.bytes, Path(args.out))
        return
    if args.child:
        _child(args.child, args.workers, Path(args.folder), Path(args.out))
        return
    import peft
    import torch
    import transformers

    if args.out_root:
        OUT_ROOT.append(Path(args.out_root))
        OUT_ROOT[0].mkdir(parents=True, exist_ok=True)
    folder = Path(args.data) if args.data else Path(tempfile.mkdtemp(prefix="bench_passes_", dir="/tmp"))
    try:
        sys.path.insert(0, str(ROOT))
        made = folder / "made.json"
        wanted = {"hidden": args.hidden, "layers": args.layers, "vocab": args.vocab}
        if made.is_file() and json.loads(made.read_text()).get("args") == wanted:
            meta = json.loads(made.read_text())["meta"]
        else:
            folder.mkdir(parents=True, exist_ok=True)
            meta = make_data(folder, args.hidden, args.layers, args.vocab)
            made.write_text(json.dumps({"args": wanted, "meta": meta}))
        for f in folder.rglob("*.safetensors"):  # warm the page cache
            with open(f, "rb") as fh:
                while fh.read(64 << 20):
                    pass
        size = f"Llama hidden {args.hidden}, {args.layers} layers, vocab {args.vocab}: {meta['params'] / 1e6:.0f}M " \
               f"params, {meta['bytes'] / (1 << 20):.0f} MiB float32"
        labels = {"init-check": "init-check, every tensor", "export": "export: MLPs + lm_head re-initialised, the rest "
                  "cast to bf16", "merge": "export --adapter: LoRA r=16 on every linear merged"}
        rows, summary = [], []
        for name in [n for n in args.only.split(",") if n]:
            if name == "memory":
                gbs: dict[int, list[float]] = {1: [], 2: []}
                for _ in range(args.repeat):
                    for w in (1, 2):
                        p = subprocess.run([sys.executable, __file__, "--child", "memory", "--workers", str(w)],
                                           capture_output=True, text=True, cwd=ROOT, env={**os.environ, **THP})
                        gbs[w].append(json.loads(p.stdout.strip().splitlines()[-1])["gbs"])
                med = {w: sorted(v)[len(v) // 2] for w, v in gbs.items()}
                summary.append(f"- memory bus alone (256 MB float32 copy + add per thread): 1 thread {med[1]:.1f} GB/s, "
                               f"2 threads {med[2]:.1f} GB/s: {med[2] / med[1]:.2f}× (median of {args.repeat}; every "
                               f"run: {', '.join(f'{x:.1f}' for x in gbs[1])} / {', '.join(f'{x:.1f}' for x in gbs[2])}). "
                               "A pass bound by memory traffic cannot scale past this ratio on this machine")
                print(summary[-1], flush=True)
                continue
            res = run_pair(name, folder, args.repeat)
            same = res[1]["digests"] | res[2]["digests"]
            for w in (1, 2):
                r = res[w]
                rows.append((labels[name], w, r["seconds"], r["median"], r["pass_median"], r["cpu"], r["walls"], r["loads"]))
                print(f"{labels[name]:<62} workers={w} {r['seconds']:7.2f} s wall (median {r['median']:.2f}) "
                      f"{r['cpu']:7.2f} s CPU  load {r['loads']}", flush=True)
            summary.append(f"- {name}: 2 workers vs 1: {res[1]['seconds'] / res[2]['seconds']:.2f}× best wall, "
                           f"{res[1]['median'] / res[2]['median']:.2f}× median wall, {res[0]['pair_median']:.2f}× median "
                           f"of the {args.repeat} side-by-side pairs (the pass alone: {res[1]['pass_median'] / res[2]['pass_median']:.2f}× "
                           f"median, {res[0]['pass_pair_median']:.2f}× median of pairs); CPU {res[2]['cpu'] / res[1]['cpu']:.2f}× of 1 worker's; "
                           "outputs of 1 and 2 workers "
                           + ("identical (one digest over every run)" if len(same) == 1 else f"DIFFER ({len(same)} digests)"))
            if res[0]["disk"]:
                dm, mb = res[0]["disk_median"], res[0]["bytes"] / 1e6
                rows.append((f"{labels[name]}: the disk alone writing its {mb:.0f} MB", "—", min(res[0]["disk"]), dm, dm,
                             0.0, res[0]["disk"], []))
                summary.append(f"  - {name} writes {mb:.0f} MB; the disk alone writing as many bytes (16 MB pwrites, a "
                               f"flush every 64 MB, a final fsync): median {dm:.2f} s = {mb / dm:.0f} MB/s. The pass on "
                               f"1 worker: {mb / res[1]['pass_median']:.0f} MB/s, on 2: {mb / res[2]['pass_median']:.0f} MB/s "
                               f"({dm / res[2]['pass_median'] * 100:.0f} % of the disk's)")
        lines = [
            "# init-check, export and merge: 1 vs 2 workers",
            "",
            f"`benchmarks/bench_passes.py --hidden {args.hidden} --layers {args.layers} --vocab {args.vocab} --repeat "
            f"{args.repeat}`: {size}. {args.repeat} runs per worker count, 1 and 2 workers alternating; best (by wall) "
            f"and median; each run a fresh process, files in the page cache, imports, the meta model and transformers' "
            f"conversion registry (what a process's first match builds, 0.16 s) made before the clock. {platform.machine()}, {os.cpu_count()} cores "
            f"shared with other jobs; torch {torch.__version__}, transformers {transformers.__version__}, peft "
            f"{peft.__version__}, Python {platform.python_version()}. CPU = user + "
            "system seconds of the process (every thread). `load` = /proc/loadavg (1 min) before each run. "
            + ("Children with `THP_MEM_ALLOC_ENABLE=1`, as the `ckpt-explorer` command sets it. " if THP else
               "Children without torch's huge pages (`--no-thp`). ") +
            "*Pass* = the whole-checkpoint part that `--workers` spreads (export / merge: the shards written, up to "
            "their fsync; init-check: all of it); the rest of an export is serial by nature: the match by transformers "
            "(and peft's, for a merge) before, the re-check of the written checkpoint after. Outputs written to "
            f"`{OUT_ROOT[0] if OUT_ROOT else 'the data folder'}` ({filesystem(OUT_ROOT[0] if OUT_ROOT else folder)}). "
            f"Guest memory: {page_reporting()}"
            + (f"; each child touched and freed {args.pretouch:g} GiB before its clock (`--pretouch`)." if args.pretouch else "."),
            "",
            "| task | workers | best wall s | median wall s | median pass s | CPU s (best run) | every wall s | load before each run |",
            "|---|---:|---:|---:|---:|---:|---|---|",
        ]
        for label, w, s, med, pmed, cpu, walls, loads in rows:
            lines.append(f"| {label} | {w} | {s:.2f} | {med:.2f} | {pmed:.2f} | {cpu:.2f} |" if w != "—" else
                         f"| {label} | — | {s:.2f} | {med:.2f} | — | — |")
            lines[-1] += (f" {', '.join(f'{x:.2f}' for x in walls)} | "
                         f"{', '.join(f'{x:.2f}' for x in loads)} |")
        lines += ["", *summary]
        out = Path(args.out)
        out.parent.mkdir(exist_ok=True)
        tmp = out.with_suffix(".md.tmp")
        tmp.write_text("\n".join(lines) + "\n")
        os.replace(tmp, out)
        print("\n".join(summary))
        print(f"\nwrote {out}")
    finally:
        if not args.data:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
