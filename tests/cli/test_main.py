"""The ckpt-explorer entry point: --version, commands, a path alone opens the window."""
from __future__ import annotations

from pathlib import Path

import pytest

from explorer import __version__
from explorer.cli import main
from tests.helpers import cli_error_line, cli_help, run_cli


def test_version(capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"ckpt-explorer {__version__}"


def test_mistyped_command_is_an_error_not_a_window(capsys, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, "reprot", "model")
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [err.strip()]
    assert "reprot: neither a command" in err and "report" in err


def test_open_demo_with_a_checkpoint_is_an_error(capsys, bert):
    line = cli_error_line(capsys, ["open", str(bert), "--demo"])
    assert line == "ckpt-explorer: error: --demo opens the built-in demo; do not also give a checkpoint"


def test_open_help_has_a_description(capsys):
    text = cli_help(capsys, "open")
    assert "Open the explorer window on a checkpoint" in text and "--demo opens a built-in tiny example" in text
