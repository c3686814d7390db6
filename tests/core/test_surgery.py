"""Training-time surgery (explorer.core.surgery): apply_plan on a real model — frozen parameters stay put through an
AdamW step, LR groups honour the scales — and reinit writes the same fresh values as export and init-check."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from explorer import apply_plan, load_plan
from explorer.core.errors import PlanError
from explorer.core.matching import report
from explorer.core.model import ModelSpec
from explorer.core.plan import Plan, save_plan
from explorer.core.fresh import fresh_tensor
from tests.helpers import save_tiny


@pytest.fixture(scope="module")
def minilm_plan(minilm) -> Plan:
    rep = report(minilm, ModelSpec(config=minilm, arch="BertForSequenceClassification"))
    return (
        Plan.from_report(rep)
        .with_rule("encoder.layer.[0-2]", trainable=False)
        .with_rule("embeddings", lr_scale=0.01)
        .with_rule("classifier", lr_scale=10)
    )


@pytest.fixture
def model(minilm):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    return BertForSequenceClassification(BertConfig.from_pretrained(minilm)).eval()


def test_freeze_and_lr_groups_through_an_adamw_step(minilm_plan, model, tmp_path):
    plan = load_plan(save_plan(minilm_plan, tmp_path / "p.json"))  # as a training script would
    groups = apply_plan(model, plan, lr=1e-3)
    by_scale = {g["lr_scale"]: g for g in groups}
    assert set(by_scale) == {10.0, 1.0, 0.01}
    assert by_scale[0.01]["lr"] == pytest.approx(1e-5)
    assert by_scale[10.0]["lr"] == pytest.approx(1e-2)
    assert set(by_scale[10.0]["param_names"]) == {"classifier.weight", "classifier.bias"}
    assert all(n.startswith("bert.embeddings.") for n in by_scale[0.01]["param_names"])
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith(("bert.encoder.layer.0.", "bert.encoder.layer.1.", "bert.encoder.layer.2.")) for n in frozen)
    assert len(frozen) == 3 * 16
    grouped = {n for g in groups for n in g["param_names"]}
    assert not grouped & frozen
    assert grouped | frozen == {n for n, _ in model.named_parameters()}

    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW(groups, lr=1e-3)
    ids = torch.randint(0, 1000, (2, 8))
    loss = model(input_ids=ids, labels=torch.tensor([0, 1])).loss
    loss.backward()
    opt.step()
    for n, p in model.named_parameters():
        if n in frozen:
            assert torch.equal(p, before[n]), n
            assert p.grad is None
    assert not torch.equal(model.classifier.weight, before["classifier.weight"])
    assert not torch.equal(model.bert.encoder.layer[3].output.dense.weight, before["bert.encoder.layer.3.output.dense.weight"])
    # AdamW's first step moves each weight by ~lr: the embedding group moved ~100x less than the encoder
    d_emb = (model.bert.embeddings.word_embeddings.weight - before["bert.embeddings.word_embeddings.weight"]).abs().max()
    d_enc = (model.bert.encoder.layer[3].output.dense.weight - before["bert.encoder.layer.3.output.dense.weight"]).abs().max()
    assert d_emb < d_enc / 20


def test_without_lr_no_lr_key_and_unfreeze_with_later_rule(minilm_plan, model):
    plan = minilm_plan.with_rule("encoder.layer.2", trainable=True)
    groups = apply_plan(model, plan)
    assert all("lr" not in g for g in groups)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert not any(".layer.2." in n for n in frozen) and any(".layer.1." in n for n in frozen)


def test_reinit_uses_the_models_own_init_seeded(minilm_plan, model):
    plan = minilm_plan.with_rule("bert.pooler", match="key", action="reinit")
    with torch.no_grad():
        model.classifier.weight.fill_(5.0)
        model.classifier.bias.fill_(5.0)
        model.bert.pooler.dense.weight.fill_(5.0)
    kept = model.bert.encoder.layer[0].output.dense.weight.detach().clone()
    apply_plan(model, plan, reinit=True, seed=7)
    assert torch.count_nonzero(model.classifier.bias) == 0
    assert 0.01 < model.classifier.weight.std().item() < 0.03
    assert 0.01 < model.bert.pooler.dense.weight.std().item() < 0.03
    assert torch.equal(model.bert.encoder.layer[0].output.dense.weight, kept)
    first = model.classifier.weight.detach().clone()
    apply_plan(model, plan, reinit=True, seed=7)
    assert torch.equal(model.classifier.weight, first)


def test_plain_module_reset_parameters():
    net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(3.0)
    plan = Plan(default_reinit=("2.weight", "2.bias")).with_rule("0", match="key", trainable=False)
    groups = apply_plan(net, plan, reinit=True, seed=0, lr=0.1)
    assert not torch.all(net[2].weight == 3.0)
    assert torch.all(net[0].weight == 3.0) and not net[0].weight.requires_grad
    assert groups[0]["param_names"] == ["2.weight", "2.bias"] and groups[0]["lr"] == 0.1


def test_plan_keys_the_model_lacks(minilm_plan):
    from transformers import BertConfig, BertModel

    cfg = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=100)
    with pytest.raises(PlanError, match=r"plan does not fit BertModel: the model has no key 'classifier.weight', 'classifier.bias'"):
        apply_plan(BertModel(cfg), minilm_plan)
    plan = Plan().with_rule("encoder.layer.[7-9]", trainable=False)
    with pytest.raises(PlanError, match=r"rule glob 'encoder.layer.\[7-9\]': freeze selects no key of the model"):
        apply_plan(BertModel(cfg), plan)


# ---- apply_plan(reinit=True, seed=s) writes the same fresh values as export and init-check (one fresh-init
# implementation), and never touches the kept weights.

@pytest.fixture(scope="module")
def src(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("src")
    save_tiny("bert", "BertModel", d)
    return d


def test_reinit_values_equal_fresh_tensor(src: Path) -> None:
    from transformers import BertForSequenceClassification

    spec = ModelSpec(config=str(src), arch="BertForSequenceClassification")
    plan = Plan.from_report(report(str(src), spec)).with_rule("bert.pooler.dense", match="key", action="reinit")
    model = BertForSequenceClassification.from_pretrained(str(src))
    kept = {n: p.detach().clone() for n, p in model.named_parameters() if not n.startswith(("classifier.", "bert.pooler."))}
    apply_plan(model, plan, reinit=True, seed=11)
    for key in ("classifier.weight", "classifier.bias", "bert.pooler.dense.weight", "bert.pooler.dense.bias"):
        assert model.get_parameter(key).detach().equal(fresh_tensor(spec, key, seed=11)), key
    for n, v in kept.items():
        assert model.get_parameter(n).detach().equal(v), n
    first = model.classifier.weight.detach().clone()
    apply_plan(model, plan, reinit=True, seed=12)
    assert not model.classifier.weight.detach().equal(first)
