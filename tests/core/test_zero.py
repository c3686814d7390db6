"""DeepSpeed ZeRO folders (stages 1-3) written by DeepSpeed itself over 2 ranks: the index from the model-states and
optimizer pickles (restricted unpickler, no DeepSpeed import), values, the match, stats and the streamed export —
against DeepSpeed's own zero_to_fp32 and transformers' from_pretrained. Bad input: truncated, hostile, incomplete
and inconsistent folders."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from explorer.core.checkpoint import TensorReader, open_checkpoint
from explorer.core.convert import convert_checkpoint
from explorer.core.errors import CheckpointError
from explorer.core.matching import report
from explorer.core.model import ModelSpec
from explorer.core.stats import tensor_stats
from tests.helpers import read_error
from tests.zero_helpers import VARIANTS, oracle

pytest.importorskip("deepspeed")


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_index_and_values_equal_zero_to_fp32(zero_checkpoints, variant):
    folder = zero_checkpoints[variant]
    stage = VARIANTS[variant][0]
    want = oracle(folder)
    ix = open_checkpoint(folder)
    assert ix.format == "deepspeed-zero" and ix.metadata["zero.stage"] == str(stage)
    assert ix.metadata["zero.world_size"] == "2" and any("optimizer moments are not shown" in n for n in ix.notes)
    assert list(ix.tensors) == list(want)  # same names, same order as zero_to_fp32
    with TensorReader(ix) as r:
        for n, v in want.items():
            assert ix.tensors[n].shape == tuple(v.shape) and ix.tensors[n].dtype == str(v.dtype)[6:], n
            assert torch.equal(r.tensor(n), v), n
            assert torch.equal(torch.cat(list(r.iter_chunks(n, chunk_elems=100))), v.reshape(-1)), n
        s = tensor_stats(r, "model.layers.0.mlp.down_proj.weight", bins=16)
    v = want["model.layers.0.mlp.down_proj.weight"].double()
    assert s.numel == v.numel() and s.min == v.min().item() and s.max == v.max().item()
    assert s.mean == pytest.approx(v.mean().item(), rel=1e-12) and sum(s.counts) == v.numel()
    # the parameters really are spread over both ranks' optimizer files
    lay = ix.layout
    assert {p.file for t in lay.tensors.values() for p in t.pieces} >= {f for f in ix.files if "optim_states" in f}


def test_tag_folder_opens_too_and_no_deepspeed_is_imported(zero_checkpoints):
    folder = zero_checkpoints["z3"]
    code = ("import sys; from explorer.core.checkpoint import open_checkpoint; ix = open_checkpoint(sys.argv[1]); "
            "assert 'deepspeed' not in sys.modules, 'deepspeed imported'; print(len(ix.tensors))")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    r = subprocess.run([sys.executable, "-c", code, str(folder / "global_step1")], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert int(r.stdout) == len(oracle(folder))


@pytest.mark.parametrize("variant", ["z2", "z3"])
def test_report_against_config_is_clean(zero_checkpoints, variant):
    folder = zero_checkpoints[variant]
    rep = report(folder, ModelSpec(config=str(folder)))
    assert rep.is_clean, (rep.missing, rep.unexpected, rep.mismatched)


@pytest.mark.parametrize("variant", ["z1", "z3"])
def test_export_equals_zero_to_fp32_and_loads_clean(zero_checkpoints, variant, tmp_path):
    from safetensors.torch import load_file
    from transformers import LlamaForCausalLM

    folder = zero_checkpoints[variant]
    want = oracle(folder)
    res = convert_checkpoint(folder, tmp_path / "hf", max_shard_size=40_000)
    assert res.source_format == "deepspeed-zero" and (tmp_path / "hf" / "model.safetensors.index.json").is_file()
    assert (tmp_path / "hf" / "config.json").is_file()
    got = {}
    for f in sorted((tmp_path / "hf").glob("model-*.safetensors")):
        got.update(load_file(f))
    assert set(got) == set(want)
    assert all(torch.equal(got[n], v) for n, v in want.items())
    m, info = LlamaForCausalLM.from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    for n, v in m.state_dict().items():
        assert torch.equal(v, want[n]), n


def test_export_with_plan_casts_to_bf16(zero_checkpoints, tmp_path):
    from safetensors import safe_open

    from explorer.core.export import export_checkpoint
    from explorer.core.plan import Plan

    folder = zero_checkpoints["z2"]
    want = oracle(folder)
    res = export_checkpoint(folder, Plan(config=str(folder)), tmp_path / "hf", dtype="bf16")
    assert res.is_clean
    with safe_open(tmp_path / "hf" / "model.safetensors", "pt") as f:
        for n in f.keys():
            assert torch.equal(f.get_tensor(n), want[n].to(torch.bfloat16)), n


# --------------------------------------------------------------------------------------------- bad input


def _copy(zero_checkpoints, tmp_path, variant="z1") -> Path:
    dst = tmp_path / variant
    shutil.copytree(zero_checkpoints[variant], dst)
    return dst


_err = read_error


def test_truncated_model_states(zero_checkpoints, tmp_path):
    f = _copy(zero_checkpoints, tmp_path)
    ms = f / "global_step1" / "mp_rank_00_model_states.pt"
    for keep in (ms.stat().st_size // 2, 100, 0):
        with open(ms, "r+b") as fh:
            fh.truncate(keep)
        msg = _err(f)
        assert str(ms) in msg and ("truncated" in msg or "empty" in msg), msg


def test_truncated_optimizer_partition(zero_checkpoints, tmp_path):
    f = _copy(zero_checkpoints, tmp_path, "z3")
    os1 = f / "global_step1" / "zero_pp_rank_1_mp_rank_00_optim_states.pt"
    raw = os1.read_bytes()
    os1.write_bytes(raw[: len(raw) - 2000])
    msg = _err(f)
    assert str(os1) in msg, msg


class _Evil:
    marker = ""

    def __reduce__(self):
        return (os.system, (f"touch {_Evil.marker}",))


@pytest.mark.parametrize("which", ["model", "optim"])
def test_forbidden_global_is_refused_never_run(zero_checkpoints, tmp_path, which):
    f = _copy(zero_checkpoints, tmp_path)
    marker = tmp_path / "pwned"
    _Evil.marker = str(marker)
    d = f / "global_step1"
    path = d / ("mp_rank_00_model_states.pt" if which == "model" else "zero_pp_rank_1_mp_rank_00_optim_states.pt")
    obj = torch.load(path, weights_only=False)  # the test's own file
    obj["client_state_evil"] = _Evil()
    torch.save(obj, path)
    msg = _err(f)
    assert "refused to unpickle" in msg and "GLOBAL posix.system" in msg and str(path) in msg
    assert not marker.exists()


def test_missing_rank_file(zero_checkpoints, tmp_path):
    f = _copy(zero_checkpoints, tmp_path)
    gone = f / "global_step1" / "zero_pp_rank_1_mp_rank_00_optim_states.pt"
    gone.unlink()
    msg = _err(f)
    assert str(gone) in msg and "missing" in msg
    f3 = _copy(zero_checkpoints, tmp_path, "z3")
    gone = f3 / "global_step1" / "zero_pp_rank_1_mp_rank_00_model_states.pt"
    gone.unlink()
    msg = _err(f3)
    assert str(gone) in msg and "missing" in msg


@pytest.mark.parametrize("variant", ["z1", "z3"])
def test_partition_sizes_disagreeing_with_shapes(zero_checkpoints, tmp_path, variant):
    f = _copy(zero_checkpoints, tmp_path, variant)
    d = f / "global_step1"
    path = next(d.glob("*mp_rank_00_model_states.pt")) if variant == "z1" else d / "zero_pp_rank_0_mp_rank_00_model_states.pt"
    obj = torch.load(path, weights_only=False)
    shapes = obj["param_shapes"][0]
    name = "model.layers.0.mlp.up_proj.weight"
    shapes[name] = torch.Size([shapes[name][0] * 2, shapes[name][1]])  # a shape the partitions cannot hold
    torch.save(obj, path)
    msg = _err(f)
    assert str(path) in msg and "disagree with the partitions" in msg, msg


def test_latest_naming_something_else(zero_checkpoints, tmp_path):
    f = _copy(zero_checkpoints, tmp_path)
    (f / "latest").write_text("../../etc")
    assert "not a tag folder" in _err(f)
    (f / "latest").write_text("global_step9")
    assert "is not a folder" in _err(f)


def test_a_rank_file_opens_its_folder(zero_checkpoints):
    folder = zero_checkpoints["z3"] / "global_step1"
    for f in (folder / "zero_pp_rank_1_mp_rank_00_optim_states.pt", folder / "zero_pp_rank_0_mp_rank_00_model_states.pt"):
        ix = open_checkpoint(f)
        assert ix.format == "deepspeed-zero" and f.name in ix.notes[0]
        assert list(ix.tensors) == list(oracle(zero_checkpoints["z3"]))


def test_diff_against_its_export_streams_across_rank_boundaries(zero_checkpoints, tmp_path):
    from safetensors.torch import load_file, save_file

    from explorer.core.diff import DiffStatus, diff_checkpoints

    folder = zero_checkpoints["z3"]
    convert_checkpoint(folder, tmp_path / "hf")
    entries = diff_checkpoints(folder, tmp_path / "hf", chunk_elems=1000)
    assert entries and all(e.status is DiffStatus.SAME for e in entries)
    sd = load_file(tmp_path / "hf" / "model.safetensors")
    name = "model.layers.0.mlp.up_proj.weight"
    sd[name] = sd[name] * 1.5
    save_file(sd, tmp_path / "hf" / "model.safetensors")
    changed = {e.name: e for e in diff_checkpoints(folder, tmp_path / "hf", chunk_elems=1000)
               if e.status is not DiffStatus.SAME}
    assert list(changed) == [name] and changed[name].rel_change == pytest.approx(0.5, rel=1e-6)


def test_trainer_folder_with_gathered_weights_reads_them(zero_checkpoints, tmp_path):
    """An HF Trainer checkpoint-N/ holds model.safetensors beside latest/global_stepN: from_pretrained reads the
    safetensors, and so does the folder here; the tag folder still opens the ZeRO state."""
    from safetensors.torch import save_file

    f = _copy(zero_checkpoints, tmp_path, "z1")
    want = oracle(f)
    save_file({k: v.detach().contiguous() for k, v in want.items()}, f / "model.safetensors")
    assert open_checkpoint(f).format == "safetensors"
    assert open_checkpoint(f / "global_step1").format == "deepspeed-zero"
