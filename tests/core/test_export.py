"""Export end to end: transformers loads every result with nothing missing, unexpected or mismatched; kept tensors
are byte-identical; the source folder is never touched; a cancel or a refusal leaves nothing behind."""
from __future__ import annotations

import hashlib
import json
import shutil
import struct
from pathlib import Path

import pytest
import torch

from explorer.core.errors import ExportError
from explorer.core.export import ExportCancelled, export_checkpoint
from explorer.core.matching import report
from explorer.core.model import ModelSpec
from explorer.core.plan import Plan
from tests.helpers import save_tiny, tiny_config


# --------------------------------------------------------------------------------------------- helpers


def checksums(folder: str | Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(Path(folder).rglob("*"))
        if p.is_file()
    }


def raw_tensors(path: Path) -> tuple[dict[str, bytes], dict[str, dict], dict[str, str]]:
    """name -> raw data bytes, header entries and __metadata__ of a safetensors file, read by hand."""
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    meta = header.pop("__metadata__", {})
    base = 8 + n
    raw = {k: data[base + v["data_offsets"][0] : base + v["data_offsets"][1]] for k, v in header.items()}
    return raw, header, meta


def all_raw(folder: Path) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(raw_tensors(f)[0])
    return out


def load_clean(out: Path, arch: str):
    import transformers

    model, info = getattr(transformers, arch).from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"], info
    assert not info["unexpected_keys"], info
    assert not info["mismatched_keys"], info
    return model


@pytest.fixture
def src(minilm, tmp_path) -> Path:
    """A private copy of the real MiniLM (weights + config) so every test can check it stays untouched."""
    d = tmp_path / "src"
    d.mkdir()
    for name in ("model.safetensors", "config.json"):
        shutil.copy(Path(minilm) / name, d / name)
    return d


def plan_for(folder: Path, arch: str, **kw) -> tuple[Plan, object]:
    rep = report(str(folder), ModelSpec(config=str(folder), arch=arch), **kw)
    return Plan.from_report(rep), rep


# --------------------------------------------------------------------------------------------- scenarios


def test_minilm_into_classifier_with_frozen_lower_layers(src, tmp_path):
    before = checksums(src)
    plan, rep = plan_for(src, "BertForSequenceClassification")
    assert set(rep.missing) == {"classifier.weight", "classifier.bias"}
    plan = plan.with_rule("encoder.layer.[0-2]", trainable=False)
    out = tmp_path / "out"
    res = export_checkpoint(str(src), plan, out, seed=3)

    assert res.is_clean and res.report.counts()["matched"] == 105
    assert res.counts["keep"] == 103 and res.counts["reinit"] == 2
    model = load_clean(out, "BertForSequenceClassification")

    # kept tensors: byte-identical to the source, under the target model's names (prefix added)
    src_raw, _, _ = raw_tensors(src / "model.safetensors")
    out_raw, header, meta = raw_tensors(out / "model.safetensors")
    for k, v in src_raw.items():
        if k == "embeddings.position_ids":  # a non-persistent buffer: not a model key, not written
            assert "bert." + k not in out_raw
            continue
        assert out_raw["bert." + k] == v, k
    # fresh head from the model's own init: zero bias, N(0, 0.02) weight
    assert torch.count_nonzero(model.classifier.bias) == 0
    assert 0.01 < model.classifier.weight.std().item() < 0.03
    # provenance and config
    assert meta["format"] == "pt"
    assert meta["explorer_plan_sha256"] == plan.sha256() == res.plan_sha256
    assert meta["explorer_source"] == str(src.absolute())
    assert "explorer_version" in meta
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architectures"] == ["BertForSequenceClassification"]
    assert json.loads((src / "config.json").read_text())["architectures"] == ["BertModel"]
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    assert not list(tmp_path.glob(".out.partial-*"))
    assert checksums(src) == before


