"""DeepSpeed ZeRO folders through the CLI: report against the config beside them, stats of a parameter streamed
from both ranks' partitions, a plain export to sharded HF safetensors, and one-line errors on bad folders."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from explorer.cli import main
from tests.zero_helpers import oracle

pytest.importorskip("deepspeed")


def _run(capsys, *argv):
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_report_stats_and_export(zero_checkpoints, capsys, tmp_path):
    from safetensors.torch import load_file

    folder = zero_checkpoints["z2"]
    want = oracle(folder)
    code, out, err = _run(capsys, "report", str(folder))
    assert code == 0, err
    assert "deepspeed-zero" in out and "ZeRO stage 2" in out
    code, out, err = _run(capsys, "stats", str(folder), "model.layers.1.self_attn.q_proj.weight", "--json")
    assert code == 0, err
    st = json.loads(out)["tensors"][0]
    v = want["model.layers.1.self_attn.q_proj.weight"].detach().double()
    assert st["numel"] == v.numel() and st["min"] == v.min().item() and st["max"] == v.max().item()
    assert st["mean"] == pytest.approx(v.mean().item(), rel=1e-12)
    code, out, err = _run(capsys, "export", str(folder), "-o", str(tmp_path / "hf"), "--max-shard-size", "30KB", "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["source_format"] == "deepspeed-zero" and res["tensors"] == len(want)
    files = sorted((tmp_path / "hf").glob("model-*.safetensors"))
    assert len(files) > 1 and (tmp_path / "hf" / "model.safetensors.index.json").is_file()
    assert (tmp_path / "hf" / "config.json").is_file()
    got = {}
    for f in files:
        got.update(load_file(f))
    assert set(got) == set(want) and all(torch.equal(got[n], v) for n, v in want.items())


def test_bad_zero_folder_is_one_line_exit_2(zero_checkpoints, capsys, tmp_path):
    f = tmp_path / "z3"
    shutil.copytree(zero_checkpoints["z3"], f)
    gone = f / "global_step1" / "zero_pp_rank_1_mp_rank_00_optim_states.pt"
    gone.unlink()
    for argv in (["report", str(f)], ["export", str(f), "-o", str(tmp_path / "o")]):
        code, out, err = _run(capsys, *argv)
        assert code == 2 and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1 and gone.name in err and "missing" in err
    assert not (tmp_path / "o").exists()
