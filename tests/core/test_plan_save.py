"""save_plan never overwrites an input: `plan -o config.json` (or the checkpoint) is refused, plans are replaced."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from explorer.cli import main
from explorer.core.errors import PlanError
from explorer.core.plan import Plan, load_plan, save_plan
from tests.helpers import save_tiny


def _sums(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_refuses_non_plan_files_and_folders(tmp_path: Path) -> None:
    cfg = tmp_path / "config.json"
    cfg.write_text('{"model_type": "bert"}')
    with pytest.raises(PlanError, match=r"config.json: exists and is not a plan file; refusing to overwrite it$"):
        save_plan(Plan(), cfg)
    assert cfg.read_text() == '{"model_type": "bert"}'
    with pytest.raises(PlanError, match=r": is a folder; give a file name such as .*plan.json$"):
        save_plan(Plan(), tmp_path)


def test_replaces_an_existing_plan_or_empty_file(tmp_path: Path) -> None:
    p = tmp_path / "plan.json"
    save_plan(Plan(arch="A"), p)
    save_plan(Plan(arch="B"), p)
    assert load_plan(p).arch == "B"
    e = tmp_path / "empty.json"
    e.touch()
    save_plan(Plan(arch="C"), e)
    assert load_plan(e).arch == "C"


def test_cli_plan_output_over_the_config_is_refused(tmp_path: Path, capsys) -> None:
    src = tmp_path / "src"
    src.mkdir()
    save_tiny("bert", "BertModel", src)
    before = _sums(src)
    for target in ("config.json", "model.safetensors"):
        capsys.readouterr()
        code = main(["plan", str(src), "--arch", "BertForSequenceClassification", "-o", str(src / target)])
        err = capsys.readouterr().err
        assert code == 2
        assert err == f"ckpt-explorer: error: {src / target}: exists and is not a plan file; refusing to overwrite it\n"
    assert _sums(src) == before
