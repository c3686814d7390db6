"""huggingface_hub's settings, read when used: the endpoint (``HF_ENDPOINT``), offline mode (``HF_HUB_OFFLINE``)
and the cache folder (``HF_HUB_CACHE``)."""
from __future__ import annotations

import os
from pathlib import Path


def endpoint() -> str:
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.is_offline_mode())


def hub_cache() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)
