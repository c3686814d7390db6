"""`--workers N` on the whole-checkpoint commands: the same JSON for 1 and 2 workers; a bad N is one line, exit 2."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from explorer.cli import main


def _pair(tmp_path: Path) -> tuple[str, str]:
    g = torch.Generator().manual_seed(3)
    a = {"w": torch.randn(600, 700, generator=g), "b": torch.randn(5000, generator=g).to(torch.bfloat16),
         "ids": torch.arange(1000)}
    b = dict(a, w=a["w"] + 1e-3 * torch.randn(600, 700, generator=g))
    save_file(a, tmp_path / "a.safetensors")
    save_file(b, tmp_path / "b.safetensors")
    return str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors")


def test_stats_and_diff_give_the_same_json_for_one_and_two_workers(capsys, tmp_path: Path) -> None:
    a, b = _pair(tmp_path)
    outs = {}
    for cmd in (["stats", a], ["diff", a, b]):
        for n in ("1", "2"):
            capsys.readouterr()
            main([*cmd, "--json", "--workers", n])
            outs[(cmd[0], n)] = json.loads(capsys.readouterr().out)
    assert outs[("stats", "1")] == outs[("stats", "2")]
    assert outs[("diff", "1")] == outs[("diff", "2")]
    w = {t["name"]: t for t in outs[("diff", "2")]["tensors"]}
    assert w["w"]["status"] == "changed" and w["b"]["status"] == "same"


@pytest.mark.parametrize("bad", ["0", "-2", "two", "1.5"])
def test_a_bad_worker_count_is_one_line_exit_2(capsys, tmp_path: Path, bad: str) -> None:
    a, b = _pair(tmp_path)
    for cmd in (["stats", a], ["diff", a, b]):
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            main([*cmd, f"--workers={bad}"])
        err = capsys.readouterr().err
        assert e.value.code == 2 and len(err.strip().splitlines()) == 1
        assert "--workers" in err and "whole number from 1 to" in err and repr(bad) in err


def _half_trained_llama(folder: Path) -> None:
    """A real tiny Llama (transformers' own init, saved by save_pretrained) with half its tensors moved: some
    verdicts each way."""
    from safetensors.torch import load_file

    from tests.helpers import save_tiny

    save_tiny("llama", "LlamaForCausalLM", folder, num_hidden_layers=3)
    sd = load_file(folder / "model.safetensors")
    g = torch.Generator().manual_seed(1)
    for i, k in enumerate(sorted(sd)):
        if i % 2 and sd[k].is_floating_point():
            sd[k] = sd[k] * 2 + 0.01 * torch.randn(sd[k].shape, generator=g)
    save_file(sd, folder / "model.safetensors", metadata={"format": "pt"})


def test_init_check_gives_the_same_verdicts_for_one_and_two_workers(capsys, tmp_path: Path) -> None:
    from explorer.core.fresh import init_check
    from explorer.core.parallel import SerialExecutor

    _half_trained_llama(tmp_path)
    outs = {}
    for n in ("1", "2", "3"):
        capsys.readouterr()
        main(["init-check", str(tmp_path), "--json", "--workers", n])
        outs[n] = json.loads(capsys.readouterr().out)
    assert outs["1"] == outs["2"] == outs["3"]
    flagged = set(outs["2"]["init_like"])
    assert flagged and len(flagged) < len(outs["2"]["tensors"])  # some verdicts each way
    # the same as the caller's thread running every module in turn (the code before work items)
    serial = init_check(str(tmp_path), workers=SerialExecutor())
    assert [r.to_json() for r in serial] == outs["2"]["tensors"]


def test_init_check_refuses_a_bad_worker_count_in_one_line(capsys, tmp_path: Path) -> None:
    _half_trained_llama(tmp_path)
    for bad in ("0", "-1", "many"):
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            main(["init-check", str(tmp_path), f"--workers={bad}"])
        err = capsys.readouterr().err
        assert e.value.code == 2 and len(err.strip().splitlines()) == 1 and "--workers" in err


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_export_writes_the_same_bytes_for_any_worker_count(capsys, tmp_path: Path) -> None:
    """A plan re-initialising the MLPs and the head, the rest cast to bf16, sharded: every written file is the same
    for 1, 2 and 3 workers (fresh inits, casts in ranges and kernel copies made ahead of the writer in any order)."""
    from safetensors.torch import load_file

    from explorer.core.fresh import FreshInit
    from explorer.core.model import ModelSpec, build_model
    from tests.helpers import save_tiny

    base = tmp_path / "base"
    save_tiny("llama", "LlamaForCausalLM", base, hidden_size=256, intermediate_size=704, head_dim=64, vocab_size=3000)
    assert main(["plan", str(base), "--reinit", "*.mlp.*", "--reinit", "lm_head.*", "-o", str(tmp_path / "p.json")]) == 0
    outs = {}
    for n in ("1", "2", "3"):
        out = tmp_path / f"out{n}"
        capsys.readouterr()
        assert main(["export", str(base), "--plan", str(tmp_path / "p.json"), "-o", str(out), "--dtype", "bfloat16",
                     "--max-shard-size", "1MB", "--workers", n]) == 0, capsys.readouterr().err
        outs[n] = _files(out)
    assert outs["1"] == outs["2"] == outs["3"] and len(outs["1"]) > 3  # several shards
    # the re-initialised tensors are the model's own fresh init (cast), the kept ones the source's values cast
    got = {}
    for name in outs["2"]:
        if name.endswith(".safetensors"):
            got.update(load_file(tmp_path / "out2" / name))
    src = load_file(base / "model.safetensors")
    fi = FreshInit(build_model(ModelSpec(config=str(base))))
    k = "model.layers.1.mlp.up_proj.weight"
    assert torch.equal(got[k], fi.tensor(k).to(torch.bfloat16))
    assert torch.equal(got["model.layers.0.self_attn.q_proj.weight"],
                       src["model.layers.0.self_attn.q_proj.weight"].to(torch.bfloat16))


def test_merge_export_writes_the_same_bytes_for_any_worker_count(capsys, tmp_path: Path) -> None:
    pytest.importorskip("peft")
    from peft import LoraConfig, get_peft_model

    from tests.helpers import save_tiny

    base = tmp_path / "base"
    model = save_tiny("llama", "LlamaForCausalLM", base, hidden_size=256, intermediate_size=704, head_dim=64,
                      num_hidden_layers=3)
    torch.manual_seed(3)
    get_peft_model(model, LoraConfig(r=8, target_modules=["q_proj", "v_proj", "up_proj", "down_proj"],
                                     init_lora_weights=False)).save_pretrained(tmp_path / "adapter")
    outs = {}
    for n in ("1", "2", "3"):
        out = tmp_path / f"out{n}"
        capsys.readouterr()
        assert main(["export", str(base), "--adapter", str(tmp_path / "adapter"), "-o", str(out), "--workers", n]) == 0
        outs[n] = _files(out)
    assert outs["1"] == outs["2"] == outs["3"]
    assert outs["1"]["model.safetensors"] != (base / "model.safetensors").read_bytes()


def test_export_refuses_a_bad_worker_count_and_workers_on_a_plain_conversion(capsys, tmp_path: Path) -> None:
    a, _ = _pair(tmp_path)
    for argv, what in ((["export", a, "-o", str(tmp_path / "o"), "--workers=0"], "whole number from 1 to"),
                       (["export", a, "-o", str(tmp_path / "o"), "--workers", "2"], "plain conversion")):
        capsys.readouterr()
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1 and what in err, err
    assert not (tmp_path / "o").exists()


def test_init_check_refuses_a_negative_seed_in_one_line(capsys, tmp_path: Path) -> None:
    """A negative --seed reached numpy's sampler inside a worker (an 'unexpected' ValueError); now refused first."""
    from explorer.core.errors import ConfigError
    from explorer.core.fresh import init_check

    a, _ = _pair(tmp_path)
    for bad in ("-1", "-7"):
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            main(["init-check", a, f"--seed={bad}"])
        err = capsys.readouterr().err
        assert e.value.code == 2 and len(err.strip().splitlines()) == 1 and "--seed" in err and "unexpected" not in err
    for bad in (-1, True, 1.5):
        with pytest.raises(ConfigError, match="seed"):
            init_check(a, seed=bad)
