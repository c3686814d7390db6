"""apply_plan(reinit=True, seed=s) writes the same fresh values as export and init-check (one fresh-init
implementation), and never touches the kept weights."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from explorer.core.fresh import fresh_tensor
from explorer.core.matching import report
from explorer.core.model import ModelSpec
from explorer.core.plan import Plan
from explorer.core.surgery import apply_plan
from tests.helpers import save_tiny


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
