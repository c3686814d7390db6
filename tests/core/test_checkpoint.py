"""Reading checkpoints header-only: formats, HF directory priority, wrapper dicts, dtypes, lazy single-tensor reads."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from explorer.core.checkpoint import TensorReader, open_checkpoint
from explorer.core.errors import CheckpointError


def _sd(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "emb.weight": torch.randn(10, 4, generator=g),
        "layers.0.w.weight": torch.randn(4, 4, generator=g),
        "layers.1.w.weight": torch.randn(4, 4, generator=g),
        "layers.1.w.bias": torch.randn(4, generator=g),
        "count": torch.tensor(7, dtype=torch.int64),
    }


def _rchar() -> int:
    """Bytes this process has read through read() so far (Linux)."""
    with open("/proc/self/io") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith("rchar"))


def assert_same(index, sd: dict[str, torch.Tensor]) -> None:
    assert set(index.tensors) == set(sd)
    with TensorReader(index) as r:
        for k, v in sd.items():
            t = index.tensors[k]
            assert t.shape == tuple(v.shape) and t.dtype == str(v.dtype).removeprefix("torch.")
            assert t.nbytes == v.numel() * v.element_size()
            assert torch.equal(r.tensor(k), v)


# --------------------------------------------------------------------------------------------- safetensors


def test_safetensors_single_with_metadata(tmp_path):
    sd = _sd()
    f = tmp_path / "m.safetensors"
    save_file(sd, str(f), metadata={"format": "pt", "note": "hello"})
    idx = open_checkpoint(f)
    assert idx.format == "safetensors" and idx.files == (str(f),)
    assert idx.metadata == {"format": "pt", "note": "hello"}
    assert idx.tensors["layers.1.w.bias"].file == str(f)
    assert idx.total_params == 40 + 16 + 16 + 4 + 1
    assert_same(idx, sd)
    with TensorReader(idx) as r:
        chunks = list(r.iter_chunks("emb.weight", chunk_elems=16))
        assert [c.numel() for c in chunks] == [16, 16, 8]
        assert torch.equal(torch.cat(chunks), sd["emb.weight"].reshape(-1))


def test_bf16_and_fp8_dtypes(tmp_path):
    sd = {
        "a": torch.randn(3, 5).to(torch.bfloat16),
        "b": torch.randn(8).to(torch.float8_e4m3fn),
        "c": torch.randn(2, 2).to(torch.float8_e5m2),
        "d": torch.randn(4).half(),
    }
    f = tmp_path / "q.safetensors"
    save_file(sd, str(f))
    idx = open_checkpoint(f)
    assert {k: t.dtype for k, t in idx.tensors.items()} == {
        "a": "bfloat16", "b": "float8_e4m3fn", "c": "float8_e5m2", "d": "float16"
    }
    assert idx.tensors["b"].nbytes == 8 and idx.tensors["a"].nbytes == 30
    with TensorReader(idx) as r:
        assert torch.equal(r.tensor("a"), sd["a"])
        assert torch.equal(r.tensor("b").view(torch.uint8), sd["b"].view(torch.uint8))
    assert idx.first_float_dtype() == "bfloat16"
    # the same dtypes through a torch zip pickle
    torch.save(sd, tmp_path / "q.pt")
    assert {k: t.dtype for k, t in open_checkpoint(tmp_path / "q.pt").tensors.items()} == {
        k: t.dtype for k, t in idx.tensors.items()
    }


def _shard(tmp_path: Path, sd: dict[str, torch.Tensor]) -> Path:
    d = tmp_path / "sharded"
    d.mkdir()
    names = sorted(sd)
    parts = {"model-00001-of-00002.safetensors": names[:2], "model-00002-of-00002.safetensors": names[2:]}
    weight_map = {}
    for fname, keys in parts.items():
        save_file({k: sd[k] for k in keys}, str(d / fname))
        weight_map.update({k: fname for k in keys})
    (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": 1}, "weight_map": weight_map}))
    return d


def test_sharded_index(tmp_path):
    sd = _sd()
    d = _shard(tmp_path, sd)
    idx = open_checkpoint(d)  # the folder resolves to the index
    assert idx.format == "safetensors-sharded" and len(idx.files) == 2
    assert idx.metadata["index.total_size"] == "1"
    assert idx.tensors["emb.weight"].file.endswith("00002.safetensors") or idx.tensors["emb.weight"].file.endswith("00001.safetensors")
    assert_same(idx, sd)


def test_sharded_index_missing_shard(tmp_path):
    d = _shard(tmp_path, _sd())
    (d / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError) as e:
        open_checkpoint(d / "model.safetensors.index.json")
    assert "model-00002-of-00002.safetensors" in str(e.value) and "does not exist" in str(e.value)


# --------------------------------------------------------------------------------------------- HF directories


def test_hf_directory_priority(tmp_path):
    d = tmp_path / "hf"
    d.mkdir()
    sd = _sd()
    torch.save(sd, d / "pytorch_model.bin")
    assert open_checkpoint(d).format == "torch-zip"
    shutil.copytree(_shard(tmp_path, sd), d, dirs_exist_ok=True)  # model.safetensors.index.json beats the bin
    assert open_checkpoint(d).format == "safetensors-sharded"
    save_file({"only.here": torch.zeros(1)}, str(d / "model.safetensors"))  # model.safetensors beats both
    idx = open_checkpoint(d)
    assert idx.format == "safetensors" and list(idx.tensors) == ["only.here"]
    # config.transformers_weights names the file explicitly
    save_file({"custom": torch.zeros(2)}, str(d / "custom.safetensors"))
    (d / "config.json").write_text(json.dumps({"model_type": "bert", "transformers_weights": "custom.safetensors"}))
    assert list(open_checkpoint(d).tensors) == ["custom"]


def test_directory_without_weights(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "README.md").write_text("hi")
    with pytest.raises(CheckpointError, match="no weights found"):
        open_checkpoint(tmp_path)


# --------------------------------------------------------------------------------------------- torch pickles


def test_zip_pickle_is_read_on_meta_without_the_data(tmp_path):
    big = {"big.weight": torch.randn(1024, 1024), "small.bias": torch.randn(3)}  # 4 MB of data
    f = tmp_path / "pytorch_model.bin"
    torch.save(big, f)
    before = _rchar()
    idx = open_checkpoint(f)
    read = _rchar() - before
    assert idx.format == "torch-zip"
    assert idx.tensors["big.weight"].shape == (1024, 1024) and idx.tensors["big.weight"].nbytes == 4 << 20
    assert read < 1 << 20, f"read {read} bytes for a header-only open"
    assert_same(idx, big)


def test_legacy_non_zip_pickle(tmp_path):
    sd = _sd()
    f = tmp_path / "old.pt"
    torch.save(sd, f, _use_new_zipfile_serialization=False)
    idx = open_checkpoint(f)
    assert idx.format == "torch-legacy" and idx.notes
    assert_same(idx, sd)


def test_legacy_pickle_bigger_than_memory_is_refused(tmp_path, monkeypatch):
    """A legacy pickle is read whole (no header): one larger than half the memory available is refused before torch
    allocates anything, in one line naming the file and how to make it readable header-only; the CLI exits 2."""
    from explorer.core import fsio

    f = tmp_path / "old.pt"
    torch.save(_sd(), f, _use_new_zipfile_serialization=False)
    monkeypatch.setattr(fsio, "available_memory", lambda: f.stat().st_size)  # 2x the file would be needed
    with pytest.raises(CheckpointError) as e:
        open_checkpoint(f)
    msg = str(e.value)
    assert str(f) in msg and "legacy" in msg and "zip" in msg and "\n" not in msg
    monkeypatch.setattr(fsio, "available_memory", lambda: 4 * f.stat().st_size)
    assert open_checkpoint(f).format == "torch-legacy"


@pytest.mark.parametrize("key", ["state_dict", "model", "module", "state_dict_ema"])
def test_wrapper_dicts(tmp_path, key):
    sd = _sd()
    f = tmp_path / "w.pt"
    torch.save({key: sd, "step": 10, "note": "x"}, f)
    idx = open_checkpoint(f)
    assert idx.wrapper_key == key and idx.wrapper_candidates == (key,)
    assert_same(idx, sd)


def test_lightning_checkpoint_and_wrapper_selection(tmp_path):
    sd, ema = _sd(0), _sd(1)
    ckpt = {
        "epoch": 3,
        "global_step": 1200,
        "pytorch-lightning_version": "2.4.0",
        "state_dict": sd,
        "state_dict_ema": ema,
        "optimizer_states": [{"state": {0: {"exp_avg": torch.zeros(4)}}, "param_groups": [{"lr": 0.1, "params": [0]}]}],
        "lr_schedulers": [{"last_epoch": 3}],
        "loops": {"fit_loop": {"epoch_progress": {"current": {"completed": 3}}}},
        "hparams_name": "kwargs",
    }
    f = tmp_path / "last.ckpt"
    torch.save(ckpt, f)
    idx = open_checkpoint(f)
    assert idx.wrapper_key == "state_dict"
    assert set(idx.wrapper_candidates) == {"state_dict", "state_dict_ema"}
    assert_same(idx, sd)
    ema_idx = open_checkpoint(f, wrapper="state_dict_ema")
    assert ema_idx.wrapper_key == "state_dict_ema"
    assert_same(ema_idx, ema)
    with pytest.raises(CheckpointError, match="no sub-dict 'nope'.*state_dict"):
        open_checkpoint(f, wrapper="nope")


def test_plain_state_dict_with_a_step_counter_is_not_a_wrapper(tmp_path):
    sd = _sd()
    f = tmp_path / "plain.pt"
    torch.save(sd, f)
    idx = open_checkpoint(f)
    assert idx.wrapper_key is None
    assert_same(idx, sd)
    # a wrapper with a loose scalar tensor next to its big sub-dict still picks the sub-dict
    torch.save({"model": sd, "step": torch.tensor(5)}, f)
    assert open_checkpoint(f).wrapper_key == "model"


def test_several_unknown_sub_dicts_need_a_choice(tmp_path):
    f = tmp_path / "two.pt"
    torch.save({"student": _sd(0), "teacher": _sd(1)}, f)
    with pytest.raises(CheckpointError, match="several tensor sub-dicts.*--wrapper"):
        open_checkpoint(f)
    assert open_checkpoint(f, wrapper="teacher").wrapper_key == "teacher"


def test_safetensors_reader_matches_library(tmp_path):
    sd = {"x": torch.randn(7, 3), "y": torch.arange(12, dtype=torch.int32).reshape(3, 4)}
    f = tmp_path / "r.safetensors"
    save_file(sd, str(f))
    ref = load_file(str(f))
    with TensorReader(open_checkpoint(f)) as r:
        for k in sd:
            assert torch.equal(r.tensor(k), ref[k])
        with pytest.raises(CheckpointError, match="no tensor named 'z'"):
            r.tensor("z")


def test_an_owned_tensor_is_the_callers_to_change(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """TensorReader.owned (what a merge changes in place): the stored values in fresh memory, for a small and a big
    safetensors tensor (a big one is otherwise a mmap view) and a torch zip file; changing it changes nothing read
    later, and the file is untouched."""
    import hashlib

    import torch
    from safetensors.torch import save_file

    from explorer.core.checkpoint import TensorReader, open_checkpoint
    from explorer.core.sources import reader as reader_mod

    g = torch.Generator().manual_seed(0)
    t = {"small": torch.randn(3, 5, generator=g), "big": torch.randn(64, 33, generator=g).to(torch.bfloat16)}
    save_file(t, tmp_path / "m.safetensors")
    torch.save(t, tmp_path / "m.pt")
    monkeypatch.setattr(reader_mod, "SMALL_COPY_BYTES", 64)  # "big" is over it: tensor() gives a mmap view
    for f in ("m.safetensors", "m.pt"):
        before = hashlib.sha256((tmp_path / f).read_bytes()).hexdigest()
        with TensorReader(open_checkpoint(tmp_path / f)) as r:
            for name, want in t.items():
                got = r.owned(name)
                assert got.dtype == want.dtype and got.shape == want.shape and torch.equal(got, want)
                got.add_(1)
                assert torch.equal(r.tensor(name), want) and torch.equal(r.owned(name), want), (f, name)
        assert hashlib.sha256((tmp_path / f).read_bytes()).hexdigest() == before
