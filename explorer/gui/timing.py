"""Milestones of a window's life for benchmarks and screenshots, off unless asked for by the environment.

``CKPT_EXPLORER_TIMING=FILE``: each milestone appends one JSON line ``{"event": ..., "t": <time.time()>, "cpu": <the
process's CPU seconds>, "imported": [...]}`` to FILE, after the window has painted it — ``shown`` (the empty window),
``preview`` (a cache miss: the tensors from the headers, before torch is imported), ``colours`` (the report shown);
``imported`` lists which of the heavy modules (``HEAVY``) were imported by then. ``CKPT_EXPLORER_SHOTS=DIR``: a PNG
of the window at each milestone, ``DIR/<event>.png``. ``benchmarks/bench_window_start.py`` and ``bench_report_cache.py`` read both.
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

HEAVY = ("numpy", "pyqtgraph", "torch", "transformers")


def mark(event: str, window: Any = None) -> None:
    log, shots = os.environ.get("CKPT_EXPLORER_TIMING"), os.environ.get("CKPT_EXPLORER_SHOTS")
    if not log and not shots:
        return
    if window is not None:
        window.repaint()  # painted now, not at the next event-loop turn
    t = time.time()
    if log:
        cpu = os.times()
        line = {"event": event, "t": t, "cpu": cpu.user + cpu.system, "imported": [m for m in HEAVY if m in sys.modules]}
        with open(log, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")
    if shots and window is not None:
        window.grab().save(os.path.join(shots, f"{event}.png"))
