"""safetensors files: the strict header parser (a file is readable here if and only if ``safe_open`` opens it),
the dtype codes, and the source that turns one file into a :class:`CheckpointIndex`. Reads 8 + header bytes only.
"""
from __future__ import annotations

import json
import math
import operator
import os
import re
import struct
from collections import Counter
from pathlib import Path
from typing import Any

from ..errors import CheckpointError
from ..fsio import MAX_HEADER_BYTES, json_error_text, open_regular
from .index import CheckpointIndex, TensorInfo, file_stamps, new_tensor_info, quoted, torch_dtype

# safetensors dtype code -> (torch dtype name, bits per element)
SAFETENSORS_DTYPES: dict[str, tuple[str, int]] = {
    "BOOL": ("bool", 8),
    "U8": ("uint8", 8),
    "I8": ("int8", 8),
    "U16": ("uint16", 16),
    "I16": ("int16", 16),
    "F16": ("float16", 16),
    "BF16": ("bfloat16", 16),
    "U32": ("uint32", 32),
    "I32": ("int32", 32),
    "F32": ("float32", 32),
    "U64": ("uint64", 64),
    "I64": ("int64", 64),
    "F64": ("float64", 64),
    "C64": ("complex64", 64),
    "F8_E4M3": ("float8_e4m3fn", 8),
    "F8_E5M2": ("float8_e5m2", 8),
    "F8_E4M3FNUZ": ("float8_e4m3fnuz", 8),
    "F8_E5M2FNUZ": ("float8_e5m2fnuz", 8),
    "F8_E8M0": ("float8_e8m0fnu", 8),
    "F4": ("float4_e2m1fn_x2", 4),
}
_TORCH_TO_SAFETENSORS = {v[0]: k for k, v in SAFETENSORS_DTYPES.items()}


def safetensors_dtype_code(torch_name: str) -> str:
    """torch dtype name -> safetensors dtype code ("bfloat16" -> "BF16")."""
    return _TORCH_TO_SAFETENSORS[torch_name]


def named_safetensors(name: str, head: bytes, size: int) -> bool:
    """A ``*.safetensors`` name is taken at its word (the parser then says what is wrong with it)."""
    return name.endswith(".safetensors")


def looks_like_safetensors(name: str, head: bytes, size: int) -> bool:
    """A safetensors-shaped start under any name: an 8-byte header length in range, then a JSON object."""
    if len(head) >= 9:
        (n,) = struct.unpack("<Q", head[:8])
        return 2 <= n <= min(MAX_HEADER_BYTES, size - 8) and head[8:].lstrip(b" \t\r\n")[:1] == b"{"
    return False


def open_safetensors(p: Path, path: str, wrapper: str | None) -> CheckpointIndex:
    """One safetensors file as an index (``path``: what the user named, kept as the index's path)."""
    if wrapper is not None:
        raise CheckpointError(f"{p}: --wrapper {wrapper!r} given, but a safetensors file is a flat state dict with no sub-dicts")
    tensors, meta, notes = read_safetensors(p)
    return CheckpointIndex(path, "safetensors", (str(p),), tensors, meta, notes=notes, stamps=file_stamps(p))


#
# The header is validated exactly as safetensors (Rust, ``SafeTensors::read_metadata``) validates it, so a file
# is called readable here if and only if ``safe_open`` opens it: UTF-8, serde_json's grammar (no NaN, numbers in
# range, no lone surrogates, 128-level recursion limit), ``__metadata__`` null or an object of strings (once),
# each tensor a map (or serde's 3-element sequence form) with dtype/shape/data_offsets of the right types (no
# repeated field), a duplicated tensor name keeping its last entry (every entry must still parse), shapes and
# offsets fitting u64, the byte size computed with overflow checks, offsets sorted, contiguous from 0 and covering
# the data region up to the end of the file exactly.

