"""Streamed, atomic export of a patched checkpoint that the target class loads with nothing missing,
unexpected or mismatched.

Tensors are written one by one into safetensors files we lay out ourselves (header first, then data), so the
peak memory is about one tensor: kept tensors are copied byte for byte (``copy_file_range`` from the source
file, never through Python), fresh ones come from the model's own init on just the owning module. Everything
is written into a hidden staging folder beside the output, fsynced, and renamed into place at the end; an
error or a cancel removes the staging folder, so there is never a half checkpoint.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

from .checkpoint import CheckpointIndex, TensorInfo, TensorReader, safetensors_dtype_code
from .errors import Cancelled, ExportError
from .export_options import parse_dtype, parse_size
from .fresh import FreshInit
from .fsio import Writeback, load_json
from .jobs import Progress, Ticker, is_cancelled
from .plan import Action, Entry, Plan
from .staging import check_target, copy_companions, shard_names, staged, weights_mode, write_config, write_shard_index

if TYPE_CHECKING:
    import torch

    from .report import Report
    from .model import ModelSpec

_CHUNK = 64 << 20
_AHEAD = 256 << 20  #: bytes of casts / fresh inits being made at once, at most (one bigger tensor alone)


class ExportCancelled(ExportError, Cancelled):
    """The export was cancelled; nothing was left behind."""


@dataclass(frozen=True)
class ExportResult:
    """What was written, and the match report of the written checkpoint against the target class."""

    out_dir: str
    files: tuple[str, ...]
    n_tensors: int
    total_bytes: int
    counts: Mapping[str, int]  # keep / reinit / resized / dropped / tied (not written, as save_pretrained) / computed
    # (written from the caller's ``computed``: a merge's layers, there named "merged")
    plan_sha256: str
    report: Report
    seconds: float
    notes: tuple[str, ...] = ()
    copied: tuple[str, ...] = ()  # tokenizer/processor files copied unchanged from the source folder (names)

    @property
    def is_clean(self) -> bool:
        return self.report.is_clean

    def to_json(self) -> dict[str, Any]:
        c = self.report.counts()
        return {
            "out_dir": self.out_dir,
            "files": list(self.files),
            "tensors": self.n_tensors,
            "bytes": self.total_bytes,
            "counts": dict(self.counts),
            "plan_sha256": self.plan_sha256,
            "seconds": round(self.seconds, 3),
            "clean": self.is_clean,
            "reload": {k: c[k] for k in ("matched", "missing", "unexpected", "mismatched")},
            "missing": list(self.report.missing),
            "unexpected": list(self.report.unexpected),
            "mismatched": [[k, list(a), list(b)] for k, a, b in self.report.mismatched],
            "notes": list(self.notes),
            "copied": list(self.copied),
        }


@dataclass(frozen=True)
class _Out:
    """One tensor to write."""

    name: str
    shape: tuple[int, ...]
    dtype: str  # torch dtype name of the written data
    kind: str  # "copy" | "cast" | "init" | "resize"
    source: TensorInfo | None = None
    model_key: str | None = None

    @property
    def nbytes(self) -> int:
        import torch

        return math.prod(self.shape) * getattr(torch, self.dtype).itemsize


# --------------------------------------------------------------------------------------------- helpers




# --------------------------------------------------------------------------------------------- export


def export_checkpoint(
    checkpoint: str | os.PathLike[str] | CheckpointIndex,
    plan: Plan,
    out_dir: str | os.PathLike[str],
    *,
    resize: bool = False,
    dtype: str | None = None,
    max_shard_size: int | str | None = None,
    seed: int = 0,
    spec: ModelSpec | None = None,
    progress: Progress | None = None,
    cancel: Any = None,
    computed: Mapping[str, Callable[[], torch.Tensor]] | None = None,
    workers: int | None = None,
) -> ExportResult:
    """Write ``checkpoint`` patched by ``plan`` into the new folder ``out_dir``, then re-match it.

    ``spec`` overrides the model recorded in the plan. ``resize`` keeps the overlapping slice of mismatched
    tensors (vocabularies, classifiers) and initialises the rest. ``dtype`` casts floating tensors. ``progress`` and
    ``cancel`` follow :mod:`explorer.core.jobs`: ``progress(bytes done, bytes total, tensor being written)``, ``cancel``
    (a callable or an Event) checked between chunks. ``computed`` maps kept model keys to a function returning the
    tensor to write instead of the stored one (same shape; e.g. a merged adapter), called on a worker thread ahead of
    the writer (several may run at once). ``workers``: threads making casts, fresh inits and computed tensors ahead
    of the writer (default every core); the written bytes are the same for any. Raises ExportError (ExportCancelled when cancelled);
    on any failure nothing is left in ``out_dir``.
    """
    from .keys import apply_key_mapping
    from .matching import report
    from .model import ModelSpec, build_model, config_path
    from .target import resolve_model

    from .parallel import check_workers

    t0 = time.perf_counter()
    if workers is not None:
        check_workers(workers)
    dtype = parse_dtype(dtype)
    shard_limit = parse_size(max_shard_size)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64:
        raise ExportError(f"seed: expected an integer from 0 to 2**64-1 (torch's seed range), found {seed!r}")
    from .remote import is_remote, open_source

    index = checkpoint if isinstance(checkpoint, CheckpointIndex) else open_source(checkpoint, wrapper=plan.wrapper)
    remote = is_remote(index)  # a Hub repo or URL: its tensors are streamed by byte range; no companion files
    spec = spec or plan.spec()
    cfg_src: str | None = None
    if spec.is_transformers:
        spec = resolve_model(index, ModelSpec(config=spec.config, arch=spec.arch), missing=ExportError(
            f"{index.path}: the plan records no config and there is no config.json beside the checkpoint; pass --config"))
        cfg_src = spec.config

    out = Path(out_dir).expanduser().absolute()
    inputs = [] if remote else [Path(f).resolve() for f in index.files]
    if cfg_src:
        inputs.append(config_path(cfg_src).resolve())
    # a model folder (HF directory or shards) is the checkpoint: nothing goes inside it. A single weights file
    # only protects its own folder (export would write config.json there), not new sibling sub-folders.
    is_model_folder = Path(index.path).is_dir() or index.format.endswith("sharded")
    out = check_target(out, Path(index.folder).resolve(), inputs, refuse_inside=is_model_folder and not remote)

    rep = report(index, spec, key_mapping=plan.key_mapping, suggest=False)
    entries = plan.resolve(rep)
    built = build_model(spec, checkpoint_dtype=index.first_float_dtype())
    model = built.module
    tie_map: dict[str, str] = dict(getattr(model, "all_tied_weights_keys", {}) or {}) if built.is_transformers else {}

    outs, counts, notes = _layout(rep, entries, tie_map, index, plan, dtype=dtype, resize=resize,
                                  rename=lambda n: apply_key_mapping(n, plan.key_mapping))
    if not outs:
        raise ExportError(f"{index.path}: the plan leaves no tensor to write")
    given = computed or {}
    if plan.key_mapping and cfg_src:  # torchtitan q/k weights renamed to HF names: permuted for HF's RoPE
        from .naming import rope_computed

        try:
            rope = rope_computed(index, {o.source.name: (o.name, o.model_key) for o in outs if o.source is not None
                                         and o.model_key and o.kind in ("copy", "cast")},
                                 load_json(config_path(cfg_src), what="config.json", error=ExportError), notes)
        except ValueError as e:
            raise ExportError(str(e)) from None
        computed = {**rope, **(computed or {})}
    if computed:
        import dataclasses

        outs = [dataclasses.replace(o, kind="computed") if o.kind in ("copy", "cast") and o.model_key in computed else o for o in outs]
        # the caller's computed tensors (a merged adapter's layers) are not "kept"; RoPE's permuted copies are
        n_given = len({o.model_key for o in outs if o.kind == "computed" and o.model_key in given})
        counts["keep"] -= n_given
        counts["computed"] = n_given
        state_computed = dict(computed)
    else:
        state_computed = {}
    if plan.checkpoint and not remote and Path(plan.checkpoint).resolve() != Path(index.path).resolve():
        # allowed (rules are patterns; defaults come from this checkpoint's report), but worth saying
        notes.insert(0, f"the plan was made for {plan.checkpoint}, applied to {Path(index.path).absolute()}")
    shards = _shard(outs, shard_limit)
    plan_hash = plan.sha256()
    from .version import __version__

    metadata = {
        "format": "pt",
        "explorer_source": index.path if remote else str(Path(index.path).absolute()),
        "explorer_plan_sha256": plan_hash,
        "explorer_version": __version__,
        "explorer_arch": built.class_name,
        "explorer_seed": str(seed),
    }
    if dtype:
        metadata["explorer_dtype"] = dtype

    total = sum(o.nbytes for o in outs)
    parent = out.parent
    if not parent.is_dir():
        raise ExportError(f"{out}: parent folder {parent} does not exist")
    written: list[str] = []
    with staged(out, notes) as staging:
        state = _WriteState(total, progress, cancel)
        state.computed = state_computed
        state.mode = weights_mode(index.files)
        names = shard_names(len(shards))
        from .parallel import default_workers, shareable

        n_workers = default_workers() if workers is None else check_workers(workers)
        with TensorReader(index) as reader:
            readers = _Readers(index, reader, shared=not remote and shareable(index))
            fresh = FreshInit(built, seed=seed, cache_modules=2 if n_workers > 1 else 1)
            try:
                for fname, shard in zip(names, shards):
                    _write_safetensors(staging / fname, shard, metadata, readers, fresh, state, n_workers)
                    written.append(fname)
            finally:
                readers.close()
        if len(shards) > 1:
            written.append(write_shard_index(staging, {"total_size": total, "explorer_plan_sha256": plan_hash},
                                             {o.name: fname for fname, shard in zip(names, shards) for o in shard}))
        if cfg_src:
            cfg = load_json(config_path(cfg_src), what="config.json", error=ExportError)
            cfg["architectures"] = [built.class_name]
            written.append(write_config(staging, cfg, dtype))
        copied = [] if remote else copy_companions(Path(index.folder), staging, skip={Path(f).resolve() for f in index.files} | set(inputs), notes=notes)
        if is_cancelled(cancel):
            raise ExportCancelled(f"{out}: export cancelled; nothing was written")

    out_spec = ModelSpec(config=str(out), arch=built.class_name) if spec.is_transformers else spec
    after = report(str(out), out_spec, suggest=False)
    if not after.is_clean:
        notes.append(
            f"the written checkpoint does not load clean: {len(after.missing)} missing, "
            f"{len(after.unexpected)} unexpected, {len(after.mismatched)} mismatched"
        )
    return ExportResult(
        str(out), tuple(str(out / n) for n in written), len(outs), total, counts, plan_hash, after,
        time.perf_counter() - t0, tuple(notes), tuple(copied),
    )


# --------------------------------------------------------------------------------------------- layout


def _layout(
    rep: Report,
    entries: Mapping[str, Entry],
    tie_map: Mapping[str, str],
    index: CheckpointIndex,
    plan: Plan,
    *,
    dtype: str | None,
    resize: bool,
    rename: Callable[[str], str],
) -> tuple[list[_Out], dict[str, int], list[str]]:
    """Decide what to write, under which name, from where."""
    from .report import How, Status

    counts = {"keep": 0, "reinit": 0, "resized": 0, "dropped": 0, "tied": 0, "unexpected_dropped": 0}
    notes: list[str] = []
    mk = rep.model_keys

    def is_written(k: str) -> bool:
        e = entries.get(k)
        return e is not None and e.action is not Action.DROP

    def own_tie_target(key: str, m: Any, e: Entry, src_tie: str) -> bool:
        """A kept tie target with its own tensor on disk whose bytes differ from the tie source's: from_pretrained
        does not tie such a pair (it compares values), so dropping the target would change the model."""
        if e.action is not Action.KEEP or m.status is not Status.MATCHED or How.TIED in m.how or not m.sources:
            return False
        if How.CONVERTED in m.how:
            return False
        src = mk.get(src_tie)
        if src is None or not src.sources or How.TIED in src.how or How.CONVERTED in src.how:
            return True  # nothing on disk to tie to: keep its own value
        return not _same_bytes(index, m.sources[0], src.sources[0], reader_box)

    reader_box: list[TensorReader] = []
    outs: list[_Out] = []
    converted_done: set[str] = set()
    for key, m in mk.items():
        if m.status is Status.COMPUTED:
            continue
        e = entries[key]
        if e.action is Action.DROP:
            counts["dropped"] += 1
            continue
        src_tie = tie_map.get(key)
        if src_tie is not None and is_written(src_tie) and not own_tie_target(key, m, e, src_tie):
            counts["tied"] += 1  # save_pretrained writes only the tie source
            continue
        srcs = m.sources
        if not srcs and m.tied_to and mk.get(m.tied_to) and mk[m.tied_to].sources:
            srcs = mk[m.tied_to].sources  # tie source absent on disk, loaded from its present target
        converted = How.CONVERTED in m.how
        want_keep = e.action is Action.KEEP
        if m.status is Status.MISMATCHED:
            src = index.tensors[srcs[0]] if srcs else None
            can_resize = src is not None and not converted and len(src.shape) == len(m.model_shape)
            if resize and can_resize and (want_keep or e.rule is None):
                out_dt = dtype if (dtype and src.is_floating) else src.dtype
                outs.append(_Out(key, m.model_shape, out_dt, "resize", src, key))
                counts["resized"] += 1
                continue
            if want_keep:
                notes.append(f"{key}: kept is impossible (checkpoint {list(m.checkpoint_shape or ())} vs model "
                             f"{list(m.model_shape)}); re-initialised (use resize to keep the overlap)")
            want_keep = False
        if want_keep and not srcs:
            if m.status is not Status.IGNORED:
                notes.append(f"{key}: keep requested but the checkpoint has no tensor for it; re-initialised")
            want_keep = False
        if not want_keep:
            if converted:
                _check_converted_group(key, m, mk, entries)
            outs.append(_Out(key, m.model_shape, dtype if dtype and _is_float(m.model_dtype) else m.model_dtype, "init", None, key))
            counts["reinit"] += 1
            continue
        if converted:
            _check_converted_group(key, m, mk, entries)
            for s in srcs:
                if s in converted_done:
                    continue
                converted_done.add(s)
                info = index.tensors[s]
                outs.append(_copy_out(rename(s), info, dtype, key))
            counts["keep"] += 1
            continue
        info = index.tensors[srcs[0]]
        outs.append(_copy_out(key, info, dtype, key))
        counts["keep"] += 1
    for r in reader_box:
        r.close()
    counts["unexpected_dropped"] = sum(1 for e in entries.values() if not e.is_model_key)
    names = [o.name for o in outs]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise ExportError(f"two tensors would be written as {dup!r}; the plan's renames collide")
    return outs, counts, notes


def _same_bytes(index: CheckpointIndex, a: str, b: str, reader_box: list[TensorReader]) -> bool:
    """Whether two checkpoint tensors hold identical bytes (same dtype and shape). Reads them only if needed."""
    import torch

    ta, tb = index.tensors[a], index.tensors[b]
    if ta.dtype != tb.dtype or tuple(ta.shape) != tuple(tb.shape):
        return False
    if not reader_box:
        reader_box.append(TensorReader(index))
    reader = reader_box[0]
    fa, fb = reader.flat(a), reader.flat(b)
    if fa.numel() == 0:
        return True
    return bool(torch.equal(fa.contiguous().view(torch.uint8), fb.contiguous().view(torch.uint8)))


def _copy_out(name: str, info: TensorInfo, dtype: str | None, key: str) -> _Out:
    if dtype and info.is_floating and info.dtype != dtype:
        return _Out(name, info.shape, dtype, "cast", info, key)
    return _Out(name, info.shape, info.dtype, "copy", info, key)


def _is_float(dt: str) -> bool:
    return dt.startswith(("float", "bfloat"))


def _check_converted_group(key: str, m: Any, mk: Mapping[str, Any], entries: Mapping[str, Entry]) -> None:
    """Fused/split tensors come from shared sources: all their targets must be kept, or none."""
    srcs = set(m.sources)
    group = [k for k, o in mk.items() if srcs & set(o.sources)]
    actions = {entries[k].action is Action.KEEP for k in group}
    if len(actions) > 1:
        raise ExportError(
            f"{key}: its checkpoint tensors are converted by transformers together with "
            f"{', '.join(k for k in group if k != key)[:200]}; keep or re-initialise them together"
        )


def _shard(outs: list[_Out], limit: int | None) -> list[list[_Out]]:
    if not limit:
        return [outs]
    shards: list[list[_Out]] = [[]]
    size = 0
    for o in outs:
        if shards[-1] and size + o.nbytes > limit:
            shards.append([])
            size = 0
        shards[-1].append(o)
        size += o.nbytes
    return shards


# --------------------------------------------------------------------------------------------- writing


class _WriteState(Ticker):
    """Bytes written (the job's progress), the cancel check, the ``computed`` tensors to write, and the weights
    files' permissions (:func:`~explorer.core.staging.weights_mode` of the sources, found once per export)."""

    def __init__(self, total: int, progress: Progress | None, cancel: Any) -> None:
        super().__init__(total, progress, cancel, error=lambda: ExportCancelled("export cancelled; nothing was written"))
        self.computed: dict[str, Callable[[], torch.Tensor]] = {}
        self.mode = 0o644


def _fresh(fi: FreshInit, key: str, state: _WriteState) -> torch.Tensor:
    """The model's own seeded fresh init of ``key`` (the same values init_check and the GUI overlay use); a cancel
    stops it between the pieces of a big tensor's init (ExportCancelled)."""
    try:
        t = fi.tensor(key, cancel=state.cancel)
    except Cancelled as e:
        if isinstance(e, ExportCancelled):
            raise
        raise state.error() from None
    if t is None:
        why = f" ({'; '.join(fi.notes)})" if fi.notes else ""
        raise ExportError(f"{key}: the model's initialisation does not set this tensor{why}; keep it from the checkpoint or drop it")
    return t


def _header(shard: list[_Out], metadata: Mapping[str, str]) -> bytes:
    h: dict[str, Any] = {"__metadata__": dict(metadata)}
    off = 0
    for o in shard:
        n = o.nbytes
        h[o.name] = {"dtype": safetensors_dtype_code(o.dtype), "shape": list(o.shape), "data_offsets": [off, off + n]}
        off += n
    raw = json.dumps(h, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # data aligned to 8 bytes, as safetensors writes it
    return struct.pack("<Q", len(raw)) + raw


def _copy_range(src_fd: int, dst_fd: int, offset: int, count: int, dst_offset: int, state: _WriteState, name: str) -> None:
    """Kernel-side copy of ``count`` bytes from ``offset`` of ``src_fd`` to ``dst_offset`` of ``dst_fd`` (no
    user-space buffer, neither file position used: any thread); falls back to pread/pwrite. Polls the cancel between
    pieces (ExportCancelled)."""
    left = count
    pos, dst = offset, dst_offset
    use_cfr = hasattr(os, "copy_file_range")
    while left:
        state.check()
        n = min(left, _CHUNK)
        done = 0
        if use_cfr:
            try:
                done = os.copy_file_range(src_fd, dst_fd, n, pos, dst)
            except OSError:
                use_cfr = False
                done = 0
        if not use_cfr or done == 0:
            data = os.pread(src_fd, n, pos)
            if not data:
                raise ExportError(f"{name}: source ended early (file changed while exporting?)")
            _pwrite_all(dst_fd, data, dst)
            done = len(data)
        pos += done
        dst += done
        left -= done


def _jobs(shard: list[_Out], workers: int = 1) -> list[tuple[_Out, int, int]]:
    """What writing ``shard`` takes: ``(tensor, start, stop)`` — a cast of a safetensors tensor in ranges of
    ``_CHUNK // 8`` elements (``start < stop``), anything else whole (``0, 0``) — in file order but for the big
    jobs, which start first (:func:`_big_inits_first`)."""
    jobs: list[tuple[_Out, int, int]] = []
    step = _CHUNK // 8
    for o in shard:
        if o.kind == "cast" and o.source is not None and o.source.offset is not None:
            n = o.source.numel
            jobs.extend((o, s, min(n, s + step)) for s in range(0, n, step))
        else:
            jobs.append((o, 0, 0))
    return _big_inits_first(jobs, workers)


def _big_inits_first(jobs: list[tuple[_Out, int, int]], workers: int = 1) -> list[tuple[_Out, int, int]]:
    """The jobs in file order, except that the big ones start first, the biggest first: the fresh inits of a module
    holding at least 1/(8 × workers) of the shard's bytes (a re-initialised lm_head or embedding: one long random
    init that cannot be split), the module's tensors together, and any other single job writing that much (a kept
    lm_head the kernel copies, a computed tensor). Started last, such a job runs alone at the end while the other
    workers wait: with ``workers`` sharing the shard, a job of 1/(8 × workers) of it is 1/8 of the run (a 131 MB
    lm_head init of a 1.1 GB bf16 export, under the 1/8 of the shard it once took, ran alone for its last 1.1 s of
    5.5). Every job writes at its own offset, so the file's bytes do not change."""
    size = _job_size
    total = sum(size(j) for j in jobs)
    per_module: dict[str, int] = {}
    for o, _s, _e in jobs:
        if o.kind in ("init", "resize"):
            m = (o.model_key or o.name).rpartition(".")[0]
            per_module[m] = per_module.get(m, 0) + o.nbytes
    scale = 8 * max(1, workers)

    def weight(job: tuple[_Out, int, int]) -> int:
        """The bytes that run as one: a fresh init's whole module, else the job's own."""
        o = job[0]
        if o.kind in ("init", "resize"):
            return per_module[(o.model_key or o.name).rpartition(".")[0]]
        return size(job)

    first = [j for j in jobs if total and weight(j) * scale >= total]
    if not first:
        return jobs
    chosen = {id(j) for j in first}
    first.sort(key=weight, reverse=True)  # stable: a module's tensors stay together, in file order
    return first + [j for j in jobs if id(j) not in chosen]


def _job_size(job: tuple[_Out, int, int]) -> int:
    """The bytes a job writes: its range of a cast, else the whole tensor."""
    o, s, e = job
    if e > s:
        import torch

        return (e - s) * getattr(torch, o.dtype).itemsize
    return o.nbytes


def _job_bytes(job: tuple[_Out, int, int]) -> int:
    """The bytes a job's result holds until it is written (a copy holds none: the kernel copies it)."""
    o = job[0]
    if o.kind == "copy" and o.source is not None and o.source.offset is not None:
        return 0
    return _job_size(job)


class _Readers:
    """The export's TensorReaders over the index, lent to one job at a time (:meth:`lease`): at most one per job
    running at once, reused by every shard's jobs and closed together at the end, so the open files stay about
    ``workers`` readers' worth however many shards are written (each shard's jobs run on threads of their own)."""

    def __init__(self, index: CheckpointIndex, main: TensorReader, shared: bool) -> None:
        import threading

        self.index, self.main, self.shared = index, main, shared
        self._free: list[TensorReader] = []
        self._all: list[TensorReader] = []
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def lease(self) -> Iterator[TensorReader]:
        """A reader for this job alone: the caller's own (``main``) when the index is not shareable (then every job
        runs in the caller's thread), else an idle one or a new one."""
        if not self.shared:
            yield self.main
            return
        with self._lock:
            r = self._free.pop() if self._free else None
        if r is None:
            r = TensorReader(self.index)
            with self._lock:
                self._all.append(r)
        try:
            yield r
        finally:
            with self._lock:
                self._free.append(r)

    def opened(self) -> int:
        """Readers made for the jobs so far (at most the jobs that ran at once)."""
        with self._lock:
            return len(self._all)

    def close(self) -> None:
        with self._lock:
            every, self._all, self._free = self._all, [], []
        for r in every:
            r.close()


def _produce(job: tuple[_Out, int, int], readers: _Readers, fresh: FreshInit, state: _WriteState) -> Any:
    """A job's bytes to write (a tensor), computed on any worker thread; None for a kernel copy."""
    import torch

    o, s, e = job
    dt = getattr(torch, o.dtype)
    if o.kind == "copy" and o.source is not None and o.source.offset is not None:
        return None
    if o.kind in ("copy", "cast"):
        assert o.source is not None
        with readers.lease() as reader:
            if e > s:  # safetensors: one range read and cast
                (chunk,) = reader.iter_range(o.source.name, s, e, chunk_elems=e - s)
                return chunk.to(dt)
            return reader.tensor(o.source.name).to(dt)
    if o.kind == "computed":
        t = state.computed[o.model_key or o.name]()
        if tuple(t.shape) != o.shape:
            raise ExportError(f"{o.name}: computed tensor has shape {list(t.shape)}, expected {list(o.shape)}")
        return t.to(dt).contiguous()
    if o.kind == "init":
        return _fresh(fresh, o.model_key or o.name, state).to(dt)
    if o.kind == "resize":
        assert o.source is not None
        t = _fresh(fresh, o.model_key or o.name, state).to(dt, copy=True)  # the cache stays clean
        with readers.lease() as reader:
            src = reader.tensor(o.source.name)
            sl = tuple(slice(0, min(a, b)) for a, b in zip(src.shape, t.shape))
            t[sl] = src[sl].to(t.dtype)
        return t
    raise ExportError(f"{o.name}: unknown write kind {o.kind!r}")  # pragma: no cover


def _write_safetensors(
    path: Path, shard: list[_Out], metadata: Mapping[str, str], readers: _Readers, fresh: FreshInit,
    state: _WriteState, workers: int = 1,
) -> None:
    """The shard's header, then each tensor at its offset in the file (known from the header): casts, fresh inits,
    resizes and computed tensors made and written (``pwrite``), and kept tensors copied by the kernel
    (``copy_file_range`` at both offsets), by ``workers`` threads, started in file order (up to 32 per worker ahead of
    this thread; the ones queued or running make at most ``_AHEAD`` bytes: a done job holds nothing, so a slow one
    does not idle the others); the progress in this thread, in order (the file's bytes do not depend on ``workers``). A big kept tensor copied
    by this thread in its turn once held up the end of the file while the workers waited."""
    import torch

    from .parallel import ordered_map

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, state.mode)
    jobs = _jobs(shard, workers if readers.shared else 1)
    header = _header(shard, metadata)
    starts: dict[str, int] = {}
    off = len(header)
    for o in shard:
        starts[o.name] = off
        off += o.nbytes

    def at(job: tuple[_Out, int, int]) -> int:
        o, s, e = job
        return starts[o.name] + (s * getattr(torch, o.dtype).itemsize if e > s else 0)

    def make(job: tuple[_Out, int, int]) -> int:
        t = _produce(job, readers, fresh, state)
        if t is None:  # a stored tensor kept as is: the kernel copies its bytes
            o = job[0]
            assert o.source is not None and o.source.offset is not None
            with readers.lease() as reader:
                # the reader's descriptor: a regular file opened non-blocking (never a FIFO swapped in, which would
                # block the open forever), checked against the index (size, mtime, the same inode at the path)
                # before each tensor, as every other read is
                sfd = reader.checked_fd(o.source.file, need=o.source.offset + o.source.nbytes)
                _copy_range(sfd, fd, o.source.offset, o.source.nbytes, at(job), state, o.name)
            n = o.source.nbytes
        else:
            n = _pwrite_tensor(fd, t, at(job))
            del t
        writeback.submit(fd, at(job), n)  # on its way to disk while the rest is made: the final fsync waits less
        return n

    writeback = Writeback()
    made = ordered_map(make, jobs, workers=workers if readers.shared else 1,
                       threads=workers, cost=_job_bytes, budget=_AHEAD, window=32)  # memory does not grow with --workers
    try:
        _pwrite_all(fd, header, 0)
        for job, n in zip(jobs, made):
            state.step(n, job[0].name)
        size = os.fstat(fd).st_size
        if size != off:  # pragma: no cover - every byte has a writer
            raise ExportError(f"{path.name}: wrote {size} bytes, expected {off}")
        writeback.close()
        os.fsync(fd)
    finally:
        made.close()
        writeback.close(check=False)  # an error of its own was raised above, or another one is on its way
        os.close(fd)


def _pwrite_all(fd: int, buf: Any, offset: int) -> None:
    """Every byte of ``buf`` at ``offset`` of ``fd`` (the file position untouched)."""
    mv = memoryview(buf).cast("B")
    while mv:
        n = os.pwrite(fd, mv, offset)
        mv, offset = mv[n:], offset + n


def _pwrite_tensor(fd: int, t: torch.Tensor, offset: int) -> int:
    """A tensor's bytes at ``offset`` of ``fd`` (any thread), in ``_CHUNK`` pieces; the bytes written."""
    import torch

    flat = t.detach().contiguous().reshape(-1)
    if flat.numel() == 0:
        return 0
    raw = flat.view(torch.uint8).numpy()
    for start in range(0, raw.size, _CHUNK):
        _pwrite_all(fd, raw[start : start + _CHUNK], offset + start)
    return int(raw.size)
