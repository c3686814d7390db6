"""GUI responsiveness: time to first paint, and the worst GUI-thread stall while a ~46k-tensor MoE
checkpoint (DeepSeek-V3 shapes, sparse shards from make_sparse_checkpoints.py) is opened, filtered and browsed.

Side by side with what a user would otherwise get: a window that imports torch + transformers before it
shows (the naive order). Stalls are measured with a 10 ms QTimer heartbeat on the GUI thread: the worst gap
minus the interval is the longest the window could not repaint or react.

    QT_QPA_PLATFORM=offscreen python benchmarks/bench_gui.py [--moe DIR] [--runs 3]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

_PAINT_CHILD = r"""
import sys, time
from explorer.gui.app import make_app
from explorer.gui.main_window import MainWindow
from PySide6.QtCore import QEvent, QObject
NAIVE = sys.argv[1] == "naive"
if NAIVE:
    import torch, transformers  # what a script-first tool pays before anything is on screen
app = make_app()
w = MainWindow(interactive=False)
class F(QObject):
    def eventFilter(self, o, e):
        if e.type() == QEvent.Type.Paint:
            print(f"{time.time():.6f} {'torch' in sys.modules}", flush=True)
            app.exit(0)
        return False
f = F(); w.installEventFilter(f)
w.show()
app.exec()
"""


def first_paint(mode: str) -> tuple[float, bool]:
    env = dict(os.environ, QT_QPA_PLATFORM=os.environ.get("QT_QPA_PLATFORM", "offscreen"), HF_HUB_OFFLINE="1")
    t0 = time.time()
    out = subprocess.run([sys.executable, "-c", _PAINT_CHILD, mode], env=env, capture_output=True, text=True, check=True, cwd=ROOT).stdout
    ts, torch_loaded = out.split()[-2:]
    return float(ts) - t0, torch_loaded == "True"


class Heartbeat:
    def __init__(self, interval_ms: int = 10) -> None:
        from PySide6.QtCore import QTimer

        self.interval = interval_ms / 1000
        self.timer = QTimer()
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self._tick)
        self.reset()
        self.timer.start()

    def reset(self) -> None:
        self.last = time.perf_counter()
        self.worst = 0.0

    def _tick(self) -> None:
        now = time.perf_counter()
        self.worst = max(self.worst, now - self.last - self.interval)
        self.last = now

    def phase(self) -> float:
        self._tick()
        w = self.worst
        self.reset()
        return w


def stalls(moe: Path) -> list[tuple[str, float, float]]:
    from PySide6.QtCore import QEventLoop, QSettings, QTimer

    from explorer.gui.app import make_app
    from explorer.gui.main_window import MainWindow
    from explorer.gui.session import Source

    app = make_app()
    w = MainWindow(settings=QSettings(str(Path("/tmp") / "bench_gui.ini"), QSettings.Format.IniFormat), interactive=False)
    w.resize(1440, 900)
    w.show()
    hb = Heartbeat()
    rows: list[tuple[str, float, float]] = []

    def wait(signal, timeout_s: float = 600) -> None:
        loop = QEventLoop()
        signal.connect(loop.quit)
        QTimer.singleShot(int(timeout_s * 1000), loop.quit)
        loop.exec()
        signal.disconnect(loop.quit)

    def spin(ms: int = 50) -> None:
        loop = QEventLoop()
        QTimer.singleShot(ms, loop.quit)
        loop.exec()

    spin()
    hb.phase()
    t = time.perf_counter()
    w.open_source(Source(checkpoint=str(moe)))
    wait(w.session.loaded)
    spin()
    rows.append(("open (headers + meta model + match, in a worker) and show", time.perf_counter() - t, hb.phase()))
    n = len(w.table_model.rows)
    for label, text, mode in (("filter: substring 'experts.1'", "experts.1", "substring"),
                              ("filter: glob '*.experts.2?.down_proj.*'", "*.experts.2?.down_proj.*", "glob"),
                              ("filter: regex 'layers\\.(3|4)\\d\\.'", r"layers\.(3|4)\d\.", "regex")):
        w.mode.setCurrentText(mode)
        t = time.perf_counter()
        w.search.setText(text)
        w.apply_filter()
        spin()
        rows.append((label, time.perf_counter() - t, hb.phase()))
    w.clear_filter()
    spin()
    hb.phase()
    t = time.perf_counter()
    w.kind_buttons["ignored"].setChecked(True)
    spin()
    rows.append(("status toggle: only 'ignored'", time.perf_counter() - t, hb.phase()))
    w.clear_filter()
    spin()
    hb.phase()
    t = time.perf_counter()
    w.clear_filter()
    spin()
    rows.append(("clear filter (all rows back)", time.perf_counter() - t, hb.phase()))
    t = time.perf_counter()
    w.table.sortByColumn(5, w.table.horizontalHeader().sortIndicatorOrder())
    spin()
    rows.append((f"sort {n:,} rows by size", time.perf_counter() - t, hb.phase()))
    t = time.perf_counter()
    w.select_key("model.layers.10.mlp")
    spin()
    rows.append(("select a MoE block (tree -> table sync)", time.perf_counter() - t, hb.phase()))
    w.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--moe", type=Path, default=Path("/tmp/bench_moe"), help="sparse MoE checkpoint folder (made if absent)")
    p.add_argument("--runs", type=int, default=3)
    a = p.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not (a.moe / "config.json").is_file():
        subprocess.run([sys.executable, str(HERE / "make_sparse_checkpoints.py"), "moe", str(a.moe)], check=True)

    ours = [first_paint("ours") for _ in range(a.runs)]
    naive = [first_paint("naive") for _ in range(a.runs)]
    lines = ["# GUI responsiveness", "", f"Machine: {os.cpu_count()} CPUs (shared), Qt platform `{os.environ['QT_QPA_PLATFORM']}`; "
             f"median of {a.runs} runs for first paint.", "",
             "## Time to first paint (process start → first paint event of the main window)", "",
             "| window | first paint | torch imported at paint |", "|---|---:|---|"]
    med = lambda xs: sorted(x[0] for x in xs)[len(xs) // 2]  # noqa: E731
    lines.append(f"| ckpt-explorer (torch/transformers imported in a worker, after show) | {med(ours):.2f} s | {ours[0][1]} |")
    lines.append(f"| naive: import torch + transformers, then show | {med(naive):.2f} s | {naive[0][1]} |")
    rows = stalls(a.moe)
    lines += ["", f"## Worst GUI-thread stall (10 ms QTimer heartbeat), {a.moe.name}: DeepSeek-V3 shapes, 257 sparse shards, "
              "46,183 tensors", "", "| action | wall time | worst stall |", "|---|---:|---:|"]
    lines += [f"| {label} | {dt:.2f} s | {1000 * st:.0f} ms |" for label, dt, st in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    out = HERE / "results" / "gui.md"
    out.parent.mkdir(exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, out)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
