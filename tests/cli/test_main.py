"""The ckpt-explorer entry point: --version, commands, a path alone opens the window."""
from __future__ import annotations

from pathlib import Path

import pytest

from explorer import __version__
from explorer.cli import main
from tests.helpers import cli_error_line, cli_help, run_cli


def test_version(capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"ckpt-explorer {__version__}"


def test_mistyped_command_is_an_error_not_a_window(capsys, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, "reprot", "model")
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [err.strip()]
    assert "reprot: neither a command" in err and "report" in err


def test_open_demo_with_a_checkpoint_is_an_error(capsys, bert):
    line = cli_error_line(capsys, ["open", str(bert), "--demo"])
    assert line == "ckpt-explorer: error: --demo opens the built-in demo; do not also give a checkpoint"


def test_open_help_has_a_description(capsys):
    text = cli_help(capsys, "open")
    assert "Open the explorer window on a checkpoint" in text and "--demo opens a built-in tiny example" in text


def test_the_program_ends_after_its_output_and_atexit_handlers(bert, tmp_path: Path) -> None:
    """Run as the program, a command leaves without the interpreter's teardown (cli._leave): the whole output is
    written, the exit code kept, and atexit handlers still run (temp files, logging) in the usual order."""
    import json
    import os
    import subprocess
    import sys

    (tmp_path / "config.json").write_text(json.dumps({**json.loads((bert / "config.json").read_text()), "vocab_size": 77}))
    __import__("shutil").copyfile(bert / "model.safetensors", tmp_path / "model.safetensors")  # a link would lead out
    script = ("import atexit, sys\n"
              "atexit.register(lambda: print('second handler', file=sys.stderr))\n"
              "atexit.register(lambda: print('first handler', file=sys.stderr))\n"
              "from explorer.cli import main\n"
              "sys.exit(main())\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    p = subprocess.run([sys.executable, "-c", script, "report", str(tmp_path), "--json", "--no-cache"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 1, p.stderr  # findings: the resized vocab is a shape mismatch
    rep = json.loads(p.stdout)
    assert rep["counts"]["mismatched"] >= 1 and len(rep["tensors"]) == len(rep["checkpoint_keys"])
    assert p.stderr.splitlines()[-2:] == ["first handler", "second handler"]


def test_the_program_backs_torch_tensors_with_huge_pages_unless_the_user_says_not(tmp_path: Path) -> None:
    """Run as the program, torch's big tensors get transparent huge pages (PyTorch's THP_MEM_ALLOC_ENABLE; a merge
    spent most of its time faulting 4 KB pages in); a value the user set is kept."""
    import os
    import subprocess
    import sys

    script = ("import os, sys\n"
              "from explorer.cli import main\n"
              "try:\n"
              "    main()\n"  # --version: prints, ends by SystemExit as argparse does
              "except SystemExit:\n"
              "    pass\n"
              "import torch\n"
              "t = torch.ones(16 << 20, dtype=torch.uint8)\n"
              "hp = sum(int(l.split()[1]) for l in open('/proc/self/smaps') if l.startswith('AnonHugePages'))\n"
              "print(os.environ.get('THP_MEM_ALLOC_ENABLE'), hp, file=sys.stderr)\n")
    base = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    base["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    can = thp.is_file() and "[never]" not in thp.read_text()
    for env, want in ((base, "1"), ({**base, "THP_MEM_ALLOC_ENABLE": "0"}, "0")):
        p = subprocess.run([sys.executable, "-c", script, "--version"], capture_output=True, text=True, env=env,
                           timeout=300)
        assert p.returncode == 0, p.stderr
        value, huge = p.stderr.split()[-2:]
        assert value == want
        if can:  # the kernel gives huge pages where asked (madvise or always): 16 MB of them, or none when off
            assert (int(huge) >= 8 << 10) == (want == "1"), p.stderr
