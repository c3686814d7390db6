"""Human-readable numbers shared by the CLI and the GUI (one place, so both say the same thing)."""
from __future__ import annotations

import math
import re

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


# Control characters (C0, DEL, C1), bidi and other invisible format characters (Cf: RLO, ZWJ, BOM, ...),
# and line/paragraph separators: a tensor name holding one of them could redraw a terminal (CSI/OSC), write
# the clipboard (OSC 52), forge report lines (newline) or reorder what a reader sees (RLO).
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb"
    "\U000e0000-\U000e007f]"
)


def _escape_char(m: re.Match[str]) -> str:
    c = ord(m.group())
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}" if c < 0x10000 else f"\\U{c:08x}"


def safe_text(s: object) -> str:
    """``str(s)`` with every control, bidi or invisible format character shown as a visible escape
    (``\\x1b``, ``\\u202e``): the one function every text output and the window use for names from a file."""
    t = str(s)
    return _UNSAFE.sub(_escape_char, t) if _UNSAFE.search(t) else t
