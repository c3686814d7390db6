"""Inputs that are valid but odd must still work, safely: tensor names an attacker picks (terminal escapes, newlines
forging report lines, bidi marks, path separators and '..', NFC/NFD look-alikes, a 1 MB name; item 7) through every
command, and diff precision (item 13)."""
from __future__ import annotations

import json
import shutil
import unicodedata
from pathlib import Path

import pytest

from tests.security.harness import assert_ran_clean, run_all, run_cli, snapshot, tree_changes

ODD_NAMES = [
    "../../etc/passwd",
    "/abs/name.weight",
    "a/b\\c.weight",
    unicodedata.normalize("NFC", "café.weight"),
    unicodedata.normalize("NFD", "café.weight"),
    "\x1b]0;pwned\x07\x1b[2Jtitle.weight",
    "\x1b]52;c;cHduZWQ=\x07clip.weight",
    "evil\nMISSING (0):\n  forged.weight",
    "nul\x00byte.weight",
    "rtl\u202egnp.exe.weight",
    "n" * 1_000_000,
]


@pytest.fixture(scope="module")
def odd(tmp_path_factory, good):
    """The good tiny BERT with extra tensors under the names above (written by safetensors itself)."""
    import torch
    from safetensors.torch import load_file, save_file

    root = tmp_path_factory.mktemp("sec-odd")
    m = root / "m"
    m.mkdir()
    shutil.copy(good / "config.json", m / "config.json")
    sd = load_file(str(good / "model.safetensors"))
    sd.update({n: torch.full((2,), float(i)) for i, n in enumerate(ODD_NAMES)})
    save_file(sd, str(m / "model.safetensors"))
    return m


ODD_CMDS = {
    "report": ["report", "{m}"],
    "report-json": ["report", "{m}", "--json"],
    "report-no-model": ["report", "{m}", "--no-model"],
    "stats": ["stats", "{m}"],
    "stats-json": ["stats", "{m}", "--json", "--bins", "4"],
    "diff": ["diff", "{m}", "{good}"],
    "diff-json": ["diff", "{m}", "{good}", "--json"],
    "init-check": ["init-check", "{m}", "--all"],
    "plan": ["plan", "{m}", "-o", "{run}/plan.json"],
    "export": ["export", "{m}", "--plan", "{run0}/plan.json", "-o", "{run}/exp"],
    "open": ["open", "{m}", "--screenshot", "{run}/shot.png"],
}


@pytest.fixture(scope="module")
def odd_runs(odd, good, tmp_path_factory):
    runs = tmp_path_factory.mktemp("sec-odd-runs")
    before = snapshot(odd)
    fmt = lambda argv, run: [a.replace("{m}", str(odd)).replace("{good}", str(good)).replace("{run}", str(run))
                             .replace("{run0}", str(runs / "plan")) for a in argv]
    first = {"plan": (fmt(ODD_CMDS["plan"], runs / "plan"), runs / "plan")}  # export needs the plan first
    (runs / "plan").mkdir()
    res = run_all(first)
    jobs = {k: (fmt(v, runs / k), runs / k) for k, v in ODD_CMDS.items() if k != "plan"}
    for _, cwd in jobs.values():
        cwd.mkdir()
    res.update(run_all(jobs))
    return dict(res=res, runs=runs, before=before, after=snapshot(odd))


@pytest.mark.parametrize("cmd", list(ODD_CMDS))
def test_odd_names_run_clean_and_print_no_raw_controls(odd_runs, cmd):
    r = odd_runs["res"][cmd]
    assert_ran_clean(r)
    for forged in ("\nMISSING (0):", "\n  forged.weight"):
        assert forged not in r.stdout, "a tensor name forged a report line"
    assert not tree_changes(odd_runs["before"], odd_runs["after"])


def test_odd_names_are_data_in_json(odd_runs):
    rep = json.loads(odd_runs["res"]["report-json"].stdout)
    text = json.dumps(rep, ensure_ascii=False)
    for n in ODD_NAMES:
        assert json.dumps(n, ensure_ascii=False)[1:-1] in text, f"{n[:40]!r} is not in the JSON report as it is"
    nfc, nfd = ODD_NAMES[3], ODD_NAMES[4]
    assert nfc != nfd and json.dumps(nfc)[1:-1] in json.dumps(rep) and json.dumps(nfd)[1:-1] in json.dumps(rep)


def test_export_of_odd_names_writes_only_its_folder(odd_runs):
    run = odd_runs["runs"] / "export"
    out = run / "exp"
    assert sorted(p.name for p in run.iterdir()) == ["exp"]
    assert {p.name for p in out.iterdir()} <= {"config.json", "model.safetensors", "plan.json", "README.md",
                                                "model.safetensors.index.json"}, sorted(p.name for p in out.iterdir())
    assert not any(p.is_dir() for p in out.rglob("*")), "a tensor name became a folder"


# --------------------------------------------------------------------------------------------- item 13


def test_diff_cosine_of_a_scaled_tensor_is_one(tmp_path):
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    x = torch.randn(1 << 22)
    save_file({"w": x}, str(tmp_path / "a.safetensors"))
    save_file({"w": x * 1.1}, str(tmp_path / "b.safetensors"))
    r = run_cli(["diff", str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors"), "--json"], cwd=tmp_path)
    assert_ran_clean(r)
    (t,) = json.loads(r.stdout)["tensors"]
    assert abs(t["cosine"] - 1.0) < 1e-9, t
