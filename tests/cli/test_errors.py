"""Bad input: one line on stderr naming the file and the problem, exit 2, no traceback, and never run pickled code."""
from __future__ import annotations

import json
import os
import pickle
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from explorer.cli import main
from tests.helpers import run_cli, save_tiny
import warnings


MARKER_NAME = "pwned"


class Evil:
    """Unpickling this runs a shell command that creates a marker file."""

    marker = ""

    def __reduce__(self):
        return (os.system, (f"touch {Evil.marker}",))


def run(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()  # drop what fixtures printed
    code = main(["report", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(capsys, argv: list[str], *, names: str | Path, says: str) -> str:
    code, out, err = run(capsys, *argv)
    assert code == 2, (code, out, err)
    assert "Traceback" not in err and "Traceback" not in out
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert str(names) in lines[0], lines[0]
    assert says.lower() in lines[0].lower(), lines[0]
    return lines[0]


def safetensors_bytes(header: dict, data: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


@pytest.fixture()
def tiny_bert(tmp_path) -> Path:
    from tests.helpers import save_tiny

    d = tmp_path / "bert"
    save_tiny("bert", "BertModel", d)
    return d


# --------------------------------------------------------------------------------------------- pickles


@pytest.mark.parametrize("fmt", ["zip", "legacy", "raw-pickle"])
def test_malicious_pickle_is_refused_and_never_runs(capsys, tmp_path, fmt):
    marker = tmp_path / MARKER_NAME
    Evil.marker = str(marker)
    f = tmp_path / "evil.bin"
    payload = {"weight": torch.zeros(2), "trap": Evil()}
    if fmt == "zip":
        torch.save(payload, f)
    elif fmt == "legacy":
        torch.save(payload, f, _use_new_zipfile_serialization=False)
    else:
        f.write_bytes(pickle.dumps(payload, protocol=2))
    line = assert_one_line_error(capsys, [str(f)], names=f, says="")
    assert "refused" in line or "cannot read" in line
    assert not marker.exists(), "unpickling ran code"


# --------------------------------------------------------------------------------------------- safetensors


def test_truncated_header(capsys, tmp_path):
    f = tmp_path / "t.safetensors"
    f.write_bytes(safetensors_bytes({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8)[:30])
    assert_one_line_error(capsys, [str(f)], names=f, says="larger than the file")


def test_header_shorter_than_length_field(capsys, tmp_path):
    f = tmp_path / "t.safetensors"
    f.write_bytes(b"\x05\0\0")
    assert_one_line_error(capsys, [str(f)], names=f, says="truncated")


def test_garbage_header(capsys, tmp_path):
    f = tmp_path / "g.safetensors"
    f.write_bytes(struct.pack("<Q", 16) + b"{not json at all" + b"\0" * 32)
    assert_one_line_error(capsys, [str(f)], names=f, says="not valid JSON")


def test_header_length_larger_than_file(capsys, tmp_path):
    f = tmp_path / "h.safetensors"
    f.write_bytes(struct.pack("<Q", 10**9) + b'{"a": 1}')
    assert_one_line_error(capsys, [str(f)], names=f, says="header length 1000000000 is larger than the file")


def test_offsets_past_end_of_data(capsys, tmp_path):
    f = tmp_path / "o.safetensors"
    f.write_bytes(safetensors_bytes({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8))
    assert_one_line_error(capsys, [str(f)], names=f, says="tensor 'w': data ends at byte 16")


def test_unknown_dtype(capsys, tmp_path):
    f = tmp_path / "d.safetensors"
    f.write_bytes(safetensors_bytes({"w": {"dtype": "F128", "shape": [1], "data_offsets": [0, 16]}}, b"\0" * 16))
    assert_one_line_error(capsys, [str(f)], names=f, says="unknown dtype 'F128'")


def test_negative_shape(capsys, tmp_path):
    f = tmp_path / "n.safetensors"
    f.write_bytes(safetensors_bytes({"w": {"dtype": "F32", "shape": [-1, 4], "data_offsets": [0, 16]}}, b"\0" * 16))
    assert_one_line_error(capsys, [str(f)], names=f, says="negative dimension")


def test_size_disagrees_with_shape(capsys, tmp_path):
    f = tmp_path / "s.safetensors"
    f.write_bytes(safetensors_bytes({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 16]}}, b"\0" * 16))
    assert_one_line_error(capsys, [str(f)], names=f, says="needs 12")


@pytest.mark.parametrize("name", ["e.safetensors", "e.bin", "e.pt"])
def test_empty_file(capsys, tmp_path, name):
    f = tmp_path / name
    f.write_bytes(b"")
    assert_one_line_error(capsys, [str(f)], names=f, says="empty file")


@pytest.mark.parametrize("name", ["r.safetensors", "r.bin", "r.ckpt"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_bytes(capsys, tmp_path, name, seed):
    f = tmp_path / name
    f.write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8).numpy().tobytes())
    assert_one_line_error(capsys, [str(f)], names=f, says="")


def test_zip_that_is_not_a_torch_checkpoint(capsys, tmp_path):
    import zipfile

    f = tmp_path / "z.pt"
    with zipfile.ZipFile(f, "w") as z:
        z.writestr("hello.txt", "hi")
    assert_one_line_error(capsys, [str(f)], names=f, says="")


# --------------------------------------------------------------------------------------------- folders, shards


def test_directory_with_no_weights(capsys, tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    assert_one_line_error(capsys, [str(tmp_path)], names=tmp_path, says="no weights found")


def test_index_naming_a_missing_shard(capsys, tmp_path):
    save_file({"a": torch.zeros(1)}, str(tmp_path / "s1.safetensors"))
    idx = tmp_path / "model.safetensors.index.json"
    idx.write_text(json.dumps({"weight_map": {"a": "s1.safetensors", "b": "s2.safetensors"}}))
    line = assert_one_line_error(capsys, [str(idx)], names=idx, says="'s2.safetensors'")
    assert "does not exist" in line


def test_invalid_index_json(capsys, tmp_path):
    idx = tmp_path / "model.safetensors.index.json"
    idx.write_text("{oops")
    assert_one_line_error(capsys, [str(idx)], names=idx, says="invalid index file")


def test_path_that_does_not_exist(capsys, tmp_path):
    p = tmp_path / "nope" / "model.safetensors"
    assert_one_line_error(capsys, [str(p)], names=p, says="no such file")


# --------------------------------------------------------------------------------------------- model side


def test_invalid_config_json(capsys, tiny_bert):
    (tiny_bert / "config.json").write_text("{not json")
    assert_one_line_error(capsys, [str(tiny_bert)], names=tiny_bert / "config.json", says="invalid config.json")


def test_config_not_an_object(capsys, tiny_bert):
    (tiny_bert / "config.json").write_text("[1, 2]")
    assert_one_line_error(capsys, [str(tiny_bert)], names=tiny_bert / "config.json", says="expected a JSON object")


def test_unknown_model_type(capsys, tiny_bert):
    cfg = json.loads((tiny_bert / "config.json").read_text())
    cfg["model_type"] = "definitely_not_a_model"
    (tiny_bert / "config.json").write_text(json.dumps(cfg))
    assert_one_line_error(capsys, [str(tiny_bert)], names=tiny_bert / "config.json", says="unknown model_type 'definitely_not_a_model'")


def test_unknown_class_name(capsys, tiny_bert):
    assert_one_line_error(capsys, [str(tiny_bert), "--arch", "BertForTimeTravel"], names="BertForTimeTravel", says="unknown transformers model class")


def test_config_missing(capsys, tiny_bert, tmp_path):
    missing = tmp_path / "nowhere"
    assert_one_line_error(capsys, [str(tiny_bert), "--config", str(missing)], names=missing, says="config not found")


def test_bad_model_class_path(capsys, tiny_bert):
    assert_one_line_error(capsys, [str(tiny_bert), "--model", "no_such_pkg.mod:Net"], names="no_such_pkg.mod:Net", says="cannot import")
    assert_one_line_error(capsys, [str(tiny_bert), "--model", "json"], names="json", says="pkg.module:Class")


def test_bad_key_mapping(capsys, tiny_bert):
    assert_one_line_error(capsys, [str(tiny_bert), "--key-mapping", '{"(": ""}'], names="(", says="invalid regex")
    assert_one_line_error(capsys, [str(tiny_bert), "--key-mapping", "[1]"], names="--key-mapping", says="JSON object")
    assert_one_line_error(capsys, [str(tiny_bert), "--key-mapping", "{bad"], names="--key-mapping", says="invalid JSON")


def test_wrapper_on_a_safetensors_file_is_an_error(tmp_path, capsys):
    from safetensors.torch import save_file
    import torch

    from explorer.cli import main

    f = tmp_path / "w.safetensors"
    save_file({"a": torch.zeros(2)}, str(f))
    assert main(["report", str(f), "--wrapper", "state_dict", "--no-model"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(f) in err[0] and "no sub-dicts" in err[0]


@pytest.mark.parametrize("argv, says", [
    (["stats", "{ckpt}", "--bins", "1000000000"], "--bins must be between 1 and 1000000, found 1000000000"),
    (["stats", "{ckpt}", "--bins", "0"], "--bins must be between 1 and 1000000, found 0"),
    (["diff", "{ckpt}", "{ckpt}", "--depth", "0"], "--depth must be at least 1"),
])
def test_option_ranges(capsys, bert: Path, argv: list[str], says: str) -> None:
    code, out, err = run_cli(capsys, *[a.format(ckpt=bert) for a in argv])
    assert code == 2 and out == "" and says in err and len(err.strip().splitlines()) == 1


def test_an_unexpected_exception_is_one_line_with_the_debug_hint(capsys, bert: Path, monkeypatch) -> None:
    import explorer.cli.stats as stats_cli

    def boom(args):
        raise RuntimeError("something broke\nsecond line")

    monkeypatch.setattr(stats_cli, "run", boom)
    code, out, err = run_cli(capsys, "stats", str(bert))
    assert code == 2 and out == ""
    assert err == ("ckpt-explorer: error: RuntimeError: something broke "
                   "(unexpected; CKPT_EXPLORER_DEBUG=1 shows the traceback)\n")
    monkeypatch.setenv("CKPT_EXPLORER_DEBUG", "1")
    with pytest.raises(RuntimeError, match="something broke"):
        main(["stats", str(bert)])


@pytest.mark.parametrize("argv, says", [
    (["report", "{ckpt}", "--arch", "A", "--model", "x:y"],
     "argument --model: not allowed with argument --arch (see ckpt-explorer report --help)"),
    (["plan", "{ckpt}"], "the following arguments are required: -o/--output (see ckpt-explorer plan --help)"),
    (["stats", "{ckpt}", "--bins", "x"], "argument --bins: invalid int value: 'x' (see ckpt-explorer stats --help)"),
])
def test_usage_errors_are_one_line(capsys, bert: Path, argv: list[str], says: str) -> None:
    with pytest.raises(SystemExit) as e:
        main([a.format(ckpt=bert) for a in argv])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err == f"ckpt-explorer: error: {says}\n"


# ---- Pickles the weights-only unpickler rejects: one line on stderr (torch's protocol warning never leaks), worded
# for what the file really is: unsupported opcodes are not 'could run code', a forbidden GLOBAL is.

def _one_line(capsys, argv: list[str]) -> str:
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert [str(w.message) for w in caught] == []  # e.g. "Detected pickle protocol 4 ..." must not leak
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def _print_reduce() -> object:
    class Evil:
        def __reduce__(self):
            return (print, ("never",))

    return Evil()


@pytest.mark.parametrize("cmd", ["report", "stats"])
def test_protocol4_plain_pickle_is_rejected_accurately(capsys, tmp_path, cmd):
    f = tmp_path / "plain.pkl"
    with open(f, "wb") as fh:
        pickle.dump({"a": [1, 2]}, fh, protocol=4)
    line = _one_line(capsys, [cmd, str(f)])
    assert str(f) in line
    assert "not a weights-only torch checkpoint: the safe unpickler rejected it (Unsupported operand 149)" in line
    assert "only torch.load(weights_only=True) is allowed" in line
    assert "could run code" not in line


def test_protocol4_legacy_torch_save_has_no_warning(capsys, tmp_path):
    f = tmp_path / "legacy.pt"
    torch.save({"w": torch.ones(3)}, f, _use_new_zipfile_serialization=False, pickle_protocol=4)
    line = _one_line(capsys, ["report", str(f)])
    assert str(f) in line and "safe unpickler rejected it" in line


def test_code_running_global_keeps_its_wording(capsys, tmp_path):
    f = tmp_path / "evil.pkl"
    f.write_bytes(pickle.dumps(_print_reduce(), protocol=2))
    line = _one_line(capsys, ["report", str(f)])
    assert str(f) in line
    assert "refused to unpickle" in line and "could run code (GLOBAL print is not allowed)" in line


def test_a_key_mapping_without_a_model_is_refused_not_ignored(capsys, tiny_bert, tmp_path):
    """--key-mapping / --auto-fix rename keys to a model's: with no model (--no-model, or no config anywhere) the
    report would show the checkpoint as stored and silently drop the user's mapping."""
    km = '{"^bert\\\\.": ""}'
    assert_one_line_error(capsys, [str(tiny_bert), "--no-model", "--key-mapping", km], names="--key-mapping",
                          says="with --no-model there is none")
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "model.safetensors").write_bytes((tiny_bert / "model.safetensors").read_bytes())
    for opt in (["--key-mapping", km], ["--auto-fix"]):
        line = assert_one_line_error(capsys, [str(alone / "model.safetensors"), *opt], names=alone / "model.safetensors",
                                     says="there is no model")
        assert opt[0] in line
    # with a model the same mapping applies
    code, out, err = run(capsys, str(tiny_bert), "--key-mapping", '{"^nothing\\\\.": ""}')
    assert code == 0 and "key mapping applied" in out, err


def test_a_fifo_or_folder_as_key_mapping_is_not_a_regular_file(capsys, tiny_bert, tmp_path):
    fifo = tmp_path / "mapping"
    os.mkfifo(fifo)
    for what in (fifo, tmp_path):  # never opened: a FIFO would block, a folder is not JSON
        assert_one_line_error(capsys, [str(tiny_bert), "--key-mapping", str(what)], names=str(what),
                              says="not a regular file")


def test_report_help_names_the_cache_where_it_is(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("CKPT_EXPLORER_CACHE", str(tmp_path / "c"))
    with pytest.raises(SystemExit):
        main(["report", "--help"])
    out = "".join(capsys.readouterr().out.split())  # argparse wraps lines, also at a path's hyphens
    assert f"answeredfrom{tmp_path / 'c' / 'reports'}:" in out, out


def test_every_cache_follows_one_root(monkeypatch, tmp_path):
    from explorer.core import demo, report_cache
    from explorer.core.remote import cache

    monkeypatch.delenv("CKPT_EXPLORER_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    root = tmp_path / "x" / "ckpt-explorer"
    assert report_cache.reports_dir() == root / "reports"
    assert demo.demo_root() == root / "demo"
    assert cache.cache_root() == root
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")  # the XDG spec: a relative path is ignored
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    assert demo.demo_root() == tmp_path / "h" / ".cache" / "ckpt-explorer" / "demo"
