"""The program's version, for core's outputs (plan files, exported metadata) and the front-ends' ``--version``.

A source checkout (:func:`explorer.core.resources.source_checkout`) reads its own ``pyproject.toml``, so a worktree run with ``PYTHONPATH`` never
reports another checkout's installed version; elsewhere the installed distribution's metadata answers.
"""
from __future__ import annotations

from .resources import source_checkout

DISTRIBUTION = "checkpoint-explorer"


def _version() -> str:
    tree = source_checkout()
    if tree is not None:
        import tomllib

        pyproject = tree / "pyproject.toml"
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
