"""Pickles the weights-only unpickler rejects: one line on stderr (torch's protocol warning never leaks), worded
for what the file really is: unsupported opcodes are not 'could run code', a forbidden GLOBAL is."""
from __future__ import annotations

import pickle
import warnings

import pytest
import torch

from explorer.cli import main


def _one_line(capsys, argv: list[str]) -> str:
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert [str(w.message) for w in caught] == []  # e.g. "Detected pickle protocol 4 ..." must not leak
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def _print_reduce() -> object:
    class Evil:
        def __reduce__(self):
            return (print, ("never",))

    return Evil()


@pytest.mark.parametrize("cmd", ["report", "stats"])
def test_protocol4_plain_pickle_is_rejected_accurately(capsys, tmp_path, cmd):
    f = tmp_path / "plain.pkl"
    with open(f, "wb") as fh:
        pickle.dump({"a": [1, 2]}, fh, protocol=4)
    line = _one_line(capsys, [cmd, str(f)])
    assert str(f) in line
    assert "not a weights-only torch checkpoint: the safe unpickler rejected it (Unsupported operand 149)" in line
    assert "only torch.load(weights_only=True) is allowed" in line
    assert "could run code" not in line


def test_protocol4_legacy_torch_save_has_no_warning(capsys, tmp_path):
    f = tmp_path / "legacy.pt"
    torch.save({"w": torch.ones(3)}, f, _use_new_zipfile_serialization=False, pickle_protocol=4)
    line = _one_line(capsys, ["report", str(f)])
    assert str(f) in line and "safe unpickler rejected it" in line


def test_code_running_global_keeps_its_wording(capsys, tmp_path):
    f = tmp_path / "evil.pkl"
    f.write_bytes(pickle.dumps(_print_reduce(), protocol=2))
    line = _one_line(capsys, ["report", str(f)])
    assert str(f) in line
    assert "refused to unpickle" in line and "could run code (GLOBAL print is not allowed)" in line
