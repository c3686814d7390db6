"""Compare A/B tab and the "looks untrained" tab + fresh-init overlay, on tiny real BERT checkpoints."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.gui.conftest import LOAD_TIMEOUT, open_and_wait, select_and_measure
from tests.helpers import save_tiny

Q = "encoder.layer.0.attention.self.query.weight"


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[Path, Path]:
    a = tmp_path_factory.mktemp("a")
    save_tiny("bert", "BertModel", a)
    b = tmp_path_factory.mktemp("b")
    shutil.copy(a / "config.json", b / "config.json")
    sd = load_file(a / "model.safetensors")
    sd[Q] = sd[Q] * 1.1
    del sd["pooler.dense.bias"]
    sd = {"module." + k: v for k, v in sd.items()}  # DDP prefix: paired automatically
    save_file(sd, b / "model.safetensors")
    return a, b


@pytest.fixture
def panels(window):
    from explorer.gui.compare_panel import install_compare_panel
    from explorer.gui.init_panel import install_init_panel

    return install_init_panel(window), install_compare_panel(window)


def test_compare_table_rollup_bars_and_ab_histogram(qtbot, window, panels, pair, qtmodeltester) -> None:
    _init, cmp = panels
    a, b = pair
    open_and_wait(qtbot, window, checkpoint=str(a))
    with qtbot.waitSignal(cmp.diffReady, timeout=LOAD_TIMEOUT) as blocker:
        cmp.compare_with(str(b / "model.safetensors"))
    by = {e.name: e for e in blocker.args[0]}
    assert by[Q].status == "changed" and by[Q].rel_change == pytest.approx(0.1, rel=1e-5)
    assert by["pooler.dense.bias"].status == "only_a"
    qtmodeltester.check(cmp.model)
    assert cmp.proxy.rowCount() == 2  # only differences by default
    cmp.only_diff.setChecked(False)
    assert cmp.proxy.rowCount() == len(by)
    # roll-up and bars: layer 0 moved, layer 1 did not
    roll = {m.prefix: m for m in cmp.rollup}
    assert roll["encoder.layer.0"].rel_change > 0 and roll["encoder.layer.1"].rel_change == 0
    assert len(cmp.bars.opts["height"]) == len([m for m in cmp.rollup if m.rel_change is not None])
    assert "moved most: encoder.layer.0" in cmp.summary.text()
    with qtbot.waitSignal(cmp.histReady, timeout=LOAD_TIMEOUT) as hb:
        assert cmp.select_name(Q)
    name, sa, sb = hb.args[0]
    assert name == Q and sa.edges == sb.edges and sum(sa.counts) == sum(sb.counts) == 32 * 32
    assert sb.std == pytest.approx(sa.std * 1.1, rel=1e-5)
    assert cmp.hist.overlay.isVisible()


def test_compare_from_command_line_extra(qtbot, window, panels, pair) -> None:
    _init, cmp = panels
    a, b = pair
    window.session.extras["compare"] = str(b)
    with qtbot.waitSignal(cmp.diffReady, timeout=LOAD_TIMEOUT):
        open_and_wait(qtbot, window, checkpoint=str(a))
    assert cmp.other == str(b) and any(e.status == "changed" for e in cmp.entries)


def test_init_check_flags_a_fresh_model_and_overlays_its_init(qtbot, window, panels, pair, tmp_path, qtmodeltester) -> None:
    init, _cmp = panels
    a, _b = pair
    open_and_wait(qtbot, window, checkpoint=str(a))
    with qtbot.waitSignal(init.checkReady, timeout=LOAD_TIMEOUT) as blocker:
        init.run()
    res = {r.name: r for r in blocker.args[0]}
    assert res[Q].init_like and res["embeddings.LayerNorm.weight"].init_like  # save_tiny = a fresh init
    qtmodeltester.check(init.model)
    init.only_flagged.setChecked(True)
    assert init.proxy.rowCount() == len(init.flagged())
    assert "look untrained" in init.summary.text()
    with qtbot.waitSignal(init.overlayReady, timeout=LOAD_TIMEOUT) as ob:
        select_and_measure(qtbot, window, Q)
    names, fst, verdict = ob.args[0]
    assert names == (Q,) and verdict.init_like and fst.std == pytest.approx(0.02, rel=0.1)
    assert window.details.histogram.overlay.isVisible()
    assert "fresh init" in init.overlay_label.text() and "looks untrained" in init.overlay_label.text()
    window.tabs.setCurrentWidget(init)
    window.grab().save(str(tmp_path / "init.png"))
    assert (tmp_path / "init.png").stat().st_size > 0
