"""Fixtures shared by the CLI tests."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import save_tiny


@pytest.fixture(scope="module")
def bert(tmp_path_factory) -> Path:
    """A tiny BertModel folder (config.json + model.safetensors), one per test module (tests may change it)."""
    d = tmp_path_factory.mktemp("bert")
    save_tiny("bert", "BertModel", d)
    return d
