"""Names from a file never attack the terminal: OSC/CSI escapes, OSC 52 clipboard writes, newlines forging a
report line, NUL and bidi marks in tensor names, file names, config values and error messages reach stdout/stderr
of every command escaped (``\\x1b``, ``\\x0a``, ``\\u202e``), in text and in --json."""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import unicodedata
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from explorer.cli.common import Style
from explorer.cli.terminal import SafeStream, guarded
from tests.helpers import save_tiny

ROOT = Path(__file__).resolve().parents[2]
OSC_TITLE = "\x1b]0;pwn\x07"
CLEAR = "\x1b[2J"
FORGED = "\n  MISSING (0)"
OSC52 = "\x1b]52;c;cm0gLXJmIH4=\x07"
RLO = "\u202e"
HOSTILE = {  # tensor name -> what the terminal must show instead
    f"evil.title{OSC_TITLE}.weight": "evil.title\\x1b]0;pwn\\x07.weight",
    f"evil.clear{CLEAR}.weight": "evil.clear\\x1b[2J.weight",
    f"evil.forged{FORGED}": "evil.forged\\x0a  MISSING (0)",
    "evil.nul\x00.weight": "evil.nul\\x00.weight",
    f"evil.rlo{RLO}txt.weight": "evil.rlo\\u202etxt.weight",
    f"evil.clip{OSC52}.weight": "evil.clip\\x1b]52;c;cm0gLXJmIH4=\\x07.weight",
    "evil.c1\x9b2J\x85\u2028.weight": "evil.c1\\x9b2J\\x85\\u2028.weight",
    "evil.trailing.newline\n": "evil.trailing.newline\\x0a",
}
RENAMED = "classifier.weight" + OSC_TITLE  # a model key's tensor under a hostile name: missing + unexpected
HTML_NAME = "evil.<img src='x'><b>bold</b>  two spaces.weight"  # harmless on a terminal; the window must not render it


def unsafe_chars(text: str, *, allow: str = "\n") -> list[str]:
    """Every character of ``text`` a terminal would act on (controls, format/bidi, separators, surrogates)."""
    return [f"U+{ord(c):04X}" for c in text
            if c not in allow and unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp", "Cs")]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> dict[str, Path]:
    return build_hostile(tmp_path_factory.mktemp("hostile"))


def build_hostile(root: Path) -> dict[str, Path]:
    """A tiny real BERT folder whose checkpoint has tensors named ``HOSTILE`` (and classifier.weight renamed to
    ``RENAMED``), a copy B with those tensors changed, and files whose names or contents carry escapes."""
    src = root / "src"
    save_tiny("bert", "BertForSequenceClassification", src)
    clean = root / "clean"
    shutil.copytree(src, clean)
    sd = load_file(src / "model.safetensors")
    sd[RENAMED] = sd.pop("classifier.weight")
    g = torch.Generator().manual_seed(0)
    for i, name in enumerate([*HOSTILE, HTML_NAME]):
        sd[name] = torch.randn(4, 3, generator=g) + i
    save_file(sd, src / "model.safetensors", metadata={"format": "pt", "note": OSC_TITLE + CLEAR})
    (src / f"chat_template{OSC_TITLE}.jinja").write_text("{{ x }}")  # a companion export copies and names
    b = root / "b"
    b.mkdir()
    sd_b = dict(sd)
    for name in HOSTILE:
        sd_b[name] = sd[name] * 1.5
    save_file(sd_b, b / "model.safetensors")
    # a file name with escapes in it, and errors that quote names from files
    named = root / f"dir{CLEAR}"
    named.mkdir()
    shutil.copy(src / "model.safetensors", named / f"m{OSC_TITLE}.safetensors")
    idx = root / "sharded"
    idx.mkdir()
    (idx / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {f"w{OSC52}": f"shard{CLEAR}.safetensors"}}))
    badcfg = root / "badcfg"
    badcfg.mkdir()
    shutil.copy(src / "model.safetensors", badcfg / "model.safetensors")
    cfg = json.loads((src / "config.json").read_text())
    cfg["architectures"] = [f"Bert{OSC_TITLE}Model{FORGED}"]
    (badcfg / "config.json").write_text(json.dumps(cfg))
    garbage = root / "garbage.safetensors"
    garbage.write_bytes(b"\x1b]0;pwn\x07\x1b[2J" * 8)
    return {"root": root, "src": src, "ckpt": src / "model.safetensors", "b": b / "model.safetensors",
            "named": named / f"m{OSC_TITLE}.safetensors", "index": idx / "model.safetensors.index.json",
            "badcfg": badcfg, "garbage": garbage, "clean": clean}


