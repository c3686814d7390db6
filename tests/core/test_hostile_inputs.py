"""Hostile checkpoints on the reading side (issue 8): every one is refused with one line naming the file, or read
exactly as the owning library reads it; nothing outside the folder is read, nothing hangs, nothing crashes.

The safetensors header check is cross-checked against ``safetensors.safe_open`` itself on hand-made and fuzzed
headers: both open a file, or both refuse it.
"""
from __future__ import annotations

import json
import os
import random
import struct
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from explorer.core.sources import torch_pickle
from explorer.core.checkpoint import TensorReader, open_checkpoint
from explorer.core.errors import CheckpointError, ExplorerError
from explorer.core.stats import tensor_stats


def _write_st(path: Path, header: bytes | str | dict, data: bytes = b"") -> Path:
    raw = json.dumps(header).encode() if isinstance(header, dict) else header.encode("utf-8", "surrogatepass") if isinstance(header, str) else header
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def _library_opens(path: Path) -> bool:
    try:
        with safe_open(str(path), framework="pt") as f:
            list(f.keys())
        return True
    except Exception:  # noqa: BLE001 - SafetensorError and friends: the library refused it
        return False


def _library_loads(path: Path) -> bool:
    """What from_pretrained can read: safetensors opens the file and torch can hold every tensor. The two differ
    only for headers safetensors accepts but torch cannot represent (an F6 dtype, a dim past int64), which we
    refuse by name (tests below)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            for k in f.keys():
                f.get_tensor(k)
        return True
    except Exception:  # noqa: BLE001 - SafetensorError, TypeError from torch: refused
        return False


def _we_open(path: Path) -> bool:
    try:
        open_checkpoint(path)
        return True
    except CheckpointError as e:
        msg = str(e)
        assert "\n" not in msg and str(path) in msg, msg
        return False


def _one_line(e: BaseException, *names: object) -> str:
    msg = str(e)
    assert isinstance(e, ExplorerError), type(e)
    assert "\n" not in msg and "Traceback" not in msg, msg
    for n in names:
        assert str(n) in msg, (n, msg)
    return msg


def _bounded(fn, *, limit: float = 60.0):
    """Run ``fn`` in a thread; a hang (a FIFO read, a runaway loop) fails the test instead of hanging the suite."""
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            box["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(limit)
    assert not t.is_alive(), f"{fn} did not finish: a read blocked or ran away"
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box.get("value")


# --------------------------------------------------------------------------------------------- item 8: header parity

T = '{"dtype":"F32","shape":[1],"data_offsets":[0,4]}'


def _x(extra: str) -> str:
    return '{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":%s}}' % extra


def _dt(dt: str) -> str:
    return '{"a":{"dtype":%s,"shape":[1],"data_offsets":[0,4]}}' % dt


# (id, header text, data bytes). Verdicts come from safetensors itself; the comments say what it decides.
HEADERS = [
    ("valid", '{"a":%s}' % T, 4),
    ("trailing-garbage", '{"a":%s}' % T, 4 + 7),  # printf GARBAGE >> model.safetensors
    ("trailing-on-empty", "{}", 3),
    ("empty", "{}", 0),
    ("gap", '{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}', 12),
    ("overlap", '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', 8),
    ("not-from-0", '{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', 8),
    ("reversed", '{"a":{"dtype":"F32","shape":[0],"data_offsets":[4,0]}}', 4),
    ("unsorted-but-contiguous", '{"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]},"a":%s}' % T, 8),
    ("zero-size-between", '{"a":%s,"z":{"dtype":"F32","shape":[0],"data_offsets":[4,4]}}' % T, 4),
    ("zero-size-gap", '{"a":%s,"z":{"dtype":"F32","shape":[0],"data_offsets":[8,8]}}' % T, 4),
    ("dup-identical", '{"a":%s,"a":%s}' % (T, T), 4),
    ("dup-garbage-first", '{"a":"garbage","a":%s}' % T, 4),
    ("dup-different", '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":%s}' % T, 8),
    ("dup-field", '{"a":{"dtype":"F32","dtype":"F32","shape":[1],"data_offsets":[0,4]}}', 4),
    ("dup-metadata", '{"__metadata__":{},"__metadata__":{},"a":%s}' % T, 4),
    ("metadata-dup-key", '{"__metadata__":{"k":"v","k":"w"},"a":%s}' % T, 4),
    ("metadata-dup-key-bad-first", '{"__metadata__":{"k":1,"k":"w"},"a":%s}' % T, 4),
    ("metadata-null", '{"__metadata__":null,"a":%s}' % T, 4),
    ("metadata-list", '{"__metadata__":[],"a":%s}' % T, 4),
    ("metadata-string", '{"__metadata__":"x","a":%s}' % T, 4),
    ("metadata-int-value", '{"__metadata__":{"k":1},"a":%s}' % T, 4),
    ("metadata-nested", '{"__metadata__":{"k":{"x":"y"}},"a":%s}' % T, 4),
    ("metadata-is-a-tensor-entry", '{"__metadata__":%s}' % T, 4),
    ("dup-name-sequence-first", '{"a":["F32",[1],[0,4]],"a":%s}' % T, 4),
    ("dup-name-with-colons", '{"a:b":%s,"a:b":%s}' % (T, T), 4),
    ("dup-name-one-escaped", '{"a\\u003a":%s,"a:":%s}' % (T, T), 4),  # the same name, one written as \u003a
    ("colons-in-names-and-metadata", '{"__metadata__":{"k:1":"v::2"},"a:b":%s}' % T, 4),
    ("metadata-dup-key-colon-values", '{"__metadata__":{"k":"a:b","k":"c"},"a":%s}' % T, 4),
    ("metadata-like-tensor", '{"__metadata__":{"dtype":"F32","shape":"[1]","data_offsets":"[0,4]"},"a":%s}' % T, 4),
    ("tensor-as-sequence", '{"a":["F32",[1],[0,4]]}', 4),
    ("tensor-sequence-too-long", '{"a":["F32",[1],[0,4],1]}', 4),
    ("tensor-sequence-too-short", '{"a":["F32",[1]]}', 4),
    ("tensor-null", '{"a":null}', 0),
    ("tensor-string", '{"a":"F32"}', 0),
    ("dtype-list", _dt('["F32"]'), 4),  # was TypeError: unhashable type: 'list'
    ("dtype-map-unit", _dt('{"F32":null}'), 4),
    ("dtype-map-int", _dt('{"F32":1}'), 4),
    ("dtype-map-two", _dt('{"F32":null,"F16":null}'), 4),
    ("dtype-map-dup", _dt('{"F32":null,"F32":null}'), 4),
    ("dtype-null", _dt("null"), 4),
    ("dtype-int", _dt("7"), 4),
    ("dtype-lowercase", _dt('"f32"'), 4),
    ("dtype-unknown", _dt('"F128"'), 4),
    ("missing-shape", '{"a":{"dtype":"F32","data_offsets":[0,4]}}', 4),
    ("shape-float", '{"a":{"dtype":"F32","shape":[1.0],"data_offsets":[0,4]}}', 4),
    ("shape-bool", '{"a":{"dtype":"F32","shape":[true],"data_offsets":[0,4]}}', 4),
    ("shape-negative", '{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}', 4),
    ("shape-minus-zero", '{"a":{"dtype":"F32","shape":[-0],"data_offsets":[0,0]}}', 0),  # -0 is a float to serde
    ("shape-map", '{"a":{"dtype":"F32","shape":{"0":1},"data_offsets":[0,4]}}', 4),
    ("shape-scalar", '{"a":{"dtype":"F32","shape":[],"data_offsets":[0,4]}}', 4),
    ("dim-i64-max", '{"a":{"dtype":"U8","shape":[9223372036854775807,0],"data_offsets":[0,0]}}', 0),
    ("dim-u64-max-plus-1", '{"a":{"dtype":"U8","shape":[18446744073709551616,0],"data_offsets":[0,0]}}', 0),
    ("numel-overflow-before-zero", '{"a":{"dtype":"F32","shape":[9223372036854775808,4,0],"data_offsets":[0,0]}}', 0),
    ("zero-before-overflow", '{"a":{"dtype":"F32","shape":[0,4611686018427387904,4],"data_offsets":[0,0]}}', 0),
    ("bits-overflow", '{"a":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,0]}}', 0),
    ("size-mismatch", '{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}}', 16),
    ("f4-odd", '{"a":{"dtype":"F4","shape":[3],"data_offsets":[0,1]}}', 1),
    ("f4-even", '{"a":{"dtype":"F4","shape":[4],"data_offsets":[0,2]}}', 2),
    ("offsets-three", '{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4,4]}}', 4),
    ("offsets-map", '{"a":{"dtype":"F32","shape":[1],"data_offsets":{"0":0,"1":4}}}', 4),
    ("offsets-minus-zero", '{"a":{"dtype":"F32","shape":[1],"data_offsets":[-0,4]}}', 4),
    ("offsets-past-end", '{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}', 8),
    ("extra-field", _x('[1,2,{"y":null}]'), 4),
    ("extra-field-minus-zero", _x("-0"), 4),
    ("extra-field-int-25-digits", _x("9" * 25), 4),
    ("extra-field-int-308-digits", _x("9" * 308), 4),
    ("extra-field-int-309-digits", _x("9" * 309), 4),  # out of f64 range
    ("extra-field-int-5000-digits", _x("9" * 5000), 4),
    ("extra-field-float-overflow", _x("1e400"), 4),
    ("extra-field-float-underflow", _x("1e-400"), 4),
    ("extra-field-nan", _x("NaN"), 4),
    ("extra-field-infinity", _x("-Infinity"), 4),
    ("extra-field-depth-125", _x("[" * 125 + "]" * 125), 4),  # serde_json's recursion limit is 128 levels
    ("extra-field-depth-126", _x("[" * 126 + "]" * 126), 4),
    ("extra-field-lone-surrogate", _x('"\\udc00"'), 4),
    ("name-lone-surrogate", '{"\\ud800":%s}' % T, 4),
    ("name-surrogate-pair", '{"\\ud83d\\ude00":%s}' % T, 4),
    ("name-nul-escape", '{"a\\u0000b":%s}' % T, 4),
    ("name-control-char", '{"a\tb":%s}' % T, 4),
    ("name-empty", '{"":%s}' % T, 4),
    ("top-array", "[]", 0),
    ("top-string", '"x"', 0),
    ("top-null", "null", 0),
    ("leading-space", ' {"a":%s}' % T, 4),
    ("trailing-spaces", '{"a":%s}    ' % T, 4),  # safetensors pads headers with spaces
    ("trailing-nul", '{"a":%s}\x00' % T, 4),
    ("trailing-formfeed", '{"a":%s}\x0c' % T, 4),
    ("bom", '\ufeff{"a":%s}' % T, 4),
    ("plus-sign", '{"a":{"dtype":"F32","shape":[+1],"data_offsets":[0,4]}}', 4),
    ("truncated-json", '{"a":%s' % T, 4),
    ("header-empty", "", 0),
    ("deep-100k", "[" * 100_000 + "]" * 100_000, 0),
    ("deep-100k-object", '{"a":' * 100_000 + "1" + "}" * 100_000, 0),
]


@pytest.mark.parametrize("header,data_len", [pytest.param(h, n, id=i) for i, h, n in HEADERS])
def test_header_verdict_matches_safetensors(tmp_path, header, data_len):
    f = _write_st(tmp_path / "m.safetensors", header, bytes(range(256)) * (data_len // 256) + bytes(data_len % 256))
    lib = _library_loads(f)
    assert _we_open(f) == lib
    if lib:  # and then we see what safetensors sees, byte for byte
        idx = open_checkpoint(f)
        with safe_open(str(f), framework="pt") as sf, TensorReader(idx) as r:
            assert set(idx.tensors) == set(sf.keys())
            assert dict(idx.metadata) == (sf.metadata() or {})
            for k in sf.keys():
                info = idx.tensors[k]
                assert info.shape == tuple(sf.get_slice(k).get_shape())  # the header's (logical) shape
                t = sf.get_tensor(k)
                assert info.dtype == str(t.dtype).removeprefix("torch.")
                if t.dtype != torch.float4_e2m1fn_x2:  # packed two per byte: torch's shape is halved
                    assert info.shape == tuple(t.shape)
                    assert torch.equal(r.tensor(k).reshape(-1).view(torch.uint8), t.reshape(-1).view(torch.uint8))


def test_duplicate_names_are_read_as_safetensors_reads_them_and_noted(tmp_path):
    f = _write_st(tmp_path / "d.safetensors", '{"a":"garbage-in-an-earlier-entry","a":%s}' % T, b"\0" * 4)
    assert not _library_opens(f) and not _we_open(f)
    f = _write_st(tmp_path / "d.safetensors", '{"a":{"dtype":"F16","shape":[2],"data_offsets":[0,4]},"a":%s}' % T, b"\0" * 4)
    assert _library_opens(f)
    idx = open_checkpoint(f)
    assert idx.tensors["a"].dtype == "float32"  # the last entry wins, as in safetensors
    assert any("more than once" in n and "'a'" in n for n in idx.notes)


def test_torchless_dtype_is_refused_by_name(tmp_path):
    # the one deliberate difference: safetensors opens an F6 header, but torch has no such dtype (get_tensor fails)
    f = _write_st(tmp_path / "f6.safetensors", _dt('"F6_E2M3"').replace("[1]", "[4]").replace("[0,4]", "[0,3]"), b"\0" * 3)
    with safe_open(str(f), framework="pt") as sf:
        with pytest.raises(Exception, match="F6_E2M3"):
            sf.get_tensor("a")
    with pytest.raises(CheckpointError) as e:
        open_checkpoint(f)
    _one_line(e.value, f, "F6_E2M3", "torch has no such dtype")


@pytest.mark.parametrize("shape", [[18446744073709551615, 0], [0, 9223372036854775808], [1, 3, 0, 1 << 62]])
def test_dims_torch_cannot_hold_are_refused_by_name(tmp_path, shape):
    # valid safetensors (u64 dims, 0 elements), but torch sizes are int64: get_tensor (so from_pretrained) fails
    f = _write_st(tmp_path / "huge.safetensors", {"a": {"dtype": "U8", "shape": shape, "data_offsets": [0, 0]}})
    assert _library_opens(f)
    with safe_open(str(f), framework="pt") as sf, pytest.raises(Exception):
        sf.get_tensor("a")
    with pytest.raises(CheckpointError) as e:
        open_checkpoint(f)
    _one_line(e.value, f, "torch cannot hold it")


def _fuzz_header(rng: random.Random) -> tuple[bytes, int]:
    """A realistic header (several dtypes, zero-size tensors, metadata), then one random corruption."""
    dtypes = [("F32", 32), ("BF16", 16), ("F16", 16), ("I64", 64), ("U8", 8), ("F8_E4M3", 8), ("BOOL", 8), ("F4", 4)]
    entries: list[list] = []
    off = 0
    for i in range(rng.randint(0, 6)):
        code, bits = rng.choice(dtypes)
        shape = [rng.choice([0, 1, 2, 3, 4, 8]) for _ in range(rng.randint(0, 3))]
        n = 1
        for d in shape:
            n *= d
        if bits == 4 and n % 2:
            shape.append(2)
            n *= 2
        size = n * bits // 8
        entries.append([f"layer.{i}.w", {"dtype": code, "shape": shape, "data_offsets": [off, off + size]}])
        off += size
    rng.shuffle(entries)
    meta = {"format": "pt"} if rng.random() < 0.5 else None
    data_len = off
    kind = rng.randrange(12)
    if entries and kind == 0:
        e = rng.choice(entries)[1]
        e["data_offsets"][rng.randrange(2)] += rng.choice([-1, 1, 2, -4, 4])
    elif entries and kind == 1:
        e = rng.choice(entries)[1]
        e["shape"] = e["shape"] + [rng.choice([0, 2, -1, 2**64, 2**63, 1.5, True, "3"])]
    elif entries and kind == 2:
        e = rng.choice(entries)[1]
        e["dtype"] = rng.choice(["F32", "F64", "I8", "C64", "F128", "", ["F32"], {"F32": None}, None, 3])
    elif entries and kind == 3:
        e = rng.choice(entries)[1]
        del e[rng.choice(["dtype", "shape", "data_offsets"])]
    elif entries and kind == 4:
        e = rng.choice(entries)[1]
        e[rng.choice(["x", "extra", "dtype_"])] = rng.choice([None, 1, -0.0, [[]], {"k": "v"}, "s", 10**400])
    elif entries and kind == 5:
        entries.append(list(rng.choice(entries)))  # a duplicated name (same or a moved entry)
        if rng.random() < 0.5:
            entries[-1] = [entries[-1][0], {**entries[-1][1], "data_offsets": [off, off]}]
    elif kind == 6:
        meta = rng.choice([{"k": 1}, [], "x", {"k": None}, {"k": {"x": "y"}}, {}, {"a": "b", "c": "d"}])
    elif kind == 7:
        data_len += rng.choice([1, 7, 4096, -1])
    items = ([["__metadata__", meta]] if meta is not None or kind == 6 else []) + entries
    text = "{" + ",".join(json.dumps(k) + ":" + json.dumps(v, allow_nan=True) for k, v in items) + "}"
    raw = text.encode()
    if kind >= 8:  # byte-level damage to the JSON text
        raw = bytearray(raw)
        for _ in range(rng.randint(1, 3)):
            if not raw:
                break
            i = rng.randrange(len(raw))
            op = rng.randrange(3)
            if op == 0:
                raw[i] = rng.choice(b'{}[]":,0123456789-.eE \\u\x00\xff')
            elif op == 1:
                del raw[i]
            else:
                raw.insert(i, rng.choice(b'{}[]":,0-9 '))
        raw = bytes(raw)
    return raw, max(data_len, 0)


def test_fuzzed_headers_match_safetensors(tmp_path):
    rng = random.Random(8)
    f = tmp_path / "fuzz.safetensors"
    verdicts = {True: 0, False: 0}
    for i in range(600):
        raw, data_len = _fuzz_header(rng)
        _write_st(f, raw, bytes(data_len))
        lib = _library_loads(f)
        assert _we_open(f) == lib, (i, raw[:300], data_len)
        verdicts[lib] += 1
    assert verdicts[True] > 50 and verdicts[False] > 200, verdicts  # the fuzz exercises both sides


def test_appended_garbage_is_no_longer_clean(tmp_path):
    f = tmp_path / "model.safetensors"
    save_file({"w": torch.ones(3)}, str(f))
    assert _we_open(f)
    with open(f, "ab") as fh:
        fh.write(b"GARBAGE")
    assert not _library_opens(f)
    with pytest.raises(CheckpointError) as e:
        open_checkpoint(f)
    _one_line(e.value, f, "7 trailing byte(s)")


# --------------------------------------------------------------------------------------------- item 9: format sniffing


@pytest.mark.parametrize("name", ["model.safetensors", "weights", "weights.bin"])
def test_safetensors_holding_a_zip_signature_is_read_as_safetensors(tmp_path, name):
    # the data end with an end-of-central-directory record: zipfile.is_zipfile said "zip"
    tail = b"PK\x05\x06" + bytes(18)
    data = torch.frombuffer(bytearray(bytes(40) + tail + bytes(2)), dtype=torch.uint8).clone()
    f = tmp_path / name
    save_file({"blob": data}, str(f))
    assert zipfile.is_zipfile(f)
    idx = open_checkpoint(f)
    assert idx.format == "safetensors"
    with TensorReader(idx) as r:
        assert torch.equal(r.tensor("blob"), data)


def test_not_a_checkpoint_does_not_print_the_files_bytes(tmp_path):
    f = tmp_path / "secret.bin"
    f.write_bytes(b"AWS_SECRET=hunter2\n" * 4)
    with pytest.raises(CheckpointError) as e:
        open_checkpoint(f)
    msg = _one_line(e.value, f, "not a checkpoint")
    assert "AWS" not in msg and "hunter2" not in msg and "b'" not in msg


# --------------------------------------------------------------------------------------------- item 5: reads outside


def _tiny_bert_folder(d: Path) -> Path:
    from transformers import BertConfig, BertModel

    d.mkdir(parents=True, exist_ok=True)
    cfg = BertConfig(hidden_size=8, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2, vocab_size=16,
                     max_position_embeddings=8, architectures=["BertModel"])
    torch.manual_seed(0)
    BertModel(cfg).save_pretrained(d)
    return d


@pytest.mark.parametrize("entry", ["../outside.safetensors", "../../outside.safetensors", "ABS", "sub/../../outside.safetensors"])
def test_transformers_weights_outside_the_folder_is_refused_as_transformers_refuses(tmp_path, entry):
    outside = tmp_path / "outside.safetensors"
    save_file({"stolen": torch.zeros(2)}, str(outside))
    d = _tiny_bert_folder(tmp_path / "a" / "model")
    if entry == "ABS":
        entry = str(outside)
    cfg = json.loads((d / "config.json").read_text())
    cfg["transformers_weights"] = entry
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError) as e:
        open_checkpoint(d)
    _one_line(e.value, d / "config.json", repr(entry), "inside")
    from transformers import BertModel

    with pytest.raises(ValueError, match="must reference a file inside the model directory"):
        BertModel.from_pretrained(d)


def test_transformers_weights_inside_the_folder_still_works(tmp_path):
    d = _tiny_bert_folder(tmp_path / "m")
    (d / "sub").mkdir()
    save_file({"custom": torch.zeros(2)}, str(d / "sub" / "custom.safetensors"))
    cfg = json.loads((d / "config.json").read_text())
    cfg["transformers_weights"] = "sub/custom.safetensors"
    (d / "config.json").write_text(json.dumps(cfg))
    assert list(open_checkpoint(d).tensors) == ["custom"]


def _index(folder: Path, weight_map: dict, **extra) -> Path:
    p = folder / "model.safetensors.index.json"
    p.write_text(json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map, **extra}))
    return p


@pytest.mark.parametrize("shard", ["../secret.safetensors", "../../etc/passwd", "ABS", "a/../../secret.safetensors",
                                   "", "x\x00.safetensors"])
def test_index_naming_a_file_outside_its_folder_is_refused(tmp_path, shard):
    secret = tmp_path / "secret.safetensors"
    save_file({"stolen": torch.zeros(2)}, str(secret))
    d = tmp_path / "ckpt"
    d.mkdir()
    save_file({"a": torch.zeros(1)}, str(d / "s1.safetensors"))
    if shard == "ABS":
        shard = str(secret)
    idx = _index(d, {"a": "s1.safetensors", "evil.key": shard})
    with pytest.raises(CheckpointError) as e:
        open_checkpoint(idx)
    msg = _one_line(e.value, idx, "'evil.key'", "not a file inside the index's folder")
    assert "stolen" not in msg


@pytest.mark.parametrize("shard", ["model.safetensors.index.json", "other.index.json"])
def test_index_naming_an_index_is_refused_not_recursed(tmp_path, shard):
    d = tmp_path / "ckpt"
    d.mkdir()
    (d / "other.index.json").write_text(json.dumps({"weight_map": {"a": "model.safetensors.index.json"}}))
    idx = _index(d, {"a": shard})
    with pytest.raises(CheckpointError) as e:
        open_checkpoint(idx)
    _one_line(e.value, idx, "names another index")


@pytest.mark.parametrize("value", [5, None, ["s1.safetensors"], {"f": "s1.safetensors"}])
def test_index_entry_that_is_not_a_file_name(tmp_path, value):
    save_file({"a": torch.zeros(1)}, str(tmp_path / "s1.safetensors"))
    idx = _index(tmp_path, {"a": value})
    with pytest.raises(CheckpointError) as e:
        open_checkpoint(idx)
    _one_line(e.value, idx, "'a'", "must be a file name")


def test_hugging_face_cache_snapshot_of_links_into_the_blob_store_opens(tmp_path):
    # models--org--name/{blobs/<hash>, snapshots/<sha>/<file> -> ../../blobs/<hash>}: every link leaves the folder
    repo = tmp_path / "models--org--tiny"
    blobs, snap = repo / "blobs", repo / "snapshots" / ("ab" * 20)
    blobs.mkdir(parents=True)
    snap.mkdir(parents=True)
    sd = {"a.weight": torch.randn(3, 2), "b.weight": torch.randn(4)}
    save_file({"a.weight": sd["a.weight"]}, str(blobs / "h1"))
    save_file({"b.weight": sd["b.weight"]}, str(blobs / "h2"))
    (blobs / "h3").write_text(json.dumps({"metadata": {"total_size": 28},
                                          "weight_map": {"a.weight": "model-00001-of-00002.safetensors",
                                                         "b.weight": "model-00002-of-00002.safetensors"}}))
    for name, blob in [("model-00001-of-00002.safetensors", "h1"), ("model-00002-of-00002.safetensors", "h2"),
                       ("model.safetensors.index.json", "h3")]:
        (snap / name).symlink_to(Path("..") / ".." / "blobs" / blob)
    idx = open_checkpoint(snap)
    assert idx.format == "safetensors-sharded" and set(idx.tensors) == set(sd)
    with TensorReader(idx) as r:
        for k, v in sd.items():
            assert torch.equal(r.tensor(k), v)


# --------------------------------------------------------------------------------------------- item 11: index keys


def test_index_key_missing_from_its_shard_is_noted_as_from_pretrained_ignores_it(tmp_path):
    d = _tiny_bert_folder(tmp_path / "m")
    from safetensors.torch import load_file

    sd = load_file(str(d / "model.safetensors"))
    (d / "model.safetensors").unlink()
    keys = sorted(sd)
    save_file({k: sd[k] for k in keys[: len(keys) // 2]}, str(d / "model-00001-of-00002.safetensors"))
    save_file({k: sd[k] for k in keys[len(keys) // 2 :]}, str(d / "model-00002-of-00002.safetensors"))
    wm = {k: f"model-0000{1 if i < len(keys) // 2 else 2}-of-00002.safetensors" for i, k in enumerate(keys)}
    wm["ghost.weight"] = "model-00001-of-00002.safetensors"
    idx = _index(d, wm)
    from transformers import BertModel

    model, info = BertModel.from_pretrained(d, output_loading_info=True)  # transformers tolerates it silently
    assert "ghost.weight" not in info["unexpected_keys"]
    index = open_checkpoint(d)
    assert "ghost.weight" not in index.tensors
    note = next(n for n in index.notes if "ghost.weight" in n)
    assert idx.name in note and "model-00001-of-00002.safetensors" in note and "\n" not in note


def test_index_without_metadata_is_noted(tmp_path):
    save_file({"a": torch.zeros(1)}, str(tmp_path / "s1.safetensors"))
    p = tmp_path / "model.safetensors.index.json"
    p.write_text(json.dumps({"weight_map": {"a": "s1.safetensors"}}))
    assert any("no \"metadata\"" in n for n in open_checkpoint(p).notes)


# --------------------------------------------------------------------------------------------- item 6: hangs, memory


@pytest.mark.parametrize("name", ["model.safetensors.index.json", "model.safetensors", "pytorch_model.bin", "weights"])
def test_fifo_checkpoint_is_refused_without_blocking(tmp_path, name):
    f = tmp_path / name
    os.mkfifo(f)
    with pytest.raises(CheckpointError) as e:
        _bounded(lambda: open_checkpoint(f))
    _one_line(e.value, f, "not a regular file")


def test_fifo_shard_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "s1.safetensors")
    idx = _index(tmp_path, {"a": "s1.safetensors"})
    with pytest.raises(CheckpointError) as e:
        _bounded(lambda: open_checkpoint(idx))
    _one_line(e.value, tmp_path / "s1.safetensors", "not a regular file")


@pytest.mark.parametrize("name", ["model.safetensors.index.json", "model.safetensors", "m.pt"])
def test_link_to_dev_zero_is_refused(tmp_path, name):
    f = tmp_path / name
    f.symlink_to("/dev/zero")
    with pytest.raises(CheckpointError) as e:
        _bounded(lambda: open_checkpoint(f))
    _one_line(e.value, f, "not a regular file")


def test_fifo_config_beside_the_weights_does_not_block_opening(tmp_path):
    save_file({"a": torch.zeros(1)}, str(tmp_path / "model.safetensors"))
    os.mkfifo(tmp_path / "config.json")
    assert list(_bounded(lambda: open_checkpoint(tmp_path)).tensors) == ["a"]


def test_huge_index_is_refused_by_its_size(tmp_path):
    p = tmp_path / "model.safetensors.index.json"
    with open(p, "wb") as f:
        f.truncate(295 * 10**6)  # sparse: no disk space, and never read
    with pytest.raises(CheckpointError) as e:
        open_checkpoint(p)
    _one_line(e.value, p, "over the 256 MiB limit")


def test_deeply_nested_index_is_one_line(tmp_path):
    p = tmp_path / "model.safetensors.index.json"
    p.write_text('{"weight_map": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(CheckpointError) as e:
        open_checkpoint(p)
    _one_line(e.value, p, "nested deeper")


def _torch_zip_with(path: Path, members: dict[str, bytes], *, compress: int = zipfile.ZIP_STORED) -> Path:
    """A real torch.save archive whose named records are replaced (data.pkl: a hostile pickle)."""
    torch.save({"w": torch.zeros(2)}, path)
    with zipfile.ZipFile(path) as zin:
        records = [(i, zin.read(i.filename)) for i in zin.infolist()]
    with zipfile.ZipFile(path, "w") as zout:
        for info, data in records:
            leaf = info.filename.split("/", 1)[1]
            if leaf in members:
                zout.writestr(info.filename, members[leaf], compress_type=compress)
            else:
                zout.writestr(info, data)
    return path


def test_zip_bomb_pickle_is_refused_before_inflating(tmp_path):
    import pickle

    bomb = pickle.dumps({"w": "\0" * (64 << 20)}, protocol=2)  # 64 MiB that deflate to ~64 KiB
    f = _torch_zip_with(tmp_path / "bomb.pt", {"data.pkl": bomb}, compress=zipfile.ZIP_DEFLATED)
    assert f.stat().st_size < 1 << 20
    with pytest.raises(CheckpointError) as e:
        open_checkpoint(f)
    _one_line(e.value, f, "data.pkl", "zip bomb")


def test_oversized_pickle_member_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(torch_pickle, "MAX_PICKLE_BYTES", 4096)  # the mechanism, without writing 256 MiB
    import pickle

    f = _torch_zip_with(tmp_path / "big.pt", {"data.pkl": pickle.dumps({"w": "x" * 8192}, protocol=2)})
    with pytest.raises(CheckpointError) as e:
        open_checkpoint(f)
    _one_line(e.value, f, "data.pkl", "limit")


def _deep_dict_pickle(depth: int) -> bytes:
    # {"a": {"a": ... {}}} built with opcodes: pickle.dumps itself would hit the recursion limit
    return b"\x80\x02" + b"}X\x01\x00\x00\x00a" * depth + b"}" + b"s" * depth + b"."


def test_50k_deep_pickled_dict_is_one_line(tmp_path):
    f = _torch_zip_with(tmp_path / "deep.pt", {"data.pkl": _deep_dict_pickle(50_000)})
    with pytest.raises(CheckpointError) as e:
        open_checkpoint(f)
    _one_line(e.value, f, "nested deeper than")


def test_header_a_100k_deep_is_one_line(tmp_path):
    f = _write_st(tmp_path / "deep.safetensors", '{"a":' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(CheckpointError) as e:
        open_checkpoint(f)
    _one_line(e.value, f, "not valid JSON")


# --------------------------------------------------------------------------------------------- item 12: truncation


def _big_checkpoint(tmp_path: Path) -> Path:
    f = tmp_path / "model.safetensors"
    g = torch.Generator().manual_seed(0)
    save_file({"a": torch.randn(1000, generator=g), "big": torch.randn(1 << 20, generator=g)}, str(f))
    return f


def test_truncated_after_opening_is_a_clean_error_through_the_api(tmp_path):
    f = _big_checkpoint(tmp_path)
    idx = open_checkpoint(f)
    with open(f, "r+b") as fh:
        fh.truncate(f.stat().st_size // 2)
    with TensorReader(idx) as r:
        with pytest.raises(CheckpointError) as e:
            tensor_stats(r, "big")
        _one_line(e.value, f, "changed on disk")
        with pytest.raises(CheckpointError):
            r.tensor("a")  # still in the file, but the file is not the one that was opened


def test_truncated_while_streaming_is_a_clean_error(tmp_path):
    f = _big_checkpoint(tmp_path)
    idx = open_checkpoint(f)
    with TensorReader(idx) as r:
        chunks = r.iter_chunks("big", chunk_elems=1 << 16)
        first = next(chunks)
        with open(f, "r+b") as fh:
            fh.truncate(idx.tensors["big"].offset + 4 * (1 << 17))
        with pytest.raises(CheckpointError) as e:
            list(chunks)
        _one_line(e.value, f, "changed on disk")
        assert first.numel() == 1 << 16


def test_truncated_mapped_tensor_never_raises_sigbus(tmp_path):
    # a tensor over SMALL_COPY_BYTES is a mmap view: reading it after truncation used to kill the process (SIGBUS).
    # Run in a child, so a regression reports a signal instead of taking the test run down.
    f = tmp_path / "model.safetensors"
    save_file({"big": torch.zeros(1 << 16)}, str(f))
    code = (
        "import os, sys\n"
        "from explorer.core.sources import reader\n"
        "from explorer.core.checkpoint import open_checkpoint, TensorReader\n"
        "from explorer.core.errors import CheckpointError\n"
        "reader.SMALL_COPY_BYTES = 0  # every tensor a mmap view, as a big one is\n"
        f"idx = open_checkpoint({str(f)!r})\n"
        "r = TensorReader(idx)\n"
        f"os.truncate({str(f)!r}, 4096)\n"
        "try:\n"
        "    print(float(r.flat('big').sum()))\n"
        "except CheckpointError as e:\n"
        "    print('ERR', e)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, (res.returncode, res.stderr[-2000:])
    assert res.stdout.startswith("ERR") and "changed on disk" in res.stdout, res.stdout


def test_torch_zip_truncated_after_opening_is_a_clean_error(tmp_path):
    f = tmp_path / "pytorch_model.bin"
    torch.save({"w": torch.randn(4096)}, f)
    idx = open_checkpoint(f)
    os.truncate(f, f.stat().st_size - 100)
    with TensorReader(idx) as r, pytest.raises(CheckpointError) as e:
        r.tensor("w")
    _one_line(e.value, f, "changed on disk")


def test_rewritten_file_is_reported_changed(tmp_path):
    f = tmp_path / "model.safetensors"
    save_file({"w": torch.ones(8)}, str(f))
    idx = open_checkpoint(f)
    save_file({"w": torch.ones(16)}, str(f))  # same name, other content and size
    with TensorReader(idx) as r, pytest.raises(CheckpointError) as e:
        r.tensor("w")
    _one_line(e.value, f, "changed on disk")


def test_dcp_rank_file_truncated_after_mapping_is_a_clean_error(tmp_path):
    # the DCP reader maps rank files whole; a truncation after the first read used to be a SIGBUS. In a child, so
    # a regression reports a signal instead of taking the test run down.
    from tests.dcp_helpers import save_no_dist

    g = torch.Generator().manual_seed(0)
    folder = save_no_dist(tmp_path / "dcp", {"model": {"a": torch.randn(64, generator=g), "b": torch.randn(4096, generator=g)}})
    code = (
        "import os\n"
        "from pathlib import Path\n"
        "from explorer.core.checkpoint import open_checkpoint, TensorReader\n"
        "from explorer.core.errors import CheckpointError\n"
        f"idx = open_checkpoint({str(folder)!r})\n"
        "r = TensorReader(idx)\n"
        "a = next(n for n in idx.tensors if n.endswith('a')); b = next(n for n in idx.tensors if n.endswith('b'))\n"
        "assert r.tensor(a).numel() == 64  # the rank file is mapped now\n"
        "rank = Path(idx.tensors[b].file)\n"
        "os.truncate(rank, rank.stat().st_size // 2)\n"
        "try:\n"
        "    print(float(r.tensor(b).sum()))\n"
        "except CheckpointError as e:\n"
        "    print('ERR', e)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, (res.returncode, res.stderr[-2000:])
    assert res.stdout.startswith("ERR") and "changed on disk" in res.stdout and "\n" not in res.stdout.strip(), res.stdout
