"""The optional C kernels of a statistics pass (explorer/core/_kernels.c): the same figures as the numpy kernels bit
for bit (NaN/Inf, ±0, denormals, constants, values at the top edge, float32/float64/bf16, several slices and
chunks), for 1 and 2 workers; ``CKPT_EXPLORER_NO_C_KERNEL=1`` forces the numpy code; where the extension is built
the fast path is what runs."""
from __future__ import annotations

import importlib.machinery
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from explorer.core import stats_kernels as sk
from explorer.core.checkpoint import open_checkpoint
from explorer.core.stats import aggregate_stats, stats_many, tensor_stats

HERE = Path(sk.__file__).resolve().parent
BUILT = any((HERE / f"_kernels{s}").is_file() for s in importlib.machinery.EXTENSION_SUFFIXES)
needs_c = pytest.mark.skipif(not BUILT, reason="the C extension is not built here (python setup.py build_ext --inplace)")


def _tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    big = torch.randn(sk.SLICE * 3 + 12_345, generator=g) * 0.02  # several slices, a short last one
    odd = torch.randn(sk.SLICE + 999, generator=g) * 5
    odd[::97] = 0.0
    odd[::101] = -0.0
    odd[5], odd[9_000], odd[sk.SLICE + 7] = float("nan"), float("inf"), float("-inf")
    den = torch.tensor([1e-45, -1e-45, 1.2e-38, -0.0, 0.0, 1.0, 1.0, 2.5] * 20_000)  # denormals, the max repeated
    f64 = torch.randn(sk.SLICE + 5, generator=g, dtype=torch.float64) * 1e3
    f64[17] = float("nan")
    halfnan = torch.randn(50_000, generator=g)
    halfnan[::2] = float("nan")
    edges = torch.tensor([-3.0, 3.0] + [0.1 * i for i in range(-30, 31)] * 1000)  # many values at lo and hi exactly
    return {
        "big": big, "odd": odd, "den": den, "f64": f64, "halfnan": halfnan, "edges": edges,
        "const": torch.full((sk.SLICE + 3,), 0.25), "allnan": torch.full((1000,), float("nan")),
        "negzero": torch.full((100,), -0.0), "one": torch.tensor([3.0]),
        "bf": (torch.randn(sk.SLICE + 77, generator=g) * 2).to(torch.bfloat16),
        "ints": torch.randint(-5, 5, (300_000,), generator=g),
        "cplx": torch.randn(40_000, generator=g, dtype=torch.complex64),
    }


def _both(monkeypatch: pytest.MonkeyPatch, fn):
    monkeypatch.delenv(sk.NO_C_ENV, raising=False)
    fast = fn()
    monkeypatch.setenv(sk.NO_C_ENV, "1")
    slow = fn()
    monkeypatch.delenv(sk.NO_C_ENV)
    return fast, slow


@needs_c
def test_c_kernels_equal_the_numpy_kernels_bit_for_bit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    t = _tensors()
    p = tmp_path / "m.safetensors"
    save_file(t, p)
    index = open_checkpoint(p)
    for workers in (1, 2):
        for chunk in (1 << 22, 100_000, sk.SLICE * 2 + 5):
            fast, slow = _both(monkeypatch, lambda: [s.to_json() for s in
                                                     stats_many(index, bins=256, chunk_elems=chunk, workers=workers)])
            assert fast == slow, (workers, chunk)
    for bins in (1, 7, 255, 1000):  # bins whose width arithmetic rounds differently
        for name in ("big", "odd", "den", "f64", "edges", "bf"):
            fast, slow = _both(monkeypatch, lambda: tensor_stats(index, name, bins=bins))
            assert fast == slow, (name, bins)
    # a pooled group of float32, bf16 and float64 (the bf16 chunks widened in C), with NaN in it
    names = ["big", "bf", "odd", "f64"]
    fast, slow = _both(monkeypatch, lambda: aggregate_stats(index, names, bins=64, workers=2))
    assert fast == slow
    # in-memory tensors (the serial path reads them without a copy)
    for name in ("big", "odd", "halfnan", "negzero"):
        fast, slow = _both(monkeypatch, lambda: tensor_stats(t[name], name))
        assert fast == slow, name


