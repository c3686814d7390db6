"""PEFT adapter folders in the CLI: `report ADAPTER` (against its base, as peft loads it, header-only),
`stats ADAPTER` (the adapter's tensors and ΔW = scaling·B·A per LoRA module, streamed) and `init-check ADAPTER`
(each LoRA tensor against peft's own initialisation: lora_B still all zeros = untrained)."""
from __future__ import annotations

import argparse

from ..core.errors import ConfigError
from ..core.fmt import safe_text
from . import EXIT_FINDINGS, EXIT_OK
from .common import Style, collapse_indices, counts_line, human_count, print_json, print_key_sections


def run_report(args: argparse.Namespace) -> int:
    from ..core.adapter_match import match_adapter

    for opt in ("model", "key_mapping", "wrapper"):
        if getattr(args, opt, None):
            raise ConfigError(f"{args.checkpoint}: --{opt.replace('_', '-')} does not apply to an adapter (use --base / --config / --arch)")
    if getattr(args, "auto_fix", False) or getattr(args, "no_model", False):
        raise ConfigError(f"{args.checkpoint}: --auto-fix / --no-model do not apply to an adapter")
    rep = match_adapter(args.checkpoint, base=args.base, config=args.config, arch=args.arch, deltas=args.delta,
                        adapter_name=args.adapter_name or "default")
    if args.json:
        print_json(rep.to_json())
    else:
        print_text(rep)
    return EXIT_OK if rep.is_clean else EXIT_FINDINGS


def print_text(rep) -> None:  # rep: AdapterReport
    s = Style()
    t = safe_text
    af, idx = rep.adapter, rep.adapter.index
    summ = rep.summary()
    print(s(t(af.folder), "1"))
    print(f"  {t(rep.peft_type)} adapter, {idx.format}, {len(idx.tensors)} tensors, {human_count(rep.adapter_params)} params"
          + (f" ({summ['percent_of_base']:.3g}% of the base)" if summ["percent_of_base"] is not None else ""))
    weights = f", weights {t(rep.base.index.path)}" if rep.base.index is not None else ", no base weights (header-only)"
    print(f"  base: {t(rep.arch)} (config {t(rep.base.config)}, from {rep.base.origin}{weights}), loads in {rep.load_dtype}")
    print(f"  peft: {rep.peft_class}, r={t(summ['r'])}, lora_alpha={t(summ['lora_alpha'])}, target_modules={t(summ['target_modules'])}"
          + (", DoRA" if summ["use_dora"] else "") + (", rsLoRA" if summ["use_rslora"] else ""))
    for n in rep.notes:
        print(s(f"  note: {t(n)}", "2"))
    c = rep.counts()
    print(counts_line(c, s, f"  |  {len(rep.adapted)} modules adapted, {len(rep.modules_to_save)} saved whole"))
    for f in rep.findings:
        print()
        print(s(f"FINDING ({f.kind.value}): {t(f.message)}", "31"))
        for d in f.details:
            print(f"  {t(d)}")

    print_key_sections(s, ("MISSING — adapter weights peft leaves at their initialisation", list(rep.missing)),
                       ("UNEXPECTED — in the adapter file, not used", list(rep.unexpected)),
                       ("SHAPE MISMATCH — not loaded", list(rep.mismatched)), "adapter")
    if rep.adapted:
        groups: dict[tuple, list[str]] = {}
        for m in rep.adapted:
            groups.setdefault((m.layer, m.r, m.alpha, m.scaling, m.use_dora), []).append(m.path)
        print()
        print(s(f"ADAPTED ({len(rep.adapted)}):", "1"))
        for (layer, r, alpha, scaling, dora), paths in groups.items():
            extra = "".join(f" {k}={v:g}" for k, v in (("r", r), ("alpha", alpha), ("scaling", scaling)) if v is not None)
            print(f"  [{layer}{extra}{' DoRA' if dora else ''}]")
            for p in collapse_indices(paths):
                print(f"    {t(p)}")
    for m in rep.modules_to_save:
        how = "replaces the base weights (same shapes)" if m.replaces_base else (
            "shapes differ from the base" if m.replaces else "no base module of that name")
        print()
        print(f"modules_to_save {t(m.path)}: {human_count(m.n_params)} params, {how}")
    if rep.deltas:
        print()
        print_deltas(rep.deltas)


def adapter_report(args: argparse.Namespace, *, deltas: bool):
    from ..core.adapter_match import match_adapter

    return match_adapter(args.checkpoint, base=args.base, config=args.config, arch=args.arch, deltas=deltas,
                         adapter_name=args.adapter_name or "default")


def print_deltas(deltas) -> None:
    s = Style()
    print(s(f"ΔW = scaling·B·A ({len(deltas)} modules):", "1"))
    print(f"  {'module':56s} {'‖ΔW‖':>10s} {'‖ΔW‖/‖W‖':>10s} {'σ1':>10s} rank")
    for d in deltas:
        rel = f"{d.relative:.3e}" if d.relative is not None else "—"
        sv = f"{d.singular_values[0]:.3e}" if d.singular_values else "—"
        flag = "  untrained (lora_B = 0)" if d.untrained else ""
        print(f"  {safe_text(d.module)[:56]:56s} {d.norm:10.3e} {rel:>10s} {sv:>10s} {d.effective_rank:>4d}{flag}")
