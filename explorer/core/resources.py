"""The files shipped with the program (stylesheet, icons, plan schema, demo recipe, desktop entry): one lookup.

They live in the repository's top-level ``resources/`` folder, which the build installs as the package
``explorer.resources`` (a setuptools package-dir mapping), so ``importlib.resources.files("explorer.resources")``
finds them in a wheel and in an editable install. Every reader of a resource goes through :func:`resource`.
"""
from __future__ import annotations

import json
from functools import lru_cache
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

PACKAGE = "explorer.resources"

STYLESHEET = "style.qss"
PLAN_SCHEMA = "plan.schema.json"
DEMO_RECIPE = "demo_recipe.json"
APP_ID = "io.github.ckpt_explorer.CheckpointExplorer"
APP_ICON = "icons/app.svg"
DESKTOP_ENTRY = f"{APP_ID}.desktop"
METAINFO = f"{APP_ID}.metainfo.xml"
# One icon per display kind of a tensor (gui.palette's LOOKS) plus "neutral": a tensor shown as it is on disk.
STATUS_ICON_KINDS = ("matched", "renamed", "tied", "dtype", "missing", "mismatched", "unexpected", "ignored",
                     "computed", "in_checkpoint", "untrained", "neutral")


def status_icon(kind: str) -> str:
    """The resource name of the SVG icon for a display kind (see :data:`STATUS_ICON_KINDS`)."""
    return f"icons/status/{kind}.svg"


ALL = (STYLESHEET, PLAN_SCHEMA, DEMO_RECIPE, APP_ICON, DESKTOP_ENTRY, METAINFO,
       *(status_icon(k) for k in STATUS_ICON_KINDS))


@lru_cache(maxsize=1)
def source_checkout() -> Path | None:
    """The repository folder when this is a source checkout (``resources/__init__.py`` beside the ``explorer``
    package and a ``pyproject.toml``), else None (an installed wheel)."""
    tree = Path(__file__).resolve().parents[2]
    if (tree / "pyproject.toml").is_file() and (tree / "resources" / "__init__.py").is_file():
        return tree
    return None


@lru_cache(maxsize=1)
def root() -> Traversable:
    """The folder holding the resources.

    A source checkout (``resources/__init__.py`` beside the ``explorer`` package and a ``pyproject.toml``) uses
    its own folder, so running a worktree with ``PYTHONPATH`` never reads another checkout's installed
    resources; everywhere else ``importlib.resources`` answers.
    """
    tree = source_checkout()
    return tree / "resources" if tree is not None else files(PACKAGE)


def resource(name: str) -> Traversable:
    """The shipped file ``name`` (a '/'-separated path from :data:`ALL`). Raises FileNotFoundError naming it."""
    item = root()
    for part in name.split("/"):
        item = item / part
    if not item.is_file():
        raise FileNotFoundError(f"{name}: resource not found in {root()} (broken installation?)")
    return item


def read_text(name: str) -> str:
    return resource(name).read_text(encoding="utf-8")


def read_bytes(name: str) -> bytes:
    return resource(name).read_bytes()


def read_json(name: str) -> Any:
    return json.loads(read_text(name))
