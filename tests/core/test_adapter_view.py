"""The adapter as a Report (what the window shows): peft's sets, keys named as PeftModel.state_dict() names them."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("peft")

from peft import LoraConfig  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from explorer.core.adapter_match import match_adapter  # noqa: E402
from explorer.core.adapter_view import adapter_view  # noqa: E402
from explorer.core.report import Status  # noqa: E402
from tests.core.adapter_oracle import peft_sets  # noqa: E402
from tests.core.test_adapter import make  # noqa: E402


def test_view_has_peft_sets_on_the_base_tree(tmp_path):
    base, ad = make(tmp_path, "llama", "LlamaForCausalLM", LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    sd = load_file(ad / "adapter_model.safetensors")
    sd.pop("base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight")
    sd["base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight"] = torch.zeros(4, 32)
    save_file(sd, ad / "adapter_model.safetensors")
    oracle = peft_sets(str(base), str(ad), "LlamaForCausalLM")
    view = adapter_view(match_adapter(ad, base=base))
    assert set(view.missing) == oracle["missing"] and set(view.unexpected) == oracle["unexpected"]
    assert view.counts()["missing"] == 1 and view.counts()["unexpected"] == 1
    sd_keys = {k for k in oracle["model"].state_dict() if ".lora_" in k}
    adapter_keys = {k for k in view.model_keys if k.startswith("base_model.model.")}
    assert adapter_keys == sd_keys  # every adapter key peft has, under its name, and no other
    for k in oracle["missing"]:
        assert view.model_keys[k].status is Status.MISSING
    # in the tree: under the module it adapts, beside the base's own weight (base weights given)
    node = next(n for n in view.tree.walk() if n.path == "model.layers.0.self_attn.q_proj.lora_A")
    assert [p.key for p in node.params] == ["base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight"]
    assert view.model_keys["model.layers.0.self_attn.q_proj.weight"].status is Status.MATCHED
    assert set(view.index.tensors) == set(sd) | set(load_file(base / "model.safetensors"))