_U64 = 1 << 64
_SERDE_MAX_DEPTH = 127  # serde_json's recursion limit (128) counts the top-level object; measured against 0.8
_ESCAPED_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")
_TORCHLESS_DTYPES = {"F6_E2M3", "F6_E3M2"}  # valid safetensors, but no torch dtype: from_pretrained cannot load them
_SAFETENSORS_BITS = {**{k: b for k, (_, b) in SAFETENSORS_DTYPES.items()}, "F6_E2M3": 6, "F6_E3M2": 6}
_FIELDS = ("dtype", "shape", "data_offsets")
_TORCH_NAME = {k: v[0] for k, v in SAFETENSORS_DTYPES.items()}
_TORCH_CODES = frozenset(SAFETENSORS_DTYPES) - {"F4"}  # the per-tensor fast path: no F4 / torch-less dtype checks
_by_offsets = operator.itemgetter(0, 1)


class _DupKeys(dict):  # type: ignore[type-arg]
    """A JSON object that repeated a key: the dict keeps the last value (as serde's HashMap), ``pairs`` all."""

    pairs: list[tuple[str, Any]]


def _pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    d = dict(pairs)
    if len(d) != len(pairs):
        d = _DupKeys(d)
        d.pairs = pairs
    return d


def _serde_float(s: str) -> float:
    v = float(s)
    if math.isinf(v):
        raise ValueError("number out of range")
    return v


def _serde_int(s: str) -> int | float:
    return -0.0 if s == "-0" else int(s)  # serde_json parses "-0" as a float, not as the integer 0


def _beyond_f64(obj: Any) -> bool:
    """An integer serde_json could not hold even as a float ("number out of range"), anywhere in ``obj``."""
    stack = [obj]
    while stack:
        o = stack.pop()
        if type(o) is int:
            try:
                float(o)
            except OverflowError:
                return True
        elif isinstance(o, dict):
            stack.extend(o.values())
        elif isinstance(o, list):
            stack.extend(o)
    return False


def _has_surrogate(obj: Any) -> bool:
    stack = [obj]
    while stack:
        o = stack.pop()
        if isinstance(o, str):
            try:
                o.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(o, dict):
            items = o.pairs if isinstance(o, _DupKeys) else o.items()
            for k, v in items:
                stack.append(k)
                stack.append(v)
        elif isinstance(o, list):
            stack.extend(o)
    return False


def _parse_header_json(raw: bytes, p: Path) -> dict[str, Any]:
    def bad(why: str) -> CheckpointError:
        return CheckpointError(f"{p}: corrupt safetensors header: {why}")

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise bad(f"not UTF-8 (byte {e.start})") from None
    slow_ints = b"-0" in raw

    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    try:
        header = json.loads(
            text,
            object_pairs_hook=_pairs_hook,
            parse_float=_serde_float,
            parse_int=_serde_int if slow_ints else None,
            parse_constant=no_constants,
        )
    except RecursionError:
        raise bad(f"not valid JSON (nested deeper than {_SERDE_MAX_DEPTH} levels)") from None
    except ValueError as e:
        raise bad(f"not valid JSON ({json_error_text(e)})") from None
    if not isinstance(header, dict):
        raise bad(f"expected a JSON object, found {type(header).__name__}")
    if _ESCAPED_SURROGATE.search(raw) is not None and _has_surrogate(header):
        raise bad("not valid JSON (a lone UTF-16 surrogate in a \\u escape)")
    return header


def _dims(v: Any) -> bool:
    """A JSON array of integers that fit a u64 (serde's Vec<usize>)."""
    return isinstance(v, list) and all(type(d) is int and 0 <= d < _U64 for d in v)


def _dtype_code(v: Any) -> str | None:
    """serde's enum forms of a dtype: "F32", or {"F32": null}."""
    if type(v) is str:
        return v if v in _SAFETENSORS_BITS else None
    if type(v) is dict and len(v) == 1:  # not _DupKeys: {"F32": null, "F32": null} is two entries for serde
        ((k, val),) = v.items()
        if val is None and k in _SAFETENSORS_BITS:
            return k
    return None


