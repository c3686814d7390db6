"""A tied pair present on both sides of the checkpoint: from_pretrained compares the values and ties them only if
they are equal. The report must not claim the tie, and export must keep both values (the demo checkpoint has
``cls.predictions.decoder.bias`` and ``cls.predictions.bias`` with different values)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from explorer.core.export import export_checkpoint
from explorer.core.matching import report
from explorer.core.report import How
from explorer.core.model import ModelSpec
from explorer.core.plan import Plan
from tests.helpers import save_tiny

DEC, BIAS = "cls.predictions.decoder.bias", "cls.predictions.bias"


def _both_present(folder: Path, *, equal: bool, arch: str = "BertForMaskedLM") -> None:
    save_tiny("bert", arch, folder)
    sd = load_file(folder / "model.safetensors")
    assert DEC not in sd  # save_pretrained writes only the tie source
    sd[BIAS] = torch.linspace(-1, 1, sd[BIAS].numel())
    sd[DEC] = sd[BIAS].clone() if equal else sd[BIAS] + 0.5
    save_file(sd, folder / "model.safetensors", metadata={"format": "pt"})


def _loaded(folder: Path, arch: str = "BertForMaskedLM"):
    import transformers

    model, info = getattr(transformers, arch).from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    return model


@pytest.mark.parametrize("arch", ["BertForMaskedLM", "BertForPreTraining"])
def test_report_does_not_claim_a_tie_for_both_present_pair(tmp_path, arch):
    src = tmp_path / "src"
    _both_present(src, equal=False, arch=arch)
    rep = report(str(src), ModelSpec(config=str(src), arch=arch))
    dec, bias = rep.model_keys[DEC], rep.model_keys[BIAS]
    assert dec.tied_to is None and How.TIED not in dec.how and dec.sources == (DEC,)
    assert dec.tied_if_equal == BIAS and bias.tied_if_equal == DEC
    assert any(f"{DEC} and {BIAS}" in n and "only if their values are equal" in n for n in rep.notes)
    js = rep.to_json()
    row = next(m for m in js["matched"] if m["key"] == DEC)
    assert row["tied_to"] is None and row["tied_if_equal"] == BIAS
    # a key really loaded through a tie still says so
    emb = rep.model_keys["cls.predictions.decoder.weight"]
    assert How.TIED in emb.how and emb.tied_to == "bert.embeddings.word_embeddings.weight"
    assert emb.tied_if_equal is None


def test_plain_save_pretrained_has_no_both_present_note(tmp_path):
    save_tiny("bert", "BertForMaskedLM", tmp_path / "m")
    rep = report(str(tmp_path / "m"), ModelSpec(config=str(tmp_path / "m")))
    assert not any("only if their values are equal" in n for n in rep.notes)
    assert all(m.tied_if_equal is None for m in rep.model_keys.values())


@pytest.mark.parametrize("arch", ["BertForMaskedLM", "BertForPreTraining"])
def test_export_keeps_both_values_of_an_untied_pair(tmp_path, arch):
    src = tmp_path / "src"
    _both_present(src, equal=False, arch=arch)
    ref = _loaded(src, arch)
    out = tmp_path / "out"
    res = export_checkpoint(str(src), Plan.from_report(report(str(src), ModelSpec(config=str(src), arch=arch))), out)
    assert res.is_clean
    written = load_file(out / "model.safetensors")
    srcd = load_file(src / "model.safetensors")
    assert written[DEC].numpy().tobytes() == srcd[DEC].numpy().tobytes()  # byte-identical
    got = _loaded(out, arch)
    head, ref_head = got.cls.predictions, ref.cls.predictions
    assert torch.equal(head.decoder.bias, ref_head.decoder.bias)
    assert torch.equal(head.bias, ref_head.bias)
    assert not torch.equal(head.decoder.bias, head.bias)
    assert torch.equal(head.decoder.bias, srcd[DEC]) and torch.equal(head.bias, srcd[BIAS])


def test_export_skips_a_target_equal_to_its_tie_source(tmp_path):
    src = tmp_path / "src"
    _both_present(src, equal=True)
    out = tmp_path / "out"
    res = export_checkpoint(str(src), Plan.from_report(report(str(src), ModelSpec(config=str(src)))), out)
    assert res.is_clean and res.counts["tied"] == 2  # decoder.weight and decoder.bias, as save_pretrained
    assert DEC not in load_file(out / "model.safetensors")
    got = _loaded(out)
    assert torch.equal(got.cls.predictions.decoder.bias, load_file(src / "model.safetensors")[BIAS])
