"""Prefix trouble: the printed key mapping is JSON and the printed command line, pasted back, gives a clean
result; init-check does not give an all-clear (exit 0) when it could check almost nothing."""
from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from explorer.cli import main
from tests.helpers import run_cli, save_tiny


@pytest.fixture
def ddp(tmp_path: Path) -> Path:
    """A tiny BertModel checkpoint saved with the DDP ``module.`` prefix, config beside it."""
    save_tiny("bert", "BertModel", tmp_path)
    sd = load_file(tmp_path / "model.safetensors")
    save_file({"module." + k: v for k, v in sd.items()}, tmp_path / "model.safetensors")
    return tmp_path


def _rerun_line(out: str) -> list[str]:
    m = re.search(r"ckpt-explorer (.*--key-mapping .*)$", out, re.M)
    assert m, out
    return shlex.split(m.group(1))


def test_report_prints_pasteable_json_mapping_and_command(capsys, ddp):
    assert main(["report", str(ddp)]) == 1
    out = capsys.readouterr().out
    assert 'Suggested key_mapping: {"^module\\\\.": ""}' in out  # JSON, not a Python repr
    assert "{'" not in out
    argv = _rerun_line(out)
    assert argv[0] == "report" and argv[-2] == "--key-mapping"
    assert json.loads(argv[-1]) == {r"^module\.": ""}
    assert main(argv) == 0  # pasted back: a clean report
    out = capsys.readouterr().out
    assert '  key mapping applied: {"^module\\\\.": ""}' in out
    assert "0 missing, 0 unexpected, 0 mismatched" in out


def test_init_check_with_prefix_trouble_is_a_finding(capsys, ddp):
    n = len(load_file(ddp / "model.safetensors"))
    capsys.readouterr()
    assert main(["init-check", str(ddp), "--json"]) == 1
    js = json.loads(capsys.readouterr().out)
    assert js["not_checked"] == n and js["prefix_trouble"] is True and js["init_like"] == []
    assert main(["init-check", str(ddp)]) == 1
    out = capsys.readouterr().out
    assert f"{n} of {n} tensors do not load into the model and were not checked" in out
    assert "--auto-fix" in out
    argv = _rerun_line(out)
    assert argv[0] == "init-check"
    main([*argv, "--json"])  # pasted back: everything is checked (a fresh tiny model is flagged: exit 1)
    js = json.loads(capsys.readouterr().out)
    assert js["not_checked"] == 0 and js["prefix_trouble"] is False
    assert js["notes"] == ['key mapping applied: {"^module\\\\.": ""}']
    assert main(["init-check", str(ddp), "--auto-fix", "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["not_checked"] == 0


def test_key_mapping_file_errors_name_the_file(capsys, bert: Path, tmp_path: Path) -> None:
    bad = tmp_path / "km.json"
    bad.write_text("{oops")
    code, out, err = run_cli(capsys, "report", str(bert), "--key-mapping", str(bad))
    assert code == 2 and out == ""
    assert err.startswith(f"ckpt-explorer: error: --key-mapping {bad}: invalid JSON")
    code, _, err = run_cli(capsys, "report", str(bert), "--key-mapping", str(tmp_path / "missing.json"))
    assert code == 2
    assert f"--key-mapping {tmp_path / 'missing.json'}: no such file" in err
