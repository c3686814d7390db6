"""What the report says when there is no model (a neutral status and a tree from the names), when the class is of
another family than the config (issue 10 finding 4), and when --arch has a typo (finding 12)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from explorer.core.matching import report
from explorer.core.model import ModelSpec
from explorer.core.report import DisplayKind, Status, display_kind


def test_checkpoint_only_is_neutral_and_rolls_up_the_dotted_names(tmp_path: Path) -> None:
    # issue 10 finding 3: without a config every tensor was orange "unexpected" in one flat list
    tensors = {f"backbone.layers.{i}.conv.weight": torch.zeros(4, 2 + i) for i in range(12)}
    tensors |= {f"backbone.layers.{i}.bn.running_mean": torch.zeros(4) for i in range(12)}
    tensors |= {"backbone.layers.3.bn.num_batches_tracked": torch.zeros((), dtype=torch.int64), "head.bias": torch.zeros(3, dtype=torch.float16)}
    f = tmp_path / "craft.safetensors"
    save_file(tensors, str(f))
    rep = report(f)  # no config.json beside it
    assert not rep.has_model and rep.is_clean
    assert {c.status for c in rep.checkpoint_keys.values()} == {Status.IN_CHECKPOINT}
    assert display_kind(Status.IN_CHECKPOINT) is DisplayKind.IN_CHECKPOINT
    root = rep.disk
    assert [c.path for c in root.children] == ["backbone", "head"]
    layers = root.children[0].children[0]
    assert layers.path == "backbone.layers"
    assert [c.name for c in layers.children] == [str(i) for i in range(12)]  # 0, 1, 2, ..., 10, 11: not text order
    # roll-ups agree with what safetensors itself says about the file
    with safe_open(str(f), "pt") as sf:
        numel = {k: sf.get_slice(k).get_shape() for k in sf.keys()}
    l3 = next(c for c in layers.children if c.name == "3")
    assert l3.n_tensors == 3 and l3.n_params == 4 * 5 + 4 + 1
    assert l3.nbytes == (4 * 5 + 4) * 4 + 8 and dict(l3.dtypes) == {"float32": 2, "int64": 1}
    assert root.n_tensors == len(numel) == 26
    assert root.n_params == sum(torch.Size(s).numel() for s in numel.values())
    assert root.dtype_text() == "float32 ×24, float16 ×1, int64 ×1"
    j = rep.to_json()
    assert {"path": "head", "tensors": 1, "params": 3, "bytes": 6, "dtypes": {"float16": 1}} in j["modules"]


def test_disk_tree_survives_hostile_names(tmp_path: Path) -> None:
    # names from a file: thousands of levels, a 5,000-digit "index"
    deep = ".".join(["m"] * 3000) + ".w"
    f = tmp_path / "odd.safetensors"
    save_file({deep: torch.zeros(1), "a." + "7" * 5000 + ".w": torch.zeros(1), "a.2.w": torch.zeros(1)}, str(f))
    rep = report(f)
    a = next(c for c in rep.disk.children if c.path == "a")
    assert [c.name[:3] for c in a.children] == ["2", "777"]
    assert rep.disk.n_tensors == 3


def test_wrong_family_is_named_with_the_configs_own_classes(minilm: str) -> None:
    rep = report(minilm, ModelSpec(config=minilm, arch="GPT2LMHeadModel"))
    fam = rep.family
    assert fam is not None and (fam.config_type, fam.class_type, fam.arch) == ("bert", "gpt2", "GPT2LMHeadModel")
    assert fam.heads[0] == "BertModel" and "BertForMaskedLM" in fam.heads
    assert "almost nothing loads" in fam.message()
    assert rep.counts()["matched"] == 0  # what "almost nothing" means here
    assert report(minilm, ModelSpec(config=minilm, arch="BertForMaskedLM")).family is None


def test_a_sub_model_of_a_composite_config_is_not_another_family() -> None:
    from transformers import BertConfig, CLIPConfig, CLIPVisionModel, GPT2LMHeadModel

    from explorer.core.classes import family_mismatch

    assert family_mismatch(CLIPVisionModel, CLIPConfig()) is None  # reads its vision_config, as from_pretrained does
    assert family_mismatch(GPT2LMHeadModel, BertConfig()) == ("bert", "gpt2")


def test_an_arch_typo_carries_the_suggestion_and_the_family(minilm: str) -> None:
    from explorer.core.classes import UnknownClass
    from explorer.core.errors import ConfigError

    with pytest.raises(UnknownClass) as e:
        report(minilm, ModelSpec(config=minilm, arch="BertForMaskedLMM"))
    assert isinstance(e.value, ConfigError)
    assert e.value.suggestion == "BertForMaskedLM" and e.value.heads[0] == "BertModel"
    assert "did you mean BertForMaskedLM?" in str(e.value)