def _fast_entry(e: Any) -> tuple[str, list[int], int, int] | None:
    """The common case of a header entry, checked without allocation: a plain object with exactly the three
    fields, a dtype string, integer dims and offsets in u64. None sends the entry to :func:`_tensor_entry`."""
    if type(e) is not dict or len(e) != 3:
        return None
    dt = e.get("dtype")
    shape = e.get("shape")
    offs = e.get("data_offsets")
    if type(dt) is not str or dt not in _SAFETENSORS_BITS or type(shape) is not list or type(offs) is not list or len(offs) != 2:
        return None
    s, t = offs
    if type(s) is not int or type(t) is not int or not (0 <= s < _U64 and 0 <= t < _U64):
        return None
    for d in shape:
        if type(d) is not int or not 0 <= d < _U64:
            return None
    return dt, shape, s, t


def _fold_overflows(shape: list[int]) -> bool:
    """serde multiplies dims left to right with checked u64 arithmetic: [2^63, 4, 0] overflows before the 0."""
    n = 1
    for d in shape:
        n *= d
        if n >= _U64:
            return True
    return False


def _torch_holds(code: str, shape: list[int]) -> bool:
    """Whether torch can make this empty tensor as safetensors' get_tensor does (a uint8 view reshaped). Only asked
    for 0-element shapes with a huge dim: sizes and strides are int64 in torch, u64 in the header."""
    import torch

    if code == "F4":  # two per byte along the last dim (checked even before this is asked)
        shape = shape[:-1] + [shape[-1] // 2]
    try:
        torch.empty(0, dtype=torch.uint8).view(torch_dtype(SAFETENSORS_DTYPES[code][0])).reshape(shape)
    except Exception:  # noqa: BLE001 - RuntimeError (stride overflow), TypeError/OverflowError (past int64)
        return False
    return True


def _tensor_entry(name: str, e: Any, p: Path) -> tuple[str, list[int], list[int]]:
    """(dtype code, shape, data_offsets) of one header entry, type-checked as serde deserializes TensorInfo."""
    where = f"{p}: corrupt safetensors header: tensor {quoted(name)}"
    if type(e) is list:  # serde also reads a struct from a sequence of its fields, in order
        if len(e) != 3:
            raise CheckpointError(f"{where}: expected an object with dtype, shape and data_offsets")
        dt, shape, offs = e
    elif isinstance(e, dict):
        if isinstance(e, _DupKeys):
            seen: set[str] = set()
            for k, _ in e.pairs:
                if k in _FIELDS and k in seen:
                    raise CheckpointError(f"{where}: field {k!r} given twice")
                seen.add(k)
        missing = [f for f in _FIELDS if f not in e]
        if missing:
            raise CheckpointError(f"{where}: header entry must have dtype, shape and data_offsets (missing {', '.join(missing)})")
        if len(e) > 3:  # unknown fields are ignored, but parsed within serde's recursion limit
            from ..fsio import json_depth_ok

            for k, v in e.items():
                if k not in _FIELDS and not json_depth_ok(v, _SERDE_MAX_DEPTH - 2):
                    raise CheckpointError(f"{where}: field {quoted(k)} nested deeper than safetensors allows")
                if k not in _FIELDS and _beyond_f64(v):
                    raise CheckpointError(f"{where}: field {quoted(k)} holds a number out of range")
        dt, shape, offs = e["dtype"], e["shape"], e["data_offsets"]
    else:
        raise CheckpointError(f"{where}: header entry must be an object with dtype, shape and data_offsets, found {type(e).__name__}")
    code = _dtype_code(dt)
    if code is None:
        shown = quoted(dt)
        if type(dt) is str:
            raise CheckpointError(f"{where}: unknown dtype {shown}")
        raise CheckpointError(f"{where}: dtype must be a string such as \"F32\", found {type(dt).__name__} {shown}")
    if isinstance(shape, list) and any(type(d) is int and d < 0 for d in shape):
        raise CheckpointError(f"{where}: negative dimension in shape {shape}")
    if not _dims(shape):
        raise CheckpointError(f"{where}: shape must be a list of integers from 0 to 2^64-1, found {quoted(shape)}")
    if not (_dims(offs) and len(offs) == 2):
        raise CheckpointError(f"{where}: data_offsets must be two integers from 0 to 2^64-1, found {quoted(offs)}")
    return code, shape, offs


def read_safetensors(p: Path) -> tuple[dict[str, TensorInfo], dict[str, str], tuple[str, ...]]:
    """Parse and validate a safetensors header (8 + header bytes read). Returns (tensors, metadata, notes)."""
    with open_regular(p, what="safetensors file", error=CheckpointError) as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{p}: truncated safetensors file: {size} bytes, expected at least an 8-byte header length")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            raise CheckpointError(f"{p}: safetensors header length {n} is larger than the file ({size} bytes)")
        if n > MAX_HEADER_BYTES:
            raise CheckpointError(f"{p}: safetensors header length {n} exceeds safetensors' limit of {MAX_HEADER_BYTES} bytes")
        raw = f.read(n)
    if len(raw) != n:
        raise CheckpointError(f"{p}: file changed on disk while its header was read")
    return _parse_safetensors(raw, n, size, p)


def parse_safetensors_bytes(raw: bytes, size: int, label: str) -> tuple[dict[str, TensorInfo], dict[str, str], tuple[str, ...]]:
    """A safetensors header already fetched (``raw``: the 8-byte length and the header) of a file of ``size`` bytes
    named ``label`` (a remote file): validated exactly as a local file's. TensorInfo.file is ``label``, offsets
    absolute. Raises CheckpointError naming ``label``."""
    if len(raw) < 8:
        raise CheckpointError(f"{label}: truncated safetensors file: expected at least an 8-byte header length")
    (n,) = struct.unpack("<Q", raw[:8])
    if n > size - 8:
        raise CheckpointError(f"{label}: safetensors header length {n} is larger than the file ({size} bytes)")
    if n > MAX_HEADER_BYTES:
        raise CheckpointError(f"{label}: safetensors header length {n} exceeds safetensors' limit of {MAX_HEADER_BYTES} bytes")
    if len(raw) != 8 + n:
        raise CheckpointError(f"{label}: truncated safetensors header: {len(raw) - 8} of {n} bytes")
    return _parse_safetensors(raw[8:], n, size, label)  # type: ignore[arg-type]


Row = tuple[int, int, str, str, list[int]]  # (start, end, name, dtype code, shape)


def _plain_rows(raw: bytes) -> tuple[list[Row], dict[str, str]] | None:
    """(rows, metadata) of the common header, parsed by the C JSON decoder without hooks, or None when the header
    is anything else (the strict path, :func:`_strict_rows`, then parses it again and says what is wrong).

    The common header: a JSON object of plain entries (exactly dtype/shape/data_offsets, a known dtype string,
    u64 integer dims and offsets) and an optional ``__metadata__`` object of strings; no ``\\u`` escape (so no
    surrogate, and every ``:`` of a string is a ``:`` in the text) and no ``-0``. Such a header has no repeated key
    if and only if the text holds exactly as many ``:`` as the parsed objects have pairs plus the ``:`` inside
    their strings: a repeated key drops a pair (and its strings) from the parsed objects but not from the text."""
    if b"\\u" in raw or b"-0" in raw:
        return None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    if type(header) is not dict:
        return None
    rows: list[Row] = []
    append = rows.append
    bits_of = _SAFETENSORS_BITS
    metadata: dict[str, str] = {}
    colons = 4 * len(header)  # per entry: its own pair and its three fields (no ':' in their keys or values)
    for k, v in header.items():
        if k == "__metadata__":
            if v is None:
                colons -= 3
                continue
            if type(v) is not dict or not all(type(x) is str for x in v.values()):
                return None
            metadata = v
            colons += len(v) - 3 + "".join(v).count(":") + "".join(v.values()).count(":")
            continue
        # inlined (this loop runs once per tensor, 46k times for a large MoE): the checks of _fast_entry
        if type(v) is dict and len(v) == 3:
            dt = v.get("dtype")
            shape = v.get("shape")
            offs = v.get("data_offsets")
            if type(dt) is str and dt in bits_of and type(shape) is list and type(offs) is list and len(offs) == 2:
                s, t = offs
                if type(s) is int and type(t) is int and 0 <= s < _U64 and 0 <= t < _U64:
                    for d in shape:
                        if type(d) is not int or not 0 <= d < _U64:
                            break
                    else:
                        append((s, t, k, dt, shape))
                        continue
        return None
    colons += "".join(header).count(":")
    return (rows, metadata) if raw.count(b":") == colons else None


def _parse_safetensors(raw: bytes, n: int, size: int, p: Path) -> tuple[dict[str, TensorInfo], dict[str, str], tuple[str, ...]]:
    plain = _plain_rows(raw)
    if plain is None:
        rows, metadata, notes = _strict_rows(raw, p)
    else:
        (rows, metadata), notes = plain, ()
    return _validate_rows(rows, metadata, notes, n, size, p)


def _strict_rows(raw: bytes, p: Path) -> tuple[list[Row], dict[str, str], tuple[str, ...]]:
    """(rows, metadata, notes) of any header serde accepts; CheckpointError naming ``p`` for any it refuses."""
    header = _parse_header_json(raw, p)
    notes: list[str] = []
    meta_raw: Any = None
    has_meta = False
    rows: list[Row] = []
    if isinstance(header, _DupKeys):
        if sum(1 for k, _ in header.pairs if k == "__metadata__") > 1:
            raise CheckpointError(f"{p}: corrupt safetensors header: \"__metadata__\" given twice")
        last: dict[str, tuple[str, list[int], list[int]]] = {}
        for k, v in header.pairs:  # every entry must deserialize; the last of a name wins (serde's HashMap)
            if k != "__metadata__":
                last[k] = _tensor_entry(k, v, p)
        rows = [(o[0], o[1], k, code, shape) for k, (code, shape, o) in last.items()]
        counts = Counter(k for k, _ in header.pairs if k != "__metadata__")
        dups = sorted(k for k, c in counts.items() if c > 1)
        shown = ", ".join(quoted(k) for k in dups[:3]) + (", ..." if len(dups) > 3 else "")
        notes.append(
            f"safetensors header names {len(dups)} tensor(s) more than once ({shown}): the last entry of each is "
            "used, as safetensors does"
        )
        pairs: Any = header.pairs
    else:
        pairs = header.items()
        append = rows.append
        for k, v in pairs:
            fast = _fast_entry(v) if k != "__metadata__" else None
            if fast is not None:
                append((fast[2], fast[3], k, fast[0], fast[1]))
            elif k != "__metadata__":
                code, shape, o = _tensor_entry(k, v, p)
                append((o[0], o[1], k, code, shape))
    for k, v in pairs:
        if k == "__metadata__":
            has_meta, meta_raw = True, v
    metadata: dict[str, str] = {}
    if has_meta and meta_raw is not None:
        items = meta_raw.pairs if isinstance(meta_raw, _DupKeys) else meta_raw.items() if type(meta_raw) is dict else None
        if items is None:
            raise CheckpointError(
                f"{p}: corrupt safetensors header: \"__metadata__\" must be an object of strings, found {type(meta_raw).__name__}"
            )
        for k, v in items:
            if type(v) is not str:
                raise CheckpointError(
                    f"{p}: corrupt safetensors header: \"__metadata__\" value {quoted(k)} must be a string, found {type(v).__name__}"
                )
        metadata = dict(meta_raw)
    return rows, metadata, tuple(notes)


def _validate_rows(rows: list[Row], metadata: dict[str, str], notes: tuple[str, ...], n: int, size: int,
                   p: Path) -> tuple[dict[str, TensorInfo], dict[str, str], tuple[str, ...]]:
    """Metadata::validate: sorted by (start, end), each starting where the previous ended, sizes exact; and what
    torch (so from_pretrained) cannot hold."""
    rows.sort(key=_by_offsets)
    base = 8 + n
    data_size = size - base
    tensors: dict[str, TensorInfo] = {}
    end = 0
    bits_of = _SAFETENSORS_BITS
    file = str(p)
    make = new_tensor_info
    prod = math.prod
    for s, e, name, code, shape in rows:
        if s != end or e < s:
            why = (f"starts at byte {s} of the data, but the previous tensor ends at {end}" if s != end
                   else f"data_offsets [{s}, {e}] end before they start")
            raise CheckpointError(f"{p}: corrupt safetensors header: tensor {quoted(name)}: {why} (gap or overlap)")
        if e > data_size:
            raise CheckpointError(
                f"{p}: tensor {quoted(name)}: data ends at byte {e} but the data region is only {data_size} bytes (truncated file?)"
            )
        end = e
        numel = prod(shape)
        nbits = numel * bits_of[code]
        if e - s == nbits >> 3 and numel and nbits < _U64 and not nbits & 7 and code in _TORCH_CODES:
            # the common case: every check below passes (sizes agree and fit, a dtype torch has, not F4, not 0-size)
            tensors[name] = make(name, tuple(shape), _TORCH_NAME[code], e - s, file, base + s)
            continue
        if nbits >= _U64 or (numel == 0 and len(shape) > 1 and _fold_overflows(shape)):
            raise CheckpointError(f"{p}: corrupt safetensors header: tensor {quoted(name)}: shape {shape} of {code} overflows 64 bits")
        if nbits % 8:
            raise CheckpointError(
                f"{p}: corrupt safetensors header: tensor {quoted(name)}: shape {shape} of {code} is not a whole number of bytes"
            )
        if e - s != nbits >> 3:
            raise CheckpointError(f"{p}: tensor {quoted(name)}: {e - s} bytes on disk but shape {shape} of {code} needs {nbits >> 3}")
        if code in _TORCHLESS_DTYPES:
            raise CheckpointError(
                f"{p}: tensor {quoted(name)}: dtype {code} is valid safetensors but torch has no such dtype, so from_pretrained "
                "cannot load it"
            )
        if code == "F4" and shape[-1] % 2:
            raise CheckpointError(
                f"{p}: tensor {quoted(name)}: F4 shape {shape} is valid safetensors, but torch packs F4 two per byte along the "
                "last dimension, which must be even; from_pretrained cannot load it"
            )
        if numel == 0 and shape and max(shape) >= 1 << 31 and not _torch_holds(code, shape):
            raise CheckpointError(
                f"{p}: tensor {quoted(name)}: shape {shape} is valid safetensors but torch cannot hold it (its sizes and "
                "strides are signed 64-bit), so from_pretrained cannot load it"
            )
        tensors[name] = make(name, tuple(shape), _TORCH_NAME[code], nbits >> 3, file, base + s)
    if end != data_size:
        raise CheckpointError(
            f"{p}: {data_size - end} trailing byte(s) after the last tensor's data (byte {base + end} of {size}): "
            "safetensors refuses a file its header does not cover exactly"
        )
    return tensors, metadata, notes


def read_safetensors_header(p: Path) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Parse and validate a safetensors header exactly as safetensors does. Reads 8 + header bytes only.

    Returns (tensors by name in data order, ``__metadata__``). Raises CheckpointError naming the file."""
    tensors, metadata, _ = read_safetensors(Path(p))
    return tensors, metadata
