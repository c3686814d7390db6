"""Regressions found by exercising the CLI as a user: --version, typos, JSON-file options, NaN/Inf in diff and stats."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from explorer import __version__
from explorer.cli import main
from explorer.cli.common import print_json
from tests.helpers import save_tiny


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def bert(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("bert")
    save_tiny("bert", "BertModel", d)
    return d


def test_version(capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"ckpt-explorer {__version__}"


def test_mistyped_command_is_an_error_not_a_window(capsys, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = _run(capsys, "reprot", "model")
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [err.strip()]
    assert "reprot: neither a command" in err and "report" in err


def test_key_mapping_file_errors_name_the_file(capsys, bert: Path, tmp_path: Path) -> None:
    bad = tmp_path / "km.json"
    bad.write_text("{oops")
    code, out, err = _run(capsys, "report", str(bert), "--key-mapping", str(bad))
    assert code == 2 and out == ""
    assert err.startswith(f"ckpt-explorer: error: --key-mapping {bad}: invalid JSON")
    code, _, err = _run(capsys, "report", str(bert), "--key-mapping", str(tmp_path / "missing.json"))
    assert code == 2
    assert f"--key-mapping {tmp_path / 'missing.json'}: no such file" in err


def test_print_json_never_emits_nan(capsys) -> None:
    print_json({"a": math.nan, "b": [1.0, math.inf], "c": {"d": -math.inf}, "e": 2.5})
    text = capsys.readouterr().out
    assert json.loads(text) == {"a": None, "b": [1.0, None], "c": {"d": None}, "e": 2.5}
    assert "NaN" not in text and "Infinity" not in text


def test_diff_reports_tensors_turned_nan_or_inf_as_changed_not_zero(capsys, bert: Path, tmp_path: Path) -> None:
    sd = load_file(bert / "model.safetensors")
    w = "embeddings.LayerNorm.weight"
    b = "encoder.layer.0.output.dense.bias"
    sd[w] = sd[w].clone()
    sd[w][0] = math.nan
    sd[b] = torch.full_like(sd[b], math.inf)
    save_file(sd, str(tmp_path / "b.safetensors"))
    code, out, err = _run(capsys, "diff", str(bert / "model.safetensors"), str(tmp_path / "b.safetensors"), "--json")
    assert code == 1, err
    assert "NaN" not in out and "Infinity" not in out
    rows = {t["name"]: t for t in json.loads(out)["tensors"]}
    assert rows[w]["status"] == "changed" and rows[w]["nonfinite"] == 1
    assert rows[b]["status"] == "changed" and rows[b]["nonfinite"] == sd[b].numel()
    # not finite, so not representable in JSON: null rather than a misleading 0
    assert rows[b]["rel_change"] is None and rows[b]["max_abs_diff"] is None
    assert rows["embeddings.word_embeddings.weight"]["nonfinite"] == 0
    code, out, _ = _run(capsys, "diff", str(bert / "model.safetensors"), str(tmp_path / "b.safetensors"))
    line = next(l for l in out.splitlines() if l.strip().startswith(b))
    assert "inf" in line and f"{sd[b].numel()} value(s) differ as NaN/Inf" in line


def test_stats_json_is_valid_with_nan_and_inf_tensors(capsys, tmp_path: Path) -> None:
    f = tmp_path / "odd.safetensors"
    save_file({"nan": torch.full((4,), math.nan), "inf": torch.tensor([math.inf, -math.inf]), "ok": torch.ones(3)}, str(f))
    code, out, err = _run(capsys, "stats", str(f), "--json")
    assert code == 0, err
    rows = {t["name"]: t for t in json.loads(out)["tensors"]}
    assert rows["nan"]["nan"] == 4 and rows["nan"]["mean"] is None
    assert rows["inf"]["inf"] == 2 and rows["ok"]["mean"] == 1.0


def test_stats_unknown_key_suggests_the_close_one(capsys, bert: Path) -> None:
    code, out, err = _run(capsys, "stats", str(bert), "embeddings.LayerNorm.weigth")
    assert code == 2 and out == ""
    assert err == (f"ckpt-explorer: error: {bert}: no tensor named 'embeddings.LayerNorm.weigth'; "
                   "did you mean 'embeddings.LayerNorm.weight'?\n")


@pytest.mark.parametrize("argv, says", [
    (["stats", "{ckpt}", "--bins", "1000000000"], "--bins must be between 1 and 1000000, found 1000000000"),
    (["stats", "{ckpt}", "--bins", "0"], "--bins must be between 1 and 1000000, found 0"),
    (["diff", "{ckpt}", "{ckpt}", "--depth", "0"], "--depth must be at least 1"),
])
def test_option_ranges(capsys, bert: Path, argv: list[str], says: str) -> None:
    code, out, err = _run(capsys, *[a.format(ckpt=bert) for a in argv])
    assert code == 2 and out == "" and says in err and len(err.strip().splitlines()) == 1


def test_sizes_are_labelled_in_binary_units() -> None:
    from explorer.cli.common import human_bytes

    assert human_bytes(512) == "512 B"
    assert human_bytes(90868376) == "86.7 MiB"
    assert human_bytes(3 * 2**40) == "3.0 TiB"


def test_report_text_names_the_other_sub_dicts(capsys, tmp_path: Path) -> None:
    f = tmp_path / "w.pt"
    torch.save({"state_dict": {"a.weight": torch.zeros(2, 2)}, "ema": {"a.weight": torch.ones(2, 2)}, "epoch": 3}, f)
    code, out, err = _run(capsys, "report", str(f))
    assert code == 0, err
    assert "sub-dict 'state_dict' (also holds 'ema': choose with --wrapper)" in out


class _Tty:
    def __init__(self) -> None:
        self.text = ""

    def write(self, s: str) -> int:
        self.text += s
        return len(s)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return True


def test_one_progress_helper_on_a_terminal_only(capsys, bert: Path, monkeypatch, tmp_path: Path) -> None:
    from explorer.cli.common import StderrProgress, stderr_progress

    assert stderr_progress("x") is None  # pytest's stderr is not a terminal: pipes and CI logs stay clean
    tty = _Tty()
    monkeypatch.setattr("sys.stderr", tty)
    bar = stderr_progress("export", show_bytes=True)
    assert isinstance(bar, StderrProgress)
    bar(512, 2048, "a.weight")
    assert tty.text == "\rexport:  25%  512 B / 2.0 KiB  a.weight"
    bar(2048, 2048, "b.weight")
    assert tty.text.endswith("\r" + " " * len("export: 100%  2.0 KiB / 2.0 KiB  b.weight") + "\r")
    tty.text = ""
    assert main(["stats", str(bert), "--json"]) == 0
    assert "stats:" in tty.text and "100%" in tty.text and tty.text.endswith("\r")
    json.loads(capsys.readouterr().out)


def test_init_check_on_a_prefixed_checkpoint_warns_and_auto_fix_checks(capsys, bert: Path, tmp_path: Path) -> None:
    import shutil

    sd = load_file(bert / "model.safetensors")
    ddp = tmp_path / "ddp"
    ddp.mkdir()
    save_file({"module." + k: v for k, v in sd.items()}, str(ddp / "model.safetensors"))
    shutil.copy(bert / "config.json", ddp / "config.json")
    code, out, err = _run(capsys, "init-check", str(ddp), "--json")
    assert code == 1, err  # almost nothing checked is a finding, not an all-clear
    d = json.loads(out)
    assert d["key_mapping"] is None and d["not_checked"] == len(sd)
    assert any("do not load into the model and were not checked" in n and "--auto-fix" in n for n in d["notes"])
    code, out, err = _run(capsys, "init-check", str(ddp), "--auto-fix", "--json")
    d = json.loads(out)
    assert d["key_mapping"] == {r"^module\.": ""} and d["notes"] == [r'key mapping applied: {"^module\\.": ""}']
    checked = [t for t in d["tensors"] if t["kind"] in ("random", "constant")]
    assert len(checked) > len(sd) // 2
    assert code == 1  # save_tiny writes an untrained model: its tensors look like a fresh init


def test_an_unexpected_exception_is_one_line_with_the_debug_hint(capsys, bert: Path, monkeypatch) -> None:
    import explorer.cli.stats as stats_cli

    def boom(args):
        raise RuntimeError("something broke\nsecond line")

    monkeypatch.setattr(stats_cli, "run", boom)
    code, out, err = _run(capsys, "stats", str(bert))
    assert code == 2 and out == ""
    assert err == ("ckpt-explorer: error: RuntimeError: something broke "
                   "(unexpected; CKPT_EXPLORER_DEBUG=1 shows the traceback)\n")
    monkeypatch.setenv("CKPT_EXPLORER_DEBUG", "1")
    with pytest.raises(RuntimeError, match="something broke"):
        main(["stats", str(bert)])


def test_diff_text_shows_dtype_differences(capsys, bert: Path, tmp_path: Path) -> None:
    sd = load_file(bert / "model.safetensors")
    save_file({k: (v.half() if v.is_floating_point() else v) for k, v in sd.items()}, str(tmp_path / "h.safetensors"))
    code, out, _ = _run(capsys, "diff", str(bert / "model.safetensors"), str(tmp_path / "h.safetensors"))
    assert code == 1
    line = next(l for l in out.splitlines() if l.strip().startswith("embeddings.word_embeddings.weight"))
    assert line.endswith("float32 vs float16")


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
