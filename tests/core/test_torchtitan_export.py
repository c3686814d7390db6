"""torchtitan -> Hugging Face export: the renames plus the q/k RoPE row permutation torchtitan's
Llama3StateDictAdapter.to_hf applies, so the exported checkpoint computes the same logits as the model it came
from (a real transformers Llama built from a tiny config)."""
from __future__ import annotations

import json
import re

import pytest
import torch

from explorer.cli import main
from explorer.core.convert import convert_checkpoint
from explorer.core.errors import ExportError
from explorer.core.naming import TORCHTITAN_LLAMA
from tests.core.test_naming import _titan
from tests.dcp_helpers import save_no_dist, tiny_llama


def _reverse_permute(w, n_heads):  # torchtitan's from_hf: Hugging Face rows -> Meta's interleaved RoPE rows
    dim1, dim2 = w.shape
    return w.view(n_heads, 2, dim1 // n_heads // 2, dim2).transpose(1, 2).reshape(dim1, dim2).clone()


def _titan_checkpoint(tmp_path, new_style=False):
    m = tiny_llama()
    cfg = m.config
    sd = {k: v.clone() for k, v in m.state_dict().items()}
    for k in list(sd):
        if k.endswith("self_attn.q_proj.weight"):
            sd[k] = _reverse_permute(sd[k], cfg.num_attention_heads)
        elif k.endswith("self_attn.k_proj.weight"):
            sd[k] = _reverse_permute(sd[k], cfg.num_key_value_heads)
    titan = _titan(sd, new_style)
    ck = save_no_dist(tmp_path / "titan", titan)
    cfg.save_pretrained(tmp_path / "cfg")
    return m, ck, tmp_path / "cfg"


def _logits(model, ids):
    model.eval()
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.parametrize("new_style", [False, True])
def test_auto_fix_export_gives_the_same_logits(tmp_path, capsys, new_style):
    from transformers import LlamaForCausalLM

    m, ck, cfg = _titan_checkpoint(tmp_path, new_style)
    ids = torch.randint(0, m.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(3))
    want = _logits(m, ids)
    code = main(["export", str(ck), "-o", str(tmp_path / "hf"), "--config", str(cfg), "--auto-fix"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "torchtitan q/k weights permuted" in out and "torchtitan naming" in out
    got, info = LlamaForCausalLM.from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    torch.testing.assert_close(_logits(got, ids), want, rtol=0, atol=1e-5)
    # the same with the mapping given by hand
    code = main(["export", str(ck), "-o", str(tmp_path / "hf2"), "--config", str(cfg),
                 "--key-mapping", json.dumps(TORCHTITAN_LLAMA)])
    assert code == 0
    got2 = LlamaForCausalLM.from_pretrained(tmp_path / "hf2")
    torch.testing.assert_close(_logits(got2, ids), want, rtol=0, atol=1e-5)


def test_renaming_alone_would_give_other_logits(tmp_path):
    from transformers import LlamaForCausalLM

    m, ck, cfg = _titan_checkpoint(tmp_path)
    ids = torch.randint(0, m.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(3))
    convert_checkpoint(ck, tmp_path / "hf", config=cfg, key_mapping=TORCHTITAN_LLAMA, rope_permute=False)
    wrong = _logits(LlamaForCausalLM.from_pretrained(tmp_path / "hf"), ids)
    assert (wrong - _logits(m, ids)).abs().max() > 1e-3  # why the permutation is needed at all


def test_permutation_needs_the_head_counts(tmp_path):
    _, ck, cfg = _titan_checkpoint(tmp_path)
    c = json.loads((cfg / "config.json").read_text())
    del c["num_attention_heads"]
    (cfg / "config.json").write_text(json.dumps(c))
    with pytest.raises(ExportError, match="head counts"):
        convert_checkpoint(ck, tmp_path / "hf", config=cfg, key_mapping=TORCHTITAN_LLAMA)
    assert not (tmp_path / "hf").exists()


def test_report_words_the_torchtitan_suggestion_like_prefix_trouble(tmp_path, capsys):
    _, ck, cfg = _titan_checkpoint(tmp_path)
    code = main(["report", str(ck), "--config", str(cfg)])
    out = capsys.readouterr().out
    assert code == 1
    assert "torchtitan naming detected. Suggested key_mapping: " in out
    assert "re-run with --auto-fix, or: ckpt-explorer report" in out and "export CKPT -o OUT --auto-fix" in out
    assert not re.search(r"prefix trouble", out)


def test_plan_export_with_the_torchtitan_mapping_permutes_too(tmp_path):
    from transformers import LlamaForCausalLM

    from explorer.core.export import export_checkpoint
    from explorer.core.plan import Plan

    m, ck, cfg = _titan_checkpoint(tmp_path)
    ids = torch.randint(0, m.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(3))
    res = export_checkpoint(ck, Plan(config=str(cfg), key_mapping=dict(TORCHTITAN_LLAMA)), tmp_path / "hf")
    assert res.is_clean and any("permuted" in n for n in res.notes)
    torch.testing.assert_close(_logits(LlamaForCausalLM.from_pretrained(tmp_path / "hf"), ids), _logits(m, ids),
                               rtol=0, atol=1e-5)
