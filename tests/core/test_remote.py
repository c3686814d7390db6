"""Remote checkpoints against a loopback Hub stand-in: the report equals the local one, few bytes cross the wire,
the cache answers offline, values are read by byte range, and every fault is one line naming the source."""
from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors.torch import save_file

from explorer.core.checkpoint import TensorReader, open_checkpoint
from explorer.core.errors import CheckpointError
from explorer.core.matching import report
from explorer.core.remote import open_source
from explorer.core.stats import aggregate_stats
from explorer.core.target import TargetSpec
from tests.helpers import save_tiny
from tests.remote_helpers import HubStandIn, hub_env

REPO = "sentence-transformers/all-MiniLM-L6-v2"


@pytest.fixture
def hub(monkeypatch, tmp_path):
    with HubStandIn() as h:
        hub_env(monkeypatch, h, tmp_path)
        yield h


def _same_report(a, b) -> None:
    ja, jb = a.to_json(), b.to_json()
    for k in ("checkpoint", "files", "notes"):
        ja.pop(k), jb.pop(k)
    for t in ja["tensors"] + jb["tensors"]:
        t.pop("file", None)
    for j in (ja, jb):
        if j.get("model"):
            j["model"].pop("config")
    assert ja == jb


def _resolve_gets(h: HubStandIn) -> list[str | None]:
    return [r for m, p, r in h.requests if m == "GET" and "/cdn/" in p]


def test_hub_repo_report_equals_local_with_one_small_range_request(hub, minilm):
    hub.add_repo(REPO, minilm_path := __import__("pathlib").Path(minilm))
    remote = report(TargetSpec(REPO).resolve())
    local = report(TargetSpec(str(minilm_path)).resolve())
    _same_report(remote, local)
    assert remote.counts()["matched"] == local.counts()["matched"] > 100
    assert _resolve_gets(hub) == ["bytes=0-99999"]  # the header fits: one Range request for the weights
    weights = (minilm_path / "model.safetensors").stat().st_size
    assert hub.bytes_served < 200_000 < weights
    assert any("commit" in n and "header-only" in n for n in remote.index.notes)


def test_sharded_repo_fetches_each_shard_header_only(hub, tmp_path):
    folder = tmp_path / "llama"
    model = save_tiny("llama", "LlamaForCausalLM", tmp_path / "one-file")
    model.save_pretrained(folder, max_shard_size="40KB")
    shards = sorted(p.name for p in folder.glob("model-*.safetensors"))
    assert len(shards) >= 3
    hub.add_repo("org/tiny-llama", folder)
    remote = report(TargetSpec("org/tiny-llama").resolve())
    _same_report(remote, report(TargetSpec(str(folder)).resolve()))
    gets = _resolve_gets(hub)
    sizes = [(folder / s).stat().st_size for s in shards]  # each under 100 kB: one request each
    assert sorted(gets) == sorted(f"bytes=0-{min(n, 100_000) - 1}" for n in sizes)


