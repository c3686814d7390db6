"""Fresh initialisation of one module at a time, and the "looks untrained" check.

Fresh init: the model is built on the meta device (:func:`explorer.core.model.build_model`); for a key, only
its owning module's *own* parameters and buffers are materialised on CPU (children and the rest of the model
stay on meta, where init calls are no-ops), then the model's own initialisation runs, seeded, in the order a
real ``Model(config)`` runs it: the torch default (``reset_parameters``) and then, for transformers models,
``_init_weights`` of the owning module and of each ancestor (nearest first, each dispatched to its nearest
``PreTrainedModel`` as ``initialize_weights``/``smart_apply`` does). Values that no init touches are reported
as unknown (``None``), never as garbage: tensors are pre-filled with NaN / a sentinel. The meta model is
restored afterwards, so one BuiltModel can serve many calls, from several threads at once (see
:class:`FreshInit`: each module's init draws from its own seeded generator, values as made one at a time).

"Looks untrained" (:func:`init_check`), per checkpoint tensor:

* constant init (zeros biases, unit LayerNorm weights): ``score`` = fraction of values exactly equal to the
  init constant; ``init_like`` iff all are.
* random init: two-sample Kolmogorov-Smirnov between ≤ 100 000 values sampled deterministically (without
  replacement) from the checkpoint and as many from the fresh init (cast to the checkpoint's dtype first, so
  bf16 rounding does not count). ``ks`` = the D statistic, ``score`` = its asymptotic p-value
  (1 = indistinguishable). ``init_like`` iff ``p >= P_MIN``.
* buffers (position_ids, ...) are not learned: ``init_like`` is False, ``details`` says whether they equal
  their init. Keys the model ignores or cannot place are "skipped".

Calibration (all-MiniLM-L6-v2, BertModel, 104 tensors, ``seed=0``; tests/core/test_init_check.py pins it):

* trained random-init tensors (40): D ≥ 0.046 (embeddings.position_embeddings, p = 4e-92); the largest
  p-value is 3.7e-6 (embeddings.token_type_embeddings, only 768 values, D = 0.13); the rest have p ≈ 0.
* the same 40 tensors replaced by the model's own fresh init with 6 other seeds (240 trials): smallest
  p = 0.015, largest D = 0.060 (the 768-value token_type_embeddings; D is ≤ 0.012 at n = 1e5). p is
  uniform under "is a fresh init", so P_MIN is also the false-alarm rate.
* ``P_MIN = 1e-3``: 2.6 decades above the most init-like trained tensor, 1.2 below the least init-like
  fresh one. D alone does not separate (0.046 trained vs 0.060 fresh on a tiny tensor).
* constants: 62 trained biases / LayerNorm weights differ from their init (score 0.0); one tensor genuinely
  sits at init: ``pooler.dense.bias`` is all zeros (the pooler is unused by sentence-transformers), so it
  is flagged, correctly. ``embeddings.position_ids`` is ignored on load (skipped).
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import threading
import zlib
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator

from .checkpoint import CheckpointIndex, TensorReader, open_checkpoint
from .errors import ConfigError, ExplorerError
from .jobs import Cancel, Cancelled, Progress, Ticker, is_cancelled
from .keys import layer_of
from .model import BuiltModel, ModelSpec, build_model, transformers_lock
from .report import How, Status

if TYPE_CHECKING:
    import torch

P_MIN = 1e-3
MAX_SAMPLES = 100_000
_INT_SENTINEL = -(2**31) + 7
# a random init of a tensor larger than this runs in pieces of this many values, cancel checked between them
# (a 128256×8192 embedding is ~1e9 values, seconds in one torch call): ~0.1 s a piece on one busy core. A multiple of
# 16: torch's CPU normal_ transforms blocks of 16 uniforms, so pieces give the same values as one call
INIT_CHUNK = 1 << 22


# --------------------------------------------------------------------------------------------- fresh init


def _split(key: str) -> tuple[str, str]:
    path, _, local = key.rpartition(".")
    return path, local


class FreshInit:
    """Fresh, seeded values of a model's tensors, one owning module at a time (small LRU cache).

    Thread-safe, and concurrent: threads asking for different modules initialise them at once (a small lock guards
    only the cache). Each module's init draws from its own ``torch.Generator`` seeded with the module's seed
    (:class:`_ChunkedInit`, a thread-local dispatch mode, hands it to every seeded random op called without one:
    the same stream the reseeded global generator gave), under :meth:`TransformersLock.shared` (no build or match
    meanwhile; transformers' init guard entered once for all). Two modules of which one contains the other are
    never materialised at once; an init that would touch a tensor another thread has materialised, or a random op
    that cannot take a generator (it would read torch's global RNG), is abandoned and redone alone (the lock held
    exclusively, the global RNG reseeded and restored, as one thread at a time would): the values are the same
    whatever runs beside."""

    def __init__(self, built: BuiltModel, *, seed: int = 0, cache_modules: int = 4) -> None:
        self.built = built
        self.seed = seed
        self._cache: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._cache_size = cache_modules
        self._lock = threading.Lock()  # the cache, the modules being made and the notes; never held while one is made
        self._making: dict[str, Future] = {}
        self.notes: list[str] = []
        self.alone = 0  #: inits redone alone (an op touching another thread's module, or the global RNG)

    def owner(self, key: str) -> tuple[Any, str]:
        """(owning module, local name) of a model state-dict key; ConfigError if the model has no such key."""
        path, local = _split(key)
        try:
            mod = self.built.module.get_submodule(path) if path else self.built.module
        except AttributeError:
            mod = None
        if mod is None or (local not in mod._parameters and local not in mod._buffers):
            raise ConfigError(f"{self.built.class_name}: no parameter or buffer named {key!r}")
        return mod, local

    def is_buffer(self, key: str) -> bool:
        mod, local = self.owner(key)
        return local in mod._buffers

    def tensor(self, key: str, *, cancel: Cancel | None = None) -> torch.Tensor | None:
        """The freshly initialised tensor for ``key`` (CPU, model dtype), or None when no init sets it."""
        return self._get(key, False, 0, cancel, {})

    def piece(self, key: str, numel: int, *, cancel: Cancel | None = None) -> torch.Tensor | None:
        """Fresh values distributed as one on-disk piece of the fused tensor ``key`` (one expert's
        ``down_proj`` / ``gate_proj`` of ``experts.down_proj`` / ``experts.gate_up_proj``, ``numel`` values), made
        without the whole fused tensor: the owning module's tensors with the fused one's leading (expert) dimension
        cut to 1, then its own init, seeded — for every fused MoE in transformers 5.x that is ``normal_`` with a
        fixed std, the same distribution as any expert's slice. Flat; None when ``key`` has no leading dimension
        a piece of ``numel`` values divides, or no init sets it."""
        return self._get(key, True, numel, cancel, {})

    def fresh_many(self, wanted: list[tuple[str, bool, int]], *, cancel: Cancel | None = None) -> list[Any]:
        """:meth:`tensor` (or, for ``(key, True, numel)``, :meth:`piece`) of each ``(key, piece, numel)``, made
        together: keys of one owning module are materialised once, whatever other threads evict meanwhile."""
        made: dict[str, dict[str, Any]] = {}
        return [self._get(k, p, n, cancel, made) for k, p, n in wanted]

    def _get(self, key: str, piece: bool, numel: int, cancel: Cancel | None, made: dict[str, dict[str, Any]]) -> Any:
        mod, local = self.owner(key)
        path = _split(key)[0]
        if not piece:
            return self._state(path, path, None, cancel, made).get(local)
        shape = tuple(getattr(mod, "_parameters" if local in mod._parameters else "_buffers")[local].shape)
        if len(shape) < 2 or shape[0] < 2 or numel <= 0 or math.prod(shape[1:]) % numel:
            return None
        t = self._state(path + "\0piece", path, shape[0], cancel, made).get(local)
        return None if t is None else t.reshape(-1)

    def _state(self, ck: str, path: str, lead: int | None, cancel: Cancel | None, made: dict[str, dict[str, Any]]
               ) -> dict[str, Any]:
        """The module's fresh tensors (cache key ``ck``): from ``made``, the cache, the thread already making them,
        or made here."""
        if ck in made:
            return made[ck]
        while True:
            with self._lock:
                state = self._cache.get(ck)
                if state is not None:
                    self._cache.move_to_end(ck)
                    made[ck] = state
                    return state
                fut = self._making.get(ck)
                mine = fut is None
                if mine:
                    fut = self._making[ck] = Future()
            if not mine:
                try:
                    made[ck] = fut.result()
                    return made[ck]
                except BaseException:  # that thread failed or was cancelled: try again here  # noqa: BLE001
                    _check(cancel)
                    continue
            try:
                state = self._materialise(path, cancel, lead)
            except BaseException as e:
                with self._lock:
                    self._making.pop(ck, None)
                fut.set_exception(e)
                raise
            with self._lock:
                while self._cache and len(self._cache) >= self._cache_size:
                    self._cache.popitem(last=False)
                self._cache[ck] = state
                self._making.pop(ck, None)
            fut.set_result(state)
            made[ck] = state
            return state

    def _materialise(self, path: str, cancel: Cancel | None = None, lead: int | None = None) -> dict[str, Any]:
        # the module is swapped to CPU tensors in place (its own only: children and the rest stay on meta, where
        # init calls do nothing); builds and matches wait meanwhile (transformers' init guard patches
        # torch.nn.init process-wide), other modules' fresh inits run beside unless one contains the other
        root = self.built.module
        with transformers_lock.shared() as shared:
            if not shared:  # this thread holds the lock exclusively: alone already
                return self._materialise_locked(path, cancel, lead, alone=True)
            with _module_slot(root, path):
                try:
                    return self._materialise_locked(path, cancel, lead, alone=False)
                except _Alone:
                    pass
        with self._lock:
            self.alone += 1
        with transformers_lock:  # no other fresh init, build or match: as one thread at a time
            return self._materialise_locked(path, cancel, lead, alone=True)

    def _materialise_locked(self, path: str, cancel: Cancel | None = None, lead: int | None = None, *,
                            alone: bool = True) -> dict[str, Any]:
        """``lead``: tensors whose first dimension is ``lead`` (a fused MoE's experts) are made with 1 there.
        ``alone``: no other fresh init runs (the global RNG is reseeded); else a generator of our own, and
        :class:`_Alone` raised when the init reaches another module's materialised tensors or the global RNG."""
        import torch

        root = self.built.module
        mod = root.get_submodule(path) if path else root
        chain = [root]  # root .. parent of mod
        parts = path.split(".") if path else []
        for i in range(1, len(parts)):
            chain.append(root.get_submodule(".".join(parts[:i])))
        originals: dict[tuple[str, str], Any] = {}
        fresh: dict[tuple[str, str], Any] = {}
        token = object()
        mine: list[int] = []
        try:
            for kind in ("_parameters", "_buffers"):
                store = getattr(mod, kind)
                for name, t in list(store.items()):
                    if t is None:
                        continue
                    shape = (1, *t.shape[1:]) if lead is not None and t.dim() >= 2 and t.shape[0] == lead else t.shape
                    new = torch.empty(shape, dtype=t.dtype, device="cpu")
                    flat = new.view(-1)
                    for i in range(0, flat.numel(), INIT_CHUNK):  # pre-filled piece by piece: cancel reaches here
                        _check(cancel)
                        flat[i : i + INIT_CHUNK].fill_(_sentinel(new))
                    if kind == "_parameters":
                        new = torch.nn.Parameter(new, requires_grad=t.requires_grad)
                    if not alone and new.numel():
                        ptr = new.untyped_storage().data_ptr()
                        _IN_FLIGHT[ptr] = token  # before the swap: another init reaching it sees it is ours
                        mine.append(ptr)
                    originals[(kind, name)] = t
                    store[name] = new
            seed = (self.seed * 1_000_003 + zlib.crc32(path.encode())) & 0x7FFF_FFFF
            if alone:
                with torch.random.fork_rng(devices=[]), torch.no_grad(), _ChunkedInit(cancel):
                    torch.manual_seed(seed)
                    self._run_init(mod, chain, guard=not transformers_lock.guarded())
            else:
                mode = _ChunkedInit(cancel, torch.Generator().manual_seed(seed), token)
                with torch.no_grad(), mode:
                    self._run_init(mod, chain, guard=False)
                if mode.alone:  # reached another module's tensors or the global RNG (an init swallowed _Alone)
                    raise _Alone(mode.alone)
            for key in originals:
                fresh[key] = getattr(mod, key[0])[key[1]].detach()
            # the module gets its meta tensors back below: the CPU tensors are ours, no copy needed (memory: the
            # module's own tensors once, whatever their size)
            return {name: (None if _untouched(v, cancel=cancel) else v) for (_kind, name), v in fresh.items()}
        finally:
            for (kind, name), t in originals.items():
                getattr(mod, kind)[name] = t
            for ptr in mine:
                _IN_FLIGHT.pop(ptr, None)

    def _run_init(self, mod: Any, chain: list[Any], guard: bool = True) -> None:
        from torch import nn

        # torch defaults first, as the module's constructor does
        if hasattr(mod, "reset_parameters") and not isinstance(mod, nn.MultiheadAttention):
            self._try(mod.reset_parameters, mod)
        elif isinstance(mod, nn.MultiheadAttention):
            self._try(mod._reset_parameters, mod)
        if not self.built.is_transformers:
            for anc in reversed(chain):  # nearest ancestor first (post-order, as construction)
                if hasattr(anc, "reset_parameters") and anc is not mod:
                    self._try(anc.reset_parameters, anc)
            return
        import contextlib

        from transformers import PreTrainedModel
        from transformers import initialization as hf_init

        full = chain + [mod]
        # the guard: entered once for all concurrent fresh inits (TransformersLock.shared), here when alone
        with hf_init.guard_torch_init_functions() if guard else contextlib.nullcontext():
            for depth in range(len(full) - 1, -1, -1):
                target = full[depth]
                pm = next((m for m in reversed(full[: depth + 1]) if isinstance(m, PreTrainedModel)), None)
                if pm is None:
                    continue
                self._try(lambda pm=pm, target=target: pm._init_weights(target), target)

    def _try(self, fn: Callable[[], Any], mod: Any) -> None:
        try:
            fn()
        except (Cancelled, _Alone):
            raise
        except Exception as e:  # an init that cannot run with meta neighbours; its own params stay unknown
            note = f"{type(mod).__name__}: init raised {type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
            with self._lock:
                if note not in self.notes:
                    self.notes.append(note)


class _Alone(BaseException):
    """A concurrent fresh init reached another module's materialised tensors or torch's global RNG: redo it alone.
    (BaseException: an init's own ``except Exception`` does not swallow it; the dispatch mode records it too.)"""


#: storages of the tensors concurrent fresh inits have swapped into their modules -> the init's token
_IN_FLIGHT: dict[int, object] = {}
_SLOTS = threading.Condition(threading.Lock())
_BUSY: dict[int, list[str]] = {}  # id(root module) -> module paths being materialised


def _nested(a: str, b: str) -> bool:
    """Whether module paths ``a`` and ``b`` are the same module or one contains the other ("" is the root)."""
    return a == b or not a or not b or a.startswith(b + ".") or b.startswith(a + ".")


@contextlib.contextmanager
def _module_slot(root: Any, path: str) -> Iterator[None]:
    """Held while ``path`` of the model ``root`` is materialised: never at once with itself, an ancestor or a
    descendant (an ancestor's ``_init_weights`` may reach its children's tensors; a module's own tensors are
    swapped in place)."""
    key = id(root)
    with _SLOTS:
        while any(_nested(p, path) for p in _BUSY.get(key, ())):
            _SLOTS.wait()
        _BUSY.setdefault(key, []).append(path)
    try:
        yield
    finally:
        with _SLOTS:
            busy = _BUSY[key]
            busy.remove(path)
            if not busy:
                del _BUSY[key]
            _SLOTS.notify_all()


def _chunked_init_mode() -> type:
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    aten = torch.ops.aten
    ops = {aten.normal_.default, aten.uniform_.default, aten.fill_.Scalar, aten.zero_.default}
    seeded = torch.Tag.nondeterministic_seeded

    class ChunkedInit(TorchDispatchMode):
        """On this thread only (dispatch modes are thread-local): the ATen ``normal_`` / ``uniform_`` / ``fill_``
        / ``zero_`` of a tensor over ``INIT_CHUNK`` values run piece by piece over its flat view, cancel checked
        between pieces — whichever init reaches them (torch's ``reset_parameters``, transformers'
        ``_init_weights``, kaiming / xavier all end in these). The values are the same as one call's: ``uniform_``
        draws one value per element in order; ``normal_`` fills uniforms in order and transforms them in blocks
        of 16, the last 16 redrawn when the size is not a multiple of 16 (pieces are multiples of 16, the last one
        takes the tail and is never shorter than 16); tests/core/test_fresh_chunks.py compares with transformers'
        own init.

        With ``generator`` (a concurrent fresh init): every seeded random op (ATen's ``nondeterministic_seeded``
        tag) called without a generator gets this one (or its overload that takes one: ``randn`` ->
        ``randn.generator``); the CPU generator seeded alike gives the same stream as the global one. An op that
        could still read the global generator, or that reaches a tensor another fresh init has swapped in
        (``_IN_FLIGHT``, not ``token``), raises :class:`_Alone` before it runs (and ``alone`` records why)."""

        def __init__(self, cancel: Cancel | None, generator: Any = None, token: object = None) -> None:
            super().__init__()
            self.cancel = cancel
            self.generator = generator
            self.token = token
            self.alone = ""

        def _refuse(self, why: str) -> None:
            self.alone = self.alone or why
            raise _Alone(why)

        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            kwargs = kwargs or {}
            if self.generator is not None:
                tensors = [x for x in tree_leaves((args, kwargs)) if isinstance(x, torch.Tensor)]
                for x in tensors:
                    if x.device.type == "cpu" and x.numel():
                        owner = _IN_FLIGHT.get(x.untyped_storage().data_ptr())
                        if owner is not None and owner is not self.token:
                            self._refuse(f"{func} reaches a tensor of a module another thread initialises")
                if seeded in func.tags and not self._on_meta(tensors, kwargs):
                    func, args, kwargs = self._with_generator(func, args, kwargs)
            t = args[0] if args else None
            chunk = INIT_CHUNK - INIT_CHUNK % 16
            if (func not in ops or not isinstance(t, torch.Tensor) or t.device.type != "cpu" or t.numel() <= chunk
                    or not t.is_contiguous()):
                return func(*args, **kwargs)
            flat, n, i = t.view(-1), t.numel(), 0
            while i < n:
                _check(self.cancel)
                j = min(n, i + chunk)
                if n - j < 16:
                    j = n
                func(flat[i:j], *args[1:], **kwargs)
                i = j
            return t

        @staticmethod
        def _on_meta(tensors: list[Any], kwargs: dict[str, Any]) -> bool:
            """A seeded op that draws nothing: on meta tensors (or making one)."""
            if tensors:
                return all(x.device.type == "meta" for x in tensors)
            dev = kwargs.get("device")
            return dev is not None and torch.device(dev).type == "meta"

        def _with_generator(self, func: Any, args: Any, kwargs: dict[str, Any]) -> tuple[Any, Any, dict[str, Any]]:
            names = [a.name for a in func._schema.arguments]
            if "generator" not in names:
                alt = getattr(func.overloadpacket, "generator", None)
                if alt is None or func._overloadname != "default":
                    self._refuse(f"{func} reads torch's global random generator")
                func, names = alt, [a.name for a in alt._schema.arguments]
            i = names.index("generator")
            if len(args) > i:
                if args[i] is None:
                    args = (*args[:i], self.generator, *args[i + 1 :])
            elif kwargs.get("generator") is None:
                kwargs = {**kwargs, "generator": self.generator}
            return func, args, kwargs

    return ChunkedInit


def _ChunkedInit(cancel: Cancel | None, generator: Any = None, token: object = None) -> Any:  # noqa: N802 (a context manager, used as a class)
    global _CHUNKED
    if _CHUNKED is None:
        _CHUNKED = _chunked_init_mode()
    return _CHUNKED(cancel, generator, token)


_CHUNKED: Any = None


def _check(cancel: Cancel | None) -> None:
    """Between chunks of one big tensor: stop when asked (the :mod:`explorer.core.jobs` protocol)."""
    if cancel is not None and is_cancelled(cancel):
        raise Cancelled("cancelled")


def _sentinel(t: Any) -> Any:
    """What a tensor is pre-filled with before the init runs: NaN, False, or an integer no init writes."""
    if t.is_floating_point() or t.is_complex():
        return math.nan
    import torch

    if t.dtype == torch.bool:
        return False
    return _INT_SENTINEL if t.element_size() >= 4 else 0


def _untouched(v: Any, chunk: int = 1 << 22, *, cancel: Cancel | None = None) -> bool:
    """True when no init wrote ``v``: every value is still the pre-fill sentinel. Checked in chunks that start small
    and double up to ``chunk``, so a written tensor answers False after its first few thousand values and no
    temporary the size of the tensor is made."""
    import torch

    if not v.numel():
        return False
    flat = v.reshape(-1)
    s = _sentinel(v)
    floating = v.is_floating_point() or v.is_complex()
    i, n, step = 0, flat.numel(), min(4096, chunk)
    while i < n:
        _check(cancel)
        c = flat[i : i + step]
        if floating:
            if not bool(torch.isnan(c).all()):
                return False
        elif bool((c != s).any()):
            return False
        i += step
        step = min(step * 2, chunk)
    return True


def _built(spec_or_built: ModelSpec | BuiltModel, checkpoint_dtype: str | None = None, cancel: Any = None) -> BuiltModel:
    if isinstance(spec_or_built, BuiltModel):
        return spec_or_built
    return build_model(spec_or_built, checkpoint_dtype=checkpoint_dtype, cancel=cancel)


def fresh_tensor(spec_or_built: ModelSpec | BuiltModel | FreshInit, key: str, *, seed: int = 0) -> torch.Tensor:
    """The model's own fresh initialisation of ``key`` (a model state-dict key), seeded, on CPU.

    Only the owning module's own tensors are materialised. Pass a FreshInit to reuse its cache.
    Raises ConfigError for an unknown key or when no initialisation sets the tensor.
    """
    fi = spec_or_built if isinstance(spec_or_built, FreshInit) else FreshInit(_built(spec_or_built), seed=seed)
    t = fi.tensor(key)
    if t is None:
        raise ConfigError(f"{fi.built.class_name}: {key!r}: no initialisation sets this tensor (not in _init_weights/reset_parameters)")
    return t


# --------------------------------------------------------------------------------------------- KS test


def sample_values(flat: Any, *, k: int = MAX_SAMPLES, seed: int = 0, round_to: Any = None) -> Any:
    """≤ k values of a flat tensor as float32 (finite only), sampled deterministically; ``round_to``: a dtype each
    sampled value is rounded to first (a fresh init rounded like the checkpoint), without a full-size copy.

    Without replacement up to 16M elements (duplicates would make the KS p-value anti-conservative), with
    replacement beyond (duplicates are then < 1 %)."""
    import torch

    import numpy as np

    n = flat.numel()
    if n <= k:
        x = flat
    else:
        rng = np.random.default_rng(seed)
        # Generator.choice without replacement is O(k) for k << n (Floyd's algorithm)
        idx = rng.choice(n, size=k, replace=False) if n <= 1 << 24 else rng.integers(0, n, size=k)
        idx.sort()  # mmap locality
        x = flat[torch.from_numpy(idx)]
    if round_to is not None:
        x = x.to(round_to)
    x = x.to(torch.float32)
    return x[torch.isfinite(x)]


def _std(x: Any) -> float:
    """The sample standard deviation (n - 1) in float64, summed in one fixed order (numpy's pairwise sum): torch's
    reduction splits the sum over its intra-op threads, so its last bits depended on how many a worker had."""
    import numpy as np

    return float(np.std(x.numpy().astype(np.float64), ddof=1)) if x.numel() > 1 else 0.0


def ks_2samp(x: Any, y: Any) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov: (D, asymptotic p-value). Inputs are 1-D float tensors."""
    import numpy as np

    n, m = x.numel(), y.numel()
    if n == 0 or m == 0:
        return 1.0, 0.0
    xs = np.sort(x.detach().cpu().numpy().astype(np.float64))
    ys = np.sort(y.detach().cpu().numpy().astype(np.float64))
    allv = np.concatenate([xs, ys])
    cdf_x = np.searchsorted(xs, allv, side="right") / n
    cdf_y = np.searchsorted(ys, allv, side="right") / m
    d = float(np.abs(cdf_x - cdf_y).max())
    en = math.sqrt(n * m / (n + m))
    return d, _kolmogorov_q((en + 0.12 + 0.11 / en) * d)


def _kolmogorov_q(lam: float) -> float:
    """Q_KS(λ) = 2 Σ (-1)^(k-1) exp(-2 k² λ²) (Numerical Recipes' probks)."""
    if lam < 1e-3:
        return 1.0
    total, sign, prev = 0.0, 1.0, 0.0
    for k in range(1, 101):
        term = sign * 2.0 * math.exp(-2.0 * k * k * lam * lam)
        total += term
        if abs(term) <= 1e-10 * prev or abs(term) <= 1e-12 * total:
            return min(max(total, 0.0), 1.0)
        sign, prev = -sign, abs(term)
    return 1.0


# --------------------------------------------------------------------------------------------- init check


@dataclass(frozen=True)
class InitResult:
    """One checkpoint tensor against its fresh init.

    ``kind``: "random" (KS test), "constant" (exact check), "buffer" (not learned; never init_like),
    "skipped" (no model key, shape differs, no known init, or not a float tensor).
    ``score`` in [0, 1]: higher = more like a fresh init (KS p-value, or fraction equal to the constant).
    """

    name: str
    key: str | None
    init_like: bool
    score: float | None
    ks: float | None
    kind: str
    details: str = ""
    ckpt_std: float | None = None
    init_std: float | None = None
    status: Status | None = None  # how the tensor loads (the match report's status for it)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "key": self.key, "init_like": self.init_like, "score": self.score, "ks": self.ks,
                "kind": self.kind, "details": self.details, "checkpoint_std": self.ckpt_std, "init_std": self.init_std}


def compare_to_init(name: str, key: str | None, values: Any, fresh: Any, *, is_buffer: bool = False, seed: int = 0,
                    cancel: Cancel | None = None, piece: bool = False) -> InitResult:
    """Decide whether checkpoint ``values`` (flat tensor, any dtype) look like the ``fresh`` init tensor
    (``piece``: ``fresh`` is :meth:`FreshInit.piece`'s, distributed as ``values`` but not of its size)."""
    import torch

    if fresh is None:
        return InitResult(name, key, False, None, None, "skipped", "no initialisation known for this tensor")
    fresh = fresh.reshape(-1)
    if not piece and values.numel() != fresh.numel():
        return InitResult(name, key, False, None, None, "skipped", f"{values.numel()} values vs {fresh.numel()} in the model")
    if is_buffer or not (values.is_floating_point() and fresh.is_floating_point()):
        same = torch.equal(values.to(fresh.dtype), fresh) if values.numel() else True
        return InitResult(name, key, False, None, None, "buffer" if is_buffer else "skipped",
                          ("buffer (not learned); " if is_buffer else "not a float tensor; ") + ("equals its init" if same else "differs from its init"))
    if values.numel() == 0:
        return InitResult(name, key, False, None, None, "skipped", "empty tensor")
    # the init rounded like the checkpoint's dtype, chunk by chunk (no float32 copy of a 1B-value embedding)
    fmin, fmax = math.inf, -math.inf
    for s in range(0, fresh.numel(), 1 << 22):
        _check(cancel)
        lo, hi = torch.aminmax(fresh[s : s + (1 << 22)].to(values.dtype).to(torch.float32))
        fmin, fmax = min(fmin, float(lo)), max(fmax, float(hi))
    if fmin == fmax:
        c = fmin
        equal = 0
        for s in range(0, values.numel(), 1 << 22):
            _check(cancel)
            equal += int((values[s : s + (1 << 22)].to(torch.float32) == c).sum())
        frac = equal / values.numel()
        return InitResult(name, key, frac == 1.0, frac, None, "constant",
                          f"init is constant {c:g}; {frac:.1%} of values equal it")
    xs = sample_values(values, seed=seed)
    ys = sample_values(fresh, seed=seed + 1, round_to=values.dtype)
    d, p = ks_2samp(xs, ys)
    cstd, istd = _std(xs), _std(ys)
    like = p >= P_MIN
    return InitResult(name, key, like, p, d, "random",
                      f"KS D={d:.4f} p={p:.2g} (n={xs.numel()}, m={ys.numel()}); std {cstd:.4g} vs init {istd:.4g}", cstd, istd)


def iter_init_check(
    checkpoint: str | CheckpointIndex | TensorReader,
    spec: ModelSpec | None = None,
    *,
    key_mapping: dict[str, str] | None = None,
    seed: int = 0,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
    report: Any = None,
    workers: int | Any = None,
) -> Iterator[InitResult]:
    """Generator form of :func:`init_check`: yields each tensor's result, one owning module at a time.

    ``report``: the match report of this checkpoint against ``spec`` (and ``key_mapping``) when the caller has one
    (the window): it is not matched again. The model build polls ``cancel`` too. ``workers``: threads (an int;
    default every core), or an :class:`~explorer.core.parallel.Executor` (a Dask cluster): one work item per owning
    module (its fresh init, then each of its tensors' comparison); the results are the same for any workers."""
    from .matching import match
    from .model import module_tree, quiet_transformers
    from .parallel import Part, Span, WorkItem, executor_for, shareable
    from .target import resolve_model

    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed: expected a whole number >= 0, found {seed!r}")
    if isinstance(checkpoint, TensorReader):
        reader, owned = checkpoint, False
    else:
        index = checkpoint if isinstance(checkpoint, CheckpointIndex) else open_checkpoint(checkpoint)
        reader, owned = TensorReader(index), True
    index = reader.index
    token = ""
    try:
        spec = resolve_model(index, spec, required=True)
        tick = Ticker(len(index.tensors), progress, cancel)
        tick.check()
        dtype = index.first_float_dtype()
        with quiet_transformers():  # no "Loading weights" progress bar / load report on stderr
            built = _built(spec, dtype, cancel)
            tick.check()
            rep = report if report is not None else match(built, index, key_mapping=key_mapping,
                                                           tree=module_tree(built.module))
        tick.check()
        fi = FreshInit(built, seed=seed, cache_modules=1)
        ref = _ModelRef(spec if isinstance(spec, ModelSpec) else None, dtype, seed, _register(fi))
        token = ref.token
        groups: dict[str, list[tuple[str, str | None]]] = {}
        for name in index.tensors:
            ck = rep.checkpoint_keys.get(name)
            key = None
            if ck is not None and ck.status is Status.MATCHED and len(ck.targets) == 1:
                key = ck.targets[0]
            groups.setdefault(_split(key)[0] if key else "\0", []).append((name, key))
        # one slot per group, in the order the groups were first seen: the tensors no key was found for answered
        # here, every owning module a work item (its fresh init once, then its tensors' comparisons)
        slots: list[list[InitResult] | WorkItem] = []
        for path, members in groups.items():
            if path == "\0":
                done = []
                for name, _key in members:
                    ck = rep.checkpoint_keys.get(name)
                    why = f"status {ck.status.value}" if ck is not None else "not matched"
                    done.append(InitResult(name, None, False, None, None, "skipped", f"no single model key ({why})"))
                slots.append(done)
                continue
            parts = []
            for name, key in members:
                info = index.tensors[name]
                piece = How.CONVERTED in rep.checkpoint_keys[name].how  # one expert of a fused tensor
                parts.append(Part((Span(0, name, 0, info.numel, info.file, info.dtype),), (key, piece, fi.is_buffer(key))))
            slots.append(WorkItem(_init_kernel, tuple(parts), (ref,)))
        items = [s for s in slots if isinstance(s, WorkItem)]
        shared = type(reader) is TensorReader and shareable(index)
        executor = executor_for(workers, local_only=not shared)
        results = executor.map((index,) if shared else (reader,), items, cancel=cancel) if items else iter(())
        try:
            for slot in slots:
                if isinstance(slot, WorkItem):
                    tick.check()
                    done = list(next(results))
                else:
                    done = slot
                for res in done:
                    ck = rep.checkpoint_keys.get(res.name)
                    if ck is not None:
                        res = dataclasses.replace(res, status=ck.status)
                    yield res
                    tick.step(1)
        finally:
            close = getattr(results, "close", None)
            if close is not None:
                close()
    finally:
        if token:
            _unregister(token)
        if owned:
            reader.close()


@dataclass(frozen=True)
class _ModelRef:
    """Which fresh init an init-check work item needs (plain data): the caller's own (``token``, in its process),
    else — on a process or cluster worker — built there once from ``spec`` and ``dtype``, seeded with ``seed``."""

    spec: ModelSpec | None
    dtype: str | None
    seed: int
    token: str


_FRESH: dict[str, FreshInit] = {}  # the callers' fresh inits by token (this process), and those built on a worker
_FRESH_LOCK = threading.Lock()
_BUILT_ON_WORKER = 2  # a worker keeps the models of this many recent specs (a meta model: small)


def _register(fi: FreshInit) -> str:
    import os
    import uuid

    token = f"{os.getpid()}:{uuid.uuid4().hex}"
    with _FRESH_LOCK:
        _FRESH[token] = fi
    return token


def _unregister(token: str) -> None:
    with _FRESH_LOCK:
        _FRESH.pop(token, None)


def _fresh_for(ref: _ModelRef) -> FreshInit:
    """The caller's FreshInit (threads), or one built in this worker process from the spec (once per spec)."""
    import json

    with _FRESH_LOCK:
        fi = _FRESH.get(ref.token)
        if fi is not None:
            return fi
        if ref.spec is None:
            raise ExplorerError("this init check's model is not plain data (a built model): it runs in its own process only")
        key = "spec:" + json.dumps([ref.spec.to_json(), ref.dtype, ref.seed], sort_keys=True, default=str)
        fi = _FRESH.get(key)
        if fi is None:
            from .model import quiet_transformers

            with quiet_transformers():
                fi = FreshInit(build_model(ref.spec, checkpoint_dtype=ref.dtype), seed=ref.seed, cache_modules=1)
            built = [k for k in _FRESH if k.startswith("spec:")]
            for old in built[: max(0, len(built) - _BUILT_ON_WORKER + 1)]:
                del _FRESH[old]
            _FRESH[key] = fi
        return fi


def _init_kernel(readers: Any, item: Any) -> tuple[InitResult, ...]:
    """One owning module's tensors against its fresh init (made once, beside other workers' inits), each compared on this
    worker: ``part.options`` = (model key, a piece of a fused tensor, a buffer)."""
    fi = _fresh_for(item.options[0])
    seed = item.options[0].seed
    cancel = readers.cancel
    reader = readers.reader(0)
    _check(cancel)
    # the module's fresh init, once (one expert of a fused tensor: a fresh init of one expert's shape, never the
    # fused whole); then each tensor's comparison, cancel checked between the steps that take long
    made = fi.fresh_many([(p.options[0], p.options[1], p.spans[0].numel) for p in item.parts], cancel=cancel)
    out = []
    for part, fresh in zip(item.parts, made):
        sp = part.spans[0]
        key, piece, is_buffer = part.options
        _check(cancel)
        if piece and fresh is None:
            res = InitResult(sp.tensor, key, False, None, None, "skipped", converted_note(key))
        else:
            res = compare_to_init(sp.tensor, key, reader.flat(sp.tensor), fresh, is_buffer=is_buffer, seed=seed,
                                  cancel=cancel, piece=piece)
        reader.release(sp.tensor)  # the pages the comparison touched: memory stays about one module per worker
        out.append(res)
    del made
    return tuple(out)


def converted_note(key: str) -> str:
    """Why a piece of a fused tensor (converted on load) could not be compared with a fresh init."""
    return (f"one piece of {key}, fused on load, and not a slice along its first dimension: its fresh init "
            "would be the whole fused tensor, not made for one piece")


def init_check(
    checkpoint: str | CheckpointIndex | TensorReader,
    spec: ModelSpec | None = None,
    *,
    key_mapping: dict[str, str] | None = None,
    seed: int = 0,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
    report: Any = None,
    workers: int | Any = None,
) -> list[InitResult]:
    """Which checkpoint tensors look like the model's fresh initialisation ("looks untrained").

    ``spec`` defaults to the config.json beside the checkpoint. Names are on-disk names; the model key each
    loads into comes from the match report. ``progress(done, total)`` counts tensors. Raises ExplorerError
    subclasses for bad inputs and Cancelled on cancel. See the module docstring for the decision rule. ``workers``:
    threads (default every core) or an Executor (a Dask cluster); the results do not depend on it.
    """
    return list(iter_init_check(checkpoint, spec, key_mapping=key_mapping, seed=seed, progress=progress, cancel=cancel,
                                report=report, workers=workers))


def rollup_init(results: list[InitResult], *, depth: int | None = None) -> dict[str, tuple[int, int]]:
    """Per module group (see keys.layer_of): (init-like tensors, tensors checked), in first-seen order."""
    out: dict[str, tuple[int, int]] = {}
    for r in results:
        g = layer_of(r.name, depth=depth)
        a, b = out.get(g, (0, 0))
        out[g] = (a + int(r.init_like), b + int(r.kind in ("random", "constant")))
    return out


__all__ = ["FreshInit", "InitResult", "fresh_tensor", "init_check", "iter_init_check", "compare_to_init", "ks_2samp",
           "sample_values", "rollup_init", "ExplorerError"]
