"""The public Python API: every name in explorer.__all__ resolves lazily, is listed by dir(), and the README's
snippet (report, load_plan, apply_plan -> AdamW) runs on a real tiny model."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import explorer
from tests.helpers import save_tiny


def test_every_export_resolves_to_its_core_object() -> None:
    for name in explorer.__all__:
        obj = getattr(explorer, name)
        mod, attr = explorer._EXPORTS[name]
        assert obj is getattr(__import__(mod, fromlist=[attr]), attr), name
        assert name in dir(explorer)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        explorer.nope  # noqa: B018


def test_import_explorer_is_cheap() -> None:
    code = textwrap.dedent(
        """
        import sys, explorer
        assert explorer.__version__
        heavy = [m for m in ("torch", "transformers", "numpy", "PySide6") if m in sys.modules]
        print(heavy)
        """
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_readme_python_snippet(tmp_path: Path, monkeypatch) -> None:
    import torch
    from transformers import BertForSequenceClassification

    from explorer import ModelSpec, Plan, apply_plan, load_plan, report, save_plan

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    save_tiny("bert", "BertModel", ckpt)
    monkeypatch.chdir(tmp_path)
    rep = report("ckpt/", ModelSpec(config="ckpt/", arch="BertForSequenceClassification"))
    assert set(rep.missing) == {"classifier.weight", "classifier.bias"}
    assert list(rep.unexpected) == []
    save_plan(Plan.from_report(rep).with_rule("bert.embeddings", trainable=False).with_rule("bert.encoder", lr_scale=0.1),
              "plan.json")
    model = BertForSequenceClassification.from_pretrained("ckpt")
    groups = apply_plan(model, load_plan("plan.json"), lr=3e-5)
    optimizer = torch.optim.AdamW(groups)
    assert sorted(g["lr"] for g in optimizer.param_groups) == pytest.approx([3e-6, 3e-5])
    assert not model.bert.embeddings.word_embeddings.weight.requires_grad


def test_one_cancelled_class_for_every_long_job() -> None:
    from explorer.core import errors, export, fresh, stats

    assert stats.Cancelled is errors.Cancelled is fresh.Cancelled is explorer.Cancelled
    assert issubclass(export.ExportCancelled, errors.Cancelled) and issubclass(export.ExportCancelled, errors.ExportError)
