"""fmt.safe_text / json_safe: every control, bidi and invisible format character is escaped, nothing else is."""
from __future__ import annotations

import json
import sys
import unicodedata

from explorer.core.fmt import json_safe, needs_escape, safe_lines, safe_text

# what a terminal or a reader can be attacked with: controls (C0, DEL, C1), format characters (bidi overrides and
# isolates, zero-width characters, tags, ...), line/paragraph separators, and lone surrogates (unprintable)
UNSAFE_CATEGORIES = {"Cc", "Cf", "Zl", "Zp", "Cs"}


def test_escapes_exactly_the_unsafe_unicode_categories() -> None:
    missed, extra = [], []
    for c in range(sys.maxunicode + 1):
        ch = chr(c)
        cat = unicodedata.category(ch)
        if cat in UNSAFE_CATEGORIES and not needs_escape(ch):
            missed.append(hex(c))
        # beyond the categories only code points this Python's Unicode database leaves unassigned (kept so that
        # format characters added by later Unicode versions, e.g. U+13439..U+1343F in 15.0, are escaped too)
        if needs_escape(ch) and cat not in UNSAFE_CATEGORIES and cat != "Cn":
            extra.append((hex(c), cat))
    assert not missed and not extra, (missed[:20], extra[:20])


def test_escapes_are_visible_and_keep_everything_else() -> None:
    assert safe_text("a\x1b]0;pwn\x07b") == "a\\x1b]0;pwn\\x07b"
    assert safe_text("x\n  MISSING (0)") == "x\\x0a  MISSING (0)"
    assert safe_text("\x00\x7f\x85\u202e\u2028\ufeff\U000e0041\ud800") == "\\x00\\x7f\\x85\\u202e\\u2028\\ufeff\\U000e0041\\ud800"
    plain = "encoder.layer.0.attention.self.query.weight — µ ü 中文 🙂 \u200a"  # ordinary non-ASCII stays as it is
    assert safe_text(plain) == plain and not needs_escape(plain)
    assert safe_lines("name\x1b[2J\nsecond\u202e line") == "name\\x1b[2J\nsecond\\u202e line"


def test_json_safe_is_the_same_document_with_no_unsafe_character() -> None:
    names = ["a\x1b]52;c;cHduZWQ=\x07", "b\x7f\x85", "c\u202e\u2066", "d\u2028\u2029", "e\U000e0041", "f\ud800", "ok µ"]
    text = json.dumps({"tensors": names}, ensure_ascii=False)
    safe = json_safe(text)
    assert not needs_escape(safe)
    assert json.loads(safe) == {"tensors": names}
    assert "\\u001b]52" in safe and "\\u202e" in safe and "\\udb40\\udc41" in safe and "ok µ" in safe
