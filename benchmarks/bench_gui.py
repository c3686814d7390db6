"""GUI responsiveness: time to first paint, and the worst GUI-thread stall while a ~46k-tensor MoE
checkpoint (DeepSeek-V3 shapes, sparse shards from make_sparse_checkpoints.py) is opened, filtered and browsed;
closing the window during a job, and 30 quick Down moves through the MoE's per-expert rows.

Side by side with what a user would otherwise get: a window that imports torch + transformers before it
shows (the naive order). Stalls are measured with a 10 ms QTimer heartbeat on the GUI thread: the worst gap
minus the interval is the longest the window could not repaint or react.

Close-during-job and quick moves run in a child process each (its CPU time and peak RSS are its own), for this
checkout and, with ``--before DIR``, for another checkout of the project (e.g. a git worktree of the commit before
issue 10) side by side:

    QT_QPA_PLATFORM=offscreen python benchmarks/bench_gui.py [--moe DIR] [--runs 3] [--before DIR]
    QT_QPA_PLATFORM=offscreen python benchmarks/bench_gui.py --only jobs --before /tmp/explorer-before
"""
from __future__ import annotations

import argparse
import json
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





def stalls(ckpts: list[tuple[str, Path]], *, panels: bool = True) -> list[tuple[str, str, float, float]]:
    """(checkpoint, action, wall seconds, worst stall seconds) for each action, in one window."""
    from PySide6.QtCore import QEventLoop, QSettings, Qt, QTimer

    from explorer.gui.app import make_app
    from explorer.gui.main_window import MainWindow
    from explorer.gui.session import Source

    app = make_app()
    from explorer.gui.panels import PANELS

    # panels: what `ckpt-explorer open` shows (every tab, the plan's badges); else the bare window
    w = MainWindow(settings=QSettings(str(Path("/tmp") / "bench_gui.ini"), QSettings.Format.IniFormat), interactive=False,
                   panels=PANELS if panels else ())
    w.resize(1440, 900)
    w.show()
    hb = Heartbeat()
    rows: list[tuple[str, str, float, float]] = []

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

    def measure(name: str, label: str, fn, settle_ms: int = 100) -> None:
        spin(20)
        hb.phase()
        t = time.perf_counter()
        fn()
        dt = time.perf_counter() - t  # until the action returned (loads: until the report is shown)
        spin(settle_ms)
        rows.append((name, label, dt, hb.phase()))

    def open_(path: Path) -> None:
        w.open_source(Source(checkpoint=str(path)))
        wait(w.session.loaded)

    def filt(text: str, mode: str) -> None:
        w.mode.setCurrentText(mode)
        w.search.setText(text)
        w.apply_filter()

    def typing(text: str) -> None:  # keystrokes 60 ms apart through the debounced path
        w.mode.setCurrentText("substring")
        for i in range(1, len(text) + 1):
            w.search.setText(text[:i])
            spin(60)
        spin(250)

    def browse(n: int = 30) -> None:  # arrow down through the table: details + histogram per tensor
        for i in range(n):
            w.table.setCurrentIndex(w.table_proxy.index(i * 7 % max(1, w.table_proxy.rowCount()), 1))
            spin(40)

    def scroll(steps: int = 40) -> None:
        bar = w.table.verticalScrollBar()
        for i in range(steps + 1):
            bar.setValue(bar.maximum() * i // steps)
            spin(16)

    measure("—", "idle window, 2 s (machine noise baseline: other processes share the 2 cores)", lambda: spin(2000), 0)
    for first, (name, path) in enumerate(ckpts):
        first_note = " (first open: includes the one-time torch/transformers import in the worker)" if first == 0 else ""
        measure(name, "open" + first_note, lambda: open_(path), 300)
        measure(name, "open again (reload)", lambda: open_(path), 300)
        n = len(w.table_model.rows)
        some = next((k for k in w.tree_model.tree_index.modules if k.endswith(".mlp")), "")
        for label, text, mode in (("filter: substring 'experts.1'", "experts.1", "substring"),
                                  ("filter: glob '*.experts.2?.down_proj.*'", "*.experts.2?.down_proj.*", "glob"),
                                  ("filter: regex 'layers\\.(3|4)\\d\\.'", r"layers\.(3|4)\d\.", "regex"),
                                  ("filter: substring 'proj' (most rows)", "proj", "substring")):
            measure(name, label, lambda text=text, mode=mode: filt(text, mode))
        measure(name, "clear filter (all rows back)", w.clear_filter)
        measure(name, "typing 'layers.1.mlp' (60 ms/key, debounced)", lambda: typing("layers.1.mlp"), 50)
        measure(name, "clear filter", w.clear_filter)
        measure(name, "status toggle: only 'ignored'", lambda: w.kind_buttons["ignored"].setChecked(True))
        measure(name, "status toggle off", lambda: w.kind_buttons["ignored"].setChecked(False))
        measure(name, f"sort {n:,} rows by size", lambda: w.table.sortByColumn(5, Qt.SortOrder.DescendingOrder))
        measure(name, f"sort {n:,} rows by name", lambda: w.table.sortByColumn(1, Qt.SortOrder.AscendingOrder))
        measure(name, f"select module {some} (tree -> table sync)", lambda: w.select_key(some))
        measure(name, "browse 30 tensors (details + histograms in workers)", browse, 300)
        measure(name, "scroll the table top to bottom (40 steps)", scroll)
        measure(name, "expand trouble / collapse all", lambda: (w.expand_trouble(), w.tree.collapseAll()))
    w.close()
    return rows


# ----------------------------------------------------------------------------------------- jobs: close, moves

_JOBS_CHILD = r"""
import json, os, resource, sys, tempfile, time
from PySide6.QtCore import QEventLoop, QSettings, Qt, QTimer
from PySide6.QtTest import QTest
from explorer.gui.app import make_app
from explorer.gui.main_window import MainWindow
from explorer.gui.panels import PANELS, InitPanel
from explorer.gui.session import Source

what, path = sys.argv[1], sys.argv[2]
app = make_app()
ini = os.path.join(tempfile.mkdtemp(), "bench.ini")
w = MainWindow(settings=QSettings(ini, QSettings.Format.IniFormat), interactive=False, panels=PANELS)
w.resize(1440, 900)
w.show()

def spin(ms):
    loop = QEventLoop(); QTimer.singleShot(ms, loop.quit); loop.exec()

def wait(signal, timeout_s=600):
    loop = QEventLoop(); signal.connect(loop.quit); QTimer.singleShot(int(timeout_s * 1000), loop.quit); loop.exec()

def rss_peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

def rss_now_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

w.open_source(Source(checkpoint=path))
wait(w.session.loaded)
spin(300)
out = {"tensors": len(w.session.report.index.tensors)}
jobs = w.session.jobs
if what == "close":
    ip = w.panel(InitPanel)
    checked = []
    rss0 = rss_now_mb()
    h = ip.run()  # File > Init > Check for untrained tensors (Ctrl+Shift+U)
    h.progress.connect(lambda d, t: checked.append(d))
    spin(int(float(sys.argv[3]) * 1000))
    cpu0, t0 = time.process_time(), time.perf_counter()
    w.close()
    out["close_s"] = time.perf_counter() - t0
    jobs.pool.waitForDone(120_000)
    out["worker_stopped_s"] = time.perf_counter() - t0
    out["cpu_after_close_s"] = time.process_time() - cpu0
    out["tensors_checked_before_close"] = max(checked, default=0)
    out["rss_before_check_mb"] = rss0
    out["peak_rss_mb"] = rss_peak_mb()
else:
    w.mode.setCurrentText("substring")
    w.search.setText("mlp.experts.")  # the per-expert rows of the fused experts
    w.apply_filter()
    w.table.sortByColumn(1, Qt.SortOrder.AscendingOrder)
    w.tabs.setCurrentIndex(0)
    w.table.setFocus()
    w.table.setCurrentIndex(w.table_proxy.index(0, 1))
    wait(w.details.statsReady)
    spin(1500)
    jobs.pool.waitForDone(120_000)
    before = dict(getattr(jobs, "started", {}))
    rss0, peak0 = rss_now_mb(), rss_peak_mb()
    cpu0, t0 = time.process_time(), time.perf_counter()
    for _ in range(30):  # a held Down key: ~33 rows a second
        QTest.keyClick(w.table, Qt.Key.Key_Down)
        spin(30)
    moved = time.perf_counter() - t0
    target = w.details.selection.title
    while not (w.details.last_stats is not None and w.details.selection.title == target
               and jobs.pool.activeThreadCount() == 0):
        spin(20)
        if time.perf_counter() - t0 > 600:
            break
    out["last_shown_after_moves_s"] = time.perf_counter() - t0 - moved
    out["wall_s"] = time.perf_counter() - t0
    out["cpu_s"] = time.process_time() - cpu0
    out["rss_before_mb"] = rss0
    out["peak_rss_mb"] = rss_peak_mb()
    out["peak_rss_before_moves_mb"] = peak0
    out["selected"] = target
    after = dict(getattr(jobs, "started", {}))
    out["jobs_run"] = {k: after.get(k, 0) - before.get(k, 0) for k in after} if after else None
    w.close()
    jobs.pool.waitForDone(120_000)
print("RESULT " + json.dumps(out), flush=True)
app.quit()
"""


RSS_CAP_GB = 10.0  #: a child past this resident size is killed (the machine is shared): recorded as such


def _rss_gb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30
    except (OSError, ValueError, IndexError):
        return 0.0


def job_scenario(root: Path, what: str, path: Path, *extra: str) -> dict:
    """Run one jobs scenario in a child process with ``root`` (a checkout of the project) first on sys.path. A child
    past ``RSS_CAP_GB`` is killed and reported as ``{"killed_at_gb": ..., "after_s": ...}``."""
    env = dict(os.environ, QT_QPA_PLATFORM=os.environ.get("QT_QPA_PLATFORM", "offscreen"), HF_HUB_OFFLINE="1",
               PYTHONPATH=str(root))
    t0 = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-c", _JOBS_CHILD, what, str(path), *extra], env=env, cwd=root,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0.0
    while child.poll() is None:
        peak = max(peak, _rss_gb(child.pid))
        if peak > RSS_CAP_GB:
            child.kill()
            child.communicate()
            return {"killed_at_gb": RSS_CAP_GB, "after_s": time.perf_counter() - t0}
        if time.perf_counter() - t0 > 1800:
            child.kill()
            child.communicate()
            return {"timed_out_s": 1800}
        time.sleep(0.2)
    out, err = child.communicate()
    line = next((ln for ln in out.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"{what} on {root} failed (exit {child.returncode}): {err[-2000:]}")
    return json.loads(line[len("RESULT "):])


def machine_load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min) / {five:.1f} (5 min) on {os.cpu_count()} CPUs"


def jobs_section(a: argparse.Namespace) -> list[str]:
    roots = [("now", ROOT)] + ([("before", a.before)] if a.before else [])
    rows_close, rows_moves = [], []
    for label, root in roots:
        for after in ("4", "90"):  # 4 s: close early; 90 s: memory over dozens of tensors checked
            c = job_scenario(root, "close", a.llama, after)
            rows_close.append((f"{label}, closed after {after} s", c))
        m = job_scenario(root, "moves", a.moe)
        rows_moves.append((label, m))
    lines = ["", "## Close during a job, and 30 quick moves (one child process per run)", "",
             f"Machine at the time: {machine_load()} (other helpers share the CPUs: wall times stretch, CPU-seconds "
             "less so). " + (f"`before` = {a.before}, {a.before_note or 'the project as it was before issue 10' + chr(39) + 's fixes'}."
                              if a.before else ""),
             "", f"**Close during a job**: {a.llama.name} (Llama-2-70B shapes, sparse; its largest tensor is 262M values, "
             "0.49 GiB in bf16), File › Init › Check for untrained tensors, close the window 4 s or 90 s later. Peak "
             "RSS of the whole process (window, report, init check).", "",
             "| build | close() returns after | worker stopped after | CPU-seconds after close | tensors checked "
             "| peak RSS |", "|---|---:|---:|---:|---:|---:|"]
    def killed(r: dict) -> str | None:
        if "killed_at_gb" in r:
            return f"killed at the {r['killed_at_gb']:.0f} GB RSS cap after {r['after_s']:.0f} s"
        if "timed_out_s" in r:
            return f"still running after {r['timed_out_s']} s"
        return None

    for label, c in rows_close:
        if killed(c):
            lines.append(f"| {label} | {killed(c)} | | | | |")
            continue
        lines.append(f"| {label} | {c['close_s']:.2f} s | {c['worker_stopped_s']:.2f} s | {c['cpu_after_close_s']:.1f} s "
                     f"| {c['tensors_checked_before_close']} | {c['peak_rss_mb'] / 1024:.2f} GB |")
    lines += ["", f"**30 quick Down moves** through the per-expert rows of {a.moe.name} (filter `mlp.experts.`, ~33 "
              "rows/s), until the last row's histogram is drawn and no job is left.", "",
              "| build | last row drawn after the moves | wall | CPU-seconds | peak RSS (before the moves) | jobs run |",
              "|---|---:|---:|---:|---:|---|"]
    for label, m in rows_moves:
        if killed(m):
            lines.append(f"| {label} | {killed(m)} | | | | |")
            continue
        jr = ", ".join(f"{k} {v}" for k, v in sorted((m.get("jobs_run") or {}).items()) if v) or "(not counted)"
        lines.append(f"| {label} | {m['last_shown_after_moves_s']:.2f} s | {m['wall_s']:.2f} s | {m['cpu_s']:.1f} s | "
                     f"{m['peak_rss_mb'] / 1024:.2f} GB ({m['peak_rss_before_moves_mb'] / 1024:.2f} GB) | {jr} |")
    return lines


def versions() -> str:
    import PySide6
    import torch
    import transformers

    return (f"Python {sys.version.split()[0]}, PySide6 {PySide6.__version__}, torch {torch.__version__}, "
            f"transformers {transformers.__version__}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--moe", type=Path, default=Path("/tmp/bench_moe"), help="sparse MoE checkpoint folder (made if absent)")
    p.add_argument("--llama", type=Path, default=Path("/tmp/bench_llama70b"), help="sparse Llama-2-70B folder (made if absent)")
    p.add_argument("--no-panels", action="store_true", help="the bare main window, without the plan editor")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--before", type=Path, default=None, help="another checkout of the project, measured side by side "
                   "for close-during-job and quick moves (e.g. a worktree of the commit before issue 10)")
    p.add_argument("--before-note", default="", help="what the --before checkout is (said in the results)")
    p.add_argument("--only", choices=("all", "jobs"), default="all", help="jobs: only close-during-job and quick moves "
                   "(merged into results/gui.md, replacing that section)")
    a = p.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    for kind, folder in (("moe", a.moe), ("llama70b", a.llama)):
        if not (folder / "config.json").is_file():
            subprocess.run([sys.executable, str(HERE / "make_sparse_checkpoints.py"), kind, str(folder)], check=True)

    out = HERE / "results" / "gui.md"
    if a.only == "jobs":
        old = out.read_text() if out.is_file() else "# GUI responsiveness\n"
        head = old.split("\n## Close during a job", 1)[0].rstrip("\n")
        text = head + "\n" + "\n".join(jobs_section(a)) + f"\n\nVersions: {versions()}.\n"
        print(text)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, out)
        return 0
    ours = [first_paint("ours") for _ in range(a.runs)]
    naive = [first_paint("naive") for _ in range(a.runs)]
    lines = ["# GUI responsiveness", "", f"Machine: {os.cpu_count()} CPUs (shared), Qt platform `{os.environ['QT_QPA_PLATFORM']}`; "
             f"median of {a.runs} runs for first paint.", "",
             "## Time to first paint (process start → first paint event of the main window)", "",
             "| window | first paint | torch imported at paint |", "|---|---:|---|"]
    med = lambda xs: sorted(x[0] for x in xs)[len(xs) // 2]  # noqa: E731
    lines.append(f"| ckpt-explorer (torch/transformers imported in a worker, after show) | {med(ours):.2f} s | {ours[0][1]} |")
    lines.append(f"| naive: import torch + transformers, then show | {med(naive):.2f} s | {naive[0][1]} |")
    rows = stalls([("MoE", a.moe), ("Llama-70B", a.llama)], panels=not a.no_panels)
    lines += ["", "## Worst GUI-thread stall (10 ms QTimer heartbeat)", "",
              f"MoE = {a.moe.name}: DeepSeek-V3 shapes, 257 sparse shards, 46,183 tensors; Llama-70B = {a.llama.name}: "
              "Llama-2-70B shapes, 27 sparse shards, 723 tensors (131 GB apparent). One window"
              + ("" if a.no_panels else " with the plan editor installed, as `ckpt-explorer open` shows it") + ".", "",
              "| checkpoint | action | wall time | worst stall |", "|---|---|---:|---:|"]
    lines += [f"| {name} | {label} | {dt:.2f} s | {1000 * st:.0f} ms |" for name, label, dt, st in rows]
    later = [r for r in rows[2:]]
    worst = max(later, key=lambda r: r[3])
    lines += ["", f"Worst stall after the first open: {1000 * worst[3]:.0f} ms ({worst[0]}: {worst[1]}); "
              f"first open: {1000 * rows[1][3]:.0f} ms; idle baseline: {1000 * rows[0][3]:.0f} ms."]
    lines += ["", "What keeps these low: the table filters and sorts inside its model (numpy masks over lower-cased "
              "search texts, sort permutations precomputed in the worker; one cheap reset), the tree proxy's "
              "`filterAcceptsRow` is a list look-up in visible flags (matches + ancestors, one numpy pass) and it "
              "re-maps with `invalidate()`; typing is debounced; no cyclic GC runs while a report is built "
              "(`gc.freeze` afterwards), which removed ~0.3 s collections that held the GIL; torch keeps one core "
              "free for the GUI thread.",
              "What remains: the first open pays the one-time import of torch/transformers in the worker, and a C "
              "extension's initialisation holds the GIL for a few hundred ms; while statistics of multi-GB tensors "
              "stream in workers, the GUI thread can wait for a core on this shared 2-CPU machine (the GUI thread "
              "itself paints the histogram in ~10-35 ms)."]
    lines += jobs_section(a)
    lines += ["", f"Versions: {versions()}."]
    text = "\n".join(lines) + "\n"
    print(text)
    out.parent.mkdir(exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, out)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
