"""Benchmark: `ckpt-explorer report ADAPTER --base BASE --json` vs loading the base + `PeftModel.from_pretrained`, and
`ckpt-explorer export BASE --adapter ADAPTER` vs `merge_and_unload()` + `save_pretrained`.

The base: Llama-2-70B shapes, 27 safetensors shards whose data are sparse-file holes (make_sparse_checkpoints.py).
The adapter: LoRA r=16 on q_proj/k_proj/v_proj/o_proj of all 80 layers (320 modules, 640 tensors, bf16), its
adapter_config.json written by peft's own LoraConfig.save_pretrained, its adapter_model.safetensors a header plus
a sparse hole. Each tool runs as its own process (wall time, peak RSS from wait4); the peft side runs under the
same RSS cap / time limit watchdog as bench_report.py. Both sides' missing / unexpected / mismatched counts are
printed so the comparison is of equal answers.

Merge-export: a real Llama-shaped base with random weights saved by save_pretrained (bf16, ~330 MB: hidden 1024,
8 layers, vocab 32000) and a LoRA r=16 on every linear layer written by peft (init_lora_weights=False, so ΔW ≠ 0).
Ours: `ckpt-explorer export BASE --adapter ADAPTER -o OUT`; theirs: from_pretrained + PeftModel.from_pretrained +
merge_and_unload() + save_pretrained, each a fresh process (wall, peak RSS); the two outputs are then compared
tensor by tensor. Writes benchmarks/results/adapter.md.

    python benchmarks/bench_adapter.py [--cap-gb 12] [--timeout 900] [--repeat 3] [--keep DIR] [--skip-report]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_report import _mem_available, gib, measure  # noqa: E402
from make_sparse_checkpoints import LLAMA2_70B, make_llama70b  # noqa: E402

R = 16
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")

PEFT_SIDE = """
import json, sys, time, warnings
t0 = time.time()
import transformers
from peft import PeftModel
base = transformers.LlamaForCausalLM.from_pretrained(sys.argv[1])
t1 = time.time()
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    pm = PeftModel.from_pretrained(base, sys.argv[2], ignore_mismatched_sizes=True)
missing = [str(x.message) for x in w if "Found missing adapter keys" in str(x.message)]
mismatched = [str(x.message) for x in w if "ignore_mismatched_sizes" in str(x.message)]
n = sum(1 for k in pm.state_dict() if ".lora_" in k)
print(json.dumps({"base_seconds": t1 - t0, "peft_seconds": time.time() - t1, "lora_keys": n,
                  "missing_warning": bool(missing), "mismatched_warning": bool(mismatched)}))
