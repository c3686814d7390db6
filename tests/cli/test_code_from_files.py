"""Nothing named in a file is ever imported or run: plans, config.json ``architectures`` / ``auto_map``.

A custom class is imported only when the user types ``--model``. Each test builds the hostile file, runs the
commands that read it and checks for the marker file the code would have written.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from explorer.cli import main
from tests.helpers import save_tiny

ROOT = Path(__file__).resolve().parents[2]


def one_line_error(capsys, argv: list[str]) -> str:
    capsys.readouterr()
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2, (code, out, err)
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def bert(tmp_path) -> Path:
    save_tiny("bert", "BertModel", tmp_path / "bert")
    return tmp_path / "bert"


def evil_module(folder: Path, name: str, marker: Path) -> Path:
    """A Python file that, when imported (or copied and imported), creates ``marker`` (an absolute path)."""
    folder.mkdir(parents=True, exist_ok=True)
    f = folder / f"{name}.py"
    f.write_text(f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
                 "import torch\nclass Evil(torch.nn.Module):\n    def __init__(self, **kw):\n        super().__init__()\n")
    return f


def write_plan(path: Path, source: dict) -> Path:
    path.write_text(json.dumps({"version": 1, "source": source, "rules": []}))
    return path


def test_plan_naming_os_system_runs_nothing(capsys, bert, tmp_path):
    marker = tmp_path / "MARKER"
    plan = write_plan(tmp_path / "p.json", {"model": "os:system", "model_kwargs": {"command": f"touch {marker}"}})
    err = one_line_error(capsys, ["export", str(bert), "--plan", str(plan), "-o", str(tmp_path / "out")])
    assert err == (f"ckpt-explorer: error: {plan}: made with --model os:system --model-kwargs "
                   f"'{{\"command\": \"touch {marker}\"}}'; a plan never imports code: pass --model os:system "
                   f"--model-kwargs '{{\"command\": \"touch {marker}\"}}' yourself if you trust that code")
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_plan_naming_an_importable_module_never_imports_it(capsys, bert, tmp_path, monkeypatch):
    marker = tmp_path / "IMPORTED"
    evil_module(tmp_path / "mods", "evil_plan_mod", marker)
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))  # importable, so only our refusal keeps it out
    plan = write_plan(tmp_path / "p.json", {"model": "evil_plan_mod:Evil"})
    err = one_line_error(capsys, ["export", str(bert), "--plan", str(plan), "-o", str(tmp_path / "out")])
    assert "made with --model evil_plan_mod:Evil; a plan never imports code" in err
    assert not marker.exists() and "evil_plan_mod" not in sys.modules
    # --arch / --config without --model: a transformers model, the plan's class path still ignored
    capsys.readouterr()
    assert main(["export", str(bert), "--plan", str(plan), "-o", str(tmp_path / "out"), "--arch", "BertModel", "--json"]) == 0
    assert not marker.exists() and "evil_plan_mod" not in sys.modules


def test_plan_for_a_custom_model_exports_when_the_user_passes_model(capsys, tmp_path):
    import torch

    from tests.core._plain_models import Net

    ckpt = tmp_path / "net.pt"
    torch.save(Net(layers=2).state_dict(), ckpt)
    plan = tmp_path / "plan.json"
    model = ["--model", "tests.core._plain_models:Net", "--model-kwargs", '{"layers": 2}']
    assert main(["plan", str(ckpt), *model, "-o", str(plan), "--json"]) == 0
    capsys.readouterr()
    err = one_line_error(capsys, ["export", str(ckpt), "--plan", str(plan), "-o", str(tmp_path / "out")])
    assert """pass --model tests.core._plain_models:Net --model-kwargs '{"layers": 2}' yourself if you trust""" in err
    capsys.readouterr()
    assert main(["export", str(ckpt), "--plan", str(plan), "-o", str(tmp_path / "out"), *model, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["clean"]
    err = one_line_error(capsys, ["export", str(ckpt), "--plan", str(plan), "-o", str(tmp_path / "o2"),
                                  "--model-kwargs", "{}"])
    assert err.endswith("--model-kwargs needs --model pkg.module:Class")


@pytest.mark.parametrize("arch", ["os.system", "__class__", "transformers.models.bert:BertModel", "a b"])
def test_plan_arch_is_only_a_class_name(capsys, bert, tmp_path, arch):
    plan = write_plan(tmp_path / "p.json", {"arch": arch, "config": str(bert)})
    err = one_line_error(capsys, ["export", str(bert), "--plan", str(plan), "-o", str(tmp_path / "out")])
    assert err == (f"ckpt-explorer: error: {plan}: source.arch must be a transformers class name such as BertModel, "
                   f"found {arch!r}")


@pytest.mark.parametrize("arch", ["os.system", "__class__", "builtins:eval"])
def test_arch_option_and_architectures_are_only_class_names(capsys, bert, arch):
    err = one_line_error(capsys, ["report", str(bert), "--arch", arch])
    assert f"--arch {arch}: expected a transformers class name" in err
    cfg = json.loads((bert / "config.json").read_text())
    cfg["architectures"] = [arch]
    (bert / "config.json").write_text(json.dumps(cfg))
    err = one_line_error(capsys, ["report", str(bert)])
    assert err == f"ckpt-explorer: error: {bert / 'config.json'}: architectures names {arch!r}, not a transformers class name"


def test_config_auto_map_code_never_runs(capsys, bert, tmp_path):
    """config.json's auto_map names evil.py beside it: report, plan, export and init-check all ignore it."""
    marker = tmp_path / "AUTO_MAP_RAN"
    evil_module(bert, "evil", marker)
    cfg = json.loads((bert / "config.json").read_text())
    cfg["auto_map"] = {"AutoConfig": "evil.Evil", "AutoModel": "evil.Evil", "AutoModelForMaskedLM": "evil.Evil"}
    (bert / "config.json").write_text(json.dumps(cfg))
    for argv in (["report", str(bert)], ["init-check", str(bert)], ["plan", str(bert), "-o", str(tmp_path / "p.json")],
                 ["export", str(bert), "--plan", str(tmp_path / "p.json"), "-o", str(tmp_path / "out")]):
        capsys.readouterr()
        assert main([*argv, "--json"]) in (0, 1), argv
    assert not marker.exists()
    cfg["architectures"] = ["Evil"]
    (bert / "config.json").write_text(json.dumps(cfg))
    err = one_line_error(capsys, ["report", str(bert)])
    assert err.endswith("unknown class 'Evil': not a transformers model class")
    assert not marker.exists()


