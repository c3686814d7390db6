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


def _half_trained_llama(folder: Path) -> None:
    """A real tiny Llama (transformers' own init, saved by save_pretrained) with half its tensors moved: some
    verdicts each way."""
    from safetensors.torch import load_file

    from tests.helpers import save_tiny

    save_tiny("llama", "LlamaForCausalLM", folder, num_hidden_layers=3)
    sd = load_file(folder / "model.safetensors")
    g = torch.Generator().manual_seed(1)
    for i, k in enumerate(sorted(sd)):
        if i % 2 and sd[k].is_floating_point():
            sd[k] = sd[k] * 2 + 0.01 * torch.randn(sd[k].shape, generator=g)
    save_file(sd, folder / "model.safetensors", metadata={"format": "pt"})


def test_init_check_gives_the_same_verdicts_for_one_and_two_workers(capsys, tmp_path: Path) -> None:
    from explorer.core.fresh import init_check
    from explorer.core.parallel import SerialExecutor

    _half_trained_llama(tmp_path)
    outs = {}
    for n in ("1", "2", "3"):
        capsys.readouterr()
        main(["init-check", str(tmp_path), "--json", "--workers", n])
        outs[n] = json.loads(capsys.readouterr().out)
    assert outs["1"] == outs["2"] == outs["3"]
    flagged = set(outs["2"]["init_like"])
    assert flagged and len(flagged) < len(outs["2"]["tensors"])  # some verdicts each way
    # the same as the caller's thread running every module in turn (the code before work items)
    serial = init_check(str(tmp_path), workers=SerialExecutor())
    assert [r.to_json() for r in serial] == outs["2"]["tensors"]


def test_init_check_refuses_a_bad_worker_count_in_one_line(capsys, tmp_path: Path) -> None:
    _half_trained_llama(tmp_path)
    for bad in ("0", "-1", "many"):
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            main(["init-check", str(tmp_path), f"--workers={bad}"])
        err = capsys.readouterr().err
        assert e.value.code == 2 and len(err.strip().splitlines()) == 1 and "--workers" in err