def test_fresh_init_is_seeded(src, tmp_path):
    before = checksums(src)
    plan, _ = plan_for(src, "BertForSequenceClassification")
    a = export_checkpoint(str(src), plan, tmp_path / "a", seed=1)
    b = export_checkpoint(str(src), plan, tmp_path / "b", seed=1)
    c = export_checkpoint(str(src), plan, tmp_path / "c", seed=2)
    ra, rb, rc = (all_raw(Path(r.out_dir)) for r in (a, b, c))
    assert ra["classifier.weight"] == rb["classifier.weight"]
    assert ra["classifier.weight"] != rc["classifier.weight"]
    # an explicit reinit of a matched key replaces it (and only it)
    plan2 = plan.with_rule("bert.pooler.dense.weight", match="key", action="reinit")
    d = export_checkpoint(str(src), plan2, tmp_path / "d", seed=1)
    rd = all_raw(Path(d.out_dir))
    assert rd["bert.pooler.dense.weight"] != ra["bert.pooler.dense.weight"]
    assert rd["bert.pooler.dense.bias"] == ra["bert.pooler.dense.bias"]
    assert d.is_clean
    assert checksums(src) == before


def test_ddp_prefixed_checkpoint_fixed_by_auto_fix(minilm, tmp_path):
    from safetensors.torch import load_file, save_file

    ddp = tmp_path / "ddp"
    ddp.mkdir()
    sd = load_file(Path(minilm) / "model.safetensors")
    save_file({"module." + k: v for k, v in sd.items()}, ddp / "model.safetensors", metadata={"format": "pt"})
    shutil.copy(Path(minilm) / "config.json", ddp / "config.json")
    before = checksums(ddp)

    broken = report(str(ddp), ModelSpec(config=str(ddp), arch="BertModel"))
    assert len(broken.unexpected) > 100
    plan, rep = plan_for(ddp, "BertModel", auto_fix=True)
    assert plan.key_mapping == {r"^module\.": ""}
    assert rep.is_clean
    out = tmp_path / "fixed"
    res = export_checkpoint(str(ddp), plan, out)
    assert res.is_clean
    load_clean(out, "BertModel")
    src_raw, out_raw = raw_tensors(ddp / "model.safetensors")[0], all_raw(out)
    assert set(out_raw) == {k.removeprefix("module.") for k in src_raw} - {"embeddings.position_ids"}
    for k, v in out_raw.items():
        assert v == src_raw["module." + k], k
    assert checksums(ddp) == before


def test_vocabulary_resize_keeps_overlap_rows(src, tmp_path):
    before = checksums(src)
    cfg_dir = tmp_path / "bigger"
    cfg_dir.mkdir()
    cfg = json.loads((src / "config.json").read_text())
    cfg["vocab_size"] = 30600
    (cfg_dir / "config.json").write_text(json.dumps(cfg))
    rep = report(str(src), ModelSpec(config=str(cfg_dir), arch="BertForMaskedLM"))
    assert [m[0] for m in rep.mismatched] == ["bert.embeddings.word_embeddings.weight"]
    plan = Plan.from_report(rep)

    out = tmp_path / "resized"
    res = export_checkpoint(str(src), plan, out, resize=True)
    assert res.counts["resized"] == 1 and res.is_clean
    model = load_clean(out, "BertForMaskedLM")
    out_raw = all_raw(out)
    # tied decoder weight is not duplicated, as save_pretrained does
    assert "cls.predictions.decoder.weight" not in out_raw
    assert model.cls.predictions.decoder.weight.data_ptr() == model.bert.embeddings.word_embeddings.weight.data_ptr()
    src_emb = raw_tensors(src / "model.safetensors")[0]["embeddings.word_embeddings.weight"]
    new = out_raw["bert.embeddings.word_embeddings.weight"]
    assert len(new) == 30600 * 384 * 4
    assert new[: len(src_emb)] == src_emb  # rows 0..30521 byte-identical
    w = model.bert.embeddings.word_embeddings.weight
    assert 0.01 < w[30522:].std().item() < 0.03  # new rows from the model's own init

    # without --resize the mismatched embedding is re-initialised entirely
    res2 = export_checkpoint(str(src), plan, tmp_path / "fresh")
    assert res2.counts["resized"] == 0 and res2.is_clean
    assert all_raw(tmp_path / "fresh")["bert.embeddings.word_embeddings.weight"][: len(src_emb)] != src_emb
    assert checksums(src) == before


