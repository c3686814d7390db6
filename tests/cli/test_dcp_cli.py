"""DCP folders through the CLI: report, stats, plain export (no --plan), and one-line errors on bad input."""
from __future__ import annotations

import json

import torch


from tests.dcp_helpers import handmade, save_no_dist, tiny_llama
from tests.helpers import run_cli


def test_report_stats_and_plain_export(tmp_path, capsys):
    from safetensors.torch import load_file

    m = tiny_llama()
    sd = m.state_dict()
    ck = save_no_dist(tmp_path / "ck", {"model": sd, "optim": {"state": {"x": {"exp_avg": torch.ones(3)}}}})
    m.config.save_pretrained(tmp_path / "cfg")
    code, out, err = run_cli(capsys, "report", str(ck), "--config", str(tmp_path / "cfg"))
    assert code == 0, err
    assert "dcp" in out and "optimizer state" in out
    code, out, _ = run_cli(capsys, "stats", str(ck), "lm_head.weight", "--json")
    assert code == 0 and json.loads(out)
    code, out, err = run_cli(capsys, "export", str(ck), "-o", str(tmp_path / "hf"), "--config", str(tmp_path / "cfg"), "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["tensors"] == len(sd) and res["source_format"] == "dcp"
    got = load_file(tmp_path / "hf" / "model.safetensors")
    assert set(got) == set(sd) and all(torch.equal(got[n], v) for n, v in sd.items())
    assert (tmp_path / "hf" / "config.json").is_file()
    code, out, err = run_cli(capsys, "export", str(ck), "--wrapper", "optim", "-o", str(tmp_path / "opt"), "--json")
    assert code == 0, err
    assert list(load_file(tmp_path / "opt" / "model.safetensors")) == ["state.x.exp_avg"]


def test_bad_dcp_is_one_line_exit_2(tmp_path, capsys):
    f = handmade(tmp_path / "ck", {"w": (torch.randn(4), [((0,), (2,)), ((2,), (2,))])})
    (f / "__1_0.distcp").unlink()
    for argv in (["report", str(f)], ["export", str(f), "-o", str(tmp_path / "o")]):
        code, out, err = run_cli(capsys, *argv)
        assert code == 2 and "Traceback" not in err
        assert len(err.strip().splitlines()) == 1 and "__1_0.distcp" in err and "missing" in err
    assert not (tmp_path / "o").exists()
