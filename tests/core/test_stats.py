"""Streamed statistics: exact against torch on small tensors, odd tensors, a huge sparse file streamed."""
from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from explorer.core.checkpoint import TensorReader, open_checkpoint
from explorer.core.errors import CheckpointError
from explorer.core.jobs import Cancelled
from explorer.core.stats import aggregate_stats, stats_many, tensor_stats


def _check_against_torch(s, t: torch.Tensor) -> None:
    x = t.reshape(-1).to(torch.float64)
    fin = x[torch.isfinite(x)]
    assert s.numel == t.numel()
    assert s.nan == int(torch.isnan(x).sum())
    assert s.inf == int(torch.isinf(x).sum())
    # every sum is float64 (a float32 accumulation depends on the CPU's summation order): within ~n·2^-53 of the
    # float64 oracle (n ≤ 4M here), far inside these bounds
    assert s.mean == pytest.approx(float(fin.mean()), rel=1e-9, abs=1e-12)
    assert s.std == pytest.approx(float(fin.std(correction=0)), rel=1e-9)
    assert s.min == float(fin.min()) and s.max == float(fin.max())
    assert s.absmax == float(fin.abs().max())
    assert s.zeros == pytest.approx(float((x == 0).sum()) / x.numel())
    assert s.l2 == pytest.approx(float(fin.norm()), rel=1e-9)
    assert sum(s.counts) == fin.numel()
    assert len(s.edges) == len(s.counts) + 1


