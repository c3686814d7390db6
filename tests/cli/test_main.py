"""The ckpt-explorer entry point: --version, commands, a path alone opens the window."""
from __future__ import annotations

from pathlib import Path

import pytest

from explorer import __version__
from explorer.cli import build_parser, main
from tests.helpers import save_tiny


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_version(capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"ckpt-explorer {__version__}"


def test_mistyped_command_is_an_error_not_a_window(capsys, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = _run(capsys, "reprot", "model")
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [err.strip()]
    assert "reprot: neither a command" in err and "report" in err


def _err_line(capsys, argv: list[str]) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(scope="module")
def bert(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("bert")
    save_tiny("bert", "BertModel", d)
    return d


def test_open_demo_with_a_checkpoint_is_an_error(capsys, bert):
    line = _err_line(capsys, ["open", str(bert), "--demo"])
    assert line == "ckpt-explorer: error: --demo opens the built-in demo; do not also give a checkpoint"


def test_open_help_has_a_description():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    desc = sub.choices["open"].description
    assert desc and "window" in desc and "--demo" in desc
