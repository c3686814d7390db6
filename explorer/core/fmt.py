"""Human-readable numbers shared by the CLI and the GUI (one place, so both say the same thing)."""
from __future__ import annotations

import math

_BYTE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def human_bytes(n: float) -> str:
    """Binary units, labelled as such (``du -h``/``ls -lh`` agree): 90868376 -> '86.7 MiB'."""
    for unit in _BYTE_UNITS:
        if abs(n) < 1024 or unit == _BYTE_UNITS[-1]:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def human_count(n: float, *, digits: int = 2) -> str:
    """Decimal thousands for parameter counts: 22713216 -> '22.71M' (``digits`` after the point); below 1000, the integer."""
    for unit, div in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.{digits}f}{unit}"
    return str(int(n))


def short_float(v: float | None, *, digits: int = 4) -> str:
    """A figure for a narrow column: '—' for None, 'nan'/'inf' as such, ``digits`` significant digits in
    [1e-3, 1e5), scientific notation outside."""
    if v is None:
        return "—"
    if not math.isfinite(v):
        return str(v)
    if v == 0:
        return "0"
    return f"{v:.{digits}g}" if 1e-3 <= abs(v) < 1e5 else f"{v:.3e}"
