"""DeepSpeed ZeRO checkpoints written by DeepSpeed itself: a real 2-rank run (gloo on loopback, CPU accelerator,
``deepspeed.initialize`` + one training step + ``save_checkpoint``) of a tiny real transformers Llama, for stages
1, 2 and 3. DeepSpeed's own ``zero_to_fp32`` is the oracle. Skipped when deepspeed is not installed."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

TINY = dict(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2)
# name: (stage, bf16, tied embeddings, a frozen parameter)
VARIANTS = {"z1": (1, False, False, False), "z2": (2, True, True, True), "z3": (3, False, True, True)}

_SCRIPT = textwrap.dedent('''
    import os, socket, sys, warnings, logging
    warnings.simplefilter("ignore")
    import torch, torch.multiprocessing as mp

    def run(rank, world, out, port, cfg, variants):
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                          LOCAL_RANK=str(rank))
        import deepspeed
        from deepspeed.utils import logger
        logger.setLevel(logging.ERROR)
        from transformers import LlamaConfig, LlamaForCausalLM
        deepspeed.init_distributed(dist_backend="gloo", verbose=False)
        for name, (stage, bf16, tied, frozen) in variants.items():
            torch.manual_seed(0)
            m = LlamaForCausalLM(LlamaConfig(**cfg, tie_word_embeddings=tied))
            if frozen:
                m.model.norm.weight.requires_grad_(False)
            ds = {"train_batch_size": world, "steps_per_print": 10**6, "zero_optimization": {"stage": stage},
                  "optimizer": {"type": "AdamW", "params": {"lr": 1e-2, "torch_adam": True}}, "bf16": {"enabled": bf16}}
            eng, *_ = deepspeed.initialize(model=m, model_parameters=[p for p in m.parameters() if p.requires_grad],
                                           config=ds)
            g = torch.Generator().manual_seed(1 + rank)
            ids = torch.randint(0, cfg["vocab_size"], (1, 8), generator=g)
            eng.backward(eng(input_ids=ids, labels=ids).loss)
            eng.step()
            eng.save_checkpoint(os.path.join(out, name))
            if rank == 0:
                c = LlamaConfig(**cfg, tie_word_embeddings=tied)
                c.architectures = ["LlamaForCausalLM"]
                c.save_pretrained(os.path.join(out, name))

    if __name__ == "__main__":
        s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
        mp.start_processes(run, args=(2, sys.argv[1], port, eval(sys.argv[2]), eval(sys.argv[3])), nprocs=2, join=True,
                           start_method="fork")
''')


def write_zero_checkpoints(out: Path, *, cfg: dict | None = None, variants: dict | None = None,
                           timeout: float = 600) -> Path:
    """``out/<variant>/`` for each variant: DeepSpeed's own save (latest, global_step1/, zero_to_fp32.py) plus
    the model's config.json."""
    pytest.importorskip("deepspeed")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "DS_ACCELERATOR": "cpu"}
    r = subprocess.run([sys.executable, "-c", _SCRIPT, str(out), repr(cfg or TINY), repr(variants or VARIANTS)],
                       capture_output=True, text=True, timeout=timeout, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def oracle(folder: str | os.PathLike[str]) -> dict:
    """DeepSpeed's own consolidation of a ZeRO folder (zero_to_fp32), as plain tensors."""
    import contextlib
    import io

    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return dict(get_fp32_state_dict_from_zero_checkpoint(str(folder)))
