"""Atari, full training on this machine's cores: ``ppo-breakout`` against CleanRL's ``ppo_atari.py``, or
``dqn-pong`` against its ``dqn_atari.py``.

    .venv/bin/python benchmarks/atari_vs_cleanrl.py                       # 40,960 env steps, seeds 0 1 2
    .venv/bin/python benchmarks/atari_vs_cleanrl.py --steps 8192 --seeds 0 --ours-threads 1 --peer-threads 1
    .venv/bin/python benchmarks/atari_vs_cleanrl.py --ours-precision bf16-mixed         # ours' update in bf16
    .venv/bin/python benchmarks/atari_vs_cleanrl.py --algo dqn            # dqn-pong: learning from 10,000 steps
    .venv/bin/python benchmarks/atari_vs_cleanrl.py --algo dqn --steps 200000 --learning-starts 80000

For each seed, ours (``accelrl fit --recipe ppo-breakout`` or ``dqn-pong`` with ``--data.total_env_steps`` and
``--torch_threads``) then the peer (``peers/cleanrl_ppo_atari.py`` or ``peers/cleanrl_dqn_atari.py``: CleanRL's
algorithm and loop on the same v5 protocol and hyperparameters; the DQN peer's docstring lists where dqn-pong
differs), one after the other, each with the whole machine. DQN: both sides start learning after
``--learning-starts`` env steps (ours: ``--data.learning_starts``) and keep ``--replay`` transitions (ours:
``--data.replay_capacity``; the peer's ``--buffer-size``), less than the recipe's 80k and 1M so that a short run
measures mostly the training phase and the peer's undeduplicated buffer (28 KB per transition) fits in memory;
both decay ε over the first 10% of ``--steps``. Env steps/s is each side's training-loop figure (ours:
``summary.json``'s fit wall time; the peer: its loop after the first reset). Threads:
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
# per algorithm: our recipe and the CleanRL peer it is compared with
ALGOS = {
    "ppo": ("ppo-breakout", HERE / "peers" / "cleanrl_ppo_atari.py"),
    "dqn": ("dqn-pong", HERE / "peers" / "cleanrl_dqn_atari.py"),
}


def ours(seed: int, steps: int, threads: int, recipe: str, precision: str, extra: list[str]) -> dict:
    extra = ["--data.total_env_steps", str(steps), "--torch_threads", str(threads), *extra]
    extra += ["--trainer.precision", precision]
    with tempfile.TemporaryDirectory() as tmp:
        r = run_recipe(recipe, seed, Path(tmp), extra)
    return {"side": "ours", "torch_threads": threads, "precision": precision, **r}


def peer(seed: int, steps: int, threads: int, script: Path, extra: list[str]) -> dict:
    cmd = [sys.executable, str(script), "--seed", str(seed), "--total-timesteps", str(steps)]
    cmd += ["--threads", str(threads), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    last = (proc.stdout.strip().splitlines() or [""])[-1]
    if proc.returncode or not last.startswith("{"):
        return {"side": "cleanrl", "seed": seed, "error": proc.stderr.strip().splitlines()[-1:]}
    return json.loads(last)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--algo", choices=sorted(ALGOS), default="ppo", help="ppo-breakout or dqn-pong vs CleanRL")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument(
        "--steps", type=int, default=40_960, help="env steps per run, both sides (ppo: 40 rollouts)"
    )
    p.add_argument("--learning-starts", type=int, default=10_000, help="dqn: env steps before learning")
    p.add_argument("--replay", type=int, default=100_000, help="dqn: replay capacity in transitions")
    cores = os.cpu_count() or 1
    p.add_argument("--ours-threads", type=int, default=cores)
    p.add_argument("--peer-threads", type=int, default=cores)
    p.add_argument("--ours-precision", default="32-true", help="ours' --trainer.precision (e.g. bf16-mixed)")
    args = p.parse_args()
    recipe, script = ALGOS[args.algo]
    ours_extra, peer_extra = [], []
    if args.algo == "dqn":
        ours_extra = ["--data.learning_starts", str(args.learning_starts)]
        ours_extra += ["--data.replay_capacity", str(args.replay)]
        peer_extra = ["--learning-starts", str(args.learning_starts), "--buffer-size", str(args.replay)]
    runs = (
        (
            "ours",
            functools.partial(ours, recipe=recipe, precision=args.ours_precision, extra=ours_extra),
            args.ours_threads,
        ),
        ("cleanrl", functools.partial(peer, script=script, extra=peer_extra), args.peer_threads),
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
