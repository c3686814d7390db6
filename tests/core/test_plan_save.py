"""save_plan never overwrites an input: `plan -o config.json` (or the checkpoint) is refused even with --force;
plans (and empty files) are replaced; any other file only with --force; never a FIFO, a device or a link to one."""
from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from explorer.cli import main
from explorer.core.errors import PlanError
from explorer.core.plan import Plan, load_plan, save_plan
from tests.helpers import save_tiny


def _sums(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_refuses_non_plan_files_and_folders(tmp_path: Path) -> None:
    cfg = tmp_path / "config.json"
    cfg.write_text('{"model_type": "bert"}')
    with pytest.raises(PlanError, match=r"config.json: exists and is not a plan file this command wrote; "
                       r"refusing to replace it \(--force to overwrite\)$"):
        save_plan(Plan(), cfg)
    assert cfg.read_text() == '{"model_type": "bert"}'
    save_plan(Plan(arch="F"), cfg, force=True)  # not an input of this plan: the user may insist
    assert load_plan(cfg).arch == "F"
    with pytest.raises(PlanError, match=r": is a folder; give a file name such as .*plan.json$"):
        save_plan(Plan(), tmp_path)


def test_replaces_an_existing_plan_or_empty_file(tmp_path: Path) -> None:
    p = tmp_path / "plan.json"
    save_plan(Plan(arch="A"), p)
    save_plan(Plan(arch="B"), p)
    assert load_plan(p).arch == "B"
    e = tmp_path / "empty.json"
    e.touch()
    save_plan(Plan(arch="C"), e)
    assert load_plan(e).arch == "C"


def test_cli_plan_output_over_the_config_is_refused(tmp_path: Path, capsys) -> None:
    src = tmp_path / "src"
    src.mkdir()
    save_tiny("bert", "BertModel", src)
    before = _sums(src)
    for target in ("config.json", "model.safetensors"):
        capsys.readouterr()
        code = main(["plan", str(src), "--arch", "BertForSequenceClassification", "-o", str(src / target)])
        err = capsys.readouterr().err
        assert code == 2
        assert err == f"ckpt-explorer: error: {src / target}: refusing to write the plan file over an input of this command ({src / target})\n"
        # --force replaces files of another kind, never an input
        code = main(["plan", str(src), "--arch", "BertForSequenceClassification", "-o", str(src / target), "--force"])
        assert code == 2 and "over an input of this command" in capsys.readouterr().err
    assert _sums(src) == before


def test_an_input_named_by_the_plan_is_refused_even_with_force(tmp_path: Path) -> None:
    """The API: the plan's own checkpoint and config are inputs, whatever the caller passes."""
    src = tmp_path / "src"
    src.mkdir()
    save_tiny("bert", "BertModel", src)
    before = _sums(src)
    plan = Plan(checkpoint=str(src), config=str(src))
    for name in ("config.json", "model.safetensors"):
        with pytest.raises(PlanError, match=r"refusing to write the plan file over an input of this command"):
            save_plan(plan, src / name, force=True)
    assert _sums(src) == before


def test_a_plan_file_that_links_to_the_checkpoint_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    save_tiny("bert", "BertModel", src)
    link = tmp_path / "plan.json"
    link.symlink_to(src / "model.safetensors")
    before = _sums(src)
    with pytest.raises(PlanError, match="over an input of this command"):
        save_plan(Plan(), link, inputs=[src / "model.safetensors"], force=True)
    assert _sums(src) == before and link.is_symlink()


def test_fifo_and_device_targets_are_refused_before_any_write(tmp_path: Path) -> None:
    """A FIFO or a character device (here a link to /dev/null: stat says size 0) was "an empty plan" and the
    atomic rename replaced it. Never touches the real /dev/null: the link is refused before anything opens it."""
    import os
    import stat

    fifo = tmp_path / "plan.json"
    os.mkfifo(fifo)
    dev = tmp_path / "null.json"
    dev.symlink_to(os.devnull)
    for target in (fifo, dev):
        for force in (False, True):
            with pytest.raises(PlanError, match=r": refusing to write the plan file over something that is not a regular file"):
                save_plan(Plan(), target, force=force)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and dev.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["null.json", "plan.json"]  # no temp file left


def test_is_plan_file_is_strict_and_never_blocks(tmp_path: Path) -> None:
    import os

    from explorer.core.plan import is_plan_file

    good = tmp_path / "plan.json"
    save_plan(Plan(arch="A"), good)
    assert is_plan_file(good)
    empty = tmp_path / "empty.json"
    empty.touch()
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)  # opened non-blocking: no writer never hangs the check
    cfg = tmp_path / "config.json"
    cfg.write_text('{"version": 1, "model_type": "bert"}')
    deep = tmp_path / "deep.json"
    deep.write_text('{"version": 1, "rules": ' + "[" * 100_000 + "]" * 100_000 + "}")
    for p in (empty, fifo, cfg, deep, tmp_path, tmp_path / "absent.json"):
        assert not is_plan_file(p), p


def test_cli_plan_refuses_a_fifo_up_front(tmp_path: Path, capsys) -> None:
    import os

    src = tmp_path / "src"
    src.mkdir()
    save_tiny("bert", "BertModel", src)
    fifo = tmp_path / "p.json"
    os.mkfifo(fifo)
    capsys.readouterr()
    assert main(["plan", str(src), "-o", str(fifo), "--force"]) == 2
    cap = capsys.readouterr()
    assert cap.out == "" and cap.err == (f"ckpt-explorer: error: {fifo}: refusing to write the plan file over something "
                                         "that is not a regular file (a FIFO, socket or device)\n")
