"""Plans: what to do with every key before training or export (keep / reinit / drop, trainable or frozen, LR scale).

A plan is data. It holds the defaults taken from a match report (missing and mismatched -> reinit, unexpected ->
drop, matched -> keep & trainable), an optional ``key_mapping`` (renames, as ``from_pretrained`` accepts), and an
ordered list of rules. A rule selects keys by glob, regex or key/module prefix and sets any of action, trainable
and lr_scale; later rules win, attribute by attribute. The rules themselves are saved, not only their expansion.

Pattern kinds (:class:`Rule` ``match``):

- ``glob``: ``*`` matches anything including dots, ``?`` one character, ``[0-5]`` / ``[!0-5]`` classes. The glob
  must match a whole run of dot-separated components of the key, so ``encoder.layer.[0-2]`` selects
  ``bert.encoder.layer.0.attention.self.query.weight`` but ``layer.1`` does not select ``layer.10``.
- ``regex``: a regular expression searched in the key (anchor with ``^``/``$`` yourself); ``re`` syntax, run by the
  ``regex`` package under a time budget (:class:`explorer.core.keys.UserPattern`), so a catastrophic pattern is an
  error, not a hang.
- ``key``: an exact key, or a module path selecting its subtree (``key == p or key.startswith(p + ".")``).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field, replace
from enum import Enum
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from . import resources
from .errors import PlanError
from .fmt import pattern_text
from .keys import KeyMapping, UserPattern, check_key_mapping, glob_to_regex, under

if TYPE_CHECKING:
    from .report import Report



@lru_cache(maxsize=1)
def _schema() -> dict[str, Any]:
    return resources.read_json(resources.PLAN_SCHEMA)


_PROPS = _schema()["properties"]  # the schema file states these
PLAN_VERSION: int = _PROPS["version"]["const"]
MATCH_KINDS: tuple[str, ...] = tuple(_PROPS["rules"]["items"]["properties"]["match"]["enum"])
#: rules in one plan file (each is matched against every key; real plans have tens): the schema's maxItems
MAX_PLAN_RULES: int = _PROPS["rules"]["maxItems"]


class Action(str, Enum):
    """What happens to a key's tensor."""

    KEEP = "keep"  # copy the checkpoint tensor (byte-identical on export)
    REINIT = "reinit"  # fresh values from the model's own init
    DROP = "drop"  # left out of the exported checkpoint


@dataclass(frozen=True)
class Rule:
    """Select keys by ``pattern`` (see module doc for ``match`` kinds) and set the given attributes."""

    pattern: str
    match: str = "glob"
    action: Action | None = None
    trainable: bool | None = None
    lr_scale: float | None = None

    def __post_init__(self) -> None:
        if self.match not in MATCH_KINDS:
            raise PlanError(f"rule {pattern_text(self.pattern)}: unknown match kind {self.match!r}, expected one of {', '.join(MATCH_KINDS)}")
        if self.action is not None and not isinstance(self.action, Action):
            object.__setattr__(self, "action", _action(self.action, f"rule {pattern_text(self.pattern)}"))
        if self.lr_scale is not None:
            ok = not isinstance(self.lr_scale, bool) and isinstance(self.lr_scale, (int, float))
            if not ok or not math.isfinite(self.lr_scale) or not self.lr_scale > 0:
                raise PlanError(f"rule {pattern_text(self.pattern)}: lr_scale must be a finite number > 0, found {self.lr_scale!r}")
            object.__setattr__(self, "lr_scale", float(self.lr_scale))
        if self.trainable is not None and not isinstance(self.trainable, bool):
            raise PlanError(f"rule {pattern_text(self.pattern)}: trainable must be true or false, found {self.trainable!r}")
        if self.action is None and self.trainable is None and self.lr_scale is None:
            raise PlanError(f"rule {pattern_text(self.pattern)}: sets nothing (give an action, trainable or lr_scale)")
        _compile(self.match, self.pattern)  # raises PlanError on a bad glob/regex

    def matches(self, key: str) -> bool:
        if self.match == "key":
            return under(key, self.pattern)
        return _compile(self.match, self.pattern).search(key)

    def select(self, keys: Iterable[str], *, budget: float | None = None) -> list[str]:
        """The keys this rule hits (for a live preview). Globs and regexes get one time budget for all keys
        (default :data:`explorer.core.keys.REGEX_BUDGET`); a slower pattern raises PlanError."""
        if self.match == "key":
            return [k for k in keys if self.matches(k)]
        return _compile(self.match, self.pattern).select(keys, budget=budget)

    def describe(self) -> str:
        parts = []
        if self.action is not None:
            parts.append(self.action.value)
        if self.trainable is not None:
            parts.append("train" if self.trainable else "freeze")
        if self.lr_scale is not None:
            parts.append(f"lr×{self.lr_scale:g}")
        return f"{self.match} {pattern_text(self.pattern)}: {', '.join(parts)}"

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"match": self.match, "pattern": self.pattern}
        if self.action is not None:
            d["action"] = self.action.value
        if self.trainable is not None:
            d["trainable"] = self.trainable
        if self.lr_scale is not None:
            d["lr_scale"] = self.lr_scale
        return d