"""


def write_adapter(folder: Path, base: Path) -> dict:
    """adapter_config.json from peft's LoraConfig; adapter_model.safetensors with the 70B's LoRA shapes (data: a hole)."""
    from peft import LoraConfig

    folder.mkdir(parents=True, exist_ok=True)
    LoraConfig(r=R, lora_alpha=32, target_modules=list(TARGETS), task_type="CAUSAL_LM",
               base_model_name_or_path=str(base)).save_pretrained(str(folder))
    c = LLAMA2_70B
    h, kv = c["hidden_size"], c["hidden_size"] // c["num_attention_heads"] * c["num_key_value_heads"]
    out_dim = {"q_proj": h, "k_proj": kv, "v_proj": kv, "o_proj": h}
    header: dict = {"__metadata__": {"format": "pt"}}
    off = 0
    for i in range(c["num_hidden_layers"]):
        for t in TARGETS:
            pre = f"base_model.model.model.layers.{i}.self_attn.{t}"
            for name, shape in ((f"{pre}.lora_A.weight", (R, h)), (f"{pre}.lora_B.weight", (out_dim[t], R))):
                nb = math.prod(shape) * 2
                header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [off, off + nb]}
                off += nb
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(folder / "adapter_model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        f.truncate(8 + len(raw) + off)
    return {"tensors": len(header) - 1, "bytes": off}


MERGE_BASE = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 1024, "intermediate_size": 2816,
              "num_hidden_layers": 8, "num_attention_heads": 16, "num_key_value_heads": 4, "vocab_size": 32000,
              "max_position_embeddings": 2048, "tie_word_embeddings": False, "dtype": "bfloat16"}
MERGE_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

PEFT_MERGE = """
import sys, time, torch, transformers
from peft import PeftModel
t0 = time.time()
base = transformers.LlamaForCausalLM.from_pretrained(sys.argv[1], dtype=torch.bfloat16)
merged = PeftModel.from_pretrained(base, sys.argv[2]).merge_and_unload()
merged.save_pretrained(sys.argv[3])
"""


def write_merge_pair(root: Path) -> dict:
    """A real bf16 Llama-shaped base (random weights, save_pretrained) and a trained-looking LoRA (peft)."""
    import torch
    import transformers
    from peft import LoraConfig, get_peft_model

    base, adapter = root / "merge_base", root / "merge_lora"
    if not (base / "model.safetensors").exists():
        torch.manual_seed(0)
        cfg = transformers.LlamaConfig(**{k: v for k, v in MERGE_BASE.items() if k not in ("architectures", "model_type")})
        cfg.architectures = MERGE_BASE["architectures"]
        model = transformers.LlamaForCausalLM(cfg).to(torch.bfloat16)
        model.save_pretrained(base)
        pm = get_peft_model(model, LoraConfig(r=R, lora_alpha=32, target_modules=MERGE_TARGETS, init_lora_weights=False))
        pm.save_pretrained(adapter)
        del model, pm
    size = sum(f.stat().st_size for f in base.glob("*.safetensors"))
    asize = sum(f.stat().st_size for f in adapter.glob("*.safetensors"))
    return {"base": base, "adapter": adapter, "base_bytes": size, "adapter_bytes": asize}


def compare_outputs(ours: Path, theirs: Path) -> dict:
    import torch
    from safetensors.torch import load_file

    def load(folder: Path) -> dict:
        out = {}
        for f in sorted(folder.glob("*.safetensors")):
            out.update(load_file(f))
        return out

    a, b = load(ours), load(theirs)
    common = sorted(set(a) & set(b))
    worst = max((float((a[k].float() - b[k].float()).abs().max()) for k in common), default=float("nan"))
    same_dtype = all(a[k].dtype == b[k].dtype for k in common)
    return {"ours": len(a), "theirs": len(b), "common": len(common), "max_abs_diff": worst, "same_dtype": same_dtype,
            "only_ours": sorted(set(a) - set(b))[:3], "only_theirs": sorted(set(b) - set(a))[:3]}


def run_merge(root: Path, args: argparse.Namespace) -> dict:
    # the pair is written by a child: a child's peak RSS (wait4's ru_maxrss) starts from what its parent held at fork
    code = f"import sys; sys.path.insert(0, {str(HERE)!r}); import bench_adapter as b; b.write_merge_pair(__import__('pathlib').Path({str(root)!r}))"
    subprocess.run([sys.executable, "-c", code], check=True)
    pair = write_merge_pair(root)  # exists now: only its sizes
    print(f"merge: base {gib(pair['base_bytes'])}, adapter {pair['adapter_bytes'] / 1024**2:.1f} MiB", flush=True)
    exe = Path(sys.executable).with_name("ckpt-explorer")
    head = [str(exe)] if exe.exists() else [sys.executable, "-m", "explorer"]
    ours, theirs = [], []
    for i in range(args.repeat):
        for side in ("ours", "theirs"):  # interleaved: both sides see the same machine load
            out = root / f"merged_{side}_{i}"
            shutil.rmtree(out, ignore_errors=True)
            cmd = ([*head, "export", str(pair["base"]), "--adapter", str(pair["adapter"]), "-o", str(out)] if side == "ours"
                   else [sys.executable, "-c", PEFT_MERGE, str(pair["base"]), str(pair["adapter"]), str(out)])
            r = measure(cmd, cap_bytes=int(args.cap_gb * 1024**3), timeout=args.timeout)
            (ours if side == "ours" else theirs).append(r)
            print(f"  {side}: {r['wall']:.2f} s, {gib(r['peak_rss'])} ({r['outcome']})", flush=True)
    floor = measure([sys.executable, "-c", "import transformers, peft, torch; transformers.LlamaForCausalLM"])
    return {"pair": {k: v for k, v in pair.items() if k.endswith("bytes")}, "ours": ours, "theirs": theirs,
            "floor": floor["wall"], "floor_rss": floor["peak_rss"], "outputs": (root / "merged_ours_0", root / "merged_theirs_0")}


def _runs(rs: list[dict]) -> str:
    return ", ".join(f"{r['wall']:.2f}" for r in rs)


def merge_table(res: dict) -> list[str]:
    o, t = res["ours"], res["theirs"]
    mo, mt = statistics.median(r["wall"] for r in o), statistics.median(r["wall"] for r in t)
    ro, rt = max(r["peak_rss"] for r in o), max(r["peak_rss"] for r in t)
    c = res["cmp"]
    p = res["pair"]
    return [
        "## `ckpt-explorer export BASE --adapter ADAPTER` vs `merge_and_unload()` + `save_pretrained`",
        "",
        f"Base: Llama-shaped (hidden {MERGE_BASE['hidden_size']}, {MERGE_BASE['num_hidden_layers']} layers, vocab "
        f"{MERGE_BASE['vocab_size']}), bf16, {p['base_bytes'] / 1024**2:.0f} MiB, random weights saved by save_pretrained. "
        f"Adapter: LoRA r={R} on {', '.join(MERGE_TARGETS)}, {p['adapter_bytes'] / 1024**2:.1f} MiB, written by peft "
        "(init_lora_weights=False). Runs interleaved, each a fresh process.",
        "",
        "| | wall (median) | runs | peak RSS |",
        "|---|---|---|---|",
        f"| ckpt-explorer export BASE --adapter ADAPTER -o OUT | {mo:.2f} s | {_runs(o)} | {gib(ro)} |",
        f"| from_pretrained + PeftModel.from_pretrained + merge_and_unload() + save_pretrained | {mt:.2f} s | "
        f"{_runs(t)} | {gib(rt)} |",
        "",
        f"Ratio: {mt / mo:.2f}x the time, {rt / ro:.2f}x the memory. Import floor (transformers + peft + torch + the model "
        f"class): {res['floor']:.2f} s, {gib(res['floor_rss'])}. Outputs: {c['common']} tensors in both, largest absolute difference "
        f"{c['max_abs_diff']:.3g} (same dtypes: {c['same_dtype']}); only ours: {c['only_ours'] or 'none'}, only "
        f"theirs: {c['only_theirs'] or 'none'}.",
        "",
        "Our peak memory is about one adapted module (its base weight, A, B and the merged copy) plus the import floor; "
        "peft's is the whole base model, its merged copy's buffers and save_pretrained's staging.",
    ]


def _ours_cmd(adapter: Path, base: Path) -> list[str]:
    exe = Path(sys.executable).with_name("ckpt-explorer")
    head = [str(exe)] if exe.exists() else [sys.executable, "-m", "explorer"]
    return [*head, "report", str(adapter), "--base", str(base), "--json"]


def versions() -> str:
    import peft
    import torch
    import transformers

    return f"peft {peft.__version__}, transformers {transformers.__version__}, torch {torch.__version__}"


def run(args: argparse.Namespace) -> dict:
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="ckpt-bench-adapter-"))
    try:
        merge = run_merge(root, args)
        if args.skip_report:
            merge["cmp"] = compare_outputs(*merge.pop("outputs"))
            return {"merge": merge}
        base = root / "llama70b"
        if not (base / "model.safetensors.index.json").exists():
            make_llama70b(base)
        adapter = root / "lora_r16_qkvo"
        ainfo = write_adapter(adapter, base)
        print(f"adapter: {ainfo['tensors']} tensors, {gib(ainfo['bytes'])} apparent", flush=True)
        ours = []
        for _ in range(args.repeat):
            with tempfile.TemporaryFile() as out:
                r = measure(_ours_cmd(adapter, base), stdout=out)
                out.seek(0)
                rep = json.loads(out.read())
            ours.append(r)
            print(f"  ckpt-explorer report ADAPTER --base: {r['wall']:.2f} s, {gib(r['peak_rss'])} ({r['outcome']})", flush=True)
        floor = measure([sys.executable, "-c", "import transformers, peft; from peft import PeftModel; transformers.LlamaForCausalLM"])
        print(f"  import floor (transformers + peft + LlamaForCausalLM): {floor['wall']:.2f} s", flush=True)
        if _mem_available() < args.cap_gb * 1024**3 + 3 * 1024**3:
            theirs = {"wall": float("nan"), "peak_rss": 0, "outcome": "skipped: not enough free RAM for the cap"}
            detail = {}
        else:
            with tempfile.TemporaryFile() as out:
                theirs = measure([sys.executable, "-c", PEFT_SIDE, str(base), str(adapter)], cap_bytes=int(args.cap_gb * 1024**3),
                                 timeout=args.timeout, stdout=out)
                out.seek(0)
                text = out.read().decode().strip()
                detail = json.loads(text.splitlines()[-1]) if text else {}
        print(f"  from_pretrained + PeftModel.from_pretrained: {theirs['wall']:.2f} s, {gib(theirs['peak_rss'])} "
              f"({theirs['outcome']}) {detail}", flush=True)
        merge["cmp"] = compare_outputs(*merge.pop("outputs"))  # last: it loads both outputs into this process
        print(f"  merge outputs: {merge['cmp']}", flush=True)
        return {"ainfo": ainfo, "counts": rep["counts"], "adapted": len(rep["adapter"]["adapted"]),
                "ours": ours, "theirs": theirs, "detail": detail, "floor": floor["wall"], "load": os.getloadavg(),
                "merge": merge}
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


def table(res: dict, args: argparse.Namespace) -> str:
    head = [f"Machine: {platform.machine()}, {os.cpu_count()} cores (shared with other jobs while measuring), "
            f"{gib(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES'))} RAM, Python {platform.python_version()}; "
            f"{versions()}. Generated by `python benchmarks/bench_adapter.py`.", ""]
    merge = merge_table(res["merge"])
    if "ours" not in res:
        return "\n".join(["# PEFT adapters: merge-export", "", *head, *merge]) + "\n"
    ours = res["ours"]
    med = statistics.median(r["wall"] for r in ours)
    th = res["theirs"]
    ratio = th["wall"] / med if th["wall"] == th["wall"] else float("nan")
    sp = f"{ratio:.1f}x" if th["outcome"] == "ok" else (f"> {ratio:.1f}x (did not finish)" if ratio == ratio else "n/a")
    d = res["detail"]
    runs = ", ".join(f"{r['wall']:.2f}" for r in ours)
    lines = [
        "# `ckpt-explorer report ADAPTER --base` vs `from_pretrained` + `PeftModel.from_pretrained`",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores (shared with other jobs while measuring), "
        f"{gib(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES'))} RAM, Python {platform.python_version()}; "
        f"{versions()}. Base: Llama-2-70B shapes, 27 shards, 128 GiB apparent (sparse holes). Adapter: LoRA r={R} on "
        f"{'/'.join(TARGETS)} x 80 layers, {res['ainfo']['tensors']} tensors, {gib(res['ainfo']['bytes'])} bf16 (a hole). "
        "Every run is a fresh process; the peft side is killed above "
        f"{args.cap_gb} GiB RSS or after {args.timeout} s. Generated by `python benchmarks/bench_adapter.py`.",
        "",
        "| | wall | peak RSS | answer |",
        "|---|---|---|---|",
        f"| ckpt-explorer report ADAPTER --base BASE --json (median; runs {runs}) "
        f"| {med:.2f} s | {gib(max(r['peak_rss'] for r in ours))} | {res['counts']}, {res['adapted']} modules adapted |",
        f"| LlamaForCausalLM.from_pretrained + PeftModel.from_pretrained(ignore_mismatched_sizes=True) | {th['wall']:.1f} s, "
        f"{th['outcome']} | {gib(th['peak_rss'])} | "
        + (f"base {d.get('base_seconds', float('nan')):.1f} s + peft {d.get('peft_seconds', float('nan')):.1f} s; "
           f"{d.get('lora_keys')} lora keys, missing-keys warning: {d.get('missing_warning')}, mismatch warning: "
           f"{d.get('mismatched_warning')}" if d else "—")
        + " |",
        "",
        f"Speed-up: {sp}. Import floor (a process that only imports transformers + peft + the model class; both sides pay "
        f"it): {res['floor']:.2f} s. Load average when done: {', '.join(f'{x:.1f}' for x in res['load'])} (other jobs share "
        "the 2 cores, so absolute times vary run to run; the two sides ran back to back).",
        "",
        "Notes: ckpt-explorer's time is the import floor plus building the 70B on meta once (the first build in a process",
        "costs ~15 s of one-off lazy imports; the base's own transformers report now gets a meta deepcopy, 0.74 s, where",
        "it got a second build, 0.83 s, measured in one warm process: building once saves ~0.1 s, not more), peft",
        "injecting 320 LoRA layers on meta (~10 s) and its load_adapter. The peft side's base",
        "load is cheap only because the shards are holes mmapped as zero pages; with real weights it reads 128 GiB",
        "and needs that much memory (or a device map) before peft can say anything.",
        "",
        *merge,
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cap-gb", type=float, default=12.0)
    p.add_argument("--timeout", type=float, default=900.0)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--keep", metavar="DIR")
    p.add_argument("--skip-report", action="store_true", help="only the merge-export comparison (not the 70B report)")
    p.add_argument("--out", type=Path, default=HERE / "results" / "adapter.md")
    args = p.parse_args()
    res = run(args)
    text = table(res, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