@needs_c
def test_c_histogram_is_torch_histc_and_moments_are_float64(tmp_path: Path) -> None:
    t = _tensors()
    for name in ("big", "odd", "den", "edges"):
        x = t[name]
        s = tensor_stats(x, name, bins=256)
        fin = x[torch.isfinite(x)]
        assert list(s.counts) == [int(c) for c in torch.histc(fin, bins=256, min=s.min, max=s.max)], name
        f = fin.to(torch.float64)
        assert s.mean == pytest.approx(float(f.mean()), rel=1e-12, abs=1e-15)
        assert s.std == pytest.approx(float(f.std(correction=0)), rel=1e-10)
        assert (s.min, s.max) == (float(fin.min()), float(fin.max()))
        assert s.zeros == float((x == 0).sum()) / x.numel()
        assert (s.nan, s.inf) == (int(torch.isnan(x).sum()), int(torch.isinf(x).sum()))
    assert math.copysign(1.0, tensor_stats(t["odd"], "odd").max) == 1.0
    neg = tensor_stats(t["negzero"], "z")
    assert neg.constant and neg.min == 0.0 and math.copysign(1.0, neg.min) == 1.0  # a zero min is +0, either path


@needs_c
def test_the_c_pairwise_sum_is_numpys() -> None:
    lib = sk.c_kernels()
    rng = np.random.default_rng(3)
    for n in [*range(1, 140), 255, 256, 257, 1000, 4097, 8193, sk.SLICE - 1, sk.SLICE]:
        a = rng.standard_normal(n) * 10.0 ** rng.integers(-8, 8, n)
        assert lib.ck_pairwise_f64(a.ctypes.data, n) == float(np.add.reduce(a)), n


@needs_c
def test_the_extension_is_what_runs_where_it_is_built(monkeypatch: pytest.MonkeyPatch) -> None:
    assert sk.c_kernels() is not None, "the C extension is built but does not load"
    calls = []
    real = sk._c_moments
    monkeypatch.setattr(sk, "_c_moments", lambda *a: (calls.append(1), real(*a))[1])
    s = tensor_stats(torch.randn(10_000), "x")
    assert calls and sum(s.counts) == 10_000


def test_the_env_var_forces_the_numpy_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(sk.NO_C_ENV, "1")
    assert sk.c_kernels() is None

    def boom(*a: object) -> None:
        raise AssertionError("the C kernel ran")

    monkeypatch.setattr(sk, "_c_moments", boom)
    x = torch.randn(50_000)
    s = tensor_stats(x, "x")
    assert s.mean == pytest.approx(float(x.double().mean()), rel=1e-12)
    assert list(s.counts) == [int(c) for c in torch.histc(x, bins=256, min=s.min, max=s.max)]
    monkeypatch.setenv(sk.NO_C_ENV, "0")  # 0 or empty: the C kernels again (where built)
    assert (sk.c_kernels() is not None) == BUILT


@needs_c
def test_data_changed_between_the_passes_is_a_one_line_error() -> None:
    lib = sk.c_kernels()
    a = np.array([0.0, 1.0, 2.0, 5.0], np.float32)  # 5 is outside the range pass 1 found
    c = np.zeros(9, np.int64)
    k, nz = np.zeros(1, np.int64), np.zeros(1, np.int64)
    m, q = np.zeros(1), np.zeros(1)
    got = lib.ck_moments(0, a.ctypes.data, 4, sk.SLICE, 0, 0, 0.0, 2.0, 8, c.ctypes.data, k.ctypes.data, m.ctypes.data,
                         q.ctypes.data, nz.ctypes.data)
    assert got == -2 and c.sum() <= 4


