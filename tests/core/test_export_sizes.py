"""``--max-shard-size`` / ``max_shard_size`` and ``--seed``: every hostile value is one line naming the option and
the expected form, exit 2, before anything is read — never OverflowError ('inf', '1e400GB') or a traceback."""
from __future__ import annotations

from pathlib import Path

import pytest

from explorer.cli import main
from explorer.core.errors import ExportError
from explorer.core.export import export_checkpoint
from explorer.core.export_options import MAX_SHARD_BYTES, SIZE_HELP, parse_size
from explorer.core.plan import Plan, save_plan
from tests.helpers import save_tiny


@pytest.mark.parametrize("value, expected", [
    ("500MB", 500_000_000), ("2GiB", 2**31), ("20KB", 20_000), (" 7 mb ", 7_000_000), ("0.5GB", 500_000_000),
    (".5KB", 500), ("1e3", 1000), ("1E+3kb", 10**6), ("1TiB", 2**40), (12345, 12345), (2e9, 2_000_000_000),
    (str(MAX_SHARD_BYTES), MAX_SHARD_BYTES), (None, None),
])
def test_sizes_transformers_accepts(value, expected):
    assert parse_size(value) == expected


@pytest.mark.parametrize("value", [
    "inf", "-inf", "Infinity", "nan", "NaN", "-1", "-5MB", "0", "0GB", "0.1B", "1e-400GB", "", "GB", "lots",
    "1_000", "\u0661\u0662", "5 bytes", "0x10", "1e400GB", "1e9999", "1e10000", "9" * 5000, str(MAX_SHARD_BYTES + 1),
    0, -3, True, float("inf"), float("nan"), [1], "1\nMB",
])
def test_hostile_sizes_are_one_line_errors(value):
    with pytest.raises(ExportError) as ei:
        parse_size(value, what="--max-shard-size")
    msg = str(ei.value)
    assert msg.startswith("--max-shard-size: ") and "\n" not in msg.replace(repr(value), "")
    assert SIZE_HELP in msg or "too large" in msg


@pytest.fixture(scope="module")
def src(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("src")
    save_tiny("bert", "BertModel", d)
    return d


@pytest.mark.parametrize("value, tail", [
    ("inf", f"expected {SIZE_HELP}, found 'inf'"),
    ("1e400GB", f"'1e400GB' is too large (at most {MAX_SHARD_BYTES} bytes)"),
    ("-1", f"expected {SIZE_HELP}, found '-1'"),
    ("0", f"expected {SIZE_HELP}, found '0' (at least 1 byte)"),
    ("nan", f"expected {SIZE_HELP}, found 'nan'"),
])
def test_cli_max_shard_size_one_line_exit_2(src, tmp_path, capsys, value, tail):
    plan = tmp_path / "plan.json"
    save_plan(Plan(), plan)
    capsys.readouterr()
    code = main(["export", str(src), "--plan", str(plan), "-o", str(tmp_path / "out"), "--max-shard-size", value])
    cap = capsys.readouterr()
    assert code == 2 and cap.out == ""
    assert cap.err == f"ckpt-explorer: error: --max-shard-size: {tail}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.json"]


@pytest.mark.parametrize("seed", [-1, 2**64, True])
def test_seed_out_of_torch_range_is_an_export_error(src, tmp_path, seed):
    with pytest.raises(ExportError, match=r"^seed: expected an integer from 0 to 2\*\*64-1"):
        export_checkpoint(str(src), Plan(), tmp_path / "out", seed=seed)
    assert not (tmp_path / "out").exists()