def test_sharded_output(src, tmp_path):
    before = checksums(src)
    plan, _ = plan_for(src, "BertModel")
    out = tmp_path / "sharded"
    res = export_checkpoint(str(src), plan, out, max_shard_size="20MB")
    shards = sorted(out.glob("model-*-of-*.safetensors"))
    assert len(shards) >= 4
    assert not (out / "model.safetensors").exists()
    idx = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(idx["weight_map"].values()) == {p.name for p in shards}
    assert idx["metadata"]["total_size"] == res.total_bytes
    for p in shards:  # under the limit, unless one tensor alone is larger (the 47 MB word embedding)
        raw = raw_tensors(p)[0]
        assert len(raw) == 1 or sum(map(len, raw.values())) <= 20_000_000
    assert res.is_clean
    load_clean(out, "BertModel")
    src_raw = raw_tensors(src / "model.safetensors")[0]
    for k, v in all_raw(out).items():
        assert v == src_raw[k]
    assert checksums(src) == before


def test_dtype_cast_and_config(tmp_path):
    src = tmp_path / "tiny"
    save_tiny("llama", "LlamaForCausalLM", src, tie_word_embeddings=True)
    before = checksums(src)
    plan, rep = plan_for(src, "LlamaForCausalLM")
    out = tmp_path / "bf16"
    res = export_checkpoint(str(src), plan, out, dtype="bf16")
    assert res.is_clean
    _, header, meta = raw_tensors(out / "model.safetensors")
    assert {h["dtype"] for h in header.values()} == {"BF16"}
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    assert meta["explorer_dtype"] == "bfloat16"
    model = load_clean(out, "LlamaForCausalLM")
    assert model.dtype == torch.bfloat16
    assert checksums(src) == before


def test_tied_weights_written_as_save_pretrained(tmp_path):
    src = tmp_path / "tiny"
    model = save_tiny("llama", "LlamaForCausalLM", src, tie_word_embeddings=True)
    before = checksums(src)
    saved = set(raw_tensors(src / "model.safetensors")[0])
    assert "lm_head.weight" not in saved
    plan, _ = plan_for(src, "LlamaForCausalLM")
    # re-initialising the embedding: the tied head follows it and is still not duplicated
    plan = plan.with_rule("model.embed_tokens", match="key", action="reinit")
    out = tmp_path / "out"
    res = export_checkpoint(str(src), plan, out)
    assert set(all_raw(out)) == saved == set(model.state_dict()) - {"lm_head.weight"} - {
        k for k, _ in model.named_buffers() if k not in model.state_dict()
    }
    assert res.counts["tied"] == 1 and res.is_clean
    loaded = load_clean(out, "LlamaForCausalLM")
    assert torch.equal(loaded.lm_head.weight, loaded.model.embed_tokens.weight)
    assert not torch.equal(loaded.model.embed_tokens.weight, model.model.embed_tokens.weight)
    assert checksums(src) == before


def test_unexpected_dropped_and_explicit_drop(tmp_path):
    src = tmp_path / "head"
    save_tiny("bert", "BertForSequenceClassification", src)
    before = checksums(src)
    plan, rep = plan_for(src, "BertModel")  # head checkpoint into the base model: classifier is unexpected
    assert set(rep.unexpected) == {"classifier.weight", "classifier.bias"}
    res = export_checkpoint(str(src), plan, tmp_path / "base")
    assert res.counts["unexpected_dropped"] == 2 and res.is_clean
    assert not any(k.startswith("classifier") for k in all_raw(tmp_path / "base"))
    load_clean(tmp_path / "base", "BertModel")
    # dropping a model key leaves it out: the reload check says so
    res2 = export_checkpoint(str(src), plan.with_rule("pooler", action="drop"), tmp_path / "nopooler")
    assert not res2.is_clean
    assert set(res2.report.missing) == {"pooler.dense.weight", "pooler.dense.bias"}
    assert any("does not load clean" in n for n in res2.notes)
    assert checksums(src) == before


def test_converted_moe_checkpoint_loads_clean(tmp_path):
    src = tmp_path / "moe"
    save_tiny("mixtral", "MixtralForCausalLM", src)
    before = checksums(src)
    plan, rep = plan_for(src, "MixtralForCausalLM")
    assert rep.is_clean
    res = export_checkpoint(str(src), plan.with_rule("layers.1", action="reinit"), tmp_path / "out")
    assert res.is_clean
    load_clean(tmp_path / "out", "MixtralForCausalLM")
    src_raw = raw_tensors(src / "model.safetensors")[0]
    out_raw = all_raw(tmp_path / "out")
    # renamed keys are written under the model's name; fused (converted) experts keep their on-disk names so
    # transformers converts them again; layer 1 is re-initialised and written in the model's fused layout
    source_of = {}
    for k, m in rep.model_keys.items():
        for s in m.sources:
            source_of[s if "converted" in [h.value for h in m.how] else k] = s
    kept = [k for k in out_raw if ".layers.0." in k]
    assert len(kept) == len([s for s in src_raw if ".layers.0." in s])
    assert all(out_raw[k] == src_raw[source_of[k]] for k in kept)
    assert "model.layers.0.mlp.gate.weight" in out_raw and "model.layers.0.block_sparse_moe.experts.0.w1.weight" in out_raw
    assert "model.layers.1.mlp.experts.gate_up_proj" in out_raw
    assert checksums(src) == before