def test_composite_sub_config_auto_map_neither_asks_nor_runs(tmp_path):
    """A llava config whose text_config has an auto_map: transformers' AutoModel.from_config (run by
    LlavaModel.__init__) asked "Do you wish to run the custom code? [y/N]" on stdin, and ran evil.py on "y"."""
    import torch
    from safetensors.torch import save_file

    d = tmp_path / "llava"
    marker = tmp_path / "SUB_CONFIG_CODE_RAN"
    evil_module(d, "evil", marker)
    small = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 37}
    cfg = {
        "model_type": "llava", "architectures": ["LlavaForConditionalGeneration"],
        "text_config": {"model_type": "blip_text_model", "vocab_size": 99, "_name_or_path": str(d),
                        "auto_map": {"AutoModel": "evil.Evil"}, **small},
        "vision_config": {"model_type": "clip_vision_model", "image_size": 30, "patch_size": 15, **small},
    }
    (d / "config.json").write_text(json.dumps(cfg))
    save_file({"x": torch.zeros(2)}, d / "model.safetensors")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    p = subprocess.run([sys.executable, "-c", "import sys; from explorer.cli import main; sys.exit(main())",
                        "report", str(d)], input="y\ny\n", capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert "Do you wish to run the custom code" not in p.stdout + p.stderr
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert not marker.exists() and not (tmp_path / "modules" / "transformers_modules").exists()


def test_plan_config_path_is_checked_like_any_input(capsys, bert, tmp_path):
    """source.config comes from the file: a folder whose config.json is a FIFO is refused unopened, one line."""
    cfg_dir = tmp_path / "cfg"
    cfg_dir.mkdir()
    os.mkfifo(cfg_dir / "config.json")
    plan = write_plan(tmp_path / "p.json", {"config": str(cfg_dir), "arch": "BertModel"})
    err = one_line_error(capsys, ["export", str(bert), "--plan", str(plan), "-o", str(tmp_path / "out"), "--arch", "BertModel"])
    assert err.startswith(f"ckpt-explorer: error: {cfg_dir / 'config.json'}: ")
    assert not (tmp_path / "out").exists()
