"""Export carries the tokenizer/processor files a from_pretrained user expects beside the model, byte for byte
(never the source's weights or config.json), and refuses any output inside the source folder."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from explorer.core.errors import ExportError
from explorer.core.export import export_checkpoint
from explorer.core.matching import report
from explorer.core.model import ModelSpec
from explorer.core.plan import Plan

TOKENIZER_FILES = ["special_tokens_map.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt"]


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture
def src(minilm, tmp_path) -> Path:
    """A private copy of the real MiniLM folder: weights, config, tokenizer files and the sentence-transformers extras."""
    d = tmp_path / "src"
    shutil.copytree(minilm, d)
    return d


def _plan(folder: Path, arch: str = "BertModel") -> Plan:
    return Plan.from_report(report(str(folder), ModelSpec(config=str(folder), arch=arch)))


def test_tokenizer_files_are_copied_and_load_offline(src, tmp_path):
    from transformers import AutoTokenizer

    (src / "generation_config.json").write_text('{"max_length": 7}\n')
    (src / "chat_template.jinja").write_text("{{ messages }}")
    before = {p.name: _sha(p) for p in src.iterdir() if p.is_file()}
    out = tmp_path / "out"
    res = export_checkpoint(str(src), _plan(src, "BertForSequenceClassification"), out)
    assert res.is_clean
    expected = sorted(TOKENIZER_FILES + ["chat_template.jinja", "generation_config.json"])
    assert sorted(res.copied) == expected and res.to_json()["copied"] == list(res.copied)
    for name in expected:
        assert _sha(out / name) == before[name], name  # byte-identical
    # never the source's weights or config.json, nor unrelated files
    assert sorted(p.name for p in out.iterdir()) == sorted(expected + ["config.json", "model.safetensors"])
    assert json.loads((out / "config.json").read_text())["architectures"] == ["BertForSequenceClassification"]
    assert _sha(out / "model.safetensors") != before["model.safetensors"]
    tok_out = AutoTokenizer.from_pretrained(out)  # HF_HUB_OFFLINE=1 (conftest)
    tok_src = AutoTokenizer.from_pretrained(src)
    text = "Checkpoint Explorer exports tokenizers too."
    assert tok_out(text)["input_ids"] == tok_src(text)["input_ids"]
    assert {p.name: _sha(p) for p in src.iterdir() if p.is_file()} == before  # source untouched


def test_export_cli_says_what_was_copied(src, tmp_path, capsys):
    from explorer.cli import main
    from explorer.core.plan import save_plan

    plan_file = tmp_path / "plan.json"
    save_plan(_plan(src), plan_file)
    capsys.readouterr()
    assert main(["export", str(src), "--plan", str(plan_file), "-o", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "copied unchanged from the source folder: " + ", ".join(TOKENIZER_FILES) in out


@pytest.mark.parametrize("sub", ["sub", "a/b", "."])
def test_refuses_any_output_inside_the_source_folder(src, sub):
    before = sorted(str(p.relative_to(src)) for p in src.rglob("*"))
    if sub == "a/b":
        (src / "a").mkdir()
        before = sorted(str(p.relative_to(src)) for p in src.rglob("*"))
    out = src / sub
    with pytest.raises(ExportError) as ei:
        export_checkpoint(str(src), _plan(src), out)
    msg = str(ei.value)
    assert "\n" not in msg and str(out) in msg and "refusing to write" in msg
    if sub != ".":
        assert f"inside the source checkpoint's folder {src.resolve()}" in msg
    assert sorted(str(p.relative_to(src)) for p in src.rglob("*")) == before  # nothing created, not even staging


def test_refuses_a_symlink_that_points_inside_the_source(src, tmp_path):
    (src / "inner").mkdir()
    link = tmp_path / "link"
    link.symlink_to(src / "inner")
    with pytest.raises(ExportError, match="inside the source checkpoint's folder"):
        export_checkpoint(str(src), _plan(src), link)
    assert not any((src / "inner").iterdir())


def test_single_file_source_may_export_to_a_new_sibling_folder_but_not_its_own_folder(src, tmp_path):
    """A lone weights file protects its own folder (export would write config.json there), not new sub-folders."""
    import shutil

    home = tmp_path / "downloads"
    home.mkdir()
    shutil.copy(src / "model.safetensors", home / "model.safetensors")
    shutil.copy(src / "config.json", home / "config.json")
    before = {p.name: p.read_bytes() for p in home.iterdir()}
    with pytest.raises(ExportError, match="refusing to write into the source checkpoint's folder"):
        export_checkpoint(str(home / "model.safetensors"), _plan(src), home)
    res = export_checkpoint(str(home / "model.safetensors"), _plan(src), home / "out")
    assert (home / "out" / "model.safetensors").is_file() and res.report.is_clean
    assert {p.name: p.read_bytes() for p in home.iterdir() if p.is_file()} == before


# ------------------------------------------------------------------ links and permission bits (issue 8, item 4)


@pytest.fixture
def tiny(tmp_path) -> Path:
    from tests.helpers import save_tiny

    d = tmp_path / "tiny"
    d.mkdir()
    save_tiny("bert", "BertModel", d)
    return d


def _export(folder: Path, out: Path):
    return export_checkpoint(str(folder), _plan(folder), out)


def _all_bytes(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


def test_a_link_to_a_file_outside_the_folder_is_not_copied(tiny, tmp_path):
    """`vocab.txt -> /etc/shadow` exported a world-readable copy of the secret; now it is skipped and noted."""
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"root:$6$not-for-export$\n")
    secret.chmod(0o600)
    (tiny / "vocab.txt").symlink_to(secret)
    (tiny / "merges.txt").symlink_to(Path("..") / "secret.txt")  # relative, climbing out
    (tiny / "tokenizer.json").write_text("{}")
    out = tmp_path / "out"
    res = _export(tiny, out)
    assert res.copied == ("tokenizer.json",)
    assert not (out / "vocab.txt").exists() and not (out / "merges.txt").exists()
    assert b"not-for-export" not in _all_bytes(out)
    for name in ("merges.txt", "vocab.txt"):
        assert f"{tiny / name}: not copied (a symbolic link to {secret.resolve()}, outside the source folder)" in res.notes
    assert secret.stat().st_mode & 0o777 == 0o600


def test_cli_says_which_links_it_skipped(tiny, tmp_path, capsys):
    from explorer.cli import main
    from explorer.core.plan import save_plan

    secret = tmp_path / "secret.txt"
    secret.write_text("s3cret")
    secret.chmod(0o600)
    (tiny / "vocab.txt").symlink_to(secret)
    plan = tmp_path / "plan.json"
    save_plan(_plan(tiny), plan)
    capsys.readouterr()
    assert main(["export", str(tiny), "--plan", str(plan), "-o", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert f"note: {tiny / 'vocab.txt'}: not copied (a symbolic link to {secret.resolve()}, outside the source folder)" in out
    assert "copied unchanged" not in out


def test_links_inside_the_folder_are_followed(tiny, tmp_path):
    (tiny / "tok").mkdir()
    (tiny / "tok" / "vocab.txt").write_text("[PAD]\n[UNK]\n")
    (tiny / "vocab.txt").symlink_to(Path("tok") / "vocab.txt")
    res = _export(tiny, tmp_path / "out")
    assert res.copied == ("vocab.txt",)
    out_file = tmp_path / "out" / "vocab.txt"
    assert not out_file.is_symlink() and out_file.read_text() == "[PAD]\n[UNK]\n"


def test_hugging_face_cache_snapshot_links_to_its_blobs_are_copied(tiny, tmp_path):
    """Every cache snapshot is built of links to ``../../blobs/<hash>``: those are copied; a link into another
    repo's blob store is not."""
    repo = tmp_path / "hub" / "models--a--b"
    blobs = repo / "blobs"
    snap = repo / "snapshots" / ("0" * 40)
    blobs.mkdir(parents=True)
    snap.mkdir(parents=True)
    for name in ("model.safetensors", "config.json"):
        h = hashlib.sha256((tiny / name).read_bytes()).hexdigest()
        shutil.copy(tiny / name, blobs / h)
        (snap / name).symlink_to(Path("..") / ".." / "blobs" / h)
    vocab = b"[PAD]\n[UNK]\nhello\n"
    vh = hashlib.sha256(vocab).hexdigest()
    (blobs / vh).write_bytes(vocab)
    (blobs / vh).chmod(0o644)
    (snap / "vocab.txt").symlink_to(Path("..") / ".." / "blobs" / vh)
    other = tmp_path / "hub" / "models--x--y" / "blobs"
    other.mkdir(parents=True)
    (other / "deadbeef").write_text("another repo's file")
    (snap / "merges.txt").symlink_to(Path("..") / ".." / ".." / "models--x--y" / "blobs" / "deadbeef")
    out = tmp_path / "out"
    res = _export(snap, out)
    assert res.is_clean and res.copied == ("vocab.txt",)
    assert (out / "vocab.txt").read_bytes() == vocab and not (out / "vocab.txt").is_symlink()
    assert not (out / "merges.txt").exists()
    assert any(n.startswith(f"{snap / 'merges.txt'}: not copied (a symbolic link to ") for n in res.notes)