# --------------------------------------------------------------------------------------------- safety


def test_cancel_mid_export_leaves_nothing(src, tmp_path):
    before = checksums(src)
    plan, _ = plan_for(src, "BertModel")
    out = tmp_path / "cancelled"
    calls = []

    def progress(done, total, name):
        calls.append(done)

    with pytest.raises(ExportCancelled):
        export_checkpoint(str(src), plan, out, progress=progress, cancel=lambda: len(calls) >= 3, max_shard_size="20MB")
    assert len(calls) == 3
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]
    assert checksums(src) == before


def test_refuses_source_folder_nonempty_target_and_input_files(src, tmp_path):
    before = checksums(src)
    plan, _ = plan_for(src, "BertModel")
    with pytest.raises(ExportError, match="refusing to write into the source checkpoint's folder"):
        export_checkpoint(str(src), plan, src)
    with pytest.raises(ExportError, match="refusing to write over an input file"):
        export_checkpoint(str(src), plan, src / "model.safetensors")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="exists and is not empty"):
        export_checkpoint(str(src), plan, busy)
    assert (busy / "notes.txt").read_text() == "mine"
    with pytest.raises(ExportError, match="parent folder .* does not exist"):
        export_checkpoint(str(src), plan, tmp_path / "no" / "such" / "dir")
    # an existing empty folder is fine
    empty = tmp_path / "empty"
    empty.mkdir()
    assert export_checkpoint(str(src), plan, empty).is_clean
    assert checksums(src) == before


def test_bad_size_and_dtype(src, tmp_path):
    plan, _ = plan_for(src, "BertModel")
    with pytest.raises(ExportError, match="max_shard_size"):
        export_checkpoint(str(src), plan, tmp_path / "x", max_shard_size="lots")
    with pytest.raises(ExportError, match="dtype"):
        export_checkpoint(str(src), plan, tmp_path / "x", dtype="int3")
    assert not (tmp_path / "x").exists()


def test_torch_pickle_source_becomes_safetensors(tmp_path):
    """A zip-pickle .bin (read with weights_only, mmap) is written out as safetensors with identical values."""
    src = tmp_path / "bin"
    model = save_tiny("bert", "BertModel", tmp_path / "st")
    src.mkdir()
    shutil.copy(tmp_path / "st" / "config.json", src / "config.json")
    torch.save({"state_dict": {"module." + k: v for k, v in model.state_dict().items()}}, src / "pytorch_model.bin")
    before = checksums(src)
    plan, rep = plan_for(src, "BertModel", auto_fix=True)
    assert rep.index.format == "torch-zip" and rep.is_clean
    res = export_checkpoint(str(src), plan, tmp_path / "out", dtype="float16")
    assert res.is_clean
    loaded = load_clean(tmp_path / "out", "BertModel")
    assert torch.equal(loaded.encoder.layer[1].output.dense.weight, model.encoder.layer[1].output.dense.weight.half())
    assert checksums(src) == before


def test_cancel_stops_a_big_fresh_init_inside_it(tmp_path, monkeypatch):
    # a re-initialised tensor's fresh init polls the export's cancel between its pieces: a cancel during the init
    # of a big embedding ends the export there (not after the whole init), and nothing is written
    from explorer.core import fresh as fresh_mod

    src = tmp_path / "tiny"
    save_tiny("llama", "LlamaForCausalLM", src, tie_word_embeddings=False)
    before = checksums(src)
    plan, _ = plan_for(src, "LlamaForCausalLM")
    plan = plan.with_rule("model.embed_tokens", match="key", action="reinit")
    monkeypatch.setattr(fresh_mod, "INIT_CHUNK", 64)  # the tiny embedding's init in many pieces
    inside, finished = [], []
    real = fresh_mod.FreshInit._materialise_locked

    def watched(self, path, *a, **kw):
        inside.append(path)
        out = real(self, path, *a, **kw)
        finished.append(path)
        return out

    monkeypatch.setattr(fresh_mod.FreshInit, "_materialise_locked", watched)
    out = tmp_path / "out"
    with pytest.raises(ExportCancelled, match="export cancelled; nothing was written"):
        export_checkpoint(str(src), plan, out, cancel=lambda: "model.embed_tokens" in inside, workers=1)
    assert inside == ["model.embed_tokens"] and finished == []  # stopped inside the init
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]
    assert checksums(src) == before


