"""Hostile checkpoint files × every subcommand that reads them: refused in one line, exit 2, bounded, no writes.

Items 5, 6, 8, 9, 11 of issue 8 plus an attacker's own: safetensors headers that safetensors refuses, crafted pickles
inside real torch zips, zip bombs and duplicate members, FIFOs and device links, indexes that escape the folder.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.security import builders as B
from tests.security.harness import Case, assert_refused, child_env, run_all, snapshot, tree_changes

OK_NAME = "model.safetensors"


def _good_st(d: Path) -> Path:
    return B.valid_st(d / "good.safetensors")


def _garbage_appended(d: Path) -> Path:
    p = B.valid_st(d / OK_NAME)
    with open(p, "ab") as f:
        f.write(b"GARBAGE")
    return p


F32_2 = {"dtype": "F32", "shape": [2]}


def _hdr(d: Path, header: dict | str, data: bytes, name: str = OK_NAME) -> Path:
    return B.st_file(d / name, header, data)


CASES: list[Case] = [
    Case("st-shape-product-overflows", lambda d: _hdr(
        d, {"a": {"dtype": "F32", "shape": [2**32, 2**32, 2**32], "data_offsets": [0, 8]}}, bytes(8)),
         r"shape|overflow|size|bytes"),
    Case("st-dim-over-u64", lambda d: _hdr(d, {"a": {"dtype": "F32", "shape": [2**70], "data_offsets": [0, 8]}}, bytes(8)),
         r"shape|dimension|overflow"),
    # Python's own digit limit is named, without its hint to the interpreter (sys.set_int_max_str_digits)
    Case("st-dim-5000-digits", lambda d: _hdr(
        d, '{"a":{"dtype":"F32","shape":[' + "9" * 5000 + '],"data_offsets":[0,8]}}', bytes(8)),
         r"integer longer than \d+ digits"),
    Case("st-header-past-eof", lambda d: B.sparse(d / OK_NAME, 64, (10**6).to_bytes(8, "little") + b"{"),
         r"header|larger|truncated"),
    Case("st-header-over-cap", lambda d: B.sparse(d / OK_NAME, 150 << 20, (120 << 20).to_bytes(8, "little") + b"{"),
         r"100 ?M|limit|cap"),
    Case("st-header-not-object", lambda d: _hdr(d, "[1,2,3]", b""), r"object|header"),
    Case("st-header-nan", lambda d: _hdr(d, '{"a":{"dtype":"F32","shape":[NaN],"data_offsets":[0,8]}}', bytes(8)),
         r"shape|NaN|JSON|header"),
    Case("pkl-os-system", lambda d: _evil_zip(d, "os", "system", B.p_str(f"touch {d / 'PWNED'}")),
         r"refused|not allowed|could run code|weights.only"),
    Case("pkl-builtins-eval", lambda d: _evil_zip(d, "builtins", "eval", B.p_str(f"open({str(d / 'PWNED')!r},'w')")),
         r"refused|not allowed|could run code|weights.only"),
    Case("pkl-legacy-os-system", lambda d: _write(d / "legacy.bin", B.pickle_call("os", "system", B.p_str(f"touch {d / 'PWNED'}"))),
         r"refused|not allowed|could run code|weights.only"),
    Case("pkl-allowed-bytearray-10TB", lambda d: _evil_zip(d, "builtins", "bytearray", B.p_int(10**13)),
         r"refused|not allowed|memory|large|limit|tensors"),
    Case("zip-duplicate-members", lambda d: B.replace_data_pkl(_template(d), B.pickle_call(
        "os", "system", B.p_str(f"touch {d / 'PWNED'}")), duplicate=True), r"duplicate|refused|not allowed"),
    Case("fifo-safetensors", lambda d: _fifo(d / OK_NAME), r"regular|FIFO", fifo=True),
    Case("fifo-in-folder", lambda d: (_fifo(d / "m" / OK_NAME), _bert_config(d / "m"))[0].parent, r"regular|FIFO",
         names=OK_NAME, fifo=True),
    Case("index-proc-environ", lambda d: _link(d / "m" / "model.safetensors.index.json", "/proc/self/environ").parent,
         r"outside|regular|link|inside|index|empty", names="model.safetensors.index.json"),
    # a file found in the folder (not the one named) that links outside it is never read: not the weights, not a
    # shard, not a pickle
    Case("weights-link-outside", lambda d: _linked_out(d, OK_NAME, B.valid_st(d / "secret.safetensors")),
         r"link.*outside", names=OK_NAME),
    Case("bin-link-outside", lambda d: _linked_out(d, "pytorch_model.bin", _template(d / "elsewhere")),
         r"link.*outside", names="pytorch_model.bin"),
    Case("shard-link-outside", lambda d: _linked_out(d, "s1.safetensors", B.valid_st(d / "secret.safetensors"),
                                                     index=True), r"link.*outside", names="s1.safetensors"),
    Case("shard-in-linked-folder", lambda d: _shard_in_linked_folder(d), r"link.*outside", names="s1.safetensors"),
    # a config transformers refuses: the error says which field and why (huggingface_hub's two-line message whole)
    Case("config-field-wrong-type", lambda d: _bad_field_config(d), r"hidden_size.*expected int, got str",
         names="config.json", commands=("report", "init-check", "plan", "open")),
    Case("index-weight-map-not-strings", lambda d: _index(d, {"t0": ["s1.safetensors"]}, raw=True),
         r"weight_map|string|shard", names="model.safetensors.index.json"),
]
BY_ID = {c.id: c for c in CASES}


def _write(p: Path, data: bytes) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data)
    return p


def _fifo(p: Path) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(p)
    return p


def _link(p: Path, target: str) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, p)
    return p


def _template(d: Path) -> Path:
    import torch

    return B.torch_zip(d / "pytorch_model.bin", {"w": torch.zeros(2)})


def _zip_with_pkl(d: Path, pkl: bytes) -> Path:
    return B.replace_data_pkl(_template(d), pkl)


def _evil_zip(d: Path, mod: str, name: str, *args: bytes) -> Path:
    return _zip_with_pkl(d, B.pickle_call(mod, name, *args))


def _bert_config(d: Path) -> None:
    from tests.helpers import tiny_config

    cfg = tiny_config("bert")
    cfg.architectures = ["BertModel"]
    cfg.save_pretrained(d)


def _bad_field_config(d: Path) -> Path:
    m = d / "m"
    B.valid_st(m / OK_NAME)
    _bert_config(m)
    cfg = json.loads((m / "config.json").read_text())
    (m / "config.json").write_text(json.dumps({**cfg, "hidden_size": "abc"}))
    return m


def _index(d: Path, weight_map: dict, *, raw: bool = False) -> Path:
    """A folder ``m/`` with shard s1.safetensors (tensors t0, t1) and an index; ``ABS`` / ``../outside`` entries name
    a valid safetensors file outside ``m/`` (whose bytes must never be read or copied)."""
    m = d / "m"
    B.valid_st(m / "s1.safetensors")
    outside = B.valid_st(d / "outside.safetensors")
    wm = {k: (str(outside) if v == "ABS" else v) for k, v in weight_map.items()}
    if not raw:
        wm.setdefault("t0", "s1.safetensors")
        wm.setdefault("t1", "s1.safetensors")
    p = m / "model.safetensors.index.json"
    p.write_text(json.dumps({"metadata": {"total_size": 16}, "weight_map": wm}))
    return p


def _linked_out(d: Path, name: str, target: Path, *, index: bool = False) -> Path:
    """A folder ``m/`` whose ``name`` is a link to ``target``, outside ``m/`` (with ``index``: a shard its index
    names); returns the folder."""
    m = d / "m"
    _link(m / name, str(target))
    if index:
        (m / "model.safetensors.index.json").write_text(json.dumps(
            {"metadata": {}, "weight_map": {"t0": name, "t1": name}}))
    return m


def _shard_in_linked_folder(d: Path) -> Path:
    """An index naming ``sub/s1.safetensors``, where ``sub`` is a link to a folder outside: the name stays inside,
    where it leads does not."""
    B.valid_st(d / "elsewhere" / "s1.safetensors")
    m = d / "m"
    _link(m / "sub", str(d / "elsewhere"))
    (m / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {"t0": "sub/s1.safetensors", "t1": "sub/s1.safetensors"}}))
    return m


def _tw_escape(d: Path) -> Path:
    m = d / "m"
    B.valid_st(m / OK_NAME)
    B.valid_st(d / "secret.safetensors")
    (m / "config.json").write_text(json.dumps({"model_type": "bert", "transformers_weights": "../secret.safetensors"}))
    return m


def argv_for(cmd: str, target: Path, run_dir: Path, good: Path, good_plan: Path) -> list[str]:
    cfg = [] if target.is_dir() else ["--config", str(good)]
    return {
        "report": ["report", str(target)],
        "stats": ["stats", str(target)],
        "init-check": ["init-check", str(target), *cfg],
        "diff": ["diff", str(target), str(good / OK_NAME)],
        "plan": ["plan", str(target), *cfg, "-o", str(run_dir / "plan.json")],
        "export": ["export", str(target), "--plan", str(good_plan), "-o", str(run_dir / "exp")],
        "open": ["open", str(target), "--screenshot", str(run_dir / "shot.png")],
    }[cmd]


# the window reads through the same core; one screenshot per kind of attack keeps the suite fast
WINDOW_CASES = {"st-trailing-bytes", "config-field-wrong-type", "weights-link-outside", "st-header-nested-100k", "pkl-os-system", "zip-bomb", "fifo-safetensors",
                "dev-zero-link", "index-traversal", "index-fifo", "config-transformers-weights-escape",
                "not-a-checkpoint-secret"}
PAIRS = [(c.id, cmd) for c in CASES for cmd in c.commands if cmd != "open" or c.id in WINDOW_CASES]


@pytest.fixture(scope="module")
def world(tmp_path_factory, good, good_plan):
    """Build every case under ``cases/<id>``, run every (case, command) in ``runs/<id>-<cmd>`` at once."""
    root = tmp_path_factory.mktemp("sec-ckpt")
    targets = {}
    for c in CASES:
        d = root / "cases" / c.id
        d.mkdir(parents=True)
        targets[c.id] = c.build(d)
    runs = root / "runs"
    before = snapshot(root)
    jobs = {(cid, cmd): (argv_for(cmd, targets[cid], runs / f"{cid}-{cmd}", good, good_plan), runs / f"{cid}-{cmd}")
            for cid, cmd in PAIRS}
    for _, cwd in jobs.values():
        cwd.mkdir(parents=True)
    results = run_all(jobs)
    after = snapshot(root, skip=[runs])
    return dict(root=root, targets=targets, results=results, before=before, after=after, runs=runs)


@pytest.mark.parametrize("cid,cmd", PAIRS, ids=[f"{a}-{b}" for a, b in PAIRS])
def test_refused(world, cid, cmd):
    case = BY_ID[cid]
    r = world["results"][(cid, cmd)]
    target = world["targets"][cid]
    names = case.names or target.name
    assert_refused(r, names=names, says=case.says)
    assert B.SECRET[:6] not in r.stdout + r.stderr, "bytes of a secret printed"
    # nothing executed, nothing written outside this run's outputs, the sources unchanged
    case_dir = world["root"] / "cases" / cid
    assert not list(case_dir.rglob("PWNED")), "the pickle ran code"
    before = {k: v for k, v in world["before"].items() if k.startswith(f"cases/{cid}/")}
    after = {k: v for k, v in world["after"].items() if k.startswith(f"cases/{cid}/")}
    assert not tree_changes(before, after), tree_changes(before, after)
    left = sorted(p.name for p in (world["runs"] / f"{cid}-{cmd}").iterdir())
    allowed = {"shot.png"} if cmd == "open" else set()  # the window's picture of the error is that command's output
    assert set(left) <= allowed, f"{cmd} left {left} after refusing"


def test_nothing_outside_cases_changed(world):
    changes = tree_changes({k: v for k, v in world["before"].items() if not k.startswith("runs")},
                           {k: v for k, v in world["after"].items() if not k.startswith("runs")})
    assert not changes, changes