@dataclass(frozen=True)
class Entry:
    """The effective plan for one key."""

    key: str
    action: Action
    trainable: bool = True
    lr_scale: float | None = None  # None: the base learning rate
    status: str | None = None  # the report's status for the key ("matched", "missing", ...)
    rule: int | None = None  # index of the rule that set the action; None = the default from the report
    is_model_key: bool = True  # False for checkpoint-only (unexpected) keys

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "action": self.action.value,
            "trainable": self.trainable,
            "lr_scale": self.lr_scale,
            "status": self.status,
            "rule": self.rule,
        }


@dataclass(frozen=True, kw_only=True)
class Plan:
    """A versioned, immutable plan. Build with :meth:`from_report`, refine with :meth:`with_rule`."""

    checkpoint: str | None = None
    config: str | None = None
    arch: str | None = None
    model: str | None = None  # "pkg.module:Class" for a plain nn.Module
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)
    wrapper: str | None = None
    key_mapping: Mapping[str, str] | None = None
    rules: tuple[Rule, ...] = ()
    default_reinit: tuple[str, ...] = ()  # model keys the report found missing or mismatched
    default_drop: tuple[str, ...] = ()  # checkpoint keys the report found unexpected (on-disk names)
    version: int = PLAN_VERSION
    origin: str | None = field(default=None, compare=False, repr=False)  # the file it was read from (for errors)

    # ------------------------------------------------------------------ building

    @classmethod
    def from_report(cls, report: Report) -> Plan:
        """Defaults from a match report: missing/mismatched -> reinit, unexpected -> drop, matched -> keep."""
        from .report import Status

        spec = report.spec
        reinit = [k for k, m in report.model_keys.items() if m.status in (Status.MISSING, Status.MISMATCHED)]
        drop = [c.name for c in report.checkpoint_keys.values() if c.status is Status.UNEXPECTED]
        return cls(  # absolute paths: a plan file is used from other working directories
            checkpoint=os.path.abspath(report.index.path),
            config=os.path.abspath(spec.config) if spec and spec.config else None,
            arch=report.arch if spec and spec.is_transformers else None,
            model=spec.model if spec else None,
            model_kwargs=dict(spec.model_kwargs) if spec else {},
            wrapper=report.index.wrapper_key,
            key_mapping=dict(report.key_mapping) if report.key_mapping else None,
            default_reinit=tuple(reinit),
            default_drop=tuple(drop),
        )

    def with_rule(
        self,
        pattern: str | Rule,
        *,
        match: str = "glob",
        action: Action | str | None = None,
        trainable: bool | None = None,
        lr_scale: float | None = None,
    ) -> Plan:
        """A new plan with one more rule at the end (it wins over earlier ones)."""
        rule = pattern if isinstance(pattern, Rule) else Rule(pattern, match, action, trainable, lr_scale)  # type: ignore[arg-type]
        return replace(self, rules=self.rules + (rule,))

    def without_rule(self, i: int) -> Plan:
        rules = list(self.rules)
        del rules[i]
        return replace(self, rules=tuple(rules))

    def with_key_mapping(self, key_mapping: Mapping[str, str] | None) -> Plan:
        return replace(self, key_mapping=dict(key_mapping) if key_mapping else None)

    def spec(self):  # -> ModelSpec
        """The transformers model the plan was made for: its config folder and class name (looked up as an
        attribute of the ``transformers`` package only).

        A plan is data and never names code to run: for a plan made with a custom class (``--model pkg:Class``)
        this raises PlanError telling the user to pass ``--model`` themselves if they trust that code."""
        from .model import ModelSpec

        if self.model:
            import shlex

            from .fmt import safe_text

            given = f"--model {shlex.quote(safe_text(self.model))}"
            if self.model_kwargs:
                given += f" --model-kwargs {shlex.quote(safe_text(json.dumps(dict(self.model_kwargs))))}"
            raise PlanError(
                f"{self.origin or 'plan'}: made with {given}; a plan never imports code: pass {given} yourself if you "
                "trust that code"
            )
        return ModelSpec(config=self.config, arch=self.arch)

    # ------------------------------------------------------------------ resolving

    def resolve(self, report: Report) -> dict[str, Entry]:
        """Effective entry per key: every persistent model key, then every unexpected checkpoint key.

        Defaults come from ``report`` (not from the stored defaults), then rules apply in order.
        """
        from .report import Status

        out: dict[str, Entry] = {}
        for k, m in report.model_keys.items():
            if m.status is Status.COMPUTED:
                continue
            default = Action.REINIT if m.status in (Status.MISSING, Status.MISMATCHED) else Action.KEEP
            out[k] = Entry(k, default, True, None, m.status.value)
        for c in report.checkpoint_keys.values():
            if c.status is Status.UNEXPECTED and c.name not in out:
                out[c.name] = Entry(c.name, Action.DROP, False, None, c.status.value, None, False)
        return self._apply_rules(out)

    def resolve_keys(self, keys: Iterable[str]) -> dict[str, Entry]:
        """Effective entry per key using the defaults stored in the plan (no report needed; for apply_plan)."""
        reinit = set(self.default_reinit)
        out = {k: Entry(k, Action.REINIT if k in reinit else Action.KEEP, True, None, None) for k in keys}
        return self._apply_rules(out)

    def _apply_rules(self, entries: dict[str, Entry]) -> dict[str, Entry]:
        keys = list(entries)
        for i, rule in enumerate(self.rules):
            for k in rule.select(keys):
                e = entries[k]
                kw: dict[str, Any] = {}
                if rule.action is not None and e.is_model_key:  # unexpected keys cannot be loaded: always dropped
                    kw["action"], kw["rule"] = rule.action, i
                if rule.trainable is not None and e.is_model_key:
                    kw["trainable"] = rule.trainable
                if rule.lr_scale is not None and e.is_model_key:
                    kw["lr_scale"] = rule.lr_scale
                if kw:
                    entries[k] = replace(e, **kw)
        return entries

    def rule_hits(self, keys: Iterable[str]) -> list[int]:
        """How many of ``keys`` each rule selects."""
        keys = list(keys)
        return [len(r.select(keys)) for r in self.rules]

    # ------------------------------------------------------------------ JSON

    def to_json(self) -> dict[str, Any]:
        from .version import __version__

        return {
            "version": self.version,
            "tool": f"checkpoint-explorer {__version__}",
            "source": {
                "checkpoint": self.checkpoint,
                "config": self.config,
                "arch": self.arch,
                "model": self.model,
                "model_kwargs": dict(self.model_kwargs),
                "wrapper": self.wrapper,
            },
            "key_mapping": dict(self.key_mapping) if self.key_mapping else None,
            "defaults": {"reinit": list(self.default_reinit), "drop": list(self.default_drop)},
            "rules": [r.to_json() for r in self.rules],
        }

    def sha256(self) -> str:
        """A stable hash of the plan's content (written into exported metadata)."""
        d = self.to_json()
        d.pop("tool", None)
        return hashlib.sha256(json.dumps(d, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

    @classmethod
    def from_json(cls, data: Any, *, source: str = "plan") -> Plan:
        """Validate and build. Raises PlanError with a one-line message."""
        validate_plan_json(data, source=source)
        src = data.get("source") or {}
        defaults = data.get("defaults") or {}
        rules = []
        for i, r in enumerate(data.get("rules") or []):
            try:
                rules.append(
                    Rule(
                        r["pattern"],
                        r.get("match", "glob"),
                        _action(r["action"], f"{source}: rules[{i}]") if r.get("action") is not None else None,
                        r.get("trainable"),
                        r.get("lr_scale"),
                    )
                )
            except PlanError as e:
                raise PlanError(f"{source}: rules[{i}]: {e}") from e
        return cls(
            checkpoint=src.get("checkpoint"),
            config=src.get("config"),
            arch=src.get("arch"),
            model=src.get("model"),
            model_kwargs=dict(src.get("model_kwargs") or {}),
            wrapper=src.get("wrapper"),
            key_mapping=check_key_mapping(data["key_mapping"], label=f"{source}: key_mapping", error=PlanError)
            if data.get("key_mapping") else None,
            rules=tuple(rules),
            default_reinit=tuple(defaults.get("reinit") or ()),
            default_drop=tuple(defaults.get("drop") or ()),
            version=data["version"],
            origin=source,
        )


# --------------------------------------------------------------------------------------------- patterns


def _action(value: Any, where: str) -> Action:
    try:
        return Action(value)
    except ValueError:
        raise PlanError(f"{where}: unknown action {value!r}, expected one of keep, reinit, drop") from None


@lru_cache(maxsize=512)
def _compile(kind: str, pattern: str) -> UserPattern:
    if not isinstance(pattern, str) or not pattern:
        raise PlanError(f"{kind} pattern must be a non-empty string, found {pattern!r}")
    if kind == "key":
        return UserPattern(re.escape(pattern), label=f"{kind} rule", error=PlanError, slow_error=PlanError)
    src = glob_to_regex(pattern) if kind == "glob" else pattern
    return UserPattern(src, label=f"{kind} rule {pattern_text(pattern)}" if kind == "glob" else f"{kind} rule", error=PlanError,
                       slow_error=PlanError, invalid=f"bad {kind} {pattern_text(pattern)}")


# --------------------------------------------------------------------------------------------- schema & files


def plan_schema() -> dict[str, Any]:
    """The JSON Schema of plan files (resources/plan.schema.json): the one statement of a plan's structure."""
    return _schema()


@lru_cache(maxsize=1)
def _validator() -> Any:
    import jsonschema  # a dependency; imported on the first plan read only (~0.1-0.3 s)

    schema = _schema()
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


_TYPE_WORDS = {"string": "a string", "null": "null", "object": "an object", "array": "a list", "boolean": "true or false",
               "number": "a number", "integer": "an integer"}
_VALUE_CHECKS = {"exclusiveMinimum", "minimum", "maximum", "exclusiveMaximum", "minLength"}


def _schema_message(e: Any, data: Any) -> str:
    """One line for a jsonschema ValidationError, naming the field by its place in the plan (``rules[0]``,
    ``source.arch``). A subschema's ``title`` is the phrase for what it must be; a bound broken inside a rule names
    the rule's pattern (as :class:`Rule` does)."""
    path = list(e.absolute_path)
    where = "".join(f"[{p}]" if isinstance(p, int) else (f".{p}" if i else p) for i, p in enumerate(path))
    sub = e.schema if isinstance(e.schema, dict) else {}
    inst, val = e.instance, e.validator_value
    if e.validator == "additionalProperties":
        extra = sorted(k for k in inst if k not in sub.get("properties", {}))
        return f"{where + ': ' if where else ''}unknown field {extra[0]!r}"
    if e.validator == "required":
        name = next(k for k in val if k not in inst)
        return f"{where + ': ' if where else ''}{name!r} is required"
    if e.validator == "maxItems":
        return f"{len(inst):,} {where}, over the {val:,} limit"
    parent, _, field_name = where.rpartition(".") if not where.endswith("]") else ("", "", where)
    head = f"{parent}: " if parent and parent.endswith("]") else (f"{parent}." if parent else "")
    if e.validator == "enum":
        return f"{head}unknown {field_name} {inst!r}, expected one of {', '.join(map(str, val))}"
    if e.validator == "const":
        return f"{head}{field_name} must be {val!r}, found {inst!r}"
    if e.validator in _VALUE_CHECKS and len(path) >= 2 and path[0] == "rules" and isinstance(path[1], int):
        pattern = data["rules"][path[1]].get("pattern")
        head += f"rule {pattern_text(pattern)}: " if isinstance(pattern, str) else ""
    what = sub.get("title")
    if what is None and e.validator == "type":
        types = val if isinstance(val, list) else [val]
        what = " or ".join(_TYPE_WORDS.get(t, t) for t in types)
    if what is None:
        what = e.message
        return f"{head}{field_name}: {what}"
    return f"{head}{field_name} must be {what}, found {inst!r}"


def validate_plan_json(data: Any, *, source: str = "plan") -> None:
    """Validate a plan document against plan.schema.json (jsonschema, the schema file is the only copy of the
    structure), then what a schema cannot say: the format version first (a newer plan is not judged by this
    schema) and the key mapping's regexes. Raises PlanError with one line naming ``source`` and the field."""
    if not isinstance(data, dict):
        raise PlanError(f"{source}: expected a JSON object, found {type(data).__name__}")
    v = data.get("version")
    if v is None:
        raise PlanError(f"{source}: no \"version\"; expected {PLAN_VERSION}")
    if v != PLAN_VERSION or isinstance(v, bool):
        raise PlanError(f"{source}: unsupported plan version {v!r}, expected {PLAN_VERSION}")
    km = data.get("key_mapping")
    if km is not None:  # the key-mapping rules (shared with --key-mapping) say more than the schema's "strings"
        check_key_mapping(km, label=f"{source}: key_mapping", error=PlanError)
    from jsonschema.exceptions import best_match

    err = best_match(_validator().iter_errors(data))
    if err is not None:
        while err.validator in ("oneOf", "anyOf") and err.context:  # say what was wrong, not "none matched"
            err = best_match(err.context)
        raise PlanError(f"{source}: {_schema_message(err, data)}")


def is_plan_file(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a regular JSON file (bounded read, never a FIFO or device) holding an object with a
    plan ``version`` and only a plan's fields: the one test of "is this a plan" for ``plan -o``, the window's
    save dialog and dropped files. An empty file is not a plan."""
    from .fsio import MAX_JSON_BYTES, parse_json, read_bounded
    from .errors import ExplorerError

    try:
        raw = read_bounded(path, max_bytes=MAX_JSON_BYTES, what="plan")
        if raw.lstrip()[:1] != b"{":
            return False
        data = parse_json(raw, source=str(path), what="plan")
    except (ExplorerError, OSError):
        return False
    return isinstance(data, dict) and "version" in data and set(data) <= plan_fields()


def plan_fields() -> frozenset[str]:
    """The top-level fields a plan may have (the schema's ``properties``)."""
    return frozenset(_schema()["properties"])


def check_plan_output(path: str | os.PathLike[str], *, inputs: Iterable[str | os.PathLike[str]] = (),
                      force: bool = False) -> Path:
    """Refuse to write a plan to ``path`` when it is a folder, not a regular file (a FIFO, a device, a link to
    one), one of ``inputs`` (even with ``force``), or — unless ``force`` — an existing file that is not a plan.
    Returns the path. Raises PlanError with one line naming the path."""
    from .fsio import check_output

    p = Path(path)
    if p.is_dir():
        raise PlanError(f"{p}: is a folder; give a file name such as {p / 'plan.json'}")
    return check_output(p, inputs=inputs, is_ours=is_plan_file, force=force, what="plan file", error=PlanError)


def save_plan(plan: Plan, path: str | os.PathLike[str], *, inputs: Iterable[str | os.PathLike[str]] = (),
              force: bool = False) -> Path:
    """Write the plan as JSON atomically (temp file + fsync + rename). Returns the path.

    Never over one of ``inputs`` or the files the plan was made from (its checkpoint and config); never over
    anything but a regular file; over an existing file that is not a plan only with ``force``. Raises PlanError."""
    from .fsio import atomic_write_bytes
    from .outputs import named_inputs

    p = check_plan_output(path, inputs=[*inputs, *named_inputs(plan.checkpoint, plan.config)], force=force)
    data = json.dumps(plan.to_json(), indent=1).encode() + b"\n"
    try:
        atomic_write_bytes(p, data)
    except OSError as e:
        raise PlanError(f"{p}: cannot write plan: {e.strerror or e}") from e
    return p


def load_plan(path: str | os.PathLike[str]) -> Plan:
    """Read and validate a plan file: a regular file (a FIFO or device is refused unread) of at most
    :data:`explorer.core.fsio.MAX_JSON_BYTES`, strict JSON (no NaN/Infinity) nested at most
    :data:`explorer.core.fsio.MAX_JSON_DEPTH` deep. Raises PlanError (bad JSON, version, action, glob...)."""
    from .fsio import MAX_JSON_BYTES, parse_json, read_bounded

    p = Path(path)
    if not os.path.lexists(p):
        raise PlanError(f"{p}: plan file not found")
    raw = read_bounded(p, max_bytes=MAX_JSON_BYTES, what="plan file", error=PlanError)
    data = parse_json(raw, source=str(p), what="JSON", error=PlanError)
    return Plan.from_json(data, source=str(p))
