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


# Control characters (C0, DEL, C1), bidi and other invisible format characters (Unicode category Cf: RLO, ZWJ,
# BOM, Arabic number signs, tags, ...), line/paragraph separators (Zl/Zp) and lone surrogates (Cs, which a JSON
# header's "\ud800" produces and no UTF-8 stream can print): a tensor name holding one of them could redraw a
# terminal (CSI/OSC), write the clipboard (OSC 52), forge report lines (newline), reorder what a reader sees (RLO)
# or make printing fail. tests/core/test_fmt.py checks this set against unicodedata.
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f"
    "\u2028-\u202e\u2060-\u206f\ud800-\udfff\ufeff\ufff9-\ufffb\U000110bd\U000110cd\U00013430-\U0001343f"
    "\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0000-\U000e007f]"
)


def _escape_char(m: re.Match[str]) -> str:
    c = ord(m.group())
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}" if c < 0x10000 else f"\\U{c:08x}"


def _clean(t: str) -> bool:
    """No character of ``_UNSAFE`` in ``t``. An ASCII string (CPython knows that without looking) can only hold the
    C0 controls and DEL, exactly the ASCII characters ``str.isprintable`` rejects: one C loop instead of the
    character class, which matters for the 20 MB JSON report of a 47k-tensor checkpoint."""
    return t.isprintable() if t.isascii() else _UNSAFE.search(t) is None


def safe_text(s: object) -> str:
    """``str(s)`` with every control, bidi or invisible format character shown as a visible escape
    (``\\x1b``, ``\\x0a``, ``\\u202e``): the one function every text output and the window use for names from a file."""
    t = str(s)
    return t if _clean(t) else _UNSAFE.sub(_escape_char, t)


def safe_lines(s: object) -> str:
    """``safe_text`` line by line: for text that is multi-line by design (a tooltip); the line breaks stay."""
    return "\n".join(safe_text(line) for line in str(s).split("\n"))


def needs_escape(s: str) -> bool:
    """True if ``safe_text(s)`` would change ``s``."""
    return not _clean(s)


def _json_escape_char(m: re.Match[str]) -> str:
    c = ord(m.group())
    if c < 0x10000:
        return f"\\u{c:04x}"
    c -= 0x10000
    return f"\\u{0xD800 + (c >> 10):04x}\\u{0xDC00 + (c & 0x3FF):04x}"  # JSON spells astral characters as a surrogate pair


def json_safe(text: str) -> str:
    """JSON text (``json.dumps(..., ensure_ascii=False)``) with the characters ``safe_text`` escapes written as
    JSON ``\\uXXXX`` escapes: the same document (``json.loads`` gives the same values), safe to print. json.dumps
    already escapes U+0000..U+001F but not DEL, C1 controls, bidi marks or U+2028."""
    return text if _clean(text) else _UNSAFE.sub(_json_escape_char, text)


def pattern_text(p: object) -> str:
    """A user's pattern (glob, regex, key) quoted as they typed it: ``'^module\\.'``, not repr's doubled
    backslashes; control and bidi characters escaped as everywhere; a non-string as repr."""
    if not isinstance(p, str):
        return repr(p)
    q = '"' if "'" in p and '"' not in p else "'"
    return q + safe_text(p) + q
