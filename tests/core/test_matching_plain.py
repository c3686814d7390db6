"""Plain nn.Module: the report equals ``load_state_dict(strict=False)`` plus the shape check."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from explorer.core.matching import report
from explorer.core.report import How, Status
from explorer.core.model import ModelSpec
from tests.core._plain_models import Net

SPEC = "tests.core._plain_models:Net"


def torch_oracle(sd: dict[str, torch.Tensor], model: torch.nn.Module) -> tuple[set, set, set]:
    """What a user gets from load_state_dict(strict=False), with shape mismatches set aside first (torch raises)."""
    own = model.state_dict()
    mism = {(k, tuple(v.shape), tuple(own[k].shape)) for k, v in sd.items() if k in own and v.shape != own[k].shape}
    res = model.load_state_dict({k: v for k, v in sd.items() if k not in {m[0] for m in mism}}, strict=False)
    missing = set(res.missing_keys) - {m[0] for m in mism}
    return missing, set(res.unexpected_keys), mism


def save(sd: dict[str, torch.Tensor], path) -> str:
    save_file({k: v.clone().contiguous() for k, v in sd.items()}, str(path))
    return str(path)


def check(sd, path, **kwargs):
    f = save(sd, path)
    rep = report(f, ModelSpec(model=SPEC, model_kwargs=kwargs))
    want = torch_oracle(sd, Net(**kwargs))
    assert (set(rep.missing), set(rep.unexpected), set(rep.mismatched)) == want
    return rep


def test_exact_roundtrip(tmp_path):
    sd = Net().state_dict()
    rep = check(sd, tmp_path / "a.safetensors")
    assert rep.is_clean
    assert rep.model_keys["scale"].status is Status.COMPUTED
    assert rep.model_keys["blocks.1.2.weight"].how == (How.EXACT,)
    assert rep.model_keys["step"].status is Status.MATCHED


def test_partial_extra_and_shape_mismatch(tmp_path):
    sd = Net(vocab=60).state_dict()
    del sd["blocks.1.0.bias"]
    sd["extra.weight"] = torch.zeros(3)
    rep = check(sd, tmp_path / "b.safetensors")
    assert "blocks.1.0.bias" in rep.missing
    assert rep.unexpected == ("extra.weight",)
    assert ("emb.weight", (60, 16), (50, 16)) in rep.mismatched
    assert rep.model_keys["emb.weight"].newly_initialized


def test_module_prefix_is_all_missing_and_unexpected_then_fixed(tmp_path):
    sd = {"module." + k: v for k, v in Net().state_dict().items()}
    rep = check(sd, tmp_path / "c.safetensors")
    assert len(rep.unexpected) == len(sd)
    assert rep.suggested_key_mapping == {r"^module\.": ""}
    fixed = report(tmp_path / "c.safetensors", ModelSpec(model=SPEC), auto_fix=True)
    assert fixed.is_clean
    assert How.KEY_MAPPING in fixed.model_keys["norm.weight"].how


def test_dtype_difference_is_annotated(tmp_path):
    sd = {k: (v.half() if v.is_floating_point() else v) for k, v in Net().state_dict().items()}
    rep = check(sd, tmp_path / "d.safetensors")
    assert How.DTYPE_DIFFERS in rep.model_keys["norm.weight"].how


@pytest.mark.parametrize("kwargs", [{"layers": 3}, {"tie": False, "hidden": 8}])
def test_model_kwargs(tmp_path, kwargs):
    sd = Net().state_dict()
    check(sd, tmp_path / "e.safetensors", **kwargs)
