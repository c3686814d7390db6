"""CLI output helpers: JSON on stdout, sizes, the progress line on a terminal."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from explorer.cli import main
from explorer.cli.common import print_json


def test_print_json_never_emits_nan(capsys) -> None:
    print_json({"a": math.nan, "b": [1.0, math.inf], "c": {"d": -math.inf}, "e": 2.5})
    text = capsys.readouterr().out
    assert json.loads(text) == {"a": None, "b": [1.0, None], "c": {"d": None}, "e": 2.5}
    assert "NaN" not in text and "Infinity" not in text


def test_sizes_are_labelled_in_binary_units() -> None:
    from explorer.cli.common import human_bytes

    assert human_bytes(512) == "512 B"
    assert human_bytes(90868376) == "86.7 MiB"
    assert human_bytes(3 * 2**40) == "3.0 TiB"


class _Tty:
    def __init__(self) -> None:
        self.text = ""

    def write(self, s: str) -> int:
        self.text += s
        return len(s)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return True


def test_one_progress_helper_on_a_terminal_only(capsys, bert: Path, monkeypatch, tmp_path: Path) -> None:
    from explorer.cli.common import StderrProgress, stderr_progress

    assert stderr_progress("x") is None  # pytest's stderr is not a terminal: pipes and CI logs stay clean
    tty = _Tty()
    monkeypatch.setattr("sys.stderr", tty)
    bar = stderr_progress("export", show_bytes=True)
    assert isinstance(bar, StderrProgress)
    bar(512, 2048, "a.weight")
    assert tty.text == "\rexport:  25%  512 B / 2.0 KiB  a.weight"
    bar(2048, 2048, "b.weight")
    assert tty.text.endswith("\r" + " " * len("export: 100%  2.0 KiB / 2.0 KiB  b.weight") + "\r")
    tty.text = ""
    assert main(["stats", str(bert), "--json"]) == 0
    assert "stats:" in tty.text and "100%" in tty.text and tty.text.endswith("\r")
    json.loads(capsys.readouterr().out)
