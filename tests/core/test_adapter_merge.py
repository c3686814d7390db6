"""Merge-export: base + adapter -> merged checkpoint; values equal peft's merge_and_unload(), loads clean."""
from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("peft")

from peft import LoKrConfig, LoraConfig, PeftModel, get_peft_model  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from explorer.cli import main  # noqa: E402
from explorer.core.errors import ExportError  # noqa: E402
from explorer.core.merge import export_merged  # noqa: E402
from tests.helpers import save_tiny  # noqa: E402


def _pair(tmp_path, model_type, arch, config, **overrides):
    base = tmp_path / "base"
    model = save_tiny(model_type, arch, base, **overrides)
    torch.manual_seed(3)
    get_peft_model(model, config).save_pretrained(tmp_path / "adapter")
    return base, tmp_path / "adapter"


def _merged_by_peft(base, adapter, arch):
    import transformers

    m = getattr(transformers, arch).from_pretrained(base)
    return PeftModel.from_pretrained(m, adapter).merge_and_unload().state_dict()


@pytest.mark.parametrize(
    "model_type, arch, config",
    [
        ("llama", "LlamaForCausalLM", LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)),
        ("llama", "LlamaForCausalLM", LoraConfig(r=4, target_modules=["q_proj", "o_proj"], init_lora_weights=False, use_dora=True)),
        ("gpt2", "GPT2LMHeadModel", LoraConfig(r=4, target_modules=["c_attn"], fan_in_fan_out=True, init_lora_weights=False)),
        ("bert", "BertForSequenceClassification",
         LoraConfig(r=4, target_modules=["query"], task_type="SEQ_CLS", init_lora_weights=False, use_rslora=True)),
        ("llama", "LlamaForCausalLM", LoKrConfig(r=4, target_modules=["q_proj"], init_weights=False)),
    ],
    ids=["lora", "dora", "gpt2-conv1d", "seqcls-modules-to-save", "lokr"],
)
def test_merged_values_equal_merge_and_unload(tmp_path, model_type, arch, config):
    base, adapter = _pair(tmp_path, model_type, arch, config)
    res = export_merged(base, adapter, tmp_path / "out")
    assert res.is_clean  # the written checkpoint loads clean into the base class
    ref = _merged_by_peft(base, adapter, arch)
    got = load_file(tmp_path / "out" / "model.safetensors")
    before = load_file(base / "model.safetensors")
    tied = {k for k in ref if k not in got}
    assert tied <= {"lm_head.weight"}  # a tied head is not written twice, as save_pretrained does
    changed = 0
    for k, v in got.items():
        assert torch.allclose(v.float(), ref[k].float(), rtol=1e-5, atol=1e-6), k
        changed += not torch.equal(v, before[k]) if k in before else 0
    assert changed >= 2  # the merge really changed the adapted weights
    assert "merged" in res.notes[0]


