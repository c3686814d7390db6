"""explorer.core and explorer.cli import no Qt; --help and checkpoint-only reports do not import transformers."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import explorer

PKG = Path(explorer.__file__).parent


def run_py(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)


def _modules(sub: str) -> list[str]:
    return sorted(f"explorer.{sub}.{p.stem}" for p in (PKG / sub).glob("*.py") if p.stem != "__init__")


def test_core_and_cli_import_with_qt_blocked():
    mods = ["explorer", "explorer.core", "explorer.cli", *_modules("core"), *_modules("cli")]
    r = run_py(
        f"""
        import sys
        for name in ("PySide6", "PySide6.QtCore", "PySide6.QtWidgets", "PySide6.QtGui", "pyqtgraph", "PyQt5", "PyQt6"):
            sys.modules[name] = None  # any import of these now raises ImportError
        import importlib
        for m in {mods!r}:
            importlib.import_module(m)
        from explorer.cli import build_parser
        build_parser()
        print("ok")
        """
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


def test_help_and_checkpoint_only_report_skip_transformers(tmp_path):
    f = tmp_path / "w.safetensors"
    from safetensors.torch import save_file
    import torch

    save_file({"a.weight": torch.zeros(2, 3)}, str(f))
    r = run_py(
        f"""
        import sys, io, contextlib, json
        from explorer.cli import main
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            try:
                main(["--help"])
            except SystemExit as e:
                assert e.code == 0, e.code
        assert "report" in buf.getvalue()
        assert "transformers" not in sys.modules, "--help imported transformers"
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            code = main(["report", {str(f)!r}, "--json"])
        assert code == 0, code
        assert json.loads(buf.getvalue())["tensors"][0]["name"] == "a.weight"
        assert "transformers" not in sys.modules, "a checkpoint-only report imported transformers"
        print("ok")
        """
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("ok")
