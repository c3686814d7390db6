"""The window uses the report cache: a re-opened checkpoint is coloured from it without importing torch or
transformers; on a miss the tensors are shown from the headers before torch is imported; a changed header, config,
option or library version is never answered from the cache; ``open --no-cache``."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from explorer.core import report_cache
from tests.gui.conftest import open_and_wait
from tests.helpers import cache_entries, save_tiny

LOAD = """
import json, sys
from explorer.gui.session import Source, load
seen = {}

def preview(value):  # called by the load before it imports torch / transformers (a cache miss)
    seen["preview"] = {"torch": "torch" in sys.modules, "transformers": "transformers" in sys.modules,
                       "rows": [[r.name, r.shape, r.dtype, r.nbytes, r.kind.value] for r in value.rows]}

done = load(Source(checkpoint=sys.argv[1]), preview=preview)
print(json.dumps({**seen, "cached": bool(done.timings.get("cached")),
                  "torch": "torch" in sys.modules, "transformers": "transformers" in sys.modules,
                  "rows": [[r.name, r.key, r.shape, r.kind.value, r.how] for r in done.rows],
                  "report": done.report.to_json()}))
"""


@pytest.fixture
def ckpt(tmp_path) -> Path:
    d = tmp_path / "bert"
    save_tiny("bert", "BertForMaskedLM", d)  # a tied decoder, a cls head: more than plain "matched"
    return d


entries = cache_entries


def test_first_open_shows_the_headers_before_torch_and_a_reopen_needs_no_torch(cache, ckpt):
    env = dict(os.environ, HF_HUB_OFFLINE="1", QT_QPA_PLATFORM="offscreen",
               PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    run = lambda: json.loads(subprocess.run([sys.executable, "-c", LOAD, str(ckpt)], capture_output=True, text=True,  # noqa: E731
                                            env=env, timeout=600, check=True).stdout.splitlines()[-1])
    first, again = run(), run()
    p = first["preview"]
    assert not p["torch"] and not p["transformers"] and not first["cached"]
    from explorer.core.checkpoint import open_checkpoint

    index = open_checkpoint(str(ckpt))
    assert sorted(r[0] for r in p["rows"]) == sorted(index.tensors)  # every tensor, as stored
    assert {r[0]: r[3] for r in p["rows"]} == {n: t.nbytes for n, t in index.tensors.items()}
    assert {r[4] for r in p["rows"]} == {"in_checkpoint"}  # not coloured yet
    assert again["cached"] and not again["torch"] and not again["transformers"] and "preview" not in again
    assert again["rows"] == first["rows"] and again["report"] == first["report"]


def shown(loaded) -> tuple:
    """What the window shows of a load: the report's answer and every table row's status."""
    return loaded.report.to_json(), [(r.name, r.key, r.kind, r.how) for r in loaded.rows]


def test_a_reopen_is_the_same_answer_and_any_change_is_a_fresh_one(qtbot, window, cache, ckpt, monkeypatch):
    first = open_and_wait(qtbot, window, checkpoint=str(ckpt))
    assert not first.timings.get("cached") and len(entries(cache)) == 1
    again = open_and_wait(qtbot, window, checkpoint=str(ckpt))
    assert again.timings.get("cached") and shown(again) == shown(first)
    assert "from the cache" in window.status_label.text()

    def fresh(**source):
        return shown(open_and_wait(qtbot, window, checkpoint=str(ckpt), use_cache=False, **source))

    def check(**source):
        got = open_and_wait(qtbot, window, checkpoint=str(ckpt), **source)
        assert not got.timings.get("cached")
        assert shown(got) == fresh(**source)
        return got

    got = check(arch="BertModel")  # an option
    assert shown(got) != shown(first)
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["vocab_size"] += 1  # the config
    (ckpt / "config.json").write_text(json.dumps(cfg))
    assert check().report.mismatched
    sd = load_file(ckpt / "model.safetensors")
    del sd[sorted(sd)[-1]]
    save_file(sd, str(ckpt / "model.safetensors"), metadata={"format": "pt"})  # a header
    assert check().report.missing
    real = report_cache.library_versions()
    monkeypatch.setattr(report_cache, "library_versions", lambda: {**real, "transformers": "999.0"})  # a version
    check()


def test_open_no_cache_neither_reads_nor_writes(qtbot, window, cache, ckpt):
    from explorer.cli import build_parser
    from explorer.cli.open import open_request

    req = open_request(build_parser().parse_args(["open", str(ckpt), "--no-cache"]))
    assert req.source.use_cache is False
    open_and_wait(qtbot, window, checkpoint=str(ckpt), use_cache=False)
    assert entries(cache) == []
    loaded = open_and_wait(qtbot, window, checkpoint=str(ckpt))
    assert not loaded.timings.get("cached") and len(entries(cache)) == 1
    with qtbot.waitSignal(window.session.loaded, timeout=120_000) as b:
        window.session.reload(use_cache=False)
    assert not b.args[0].timings.get("cached")


def test_the_preview_is_shown_until_the_report_replaces_it(qtbot, window, cache, ckpt):
    """A cache miss: the window shows the tensors as on disk (previewed), then the coloured report."""
    seen = []
    window.session.previewed.connect(lambda v: seen.append((window.previewing, window.table_model.rowCount())))
    loaded = open_and_wait(qtbot, window, checkpoint=str(ckpt))
    assert not window.previewing and window.table_model.rowCount() == len(loaded.rows)
    if seen:  # delivered only while the load still ran (torch is already imported in this process)
        assert seen[0][0] and seen[0][1] == len(loaded.report.index.tensors)


REOPEN = """
import json, sys
from PySide6.QtCore import QSettings
from explorer.gui.app import make_app
from explorer.gui.main_window import MainWindow
from explorer.gui.session import Source

app = make_app()
w = MainWindow(settings=QSettings(sys.argv[2], QSettings.Format.IniFormat))
seen = {}
w.session.loaded.connect(lambda v: seen.update(cached=bool(v.timings.get("cached")),
                                               transformers_when_coloured="transformers" in sys.modules))
w.open_source(Source(checkpoint=sys.argv[1]))
while "cached" not in seen:
    app.processEvents()
w.session.jobs.pool.waitForDone(120_000)
print(json.dumps({**seen, "transformers_after": "transformers.modeling_utils" in sys.modules}))
"""


def test_a_cached_reopen_imports_transformers_after_the_colours(cache, ckpt, tmp_path):
    """Coloured from the cache without transformers; then transformers is imported in the background, so the first
    fresh-init overlay or "Looks untrained" check does not start with 2-4 s of imports nobody can cancel."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", QT_QPA_PLATFORM="offscreen",
               PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    run = lambda: json.loads(subprocess.run([sys.executable, "-c", REOPEN, str(ckpt), str(tmp_path / "s.ini")],  # noqa: E731
                                            capture_output=True, text=True, env=env, timeout=600,
                                            check=True).stdout.splitlines()[-1])
    first, again = run(), run()
    assert not first["cached"] and again["cached"]
    assert not again["transformers_when_coloured"] and again["transformers_after"]
