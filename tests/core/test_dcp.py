"""torch.distributed.checkpoint folders: the index from .metadata alone, values assembled from chunks, the match,
the streamed export — against torch's own dcp_to_torch_save / dcp.load and transformers' from_pretrained."""
from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path

import pytest
import torch

from explorer.core.checkpoint import TensorReader, open_checkpoint
from explorer.core.convert import convert_checkpoint
from explorer.core.errors import CheckpointError, ExportError
from explorer.core.matching import report
from explorer.core.model import ModelSpec
from explorer.core.stats import tensor_stats
from tests.dcp_helpers import fsdp2_checkpoint, handmade, save_no_dist, tiny_llama
from tests.helpers import read_error


def _flat(obj, prefix=""):
    out = {}
    for k, v in obj.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        elif isinstance(v, torch.Tensor):
            out[f"{prefix}{k}"] = v
    return out


def _torch_consolidated(folder: Path, tmp: Path) -> dict:
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    out = tmp / f"{folder.name}-oracle.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp_to_torch_save(str(folder), str(out))
    return torch.load(out, weights_only=True)


@pytest.fixture(scope="module")
def fsdp(tmp_path_factory):
    """A real 2-rank FSDP2 step saved with DCP ({"model", "optim"}), its config.json beside, and torch's oracle."""
    root = tmp_path_factory.mktemp("fsdp")
    ck = fsdp2_checkpoint(root / "ckpt")
    tiny_llama().config.save_pretrained(root / "cfg")
    return ck, root / "cfg", _torch_consolidated(ck, root)


# --------------------------------------------------------------------------------------------- index + values


def test_no_dist_save_indexes_from_metadata_alone(tmp_path):
    model = tiny_llama()
    sd = model.state_dict()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.arange(8)[None], labels=torch.arange(8)[None]).loss.backward()
    opt.step()
    folder = save_no_dist(tmp_path / "ck", {"model": sd, "optim": opt.state_dict(), "step": 3})
    model.config.save_pretrained(folder)
    # zero every rank file: indexing must not need a byte of tensor data
    saved = {}
    for f in folder.glob("*.distcp"):
        saved[f] = f.read_bytes()
        f.write_bytes(bytes(len(saved[f])))
    ix = open_checkpoint(folder)
    assert ix.format == "dcp" and ix.wrapper_key == "model" and set(ix.wrapper_candidates) == {"model", "optim"}
    assert {n: (t.shape, t.dtype) for n, t in ix.tensors.items()} == {
        n: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for n, v in sd.items()}
    assert any("'optim': optimizer state, not model weights" in n for n in ix.notes)
    assert any("step" in n and "non-tensor" in n for n in ix.notes)
    with TensorReader(ix) as r, pytest.raises(CheckpointError, match=r"__0_0\.distcp.*not a torch.save blob"):
        r.tensor("lm_head.weight")
    for f, b in saved.items():
        f.write_bytes(b)
    with TensorReader(open_checkpoint(folder)) as r:
        for n, v in sd.items():
            assert torch.equal(r.tensor(n), v), n
    rep = report(folder, ModelSpec(config=str(folder)))
    assert rep.is_clean and rep.counts()["matched"] == len(sd)


def test_fsdp2_two_ranks_index_and_values_equal_torch(fsdp):
    ck, _, ref = fsdp
    ix = open_checkpoint(ck)
    assert len(ix.files) == 2 and ix.format == "dcp"
    want = ref["model"]
    assert list(ix.tensors) == list(want)
    sharded = [n for n in ix.tensors if len(ix.layout.tensors[n].chunks) == 2]
    assert sharded, "FSDP2 should split the weights over both ranks"
    with TensorReader(ix) as r:
        for n, v in want.items():
            assert ix.tensors[n].shape == tuple(v.shape) and ix.tensors[n].dtype == str(v.dtype)[6:]
            assert torch.equal(r.tensor(n), v), n
            assert torch.equal(torch.cat(list(r.iter_chunks(n, chunk_elems=100))), v.reshape(-1)), n
        s = tensor_stats(r, "model.layers.0.mlp.down_proj.weight", bins=16)
    v = want["model.layers.0.mlp.down_proj.weight"].double()
    assert s.numel == v.numel() and s.min == v.min().item() and s.max == v.max().item()
    assert s.mean == pytest.approx(v.mean().item(), rel=1e-12) and sum(s.counts) == v.numel()
    # the optimizer sub-tree, shown as what it is
    io = open_checkpoint(ck, wrapper="optim")
    flat = _flat(ref["optim"])
    assert set(io.tensors) == set(flat) and any(n.endswith("exp_avg_sq") for n in io.tensors)
    with TensorReader(io) as r:
        assert all(torch.equal(r.tensor(n), flat[n]) for n in io.tensors)


