"""Statistics and histograms of awkward tensors, read from mmap in a worker: constant, integer, bf16,
NaN/Inf, empty, and a huge tensor whose data is a sparse hole (progress, cancel, stale results dropped)."""
from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from tests.gui.conftest import LOAD_TIMEOUT, open_and_wait, select_and_measure, write_safetensors

HUGE = 1 << 25  # float16 elements: 64 MB of hole


@pytest.fixture
def odd_file(tmp_path):
    import torch

    bf = (torch.linspace(-2, 2, 1000, dtype=torch.float32)).to(torch.bfloat16)
    nan = np.array([1.0, 2.0, np.nan, np.inf, -np.inf, 3.0], dtype=np.float32)
    tensors = {
        "ln.weight": ("F32", [64], np.ones(64, dtype=np.float32).tobytes()),
        "ids": ("I64", [1, 10], np.arange(10, dtype=np.int64).tobytes()),
        "bf16": ("BF16", [1000], bf.view(torch.int16).numpy().tobytes()),
        "nan": ("F32", [6], nan.tobytes()),
        "allnan": ("F32", [3], np.full(3, np.nan, dtype=np.float32).tobytes()),
        "empty": ("F32", [0, 4], b""),
    }
    p = tmp_path / "odd.safetensors"
    write_safetensors(p, tensors, hole=("huge", "F16", [HUGE]))
    return p


def test_constant_integer_bf16_nan_empty(qtbot, window, odd_file):
    open_and_wait(qtbot, window, checkpoint=str(odd_file))
    h = window.details.histogram

    st = select_and_measure(qtbot, window, "ln.weight")
    assert st.constant and st.min == st.max == 1.0 and st.std == 0
    assert h.counts.sum() == 64 and len(h.edges) == len(h.counts) + 1
    assert "constant" in window.details.status.text()

    st = select_and_measure(qtbot, window, "ids")
    assert st.integer and st.min == 0 and st.max == 9
    assert h.counts.sum() == 10

    st = select_and_measure(qtbot, window, "bf16")
    assert st.dtype == "bfloat16" and st.numel == 1000
    assert h.counts.sum() == 1000 and abs(st.mean) < 1e-2

    st = select_and_measure(qtbot, window, "nan")
    assert (st.nan, st.inf) == (1, 2) and st.max == 3.0
    assert h.counts.sum() == 3
    assert window.details.stat_text("NaN") == "1"

    st = select_and_measure(qtbot, window, "allnan")
    assert st.nan == 3 and st.finite == 0
    assert "no finite values" in h.message_text

    st = select_and_measure(qtbot, window, "empty")
    assert st.numel == 0
    assert "empty" in h.message_text

    # log-y and bin count controls redraw / recompute
    h.log_y.setChecked(True)
    with qtbot.waitSignal(window.details.statsReady, timeout=LOAD_TIMEOUT):
        window.select_key("bf16")
    with qtbot.waitSignal(window.details.statsReady, timeout=LOAD_TIMEOUT):
        h.bins.setValue(32)
    assert len(h.counts) <= 32


