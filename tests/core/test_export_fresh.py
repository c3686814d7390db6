"""Export, init-check and the GUI overlay share one fresh-init implementation (explorer.core.fresh.FreshInit):
an exported re-initialised tensor is exactly fresh_tensor(spec, key, seed=...) and init_check flags it."""
from __future__ import annotations

from pathlib import Path

import pytest
from safetensors.torch import load_file

from explorer.core.errors import ExportError
from explorer.core.export import export_checkpoint
from explorer.core.fresh import fresh_tensor, init_check
from explorer.core.matching import report
from explorer.core.model import ModelSpec
from explorer.core.plan import Plan
from tests.helpers import save_tiny


@pytest.fixture(scope="module")
def src(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("src")
    save_tiny("bert", "BertModel", d)
    return d


def test_exported_reinit_equals_fresh_tensor_and_is_flagged(src: Path, tmp_path: Path) -> None:
    spec = ModelSpec(config=str(src), arch="BertForSequenceClassification")
    plan = Plan.from_report(report(str(src), spec)).with_rule("bert.pooler.dense", action="reinit")
    out = tmp_path / "out"
    res = export_checkpoint(str(src), plan, out, seed=5)
    assert res.is_clean
    written = load_file(out / "model.safetensors")
    for key in ("classifier.weight", "classifier.bias", "bert.pooler.dense.weight", "bert.pooler.dense.bias"):
        assert written[key].equal(fresh_tensor(spec, key, seed=5)), key
    flagged = {r.name for r in init_check(str(out), ModelSpec(config=str(out))) if r.init_like}
    assert {"classifier.weight", "bert.pooler.dense.weight"} <= flagged


def test_a_tensor_no_init_sets_is_an_error_not_garbage(src: Path, tmp_path: Path, monkeypatch) -> None:
    from explorer.core import fresh

    spec = ModelSpec(config=str(src), arch="BertForSequenceClassification")
    plan = Plan.from_report(report(str(src), spec))
    monkeypatch.setattr(fresh.FreshInit, "tensor", lambda self, key, cancel=None: None)
    with pytest.raises(ExportError, match=r"^classifier\.(weight|bias): the model's initialisation does not set this tensor"):
        export_checkpoint(str(src), plan, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.partial-*"))
