"""Checkpoint A vs B on the real MiniLM and variants written to tmp_path; expectations computed with torch."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from explorer.core.diff import diff_checkpoints, module_rollup, pair_keys
from explorer.core.keys import layer_of

Q = "encoder.layer.0.attention.self.query.weight"
K = "encoder.layer.2.intermediate.dense.weight"


@pytest.fixture(scope="module")
def base(minilm: str) -> dict[str, torch.Tensor]:
    return load_file(str(Path(minilm) / "model.safetensors"))


def _write(folder: Path, sd: dict[str, torch.Tensor]) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in sd.items()}, folder / "model.safetensors")
    return str(folder / "model.safetensors")


def _by_name(entries):
    return {e.name: e for e in entries}


def _figures64(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float, float]:
    """(‖B−A‖/‖A‖, cosine, max|B−A|) of the values as stored, computed in float64."""
    a, b = a.reshape(-1).double(), b.reshape(-1).double()
    return float((b - a).norm() / a.norm()), float(a @ b / (a.norm() * b.norm())), float((b - a).abs().max())


def test_identical_checkpoints_are_all_same(minilm: str, tmp_path: Path) -> None:
    shutil.copy(Path(minilm) / "model.safetensors", tmp_path / "copy.safetensors")
    entries = diff_checkpoints(minilm, tmp_path / "copy.safetensors")
    assert len(entries) == 104 and {e.status for e in entries} == {"same"}


def test_scaled_and_perturbed_tensors_get_torch_figures(minilm: str, base, tmp_path: Path) -> None:
    sd = dict(base)
    sd[Q] = base[Q] * 1.1
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(base[K].shape, generator=g) * 0.01
    sd[K] = base[K] + noise
    del sd["pooler.dense.bias"]
    sd["classifier.weight"] = torch.zeros(2, 384)
    sd["embeddings.LayerNorm.weight"] = torch.ones(7)
    progress = []
    entries = _by_name(diff_checkpoints(minilm, _write(tmp_path / "b", sd), chunk_elems=50_000,
                                        progress=lambda d, t: progress.append((d, t))))
    # oracle: the figures of the float32 values on disk, in float64. diff sums exact float64 products in float64
    # (chunks of 50k here, slices inside), the oracle in another order: both within ~n·2^-53 ≈ 2e-11 (n = 147k)
    q = entries[Q]
    assert q.status == "changed"
    rel, cos, mx = _figures64(base[Q], sd[Q])
    assert q.rel_change == pytest.approx(rel, rel=1e-9) and q.rel_change == pytest.approx(0.1, rel=1e-5)
    assert q.cosine == pytest.approx(cos, abs=1e-9) and q.cosine == pytest.approx(1.0, abs=1e-9)  # was 0.9999987
    assert q.max_abs_diff == pytest.approx(mx, rel=1e-12)  # the difference of two float32 values is exact in float64
    k = entries[K]
    rel, cos, mx = _figures64(base[K], sd[K])
    assert k.rel_change == pytest.approx(rel, rel=1e-9)
    assert k.cosine == pytest.approx(cos, abs=1e-9)
    assert k.max_abs_diff == pytest.approx(mx, rel=1e-12)
    assert entries["pooler.dense.bias"].status == "only_a"
    assert entries["classifier.weight"].status == "only_b"
    ln = entries["embeddings.LayerNorm.weight"]
    assert ln.status == "shape_mismatch" and ln.shape_a == (384,) and ln.shape_b == (7,)
    assert sum(e.status == "same" for e in entries.values()) == 104 - 4
    assert progress[-1][0] == progress[-1][1]
    roll = {m.prefix: m for m in module_rollup(entries.values())}
    assert roll["encoder.layer.0"].n_changed == 1 and roll["encoder.layer.1"].n_changed == 0
    assert roll["encoder.layer.1"].rel_change == 0.0
    layer0 = [v for n, v in base.items() if n.startswith("encoder.layer.0.")]
    expected = float((base[Q].double() * 0.1).norm() / torch.sqrt(sum(v.double().norm() ** 2 for v in layer0)))
    assert roll["encoder.layer.0"].rel_change == pytest.approx(expected, rel=1e-5)


def test_prefixed_copy_is_paired_through_a_detected_mapping(minilm: str, base, tmp_path: Path) -> None:
    sd = {"module." + k: v for k, v in base.items()}
    sd["module." + Q] = base[Q] * 1.1
    entries = diff_checkpoints(minilm, _write(tmp_path / "ddp", sd))
    assert len(entries) == 104
    changed = [e for e in entries if e.status != "same"]
    assert [e.name for e in changed] == [Q] and changed[0].name_b == "module." + Q
    # both sides prefixed differently: "bert." vs "module."
    p = pair_keys(["bert." + k for k in base], ["module." + k for k in base])
    assert p.mapping_a == {"^bert\\.": ""} and p.mapping_b == {"^module\\.": ""}
    # an explicit mapping is applied to both sides
    entries = diff_checkpoints(minilm, tmp_path / "ddp" / "model.safetensors", key_mapping={"^module\\.": ""})
    assert sum(e.status == "changed" for e in entries) == 1 and len(entries) == 104


def test_bf16_vs_fp32_compared_in_float32(minilm: str, base, tmp_path: Path) -> None:
    sd = {k: (v.to(torch.bfloat16) if v.is_floating_point() else v) for k, v in base.items()}
    entries = _by_name(diff_checkpoints(minilm, _write(tmp_path / "bf16", sd)))
    q = entries[Q]
    assert q.status == "changed" and q.dtype_a == "float32" and q.dtype_b == "bfloat16"
    a, b = base[Q].double(), base[Q].to(torch.bfloat16).double()
    assert q.rel_change == pytest.approx(float((b - a).norm() / a.norm()), rel=1e-4)
    assert q.rel_change < 4e-3  # bf16 rounding only
    assert entries["embeddings.position_ids"].status == "same"  # int64 on both sides
    # values that are exactly representable in bf16 compare as "same"
    assert entries["pooler.dense.bias"].status == "same"


def test_layer_grouping_is_prefix_safe() -> None:
    assert layer_of("encoder.layer.1.attention.self.query.weight") == "encoder.layer.1"
    assert layer_of("encoder.layer.10.output.dense.bias") == "encoder.layer.10"
    assert layer_of("embeddings.word_embeddings.weight") == "embeddings.word_embeddings"
    assert layer_of("bias") == "bias"
    assert layer_of("a.b.c.weight", depth=1) == "a"


def test_figures_do_not_depend_on_float32_summation_order(tmp_path: Path) -> None:
    """Millions of values in one chunk: any float32 accumulation (BLAS sdot, pairwise, lanes) is off by > 1e-7;
    float64 sums of exact float64 products are within ~n·2^-53 ≈ 5e-10 of the float64 oracle whatever the order."""
    g = torch.Generator().manual_seed(3)
    a = torch.randn(4_000_000, generator=g) * 0.02 + 0.01
    b = a * 1.1 + torch.randn(a.shape, generator=g) * 1e-4
    save_file({"w": a, "same": a.clone()}, tmp_path / "a.safetensors")
    save_file({"w": b, "same": a.clone()}, tmp_path / "b.safetensors")
    e = _by_name(diff_checkpoints(tmp_path / "a.safetensors", tmp_path / "b.safetensors"))
    rel, cos, mx = _figures64(a, b)
    assert e["w"].rel_change == pytest.approx(rel, rel=1e-9)
    assert e["w"].cosine == pytest.approx(cos, abs=1e-9)
    assert e["w"].max_abs_diff == pytest.approx(mx, rel=1e-12)
    assert e["w"].norm_a == pytest.approx(float(a.double().norm()), rel=1e-9)
    assert e["same"].status == "same" and e["same"].cosine == 1.0


def test_figures_cover_the_positions_finite_on_both_sides(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(4)
    a = torch.randn(3000, generator=g)
    b = a * 0.9 + 0.01 * torch.randn(3000, generator=g)
    a[5] = b[5] = float("nan")  # NaN on both sides: the same, not a difference
    b[7] = float("inf")  # differs as Inf
    a[9] = float("-inf")
    save_file({"w": a}, tmp_path / "a.safetensors")
    save_file({"w": b}, tmp_path / "b.safetensors")
    e = diff_checkpoints(tmp_path / "a.safetensors", tmp_path / "b.safetensors", chunk_elems=1000)[0]
    keep = torch.isfinite(a) & torch.isfinite(b)
    rel, cos, _mx = _figures64(a[keep], b[keep])
    assert e.status == "changed" and e.nonfinite == 2 and e.rel_change == float("inf")
    assert e.cosine == pytest.approx(cos, abs=1e-12)
    assert e.norm_a == pytest.approx(float(a[keep].double().norm()), rel=1e-12)
    assert e.diff_norm == float("inf") and rel < 1
