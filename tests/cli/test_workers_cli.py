"""`--workers N` on the whole-checkpoint commands: the same JSON for 1 and 2 workers; a bad N is one line, exit 2."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from explorer.cli import main


def _pair(tmp_path: Path) -> tuple[str, str]:
    g = torch.Generator().manual_seed(3)
    a = {"w": torch.randn(600, 700, generator=g), "b": torch.randn(5000, generator=g).to(torch.bfloat16),
         "ids": torch.arange(1000)}
    b = dict(a, w=a["w"] + 1e-3 * torch.randn(600, 700, generator=g))
    save_file(a, tmp_path / "a.safetensors")
    save_file(b, tmp_path / "b.safetensors")
    return str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors")


def test_stats_and_diff_give_the_same_json_for_one_and_two_workers(capsys, tmp_path: Path) -> None:
    a, b = _pair(tmp_path)
    outs = {}
    for cmd in (["stats", a], ["diff", a, b]):
        for n in ("1", "2"):
            capsys.readouterr()
            main([*cmd, "--json", "--workers", n])
            outs[(cmd[0], n)] = json.loads(capsys.readouterr().out)
    assert outs[("stats", "1")] == outs[("stats", "2")]
    assert outs[("diff", "1")] == outs[("diff", "2")]
    w = {t["name"]: t for t in outs[("diff", "2")]["tensors"]}
    assert w["w"]["status"] == "changed" and w["b"]["status"] == "same"


@pytest.mark.parametrize("bad", ["0", "-2", "two", "1.5"])
def test_a_bad_worker_count_is_one_line_exit_2(capsys, tmp_path: Path, bad: str) -> None:
    a, b = _pair(tmp_path)
    for cmd in (["stats", a], ["diff", a, b]):
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            main([*cmd, f"--workers={bad}"])
        err = capsys.readouterr().err
        assert e.value.code == 2 and len(err.strip().splitlines()) == 1
        assert "--workers" in err and "whole number from 1 to" in err and repr(bad) in err