def test_huge_sparse_tensor_streams_with_progress_and_cancel(qtbot, window, odd_file, tmp_path, monkeypatch):
    import explorer.core.stats as core_stats

    open_and_wait(qtbot, window, checkpoint=str(odd_file))
    jobs = window.session.jobs
    # cancel: no result arrives, and the next selection still works. The job is held after its first progress
    # report until the test has cancelled, so a fast machine cannot finish the 64 MB before the cancel lands.
    gate, real = threading.Event(), core_stats.aggregate_stats

    def held(*args, progress, **kw):
        def report(done, total):
            progress(done, total)
            gate.wait(LOAD_TIMEOUT / 1000)
        return real(*args, progress=report, **kw)

    monkeypatch.setattr(core_stats, "aggregate_stats", held)
    window.select_key("huge")
    job = jobs.current("stats")
    with qtbot.waitSignal(job.progress, timeout=LOAD_TIMEOUT):
        pass
    with qtbot.waitSignal(job.finished, timeout=LOAD_TIMEOUT), qtbot.assertNotEmitted(window.details.statsReady):
        window.details.cancel()
    assert not job.running and not jobs.busy("stats")
    assert job.is_cancelled()
    with qtbot.assertNotEmitted(window.details.statsReady, wait=300):
        gate.set()  # the held worker's next progress call raises Cancelled: still no result
    monkeypatch.setattr(core_stats, "aggregate_stats", real)
    assert window.details.last_stats is None
    # stale: select huge then immediately something small; only the small one is shown
    window.select_key("huge")
    st = select_and_measure(qtbot, window, "ln.weight")
    assert st.name == "ln.weight" and window.details.last_stats is st
    # and the whole huge tensor, streamed from the hole
    st = select_and_measure(qtbot, window, "huge")
    assert st.numel == HUGE and st.zeros == 1.0 and st.constant
    assert window.details.histogram.counts.sum() == HUGE
    # export
    csv = tmp_path / "h.csv"
    window.details.histogram.export_csv(str(csv))
    assert csv.read_text().splitlines()[:2] == ["# histogram of huge: 1 bin, 256 asked: every finite value is the same",
                                                "left,right,count"]
    png = tmp_path / "h.png"
    window.details.histogram.export_png(str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # written through core's atomic_output: normal permissions (not mkstemp's 0600), no temp files left over
    umask = os.umask(0)
    os.umask(umask)
    assert (csv.stat().st_mode & 0o777) == (png.stat().st_mode & 0o777) == 0o666 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_module_selection_pools_its_weights_and_overlay_api(qtbot, window, demo_dir):
    open_and_wait(qtbot, window, demo=True)
    st = select_and_measure(qtbot, window, "bert.encoder.layer.0.attention")
    assert st.n_tensors == 10  # q/k/v and output dense weights and biases, output LayerNorm
    sel = window.details.selection
    assert sel.is_module and all(n.startswith("bert.encoder.layer.0.attention.") for n in sel.names)
    h = window.details.histogram
    h.set_overlay("fresh init", h.edges, h.counts / 2)
    assert h.overlay.isVisible() and h.legend.isVisible()
    h.clear_overlay()
    assert not h.overlay.isVisible()


@pytest.mark.parametrize("top", [2e3, 3e5, 1e8])
def test_log_axis_title_never_touches_tick_labels(qtbot, top):
    from PySide6.QtGui import QFont, QImage, QPainter

    from explorer.gui.app import make_app
    from explorer.gui.widgets.histogram import HistogramWidget

    make_app()
    h = HistogramWidget()
    qtbot.addWidget(h)
    h.resize(360, 300)
    h.show()
    ax = h.plot.getPlotItem().getAxis("left")
    big = QFont(h.font())
    big.setPointSizeF(15)  # tick labels wider than pyqtgraph's initial 30 px: the axis is sized from them alone
    ax.setStyle(tickFont=big)
    qtbot.waitExposed(h)
    h.log_y.setChecked(True)  # on before any data, as when restored from the settings
    counts = np.exp(-np.linspace(-4, 4, 256) ** 2 / 2) * top
    h.set_data(np.linspace(-1, 1, 257), np.floor(counts))
    h.grab()  # paints the axis: pyqtgraph sizes it from the tick labels it drew
    h.grab()
    assert ax.labelText == "count (log)"
    img = QImage(10, 10, QImage.Format.Format_ARGB32)
    p = QPainter(img)
    try:
        _, _, texts = ax.generateDrawSpecs(p)
    finally:
        p.end()
    assert any("10" in t for _, _, t in texts)
    text_left = min(r.left() for r, _, t in texts)
    title_right = ax.label.mapRectToParent(ax.label.boundingRect()).right()
    assert title_right + 4 <= text_left, (title_right, text_left, [t for _, _, t in texts])


def test_histogram_placeholder_is_centred_over_the_plot(qtbot, window):
    h = window.details.histogram
    qtbot.waitExposed(window)
    assert h.message_text == "select a tensor"
    assert h.placeholder.geometry() == h.plot.rect()  # centred over the whole plot, not at a data point
    assert not h.curve.isVisible()  # no flat line at zero under it
    h.set_data([0.0, 1.0, 2.0], [3.0, 4.0])
    assert h.message_text == "" and h.curve.isVisible()


def test_csv_has_plain_numbers_and_the_bins_asked_or_why_not(qtbot, window, minilm, tmp_path):
    # issue 10 finding 1: np.float64(...) reprs, and 27 bins for a 768-value bias at "bins 256" without a word
    open_and_wait(qtbot, window, checkpoint=minilm)
    name = "embeddings.token_type_embeddings.weight"  # 2×384 = 768 values
    st = select_and_measure(qtbot, window, name)
    assert len(st.counts) == 27 and window.details.histogram.bins.value() == 256
    why = "27 bins, 256 asked: 768 values get about √n bins (at least 8), so the shape is not sampling noise"
    assert why in window.details.status.text()  # said in the window
    csv = tmp_path / "bias.csv"
    window.details.histogram.export_csv(str(csv))
    lines = csv.read_text().splitlines()
    assert lines[0] == f"# histogram of {name}: {why}" and lines[1] == "left,right,count"
    rows = [ln.split(",") for ln in lines[2:]]
    assert len(rows) == 27
    edges = np.array([[float(a), float(b)] for a, b, _n in rows])  # plain numbers: float() reads every one
    assert np.allclose(edges[:, 0], st.edges[:-1]) and sum(int(n) for *_e, n in rows) == 768
    big = "encoder.layer.0.attention.output.dense.weight"
    select_and_measure(qtbot, window, big)
    window.details.histogram.export_csv(str(csv))
    assert csv.read_text().splitlines()[0] == f"# histogram of {big}: 256 bins, as asked"
