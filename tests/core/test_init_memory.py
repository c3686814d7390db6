"""The init check's memory is bounded by the largest tensor, not by the checkpoint (issue 10 finding 6: "Looks
untrained" on the 70B peaked at 8.8 GB): the fresh init is made once per module without copies, the comparison
makes no full-size float32 copy, and the mapped pages of each tensor are dropped once it is checked."""
from __future__ import annotations

import json
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ROWS, COLS = 8192, 4096  # 32M float32 values: 128 MiB per tensor


def _sparse_safetensors(path: Path, names: list[str]) -> None:
    """A safetensors file whose data region is a hole: headers only, as benchmarks/make_sparse_checkpoints.py."""
    nbytes = ROWS * COLS * 4
    header = {n: {"dtype": "F32", "shape": [ROWS, COLS], "data_offsets": [i * nbytes, (i + 1) * nbytes]}
              for i, n in enumerate(names)}
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        f.truncate(8 + len(raw) + nbytes * len(names))


def test_init_check_peak_memory_is_about_one_tensor(tmp_path: Path) -> None:
    (tmp_path / "bigmod.py").write_text(textwrap.dedent(f"""
        import torch
        class Big(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.a = torch.nn.Linear({COLS}, {ROWS}, bias=False)
                self.b = torch.nn.Linear({COLS}, {ROWS}, bias=False)
        class Tiny(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.a = torch.nn.Linear(4, 4, bias=False)
    """))
    from safetensors.torch import save_file
    import torch

    save_file({"a.weight": torch.zeros(4, 4)}, str(tmp_path / "tiny.safetensors"))
    f = tmp_path / "big.safetensors"
    _sparse_safetensors(f, ["a.weight", "b.weight"])
    child = textwrap.dedent(f"""
        import json, resource, sys
        sys.path.insert(0, {str(tmp_path)!r})
        import torch
        torch.set_num_threads(1)
        from explorer.core.fresh import init_check
        from explorer.core.model import ModelSpec
        init_check({str(tmp_path / "tiny.safetensors")!r}, ModelSpec(model="bigmod:Tiny"))  # imports, caches
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        res = init_check({str(f)!r}, ModelSpec(model="bigmod:Big"))
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({{"delta_kib": after - before, "kinds": [r.kind for r in res], "untrained": [r.init_like for r in res]}}))
    """)
    r = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=600, cwd=ROOT,
                       env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["kinds"] == ["random", "random"] and out["untrained"] == [False, False]  # all-zero holes vs kaiming
    tensor_kib = ROWS * COLS * 4 // 1024
    # the fresh init of one tensor plus the pages of the one being compared; before: ~4x (sentinel copy, clone,
    # temporaries) plus every page ever touched
    assert out["delta_kib"] < 2.5 * tensor_kib, (out["delta_kib"] / tensor_kib)


def test_a_piece_of_a_fused_tensor_is_not_compared_with_the_whole_fused_init(tmp_path: Path) -> None:
    # issue 10 finding 6: a per-expert tensor's check built the fresh init of every expert (the fused tensor)
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    from explorer.core.fresh import init_check
    from tests.core.test_matching_oracle import _mixtral_legacy
    from tests.helpers import save_tiny

    save_tiny("mixtral", "MixtralForCausalLM", tmp_path / "fused")
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    shutil.copy(tmp_path / "fused" / "config.json", legacy / "config.json")
    save_file(_mixtral_legacy(load_file(tmp_path / "fused" / "model.safetensors")), str(legacy / "model.safetensors"))
    res = {r.name: r for r in init_check(legacy)}
    piece = res["model.layers.0.block_sparse_moe.experts.2.w3.weight"]
    assert piece.kind == "random" and piece.key == "model.layers.0.mlp.experts.gate_up_proj"  # checked, not skipped
    from explorer.core.fresh import FreshInit
    from explorer.core.model import ModelSpec, build_model

    built = build_model(ModelSpec(config=str(legacy)))
    fused = built.module.get_submodule("model.layers.0.mlp.experts").gate_up_proj
    one = FreshInit(built).piece(piece.key, 1)  # what it is compared with: one expert's values, not every expert's
    assert one.numel() * fused.shape[0] == fused.numel() and fused.shape[0] > 1
    assert res["model.layers.0.self_attn.q_proj.weight"].kind == "random"
    assert torch.is_tensor(load_file(legacy / "model.safetensors")["model.layers.0.block_sparse_moe.experts.2.w3.weight"])


def test_the_model_build_and_the_init_check_stop_when_cancelled(tmp_path: Path) -> None:
    # issue 10 finding 5: closing during the 70B's init check left its worker building and matching for 12 s
    import pytest

    from explorer.core.errors import Cancelled
    from explorer.core.fresh import init_check
    from explorer.core.model import ModelSpec, build_model
    from tests.helpers import save_tiny

    d = tmp_path / "llama"
    save_tiny("llama", "LlamaForCausalLM", d, num_hidden_layers=24)
    polls: list[int] = []

    def cancel() -> bool:
        polls.append(1)
        return len(polls) > 40

    with pytest.raises(Cancelled):
        build_model(ModelSpec(config=str(d)), cancel=cancel)
    assert len(polls) == 41  # stopped at the first module registered after the request, not at the end
    polls.clear()
    with pytest.raises(Cancelled):
        init_check(d, cancel=cancel)
    assert len(polls) == 41
