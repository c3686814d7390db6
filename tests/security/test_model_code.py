"""What a model spec may run: `--model` must name an nn.Module class (checked before anything is called), and a
config's values are never echoed unbounded into an error line."""
from __future__ import annotations

import json
import shutil

from tests.security.harness import assert_refused, run_all


def test_model_naming_a_function_is_refused_before_it_is_called(tmp_path, good):
    marker = tmp_path / "PWNED"
    kwargs = json.dumps({"command": f"touch {marker}"})
    runs = run_all({
        "report": (["report", str(good), "--model", "os:system", "--model-kwargs", kwargs], tmp_path / "r"),
        "init-check": (["init-check", str(good), "--model", "os:system", "--model-kwargs", kwargs], tmp_path / "i"),
    })
    for r in runs.values():
        assert_refused(r, names="os:system", says=r"not a torch\.nn\.Module class")
    assert not marker.exists(), "--model called os.system"


def test_a_10_mb_model_type_gives_a_short_error_line(tmp_path, good):
    m = tmp_path / "m"
    shutil.copytree(good, m)
    cfg = json.loads((m / "config.json").read_text())
    cfg["model_type"] = "x" * 10_000_000
    (m / "config.json").write_text(json.dumps(cfg))
    r = run_all({"report": (["report", str(m)], tmp_path / "r")})["report"]
    line = assert_refused(r, names="config.json", says=r"unknown model_type 'xxx")
    assert len(line) < 1000, len(line)
