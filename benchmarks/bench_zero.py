"""DeepSpeed ZeRO benchmark: index + consolidated export to HF safetensors, against DeepSpeed's own zero_to_fp32
(``convert_zero_checkpoint_to_fp32_state_dict(..., safe_serialization=True)``, what ``python zero_to_fp32.py CKPT OUT
--safe_serialization`` runs), each in a fresh process with its peak RSS.

The checkpoint is a real 2-rank DeepSpeed run (gloo on loopback, CPU accelerator, deepspeed.initialize, one AdamW
step, save_checkpoint) of a Llama built from a config: fp32 master weights and both Adam moments in the optimizer
files, as a real ZeRO save holds them.

    python benchmarks/bench_zero.py [--stage 3 --hidden 2048 --layers 12] [--out benchmarks/results/zero.md]
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_dcp import REPO, timed  # noqa: E402  (same fresh-process timing)

WRITE = textwrap.dedent('''
    import os, socket, sys, warnings, logging
    warnings.simplefilter("ignore")
    import torch, torch.multiprocessing as mp

    def run(rank, world, out, port, cfg, stage):
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
        import deepspeed
        from deepspeed.utils import logger
        logger.setLevel(logging.ERROR)
        from transformers import LlamaConfig, LlamaForCausalLM
        deepspeed.init_distributed(dist_backend="gloo", verbose=False)
        torch.manual_seed(0)
        ds = {"train_batch_size": world, "steps_per_print": 10**6, "zero_optimization": {"stage": stage},
              "optimizer": {"type": "AdamW", "params": {"lr": 1e-3, "torch_adam": True}}}
        if stage == 3:
            with deepspeed.zero.Init(config_dict_or_path=ds):
                m = LlamaForCausalLM(LlamaConfig(**cfg))
        else:
            m = LlamaForCausalLM(LlamaConfig(**cfg))
        eng, *_ = deepspeed.initialize(model=m, model_parameters=m.parameters(), config=ds)
        ids = torch.randint(0, cfg["vocab_size"], (1, 8))
        eng.backward(eng(input_ids=ids, labels=ids).loss)
        eng.step()
        eng.save_checkpoint(out)
        if rank == 0:
            c = LlamaConfig(**cfg); c.architectures = ["LlamaForCausalLM"]; c.save_pretrained(out)

    if __name__ == "__main__":
        s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
        mp.start_processes(run, args=(2, sys.argv[1], port, eval(sys.argv[2]), int(sys.argv[3])), nprocs=2, join=True,
                           start_method="fork")
''')

OURS_INDEX = '''
import sys, time, json
t = time.perf_counter()
from explorer.core.checkpoint import open_checkpoint
ix = open_checkpoint(sys.argv[1])
import resource; print(json.dumps({"rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "s": time.perf_counter() - t, "tensors": len(ix.tensors)}))
'''
OURS_EXPORT = '''
import sys, time, json
t = time.perf_counter()
from explorer.core.convert import convert_checkpoint
r = convert_checkpoint(sys.argv[1], sys.argv[3], max_shard_size="2GB")
import resource; print(json.dumps({"rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "s": time.perf_counter() - t, "tensors": r.n_tensors, "bytes": r.total_bytes}))
'''
DS_INDEX = '''
import sys, time, json, warnings, contextlib, io
warnings.simplefilter("ignore")
t = time.perf_counter()
from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    sd = get_fp32_state_dict_from_zero_checkpoint(sys.argv[1], lazy_mode=True)
shapes = {k: tuple(v.shape) for k, v in sd.items()}
import resource; print(json.dumps({"rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "s": time.perf_counter() - t, "tensors": len(shapes)}))
'''
DS_EXPORT = '''
import sys, time, json, warnings, contextlib, io, shutil
warnings.simplefilter("ignore")
t = time.perf_counter()
from deepspeed.utils.zero_to_fp32 import convert_zero_checkpoint_to_fp32_state_dict
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    convert_zero_checkpoint_to_fp32_state_dict(sys.argv[1], sys.argv[3], max_shard_size="2GB", safe_serialization=True)
shutil.copy(sys.argv[1] + "/config.json", sys.argv[3])
import resource; print(json.dumps({"rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "s": time.perf_counter() - t, "tensors": 0}))
'''


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stage", type=int, default=3)
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--out", default=str(REPO / "benchmarks/results/zero.md"))
    ap.add_argument("--tmp", default=None)
    a = ap.parse_args()
    cfg = dict(vocab_size=a.vocab, hidden_size=a.hidden, intermediate_size=a.hidden * 11 // 4, num_hidden_layers=a.layers,
               num_attention_heads=16, num_key_value_heads=8, tie_word_embeddings=False)
    tmp = Path(tempfile.mkdtemp(prefix="bench-zero-", dir=a.tmp))
    try:
        ck = tmp / "ckpt"
        t = time.perf_counter()
        r = subprocess.run([sys.executable, "-c", WRITE, str(ck), repr(cfg), str(a.stage)], capture_output=True, text=True,
                           env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "DS_ACCELERATOR": "cpu"})
        if r.returncode:
            raise SystemExit(r.stderr[-3000:])
        write_s = time.perf_counter() - t
        tag = (ck / "latest").read_text().strip()
        files = sorted((ck / tag).iterdir())
        size = sum(f.stat().st_size for f in files)
        optim = sum(f.stat().st_size for f in files if f.name.endswith("optim_states.pt"))
        idx = timed(OURS_INDEX, str(ck))
        exp = timed(OURS_EXPORT, str(ck), "", str(tmp / "ours"))
        out_bytes = sum(f.stat().st_size for f in (tmp / "ours").iterdir())
        shutil.rmtree(tmp / "ours")
        dix = timed(DS_INDEX, str(ck))
        dex = timed(DS_EXPORT, str(ck), "", str(tmp / "ds"))
        import deepspeed
        import torch
        import transformers

        load = os.getloadavg()
        lines = [
            "# DeepSpeed ZeRO — index, consolidated export", "",
            f"Checkpoint: a real 2-rank DeepSpeed ZeRO stage {a.stage} save (gloo, CPU accelerator, one AdamW step) of a "
            f"Llama (hidden {a.hidden}, {a.layers} layers, vocab {a.vocab}): {size / 2**30:.2f} GiB in {len(files)} files "
            f"({optim / 2**30:.2f} GiB optimizer states: fp32 master weights + both Adam moments; written in {write_s:.0f} s). "
            f"The consolidated fp32 weights are {out_bytes / 2**30:.2f} GiB. Each command in a fresh process; peak RSS of "
            "that process.", "",
            f"deepspeed {deepspeed.__version__}, torch {torch.__version__}, transformers {transformers.__version__}, Python "
            f"{platform.python_version()}, {os.cpu_count()} CPUs, load average {load[0]:.1f} (machine shared with other jobs: "
            "times are pessimistic).", "",
            "| task | Checkpoint Explorer | time | peak RSS | DeepSpeed | time | peak RSS |",
            "|---|---|---|---|---|---|---|",
            f"| index (names, shapes, dtypes) | `open_checkpoint(ZeRO folder)` ({idx['tensors']} tensors, pickles only) | "
            f"{idx['wall']:.1f} s | {idx['rss_mb']:.0f} MB | `get_fp32_state_dict_from_zero_checkpoint(lazy_mode=True)` | "
            f"{dix['wall']:.1f} s | {dix['rss_mb']:.0f} MB |",
            f"| consolidated export → HF safetensors | `export ZERO -o OUT` (streamed, 2GB shards + index + config.json) | "
            f"{exp['wall']:.1f} s | {exp['rss_mb']:.0f} MB | `zero_to_fp32.py CKPT OUT --safe_serialization` "
            f"(`convert_zero_checkpoint_to_fp32_state_dict`, 2GB shards) | {dex['wall']:.1f} s | {dex['rss_mb']:.0f} MB |",
            "",
            "Peak RSS is each process's own ru_maxrss. Our export reads every parameter piece by piece from the mmapped "
            "rank files and drops the pages once written (madvise), so its peak is the interpreter plus one piece; "
            "zero_to_fp32 (mmap-based and lazy per shard in recent DeepSpeed) materialises each output shard's "
            "tensors before save_file writes them, and the optimizer-file pages it touched stay mapped: here its peak "
            "is about twice the consolidated model.", "",
            f"Command: `python benchmarks/bench_zero.py --stage {a.stage} --hidden {a.hidden} --layers {a.layers} "
            f"--vocab {a.vocab}`", "",
        ]
        Path(a.out).write_text("\n".join(lines))
        print("\n".join(lines))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
