"""The summary line over the views: what was opened, the verdict, the counts, the trouble, a key-mapping hint."""
from __future__ import annotations

import html
import os
import re
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QWidget

from ...core.fmt import human_count, safe_text
from ..kinds import LOADED, NOT_MODEL_KEYS, TROUBLE, Kind
from .. import palette
from ..models.entries import fmt_percent

WELCOME = ("<b>Open a checkpoint</b> (Ctrl+O) or drop a file or folder here — with its config.json beside it, "
           "every key is checked against the model class. No data? Try <b>File › Open demo</b>.")


LONG_WORD = 32  # characters: a name this long gets break opportunities


def _esc(s: Any) -> str:
    """Text from a file for a rich-text label: control/bidi characters escaped visibly, then HTML-escaped; in a
    long name (``LONG_WORD``) a break opportunity (``&#8203;``, the zero-width space as an entity) after each dot,
    underscore and slash, so it wraps instead of widening the summary, and the window with it."""
    out = html.escape(safe_text(s))
    return " ".join(re.sub(r"([._/])", r"\1&#8203;", w) if len(w) > LONG_WORD else w for w in out.split(" "))


def loading_html(what: str) -> str:
    return (f"<b>Opening</b> {_esc(what)} … <span style='color:{palette.MUTED_TEXT}'>"
            "reading headers, building the model on the meta device</span>")


def matching_html(index: Any) -> str:
    """The summary while a checkpoint's tensors are shown from its headers and its report is being made."""
    return (f"<b>{_esc(display_name(index))}</b> · {len(index.tensors):,} tensors read from the headers "
            f"<span style='color:{palette.MUTED_TEXT}'>· importing torch/transformers and matching against the "
            "model: the colours follow</span>")


def display_name(index: Any) -> str:
    """What the title and the summary call a checkpoint: its folder's name for a folder or a sharded index
    (``model.safetensors.index.json`` says nothing), else the file's name."""
    path = os.path.normpath(index.path)
    if os.path.basename(path).endswith(".index.json") or os.path.isdir(path):
        folder = os.path.basename(path if os.path.isdir(path) else os.path.dirname(path))
        if folder:
            return folder
    return os.path.basename(path)


def summary_html(loaded: Any) -> str:
    """The summary of a ``Loaded``: counts from the tree's roll-up (one place: model keys; the "(not in model)"
    branch: checkpoint tensors)."""
    rep = loaded.report
    counts = loaded.tree.counts
    n_keys = sum(v for k, v in counts.items() if k not in NOT_MODEL_KEYS)
    n_loading = sum(counts.get(k, 0) for k in LOADED)
    model = (f"<b>{_esc(rep.arch)}</b>" if rep.arch else
             f"<b>no model</b> <span style='color:{palette.look(Kind.IN_CHECKPOINT).text}'>(every tensor "
             f"{palette.look(Kind.IN_CHECKPOINT).glyph} in checkpoint, as stored; open a config to check loading)</span>")
    parts = [f"{_esc(display_name(rep.index))} → {model}"]
    if rep.has_model:
        top = next((c for c in loaded.tree.children if not c.group), None)
        total = top.numel if top is not None else 0
        fresh = top.fresh if top is not None else 0
        bad = sum(counts.get(k, 0) for k in TROUBLE)
        verdict = (f"<span style='color:{palette.look(Kind.MATCHED).text}'><b>✓ everything loads</b></span>" if rep.is_clean
                   else f"<span style='color:{palette.look(Kind.MISSING).text}'><b>{bad} key{'s' if bad != 1 else ''} need attention</b></span>")
        parts.append(verdict)
        parts.append(f"{n_loading}/{n_keys} model keys load · {human_count(total - fresh, digits=1)} params loaded · "
                     f"<b>{human_count(fresh, digits=1)}</b> newly initialised ({fmt_percent(100 * fresh / (total or 1))})")
        if rep.load_dtype:
            parts.append(f"loads as {rep.load_dtype}")
    else:
        parts.append(f"{len(rep.index.tensors):,} tensors, {human_count(rep.index.total_params, digits=1)} values")
    if rep.index.wrapper_key:  # the sub-dict of a wrapper pickle, and what was left aside
        parts.append(_esc(rep.index.wrapper_text()))
    text = " &nbsp;·&nbsp; ".join(parts)
    trouble = []
    for k, keys in ((Kind.MISSING, rep.missing), (Kind.MISMATCHED, [m[0] for m in rep.mismatched]), (Kind.UNEXPECTED, rep.unexpected)):
        if keys:
            lk = palette.look(k)
            shown = ", ".join(_esc(x) for x in list(keys)[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
            # non-breaking inside "+ unexpected:" and up to the first name: the label never dangles at a line end
            label = f"{lk.glyph}&nbsp;{lk.label.replace(' ', '&nbsp;')}:"
            trouble.append(f"<span style='color:{lk.text}'><b>{label}</b></span>&nbsp;{shown}")
    if trouble:
        text += "<br>" + " &nbsp;&nbsp; ".join(trouble)
    if rep.key_mapping:
        text += f" &nbsp;·&nbsp; key mapping: <code>{_esc(str(dict(rep.key_mapping)))}</code>"
    return text


def suggestion_html(rep: Any) -> str:
    """The suggested key mapping and what it would leave ('' when there is none)."""
    sugg = rep.suggested_key_mapping
    if not sugg:
        return ""
    eff = rep.suggestion_effect or {}
    txt = ", ".join(f"{k!s} → {v!r}" for k, v in sugg.items())
    after = f" (then {eff.get('missing', '?')} missing, {eff.get('unexpected', '?')} unexpected)" if eff else ""
    why = _esc((rep.suggestion_reason or "prefix trouble").capitalize())
    return f"{why} detected. Suggested key mapping: <code>{_esc(txt)}</code>{after}"


class SummaryBox(QFrame):
    """The summary line (rich text) and, when the report suggests one, the key mapping with its Apply button."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("summary")
        lay = QHBoxLayout(self)
        lay.setContentsMargins(8, 4, 8, 4)
        self.label = QLabel(WELCOME)
        self.label.setObjectName("summaryText")
        self.label.setTextFormat(Qt.TextFormat.RichText)
        self.label.setWordWrap(True)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.suggest_label = QLabel("")
        self.suggest_label.setObjectName("suggestion")
        self.suggest_label.setWordWrap(True)
        self.suggest_btn = QPushButton("Apply key mapping")
        self.suggest_btn.setToolTip("Recompute the report with the suggested key mapping")
        self.suggest_label.hide()
        self.suggest_btn.hide()
        lay.addWidget(self.label, 1)
        lay.addWidget(self.suggest_label)
        lay.addWidget(self.suggest_btn)

    def show_loaded(self, loaded: Any) -> None:
        self.label.setText(summary_html(loaded))
        sugg = suggestion_html(loaded.report)
        self.suggest_label.setText(sugg)
        self.suggest_label.setVisible(bool(sugg))
        self.suggest_btn.setVisible(bool(sugg))