def test_every_written_byte_starts_its_writeback_before_the_final_fsync(src, tmp_path, monkeypatch):
    # the tensors' bytes are handed to the disk as they are written (sync_file_range on Linux), so the final fsync
    # of a big shard waits for its tail only; the advice is harmless on any descriptor
    import os as _os

    import explorer.core.fsio as fsio_mod
    from explorer.core.fsio import start_writeback

    seen: list[tuple[int, int, int]] = []
    real = fsio_mod.start_writeback
    real_fsync = _os.fsync
    fsynced: set[int] = set()
    # the background writeback thread passes each range on before the file's fsync
    late: list[int] = []
    monkeypatch.setattr(fsio_mod, "start_writeback", lambda fd, off, n: (
        seen.append((_os.fstat(fd).st_ino, off, n)), _os.fstat(fd).st_ino in fsynced and late.append(off),
        real(fd, off, n))[2])
    monkeypatch.setattr(_os, "fsync", lambda fd: (fsynced.add(_os.fstat(fd).st_ino), real_fsync(fd))[1])
    plan, _ = plan_for(src, "BertModel")
    out = tmp_path / "out"
    res = export_checkpoint(str(src), plan.with_rule("pooler", action="reinit"), out, max_shard_size="20MB", workers=2)
    for f in res.files:
        if not f.endswith(".safetensors"):
            continue
        ino = _os.stat(f).st_ino
        ranges = sorted((off, off + n) for i, off, n in seen if i == ino and n)
        (hlen,) = struct.unpack("<Q", Path(f).read_bytes()[:8])
        assert ranges and ranges[0][0] == 8 + hlen and ranges[-1][1] == Path(f).stat().st_size, f
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:])), f  # contiguous: every byte, once
    assert not late  # every range was passed on before its file's fsync
    r, w = _os.pipe()
    try:
        start_writeback(r, 0, 10)  # not a file: the kernel says no, and that is all
        start_writeback(-1, 0, 10)
    finally:
        _os.close(r)
        _os.close(w)


def test_written_bytes_are_flushed_to_disk_during_the_export_and_a_failed_flush_fails_it(src, tmp_path, monkeypatch):
    # every FLUSH_EVERY bytes the writeback thread fdatasyncs the shard (a virtual disk keeps written data in its
    # host's cache until a flush: one final fsync of it all waited with the workers idle). A flush that fails must
    # not be swallowed: the kernel reports a write error to one fsync call only, so the final fsync would pass.
    import errno
    import os as _os

    import explorer.core.fsio as fsio_mod

    monkeypatch.setattr(fsio_mod, "FLUSH_EVERY", 4 << 20)
    real = _os.fdatasync
    flushed: list[int] = []
    monkeypatch.setattr(_os, "fdatasync", lambda fd: (flushed.append(_os.fstat(fd).st_size), real(fd))[1])
    plan, _ = plan_for(src, "BertModel")
    res = export_checkpoint(str(src), plan, tmp_path / "out", dtype="float16", workers=2)
    assert res.is_clean
    size = sum(Path(f).stat().st_size for f in res.files if f.endswith(".safetensors"))
    assert len(flushed) >= size // (8 << 20)  # ~45 MB written: flushed many times on the way, not once at the end

    def broken(fd):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(_os, "fdatasync", broken)
    out = tmp_path / "out2"
    with pytest.raises(ExportError, match="Input/output error") as e:
        export_checkpoint(str(src), plan, out, dtype="float16", workers=2)
    assert "\n" not in str(e.value)
    assert not out.exists() and not list(tmp_path.glob(".*out2*"))  # nothing left behind


