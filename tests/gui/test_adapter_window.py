"""A PEFT adapter in the window: opened on its base (the real all-MiniLM-L6-v2), matched as peft loads it (peft's
own PeftModel as the oracle), adapted modules badged, ΔW of a selected module measured and drawn."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

pytest.importorskip("peft")

from explorer.gui.panels import AdapterPanel, InitPanel  # noqa: E402
from tests.gui.conftest import LOAD_TIMEOUT, open_and_wait  # noqa: E402

PANELS = (InitPanel, AdapterPanel)
Q = "encoder.layer.0.attention.self.query"


def _adapter(base: str, out: Path, *, trained: bool, **kw):
    import transformers
    from peft import LoraConfig, get_peft_model

    model = transformers.BertModel.from_pretrained(base)
    torch.manual_seed(5)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"], **kw)
    pm = get_peft_model(model, cfg)
    if trained:  # a stand-in for training: lora_B away from its zero init
        with torch.no_grad():
            for n, p in pm.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.02)
    pm.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def adapters(tmp_path_factory, minilm):
    root = tmp_path_factory.mktemp("adapters")
    return _adapter(minilm, root / "trained", trained=True), _adapter(minilm, root / "untrained", trained=False)


def _peft(base: str, adapter: Path):
    import transformers
    from peft import PeftModel

    return PeftModel.from_pretrained(transformers.BertModel.from_pretrained(base), str(adapter))


def _badges(win, key: str) -> list[str]:
    from explorer.gui.widgets.badges import badge_delegate

    idx = win.tree_proxy.mapFromSource(win.tree_model.index_for_key(key))
    assert idx.isValid(), key
    return [t for t, _c in badge_delegate(win.tree, 0).badges(idx)]


def test_adapter_on_its_base_badged_named_and_measured_as_peft(qtbot, window, adapters, minilm):
    from explorer.gui.models.tree_model import KIND_ROLE

    trained, _ = adapters
    panel = window.panel(AdapterPanel)
    loaded = open_and_wait(qtbot, window, checkpoint=minilm, adapter=str(trained))
    assert loaded.adapter is not None and loaded.adapter.is_clean
    # adapted modules badged (type, r, alpha), rolled up per module
    assert "LoRA r4 α8" in _badges(window, Q)
    assert "LoRA ×12" in _badges(window, "encoder")
    assert "LoRA ×2" in _badges(window, "encoder.layer.3.attention.self")
    assert not any("LoRA" in b for b in _badges(window, "encoder.layer.0.attention.self.key"))
    # every adapter key named as PeftModel.state_dict() names it, shown as loaded; the base's own keys too
    pm = _peft(minilm, trained)
    lora = [k for k in pm.state_dict() if ".lora_" in k]
    assert len(lora) == 24
    for k in lora:
        idx = window.tree_model.index_for_key(k)
        assert idx.isValid(), k
        assert str(idx.data(KIND_ROLE)) in ("matched", "renamed")
    assert window.tree_model.index_for_key(Q + ".weight").isValid()
    assert "24 loaded" in panel.summary.text() and "0 missing" in panel.summary.text()
    # selecting the module: ΔW from the r×r products and its streamed histogram, equal to peft's merge
    with qtbot.waitSignal(panel.deltaReady, timeout=LOAD_TIMEOUT) as blocker:
        assert window.select_key(Q)
    path, st = blocker.args[0]
    assert path == Q
    layer = pm.base_model.model.get_submodule(Q)
    delta = layer.get_delta_weight("default").double()
    w = layer.base_layer.weight.double()
    assert st.numel == delta.numel() == 384 * 384 and sum(st.counts) == st.numel
    assert math.isclose(st.l2, float(delta.norm()), rel_tol=1e-4)
    assert math.isclose(st.mean, float(delta.mean()), rel_tol=1e-3, abs_tol=1e-9)
    d = next(x for x in loaded.adapter.deltas if x.module == Q)
    assert math.isclose(d.norm, float(delta.norm()), rel_tol=1e-6)
    assert math.isclose(d.relative, float(delta.norm() / w.norm()), rel_tol=1e-5)
    sv = torch.linalg.svdvals(delta)[:4]
    assert all(math.isclose(a, float(b), rel_tol=1e-5) for a, b in zip(d.singular_values, sv))
    text = panel.delta_title.text()
    assert "‖ΔW‖" in text and "rank 4/4" in text and f"{100 * d.relative:.3g}%" in text


def test_untrained_adapter_flagged_and_init_check_uses_peft_init(qtbot, window, adapters, minilm):
    _, untrained = adapters
    panel = window.panel(AdapterPanel)
    open_and_wait(qtbot, window, checkpoint=minilm, adapter=str(untrained))
    assert "12 untrained (lora_B all zeros)" in panel.summary.text()
    assert any("untrained" in b for b in _badges(window, Q))
    with qtbot.waitSignal(panel.deltaReady, timeout=LOAD_TIMEOUT):
        assert window.select_key(Q)
    assert "lora_B all zeros: untrained" in panel.delta_title.text()
    ip = window.panel(InitPanel)
    with qtbot.waitSignal(ip.checkReady, timeout=LOAD_TIMEOUT) as blocker:
        ip.run()
    flagged = {r.name for r in blocker.args[0] if r.init_like}
    b_names = {f"base_model.model.encoder.layer.{i}.attention.self.{t}.lora_B.weight" for i in range(6) for t in ("query", "value")}
    assert b_names <= flagged  # lora_B at peft's zero init


def test_wrong_base_keys_coloured_as_peft_reports_them(qtbot, window, tmp_path, minilm):
    """An adapter trained on a BERT of another hidden size: peft's size mismatches are the tree's mismatched keys."""
    from peft import LoraConfig, get_peft_model

    from explorer.gui.models.tree_model import KIND_ROLE
    from tests.core.adapter_oracle import peft_sets
    from tests.helpers import save_tiny

    small = save_tiny("bert", "BertModel", tmp_path / "small", num_hidden_layers=6)
    get_peft_model(small, LoraConfig(r=4, target_modules=["query"])).save_pretrained(tmp_path / "ad")
    oracle = peft_sets(minilm, str(tmp_path / "ad"), "BertModel")
    assert oracle["mismatched"]
    panel = window.panel(AdapterPanel)
    loaded = open_and_wait(qtbot, window, checkpoint=minilm, adapter=str(tmp_path / "ad"))
    assert set(loaded.adapter.mismatched) == oracle["mismatched"]
    for k, _a, _b in oracle["mismatched"]:
        assert window.tree_model.index_for_key(k).data(KIND_ROLE) == "mismatched", k
    assert f"{len(oracle['mismatched'])} mismatched" in panel.summary.text()


def test_drop_adapter_on_its_base_and_config_only(qtbot, window, adapters, minilm):
    from PySide6.QtCore import QMimeData, QUrl

    trained, _ = adapters
    open_and_wait(qtbot, window, checkpoint=minilm)
    assert window.session.adapter is None
    m = QMimeData()
    m.setUrls([QUrl.fromLocalFile(str(trained))])
    with qtbot.waitSignal(window.session.loaded, timeout=LOAD_TIMEOUT):
        assert window.handle_drop(m) is None  # the one sensible meaning: the adapter on this base
    cur = window.session.current
    assert cur.adapter is not None and cur.source.checkpoint == minilm and cur.adapter.base.index is not None
    # config only: the adapter's keys and badges, no base tensors
    loaded = open_and_wait(qtbot, window, config=minilm, adapter=str(trained))
    assert loaded.adapter.base.index is None and loaded.adapter.is_clean
    assert "LoRA r4 α8" in _badges(window, Q)
    assert not window.tree_model.index_for_key(Q + ".weight").isValid()
    assert window.tree_model.index_for_key(f"base_model.model.{Q}.lora_A.default.weight").isValid()


def test_cli_open_adapter_request(tmp_path, adapters, minilm):
    from explorer.cli import build_parser
    from explorer.cli.open import open_request
    from explorer.core.errors import ConfigError

    trained, _ = adapters
    req = open_request(build_parser().parse_args(["open", str(trained), "--base", minilm]))
    assert req.source.adapter == str(trained) and req.source.checkpoint == minilm
    req = open_request(build_parser().parse_args(["open", str(trained / "adapter_config.json"), "--config", minilm]))
    assert req.source.adapter == str(trained) and req.source.checkpoint is None and req.source.config == minilm
    with pytest.raises(ConfigError, match="--base applies to a PEFT adapter"):
        open_request(build_parser().parse_args(["open", minilm, "--base", minilm]))


def test_adapter_without_a_base_is_one_line_and_the_window_stays_usable(qtbot, window, adapters, tmp_path, minilm):
    import json
    import shutil

    from explorer.gui.session import Source

    trained, _ = adapters
    ad = tmp_path / "ad"
    shutil.copytree(trained, ad)
    cfg = json.loads((ad / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = "nobody/not-in-the-cache"
    (ad / "adapter_config.json").write_text(json.dumps(cfg))
    with qtbot.waitSignal(window.session.loadFailed, timeout=LOAD_TIMEOUT) as blocker:
        window.open_source(Source(adapter=str(ad)))
    msg = blocker.args[0]
    assert "pass --base DIR or --config C" in msg and "\n" not in msg
    loaded = open_and_wait(qtbot, window, checkpoint=minilm, adapter=str(ad))  # with its base it opens
    assert loaded.adapter.is_clean
