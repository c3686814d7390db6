"""Export's reads of the source after it was indexed: a source file swapped for a FIFO or replaced by other bytes
of the same size before its tensors are copied is a one-line CheckpointError, leaving nothing behind (the kernel
copies opened the path with a plain blocking open: a FIFO hung the export forever, a replaced file was copied
silently); and however many shards are written, the readers the worker threads use stay about one per worker (each
shard's threads opened their own, kept until the end: open files grew with shards x workers)."""
from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest

from explorer.core.checkpoint import open_checkpoint
from explorer.core.errors import CheckpointError
from explorer.core.export import export_checkpoint
from explorer.core.plan import Plan
from tests.helpers import save_tiny


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> tuple[Path, Plan]:
    from explorer.cli import main

    d = tmp_path_factory.mktemp("src")
    save_tiny("llama", "LlamaForCausalLM", d / "base", hidden_size=256, intermediate_size=704, head_dim=64,
              vocab_size=3000)
    assert main(["plan", str(d / "base"), "--reinit", "lm_head.*", "-o", str(d / "p.json")]) == 0
    return d / "base", Plan.from_json(json.loads((d / "p.json").read_text()))


def _copy(base: Path, tmp_path: Path) -> Path:
    src = tmp_path / "src"
    shutil.copytree(base, src)
    return src


@pytest.mark.parametrize("workers", [1, 2])
def test_a_source_replaced_by_a_fifo_after_the_index_is_refused_not_a_hang(base, tmp_path, workers) -> None:
    folder, plan = base
    src = _copy(folder, tmp_path)
    index = open_checkpoint(str(src))
    f = src / "model.safetensors"
    f.unlink()
    os.mkfifo(f)
    out = tmp_path / "out"
    got: list[BaseException | None] = []

    def run() -> None:
        try:
            export_checkpoint(index, plan, out, workers=workers)  # no --dtype: every kept tensor a kernel copy
            got.append(None)
        except BaseException as e:  # noqa: BLE001 - handed to the test's thread
            got.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(30)
    if t.is_alive():  # blocked opening the FIFO: a writer unblocks it so the thread ends
        with open(f, "wb"):
            pass
        t.join(60)
        pytest.fail("export blocked opening a FIFO swapped in for a source file")
    assert isinstance(got[0], CheckpointError), got
    assert "not a regular file" in str(got[0]) and "\n" not in str(got[0])
    assert not out.exists()


@pytest.mark.parametrize("workers", [1, 2])
def test_a_source_replaced_by_other_bytes_of_the_same_size_is_refused(base, tmp_path, workers) -> None:
    folder, plan = base
    src = _copy(folder, tmp_path)
    index = open_checkpoint(str(src))
    f = src / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[-4096:] = b"\x7f" * 4096  # the last tensor's values, the header unchanged
    tmp = src / "new"
    tmp.write_bytes(bytes(data))
    os.replace(tmp, f)
    out = tmp_path / "out"
    with pytest.raises(CheckpointError, match="changed on disk since it was opened") as e:
        export_checkpoint(index, plan, out, workers=workers)
    assert "\n" not in str(e.value)
    assert not out.exists()


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts the open descriptors in /proc/self/fd")
def test_open_files_stay_about_one_reader_per_worker_however_many_shards(base, tmp_path) -> None:
    """13 shards cast on 3 worker threads: the descriptors open while writing stay a few (were ~16 more)."""
    folder, plan = base
    peak = [0]

    def progress(*_: object) -> None:
        peak[0] = max(peak[0], len(os.listdir("/proc/self/fd")))

    before = len(os.listdir("/proc/self/fd"))
    out = tmp_path / "out"
    export_checkpoint(str(folder), plan, out, dtype="bfloat16", max_shard_size="256KB", workers=3, progress=progress)
    assert len(list(out.glob("*.safetensors"))) >= 10
    # the output file, the writer's reader, one reader per worker (each one source file open)
    assert peak[0] - before <= 3 + 3, (before, peak[0])
    assert len(os.listdir("/proc/self/fd")) <= before + 1


def test_what_waits_for_the_writer_is_bounded_whatever_the_workers(base, tmp_path, monkeypatch) -> None:
    """At most ``_AHEAD`` (256 MiB, as documented) of made tensors wait for the writer for any --workers (the budget
    was 128 MiB per worker: 64 GiB with --workers 512)."""
    import explorer.core.parallel as parallel
    from explorer.core import export as export_mod

    folder, plan = base
    seen: list[int] = []
    real = parallel.ordered_map

    def spy(fn, jobs, **kw):
        seen.append(kw["budget"])
        return real(fn, jobs, **kw)

    monkeypatch.setattr(parallel, "ordered_map", spy)
    export_checkpoint(str(folder), plan, tmp_path / "out", dtype="bfloat16", workers=16)
    assert seen and max(seen) <= export_mod._AHEAD == 256 << 20
