"""What an export or a conversion can be asked for, checked before anything is read: the dtypes it casts to
(:data:`EXPORT_DTYPES`, the CLI's ``--dtype`` and the window's export dialog) and shard sizes (:func:`parse_size`).
Imports nothing heavy, so the CLI's parser and the window can list them cheaply.
"""
from __future__ import annotations

import math
import re

from .errors import ExportError

#: the floating dtypes an export or conversion can cast to (the CLI's --dtype, the window's export dialog)
EXPORT_DTYPES = ("float32", "float16", "bfloat16", "float64")
_DTYPE_ALIASES = {
    "fp32": "float32", "float": "float32", "f32": "float32",
    "fp16": "float16", "half": "float16", "f16": "float16",
    "bf16": "bfloat16",
    "fp64": "float64", "double": "float64",
    **{d: d for d in EXPORT_DTYPES},
}


DTYPES_HELP = f"{', '.join(EXPORT_DTYPES[:-1])} or {EXPORT_DTYPES[-1]} (aliases fp32, fp16, bf16, fp64)"


SIZE_HELP = "a positive size such as 500MB, 2GiB or 1000000 (bytes)"
MAX_SHARD_BYTES = 1 << 62  # far past any disk; keeps offsets in safetensors' u64 with room to add
_SIZE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
               "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
_SIZE_RE = re.compile(r"([0-9]{1,40}(?:\.[0-9]{0,40})?|\.[0-9]{1,40})(?:[eE]([+-]?[0-9]{1,4}))? *([A-Za-z]*)", re.ASCII)


def parse_size(size: int | float | str | None, *, what: str = "max_shard_size") -> int | None:
    """'500MB' -> 500_000_000, '2GiB' -> 2**31 (transformers' convention); an int is bytes. None stays None.

    Refuses (ExportError naming ``what``, e.g. ``--max-shard-size``) anything but a finite positive number of
    bytes up to :data:`MAX_SHARD_BYTES` with an optional unit: 'inf', 'nan', '-1', '0', '1e400GB', '0.1B'."""
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, (int, float, str)) or (isinstance(size, float) and not math.isfinite(size)):
        raise ExportError(f"{what}: expected {SIZE_HELP}, found {size!r}")
    if isinstance(size, (int, float)):
        n = int(size)
    else:
        m = _SIZE_RE.fullmatch(size.strip())
        unit = m.group(3).upper() if m else ""
        if m is None or unit not in _SIZE_UNITS:
            raise ExportError(f"{what}: expected {SIZE_HELP}, found {size!r}")
        # exact decimal arithmetic: '1e400GB' is too large, not an OverflowError; '0.5GB' is 500000000
        from fractions import Fraction

        n = int(Fraction(m.group(1)) * _SIZE_UNITS[unit] * Fraction(10) ** int(m.group(2) or 0))  # |exp| < 10**4
    if n <= 0:
        raise ExportError(f"{what}: expected {SIZE_HELP}, found {size!r} (at least 1 byte)")
    if n > MAX_SHARD_BYTES:
        raise ExportError(f"{what}: {size!r} is too large (at most {MAX_SHARD_BYTES} bytes)")
    return n


def parse_dtype(dtype: str | None) -> str | None:
    if dtype is None:
        return None
    name = _DTYPE_ALIASES.get(str(dtype).lower().removeprefix("torch."))
    if name is None:
        raise ExportError(f"dtype: expected {DTYPES_HELP}, found {dtype!r}")
    return name