def test_stats_match_torch_across_chunks_with_nan_inf_and_zeros(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    t = torch.randn(1000, 37, generator=g) * 3 + 1
    t[0, :5] = 0
    t[10, 3] = float("nan")
    t[20, 4] = float("inf")
    t[30, 5] = float("-inf")
    save_file({"w": t, "h": t.half()}, tmp_path / "m.safetensors")
    with TensorReader(open_checkpoint(tmp_path / "m.safetensors")) as r:
        s = tensor_stats(r, "w", bins=64, chunk_elems=999)  # chunk boundaries mid-row
        _check_against_torch(s, t)
        assert s.shape == (1000, 37) and s.dtype == "float32" and len(s.counts) == 64
        # histogram equals torch.histc over the finite values
        fin = t[torch.isfinite(t)]
        assert list(s.counts) == [int(c) for c in torch.histc(fin, bins=64, min=s.min, max=s.max)]
        sh = tensor_stats(r, "h", chunk_elems=4096)
        _check_against_torch(sh, t.half())


def test_bf16_and_fp8_are_cast_to_float32() -> None:
    t = torch.linspace(-2, 2, 1001)
    for dt in (torch.bfloat16, torch.float8_e4m3fn):
        s = tensor_stats(t.to(dt), "x", chunk_elems=100)
        _check_against_torch(s, t.to(dt).float())
        assert s.dtype == str(dt).removeprefix("torch.")


def test_constant_tensor_is_one_bin_and_flagged() -> None:
    s = tensor_stats(torch.ones(384), "ln.weight")
    assert s.constant and s.counts == (384,) and s.edges[0] < 1.0 < s.edges[1]
    assert s.std == 0.0 and s.mean == 1.0 and s.zeros == 0.0


def test_integer_and_bool_tensors_get_integer_bins() -> None:
    s = tensor_stats(torch.arange(512).reshape(1, 512), "position_ids", bins=1024)
    assert s.integer and s.counts == (1,) * 512 and s.edges[0] == -0.5 and s.edges[-1] == 511.5
    _check_against_torch(s, torch.arange(512))
    big = tensor_stats(torch.arange(10_000), "ids", bins=16)  # wider range than bins: regular bins
    assert len(big.counts) == 16 and sum(big.counts) == 10_000
    b = tensor_stats(torch.tensor([True, False, True, True]), "mask")
    assert b.counts == (1, 3) and b.mean == 0.75


def test_empty_and_all_nan_tensors() -> None:
    e = tensor_stats(torch.empty(0, 5), "empty")
    assert e.numel == 0 and e.mean is None and e.counts == ()
    n = tensor_stats(torch.full((7,), float("nan")), "nan")
    assert n.nan == 7 and n.mean is None and n.counts == ()
    i = tensor_stats(torch.tensor([float("inf"), 1.0, 2.0]), "inf")
    assert i.inf == 1 and i.max == 2.0 and sum(i.counts) == 2


def test_aggregate_shares_one_range(minilm: str) -> None:
    names = ["encoder.layer.0.attention.self.query.weight", "encoder.layer.0.attention.self.key.weight"]
    with TensorReader(open_checkpoint(minilm)) as r:
        agg = aggregate_stats(r, names, bins=32)
        both = torch.cat([r.flat(n) for n in names])
    assert agg.name == "encoder.layer.0.attention.self" and agg.n_tensors == 2
    _check_against_torch(agg, both)


def test_stats_many_over_real_checkpoint(minilm: str) -> None:
    seen = []
    out = list(stats_many(minilm, ["embeddings.LayerNorm.weight", "embeddings.position_ids"], progress=lambda d, t: seen.append((d, t))))
    assert [s.name for s in out] == ["embeddings.LayerNorm.weight", "embeddings.position_ids"]
    assert out[1].integer and seen[-1][0] == seen[-1][1] == 2 * (384 + 512)


def test_unknown_name_is_a_one_line_error(minilm: str) -> None:
    with pytest.raises(CheckpointError, match="no tensor named 'nope'"):
        tensor_stats(minilm, "nope")


def _sparse_safetensors(path: Path, n: int) -> None:
    header = json.dumps({"big": {"dtype": "F32", "shape": [n], "data_offsets": [0, 4 * n]}}).encode()
    header += b" " * (-len(header) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header)
        f.truncate(8 + len(header) + 4 * n)  # data region is a hole: all zeros, no disk used


def test_huge_sparse_tensor_streams_with_progress_and_cancel(tmp_path: Path) -> None:
    n = 40_000_000
    p = tmp_path / "big.safetensors"
    _sparse_safetensors(p, n)
    calls: list[tuple[int, int]] = []
    with TensorReader(open_checkpoint(p)) as r:
        s = tensor_stats(r, "big", chunk_elems=1 << 22, progress=lambda d, t: calls.append((d, t)))
        assert s.numel == n and s.zeros == 1.0 and s.constant and s.counts == (n,) and s.l2 == 0.0
        assert len(calls) >= 10 and calls[-1] == (2 * n, 2 * n)
        assert all(b[0] >= a[0] for a, b in zip(calls, calls[1:]))
        polls = []

        def cancel() -> bool:
            polls.append(1)
            return len(polls) > 3

        with pytest.raises(Cancelled):
            tensor_stats(r, "big", chunk_elems=1 << 22, cancel=cancel)
        assert len(polls) < 10  # polled between chunks and stopped there: 10 chunks would have polled at least 10 times


def test_fixed_histogram_range_for_overlays() -> None:
    t = torch.linspace(-2, 2, 401)
    s = tensor_stats(t, "x", bins=4, hist_range=(-1.0, 1.0))
    assert s.edges == (-1.0, -0.5, 0.0, 0.5, 1.0)
    assert list(s.counts) == [int(c) for c in torch.histc(t, bins=4, min=-1, max=1)]
    assert s.min == -2.0  # moments still cover every value
    c = tensor_stats(torch.ones(10), "ln", bins=4, hist_range=(0.0, 2.0))
    assert c.counts == (0, 0, 10, 0)


def test_moments_are_float64_whatever_the_chunk() -> None:
    """4M values in one 4M chunk: a float32 sum of squares is off by > 1e-7 on any CPU; float64 is not."""
    g = torch.Generator().manual_seed(5)
    t = torch.randn(4_000_000, generator=g) * 0.02 + 3.0  # a large mean: deviations are small next to the values
    s = tensor_stats(t, "w", bins=8)
    _check_against_torch(s, t)


def test_fitted_bins_say_why_there_are_fewer_than_asked() -> None:
    # issue 10 finding 1: a 768-value bias at "bins 256" gave 27 bins without a word
    x = torch.randn(768, generator=torch.Generator().manual_seed(0))
    st = aggregate_stats(x, ["bias"], bins=256, fit=True)
    assert len(st.counts) == 27 == math.isqrt(768)
    assert st.bins_asked == 256
    assert "27 bins, 256 asked" in st.bins_note and "768 values" in st.bins_note
    assert st.to_json()["bins_note"] == st.bins_note
    # a big enough tensor gets what was asked, and nothing is said
    big = aggregate_stats(torch.randn(100_000), ["w"], bins=256, fit=True)
    assert len(big.counts) == 256 and big.bins_note == ""
    # without fit, the bins asked
    assert len(aggregate_stats(x, ["bias"], bins=256).counts) == 256
    # an integer tensor with a small range: one bin per value, said so
    ints = aggregate_stats(torch.tensor([0, 1, 2, 2, 3] * 100), ["ids"], bins=256)
    assert len(ints.counts) == 4 and "one bin per integer value from 0 to 3" in ints.bins_note
    const = aggregate_stats(torch.ones(50), ["ln"], bins=64)
    assert "1 bin, 64 asked" in const.bins_note and "same" in const.bins_note


def test_values_near_the_float32_limit_get_a_true_histogram(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # hi - lo overflows float32 here: torch.histc's float32 arithmetic then drops every value (NaN bins); the
    # histogram is binned in float64 instead (equal to torch.histc of the float64 values), with no warning
    import warnings

    from safetensors.torch import save_file

    from explorer.core import stats_kernels as sk

    x = torch.tensor([-3e38, 3e38, 0.0, 1e38, -1e38, 2e38, 3e38] * 1000, dtype=torch.float32)
    assert int(torch.histc(x, bins=6, min=float(x.min()), max=float(x.max())).sum()) == 0  # torch's own: nothing
    t = {"f32": x, "bf": x.to(torch.bfloat16)}
    save_file(t, tmp_path / "big.safetensors")
    for c_off in ("", "1"):
        monkeypatch.setenv(sk.NO_C_ENV, c_off)
        for name, v in t.items():
            for src in (v, tmp_path / "big.safetensors"):
                with warnings.catch_warnings():
                    warnings.simplefilter("error")
                    s = tensor_stats(src, name, bins=6)  # a tensor (name: its label) or a file (name: the tensor)
                ref = torch.histc(v.double(), bins=6, min=s.min, max=s.max)
                assert list(s.counts) == [int(c) for c in ref] and sum(s.counts) == v.numel(), (name, c_off, src)