def test_fsdp2_report_against_config_is_clean(fsdp):
    ck, cfg, _ = fsdp
    rep = report(ck, ModelSpec(config=str(cfg)))
    assert rep.is_clean, (rep.missing, rep.unexpected)
    assert rep.counts()["matched"] == len(open_checkpoint(ck).tensors)


def test_fsdp2_export_equals_dcp_to_torch_save_and_loads_clean(fsdp, tmp_path):
    from safetensors.torch import load_file
    from transformers import LlamaForCausalLM

    ck, cfg, ref = fsdp
    res = convert_checkpoint(ck, tmp_path / "hf", config=cfg, max_shard_size=40_000)
    assert (tmp_path / "hf" / "model.safetensors.index.json").is_file() and len(res.files) > 3
    got = {}
    for f in sorted((tmp_path / "hf").glob("model-*.safetensors")):
        got.update(load_file(f))
    assert set(got) == set(ref["model"])
    for n, v in ref["model"].items():
        assert torch.equal(got[n], v), n
    m, info = LlamaForCausalLM.from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    for n, v in m.state_dict().items():
        assert torch.equal(v, ref["model"][n]), n


def test_fsdp2_diff_against_its_export_is_all_same(fsdp, tmp_path):
    from explorer.core.diff import DiffStatus, diff_checkpoints

    ck, cfg, _ = fsdp
    convert_checkpoint(ck, tmp_path / "hf", config=cfg)
    entries = diff_checkpoints(ck, tmp_path / "hf", chunk_elems=1000)  # rank chunks vs fixed pieces
    assert len(entries) == len(open_checkpoint(ck).tensors) and all(e.status is DiffStatus.SAME for e in entries)


def test_fsdp2_export_with_plan_casts_and_drops(fsdp, tmp_path):
    from safetensors import safe_open

    from explorer.core.export import export_checkpoint
    from explorer.core.plan import Plan

    ck, cfg, ref = fsdp
    rep = report(ck, ModelSpec(config=str(cfg)))
    plan = Plan.from_report(rep).with_rule("model.layers.1.*", action="reinit")
    res = export_checkpoint(ck, plan, tmp_path / "bf16", dtype="bf16")
    assert res.is_clean
    with safe_open(str(tmp_path / "bf16" / "model.safetensors"), "pt") as f:
        w = f.get_tensor("model.layers.0.self_attn.q_proj.weight")
        assert w.dtype == torch.bfloat16
        assert torch.equal(w, ref["model"]["model.layers.0.self_attn.q_proj.weight"].to(torch.bfloat16))
        assert not torch.equal(f.get_tensor("model.layers.1.mlp.up_proj.weight"),
                               ref["model"]["model.layers.1.mlp.up_proj.weight"].to(torch.bfloat16))