def test_a_big_fresh_init_starts_first_and_the_bytes_do_not_change(tmp_path):
    # a re-initialised lm_head (a long random init that cannot be split) is the last tensor in the file: its jobs
    # start first, so no worker waits for it at the end; the file is the same for 1 and 2 workers
    from explorer.core.export import _jobs, _Out

    shard = [_Out(f"model.layers.{i}.w", (64, 64), "float32", "init", model_key=f"model.layers.{i}.w") for i in range(8)]
    shard += [_Out("lm_head.weight", (512, 64), "float32", "init", model_key="lm_head.weight"),
              _Out("lm_head.bias", (512,), "float32", "init", model_key="lm_head.bias")]
    order = [j[0].name for j in _jobs(shard)]
    assert order[:2] == ["lm_head.weight", "lm_head.bias"] and order[2:] == [o.name for o in shard[:8]]
    small = shard[:8]
    assert [j[0].name for j in _jobs(small)] == [o.name for o in small]  # no big init: file order
    # with 2 workers sharing the shard, a job that would run alone for 1/8 of their run is big at 1/16 of the
    # shard: a 1/12 lm_head starts first with 2 workers (in file order with 1); the biggest of the big first
    mid = [_Out(f"model.layers.{i}.w", (64, 64), "float32", "init", model_key=f"model.layers.{i}.w") for i in range(22)]
    mid += [_Out("lm_head.weight", (128, 64), "float32", "init", model_key="lm_head.weight")]
    assert [j[0].name for j in _jobs(mid, 1)] == [o.name for o in mid]
    assert [j[0].name for j in _jobs(mid, 2)] == ["lm_head.weight"] + [o.name for o in mid[:22]]
    both = shard + [_Out("embed.weight", (1024, 64), "float32", "init", model_key="embed.weight")]
    assert [j[0].name for j in _jobs(both, 2)][:3] == ["embed.weight", "lm_head.weight", "lm_head.bias"]

    src = tmp_path / "tiny"
    save_tiny("llama", "LlamaForCausalLM", src, tie_word_embeddings=False, vocab_size=4000)
    plan, _ = plan_for(src, "LlamaForCausalLM")
    plan = plan.with_rule("lm_head", match="key", action="reinit")
    one = export_checkpoint(str(src), plan, tmp_path / "one", workers=1, seed=5)
    two = export_checkpoint(str(src), plan, tmp_path / "two", workers=2, seed=5)
    assert one.is_clean and two.is_clean
    assert all_raw(tmp_path / "one") == all_raw(tmp_path / "two")
    assert (tmp_path / "one" / "model.safetensors").read_bytes() == (tmp_path / "two" / "model.safetensors").read_bytes()


def test_kept_tensors_are_copied_by_the_workers_and_the_fallback_writes_the_same_bytes(src, tmp_path, monkeypatch):
    # a kept tensor's bytes are copied by the kernel at both offsets on a worker thread (copied in the caller's
    # thread in its turn, a big one held up the end of the file); where copy_file_range is refused (another file
    # system, an old kernel) pread/pwrite write the same file; 1 and 2 workers the same bytes
    import os as _os
    import threading

    import explorer.core.export as export_mod

    plan, _ = plan_for(src, "BertModel")
    plan = plan.with_rule("pooler", action="reinit")
    threads: set[str] = set()
    real = export_mod._copy_range
    monkeypatch.setattr(export_mod, "_copy_range", lambda *a: (threads.add(threading.current_thread().name), real(*a))[1])
    two = export_checkpoint(str(src), plan, tmp_path / "two", workers=2, seed=3)
    assert threads and threading.main_thread().name not in threads
    one = export_checkpoint(str(src), plan, tmp_path / "one", workers=1, seed=3)

    def refused(*a, **k):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(_os, "copy_file_range", refused)
    fallback = export_checkpoint(str(src), plan, tmp_path / "fallback", workers=2, seed=3)
    assert one.is_clean and two.is_clean and fallback.is_clean
    data = {n: (tmp_path / n / "model.safetensors").read_bytes() for n in ("one", "two", "fallback")}
    assert data["one"] == data["two"] == data["fallback"]
    kept, stored = all_raw(tmp_path / "two"), all_raw(src)
    assert all(kept[k] == stored[k] for k in kept if "pooler" not in k)  # the kept tensors: the stored bytes
    assert sum("pooler" not in k for k in kept) > 90
