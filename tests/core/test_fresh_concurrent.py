"""Fresh inits of different modules run at once on several threads (issue 14, "every core"), with exactly the values
one thread at a time gives: each module's init draws from its own generator seeded like the global one was; an init
that reaches another thread's module or torch's global RNG is redone alone; builds and matches exclude fresh inits;
transformers' init guard is entered once for all of them."""
from __future__ import annotations

import random
import threading
from pathlib import Path

import pytest
import torch

from explorer.core import fresh
from explorer.core.fresh import FreshInit
from explorer.core.model import BuiltModel, ModelSpec, build_model, transformers_lock
from tests.helpers import save_tiny


def _keys(built: BuiltModel) -> list[str]:
    m = built.module
    return [k for k, _ in m.named_parameters()] + [k for k, _ in m.named_buffers()]


def _alone(built: BuiltModel, keys: list[str], seed: int) -> dict[str, torch.Tensor | None]:
    """The oracle: every module made alone, the global RNG reseeded for it (the lock held exclusively: the code
    before concurrent inits)."""
    fi = FreshInit(built, seed=seed, cache_modules=1)
    with transformers_lock:
        return {k: fi.tensor(k) for k in keys}


def _same(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.view(-1).view(torch.uint8), b.view(-1).view(torch.uint8))


def _concurrently(fi: FreshInit, keys: list[str], threads: int, seed: int) -> dict[str, torch.Tensor | None]:
    order = list(keys)
    random.Random(seed).shuffle(order)
    out: dict[str, torch.Tensor | None] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for k in order[i::threads]:
                out[k] = fi.tensor(k)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    ts = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors
    return out


@pytest.mark.parametrize("arch", [("llama", "LlamaForCausalLM"), ("mixtral", "MixtralForCausalLM"), ("bert", "BertModel")])
def test_concurrent_fresh_inits_equal_one_at_a_time(tmp_path: Path, arch) -> None:
    save_tiny(*arch, tmp_path)
    built = build_model(ModelSpec(config=str(tmp_path)))
    keys = _keys(built)
    ref = _alone(built, keys, seed=5)
    assert sum(v is not None for v in ref.values()) > len(keys) // 2
    for threads in (2, 3):
        fi = FreshInit(built, seed=5, cache_modules=2)
        got = _concurrently(fi, keys, threads, seed=threads)
        bad = [k for k in keys if not _same(got[k], ref[k])]
        assert not bad, bad
        assert fi.alone == 0  # no init of these models reached another module or the global RNG
    # the shared meta model is left as it was, and torch.nn.init is torch's own again
    assert all(p.is_meta for p in built.module.parameters())
    from transformers.initialization import TORCH_INIT_FUNCTIONS

    assert torch.nn.init.normal_ is TORCH_INIT_FUNCTIONS["normal_"]


def test_two_modules_are_initialised_at_the_same_time(tmp_path: Path, monkeypatch) -> None:
    """Both threads are inside a module's init at once (a barrier both must reach: one lock around every init, as
    before, would time it out), and the values are still one-at-a-time's."""
    save_tiny("llama", "LlamaForCausalLM", tmp_path)
    built = build_model(ModelSpec(config=str(tmp_path)))
    a, b = "model.layers.0.mlp.gate_proj.weight", "model.layers.1.self_attn.q_proj.weight"
    ref = _alone(built, [a, b], seed=2)
    barrier = threading.Barrier(2, timeout=30)
    run_init = FreshInit._run_init

    def meeting(self, mod, chain, guard=True):
        barrier.wait()
        return run_init(self, mod, chain, guard)

    monkeypatch.setattr(FreshInit, "_run_init", meeting)
    fi = FreshInit(built, seed=2)
    got = _concurrently(fi, [a, b], 2, seed=0)
    assert _same(got[a], ref[a]) and _same(got[b], ref[b]) and fi.alone == 0


