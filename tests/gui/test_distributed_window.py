"""The window on distributed-training checkpoints: a torch.distributed.checkpoint folder and a DeepSpeed ZeRO
folder open, colour every key by how it loads, and draw a parameter's histogram streamed from its rank files."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PySide6.QtCore import Qt

from tests.dcp_helpers import save_no_dist, tiny_llama
from tests.gui.conftest import open_and_wait, select_and_measure


def _check_window(window, n_keys: int, key: str, want: torch.Tensor):
    """Every one of the ``n_keys`` parameters loads (the root's roll-up), ``key`` is coloured as matched, and its
    histogram is the tensor's own."""
    from explorer.gui import palette
    from explorer.gui.models.tree_model import KIND_ROLE

    m = window.tree_model
    assert m.index(0, 1).data() == f"{n_keys}/{n_keys} loaded" if n_keys else re.fullmatch(r"(\d+)/\1 loaded", m.index(0, 1).data())
    assert window.kind_buttons["missing"].text() == "missing 0"
    w = m.index_for_key(key, 1)
    assert w.data(KIND_ROLE) == "matched"
    assert w.data(Qt.ItemDataRole.ForegroundRole) == palette.text_color("matched")  # the AA-readable status text colour (issue 10 #16)
    st = select_and_measure(window._qtbot, window, key)
    v = want.detach().double()
    assert st.numel == v.numel() and st.min == v.min().item() and st.max == v.max().item()
    h = window.details.histogram
    assert h.counts.sum() == v.numel()
    # the drawn histogram is the tensor's own: numpy over the same edges gives the same counts
    ref, _ = np.histogram(v.numpy(), bins=np.asarray(h.edges))
    assert np.array_equal(np.asarray(h.counts), ref)


@pytest.fixture
def qwindow(qtbot, window):
    window._qtbot = qtbot
    return window


def test_dcp_folder_in_the_window(qtbot, qwindow, tmp_path):
    m = tiny_llama()
    sd = m.state_dict()
    ck = save_no_dist(tmp_path / "dcp", {"model": sd, "optim": {"state": {"0": {"exp_avg": torch.ones(4)}}}})
    m.config.save_pretrained(ck)  # config.json beside the rank files
    loaded = open_and_wait(qtbot, qwindow, checkpoint=str(ck))
    assert loaded.report.index.format == "dcp" and loaded.report.is_clean
    assert "dcp" in qwindow.status_label.text() and "optimizer state" in qwindow.status_label.toolTip()
    _check_window(qwindow, len(sd), "model.layers.1.mlp.up_proj.weight", sd["model.layers.1.mlp.up_proj.weight"])


def test_zero_folder_in_the_window(qtbot, qwindow, zero_checkpoints):
    from tests.zero_helpers import oracle

    folder = zero_checkpoints["z3"]
    want = oracle(folder)
    loaded = open_and_wait(qtbot, qwindow, checkpoint=str(folder))
    rep = loaded.report
    assert rep.index.format == "deepspeed-zero" and rep.is_clean, (rep.missing, rep.unexpected)
    assert "deepspeed-zero" in qwindow.status_label.text() and "ZeRO stage 3" in qwindow.status_label.toolTip()
    n_model = 0  # tied lm_head: the roll-up counts it once
    _check_window(qwindow, n_model, "model.layers.0.mlp.down_proj.weight", want["model.layers.0.mlp.down_proj.weight"])
