"""GUI fixtures: a MainWindow with throw-away settings, and helpers that wait on signals (never sleep)."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

LOAD_TIMEOUT = 120_000


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory) -> Path:
    import os

    os.environ["CKPT_EXPLORER_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    from explorer.core.demo import build_demo

    return build_demo().folder


@pytest.fixture
def window(qtbot, tmp_path, request):
    """A MainWindow with the panels the test module lists in its ``PANELS`` (none: the bare window)."""
    from PySide6.QtCore import QSettings

    from explorer.gui.app import make_app
    from explorer.gui.main_window import MainWindow

    make_app()
    win = MainWindow(settings=QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat), interactive=False,
                     panels=getattr(request.module, "PANELS", ()))
    qtbot.addWidget(win)
    win.resize(1300, 800)
    win.show()
    yield win
    win.session.close()


@pytest.fixture
def full_window(qtbot, tmp_path):
    """A MainWindow with every panel of ``panels.PANELS``."""
    from PySide6.QtCore import QSettings

    from explorer.gui.app import make_app
    from explorer.gui.main_window import MainWindow
    from explorer.gui.panels import PANELS

    make_app()
    win = MainWindow(settings=QSettings(str(tmp_path / "full.ini"), QSettings.Format.IniFormat), interactive=False,
                     panels=PANELS)
    qtbot.addWidget(win)
    win.resize(1300, 800)
    win.show()
    yield win
    win.session.close()


def open_and_wait(qtbot, win, **source):
    from explorer.gui.session import Source

    with qtbot.waitSignal(win.session.loaded, timeout=LOAD_TIMEOUT):
        win.open_source(Source(**source))
    return win.session.current


def select_and_measure(qtbot, win, key: str):
    """Select ``key`` and wait for its statistics to be drawn."""
    with qtbot.waitSignal(win.details.statsReady, timeout=LOAD_TIMEOUT) as blocker:
        assert win.select_key(key), key
    return blocker.args[0]


def write_safetensors(path: Path, tensors: dict, *, hole: tuple[str, str, list[int]] | None = None) -> None:
    """A safetensors file written by hand; ``hole=(name, dtype_code, shape)`` appends a tensor whose data is a
    sparse hole (f.truncate), so a huge tensor costs no disk."""
    import numpy as np

    codes = {"float32": "F32", "int64": "I64", "float16": "F16", "bfloat16": "BF16"}
    header, blobs, off = {}, [], 0
    for name, (code, shape, raw) in tensors.items():
        header[name] = {"dtype": code, "shape": shape, "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    extra = 0
    if hole is not None:
        name, code, shape = hole
        size = {"F16": 2, "BF16": 2, "F32": 4}[code] * int(np.prod(shape))
        header[name] = {"dtype": code, "shape": shape, "data_offsets": [off, off + size]}
        extra = size
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
        f.truncate(8 + len(h) + off + extra)
    del codes


FRESH_KEY = "encoder.layer.0.attention.self.query.weight"  # the one fresh tensor of ``trained_but_one``
MINILM_HEAD = "BertForSequenceClassification"


@pytest.fixture(scope="module")
def trained_but_one(tmp_path_factory) -> Path:
    """A tiny BERT whose weights were all moved away from their init ("trained"), except one tensor replaced by a
    fresh init of the model itself — the case init-check must flag."""
    import torch
    from safetensors.torch import load_file, save_file

    from explorer.core.fresh import fresh_tensor
    from explorer.core.model import ModelSpec
    from tests.helpers import save_tiny

    d = tmp_path_factory.mktemp("one_fresh")
    save_tiny("bert", "BertModel", d)
    sd = load_file(d / "model.safetensors")
    g = torch.Generator().manual_seed(1)
    for k, v in sd.items():
        if v.is_floating_point():
            sd[k] = v * 1.7 + 0.05 * torch.randn(v.shape, generator=g)
    sd[FRESH_KEY] = fresh_tensor(ModelSpec(config=str(d)), FRESH_KEY, seed=3).to(sd[FRESH_KEY].dtype)
    save_file(sd, d / "model.safetensors")
    return d


@pytest.fixture
def minilm_head(qtbot, full_window, minilm):
    """The full window (every panel) on the real MiniLM loaded into a classification head, at 1440×900:
    (window, plan panel, init panel)."""
    from explorer.gui.panels import InitPanel, PlanPanel

    full_window.resize(1440, 900)
    ed = full_window.panel(PlanPanel)
    ip = full_window.panel(InitPanel)
    open_and_wait(qtbot, full_window, checkpoint=minilm, arch=MINILM_HEAD)
    return full_window, ed, ip


@pytest.fixture(scope="session")
def small_moe(tmp_path_factory) -> Path:
    """A small DeepSeek-V3 folder in the real per-expert on-disk layout (``model.layers.1.mlp.experts.11.
    down_proj.weight``; transformers fuses the experts on load), built like benchmarks/make_sparse_checkpoints.py
    builds the 47k-tensor MoE: names and shapes from the model itself on meta, data as sparse holes. 3 layers,
    12 routed experts (two-digit indices), 171 tensors."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "make_sparse_checkpoints", Path(__file__).resolve().parents[2] / "benchmarks" / "make_sparse_checkpoints.py")
    mk = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mk)
    cfg = dict(mk.DEEPSEEK_V3, vocab_size=256, hidden_size=64, intermediate_size=96, moe_intermediate_size=16,
               num_hidden_layers=3, num_attention_heads=2, num_key_value_heads=2, n_routed_experts=12, n_group=4,
               topk_group=2, num_experts_per_tok=2, first_k_dense_replace=1, kv_lora_rank=16, q_lora_rank=16,
               qk_rope_head_dim=8, v_head_dim=8, qk_nope_head_dim=8, max_position_embeddings=128)
    tensors = mk.unfuse_experts(mk.model_tensors(cfg))
    d = tmp_path_factory.mktemp("small_moe") / "DeepSeek-V3-small"
    mk.write_sparse_sharded(d, cfg, tensors + mk.mtp_layer(tensors, cfg))
    return d