@needs_c
def test_a_safetensors_tensor_is_read_by_the_c_pass_itself_with_the_chunk_loops_figures(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # float32/float64/bf16 tensors of a safetensors file: one C call per span reads and measures it (no return to
    # Python per piece); the figures are those of the chunk loop that reads the same pieces one by one
    from explorer.core.parallel import Readers

    t = _tensors()
    p = tmp_path / "m.safetensors"
    save_file(t, p)
    index = open_checkpoint(p)
    calls: list[str] = []
    for name in ("_range_fd", "_moments_fd"):
        real = getattr(sk, name)
        monkeypatch.setattr(sk, name, lambda *a, real=real, name=name: (calls.append(name), real(*a))[1])
    for chunk in (1 << 22, 100_000, sk.SLICE * 2 + 5):
        calls.clear()
        direct = [s.to_json() for s in stats_many(index, bins=256, chunk_elems=chunk, workers=2)]
        assert calls.count("_range_fd") >= 9 and "_moments_fd" in calls, calls
        with monkeypatch.context() as m:
            m.setattr(Readers, "direct", lambda self, span: None)  # every span through the chunk loop
            looped = [s.to_json() for s in stats_many(index, bins=256, chunk_elems=chunk, workers=2)]
        assert direct == looped, chunk


@needs_c
def test_a_file_truncated_under_the_c_pass_is_a_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from explorer.core.checkpoint import TensorReader
    from explorer.core.errors import CheckpointError

    p = tmp_path / "m.safetensors"
    save_file({"w": torch.randn(sk.SLICE * 4)}, p)
    index = open_checkpoint(p)
    real = TensorReader.direct

    def truncating(self, name):  # the file passes the check, then shrinks before the C pass reads it
        d = real(self, name)
        os.truncate(p, p.stat().st_size // 2)
        return d

    monkeypatch.setattr(TensorReader, "direct", truncating)
    with pytest.raises(CheckpointError) as e:
        tensor_stats(index, "w")
    msg = str(e.value)
    assert str(p) in msg and "changed on disk" in msg and "\n" not in msg


@needs_c
def test_a_read_error_in_the_c_pass_names_the_file_and_tensor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from explorer.core.checkpoint import TensorReader
    from explorer.core.errors import CheckpointError

    p = tmp_path / "m.safetensors"
    save_file({"w": torch.randn(5000)}, p)
    index = open_checkpoint(p)
    real = TensorReader.direct
    w = os.open(tmp_path, os.O_RDONLY)  # a directory: pread fails with EISDIR
    try:
        monkeypatch.setattr(TensorReader, "direct", lambda self, name: (w, *real(self, name)[1:]))
        with pytest.raises(CheckpointError) as e:
            tensor_stats(index, "w")
    finally:
        os.close(w)
    msg = str(e.value)
    assert msg.startswith(f"{p}: cannot read tensor 'w': ") and "directory" in msg and "\n" not in msg


@needs_c
def test_16_and_8_bit_value_counts_in_c_equal_numpys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the one pass of a bf16 / fp16 / fp8 tensor counts its bit patterns; where the C kernel reads the file itself
    # (big spans into sub-histograms, small ones directly) every figure equals the numpy count's
    g = torch.Generator().manual_seed(3)
    big = torch.randn((1 << 20) + 4321, generator=g)
    t = {
        "bf": big.to(torch.bfloat16),
        "half": (big * 3).to(torch.float16),
        "f8": big[:300_000].to(torch.float8_e4m3fn),
        "small_bf": torch.randn(999, generator=g).to(torch.bfloat16),
        "nan_half": torch.tensor([1.0, float("nan"), float("inf"), -0.0, 0.0, 65504.0] * 1000).to(torch.float16),
    }
    p = tmp_path / "m.safetensors"
    save_file(t, p)
    index = open_checkpoint(p)
    calls: list[int] = []
    real = sk._values_fd
    monkeypatch.setattr(sk, "_values_fd", lambda *a: (calls.append(1), real(*a))[1])
    for workers in (1, 2):
        for chunk in (1 << 22, 100_003):
            calls.clear()
            fast, slow = _both(monkeypatch, lambda: [s.to_json() for s in
                                                     stats_many(index, bins=256, chunk_elems=chunk, workers=workers)])
            assert len(calls) >= len(t), calls  # the C count ran for every tensor (numpy ran the second time)
            assert fast == slow, (workers, chunk)
    h = tensor_stats(index, "half")
    ref = t["half"].float()
    assert h.numel == ref.numel() and h.min == float(ref.min()) and h.max == float(ref.max())
    assert list(h.counts) == [int(c) for c in torch.histc(ref, bins=256, min=h.min, max=h.max)]


@needs_c
def test_diff_in_c_equals_the_numpy_diff_bit_for_bit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A vs B where both are float32 / float64 / bf16 safetensors tensors: one C call per span pair reads both and
    # gives the figures of the numpy loop exactly (the same slices, numpy's pairwise sums, NaN/Inf dropped alike)
    from explorer.core import diff as diff_mod
    from explorer.core.diff import diff_checkpoints

    g = torch.Generator().manual_seed(11)
    big = torch.randn(sk.SLICE * 2 + 777, generator=g)
    a = {
        "big": big, "f64": big[:300_001].double() * 3, "bf": big[:200_000].to(torch.bfloat16),
        "mixed": big[:150_000].clone(), "same": big[:99_999].clone(), "zeros": torch.zeros(5000),
        "nan": torch.tensor([1.0, float("nan"), float("inf"), -0.0, 2.0] * 30_000),
    }
    b = {
        "big": big + 1e-3 * torch.randn(big.shape, generator=g), "f64": a["f64"] * (1 + 1e-9),
        "bf": (a["bf"].float() * 1.01).to(torch.bfloat16), "mixed": a["mixed"].double() + 1e-7,  # f32 vs f64
        "same": a["same"].clone(), "zeros": -torch.zeros(5000),  # -0.0 equals 0.0
        "nan": torch.tensor([1.5, float("nan"), 3.0, 0.0, float("-inf")] * 30_000),  # NaN/Inf at other places
    }
    save_file(a, tmp_path / "a.safetensors")
    save_file(b, tmp_path / "b.safetensors")
    calls: list[bool] = []
    real = diff_mod._diff_fd
    monkeypatch.setattr(diff_mod, "_diff_fd", lambda *x: (lambda r: (calls.append(r is not None), r)[1])(real(*x)))
    for workers in (1, 2):
        for chunk in (1 << 22, 100_000, sk.SLICE + 3):
            calls.clear()
            fast, slow = _both(monkeypatch, lambda: diff_checkpoints(tmp_path / "a.safetensors", tmp_path / "b.safetensors",
                                                                     chunk_elems=chunk, workers=workers))
            assert calls and all(calls) and len(calls) >= len(a), calls
            assert fast == slow, (workers, chunk)
    by = {e.name: e for e in fast}
    assert by["same"].status == "same" and by["zeros"].status == "same" and by["big"].status == "changed"
    assert by["nan"].nonfinite == 2 * 30_000  # inf vs 3 and 2 vs -inf; NaN vs NaN is not a difference
    x, y = a["big"].double(), b["big"].double()
    assert by["big"].rel_change == pytest.approx(float((y - x).norm() / x.norm()), rel=1e-12)
    assert by["big"].max_abs_diff == float((y - x).abs().max())


@needs_c
def test_a_b_file_truncated_under_the_c_diff_names_b(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from explorer.core.checkpoint import TensorReader
    from explorer.core.diff import diff_checkpoints
    from explorer.core.errors import CheckpointError

    x = torch.randn(sk.SLICE * 3)
    save_file({"w": x}, tmp_path / "a.safetensors")
    save_file({"w": x + 1}, tmp_path / "b.safetensors")
    pb = tmp_path / "b.safetensors"
    real = TensorReader.direct

    def truncating(self, name):  # B passes the check, then shrinks before the C diff reads it
        d = real(self, name)
        if Path(self.index.tensors[name].file) == pb:
            os.truncate(pb, pb.stat().st_size // 2)
        return d

    monkeypatch.setattr(TensorReader, "direct", truncating)
    with pytest.raises(CheckpointError) as e:
        diff_checkpoints(tmp_path / "a.safetensors", pb, workers=1)
    msg = str(e.value)
    assert msg.startswith(str(pb)) and "changed on disk" in msg and "\n" not in msg


@needs_c
def test_the_c_value_count_is_sparse_sorted_and_leaves_its_scratch_zero(tmp_path: Path) -> None:
    # spans of every size the kernel treats apart (a small one listed from its own values, a big one counted in
    # sub-histograms) give the patterns present in ascending order with numpy's counts; its per-thread scratch is
    # all zero after each, and after a read that failed
    from explorer.core.checkpoint import TensorReader
    from explorer.core.errors import CheckpointError
    from explorer.core.parallel import Readers, Span

    g = torch.Generator().manual_seed(5)
    t = {"bf": (torch.randn((1 << 20) + 77, generator=g) * 4).to(torch.bfloat16),
         "f8": torch.randn(70_000, generator=g).to(torch.float8_e5m2)}
    p = tmp_path / "m.safetensors"
    save_file(t, p)
    index = open_checkpoint(p)
    lib = sk.c_kernels()
    readers = Readers([index])
    try:
        for name, bits in (("bf", t["bf"].view(torch.int16).numpy().view(np.uint16)),
                           ("f8", t["f8"].view(torch.uint8).numpy())):
            for a, b in ((0, 1), (5, 12), (0, 8191), (100, 8292), (3, 300_003), (0, bits.size), (17, bits.size)):
                b = min(b, bits.size)
                span = Span(0, name, a, b, "", {"bf": "bfloat16", "f8": "float8_e5m2"}[name])
                keys, vals = sk._values_fd(lib, readers, span)
                want = np.bincount(bits[a:b], minlength=1 << (8 * bits.itemsize))
                assert list(keys) == list(np.flatnonzero(want)), (name, a, b)
                assert list(vals) == list(want[keys]), (name, a, b)
                assert not getattr(sk._DENSE, f"w{bits.itemsize}").any()
        os.truncate(p, p.stat().st_size // 2)  # the file shrinks under the pass: an error, the scratch still zero
        with pytest.raises(CheckpointError, match="changed on disk"):
            sk._values_fd(lib, readers, Span(0, "bf", 0, t["bf"].numel(), "", "bfloat16"))
        assert not sk._DENSE.w2.any()
    finally:
        readers.close()
    with pytest.raises(CheckpointError):  # and through the public pass, one line
        with TensorReader(index) as r:
            tensor_stats(r, "bf")
