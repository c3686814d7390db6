"""The shipped files (top-level resources/): every one is listed, valid, found through explorer.core.resources,
inside a built wheel and through importlib.resources in a wheel install and an editable install."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pytest

from explorer.core import resources

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "setup.py", "README.md", "explorer", "resources")
SVG = "{http://www.w3.org/2000/svg}"


def _shipped_files() -> set[str]:
    root = REPO / "resources"
    return {p.relative_to(root).as_posix() for p in root.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.name != "__init__.py"}


def test_every_file_in_resources_is_listed_and_found():
    assert set(resources.ALL) == _shipped_files()
    for name in resources.ALL:
        assert resources.read_bytes(name) == (REPO / "resources" / name).read_bytes()


def test_missing_resource_is_named():
    with pytest.raises(FileNotFoundError, match=r"icons/status/nope\.svg: resource not found"):
        resources.resource(resources.status_icon("nope"))


def test_no_module_reads_resources_by_path():
    # every reader goes through explorer.core.resources (one lookup that works in wheels and checkouts)
    offenders = []
    for p in (REPO / "explorer").rglob("*.py"):
        if p.name == "resources.py" and p.parent.name == "core":
            continue
        text = p.read_text(encoding="utf-8")
        if re.search(r'files\(\s*["\']explorer|["\']resources/|/\s*["\']resources["\']', text):
            offenders.append(str(p.relative_to(REPO)))
    assert offenders == []


def test_json_resources_parse_and_schema_is_valid():
    import jsonschema  # in the test extra

    jsonschema.Draft202012Validator.check_schema(resources.read_json(resources.PLAN_SCHEMA))
    assert isinstance(resources.read_json(resources.DEMO_RECIPE), dict)


def test_status_icons_use_the_palette_colours():
    from explorer.gui import palette

    for kind in resources.STATUS_ICON_KINDS:
        svg = ET.fromstring(resources.read_text(resources.status_icon(kind)))
        assert svg.tag == f"{SVG}svg" and svg.get("viewBox") == "0 0 16 16"
        assert svg.find(f"{SVG}title").text
        if kind == "neutral":
            continue
        assert kind in palette.LOOKS, kind
        background = svg.find(f"{SVG}rect")
        assert background.get("fill").upper() == palette.LOOKS[kind].color.upper(), kind
    assert set(palette.LOOKS) <= set(resources.STATUS_ICON_KINDS)


def test_palette_icons_render_from_the_svgs(qapp):
    from PySide6.QtCore import QSize
    from PySide6.QtGui import QColor

    from explorer.gui import palette

    for kind, lk in palette.LOOKS.items():
        ic = palette.icon(kind, 16)
        for scale in (1, 2):
            img = ic.pixmap(QSize(16, 16), float(scale)).toImage()
            assert img.width() == 16 * scale
            # the corner is the status colour; the glyph is white
            assert img.pixelColor(2 * scale, 13 * scale).name().upper() == QColor(lk.color).name().upper()
            whites = sum(img.pixelColor(x, y).name() == "#ffffff" for x in range(img.width()) for y in range(img.height()))
            assert whites > 4 * scale * scale, kind


def test_desktop_entry_and_metainfo_agree():
    desktop = resources.read_text(resources.DESKTOP_ENTRY).splitlines()
    assert desktop[0] == "[Desktop Entry]"
    entry = dict(line.split("=", 1) for line in desktop[1:] if line and not line.startswith("#"))
    assert entry["Type"] == "Application" and entry["Exec"].split()[0] == "ckpt-explorer"
    assert entry["Icon"] == resources.APP_ID
    meta = ET.fromstring(resources.read_text(resources.METAINFO))
    assert meta.get("type") == "desktop-application"
    assert meta.findtext("id") == resources.APP_ID
    assert meta.findtext("launchable") == resources.DESKTOP_ENTRY
    assert meta.findtext("provides/binary") == "ckpt-explorer"
    assert meta.findtext("name") == entry["Name"]


@pytest.mark.skipif(shutil.which("appstreamcli") is None, reason="appstreamcli not installed")
def test_metainfo_passes_appstreamcli(tmp_path):
    f = tmp_path / resources.METAINFO
    f.write_bytes(resources.read_bytes(resources.METAINFO))
    run = subprocess.run(["appstreamcli", "validate", "--no-net", str(f)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr


# ------------------------------------------------------------------------------------------------ built package

_PROBE = """
import json, sys
from importlib.resources import files
import explorer, explorer.core.resources as r
print(json.dumps({"explorer": explorer.__file__, "files": str(files("explorer.resources")), "root": str(r.root()),
                  "data": {n: r.read_bytes(n).hex() for n in r.ALL}}))
"""


def _copy_sources(dest: Path) -> Path:
    dest.mkdir()
    for name in SOURCES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, dest / name)
    return dest


def _pip(*args: str) -> None:
    run = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr


def _probe(site_dir: Path, cwd: Path) -> dict:
    # -I -S: no PYTHONPATH, no site-packages (so not the developer's own install); site_dir processed like site-packages
    code = f"import site; site.addsitedir({str(site_dir)!r})\n{_PROBE}"
    run = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, timeout=120, cwd=cwd)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = _copy_sources(tmp_path_factory.mktemp("wheel") / "src")
    out = src.parent / "dist"
    _pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(out), str(src))
    (whl,) = out.glob("checkpoint_explorer-*.whl")
    return whl


def test_wheel_contains_every_resource_and_every_module(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in resources.ALL:
        assert f"explorer/resources/{name}" in names, name
    assert "explorer/resources/__init__.py" in names and "explorer/py.typed" in names
    for p in (REPO / "explorer").rglob("*.py"):
        if "__pycache__" not in p.parts:
            assert p.relative_to(REPO).as_posix() in names, p
    assert not any(n.startswith(("resources/", "tests/")) for n in names)


def test_wheel_install_finds_every_resource(wheel, tmp_path):
    target = tmp_path / "target"
    _pip("install", "--no-deps", "--target", str(target), str(wheel))
    found = _probe(target, tmp_path)
    assert Path(found["explorer"]).is_relative_to(target)
    assert Path(found["files"]) == Path(found["root"]) == target / "explorer" / "resources"
    assert found["data"] == {n: resources.read_bytes(n).hex() for n in resources.ALL}


def test_editable_install_finds_every_resource(tmp_path):
    src = _copy_sources(tmp_path / "src")
    target = tmp_path / "target"
    _pip("install", "--no-deps", "--no-build-isolation", "--target", str(target), "-e", str(src))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    found = _probe(target, elsewhere)
    assert Path(found["explorer"]).is_relative_to(src / "explorer")
    assert Path(found["files"]) == Path(found["root"]) == src / "resources"
    assert found["data"] == {n: resources.read_bytes(n).hex() for n in resources.ALL}


def test_application_gets_the_app_icon_and_desktop_id(qapp):
    from explorer.gui import app as gui_app

    app = gui_app.make_app()
    assert app.desktopFileName() == resources.APP_ID
    sizes = {(s.width(), s.height()) for s in app.windowIcon().availableSizes()}
    assert {(16, 16), (48, 48), (256, 256)} <= sizes
    img = app.windowIcon().pixmap(48, 48).toImage()
    assert img.pixelColor(24, 3).name().upper() == "#0072B2"  # the blue tile of app.svg
