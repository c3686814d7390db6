"""The commands on remote sources (a loopback Hub stand-in): same output as on the local files, one-line errors."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from explorer.cli import main
from tests.helpers import save_tiny
from tests.remote_helpers import MINILM_REPO, minilm_hub

REPO = MINILM_REPO


hub = minilm_hub  # the fixture, under the name the tests use


def run(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_report_json_of_repo_equals_local(hub, capsys, minilm):
    code, out, err = run(capsys, "report", REPO, "--json")
    assert code == 0, err
    remote = json.loads(out)
    code, out, _ = run(capsys, "report", minilm, "--json")
    local = json.loads(out)
    assert remote["counts"] == local["counts"] and remote["missing"] == local["missing"] == []
    assert [t["name"] for t in remote["tensors"]] == [t["name"] for t in local["tensors"]]
    assert remote["checkpoint"] == f"hf://{REPO}/model.safetensors"
    assert any("header-only" in n for n in remote["notes"])


def test_config_from_hub_and_revision(hub, capsys, tmp_path, minilm):
    bare = tmp_path / "weights-only"
    bare.mkdir()
    (bare / "model.safetensors").symlink_to(Path(minilm) / "model.safetensors")
    code, out, err = run(capsys, "report", str(bare / "model.safetensors"), "--config", REPO)
    assert code == 0, err
    assert "BertModel" in out and "0 missing" in out
    other = tmp_path / "gpt2"
    save_tiny("gpt2", "GPT2LMHeadModel", other)
    hub.add_repo(REPO, other, revision="gpt2-branch")
    code, out, err = run(capsys, "report", REPO, "--revision", "gpt2-branch")
    assert code == 0, err and "GPT2LMHeadModel" in out


def test_stats_and_diff_against_the_hub(hub, capsys, minilm):
    name = "encoder.layer.1.output.dense.weight"
    code, out, err = run(capsys, "stats", REPO, name, "--json")
    assert code == 0, err
    remote = json.loads(out)["tensors"]
    _, out, _ = run(capsys, "stats", minilm, name, "--json")
    assert remote == json.loads(out)["tensors"]
    hub.reset_counts()
    code, out, err = run(capsys, "diff", minilm, REPO)
    assert code == 0, err
    assert "104 same, 0 changed" in out


def test_diff_takes_a_revision_per_side(hub, capsys, tmp_path, minilm):
    """diff A B: each side its own revision (--revision-a / --revision-b, or inline org/name@REV)."""
    import torch
    from safetensors.torch import load_file, save_file

    tuned = tmp_path / "tuned"
    tuned.mkdir()
    sd = load_file(str(Path(minilm) / "model.safetensors"))
    sd["pooler.dense.bias"] = sd["pooler.dense.bias"] + 1.0
    save_file(sd, str(tuned / "model.safetensors"))
    (tuned / "config.json").write_text((Path(minilm) / "config.json").read_text())
    hub.add_repo(REPO, tuned, revision="tuned")
    code, out, err = run(capsys, "diff", REPO, REPO, "--revision-b", "tuned")
    assert code == 1, err
    assert "103 same, 1 changed" in out and "pooler.dense.bias" in out
    code, out, err = run(capsys, "diff", REPO, f"{REPO}@tuned")  # the same, inline
    assert code == 1 and "103 same, 1 changed" in out
    code, out, err = run(capsys, "diff", REPO, REPO, "--revision-a", "tuned", "--revision-b", "tuned")
    assert code == 0 and "104 same, 0 changed" in out
    code, out, err = run(capsys, "diff", f"{REPO}@main", REPO, "--revision-a", "tuned")
    assert code == 2 and "disagree" in err and "\n" not in err.strip()


@pytest.mark.parametrize("argv,says", [
    (["report", "nobody/nothing"], "no such local file or folder, and hf://nobody/nothing: no such repo"),
    (["report", REPO, "--revision", "nope"], "no such revision"),
    (["stats", f"hf://{REPO}/missing.safetensors"], "no such file in the repo"),
    (["report", "hf://datasets/org/x"], "only model repos"),
])
def test_errors_are_one_line(hub, capsys, argv, says):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert says in err


def test_token_never_printed(hub, capsys, monkeypatch, minilm):
    hub.add_repo("org/private", Path(minilm), token="hf_realtoken")
    monkeypatch.setenv("HF_TOKEN", "hf_TOPSECRETVALUE")
    code, out, err = run(capsys, "report", "org/private")
    assert code == 2 and "hf auth login" in err
    assert "TOPSECRET" not in out + err
