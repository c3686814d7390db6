"""Fresh init and "looks untrained" on the real MiniLM and variants with tensors replaced by its own init."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from explorer.core.errors import ConfigError
from explorer.core.fresh import FreshInit, compare_to_init, init_check, ks_2samp
from explorer.core.model import ModelSpec, build_model
from explorer.core.jobs import Cancelled

Q = "encoder.layer.3.attention.self.query.weight"
B = "encoder.layer.3.attention.self.query.bias"
LN = "encoder.layer.1.output.LayerNorm.weight"
TT = "embeddings.token_type_embeddings.weight"
WE = "embeddings.word_embeddings.weight"


@pytest.fixture(scope="module")
def built(minilm: str):
    return build_model(ModelSpec(config=minilm))


@pytest.fixture(scope="module")
def trained(minilm: str):
    return {r.name: r for r in init_check(minilm)}


def test_fresh_init_is_the_models_own_and_seeded(built) -> None:
    fi = FreshInit(built, seed=0)
    q = fi.tensor(Q)
    assert q.shape == (384, 384) and q.dtype == torch.float32
    assert float(q.std()) == pytest.approx(0.02, rel=0.02)  # BERT _init_weights: normal(0, initializer_range)
    assert torch.equal(fi.tensor(B), torch.zeros(384)) and torch.equal(fi.tensor(LN), torch.ones(384))
    assert torch.equal(FreshInit(built, seed=0).tensor(Q), q)
    assert not torch.equal(FreshInit(built, seed=1).tensor(Q), q)
    we = fi.tensor(WE)
    assert torch.equal(we[0], torch.zeros(384))  # padding_idx row zeroed, as _init_weights does
    assert torch.equal(fi.tensor("embeddings.position_ids"), torch.arange(512).reshape(1, 512))
    # the shared meta model is left untouched
    assert built.module.get_submodule("encoder.layer.3.attention.self.query").weight.is_meta
    with pytest.raises(ConfigError, match="no parameter or buffer named 'encoder.nope.weight'"):
        fi.tensor("encoder.nope.weight")


def test_plain_module_uses_reset_parameters() -> None:
    built = build_model(ModelSpec(model="torch.nn:Linear", model_kwargs={"in_features": 100, "out_features": 50}))
    w = FreshInit(built, seed=0).tensor("weight")
    bound = 1 / 10  # kaiming_uniform(a=sqrt(5)) -> U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert w.shape == (50, 100) and float(w.abs().max()) <= bound and float(w.abs().max()) > 0.9 * bound


def test_trained_minilm_is_not_flagged_except_what_sits_at_init(trained) -> None:
    flagged = sorted(n for n, r in trained.items() if r.init_like)
    # the one tensor of the released checkpoint that genuinely never left its init
    assert flagged == ["pooler.dense.bias"]
    assert trained[Q].kind == "random" and trained[Q].score < 1e-6 and trained[Q].ks > 0.1
    assert trained[TT].score < 1e-3  # smallest random tensor (768 values), still rejected
    assert trained[LN].kind == "constant" and trained[LN].score == 0.0
    assert trained["embeddings.position_ids"].kind == "skipped"


def test_tensors_replaced_by_fresh_init_are_flagged(minilm: str, built, tmp_path: Path) -> None:
    sd = load_file(str(Path(minilm) / "model.safetensors"))
    fi = FreshInit(built, seed=123)  # another seed than the check uses
    for k in (Q, B, LN, TT, WE):
        sd[k] = fi.tensor(k).clone()
    save_file(sd, tmp_path / "model.safetensors")
    shutil.copy(Path(minilm) / "config.json", tmp_path / "config.json")
    seen = []
    res = {r.name: r for r in init_check(str(tmp_path), progress=lambda d, t: seen.append((d, t)))}
    assert sorted(n for n, r in res.items() if r.init_like) == sorted([Q, B, LN, TT, WE, "pooler.dense.bias"])
    assert res[Q].score > 1e-3 and res[Q].ks < 0.02
    assert seen[-1] == (104, 104)


def test_bf16_copy_of_a_fresh_tensor_is_still_flagged(minilm: str, built) -> None:
    from explorer.core.checkpoint import TensorReader, open_checkpoint

    fresh = FreshInit(built, seed=0).tensor(Q)
    other = FreshInit(built, seed=7).tensor(Q).to(torch.bfloat16).reshape(-1)
    assert compare_to_init(Q, Q, other, fresh).init_like
    with TensorReader(open_checkpoint(minilm)) as r:
        trained = r.flat(Q).to(torch.bfloat16)
    assert not compare_to_init(Q, Q, trained, fresh).init_like


def test_cancel_stops_between_tensors(minilm: str) -> None:
    n = []
    with pytest.raises(Cancelled):
        init_check(minilm, progress=lambda d, t: n.append(d), cancel=lambda: len(n) >= 3)
    assert n == [1, 2, 3]


def test_ks_statistic_matches_definition() -> None:
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert ks_2samp(x, x)[0] == 0.0
    d, p = ks_2samp(x, x + 10)
    assert d == 1.0 and p < 0.05


def test_the_verdict_does_not_depend_on_torchs_thread_count() -> None:
    # a worker thread runs torch on one intra-op thread, the caller's thread on all of them: torch's float64 std
    # summed in per-thread pieces and the last bits of `checkpoint_std` differed between 1 and 2 workers
    import torch

    from explorer.core.fresh import compare_to_init

    g = torch.Generator().manual_seed(0)
    values = torch.randn(400_000, generator=g) * 0.02 + 0.003
    fresh = torch.randn(400_000, generator=g) * 0.02
    before = torch.get_num_threads()
    out = []
    try:
        for n in (1, 2, 4):
            torch.set_num_threads(n)
            out.append(compare_to_init("w", "w", values, fresh).to_json())
    finally:
        torch.set_num_threads(before)
    assert out[0] == out[1] == out[2]
