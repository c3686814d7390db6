"""peft itself as the oracle: what PeftModel.from_pretrained / load_adapter report on real files."""
from __future__ import annotations

import ast
import re
import warnings
from typing import Any

_MISMATCH = re.compile(r"- (\S+): found shape torch\.Size\(\[([\d, ]*)\]\) in the checkpoint and torch\.Size\(\[([\d, ]*)\]\)")
_MISSING = re.compile(r"Found missing adapter keys while loading the checkpoint: (\[.*\])\.", re.S)


def _shape(s: str) -> tuple[int, ...]:
    return tuple(int(x) for x in s.split(",") if x.strip())


def load_base(base_dir: str, arch: str):
    import transformers

    return getattr(transformers, arch).from_pretrained(base_dir)


def peft_sets(base_dir: str, adapter_dir: str, arch: str) -> dict[str, Any]:
    """missing / unexpected from load_adapter's load_result (the PeftModel from_pretrained builds), mismatched from
    its ignore_mismatched_sizes warning; plus from_pretrained's own missing-keys warning as a cross-check.
    An exception from peft is returned as {"error": type name}."""
    from peft import MODEL_TYPE_TO_PEFT_MODEL_MAPPING, PeftConfig, PeftModel

    out: dict[str, Any] = {}
    try:
        config = PeftConfig.from_pretrained(adapter_dir)
        config.inference_mode = True
        cls = MODEL_TYPE_TO_PEFT_MODEL_MAPPING.get(config.task_type, PeftModel) if config.task_type else PeftModel
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pm = cls(load_base(base_dir, arch), config, "default")
            lr = pm.load_adapter(adapter_dir, "default", ignore_mismatched_sizes=True)
    except Exception as e:  # noqa: BLE001
        return {"error": type(e).__name__, "message": str(e)}
    out["missing"] = set(lr.missing_keys)
    out["unexpected"] = set(lr.unexpected_keys)
    mm = set()
    for w in caught:
        for k, a, b in _MISMATCH.findall(str(w.message)):
            mm.add((k, _shape(a), _shape(b)))
    out["mismatched"] = mm
    out["model"] = pm
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        PeftModel.from_pretrained(load_base(base_dir, arch), adapter_dir, ignore_mismatched_sizes=True)
    fp_missing: set[str] = set()
    for w in caught:
        m = _MISSING.search(str(w.message))
        if m:
            fp_missing |= set(ast.literal_eval(m.group(1)))
    out["from_pretrained_missing"] = fp_missing
    return out
