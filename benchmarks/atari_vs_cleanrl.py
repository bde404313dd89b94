"""PPO on Atari, full training on this machine's cores: ``ppo-breakout`` against CleanRL's ``ppo_atari.py``.

    .venv/bin/python benchmarks/atari_vs_cleanrl.py                       # 40,960 env steps, seeds 0 1 2
    .venv/bin/python benchmarks/atari_vs_cleanrl.py --steps 8192 --seeds 0 --ours-threads 1 --peer-threads 1
    .venv/bin/python benchmarks/atari_vs_cleanrl.py --ours-precision bf16-mixed         # ours' update in bf16

For each seed, ours (``accelrl fit --recipe ppo-breakout`` with ``--data.total_env_steps`` and
``--torch_threads``) then the peer (``peers/cleanrl_ppo_atari.py``: CleanRL's algorithm and loop on the same v5
protocol and hyperparameters), one after the other, each with the whole machine. Env steps/s is each side's
training-loop figure (ours: ``summary.json``'s fit wall time; the peer: its loop after the first reset). Threads:
by default each side uses every core for torch, as each does out of the box (CleanRL never sets a thread count;
ours' default of 1 leaves the cores to env processes, so the recipe is run with ``--torch_threads`` = cores:
the ALE vector env steps in C++ threads while the learner waits, and the update has the machine to itself).
``--ours-precision`` runs ours under that ``--trainer.precision`` (``bf16-mixed``: the update's matrix maths in
bfloat16, fast on CPUs with AVX512-BF16 or AMX; the peer stays in float32, as it ships).
Prints one JSON line per run, then a Markdown table with the ratio ours / peer per seed and its median.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from continuous_pendulum import _f, timed
from recipe_seeds import run as run_recipe

HERE = Path(__file__).resolve().parent
PEER = HERE / "peers" / "cleanrl_ppo_atari.py"


def ours(seed: int, steps: int, threads: int, precision: str) -> dict:
    extra = ["--data.total_env_steps", str(steps), "--torch_threads", str(threads)]
    extra += ["--trainer.precision", precision]
    with tempfile.TemporaryDirectory() as tmp:
        r = run_recipe("ppo-breakout", seed, Path(tmp), extra)
    return {"side": "ours", "torch_threads": threads, "precision": precision, **r}


def peer(seed: int, steps: int, threads: int) -> dict:
    cmd = [sys.executable, str(PEER), "--seed", str(seed), "--total-timesteps", str(steps)]
    cmd += ["--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    last = (proc.stdout.strip().splitlines() or [""])[-1]
    if proc.returncode or not last.startswith("{"):
        return {"side": "cleanrl", "seed": seed, "error": proc.stderr.strip().splitlines()[-1:]}
    return json.loads(last)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=40_960, help="env steps per run, both sides (40 rollouts)")
    cores = os.cpu_count() or 1
    p.add_argument("--ours-threads", type=int, default=cores)
    p.add_argument("--peer-threads", type=int, default=cores)
    p.add_argument("--ours-precision", default="32-true", help="ours' --trainer.precision (e.g. bf16-mixed)")
    args = p.parse_args()
    runs = (
        ("ours", functools.partial(ours, precision=args.ours_precision), args.ours_threads),
        ("cleanrl", peer, args.peer_threads),
    )
    rows = []
    for seed in args.seeds:
        for side, fn, threads in runs:
            r = timed(fn, seed, args.steps, threads)
            r["side"] = side
            print(json.dumps(r), flush=True)
            rows.append(r)
    print(
        f"\n| seed | ours env steps/s ({args.ours_threads} torch threads, {args.ours_precision}) | CleanRL env steps/s "
        f"({args.peer_threads}) | ours / CleanRL | load ours | load CleanRL |\n|---|---|---|---|---|---|"
    )
    ratios = []
    for seed in args.seeds:
        o, c = (next(r for r in rows if r["seed"] == seed and r["side"] == s) for s in ("ours", "cleanrl"))
        ratio = o["env_steps_per_s"] / c["env_steps_per_s"] if "error" not in o and "error" not in c else None
        if ratio is not None:
            ratios.append(ratio)
        loads = [f"{x['load_before'][0]} → {x['load_after'][0]}" for x in (o, c)]
        print(
            f"| {seed} | {_f(o.get('env_steps_per_s'))} | {_f(c.get('env_steps_per_s'))} | {_f(ratio, 2)} "
            f"| {loads[0]} | {loads[1]} |"
        )
    if ratios:
        print(f"| **median** | | | **{statistics.median(ratios):.2f}** | | |")


if __name__ == "__main__":
    main()
