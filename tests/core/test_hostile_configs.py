"""Hostile model configs (issue 8, item 6): config.json is read bounded (regular file, size, nesting), absurd
layer/expert counts are refused before transformers sees them, and the meta build counts what it creates and
stops past documented limits that real models stay far below."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from explorer.core import model as model_mod
from explorer.core.errors import ConfigError
from explorer.core.model import ModelSpec, build_model, load_config
from tests.core.test_hostile_inputs import _bounded, _one_line

def _config(d: Path, **kw) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    base = dict(model_type="llama", hidden_size=8, intermediate_size=16, num_hidden_layers=2, num_attention_heads=2,
                num_key_value_heads=1, head_dim=4, vocab_size=16, max_position_embeddings=16)
    base.update(kw)
    (d / "config.json").write_text(json.dumps(base))
    return d


@pytest.mark.parametrize("make", ["fifo", "dev-zero"])
def test_config_that_is_not_a_regular_file_is_refused_without_blocking(tmp_path, make):
    f = tmp_path / "config.json"
    os.mkfifo(f) if make == "fifo" else f.symlink_to("/dev/zero")
    with pytest.raises(ConfigError) as e:
        _bounded(lambda: load_config(tmp_path))
    _one_line(e.value, f, "not a regular file")


def test_deeply_nested_config_is_one_line(tmp_path):
    f = tmp_path / "config.json"
    f.write_text('{"model_type": "llama", "x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path)
    _one_line(e.value, f, "nested deeper")


def test_huge_config_is_refused_by_its_size(tmp_path):
    f = tmp_path / "config.json"
    with open(f, "wb") as fh:
        fh.truncate(98 * 10**6)  # sparse, never read
    with pytest.raises(ConfigError) as e:
        load_config(tmp_path)
    _one_line(e.value, f, "limit")


@pytest.mark.parametrize("model_type,key,value", [
    ("llama", "num_hidden_layers", 1_000_000),
    ("qwen3", "num_hidden_layers", 10**9),  # its config class builds a per-layer list before any module
    ("mixtral", "num_local_experts", 1_000_000),
])
def test_absurd_layer_or_expert_counts_are_refused_before_building(tmp_path, model_type, key, value):
    d = _config(tmp_path / "m", model_type=model_type, **{key: value})
    with pytest.raises(ConfigError) as e:
        _bounded(lambda: build_model(ModelSpec(config=str(d))))
    _one_line(e.value, d / "config.json", key, "limit")


def test_counts_in_sub_configs_are_checked(tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "llava", "text_config": {"model_type": "llama", "num_hidden_layers": 10**7}}))
    with pytest.raises(ConfigError) as e:
        load_config(d)
    _one_line(e.value, "text_config.num_hidden_layers", "limit")


def _global_hooks() -> tuple[int, int, int]:
    from torch.nn.modules import module as tm

    return (len(tm._global_parameter_registration_hooks), len(tm._global_buffer_registration_hooks),
            len(tm._global_module_registration_hooks))


@pytest.mark.parametrize("cap,says", [("MAX_MODEL_TENSORS", "tensors"), ("MAX_MODEL_MODULES", "modules"),
                                      ("MAX_MODEL_PARAMS", "parameter elements")])
def test_the_build_stops_past_its_limits(tmp_path, monkeypatch, cap, says):
    # the mechanism on a real model, with the limit lowered (a config that reaches the real limits builds for a
    # minute before it is stopped, which is the point of the count-based pre-checks above)
    d = _config(tmp_path / "m", num_hidden_layers=8)
    before = _global_hooks()
    monkeypatch.setattr(model_mod, cap, 40)
    with pytest.raises(ConfigError) as e:
        build_model(ModelSpec(config=str(d)))
    _one_line(e.value, d / "config.json", f"more than 40 {says}")
    assert _global_hooks() == before  # the counting hooks are gone again
    monkeypatch.undo()
    assert build_model(ModelSpec(config=str(d))).module is not None


class ManyTensors(torch.nn.Module):
    """A plain module with ``n`` parameters of ``numel`` elements each (meta device: no memory)."""

    def __init__(self, n: int, numel: int) -> None:
        super().__init__()
        base = torch.empty(numel)
        for i in range(n):
            self.register_parameter(f"p{i}", torch.nn.Parameter(base, requires_grad=False))


def test_limits_leave_room_for_a_trillion_parameter_model_with_100k_tensors():
    # 25k real tensors of 4e7 elements (torch registers ~10k parameters a second, so 100k would cost the suite
    # ten seconds); the tensor limit itself leaves twice the room of a 100k-tensor MoE
    built = build_model(ModelSpec(model=f"{__name__}:ManyTensors", model_kwargs={"n": 25_000, "numel": 40_000_000}))
    params = list(built.module.parameters())
    assert len(params) == 25_000 and sum(p.numel() for p in params) == 10**12
    assert model_mod.MAX_MODEL_TENSORS >= 2 * 100_000 and model_mod.MAX_MODEL_PARAMS >= 10 * 10**12


def test_custom_model_build_is_bounded_too(monkeypatch):
    monkeypatch.setattr(model_mod, "MAX_MODEL_TENSORS", 10)
    with pytest.raises(ConfigError) as e:
        build_model(ModelSpec(model=f"{__name__}:ManyTensors", model_kwargs={"n": 11, "numel": 1}))
    _one_line(e.value, f"{__name__}:ManyTensors", "more than 10 tensors")


def _tiny_checkpoint(d: Path) -> Path:
    from safetensors.torch import save_file

    d.mkdir(parents=True, exist_ok=True)
    save_file({"w": torch.zeros(2)}, str(d / "model.safetensors"))
    return d


@pytest.mark.parametrize("make", ["fifo", "outside-link"])
def test_config_beside_the_checkpoint_that_cannot_be_read_is_refused_not_ignored(tmp_path, make):
    """A FIFO or an outside link named config.json beside the weights is that checkpoint's config: refused in one
    line naming it, never silently taken for "no config" (exit 0 with a model-less report)."""
    from explorer.core.matching import report

    ck = _tiny_checkpoint(tmp_path / "ck")
    f = ck / "config.json"
    if make == "fifo":
        os.mkfifo(f)
    else:
        secret = tmp_path / "elsewhere" / "config.json"
        _config(secret.parent)
        f.symlink_to(secret)
    with pytest.raises(ConfigError) as e:
        _bounded(lambda: report(ck, ModelSpec()))
    _one_line(e.value, f, "not a regular file" if make == "fifo" else "outside its folder")


def test_config_linked_into_the_hf_cache_blob_store_is_read(tmp_path):
    """Every Hugging Face cache snapshot links its files into ../../blobs: such a config.json stays readable."""
    repo = tmp_path / "models--org--tiny"
    blobs = repo / "blobs"
    _config(blobs)
    (blobs / "config.json").rename(blobs / "0123abcd")
    snap = repo / "snapshots" / "f00d"
    snap.mkdir(parents=True)
    (snap / "config.json").symlink_to(Path("..") / ".." / "blobs" / "0123abcd")
    assert load_config(snap).model_type == "llama"
