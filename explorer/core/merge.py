"""Merge-export: base + PEFT adapter -> one checkpoint with the adapter folded into the base weights.

Each adapted module is merged by peft's own ``merge()`` on just that module, materialised on the CPU from the
base tensor and the module's adapter tensors (LoRA incl. DoRA / fan_in_fan_out / rsLoRA, IA³, LoHa, LoKr, ...):
the values equal ``merge_and_unload()``. ``modules_to_save`` copies replace their base tensors. Everything else
is copied byte for byte by the export machinery (:func:`explorer.core.export.export_checkpoint`), streamed
tensor by tensor into a staging folder and renamed at the end; peak memory is about one module plus its adapter.
"""
from __future__ import annotations

import contextlib
import os
import threading
from typing import TYPE_CHECKING, Any, Callable

from .adapter import PEFT_PREFIX
from .adapter_match import match_adapter
from .checkpoint import TensorReader
from .errors import ExportError

if TYPE_CHECKING:
    import torch

    from .export import ExportResult
    from .jobs import Progress
    from .plan import Plan


def _trim_heap() -> None:
    """Hand freed heap memory back to the OS (glibc ``malloc_trim``). Each merged module frees a few MB of
    temporaries of one size; glibc's growing mmap threshold then keeps them on the heap, and without a trim the
    process's RSS crept by ~40 MB per layer (0.98 GiB peak on a 0.29 GiB base, 0.42 GiB with it). No-op elsewhere."""
    global _LIBC
    if _LIBC is None:
        import ctypes
        import ctypes.util

        try:
            lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _LIBC = lib if hasattr(lib, "malloc_trim") else False
        except OSError:
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)


_LIBC: Any = None

#: the smallest temporary (bytes) :func:`_reuse_mode` hands a reused buffer to; below it fresh memory is cheap
REUSE_MIN = 1 << 20
#: buffers each thread keeps for peft's temporaries (a LoRA delta is two: ``B @ A`` and its scaled copy)
REUSE_KEEP = 2
#: the biggest buffer kept (bytes): a bigger temporary (a LoRA on a 128k-vocab lm_head) is fresh memory, given back
REUSE_MAX = 1 << 30


def _reuse_mode() -> Any:
    """A TorchFunctionMode under which the big temporaries of peft's own ``merge()`` — a 2-D ``matmul`` and a tensor
    times a Python number, float, on the CPU, no autograd: LoRA's ``B @ A * scale`` — are computed into buffers this
    thread keeps (``out=``: the same kernels, the same values) instead of fresh memory. Fresh memory is faulted in and
    zeroed by the kernel page by page, and the trim after each module hands it back: that zeroing was a third of a
    merge's CPU time (perf: ``clear_page_erms`` under ``mul_kernel`` and ``sgemm``), and two workers zeroing at once
    shared one memory bus. A buffer is reused only when nothing else holds its storage (a delta peft kept stays its
    own). A thread keeps at most ``REUSE_KEEP`` buffers of at most ``REUSE_MAX`` bytes: what one module's merge held at
    its peak anyway. Any other op, or a tensor subclass, runs as it would. None (no reuse) where torch lacks the
    storage use count or it does not count one more holder as one more."""
    import torch
    from torch.overrides import TorchFunctionMode

    use_count = getattr(torch._C, "_storage_Use_Count", None)
    if use_count is None:  # pragma: no cover - every torch this project supports has it
        return None
    probe = torch.empty(1)
    alone = use_count(probe.untyped_storage()._cdata)  # the tensor, and whatever the query itself adds
    view = probe[:]
    if use_count(probe.untyped_storage()._cdata) != alone + 1:  # pragma: no cover - a torch that counts otherwise
        return None
    del view
    matmuls = {torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.mm, torch.Tensor.mm}
    muls = {torch.mul, torch.Tensor.mul, torch.Tensor.__mul__, torch.Tensor.__rmul__}
    plain = (torch.Tensor, torch.nn.Parameter)
    local = threading.local()

    def free(b: torch.Tensor) -> bool:
        return use_count(b.untyped_storage()._cdata) <= alone  # the pool's own tensor holds it, nobody else

    def buffer(shape: tuple[int, ...], dtype: Any) -> torch.Tensor:
        n = 1
        for d in shape:
            n *= d
        if n * dtype.itemsize > REUSE_MAX:
            return torch.empty(shape, dtype=dtype)
        pool: list[torch.Tensor] = local.__dict__.setdefault("pool", [])
        idle = [b for b in pool if free(b)]
        for b in idle:
            if b.dtype == dtype and b.numel() >= n:
                return b[:n].view(shape)
        if len(pool) >= REUSE_KEEP:
            if not idle:
                return torch.empty(shape, dtype=dtype)
            pool.remove(idle[0])  # too small or of another dtype: a bigger one takes its place
        b = torch.empty(n, dtype=dtype)
        pool.append(b)
        return b.view(shape)

    def usable(t: Any) -> bool:
        return type(t) in plain and t.device.type == "cpu" and t.dtype.is_floating_point and not t.is_sparse

    class Reuse(TorchFunctionMode):
        def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: Any = None) -> Any:
            if not kwargs and len(args) == 2 and not torch.is_grad_enabled():
                a, b = args
                if func in matmuls and usable(a) and usable(b) and a.dim() == 2 and b.dim() == 2 \
                        and a.dtype == b.dtype and a.shape[1] == b.shape[0] \
                        and a.shape[0] * b.shape[1] * a.element_size() >= REUSE_MIN:
                    return torch.mm(a, b, out=buffer((a.shape[0], b.shape[1]), a.dtype))
                if func in muls and usable(a) and type(b) in (int, float) and a.numel() * a.element_size() >= REUSE_MIN:
                    return torch.mul(a, b, out=buffer(tuple(a.shape), a.dtype))
            return func(*args, **(kwargs or {}))

    return Reuse


