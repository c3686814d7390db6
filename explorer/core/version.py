"""The program's version, for core's outputs (plan files, exported metadata) and the front-ends' ``--version``.

A source checkout (a ``pyproject.toml`` and ``resources/`` beside ``explorer/``, the same test as
:func:`explorer.core.resources.root`) reads its own ``pyproject.toml``, so a worktree run with ``PYTHONPATH`` never
reports another checkout's installed version; elsewhere the installed distribution's metadata answers.
"""
from __future__ import annotations

from pathlib import Path

DISTRIBUTION = "checkpoint-explorer"


def _version() -> str:
    tree = Path(__file__).resolve().parents[2]
    pyproject = tree / "pyproject.toml"
    if pyproject.is_file() and (tree / "resources" / "__init__.py").is_file():
        import tomllib

        try:
            return str(tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["version"])
        except (OSError, ValueError, KeyError):
            pass
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "0+unknown"


__version__ = _version()
