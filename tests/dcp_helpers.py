"""DCP checkpoints written by torch itself, for the DCP tests: ``dcp.save(no_dist=True)`` of a tiny real Llama, a
real 2-rank FSDP2 run (gloo on loopback, ``fully_shard`` on CPU, in a subprocess), and hand-made folders built from
torch's own metadata classes (chunk grids FSDP never writes, and hostile layouts)."""
from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import torch

TINY_LLAMA = dict(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, tie_word_embeddings=False)


def tiny_llama(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    m = LlamaForCausalLM(LlamaConfig(**TINY_LLAMA))
    m.config.architectures = ["LlamaForCausalLM"]  # as save_pretrained records it
    return m


def save_no_dist(folder: Path, state: dict) -> Path:
    import torch.distributed.checkpoint as dcp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save(state, checkpoint_id=str(folder), no_dist=True)
    return folder


_FSDP_SCRIPT = textwrap.dedent('''
    import os, socket, sys, warnings
    warnings.simplefilter("ignore")
    import torch, torch.distributed as dist, torch.multiprocessing as mp
    from transformers import LlamaConfig, LlamaForCausalLM

    def run(rank, world, out, port, cfg, layout):
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world)
        from torch.distributed.fsdp import fully_shard
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict
        torch.manual_seed(0)
        m = LlamaForCausalLM(LlamaConfig(**cfg))
        for layer in m.model.layers:
            fully_shard(layer)
        fully_shard(m)
        opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
        g = torch.Generator().manual_seed(1)
        ids = torch.randint(0, cfg["vocab_size"], (2, 8), generator=g)
        m(ids, labels=ids).loss.backward()
        opt.step()
        msd, osd = get_state_dict(m, opt)
        dcp.save({"model": msd, "optim": osd} if layout == "nested" else msd, checkpoint_id=out)
        dist.destroy_process_group()

    if __name__ == "__main__":
        s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
        cfg = eval(sys.argv[2])
        # fork: the ranks inherit the imported transformers (spawn re-imports it twice, ~3x slower under load)
        mp.start_processes(run, args=(2, sys.argv[1], port, cfg, sys.argv[3]), nprocs=2, join=True, start_method="fork")
''')


def fsdp2_checkpoint(folder: Path, *, layout: str = "nested", timeout: float = 400) -> Path:
    """A real 2-rank FSDP2 training step of the tiny Llama, saved with DCP (``{"model", "optim"}`` or flat)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    r = subprocess.run([sys.executable, "-c", _FSDP_SCRIPT, str(folder), repr(TINY_LLAMA), layout],
                       capture_output=True, text=True, timeout=timeout, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    return folder


def handmade(folder: Path, tensors: dict[str, tuple[torch.Tensor, list[tuple[tuple[int, ...], tuple[int, ...]]]]],
             *, ranks: int = 2, objects: dict[str, object] | None = None) -> Path:
    """A DCP folder written the way FileSystemWriter writes one (a torch.save blob per chunk, metadata from torch's
    own classes), with any chunk grid: ``{fqn: (global tensor, [(offsets, sizes), ...])}``; chunk i goes to rank
    file i % ranks."""
    from torch.distributed.checkpoint.filesystem import _StorageInfo
    from torch.distributed.checkpoint.metadata import (BytesStorageMetadata, ChunkStorageMetadata, Metadata,
                                                       MetadataIndex, TensorProperties, TensorStorageMetadata)

    folder.mkdir(parents=True, exist_ok=True)
    files = [io.BytesIO() for _ in range(ranks)]
    sdm: dict = {}
    storage: dict = {}
    planner: dict = {}
    i = 0
    for fqn, obj in (objects or {}).items():
        f = files[0]
        off = f.tell()
        f.write(pickle.dumps(obj))
        sdm[fqn] = BytesStorageMetadata()
        storage[MetadataIndex(fqn)] = _StorageInfo(f"__0_0.distcp", off, f.tell() - off)
        planner[fqn] = tuple(fqn.split(".", 1)) if "." in fqn else (fqn,)
    for fqn, (t, chunks) in tensors.items():
        metas = []
        for offs, sizes in chunks:
            piece = t[tuple(slice(o, o + s) for o, s in zip(offs, sizes))].clone()
            r = i % ranks
            i += 1
            f = files[r]
            off = f.tell()
            torch.save(piece, f)
            metas.append(ChunkStorageMetadata(offsets=torch.Size(offs), sizes=torch.Size(sizes)))
            storage[MetadataIndex(fqn, torch.Size(offs), len(metas) - 1)] = _StorageInfo(f"__{r}_0.distcp", off, f.tell() - off)
        sdm[fqn] = TensorStorageMetadata(TensorProperties(dtype=t.dtype), t.shape, metas)
        planner[fqn] = tuple(fqn.split(".", 1)) if fqn.startswith(("model.", "optim.")) else (fqn,)
    for r, f in enumerate(files):
        (folder / f"__{r}_0.distcp").write_bytes(f.getvalue())
    md = Metadata(state_dict_metadata=sdm, planner_data=planner, storage_data=storage)
    (folder / ".metadata").write_bytes(pickle.dumps(md))
    return folder
