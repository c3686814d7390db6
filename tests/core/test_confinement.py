"""Nothing is read outside the folder a file came from: a file the tool finds in a folder (weights, a shard, a DCP
rank file or ``.metadata``, a ZeRO tag folder, an adapter's weights) that leads outside it once its links are
followed is refused before a byte is read; links that stay inside, the Hugging Face cache's links into its blob
store and the path the user named keep working."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from explorer.core.checkpoint import TensorReader, open_checkpoint
from explorer.core.errors import CheckpointError
from explorer.core.fsio import check_regular, confined_to
from tests.dcp_helpers import handmade
from tests.helpers import read_error


def _outside(tmp: Path) -> Path:
    p = tmp / "elsewhere" / "secret.safetensors"
    p.parent.mkdir(parents=True)
    save_file({"secret": torch.arange(4.0)}, str(p))
    return p


def test_weights_linked_outside_are_refused_named_or_inside_links_still_open(tmp_path):
    secret = _outside(tmp_path)
    m = tmp_path / "m"
    m.mkdir()
    (m / "model.safetensors").symlink_to(secret)
    msg = read_error(m)
    assert msg.startswith(str(m / "model.safetensors")) and "outside" in msg and str(secret) in msg
    # the user naming the link itself: read where it points, as `cat` would
    assert set(open_checkpoint(m / "model.safetensors").tensors) == {"secret"}
    # a link that stays inside the folder is followed
    (m / "model.safetensors").unlink()
    save_file({"w": torch.ones(2)}, str(m / "real.safetensors"))
    (m / "model.safetensors").symlink_to("real.safetensors")
    with TensorReader(open_checkpoint(m)) as r:
        assert torch.equal(r.tensor("w"), torch.ones(2))
    # a relative link that climbs out
    (m / "model.safetensors").unlink()
    (m / "model.safetensors").symlink_to(Path("..") / "elsewhere" / "secret.safetensors")
    assert "outside" in read_error(m)


def test_scope_nests_and_ends(tmp_path):
    secret = _outside(tmp_path)
    with confined_to(tmp_path / "m"):
        with pytest.raises(CheckpointError, match="outside"):
            check_regular(secret, error=CheckpointError)
        with confined_to(secret.parent):
            check_regular(secret, error=CheckpointError)
        with pytest.raises(CheckpointError, match="outside"):
            check_regular(secret, error=CheckpointError)
    check_regular(secret, error=CheckpointError)  # no scope: the caller named it


def test_dcp_rank_file_or_metadata_linked_outside_is_refused(tmp_path):
    ck = handmade(tmp_path / "ck", {"model.w": (torch.randn(4, 3), [((0, 0), (2, 3)), ((2, 0), (2, 3))])})
    assert len(open_checkpoint(ck).tensors) == 1
    for name in ("__1_0.distcp", ".metadata"):
        f = tmp_path / "copy"
        shutil.copytree(ck, f)
        away = tmp_path / "away" / name
        away.parent.mkdir(exist_ok=True)
        shutil.move(f / name, away)
        (f / name).symlink_to(away)
        msg = read_error(f)
        assert msg.startswith(str(f / name)) and "outside" in msg, msg
        shutil.rmtree(f)


def test_zero_tag_folder_linked_outside_is_refused(zero_checkpoints, tmp_path):
    f = tmp_path / "z1"
    shutil.copytree(zero_checkpoints["z1"], f)
    tag = f / "global_step1"
    away = tmp_path / "away"
    shutil.move(tag, away)
    tag.symlink_to(away)
    msg = read_error(f)  # refused as a tag that is not a folder of the save folder, before any rank file is read
    assert "global_step1" in msg and ("outside" in msg or "not a folder" in msg), msg
    # a rank file the user names inside the linked tag folder: that folder is where it came from, its siblings open
    assert open_checkpoint(tag / "mp_rank_00_model_states.pt").format == "deepspeed-zero"


def test_adapter_weights_linked_outside_are_refused(tmp_path):
    pytest.importorskip("peft")
    from peft import LoraConfig, get_peft_model

    from explorer.core.adapter import open_adapter
    from tests.helpers import save_tiny

    model = save_tiny("bert", "BertModel", tmp_path / "base")
    ad = tmp_path / "ad"
    get_peft_model(model, LoraConfig(r=2, target_modules=["query"])).save_pretrained(ad)
    assert open_adapter(ad).index.tensors
    away = tmp_path / "away.safetensors"
    shutil.move(ad / "adapter_model.safetensors", away)
    (ad / "adapter_model.safetensors").symlink_to(away)
    for named in (ad, ad / "adapter_config.json"):
        with pytest.raises(CheckpointError, match="outside") as e:
            open_adapter(named)
        assert str(ad / "adapter_model.safetensors") in str(e.value)