def test_permission_bits_are_kept_never_widened(tiny, tmp_path):
    import os

    umask = os.umask(0)
    os.umask(umask)
    modes = {"vocab.txt": 0o600, "tokenizer_config.json": 0o640, "tokenizer.json": 0o644, "special_tokens_map.json": 0o400}
    for name, mode in modes.items():
        (tiny / name).write_text("{}")
        (tiny / name).chmod(mode)
    out = tmp_path / "out"
    res = _export(tiny, out)
    assert sorted(res.copied) == sorted(modes)
    for name, mode in modes.items():
        assert (out / name).stat().st_mode & 0o7777 == mode & ~umask, name  # the same bits, narrowed by the umask only


def test_plain_conversion_follows_the_same_rules(tiny, tmp_path):
    """`export CKPT -o OUT` without a plan (core/convert.py) shares the export's target check, staging and companion
    copy: an outside link is skipped and noted, permission bits kept, a FIFO target refused."""
    import os

    from explorer.core.convert import convert_checkpoint

    secret = tmp_path / "secret.txt"
    secret.write_text("s3cret")
    secret.chmod(0o600)
    (tiny / "vocab.txt").symlink_to(secret)
    (tiny / "tokenizer.json").write_text("{}")
    (tiny / "tokenizer.json").chmod(0o600)
    res = convert_checkpoint(str(tiny), tmp_path / "out")
    assert res.copied == ("tokenizer.json",) and not (tmp_path / "out" / "vocab.txt").exists()
    assert (tmp_path / "out" / "tokenizer.json").stat().st_mode & 0o777 == 0o600
    assert f"{tiny / 'vocab.txt'}: not copied (a symbolic link to {secret.resolve()}, outside the source folder)" in res.notes
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ExportError, match="refusing to write the export folder over something that is not a regular file"):
        convert_checkpoint(str(tiny), fifo)


@pytest.mark.parametrize("plain", [False, True], ids=["export", "conversion"])
def test_private_weights_stay_private(tiny, tmp_path, plain):
    """A 0600 checkpoint (as save_pretrained leaves it under a private umask) exports to 0600 weights, not to the
    world-readable 0644 of a fresh file; a 0640 one to at most 0640."""
    import os

    from explorer.core.convert import convert_checkpoint

    umask = os.umask(0)
    os.umask(umask)
    for mode in (0o600, 0o640):
        (tiny / "model.safetensors").chmod(mode)
        out = tmp_path / f"out{mode:o}"
        if plain:
            convert_checkpoint(str(tiny), out)
        else:
            _export(tiny, out)
        assert (out / "model.safetensors").stat().st_mode & 0o777 == mode & ~umask