DRIVER = textwrap.dedent("""
    import json, os, sys
    from explorer.cli import main
    runs = json.loads(sys.argv[1])
    codes = []
    for i, argv in enumerate(runs):
        for fd in (1, 2):
            os.write(fd, b"@@@ %d @@@\\n" % i)
        codes.append(main(argv))
        sys.stdout.flush(); sys.stderr.flush()
    os.write(1, b"@@@ codes %s\\n" % json.dumps(codes).encode())
""")


def run_in_a_process(runs: list[list[str]]) -> list[tuple[int, str, str]]:
    """Each argv through ``main`` in ONE real process (one torch import): exit code, stdout, stderr as the
    terminal would receive them (bytes decoded strictly as UTF-8)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", PYTHONIOENCODING="utf-8")
    p = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(runs)], capture_output=True, env=env, timeout=600)
    out, err = p.stdout.decode("utf-8"), p.stderr.decode("utf-8")
    assert p.returncode == 0, err[-3000:]
    codes = json.loads(out.rsplit("@@@ codes ", 1)[1])
    outs = re.split(r"@@@ \d+ @@@\n", out.rsplit("@@@ codes ", 1)[0])[1:]
    errs = re.split(r"@@@ \d+ @@@\n", err)[1:]
    assert len(outs) == len(errs) == len(codes) == len(runs), (len(outs), len(errs), err[-2000:])
    return list(zip(codes, outs, errs))


def _no_forged_line(text: str) -> None:
    assert not any(line.strip() == "MISSING (0)" for line in text.splitlines()), text


def test_every_command_escapes_hostile_names_in_text_and_json(hostile: dict[str, Path], tmp_path: Path) -> None:
    ck, src, b = str(hostile["ckpt"]), str(hostile["src"]), str(hostile["b"])
    plan, plan2 = str(tmp_path / "plan.json"), str(tmp_path / "plan2.json")
    runs = {
        "report": ["report", src],
        "report-json": ["report", src, "--json"],
        "report-no-model": ["report", ck, "--no-model"],
        "stats": ["stats", ck],
        "stats-json": ["stats", ck, "--json"],
        "diff": ["diff", ck, b],
        "diff-json": ["diff", ck, b, "--json"],
        "init-check": ["init-check", src, "--all"],
        "init-check-json": ["init-check", src, "--json"],
        "plan": ["plan", src, "-o", plan],
        "plan-json": ["plan", src, "-o", plan2, "--json"],
        "export": ["export", src, "--plan", plan, "-o", str(tmp_path / "out")],
        "export-json": ["export", src, "--plan", plan, "-o", str(tmp_path / "out2"), "--json"],
        "file-name": ["report", str(hostile["named"]), "--no-model"],
        "file-name-json": ["stats", str(hostile["named"]), "--json"],
        "err-index": ["report", str(hostile["index"])],
        "err-config": ["report", str(hostile["badcfg"])],
        "err-garbage": ["report", str(hostile["garbage"])],
        "err-key": ["stats", ck, f"nope{CLEAR}"],
        "err-path": ["report", str(hostile["root"] / f"missing{OSC_TITLE}{FORGED}.safetensors")],
        # a clean checkpoint shows no escape at all: the commands' own text ends its lines through print()
        "clean-report": ["report", str(hostile["clean"])],
        "clean-diff": ["diff", str(hostile["clean"] / "model.safetensors"), ck, "--all"],
        "clean-init-check": ["init-check", str(hostile["clean"]), "--all"],
    }
    results = dict(zip(runs, run_in_a_process(list(runs.values()))))
    for what, (code, out, err) in results.items():
        assert not unsafe_chars(out) and not unsafe_chars(err), (what, unsafe_chars(out), unsafe_chars(err), out, err)
        _no_forged_line(out)
        _no_forged_line(err)
        assert "Traceback" not in err, (what, err)
        if what.endswith("-json"):
            assert code in (0, 1) and out.count("\n") == 1, (what, out, err)  # one JSON object on one line
            json.loads(out)
    shown = {what: out for what, (_c, out, _e) in results.items() if not what.endswith("-json")}
    for name, escaped in HOSTILE.items():
        for what in ("report", "report-no-model", "stats", "diff", "init-check"):
            assert escaped in shown[what], (what, escaped, shown[what])
    # the tables' columns line up: names are escaped before they are padded, so an escape widens no row
    for what, head, column in (("stats", "name", "dtype"), ("diff", "  name", "status"),
                               ("init-check", "  name", "init-like")):
        lines = shown[what].splitlines()
        header = next(ln for ln in lines if ln.startswith(head + " "))
        pos = header.index(column)
        indent = head[: len(head) - len(head.lstrip())]
        for escaped in HOSTILE.values():
            row = next(ln for ln in lines if ln.startswith(indent + escaped + " "))
            assert row[:pos].rstrip() == indent + escaped and row[pos] != " ", (what, header, row)
    assert "classifier.weight\\x1b]0;pwn\\x07" in shown["report"]
    assert "\\x1b[2J.weight" in shown["stats"]
    # JSON carries the exact names (escaped as JSON, decoded back)
    rep = json.loads(results["report-json"][1])
    assert set(HOSTILE) | {RENAMED} <= set(rep["unexpected"]) and "classifier.weight" in rep["missing"]
    assert "\\u001b]0;pwn\\u0007" in results["report-json"][1] and "\\u202e" in results["report-json"][1]
    stats = json.loads(results["stats-json"][1])
    assert set(HOSTILE) <= {t["name"] for t in stats["tensors"]}
    diff = json.loads(results["diff-json"][1])
    assert {t["name"] for t in diff["tensors"] if t["status"] == "changed"} == set(HOSTILE)
    init = json.loads(results["init-check-json"][1])
    assert set(HOSTILE) <= {t["name"] for t in init["tensors"]}
    # plan / export run on the hostile checkpoint; their text names the companion file escaped
    assert results["plan"][0] == 0 and results["export"][0] == 0, results["export"]
    assert f"chat_template\\x1b]0;pwn\\x07.jinja" in shown["export"]
    assert "chat_template" + OSC_TITLE + ".jinja" in json.loads(results["export-json"][1])["copied"]
    # a file name with escapes, in text and JSON
    assert "dir\\x1b[2J/m\\x1b]0;pwn\\x07.safetensors" in shown["file-name"]
    assert json.loads(results["file-name-json"][1])["checkpoint"].endswith(f"dir{CLEAR}/m{OSC_TITLE}.safetensors")
    # errors quoting names from files: one line on stderr, exit 2, escaped
    for what in ("err-index", "err-config", "err-garbage", "err-key", "err-path"):
        code, out, err = results[what]
        assert code == 2 and out == "" and err.count("\n") == 1 and err.startswith("ckpt-explorer: error: "), (what, err)
    assert "\\x1b" in results["err-path"][2] and "\\x0a  MISSING (0)" in results["err-path"][2]
    for what in ("clean-report", "clean-init-check"):
        assert "\\x" not in results[what][1] and "\\u" not in results[what][1], results[what][1]
    diff_lines = results["clean-diff"][1].splitlines()
    assert all("\\x" not in ln and "\\u" not in ln for ln in diff_lines
               if "evil" not in ln and "classifier.weight\\x1b" not in ln), diff_lines
    assert "" in diff_lines  # the blank line before the table is a line break, not an escape


# --------------------------------------------------------------------------------------------- the stream itself


class _Raw(io.StringIO):
    def __init__(self, tty: bool = False) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def _guarded_run(fn, *, tty: bool = False) -> tuple[str, str]:
    out, err = _Raw(tty), _Raw(tty)
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    try:
        with guarded():
            fn()
    finally:
        sys.stdout, sys.stderr = saved
    return out.getvalue(), err.getvalue()


def test_print_ends_lines_and_a_value_never_does() -> None:
    def body() -> None:
        print("  one")
        print(f"  {'name ending in a newline' + chr(10)}")
        print(f"  {'x' + FORGED}")
        print("  three", file=sys.stderr)

    out, err = _guarded_run(body)
    assert out == "  one\n  name ending in a newline\\x0a\n  x\\x0a  MISSING (0)\n"
    assert err == "  three\n"


def test_lines_written_whole_by_logging_warnings_and_tracebacks_stay_lines() -> None:
    # in a fresh interpreter: pytest records warnings and thread exceptions itself
    script = textwrap.dedent(f"""
        import logging, sys, threading, warnings
        from explorer.cli.terminal import guarded
        with guarded():
            log = logging.getLogger("t")
            log.addHandler(logging.StreamHandler(sys.stderr))
            log.warning("loaded %s", "w" + {CLEAR!r})
            log.warning("second")
            warnings.warn_explicit({f"tensor {RLO}x{FORGED}"!r}, UserWarning, "f.py", 3)
            def boom():
                raise ValueError({f"bad name {OSC52}"!r})
            t = threading.Thread(target=boom, name="worker")
            t.start(); t.join()
            print("after")
    """)
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120,
                       env=dict(os.environ, PYTHONPATH=str(ROOT), PYTHONIOENCODING="utf-8"))
    out, err = p.stdout.decode(), p.stderr.decode()
    assert p.returncode == 0 and out == "after\n", (out, err)
    assert not unsafe_chars(err), err
    lines = err.splitlines()
    assert lines[:4] == ["loaded w\\x1b[2J", "second", "f.py:3: UserWarning: tensor \\u202ex\\x0a  MISSING (0)",
                         "Exception in thread worker:"]
    assert lines[-1] == "ValueError: bad name \\x1b]52;c;cm0gLXJmIH4=\\x07" and "Traceback (most recent call last):" in lines


def test_colours_only_through_the_guard_and_never_from_a_file() -> None:
    from explorer.cli import terminal

    fake = "\x00" + "0" * 16 + "[31m"  # a marker without this process' secret

    def body() -> None:
        s = Style()
        assert s.on
        print(s(f"{fake}name{CLEAR}", "31"))
        sys.stderr.write("\r")
        sys.stderr.write("progress")

    out, err = _guarded_run(body, tty=True)
    assert out == "\x1b[31m" + "\\x00" + "0" * 16 + "[31mname\\x1b[2J" + "\x1b[0m\n"
    assert err == "\rprogress"
    assert not Style(_Raw(True)).on  # an unguarded terminal gets no colour markers
    assert terminal.sgr("1") not in out


def test_guard_restores_streams_and_hooks() -> None:
    import threading

    before = (sys.stdout, sys.stderr, sys.excepthook, threading.excepthook, warnings.formatwarning)
    _guarded_run(lambda: None)
    assert (sys.stdout, sys.stderr, sys.excepthook, threading.excepthook, warnings.formatwarning) == before
    assert isinstance(SafeStream(_Raw()).encoding, (str, type(None)))


def test_commands_print_one_line_per_call() -> None:
    """A guarded stream shows a newline inside a printed value as ``\\x0a`` (that is what stops a tensor name from
    forging a line), so the commands' own text must not embed one: a blank line is ``print()``."""
    import ast

    offenders = []
    for path in sorted((ROOT / "explorer" / "cli").glob("*.py")):
        if path.name == "terminal.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
            if name not in ("print", "write"):
                continue
            for arg in node.args:
                if isinstance(arg, ast.Constant) and arg.value in ("\n", "\r"):
                    continue  # a line end written on its own: passes the guard as a line end
                for c in ast.walk(arg):
                    if isinstance(c, ast.Constant) and isinstance(c.value, str) and "\n" in c.value:
                        offenders.append(f"{path.name}:{node.lineno}")
    assert not offenders, offenders


def test_a_terminal_without_the_script_gets_escapes_not_a_crash() -> None:
    raw = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    s = SafeStream(raw)
    s.write("name µ 中" + CLEAR)
    s.write("\n")
    raw.flush()
    assert raw.buffer.getvalue() == b"name \\xb5 \\u4e2d\\x1b[2J\n"
