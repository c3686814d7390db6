"""How soon a cancelled fresh init of one huge tensor stops: the 70B's lm_head (32000×8192 = 262M values, bf16;
Llama-3-70B's 128256×8192 embedding is 4× that), built from its real config on the meta device, initialised as
``FreshInit.tensor`` does (torch's reset_parameters, then transformers' _init_weights), cancelled ``--after``
seconds into the init. Side by side with another checkout (``--before DIR``: the init in one torch call per
init function, cancel seen only after it). One child process per run, so CPU time and peak RSS are its own.

    python benchmarks/bench_fresh_cancel.py --config /tmp/gt_llama70b --before /tmp/explorer-before

Writes the section "Cancel inside one tensor's fresh init" of results/gui.md.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
KEY = "lm_head.weight"

_CHILD = r"""
import json, resource, sys, threading, time
import torch
from explorer.core.fresh import FreshInit
from explorer.core.jobs import Cancelled
from explorer.core.model import ModelSpec, build_model
config, key, after = sys.argv[1], sys.argv[2], float(sys.argv[3])
built = build_model(ModelSpec(config=config), checkpoint_dtype="bfloat16")
fi = FreshInit(built, seed=0, cache_modules=1)
stop = threading.Event()
out = {}
def run():
    t0 = time.perf_counter()
    try:
        t = fi.tensor(key, cancel=stop.is_set)
        out["finished"] = True
        out["shape"] = list(t.shape)
    except Cancelled:
        out["finished"] = False
    out["ended_s"] = time.perf_counter() - t0
th = threading.Thread(target=run)
cpu0 = time.process_time()
th.start()
if after >= 0:
    time.sleep(after)
    t_cancel = time.perf_counter()
    stop.set()
    th.join()
    out["stopped_after_cancel_s"] = time.perf_counter() - t_cancel
else:
    th.join()
out["cpu_s"] = time.process_time() - cpu0
out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
print("RESULT " + json.dumps(out), flush=True)
"""


def child(root: Path, config: Path, after: float) -> dict:
    env = dict(os.environ, PYTHONPATH=str(root), HF_HUB_OFFLINE="1")
    r = subprocess.run([sys.executable, "-c", _CHILD, str(config), KEY, str(after)], env=env, cwd=root,
                       capture_output=True, text=True, timeout=3600)
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"{root}: {r.stderr[-2000:]}")
    return json.loads(line[len("RESULT "):])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=Path("/tmp/bench_llama70b"), help="folder with the 70B config.json")
    p.add_argument("--before", type=Path, default=None)
    p.add_argument("--before-note", default="", help="what the other checkout is (said in the results)")
    p.add_argument("--after", type=float, default=2.0, help="seconds into the init when cancel is set")
    a = p.parse_args(argv)
    sys.path.insert(0, str(HERE))
    from bench_gui import machine_load, versions

    roots = [("now", ROOT)] + ([("before", a.before)] if a.before else [])
    rows = []
    for label, root in roots:
        full = child(root, a.config, -1)
        cancelled = child(root, a.config, a.after)
        rows.append((label, full, cancelled))
    lines = ["", "## Cancel inside one tensor's fresh init (one child process per run)", "",
             f"Machine at the time: {machine_load()}. " + (f"`before` = {a.before}{' (' + a.before_note + ')' if a.before_note else ''}. " if a.before else "")
             + f"`{KEY}` of {a.config.name} (32000×8192, bf16): `FreshInit.tensor` on the meta-built 70B, uncancelled, "
             f"then cancelled {a.after:g} s into the init (model build not counted).", "",
             "| build | whole init | stops after cancel | CPU-seconds (cancelled run) | peak RSS (cancelled run) |",
             "|---|---:|---:|---:|---:|"]
    for label, full, c in rows:
        stop = f"{c['stopped_after_cancel_s']:.2f} s" + ("" if not c.get("finished") else " (ran to the end)")
        lines.append(f"| {label} | {full['ended_s']:.2f} s | {stop} | {c['cpu_s']:.1f} s | {c['peak_rss_gb']:.2f} GB |")
    section = "\n".join(lines) + "\n"
    out = HERE / "results" / "gui.md"
    text = out.read_text()
    marker = "\n## Cancel inside one tensor's fresh init"
    if marker in text:  # drop the old copy of this section
        head, _, tail = text.partition(marker)
        text = head + ("\n## " + tail.split("\n## ", 1)[1] if "\n## " in tail else "\n")
    # before the close/moves section, which bench_gui.py --only jobs rewrites to the end of the file
    at = text.find("\n## Close during a job")
    if at < 0:
        at = text.rfind("\nVersions: ")
    text = text.rstrip("\n") + "\n" + section if at < 0 else text[:at].rstrip("\n") + "\n" + section + text[at:]
    print(section)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