def test_refuses_an_adapter_that_does_not_load_clean(tmp_path):
    _, adapter = _pair(tmp_path, "llama", "LlamaForCausalLM", LoraConfig(r=4, target_modules=["q_proj"]))
    wide = tmp_path / "wide"
    save_tiny("llama", "LlamaForCausalLM", wide, hidden_size=48, head_dim=12)
    with pytest.raises(ExportError, match="does not load clean onto"):
        export_merged(wide, adapter, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_export_adapter(tmp_path, capsys):
    base, adapter = _pair(tmp_path, "llama", "LlamaForCausalLM", LoraConfig(r=4, target_modules=["q_proj"], init_lora_weights=False))
    capsys.readouterr()
    code = main(["export", str(base), "--adapter", str(adapter), "-o", str(tmp_path / "out"), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    d = json.loads(out)
    assert d["clean"] and d["reload"]["missing"] == 0 and "merged 2 adapted modules" in d["notes"][0]
    n_base = len(load_file(base / "model.safetensors"))
    # the two q_proj weights are counted as merged, not kept; every other base tensor is kept
    assert d["counts"]["merged"] == 2 and d["counts"]["keep"] == n_base - 2, d["counts"]
    code = main(["export", str(base), "--adapter", str(adapter), "-o", str(tmp_path / "out-text")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert f"  2 merged with the adapter, {n_base - 2} kept, 0 re-initialised" in out, out
    # without --plan and --adapter: a plain conversion of the base, every tensor unchanged (issue 13)
    code = main(["export", str(base), "-o", str(tmp_path / "out2")])
    _, err = capsys.readouterr()
    assert code == 0, err
    from explorer.core.checkpoint import open_checkpoint

    assert set(open_checkpoint(tmp_path / "out2").tensors) == set(open_checkpoint(base).tensors)


def test_plan_applies_on_top_of_a_merge_export(tmp_path, capsys):
    """Merge a LoRA + modules_to_save adapter, and re-initialise the classifier on top (a new head for a new task):
    the merged weights equal peft's merge_and_unload(), the classifier is fresh (neither the base's nor the adapter's),
    and the result loads clean into the base class."""
    import transformers

    from explorer.core.matching import report
    from explorer.core.model import ModelSpec
    from explorer.core.plan import Plan, save_plan

    base, adapter = _pair(tmp_path, "bert", "BertForSequenceClassification",
                          LoraConfig(r=4, target_modules=["query", "value"], task_type="SEQ_CLS", init_lora_weights=False))
    plan = Plan.from_report(report(str(base), ModelSpec(config=str(base)))).with_rule("classifier.*", action="reinit")
    save_plan(plan, tmp_path / "plan.json")
    capsys.readouterr()
    code = main(["export", str(base), "--adapter", str(adapter), "--plan", str(tmp_path / "plan.json"),
                 "-o", str(tmp_path / "out"), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    d = json.loads(out)
    # query and value (weight and bias) of both layers merged; the classifier re-initialised, not taken from the adapter
    assert d["clean"] and d["counts"]["reinit"] == 2 and d["counts"]["merged"] == 8, d["counts"]
    got = load_file(tmp_path / "out" / "model.safetensors")
    ref = _merged_by_peft(base, adapter, "BertForSequenceClassification")
    before = load_file(base / "model.safetensors")
    changed = 0
    for k, v in got.items():
        if not k.startswith("classifier."):
            assert torch.allclose(v, ref[k], rtol=1e-5, atol=1e-6), k
            changed += not torch.equal(v, before[k])
    assert changed == 4  # query and value weights of both layers merged
    w = got["classifier.weight"]  # fresh: neither the base's nor the adapter's (modules_to_save) classifier
    assert not torch.equal(w, before["classifier.weight"]) and not torch.equal(w, ref["classifier.weight"])
    assert float(got["classifier.bias"].abs().max()) == 0.0  # BERT's own init of a Linear bias
    m, info = transformers.BertForSequenceClassification.from_pretrained(tmp_path / "out", output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    assert torch.equal(m.classifier.weight.detach(), w)


def test_peft_temporaries_reuse_kept_buffers_but_never_one_still_held():
    """Under the merge's mode a big ``B @ A`` and ``delta * scale`` land in buffers the thread keeps (no fresh memory
    for the kernel to zero per module); a result the caller still holds is never written over; anything else —
    autograd on, an integer tensor, small tensors — is computed as torch would."""
    from explorer.core import merge

    mode = merge._reuse_mode()
    assert mode is not None
    g = torch.Generator().manual_seed(0)
    b, a = torch.randn(512, 16, generator=g), torch.randn(16, 1024, generator=g)  # 2 MB results
    want = (b @ a) * 0.5
    with torch.no_grad(), mode():
        first = b @ a
        ptr = first.data_ptr()
        scaled = first * 0.5
        assert torch.equal(scaled, want)  # the same kernels: the same bits
        held = scaled.clone()
        del first
        again = b @ a  # the first buffer is free again: reused
        assert again.data_ptr() == ptr
        other = again * 2.0  # `scaled` is still held: its buffer is not handed out
        assert other.data_ptr() not in (ptr, scaled.data_ptr())
        assert torch.equal(scaled, held) and torch.equal(other, (b @ a).mul(2.0))
        small = torch.ones(4, 4) @ torch.ones(4, 4)  # under REUSE_MIN: fresh, as torch does it
        assert small.data_ptr() not in (ptr, scaled.data_ptr()) and torch.equal(small, torch.full((4, 4), 4.0))
        ints = torch.ones(1024, 1024, dtype=torch.int32) * 3
        assert ints.dtype == torch.int32 and int(ints[0, 0]) == 3
    with mode():  # autograd on: out= would refuse a tensor that needs grad; torch's own call instead
        w = torch.randn(512, 16, requires_grad=True)
        y = w @ a
        assert y.requires_grad and y.grad_fn is not None


@pytest.mark.parametrize(
    "model_type, arch, config",
    [
        ("llama", "LlamaForCausalLM", LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)),
        ("llama", "LlamaForCausalLM", LoraConfig(r=4, target_modules=["q_proj", "o_proj"], init_lora_weights=False, use_dora=True)),
        ("gpt2", "GPT2LMHeadModel", LoraConfig(r=4, target_modules=["c_attn"], fan_in_fan_out=True, init_lora_weights=False)),
        ("llama", "LlamaForCausalLM", LoKrConfig(r=4, target_modules=["q_proj"], init_weights=False)),
    ],
    ids=["lora", "dora", "gpt2-conv1d", "lokr"],
)
def test_reused_buffers_write_the_same_bytes_as_fresh_memory(tmp_path, monkeypatch, model_type, arch, config):
    """Every temporary through the kept buffers (REUSE_MIN 0), on 1 and 2 workers: the merged files are byte for
    byte those written with fresh memory for each."""
    from explorer.core import merge

    base, adapter = _pair(tmp_path, model_type, arch, config)
    monkeypatch.setattr(merge, "_reuse_mode", lambda: None)
    export_merged(base, adapter, tmp_path / "fresh", workers=1)
    want = (tmp_path / "fresh" / "model.safetensors").read_bytes()
    monkeypatch.undo()
    monkeypatch.setattr(merge, "REUSE_MIN", 0)
    for w in (1, 2):
        export_merged(base, adapter, tmp_path / f"reused{w}", workers=w)
        assert (tmp_path / f"reused{w}" / "model.safetensors").read_bytes() == want
    ref = _merged_by_peft(base, adapter, arch)
    got = load_file(tmp_path / "reused2" / "model.safetensors")
    for k, v in got.items():
        assert torch.allclose(v.float(), ref[k].float(), rtol=1e-5, atol=1e-6), k
