"""A checkpoint without a config (issue 10 finding 3): a neutral "in checkpoint" status with its own colour, icon
and word, a tree built from the dotted names with per-module roll-ups, and the wrapper key used named."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.gui.conftest import open_and_wait


@pytest.fixture(scope="module")
def astra(tmp_path_factory) -> Path:
    """A pickle wrapped as {"state_dict": ..., "meta": ...} (like the Astra / CRAFT checkpoints), no config.json."""
    d = tmp_path_factory.mktemp("astra")
    sd = {f"backbone.layers.{i}.conv.weight": torch.full((4, 3), float(i)) for i in range(12)}
    sd |= {f"backbone.layers.{i}.bn.num_batches_tracked": torch.tensor(5) for i in range(12)}
    sd["head.fc.bias"] = torch.zeros(7, dtype=torch.float16)
    torch.save({"state_dict": sd, "meta": {"epoch": 40, "arch": "craft"}}, d / "astra.pth")
    return d / "astra.pth"


def test_no_model_is_a_neutral_tree_of_the_names(qtbot, window, astra) -> None:
    from explorer.gui import palette
    from explorer.gui.kinds import Kind

    loaded = open_and_wait(qtbot, window, checkpoint=str(astra))
    assert not loaded.report.has_model
    root = window.tree_model.root
    top = [c.name for c in root.children]
    assert top == ["backbone", "head"]  # not one flat orange "(not in model)" list
    layers = root.children[0].children[0]
    assert [c.name for c in layers.children] == [str(i) for i in range(12)]  # 0, 1, ..., 10, 11
    l3 = layers.children[3]
    assert l3.kind is Kind.IN_CHECKPOINT
    assert l3.status_text == "2 tensors · 13 values · 56 B · float32 ×1, int64 ×1"
    assert layers.status_text.startswith("24 tensors · 156 values")
    leaf = next(c for c in l3.walk() if c.is_param and c.path.endswith("conv.weight"))
    assert leaf.kind is Kind.IN_CHECKPOINT and leaf.status_text == "in checkpoint"
    lk = palette.look(Kind.IN_CHECKPOINT)
    assert lk.label == "in checkpoint" and lk.color not in {palette.look(k).color for k in Kind if k is not Kind.IN_CHECKPOINT}
    assert {r.kind for r in window.table_model.rows} == {Kind.IN_CHECKPOINT}
    text = window.summary_label.text()
    assert "no model" in text and "in checkpoint" in text
    assert "sub-dict &#x27;state_dict&#x27; chosen; &#x27;meta&#x27; holds no tensors" in text
    # a module row selects its tensors
    from tests.gui.conftest import select_and_measure

    st = select_and_measure(qtbot, window, "backbone.layers.3")
    assert st.numel == 12 and st.mean == 3.0  # its floating-point tensors pooled (conv.weight of layer 3)
