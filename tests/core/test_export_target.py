"""Export targets: an existing empty folder that is read-only is refused (renaming over it would silently replace
it), and the CLI says so in one line."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from explorer.cli import main
from explorer.core import export as export_mod
from explorer.core.errors import ExportError
from explorer.core.export import export_checkpoint
from explorer.core.plan import Plan, save_plan
from tests.helpers import save_tiny


@pytest.fixture(scope="module")
def src(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("src")
    save_tiny("bert", "BertModel", d)
    return d


def _deny_write(monkeypatch, target: Path) -> None:
    real = os.access  # root ignores permission bits, so the check is simulated

    def access(path, mode, *a, **kw):
        if Path(path) == target and mode & os.W_OK:
            return False
        return real(path, mode, *a, **kw)

    monkeypatch.setattr(export_mod.os, "access", access)


def test_read_only_empty_folder_is_refused(src: Path, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "ro"
    out.mkdir()
    _deny_write(monkeypatch, out)
    with pytest.raises(ExportError, match=r"ro: the folder is read-only; choose a writable folder$"):
        export_checkpoint(str(src), Plan(), out)
    assert out.is_dir() and not any(out.iterdir()) and not list(tmp_path.glob(".ro.partial-*"))


def test_cli_read_only_target_one_line_exit_2(src: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    plan = tmp_path / "plan.json"
    save_plan(Plan(), plan)
    out = tmp_path / "ro"
    out.mkdir()
    _deny_write(monkeypatch, out)
    capsys.readouterr()
    code = main(["export", str(src), "--plan", str(plan), "-o", str(out)])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert captured.err == f"ckpt-explorer: error: {out}: the folder is read-only; choose a writable folder\n"


def test_a_plan_made_for_another_checkpoint_is_noted(src: Path, tmp_path: Path) -> None:
    from explorer.core.matching import report
    from explorer.core.model import ModelSpec

    plan = Plan.from_report(report(str(src), ModelSpec(config=str(src))))
    res = export_checkpoint(str(src), plan, tmp_path / "same")
    assert not any("the plan was made for" in n for n in res.notes)
    other = tmp_path / "other"
    other.mkdir()
    save_tiny("bert", "BertModel", other)
    res = export_checkpoint(str(other), plan, tmp_path / "out")
    assert res.is_clean
    assert res.notes[0] == f"the plan was made for {plan.checkpoint}, applied to {other}"


def test_atomic_output_replaces_only_on_success(tmp_path: Path) -> None:
    from explorer.core.fsio import atomic_output, atomic_write_bytes

    f = tmp_path / "shot.png"
    atomic_write_bytes(f, b"old")
    with pytest.raises(RuntimeError):
        with atomic_output(f, suffix=".png") as tmp:
            Path(tmp).write_bytes(b"half")
            raise RuntimeError("writer failed")
    assert f.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["shot.png"]
    with atomic_output(f, suffix=".png") as tmp:
        assert tmp.endswith(".png") and Path(tmp).parent == tmp_path
        Path(tmp).write_bytes(b"new")
    assert f.read_bytes() == b"new" and sorted(p.name for p in tmp_path.iterdir()) == ["shot.png"]
    assert (f.stat().st_mode & 0o777) == (0o666 & ~_umask())


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def test_ctrl_c_during_export_leaves_nothing_and_exits_130(src: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    import explorer.cli.export as export_cli

    plan = tmp_path / "plan.json"
    save_plan(Plan(), plan)

    class Interrupt:  # stands in for the terminal progress bar; Ctrl-C lands in the middle of the write
        def __call__(self, done, total, name=""):
            raise KeyboardInterrupt

        def close(self):
            pass

    monkeypatch.setattr(export_cli, "stderr_progress", lambda *a, **k: Interrupt())
    capsys.readouterr()
    code = main(["export", str(src), "--plan", str(plan), "-o", str(tmp_path / "out")])
    assert code == 130 and capsys.readouterr().err == "ckpt-explorer: interrupted\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.json"]


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_a_fifo_a_device_link_or_a_file_is_never_replaced(src: Path, tmp_path: Path) -> None:
    """`export -o` naming a FIFO, a link to a character device (never the real /dev/null: refused before any open)
    or a regular file: one line, nothing written, not even a staging folder."""
    import stat

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    null = tmp_path / "null"
    null.symlink_to(os.devnull)
    plain = tmp_path / "notes.txt"
    plain.write_text("mine")
    for target, why in ((fifo, "refusing to write the export folder over something that is not a regular file"),
                        (null, "refusing to write the export folder over something that is not a regular file"),
                        (plain, "exists and is not a folder")):
        with pytest.raises(ExportError) as ei:
            export_checkpoint(str(src), Plan(), target)
        assert str(ei.value).startswith(f"{target}: {why}") and "\n" not in str(ei.value)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and null.is_symlink() and plain.read_text() == "mine"
    assert _names(tmp_path) == ["fifo", "notes.txt", "null"]


def test_cli_export_onto_the_checkpoint_file_is_refused(src: Path, tmp_path: Path, capsys) -> None:
    import hashlib

    weights = src / "model.safetensors"
    before = hashlib.sha256(weights.read_bytes()).hexdigest()
    plan = tmp_path / "plan.json"
    save_plan(Plan(), plan)
    link = tmp_path / "out"
    link.symlink_to(weights)
    for target in (weights, link):
        capsys.readouterr()
        assert main(["export", str(src), "--plan", str(plan), "-o", str(target)]) == 2
        cap = capsys.readouterr()
        assert cap.out == "" and cap.err.count("\n") == 1 and "refusing to write" in cap.err and str(weights) in cap.err
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == before


def test_links_to_folders_and_dangling_links(src: Path, tmp_path: Path) -> None:
    """A link to an empty folder exports into that folder (the link stays); a link to nothing is refused."""
    real = tmp_path / "disk" / "out"
    real.mkdir(parents=True)
    link = tmp_path / "out"
    link.symlink_to(real)
    res = export_checkpoint(str(src), Plan(), link)
    assert link.is_symlink() and Path(res.out_dir) == real.resolve() and (real / "model.safetensors").is_file()
    dangling = tmp_path / "gone"
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(ExportError, match=r"gone: is a symbolic link to nothing; give a new folder name$"):
        export_checkpoint(str(src), Plan(), dangling)
    assert dangling.is_symlink() and not (tmp_path / "nowhere").exists()
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]