def test_long_header_takes_a_second_range_request_for_the_rest(hub, tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    save_file({f"layer.{i}.weight_with_a_long_name": torch.zeros(2) for i in range(3000)}, folder / "model.safetensors")
    n = struct.unpack("<Q", (folder / "model.safetensors").read_bytes()[:8])[0]
    assert n > 100_000
    hub.add_repo("org/many", folder)
    idx = open_source("org/many")
    assert idx.tensors.keys() == open_checkpoint(folder).tensors.keys()
    assert _resolve_gets(hub) == ["bytes=0-99999", f"bytes=100000-{n + 7}"]


def test_revision_and_subfolder(hub, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b" / "sub"
    save_tiny("bert", "BertModel", a)
    save_tiny("gpt2", "GPT2LMHeadModel", b)
    hub.add_repo("org/m", a)
    hub.add_repo("org/m", tmp_path / "b", revision="v2")
    assert open_source("org/m").tensors.keys() == open_checkpoint(a).tensors.keys()
    assert "no weights found" in _err(open_source, "org/m", revision="v2")  # v2 has weights in sub/ only
    got = open_source("hf://org/m@v2/sub")
    assert got.tensors.keys() == open_checkpoint(b).tensors.keys()
    rep = report(TargetSpec("hf://org/m@v2/sub").resolve())
    assert rep.spec is not None and rep.counts()["missing"] == 0


def test_local_path_wins_over_repo_id(hub, tmp_path, monkeypatch, minilm):
    hub.add_repo(REPO, __import__("pathlib").Path(minilm))
    save_tiny("bert", "BertModel", tmp_path / "org" / "name")
    hub.add_repo("org/name", __import__("pathlib").Path(minilm))
    monkeypatch.chdir(tmp_path)
    idx = open_source("org/name")
    assert idx.format == "safetensors" and not hub.requests
    assert any("local path was used" in n for n in idx.notes)


def test_reopen_uses_header_cache_then_works_offline(hub, minilm, monkeypatch):
    from huggingface_hub import constants

    hub.add_repo(REPO, __import__("pathlib").Path(minilm))
    first = open_source(REPO)
    hub.reset_counts()
    again = open_source(REPO)
    assert again.tensors == first.tensors
    assert _resolve_gets(hub) == []  # only the model info (which commit main is)
    hub.reset_counts()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    off = report(TargetSpec(REPO).resolve())
    assert hub.requests == []
    assert off.index.tensors == first.tensors and off.spec is not None
    assert any("offline" in n and "cached commit" in n for n in off.index.notes)


def test_network_down_falls_back_to_cache(hub, minilm, monkeypatch):
    hub.add_repo(REPO, __import__("pathlib").Path(minilm))
    first = open_source(REPO)
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    s.close()
    monkeypatch.setenv("HF_ENDPOINT", dead)
    idx = open_source(REPO)
    assert idx.tensors == first.tensors
    assert any("cannot be reached" in n for n in idx.notes)


def test_offline_prefers_full_snapshot_in_hf_cache(hub, minilm, monkeypatch):
    from huggingface_hub import constants, snapshot_download

    hub.add_repo(REPO, __import__("pathlib").Path(minilm))
    snapshot_download(REPO, endpoint=hub.endpoint)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    hub.reset_counts()
    idx = open_source(REPO)
    assert idx.format == "safetensors" and idx.layout is None and hub.requests == []
    assert "snapshots" in idx.path


def test_tensor_values_read_only_their_byte_range(hub, minilm):
    hub.add_repo(REPO, __import__("pathlib").Path(minilm))
    idx = open_source(REPO)
    local = open_checkpoint(minilm)
    name = "encoder.layer.0.attention.self.query.weight"
    hub.reset_counts()
    with TensorReader(idx) as r, TensorReader(local) as lr:
        assert torch.equal(r.tensor(name), lr.tensor(name))
    assert hub.bytes_served == local.tensors[name].nbytes
    hub.reset_counts()
    got = aggregate_stats(TensorReader(idx), [name], bins=64)
    want = aggregate_stats(TensorReader(local), [name], bins=64)
    assert got.to_json() == want.to_json()
    assert hub.bytes_served == local.tensors[name].nbytes  # two passes (range, then histogram), one read


def test_diff_local_finetune_against_hub_base(hub, tmp_path):
    from explorer.core.diff import DiffStatus, diff_checkpoints

    base, tuned = tmp_path / "base", tmp_path / "tuned"
    save_tiny("bert", "BertModel", base, seed=0)
    save_tiny("bert", "BertModel", tuned, seed=0)
    sd = open_checkpoint(tuned)
    from safetensors.torch import load_file

    t = load_file(tuned / "model.safetensors")
    t["pooler.dense.bias"] = t["pooler.dense.bias"] + 1
    save_file(t, tuned / "model.safetensors", metadata={"format": "pt"})
    hub.add_repo("org/base", base)
    entries = diff_checkpoints(open_checkpoint(tuned), open_source("org/base"))
    changed = {e.name for e in entries if e.status is not DiffStatus.SAME}
    assert changed == {"pooler.dense.bias"}
    assert len(entries) == len(sd.tensors)


def test_pickle_needs_download_then_opens_from_hf_cache(hub, tmp_path):
    folder = tmp_path / "bin"
    save_tiny("bert", "BertModel", folder)
    sd = open_checkpoint(folder)
    from safetensors.torch import load_file

    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    hub.add_repo("org/bin", folder)
    size = (folder / "pytorch_model.bin").stat().st_size
    with pytest.raises(CheckpointError) as e:
        open_source("org/bin")
    msg = str(e.value)
    assert "downloaded in full" in msg and "--download" in msg and "KiB" in msg and "\n" not in msg
    assert all("/cdn/" not in p for _, p, _ in hub.requests)
    idx = open_source("org/bin", download=True)
    assert idx.tensors.keys() == sd.tensors.keys() and "hf-cache" in idx.path
    assert size > 0


# --------------------------------------------------------------------------------------------- faults


def _err(fn, *a, **kw) -> str:
    with pytest.raises(CheckpointError) as e:
        fn(*a, **kw)
    msg = str(e.value)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


def test_not_found_repo_revision_file(hub, minilm):
    hub.add_repo(REPO, __import__("pathlib").Path(minilm))
    assert "no such repo" in _err(open_source, "nobody/nothing")
    assert "no such revision" in _err(open_source, REPO, revision="v9")
    assert "no such file" in _err(open_source, f"hf://{REPO}/other.safetensors")


def test_gated_repo_says_how_to_log_in_and_never_prints_the_token(hub, minilm, monkeypatch, tmp_path):
    secret = "hf_SECRETsecretSECRET123"
    hub.add_repo("org/gated", __import__("pathlib").Path(minilm), token=secret)
    msg = _err(open_source, "org/gated")
    assert "hf auth login" in msg and "HF_TOKEN" in msg
    monkeypatch.setenv("HF_TOKEN", "hf_wrongwrongwrong")
    msg = _err(open_source, "org/gated")
    assert "hf_wrong" not in msg
    monkeypatch.setenv("HF_TOKEN", secret)
    idx = open_source("org/gated")
    assert len(idx.tensors) > 100


def test_not_safetensors(hub, tmp_path):
    folder = tmp_path / "junk"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"<html>not found</html>" * 10)
    hub.add_repo("org/junk", folder)
    msg = _err(open_source, "org/junk")
    assert "hf://org/junk/model.safetensors" in msg and "header length" in msg


def _sparse(folder, size=1 << 30, tensors=None):
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / "model.safetensors"
    n = size - 8
    header = json.dumps({"w": {"dtype": "F32", "shape": [(n - 2000) // 4], "data_offsets": [0, ((n - 2000) // 4) * 4]}})
    header = header.encode()
    pad = b" " * (2000 - len(header))
    with open(p, "wb") as f:
        f.write(struct.pack("<Q", 2000) + header + pad)
        f.truncate(8 + 2000 + ((n - 2000) // 4) * 4)
    return p


def test_server_ignoring_range_stops_after_the_header(hub, tmp_path):
    p = _sparse(tmp_path / "big")
    hub.add_repo("org/big", tmp_path / "big")
    hub.faults["model.safetensors"] = {"ignore_range": True}
    idx = open_source("org/big")
    assert idx.tensors["w"].nbytes > (1 << 29)
    assert idx.layout.transfer.bytes < 1 << 20  # we read ~100 kB and closed the response
    assert any("ignored Range" in n for n in idx.notes)
    # values: refused rather than downloading everything before the tensor
    with TensorReader(idx) as r:
        msg = _err(lambda: next(r.iter_chunks("w", chunk_elems=4)))
    assert "ignores Range" in msg and "hf://org/big/model.safetensors" in msg
    assert p.stat().st_size > 1 << 29


def test_header_length_over_the_cap(hub, tmp_path):
    folder = tmp_path / "cap"
    folder.mkdir()
    with open(folder / "model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", 200 << 20) + b"{")
        f.truncate(300 << 20)
    hub.add_repo("org/cap", folder)
    msg = _err(open_source, "org/cap")
    assert "exceeds" in msg and "limit" in msg
    assert sum(n for p, n in hub.served.items() if "/cdn/" in p) <= 100_000


@pytest.mark.parametrize("fault,words", [({"truncate": 5000}, "truncated|closed before"),
                                         ({"reset": 3000}, "closed before|truncated|network")])
def test_truncated_or_reset_mid_header(hub, minilm, fault, words):
    import re

    hub.add_repo(REPO, __import__("pathlib").Path(minilm))
    hub.faults["model.safetensors"] = fault
    msg = _err(open_source, REPO)
    assert REPO in msg and re.search(words, msg)


def test_timeout_is_bounded_and_configurable(hub, minilm, monkeypatch):
    import time

    hub.add_repo(REPO, __import__("pathlib").Path(minilm))
    hub.faults["model.safetensors"] = {"stall": 3}
    monkeypatch.setenv("CKPT_EXPLORER_TIMEOUT", "0.5")
    t = time.monotonic()
    msg = _err(open_source, REPO)
    assert "timed out after 0.5 s" in msg and "CKPT_EXPLORER_TIMEOUT" in msg
    assert time.monotonic() - t < 3


def test_index_naming_a_missing_shard(hub, tmp_path):
    folder = tmp_path / "llama"
    model = save_tiny("llama", "LlamaForCausalLM", tmp_path / "one-file")
    model.save_pretrained(folder, max_shard_size="40KB")
    idx = json.loads((folder / "model.safetensors.index.json").read_text())
    idx["weight_map"]["extra.weight"] = "model-09999-of-09999.safetensors"
    (folder / "model.safetensors.index.json").write_text(json.dumps(idx))
    hub.add_repo("org/holes", folder)
    msg = _err(open_source, "org/holes")
    assert "model-09999-of-09999.safetensors" in msg and "does not have" in msg


# --------------------------------------------------------------------------------------------- plain URLs


def test_url_report_equals_local_and_redirects_are_followed(hub, tmp_path, minilm):
    base = hub.add_plain("m", __import__("pathlib").Path(minilm))
    remote = report(TargetSpec(base + "model.safetensors").resolve())
    _same_report(remote, report(TargetSpec(minilm).resolve()))
    assert hub.bytes_served < 200_000
    folder = tmp_path / "llama"
    model = save_tiny("llama", "LlamaForCausalLM", tmp_path / "one-file")
    model.save_pretrained(folder, max_shard_size="40KB")
    url = hub.add_plain("l", folder) + "model.safetensors.index.json"
    _same_report(report(TargetSpec(url).resolve()), report(TargetSpec(str(folder)).resolve()))
    moved = f"{hub.endpoint}/moved/m/model.safetensors"
    assert open_source(moved).tensors.keys() == open_checkpoint(minilm).tensors.keys()


def test_url_faults(hub, tmp_path, minilm):
    base = hub.add_plain("m", __import__("pathlib").Path(minilm))
    assert "not found (404)" in _err(open_source, base + "nope.safetensors")
    hub.faults["model.safetensors"] = {"truncate": 4000}
    assert "truncated" in _err(open_source, base + "model.safetensors")
    hub.faults.clear()
    p = _sparse(tmp_path / "big")
    big = hub.add_plain("big", p.parent)
    hub.faults["model.safetensors"] = {"ignore_range": True}
    idx = open_source(big + "model.safetensors")
    assert idx.layout.transfer.bytes < 1 << 20


def test_url_access_denied_and_hostile_config_beside(hub, tmp_path, minilm):
    base = hub.add_plain("m", __import__("pathlib").Path(minilm))
    hub.faults["model.safetensors"] = {"status": 401}
    msg = _err(open_source, base + "model.safetensors")
    assert "access denied (401)" in msg and "hf auth login" not in msg
    hub.faults.clear()
    folder = tmp_path / "deep"
    folder.mkdir()
    (folder / "model.safetensors").symlink_to(__import__("pathlib").Path(minilm) / "model.safetensors")
    (folder / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    url = hub.add_plain("deep", folder) + "model.safetensors"
    msg = _err(open_source, url)
    assert "config.json" in msg


def test_url_server_down_is_one_line():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    msg = _err(open_source, f"http://127.0.0.1:{port}/x/model.safetensors")
    assert "cannot connect" in msg and f"127.0.0.1:{port}" in msg


@pytest.mark.parametrize("bare", [True, "no_siblings"])
def test_endpoint_without_sizes_or_file_list(hub, tmp_path, bare):
    folder = tmp_path / "llama"
    model = save_tiny("llama", "LlamaForCausalLM", tmp_path / "one-file")
    model.save_pretrained(folder, max_shard_size="40KB")
    hub.add_repo("org/bare", folder)
    hub.bare_info = bare
    if bare is True:  # sizes unknown: a shard under 100 kB answers with fewer bytes than asked, which is fine
        assert open_source("org/bare").tensors.keys() == open_checkpoint(folder).tensors.keys()
    else:  # no file list in the model info: the tree listing gives it
        assert open_source("org/bare").tensors.keys() == open_checkpoint(folder).tensors.keys()


def test_header_fetch_reports_progress_and_stops_when_cancelled(hub, tmp_path):
    from explorer.core.errors import Cancelled

    folder = tmp_path / "llama"
    model = save_tiny("llama", "LlamaForCausalLM", tmp_path / "one-file")
    model.save_pretrained(folder, max_shard_size="40KB")
    hub.add_repo("org/p", folder)
    seen = []
    open_source("org/p", progress=lambda d, t, what: seen.append((d, t, what)))
    assert [d for d, _, _ in seen] == [0, 1, 2, 3] and seen[-1][2].endswith("transferred")
    with pytest.raises(Cancelled):
        open_source("org/p", cancel=lambda: True)  # checked before each shard, cached or not


def test_url_reopens_from_the_cache_when_the_server_is_gone(hub, tmp_path, minilm, monkeypatch):
    folder = tmp_path / "llama"
    model = save_tiny("llama", "LlamaForCausalLM", tmp_path / "one-file")
    model.save_pretrained(folder, max_shard_size="40KB")
    with HubStandIn() as other:
        url = other.add_plain("l", folder) + "model.safetensors.index.json"
        first = report(TargetSpec(url).resolve())
    monkeypatch.setenv("CKPT_EXPLORER_TIMEOUT", "9")  # a new fsspec filesystem: no kept-alive connection to reuse
    again = report(TargetSpec(url).resolve())  # the server is down now
    _same_report(again, first)
    assert again.spec is not None
    assert any("offline" in n and "cache" in n for n in again.index.notes)


def test_export_from_the_hub_streams_the_kept_tensors(hub, tmp_path):
    from safetensors.torch import load_file

    from explorer.core.export import export_checkpoint
    from explorer.core.plan import Plan

    folder = tmp_path / "bert"
    save_tiny("bert", "BertModel", folder)
    hub.add_repo("org/bert", folder)
    rep = report(TargetSpec("org/bert").resolve())
    plan = Plan.from_report(rep)
    hub.reset_counts()
    res = export_checkpoint("org/bert", plan, tmp_path / "out")
    assert res.is_clean
    got, want = load_file(tmp_path / "out" / "model.safetensors"), load_file(folder / "model.safetensors")
    assert got.keys() <= want.keys() and all(torch.equal(got[k], want[k]) for k in got)
    assert hub.bytes_served <= sum(t.nbytes for t in rep.index.tensors.values()) + 200_000  # each kept tensor once


def test_config_json_is_read_under_its_cap_even_when_the_listing_has_no_size(hub, tmp_path, minilm):
    """A config.json the listing gives no size for, far over the JSON cap: refused in one line after reading at most
    the cap (never downloaded whole into a cache), and the weights' own header never needed."""
    import shutil
    from pathlib import Path

    from explorer.core.fsio import MAX_JSON_BYTES

    folder = tmp_path / "huge-config"
    folder.mkdir()
    shutil.copy(Path(minilm) / "model.safetensors", folder / "model.safetensors")
    with open(folder / "config.json", "wb") as f:
        f.write(b"{" + b" " * 1024)
        f.truncate(4 * MAX_JSON_BYTES)  # a hole: 256 MiB of zeros served to whoever asks
    hub.add_repo("org/huge-config", folder)
    hub.bare_info = True
    msg = _err(lambda: TargetSpec("org/huge-config").resolve())
    assert "org/huge-config" in msg and "config.json" in msg and "limit" in msg
    assert hub.bytes_served < MAX_JSON_BYTES + (4 << 20)
    # the same repo's config through --config org/name: the same bound
    hub.reset_counts()
    msg = _err(lambda: TargetSpec(str(Path(minilm)), config="org/huge-config").resolve())
    assert "limit" in msg and hub.bytes_served < MAX_JSON_BYTES + (4 << 20)
