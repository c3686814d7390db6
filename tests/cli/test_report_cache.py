"""The report cache: a repeat `report` answers from disk without importing torch or transformers, and any change to
a header, the config, an option or a library version gives the answer a fresh run gives (never a stale one)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from explorer.core import report_cache
from tests.helpers import cache_entries, run_cli, save_tiny


@pytest.fixture
def ckpt(tmp_path) -> Path:
    d = tmp_path / "bert"
    save_tiny("bert", "BertModel", d)
    return d


entries = cache_entries


def no_matching(monkeypatch) -> None:
    """From here on a report that is computed fails the test: only a cached answer can pass."""
    def boom(*a, **kw):
        raise AssertionError("computed, expected the cached answer")

    monkeypatch.setattr("explorer.core.matching.report", boom)


def fresh(capsys, *argv: str) -> tuple[int, str]:
    code, out, _ = run_cli(capsys, "report", *argv, "--no-cache")
    return code, out


def test_repeat_report_answers_without_importing_torch_transformers_or_numpy(cache, ckpt):
    code = ("import sys\nfrom explorer.cli import main\nrc = main(['report', %r])\n"
            "print('IMPORTED', 'torch' in sys.modules, 'transformers' in sys.modules, 'numpy' in sys.modules, rc, "
            "file=sys.stderr)\n" % str(ckpt))
    env = dict(os.environ, CKPT_EXPLORER_CACHE=str(cache), HF_HUB_OFFLINE="1",
               PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    first = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    second = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert "IMPORTED True True True 0" in first.stderr, first.stderr[-2000:]
    assert "IMPORTED False False False 0" in second.stderr, second.stderr[-2000:]
    assert second.stdout == first.stdout and "39 matched" in first.stdout
    assert len(entries(cache)) == 1


def test_a_changed_header_is_never_answered_from_the_cache(capsys, cache, ckpt, monkeypatch):
    assert run_cli(capsys, "report", str(ckpt))[0] == 0
    sd = load_file(ckpt / "model.safetensors")
    del sd["pooler.dense.bias"]
    save_file(sd, str(ckpt / "model.safetensors"), metadata={"format": "pt"})
    code, out, _ = run_cli(capsys, "report", str(ckpt))
    assert (code, out) == fresh(capsys, str(ckpt)) and code == 1 and "1 missing" in out
    no_matching(monkeypatch)
    assert run_cli(capsys, "report", str(ckpt))[:2] == (code, out)  # the new answer is cached in turn


def test_a_changed_config_is_never_answered_from_the_cache(capsys, cache, ckpt):
    assert run_cli(capsys, "report", str(ckpt))[0] == 0
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["vocab_size"] += 1
    (ckpt / "config.json").write_text(json.dumps(cfg))
    code, out, _ = run_cli(capsys, "report", str(ckpt))
    assert (code, out) == fresh(capsys, str(ckpt)) and code == 1 and "1 mismatched" in out


@pytest.mark.parametrize("extra", [
    ["--json"],
    ["--no-model"],
    ["--arch", "BertForMaskedLM"],
    ["--key-mapping", '{"^pooler\\\\.": "pool."}'],
])
def test_each_option_has_its_own_answer(capsys, cache, ckpt, extra):
    plain = run_cli(capsys, "report", str(ckpt))[:2]
    with_option = run_cli(capsys, "report", str(ckpt), *extra)[:2]
    assert with_option == fresh(capsys, str(ckpt), *extra) and with_option != plain
    assert run_cli(capsys, "report", str(ckpt))[:2] == plain


def test_a_key_mapping_file_is_keyed_by_its_content(capsys, cache, ckpt, tmp_path):
    km = tmp_path / "km.json"
    km.write_text('{"^pooler\\\\.": "pool."}')
    first = run_cli(capsys, "report", str(ckpt), "--key-mapping", str(km))[:2]
    km.write_text("{}")
    again = run_cli(capsys, "report", str(ckpt), "--key-mapping", str(km))[:2]
    assert again == fresh(capsys, str(ckpt), "--key-mapping", str(km)) and again != first


def test_another_library_version_is_a_fresh_answer(capsys, cache, ckpt, monkeypatch):
    assert run_cli(capsys, "report", str(ckpt))[0] == 0
    real = report_cache.library_versions()
    monkeypatch.setattr(report_cache, "library_versions", lambda: {**real, "transformers": "999.0"})
    calls = []
    from explorer.core import matching

    orig = matching.report
    monkeypatch.setattr(matching, "report", lambda *a, **kw: calls.append(1) or orig(*a, **kw))
    assert run_cli(capsys, "report", str(ckpt))[0] == 0
    assert calls and len(entries(cache)) == 2  # computed again, stored under a new key


def test_no_cache_neither_reads_nor_writes(capsys, cache, ckpt):
    assert fresh(capsys, str(ckpt))[0] == 0
    assert entries(cache) == []


def test_a_cache_miss_reads_each_shard_header_once(capsys, cache, ckpt, monkeypatch):
    """The cache key is taken from the index the report itself reads (headers, then file identities by stat):
    a miss reads every header once, then answers and stores; the hit reads each once for the key."""
    sd = load_file(ckpt / "model.safetensors")
    names = sorted(sd)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for fn, keys in shards.items():
        save_file({k: sd[k] for k in keys}, str(ckpt / fn))
    (ckpt / "model.safetensors").unlink()
    (ckpt / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {k: fn for fn, keys in shards.items() for k in keys}}))
    from explorer.core.sources import safetensors as st

    reads: list[str] = []
    orig = st.read_safetensors
    monkeypatch.setattr(st, "read_safetensors", lambda p: reads.append(Path(p).name) or orig(p))
    miss = run_cli(capsys, "report", str(ckpt))[:2]
    assert miss[0] == 0 and len(entries(cache)) == 1
    assert sorted(reads) == sorted(shards)
    reads.clear()
    no_matching(monkeypatch)
    assert run_cli(capsys, "report", str(ckpt))[:2] == miss
    assert sorted(reads) == sorted(shards)


def forge(entry: Path, key: str, report: dict) -> None:
    text = json.dumps({"format": report_cache.FORMAT, "key": key, "report": report}).encode()
    entry.write_bytes(report_cache.MAGIC + zlib.compress(text))


def test_a_damaged_entry_is_a_miss(capsys, cache, ckpt):
    good = run_cli(capsys, "report", str(ckpt))[:2]
    (entry,) = entries(cache)
    key = entry.stem
    data = report_cache.get(key)
    whole = entry.read_bytes()
    entry.write_bytes(whole[: len(whole) // 2])  # truncated
    assert run_cli(capsys, "report", str(ckpt))[:2] == good
    forge(entry, "0" * 64, {"format": 1})  # another key's entry
    assert run_cli(capsys, "report", str(ckpt))[:2] == good
    forge(entry, key, dict(data, model_keys=[["x", "forged", [], [], "float32", [], None, None, None, False, None]]))
    assert run_cli(capsys, "report", str(ckpt))[:2] == good  # data that is no report of these headers


def test_the_cache_stays_bounded(cache, monkeypatch):
    monkeypatch.setattr(report_cache, "MAX_CACHE_BYTES", 40_000)
    for i in range(30):
        assert report_cache.put(f"{i:064x}", {"noise": os.urandom(3000).hex()})  # ~3 KB compressed each
    total = sum(p.stat().st_size for p in entries(cache))
    assert total <= 40_000 and report_cache.get(f"{29:064x}") is not None  # the newest stays


def test_an_entry_is_compressed_and_a_too_big_one_is_not_kept(capsys, cache, ckpt, monkeypatch):
    code, out, _ = run_cli(capsys, "report", str(ckpt), "--json")
    (entry,) = entries(cache)
    assert entry.stat().st_size < len(out) / 3  # the --json text says more than the entry holds
    entry.unlink()
    monkeypatch.setattr(report_cache, "MAX_ENTRY_BYTES", 1000)
    assert run_cli(capsys, "report", str(ckpt), "--json")[:2] == (code, out) and entries(cache) == []


CONCURRENT = """
import sys
from explorer.cli import main
sys.exit(main(['report', sys.argv[1], '--json']))
"""


def test_concurrent_runs_agree_and_leave_one_whole_entry(cache, ckpt, capsys):
    env = dict(os.environ, CKPT_EXPLORER_CACHE=str(cache), HF_HUB_OFFLINE="1",
               PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    procs = [subprocess.Popen([sys.executable, "-c", CONCURRENT, str(ckpt)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=env) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][1][-2000:]
    want = fresh(capsys, str(ckpt), "--json")[1].encode()
    assert outs[0][0] == outs[1][0] == want
    (entry,) = entries(cache)
    assert [p.name for p in entry.parent.iterdir()] == [entry.name]  # no temp file left
    assert run_cli(capsys, "report", str(ckpt), "--json")[1].encode() == want  # and it is a whole entry


def test_concurrent_writers_leave_a_whole_entry(cache):
    key = "ab" * 32
    errors: list[BaseException] = []

    def write(i: int) -> None:
        try:
            for _ in range(20):
                report_cache.put(key, {"run": i, "lines": [f"run {i}"] * 200})
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = report_cache.get(key)
    assert not errors and got is not None and got["lines"] == [f"run {got['run']}"] * 200
    assert [p.name for p in (cache / "reports" / "ab").iterdir()] == [f"{key}.z"]  # no temp files left


@pytest.mark.parametrize("name", ["XLA_USE_BF16", "WORLD_SIZE"])
def test_an_environment_variable_transformers_reads_is_a_fresh_answer(capsys, cache, ckpt, monkeypatch, name):
    monkeypatch.delenv(name, raising=False)
    assert run_cli(capsys, "report", str(ckpt))[0] == 0
    monkeypatch.setenv(name, "1")
    from explorer.core import matching

    calls = []
    orig = matching.report
    monkeypatch.setattr(matching, "report", lambda *a, **kw: calls.append(1) or orig(*a, **kw))
    assert run_cli(capsys, "report", str(ckpt))[:2] == fresh(capsys, str(ckpt))
    assert calls and len(entries(cache)) == 2


def test_hub_settings_are_not_in_the_key(capsys, cache, ckpt, monkeypatch):
    """A local checkpoint's report does not depend on the Hub (remote sources are never cached)."""
    assert run_cli(capsys, "report", str(ckpt))[0] == 0
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    no_matching(monkeypatch)
    assert run_cli(capsys, "report", str(ckpt))[0] == 0 and len(entries(cache)) == 1


def test_the_cache_can_be_switched_off(capsys, cache, ckpt, monkeypatch):
    monkeypatch.setenv("CKPT_EXPLORER_REPORT_CACHE", "off")
    assert run_cli(capsys, "report", str(ckpt))[0] == 0
    assert entries(cache) == []


def test_cache_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CKPT_EXPLORER_CACHE", str(tmp_path / "a"))
    assert report_cache.reports_dir() == tmp_path / "a" / "reports"
    monkeypatch.delenv("CKPT_EXPLORER_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert report_cache.reports_dir() == tmp_path / "x" / "ckpt-explorer" / "reports"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    assert report_cache.reports_dir() == tmp_path / "h" / ".cache" / "ckpt-explorer" / "reports"