def test_chunk_grid_assembled_like_torch_dcp_load(tmp_path):
    import torch.distributed.checkpoint as dcp

    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 8, generator=g)
    b = torch.arange(10, dtype=torch.int32)
    grid = [((0, 0), (3, 5)), ((0, 5), (3, 3)), ((3, 0), (3, 5)), ((3, 5), (3, 3))]
    folder = handmade(tmp_path / "grid", {"w": (w, grid), "b": (b, [((0,), (4,)), ((4,), (6,))])}, objects={"step": 5})
    ix = open_checkpoint(folder)
    assert list(ix.tensors) == ["w", "b"] and any("step" in n for n in ix.notes)
    oracle = {"w": torch.zeros(6, 8), "b": torch.zeros(10, dtype=torch.int32)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.load(oracle, checkpoint_id=str(folder), no_dist=True)
    with TensorReader(ix) as r:
        assert torch.equal(r.tensor("w"), oracle["w"]) and torch.equal(r.tensor("w"), w)
        assert torch.equal(torch.cat(list(r.iter_chunks("w", chunk_elems=7))), w.reshape(-1))
        assert torch.equal(torch.cat(list(r.iter_chunks("b", chunk_elems=3))), oracle["b"])


def test_flat_model_state_dict_top_level(tmp_path):
    sd = tiny_llama().state_dict()
    folder = save_no_dist(tmp_path / "flat", dict(sd))
    ix = open_checkpoint(folder)
    assert ix.wrapper_key is None and set(ix.tensors) == set(sd)


# --------------------------------------------------------------------------------------------- bad input


def _real(tmp_path) -> Path:
    return handmade(tmp_path / "ck", {"model.w": (torch.randn(4, 3), [((0, 0), (2, 3)), ((2, 0), (2, 3))])})


_err = read_error


def test_truncated_metadata(tmp_path):
    f = _real(tmp_path)
    raw = (f / ".metadata").read_bytes()
    (f / ".metadata").write_bytes(raw[: len(raw) // 2])
    msg = _err(f)
    assert msg.startswith(str(f / ".metadata")) and "corrupt DCP metadata" in msg


class _Evil:
    marker = ""

    def __reduce__(self):
        return (os.system, (f"touch {_Evil.marker}",))


def test_forbidden_global_is_refused_never_run(tmp_path):
    f = _real(tmp_path)
    marker = tmp_path / "pwned"
    _Evil.marker = str(marker)
    from torch.distributed.checkpoint.metadata import Metadata

    md = pickle.loads((f / ".metadata").read_bytes())
    assert isinstance(md, Metadata)
    md.planner_data["model.w"] = _Evil()  # hidden deep inside an otherwise real metadata
    (f / ".metadata").write_bytes(pickle.dumps(md))
    msg = _err(f)
    assert "refused to unpickle" in msg and "GLOBAL posix.system" in msg and str(f / ".metadata") in msg
    assert not marker.exists()
    for evil in (b"cbuiltins\neval\n(S'1'\ntR.", b"ctorch\nload\n(S'x'\ntR.", b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR."):
        (f / ".metadata").write_bytes(evil)
        assert "refused to unpickle" in _err(f)
    assert not marker.exists()


def test_missing_rank_file(tmp_path):
    f = _real(tmp_path)
    (f / "__1_0.distcp").unlink()
    msg = _err(f)
    assert msg.startswith(str(f / "__1_0.distcp")) and "missing" in msg


def test_chunk_past_end_of_file(tmp_path):
    f = _real(tmp_path)
    p = f / "__1_0.distcp"
    p.write_bytes(p.read_bytes()[:-10])
    msg = _err(f)
    assert msg.startswith(str(p)) and "past the end of the file" in msg


def _rewrite(f: Path, edit) -> None:
    md = pickle.loads((f / ".metadata").read_bytes())
    edit(md)
    (f / ".metadata").write_bytes(pickle.dumps(md))


def test_overlapping_and_incomplete_chunks(tmp_path):
    from torch.distributed.checkpoint.metadata import ChunkStorageMetadata, MetadataIndex

    f = _real(tmp_path)

    def overlap(md):
        tsm = md.state_dict_metadata["model.w"]
        tsm.chunks[1] = ChunkStorageMetadata(offsets=torch.Size([1, 0]), sizes=torch.Size([2, 3]))
        old = MetadataIndex("model.w", torch.Size([2, 0]), 1)
        info = next(v for k, v in md.storage_data.items() if k.fqn == "model.w" and tuple(k.offset) == (2, 0))
        md.storage_data = {k: v for k, v in md.storage_data.items() if k != old}
        md.storage_data[MetadataIndex("model.w", torch.Size([1, 0]), 1)] = info

    _rewrite(f, overlap)
    msg = _err(f)
    assert msg.startswith(str(f / ".metadata")) and "overlap" in msg and "'model.w'" in msg

    g = _real(tmp_path / "b")
    _rewrite(g, lambda md: md.state_dict_metadata["model.w"].chunks.pop())
    assert "chunks hold 6 of its 12 elements" in _err(g)

    h = _real(tmp_path / "c")

    def escape(md):
        for v in md.storage_data.values():
            v.relative_path = "../../etc/passwd"

    _rewrite(h, escape)
    assert "not a file in the checkpoint folder" in _err(h)


def test_two_items_sharing_bytes(tmp_path):
    f = handmade(tmp_path / "ck", {"model.a": (torch.randn(3), [((0,), (3,))]), "model.b": (torch.randn(3), [((0,), (3,))])},
                 ranks=1)

    def share(md):
        a = next(v for k, v in md.storage_data.items() if k.fqn == "model.a")
        for k, v in md.storage_data.items():
            if k.fqn == "model.b":
                v.offset = a.offset + 8

    _rewrite(f, share)
    msg = _err(f)
    assert msg.startswith(str(f / "__0_0.distcp")) and "overlap" in msg


def test_blob_disagreeing_with_metadata(tmp_path):
    f = _real(tmp_path)
    _rewrite(f, lambda md: setattr(md.state_dict_metadata["model.w"].properties, "dtype", torch.float64))
    assert "has 1" in _err(f) or "the metadata says" in _err(f)


def test_convert_refuses_output_inside_source(tmp_path):
    f = _real(tmp_path)
    with pytest.raises(ExportError, match="inside the source"):
        convert_checkpoint(f, f / "out")
