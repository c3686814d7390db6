"""Milestones of a window's life for benchmarks and screenshots, off unless asked for by the environment.

``CKPT_EXPLORER_TIMING=FILE``: each milestone appends one JSON line ``{"event": ..., "t": <time.time()>}`` to FILE,
after the window has painted it — ``shown`` (the empty window), ``preview`` (a cache miss: the tensors from the
headers, before torch is imported), ``colours`` (the report shown). ``CKPT_EXPLORER_SHOTS=DIR``: a PNG of the window
at each milestone, ``DIR/<event>.png``. ``benchmarks/bench_first_paint.py`` reads both.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any


def mark(event: str, window: Any = None) -> None:
    log, shots = os.environ.get("CKPT_EXPLORER_TIMING"), os.environ.get("CKPT_EXPLORER_SHOTS")
    if not log and not shots:
        return
    if window is not None:
        window.repaint()  # painted now, not at the next event-loop turn
    t = time.time()
    if log:
        with open(log, "a", encoding="utf-8") as f:
            f.write(json.dumps({"event": event, "t": t}) + "\n")
    if shots and window is not None:
        window.grab().save(os.path.join(shots, f"{event}.png"))
