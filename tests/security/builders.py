"""Builders of hostile files: raw safetensors headers, crafted pickles inside real torch zips, odd JSON."""
from __future__ import annotations

import io
import json
import os
import struct
import zipfile
from pathlib import Path

SECRET = "sekrit-7f3a9c"  # put in the children's environment and in files outside the folders: must never be printed


def st_bytes(header: dict | str, data: bytes = b"") -> bytes:
    raw = header.encode() if isinstance(header, str) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def st_file(path: Path, header: dict | str, data: bytes = b"") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(st_bytes(header, data))
    return path


def valid_st(path: Path, n: int = 2) -> Path:
    """n float32 tensors of shape [2] written by safetensors itself."""
    import torch
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({f"t{i}": torch.arange(2, dtype=torch.float32) + i for i in range(n)}, str(path))
    return path


def deep_json(depth: int, leaf: str = "0") -> str:
    return '{"a":' + "[" * depth + leaf + "]" * depth + "}"


def torch_zip(path: Path, obj: object) -> Path:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)
    return path


def replace_data_pkl(path: Path, pkl: bytes, *, duplicate: bool = False) -> Path:
    """Rewrite a torch zip with ``pkl`` as its data.pkl (or, with ``duplicate``, a second data.pkl after the first)."""
    with zipfile.ZipFile(path) as z:
        members = [(i, z.read(i)) for i in z.infolist()]
    tmp = path.with_suffix(".tmp")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Duplicate name" is the point
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as z:
            for info, data in members:
                if info.filename.endswith("/data.pkl"):
                    if duplicate:
                        z.writestr(info, data)
                    z.writestr(info, pkl)
                else:
                    z.writestr(info, data)
    os.replace(tmp, path)
    return path


def data_pkl_name(path: Path) -> str:
    with zipfile.ZipFile(path) as z:
        return next(n for n in z.namelist() if n.endswith("/data.pkl"))


# raw pickle opcodes (protocol 2), so nothing here runs when the file is built
def p_global(mod: str, name: str) -> bytes:
    return b"c" + mod.encode() + b"\n" + name.encode() + b"\n"


def p_str(s: str) -> bytes:
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def p_int(n: int) -> bytes:
    if 0 <= n < 2**31:
        return b"J" + struct.pack("<i", n)
    raw = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def pickle_call(mod: str, name: str, *args: bytes, key: str = "trap") -> bytes:
    """A protocol-2 pickle of {key: mod.name(*args)} (GLOBAL + REDUCE)."""
    return b"\x80\x02}" + p_str(key) + p_global(mod, name) + b"(" + b"".join(args) + b"tRs."


def deep_dict_pickle(depth: int) -> bytes:
    """{"a": {"a": ... {} ...}} nested ``depth`` deep, built with stack opcodes (no recursion to write or read)."""
    return b"\x80\x02" + (b"}" + p_str("a")) * depth + b"}" + b"s" * depth + b"."


def write_zip_bomb(path: Path, template: Path, nbytes: int) -> Path:
    """``template`` (a torch zip) with its data.pkl replaced by a deflated pickle of {"w": <nbytes-long str>}:
    a few MB on disk, ``nbytes`` once inflated."""
    assert nbytes < 2**32
    name = data_pkl_name(template)
    with zipfile.ZipFile(template) as z:
        members = [(i, z.read(i)) for i in z.infolist() if not i.filename.endswith("/data.pkl")]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        zi = zipfile.ZipInfo(name)
        zi.compress_type = zipfile.ZIP_DEFLATED
        with z.open(zi, "w", force_zip64=True) as f:
            f.write(b"\x80\x02}" + p_str("w") + b"X" + struct.pack("<I", nbytes))
            chunk = b"a" * (1 << 24)
            left = nbytes
            while left:
                n = min(left, len(chunk))
                f.write(chunk[:n])
                left -= n
            f.write(b"s.")
        for info, data in members:
            z.writestr(info, data)
    return path


def sparse(path: Path, size: int, head: bytes = b"") -> Path:
    """A file of ``size`` bytes that takes no disk (a hole after ``head``)."""
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(size)
    return path
