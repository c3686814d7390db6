"""Shared, built once per session: a tiny real BERT folder (BertConfig + its safetensors) and a valid plan for it."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.security.harness import snapshot, tree_changes


@pytest.fixture(scope="session")
def good(tmp_path_factory) -> Path:
    """``good/``: config.json + model.safetensors of a tiny BertModel, and ``good-plan.json`` beside it (outside)."""
    from explorer.core.matching import report
    from explorer.core.model import ModelSpec
    from explorer.core.plan import Plan, save_plan
    from explorer.core.checkpoint import open_checkpoint
    from tests.helpers import save_tiny

    root = tmp_path_factory.mktemp("sec-good")
    d = root / "good"
    save_tiny("bert", "BertModel", d)
    rep = report(open_checkpoint(d), ModelSpec(config=str(d)))
    save_plan(Plan.from_report(rep).with_rule("encoder.layer.0.*", match="glob", trainable=False), root / "good-plan.json")
    before = snapshot(root)
    yield d
    assert not tree_changes(before, snapshot(root)), "the shared good checkpoint or its plan changed"


@pytest.fixture(scope="session")
def good_plan(good) -> Path:
    return good.parent / "good-plan.json"