class _Pair(torch.nn.Module):
    """A parent whose own init reaches its children's tensors (as some ``_init_weights`` of a parent do)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Linear(40, 30)
        self.b = torch.nn.Linear(40, 30)

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.a.weight.normal_()
            self.b.weight.normal_()


class _GlobalRNG(torch.nn.Module):
    """An init only the global RNG can feed (``randint(low, high)``: no overload takes a generator)."""

    def __init__(self) -> None:
        super().__init__()
        self.c = torch.nn.Linear(8, 8)
        self.d = torch.nn.Linear(8, 8)

    def reset_parameters(self) -> None:
        pass


def _global_init(mod: torch.nn.Linear) -> None:
    with torch.no_grad():
        mod.weight.copy_(torch.randint(1, 100, mod.weight.shape).float())


def test_an_init_reaching_another_threads_module_is_redone_alone(monkeypatch) -> None:
    built = BuiltModel(module=_Pair().to("meta"), spec=ModelSpec(), dtype=torch.float32, class_name="_Pair")
    keys = ["a.weight", "b.weight", "a.bias", "b.bias"]
    ref = _alone(built, keys, seed=1)
    barrier = threading.Barrier(2, timeout=30)
    run_init = FreshInit._run_init
    met = threading.Event()

    def meeting(self, mod, chain, guard=True):
        if not met.is_set():  # both swapped in: the parent's init of one now reaches the other's tensor
            try:
                barrier.wait()
            except threading.BrokenBarrierError:
                pass
            met.set()
        return run_init(self, mod, chain, guard)

    monkeypatch.setattr(FreshInit, "_run_init", meeting)
    fi = FreshInit(built, seed=1)
    got = _concurrently(fi, ["a.weight", "b.weight"], 2, seed=0)
    assert _same(got["a.weight"], ref["a.weight"]) and _same(got["b.weight"], ref["b.weight"])
    assert fi.alone >= 1


def test_an_init_reading_the_global_rng_is_redone_alone(monkeypatch) -> None:
    monkeypatch.setattr(torch.nn.Linear, "reset_parameters", lambda self: _global_init(self))
    built = BuiltModel(module=_GlobalRNG().to("meta"), spec=ModelSpec(), dtype=torch.float32, class_name="_GlobalRNG")
    keys = ["c.weight", "d.weight"]
    ref = _alone(built, keys, seed=4)
    before = torch.random.get_rng_state()
    fi = FreshInit(built, seed=4)
    got = _concurrently(fi, keys, 2, seed=0)
    assert fi.alone == 2 and all(_same(got[k], ref[k]) for k in keys)
    assert torch.equal(torch.random.get_rng_state(), before)  # the caller's global RNG is left as it was


def test_builds_wait_for_fresh_inits_and_the_guard_is_entered_once() -> None:
    from transformers.initialization import TORCH_INIT_FUNCTIONS

    torch_normal = TORCH_INIT_FUNCTIONS["normal_"]
    first, second = transformers_lock.shared(), transformers_lock.shared()
    entered = threading.Event()
    built: list[str] = []

    def build() -> None:
        entered.set()
        with transformers_lock:
            built.append("built")
            assert torch.nn.init.normal_ is torch_normal  # never under the fresh inits' guard

    with first:
        assert torch.nn.init.normal_ is not torch_normal  # transformers' guarded normal_
        t = threading.Thread(target=build)
        t.start()
        entered.wait(10)
        with second:  # another fresh init of this thread's... (re-entrant while a build waits)
            assert torch.nn.init.normal_ is not torch_normal
        t.join(0.2)
        assert not built  # the build waits for the fresh init
    t.join(30)
    assert built == ["built"] and torch.nn.init.normal_ is torch_normal


def test_a_fresh_init_inside_a_build_section_runs_alone(tmp_path: Path) -> None:
    save_tiny("llama", "LlamaForCausalLM", tmp_path)
    built = build_model(ModelSpec(config=str(tmp_path)))
    key = "model.layers.0.mlp.up_proj.weight"
    plain = FreshInit(built, seed=0).tensor(key)
    with transformers_lock:
        inside = FreshInit(built, seed=0).tensor(key)
    assert _same(plain, inside)
    assert fresh._IN_FLIGHT == {} and fresh._BUSY == {}
