"""`ckpt-explorer report`: the JSON contract scripts depend on, exit codes, and the text summary."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from explorer.cli import main
from tests.helpers import cli_error_line, run_cli, save_tiny


def run(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["report", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys, *argv: str) -> tuple[int, dict]:
    code, out, err = run(capsys, *argv, "--json")
    assert code in (0, 1), err
    return code, json.loads(out)


@pytest.fixture(scope="module")
def prefixed(bert, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("ddp") / "ddp"
    shutil.copytree(bert, d)
    sd = load_file(d / "model.safetensors")
    save_file({"module." + k: v for k, v in sd.items()}, str(d / "model.safetensors"))
    return d


def test_json_contract_head_model(capsys, minilm):
    code, j = run_json(capsys, minilm, "--arch", "BertForSequenceClassification")
    assert code == 1  # the classifier is missing: a finding
    assert len(j["tensors"]) == 104
    t = next(x for x in j["tensors"] if x["name"] == "embeddings.word_embeddings.weight")
    assert t == {
        "name": "embeddings.word_embeddings.weight",
        "shape": [30522, 384],
        "dtype": "float32",
        "nbytes": 30522 * 384 * 4,
        "file": str(Path(minilm) / "model.safetensors"),
    }
    assert sorted(j["missing"]) == ["classifier.bias", "classifier.weight"]
    assert j["unexpected"] == [] and j["mismatched"] == []
    assert j["suggested_key_mapping"] is None
    m = next(x for x in j["matched"] if x["key"] == "bert.encoder.layer.5.attention.self.query.weight")
    assert m["how"] == ["prefix_added"] and m["source"] == ["encoder.layer.5.attention.self.query.weight"]
    assert j["counts"]["matched"] == len(j["matched"])
    assert j["arch"] == "BertForSequenceClassification"


def test_json_clean_exit_0(capsys, minilm):
    code, j = run_json(capsys, minilm)  # architectures[0] from the config beside the checkpoint
    assert code == 0
    assert j["missing"] == j["unexpected"] == j["mismatched"] == []
    assert "embeddings.position_ids" in j["ignored"]


def test_json_mismatched_triples(capsys, tmp_path):
    src = tmp_path / "cls"
    save_tiny("bert", "BertForSequenceClassification", src, num_labels=2)
    cfg = json.loads((src / "config.json").read_text())
    cfg["id2label"] = {str(i): f"L{i}" for i in range(3)}
    cfg["label2id"] = {f"L{i}": i for i in range(3)}
    (tmp_path / "c3").mkdir()
    (tmp_path / "c3" / "config.json").write_text(json.dumps(cfg))
    code, j = run_json(capsys, str(src), "--config", str(tmp_path / "c3"))
    assert code == 1
    assert ["classifier.weight", [2, 32], [3, 32]] in j["mismatched"]
    assert ["classifier.bias", [2], [3]] in j["mismatched"]
    assert "classifier.weight" in j["newly_initialized"]


def test_no_model_and_checkpoint_only(capsys, bert, tmp_path):
    code, j = run_json(capsys, str(bert), "--no-model")
    assert code == 0
    assert j["missing"] == j["unexpected"] == j["mismatched"] == [] and j["matched"] == []
    assert j["suggested_key_mapping"] is None
    assert {t["name"] for t in j["tensors"]} == set(load_file(bert / "model.safetensors"))
    lone = tmp_path / "lone.safetensors"
    shutil.copy(bert / "model.safetensors", lone)  # no config.json beside it: checkpoint-only
    code, j2 = run_json(capsys, str(lone))
    assert code == 0 and j2["model"] is None and len(j2["tensors"]) == len(j["tensors"])
    code, out, _ = run(capsys, str(lone))
    assert code == 0 and "embeddings.word_embeddings.weight" in out


def test_prefix_trouble_text_collapsed_and_auto_fix(capsys, prefixed):
    code, out, err = run(capsys, str(prefixed))
    assert code == 1
    assert "module.encoder.layer.{0..1}.attention.self.query.weight" in out
    assert "encoder.layer.{0..1}.output.dense.weight" in out
    assert "Suggested key_mapping" in out and '^module\\\\.' in out
    code, j = run_json(capsys, str(prefixed))
    assert j["suggested_key_mapping"] == {"^module\\.": ""}
    assert j["suggestion_effect"]["unexpected"] == 0 and j["suggestion_effect"]["missing"] == 0
    code, j = run_json(capsys, str(prefixed), "--auto-fix")
    assert code == 0 and j["key_mapping"] == {"^module\\.": ""}
    m = next(x for x in j["matched"] if x["key"] == "pooler.dense.weight")
    assert m["how"] == ["key_mapping"] and m["source"] == ["module.pooler.dense.weight"]
    code, j = run_json(capsys, str(prefixed), "--key-mapping", '{"^module\\\\.": ""}')
    assert code == 0


def test_plain_module_via_cli(capsys, tmp_path):
    from tests.core._plain_models import Net

    f = tmp_path / "net.pt"
    torch.save({"state_dict": {k: v.clone() for k, v in Net(layers=1).state_dict().items()}, "epoch": 2}, f)
    code, j = run_json(capsys, str(f), "--model", "tests.core._plain_models:Net", "--model-kwargs", '{"layers": 2}')
    assert code == 1
    assert j["wrapper_key"] == "state_dict"
    assert sorted(j["missing"]) == ["blocks.1.0.bias", "blocks.1.0.weight", "blocks.1.2.bias", "blocks.1.2.weight"]
    code, out, _ = run(capsys, str(f), "--model", "tests.core._plain_models:Net", "--model-kwargs", '{"layers": 2}')
    assert "blocks.1.{0,2}.bias" in out or "blocks.1.0.bias" in out
    assert "sub-dict 'state_dict'" in out


def test_text_summary_counts(capsys, minilm):
    code, out, _ = run(capsys, minilm, "--arch", "BertForMaskedLM")
    assert code == 1
    assert "matched" in out and "missing" in out
    assert "cls.predictions.transform.dense.weight" in out
    assert "\033[" not in out  # not a terminal: no colour codes


def test_report_text_names_the_other_sub_dicts(capsys, tmp_path: Path) -> None:
    f = tmp_path / "w.pt"
    torch.save({"state_dict": {"a.weight": torch.zeros(2, 2)}, "ema": {"a.weight": torch.ones(2, 2)}, "epoch": 3}, f)
    code, out, err = run_cli(capsys, "report", str(f))
    assert code == 0, err
    assert "wrapper dict: sub-dict 'state_dict' chosen; 'ema' also holds tensors (--wrapper); 'epoch' holds no tensors" in out


def test_the_wrapper_key_used_is_named_and_what_holds_no_tensors(capsys, tmp_path: Path) -> None:
    # issue 10 finding 3: Astra's {"state_dict", "meta"}: say state_dict was chosen and meta holds no tensors
    f = tmp_path / "astra.pth"
    torch.save({"state_dict": {"backbone.conv.weight": torch.zeros(2, 2)}, "meta": {"epoch": 3, "arch": "craft"}}, f)
    code, out, err = run_cli(capsys, "report", str(f))
    assert code == 0, err
    assert "wrapper dict: sub-dict 'state_dict' chosen; 'meta' holds no tensors" in out
    code, j = run_json(capsys, str(f))
    assert j["wrapper_key"] == "state_dict" and j["wrapper_others"] == ["meta"]


def test_mistyped_arch_blames_the_option_and_suggests(capsys, bert):
    line = cli_error_line(capsys, ["report", str(bert), "--arch", "BertForMaskdLM"])
    assert line == "ckpt-explorer: error: --arch BertForMaskdLM: unknown transformers model class; did you mean BertForMaskedLM?"
    assert "config.json" not in line
    line = cli_error_line(capsys, ["report", str(bert), "--arch", "LlamaForCausalLMM"])
    assert "did you mean LlamaForCausalLM?" in line  # not a bert class: found among all transformers names


def test_arch_without_a_config_says_so(capsys, tmp_path, bert):
    (tmp_path / "nocfg").mkdir()
    (tmp_path / "nocfg" / "model.safetensors").write_bytes((bert / "model.safetensors").read_bytes())
    for cmd in ("report", "init-check"):
        line = cli_error_line(capsys, [cmd, str(tmp_path / "nocfg"), "--arch", "BertModel"])
        assert "--arch BertModel needs a config: no config.json beside the checkpoint; pass --config" in line
        assert "no model given" not in line


def test_no_model_text_rolls_up_modules_and_says_why_neutral(capsys, bert, tmp_path):
    # issue 10 finding 3: a tree from the dotted names, per-module tensors / values / bytes / dtypes
    lone = tmp_path / "lone.safetensors"
    shutil.copy(bert / "model.safetensors", lone)
    code, out, _ = run(capsys, str(lone))
    assert code == 0
    assert "no model: every tensor as stored (in checkpoint)" in out
    assert "modules (from the dotted names)" in out
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("encoder.layer.{0..1} "))
    n = sum(1 for k in load_file(lone) if k.startswith("encoder.layer."))
    assert f"{n} tensors" in line and "float32" in line
    code, j = run_json(capsys, str(lone))
    assert all(c["status"] == "in_checkpoint" for c in j["checkpoint_keys"])
    assert any(m["path"] == "encoder.layer.1" for m in j["modules"])


def test_wrong_family_is_said_in_the_report(capsys, minilm):
    # issue 10 finding 4: transformers' "model of type bert to instantiate gpt2" was only on stderr
    code, out, err = run(capsys, minilm, "--arch", "GPT2LMHeadModel")
    assert code == 1
    assert "wrong model family: GPT2LMHeadModel is a 'gpt2' model but the config is 'bert'" in out
    assert "almost nothing loads" in out and "0 of " in out
    assert "re-run with --arch BertModel" in out
    assert "to instantiate a model of type" not in err  # said once, by us
    code, j = run_json(capsys, minilm, "--arch", "GPT2LMHeadModel")
    assert j["family_mismatch"]["config_model_type"] == "bert" and "BertModel" in j["family_mismatch"]["classes"]
    code, j = run_json(capsys, minilm)
    assert j["family_mismatch"] is None


def test_ddp_llama_fix_writes_the_models_own_names(capsys, tmp_path):
    """A DDP ``module.`` save of a causal LM: stripping ``module.`` and renaming it to ``model.`` both load in
    from_pretrained (it strips a leading ``model.`` itself), but only the first writes names any other loader takes."""
    model = save_tiny("llama", "LlamaForCausalLM", tmp_path / "m")
    sd = load_file(tmp_path / "m" / "model.safetensors")
    save_file({"module." + k: v for k, v in sd.items()}, str(tmp_path / "m" / "model.safetensors"))
    code, j = run_json(capsys, str(tmp_path / "m"))
    assert j["suggested_key_mapping"] == {"^module\\.": ""}
    capsys.readouterr()
    assert main(["export", str(tmp_path / "m"), "--auto-fix", "-o", str(tmp_path / "out")]) == 0
    written = set(load_file(tmp_path / "out" / "model.safetensors"))
    assert written == set(sd) and written <= set(model.state_dict())
