"""A recipe's promise on several seeds: the *final* training return (mean of the last 100 episodes) after the whole
budget, and when the threshold was first reached, through ``accelrl fit`` exactly as a user runs it.

    python benchmarks/recipe_seeds.py --recipe a2c-cartpole --seeds 0 1 2 3 4
    python benchmarks/recipe_seeds.py --recipe ppo-cartpole --seeds 0 1 2 --jobs 2
    python benchmarks/recipe_seeds.py --recipe dqn-acrobot --seeds 0 1 2 --curve docs/curves/dqn-acrobot.png

Each run writes ``summary.json`` (``episode_return_mean`` is the final window's mean; ``env_steps_to_threshold``
the first time the window's mean reached the recipe's target; ``eval_return_mean`` the greedy evaluation of
recipes that run one). Prints one JSON line per seed and a Markdown table; ``--curve`` also draws the seeds'
learning curves (mean with a min-max band, against env steps) with ``accelrl plot``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def run(recipe: str, seed: int, root: Path, extra: list[str]) -> dict:
    out = root / f"seed{seed}"
    cmd = [
        sys.executable, "-m", "lightning_accelrl.cli", "fit", "--recipe", recipe, "--seed_everything", str(seed),
        "--trainer.default_root_dir", str(out), "--trainer.enable_progress_bar", "false", *extra,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=out.parent, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"seed": seed, "error": proc.stderr.strip().splitlines()[-1:] or ["no summary.json"]}
    return read_summary(root, seed)


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


def read_summary(root: Path, seed: int) -> dict:
    """One seed's figures from the newest ``summary.json`` under ``root`` (the loggers write under it)."""
    summaries = sorted(root.glob("**/summary.json"), key=lambda p: p.stat().st_mtime)
    if not summaries:
        return {"seed": seed, "error": ["no summary.json"]}
    s = json.loads(summaries[-1].read_text())
    return {
        "seed": seed,
        "final_return": _round(s["episode_return_mean"]),  # None: no episode ended (short Atari runs)
        "eval_return": s.get("eval_return_mean"),  # greedy evaluation, for recipes that run one
        "first_at_threshold": s.get("env_steps_to_threshold"),
        "env_steps": s["env_steps"],
        "wall_time_s": round(s["wall_time_s"], 1),
        "env_steps_per_s": round(s["env_steps_per_s"]),
        "target": s.get("target_return"),
        "env": s.get("env"),
    }


def plot_curves(recipe: str, roots: list[Path], out: str) -> None:
    """One PNG of every seed's curve (one group: the runs share the recipe's config up to seeds)."""
    runs = [str(p.parent) for r in roots for p in sorted(r.glob("**/metrics.csv"))]
    if not runs:
        return
    cmd = [sys.executable, "-m", "lightning_accelrl.cli", "plot", *runs, "--out", out, "--x", "env_steps",
           "--title", f"{recipe}: seeds " + ", ".join(r.name.removeprefix("s") for r in roots)]  # fmt: skip
    subprocess.run(cmd, check=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--jobs", type=int, default=1, help="runs at once (each uses one torch thread)")
    p.add_argument("--curve", default=None, help="also write the seeds' learning curves to this PNG")
    p.add_argument(
        "--keep", default=None, help="keep the run folders under this folder (default: a temporary one)"
    )
    p.add_argument("extra", nargs="*", help="more accelrl fit arguments, after --")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        roots = {s: Path(args.keep or tmp).resolve() / f"s{s}" for s in args.seeds}
        for r in roots.values():
            r.mkdir(parents=True)
        with ThreadPoolExecutor(args.jobs) as pool:
            results = list(pool.map(lambda s: run(args.recipe, s, roots[s], args.extra), args.seeds))
        if args.curve:
            plot_curves(args.recipe, list(roots.values()), args.curve)
    for r in results:
        print(json.dumps(r))
    print(
        "\n| seed | final return (last 100) | greedy eval | first ≥ target at | env steps | wall s | env steps/s |"
        "\n|---|---|---|---|---|---|---|"
    )
    for r in results:
        if "error" in r:
            print(f"| {r['seed']} | error: {r['error']} | | | | | |")
        else:
            first = f"{r['first_at_threshold']:,}" if r["first_at_threshold"] is not None else "not reached"
            greedy = "" if r["eval_return"] is None else f"{r['eval_return']:.1f}"
            print(
                f"| {r['seed']} | {r['final_return']} | {greedy} | {first} | {r['env_steps']:,} | "
                f"{r['wall_time_s']} | {r['env_steps_per_s']:,} |"
            )


if __name__ == "__main__":
    main()
