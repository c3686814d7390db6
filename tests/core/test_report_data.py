"""The report cache stores a Report as JSON data: read back on the same headers it is the very report matching made
(every key's status and how, the module tree, suggestions, notes, the family mismatch), for each kind of report."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from explorer.core.matching import report
from explorer.core.report import How
from explorer.core.report_data import from_data, to_data
from explorer.core.target import TargetSpec
from tests.helpers import save_tiny


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("reports")
    bert = root / "bert"
    save_tiny("bert", "BertModel", bert)
    prefixed = root / "prefixed"  # every name under "bert.": the prefix-trouble suggestion
    prefixed.mkdir()
    sd = load_file(bert / "model.safetensors")
    save_file({f"encoder_wrapper.{k}": v for k, v in sd.items()}, str(prefixed / "model.safetensors"), metadata={"format": "pt"})
    (prefixed / "config.json").write_text((bert / "config.json").read_text())
    gpt2 = root / "gpt2"  # tied lm_head
    save_tiny("gpt2", "GPT2LMHeadModel", gpt2)
    return {"bert": bert, "prefixed": prefixed, "gpt2": gpt2}


def disk_rows(rep) -> list | None:
    """A checkpoint-only report's module tree, node by node (DiskNode compares by identity)."""
    if rep.disk is None:
        return None
    return [(n.path, n.tensors, [c.path for c in n.children], n.n_tensors, n.n_params, n.nbytes, dict(n.dtypes))
            for n in rep.disk.walk()]


CASES = {  # name: (folder, TargetSpec options, what the case is about)
    "clean": ("bert", {}, lambda r: r.is_clean),
    "head on a base checkpoint (missing)": ("bert", {"arch": "BertForMaskedLM"}, lambda r: r.missing),
    "no model": ("bert", {"need_model": False}, lambda r: r.disk is not None and not r.has_model),
    "prefix trouble, suggested mapping": ("prefixed", {}, lambda r: r.suggested_key_mapping and r.unexpected),
    "prefix trouble, auto-fixed": ("prefixed", {"auto_fix": True}, lambda r: r.key_mapping and r.suggestion_effect),
    "key mapping": ("bert", {"key_mapping": {"^pooler\\.": "pool."}}, lambda r: r.key_mapping),
    "another family": ("bert", {"arch": "GPT2Model"}, lambda r: r.family is not None),
    "tied lm_head": ("gpt2", {}, lambda r: any(How.TIED in k.how for k in r.model_keys.values())),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_report_read_back_is_the_report_matching_made(folders, case):
    name, kw, about = CASES[case]
    rep = report(TargetSpec(checkpoint=str(folders[name]), **kw).resolve())
    assert about(rep)
    data = to_data(rep)
    assert data is not None
    back = from_data(json.loads(json.dumps(data)), rep.index)  # through JSON text, as the cache stores it
    assert replace(back, disk=None) == replace(rep, disk=None)
    assert disk_rows(back) == disk_rows(rep)
    assert back.to_json() == rep.to_json() and back.counts() == rep.counts() and back.params_loaded() == rep.params_loaded()


def test_malformed_data_is_refused(folders):
    rep = report(TargetSpec(checkpoint=str(folders["bert"])).resolve())
    data = json.loads(json.dumps(to_data(rep)))
    bad = dict(data, checkpoint_keys=data["checkpoint_keys"] + [["not.in.the.checkpoint", "matched", [], [], "x"]])
    with pytest.raises(KeyError):
        from_data(bad, rep.index)
    with pytest.raises(ValueError):
        from_data(dict(data, format=0), rep.index)
    with pytest.raises((ValueError, KeyError)):  # not a status
        from_data(dict(data, model_keys=[["k", "loaded", [], [1], "float32", [], None, None, None, False, None]]), rep.index)