class _PerThread:
    """A TensorReader per thread over ``index`` (opened on first use, closed together), or — for a file workers
    may not each open (:func:`~explorer.core.parallel.shareable`) — one reader whose reads take turns."""

    def __init__(self, index: Any) -> None:
        from .parallel import shareable

        self.index, self.shared = index, shareable(index)
        self._local = threading.local()
        self._all: list[TensorReader] = []
        self._lock = threading.Lock()

    def read(self, name: str, dtype: Any) -> torch.Tensor:
        if not self.shared:
            with self._lock:
                if not self._all:
                    self._all.append(TensorReader(self.index))
                t = self._all[0].owned(name)
                return t if dtype is None else t.to(dtype)
        r = getattr(self._local, "reader", None)
        if r is None:
            r = self._local.reader = TensorReader(self.index)
            with self._lock:
                self._all.append(r)
        t = r.owned(name)  # the caller's own memory: merged in place, no copy out of a mmap
        return t if dtype is None else t.to(dtype)

    def close(self) -> None:
        with self._lock:
            for r in self._all:
                r.close()
            self._all.clear()


def export_merged(
    base: str | os.PathLike[str],
    adapter: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    plan: Plan | None = None,
    arch: str | None = None,
    dtype: str | None = None,
    max_shard_size: int | str | None = None,
    seed: int = 0,
    progress: Progress | None = None,
    cancel: Any = None,
    workers: int | None = None,
) -> ExportResult:
    """Write ``base`` with ``adapter`` merged into ``out_dir`` (a new folder); ``plan`` applies on top (default: keep
    the base as it loads); ``workers``: threads merging modules ahead of the writer (default every core; the written
    bytes are the same for any). Refuses an adapter that does not load clean onto this base (merging part of an adapter
    silently is how peft#2054-like surprises happen). Raises ExportError with one line."""
    import torch

    from .export import export_checkpoint
    from .matching import report as base_report
    from .model import ModelSpec
    from .plan import Plan as PlanCls

    kept: list[Any] = []  # the PeftModel on meta the match built, its adapter loaded: the layers are read from it
    rep = match_adapter(adapter, base=base, arch=arch, keep=kept)
    if not rep.is_clean:
        what = "; ".join(f.message for f in rep.findings[:2]) or (
            f"{len(rep.missing)} missing, {len(rep.unexpected)} unexpected, {len(rep.mismatched)} mismatched adapter keys")
        raise ExportError(f"{rep.adapter.folder}: does not load clean onto {base} ({what}); nothing merged")
    af, src = rep.adapter, rep.base
    if src.index is None:
        raise ExportError(f"{base}: no base weights to merge into")
    spec = ModelSpec(config=src.config, arch=rep.arch)
    brep = rep.base_report if rep.base_report is not None else base_report(src.index, spec, suggest=False)
    if plan is None:
        plan = PlanCls.from_report(brep)

    # the PeftModel on meta exactly as in the report (dtypes as peft casts them), to read layers from
    if len(kept) != 1:  # pragma: no cover - a match that loads clean has built it
        raise ExportError(f"{rep.adapter.folder}: peft built no model to merge from; nothing merged")
    (pm,) = kept
    base_sources = {k: mk.sources[0] for k, mk in brep.model_keys.items() if mk.sources}
    a_reader = _PerThread(af.index)
    b_reader = _PerThread(src.index)
    computed: dict[str, Callable[[], torch.Tensor]] = {}
    cache: dict[str, dict[str, torch.Tensor]] = {}
    # export calls the computed tensors on its worker threads, several at once: one module is merged by one thread
    # (its lock), the others merge other modules meanwhile, each reading through its own readers
    locks: dict[str, threading.Lock] = {}
    locks_lock = threading.Lock()
    reuse = _reuse_mode()

    def read(reader: _PerThread, name: str, dtype: Any) -> torch.Tensor:
        return reader.read(name, dtype)

    def merged_module(path: str) -> dict[str, torch.Tensor]:
        """Merge one module with peft's own code, once; {base key: merged tensor}, each handed out once (call with
        the module's lock held)."""
        if path in cache:
            return cache[path]
        layer = pm.get_submodule(PEFT_PREFIX + path)
        pre = PEFT_PREFIX + path + "."
        local: dict[str, torch.Tensor] = {}
        base_keys: dict[str, str] = {}
        for k, meta in layer.state_dict(keep_vars=True).items():
            full = pre + k
            if k.startswith("base_layer."):
                bk = f"{path}.{k.removeprefix('base_layer.')}"
                if bk not in base_sources:
                    raise ExportError(f"{src.index.path}: no base tensor for {bk}; cannot merge {path}")
                local[k] = read(b_reader, base_sources[bk], meta.dtype)
                base_keys[k] = bk
            elif full in rep.sources:
                local[k] = read(a_reader, rep.sources[full], meta.dtype)
            elif ".default" in k:
                raise ExportError(f"{af.weights}: no adapter tensor for {full}; cannot merge {path}")
        with torch.no_grad(), (reuse() if reuse is not None else contextlib.nullcontext()):
            layer.load_state_dict(local, strict=False, assign=True)
            layer.merge(adapter_names=["default"])
            sd = layer.state_dict()
            out = {bk: sd[k].detach() for k, bk in base_keys.items()}  # the layer lets go of them below: no copy
        del local, sd
        layer.to_empty(device="meta")  # give the memory back; the layer is never merged twice (cache)
        _trim_heap()
        cache[path] = out
        return out

    def take(path: str, key: str) -> torch.Tensor:
        with locks_lock:
            lock = locks.setdefault(path, threading.Lock())
        with lock:
            out = merged_module(path)
            t = out.pop(key)
            if not out:
                cache[path] = {}  # all handed out: keep the marker, drop the tensors
            return t

    for m in rep.adapted:
        layer = pm.get_submodule(PEFT_PREFIX + m.path)
        for k in layer.state_dict():
            if k.startswith("base_layer."):
                bk = f"{m.path}.{k.removeprefix('base_layer.')}"
                computed[bk] = (lambda p=m.path, key=bk: take(p, key))
    for s in rep.modules_to_save:
        pre = f"{PEFT_PREFIX}{s.path}.modules_to_save.default."
        for k in s.keys:
            bk = f"{s.path}.{k.removeprefix(pre)}"
            if k in rep.sources and bk in base_sources:
                computed[bk] = (lambda name=rep.sources[k]: read(a_reader, name, None))
    try:
        res = export_checkpoint(
            src.index, plan, out_dir, dtype=dtype, max_shard_size=max_shard_size, seed=seed, spec=spec,
            progress=progress, cancel=cancel, computed=computed, workers=workers,
        )
        import dataclasses

        note = (f"merged {len(rep.adapted)} adapted modules of {af.folder} ({rep.peft_type}) with peft's merge()"
                + (f" and {len(rep.modules_to_save)} modules_to_save" if rep.modules_to_save else ""))
        counts = {("merged" if k == "computed" else k): v for k, v in res.counts.items()}
        return dataclasses.replace(res, notes=(note, *res.notes), counts=counts)
    finally:
        a_reader.close()
        b_reader.close()
