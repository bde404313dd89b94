"""A recipe's promise on several seeds: the *final* training return (mean of the last 100 episodes) after the whole
budget, and when the threshold was first reached, through ``accelrl fit`` exactly as a user runs it.

    python benchmarks/recipe_seeds.py --recipe a2c-cartpole --seeds 0 1 2 3 4
    python benchmarks/recipe_seeds.py --recipe ppo-cartpole --seeds 0 1 2 --jobs 2

Each run writes ``summary.json`` (``episode_return_mean`` is the final window's mean; ``env_steps_to_threshold``
the first time the window's mean reached the recipe's target). Prints one JSON line per seed and a Markdown table.
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
    summaries = sorted(root.glob("**/summary.json"))  # the loggers write under this seed's own folder
    if proc.returncode != 0 or not summaries:
        return {"seed": seed, "error": proc.stderr.strip().splitlines()[-1:] or ["no summary.json"]}
    s = json.loads(summaries[-1].read_text())
    return {
        "seed": seed,
        "final_return": round(s["episode_return_mean"], 1),
        "eval_return": s.get("eval_return_mean"),  # greedy evaluation, for recipes that run one
        "first_at_threshold": s.get("env_steps_to_threshold"),
        "env_steps": s["env_steps"],
        "wall_time_s": round(s["wall_time_s"], 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipe", required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--jobs", type=int, default=1, help="runs at once (each uses one torch thread)")
    p.add_argument("extra", nargs="*", help="more accelrl fit arguments, after --")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        roots = {s: Path(tmp) / f"s{s}" for s in args.seeds}
        for r in roots.values():
            r.mkdir()
        with ThreadPoolExecutor(args.jobs) as pool:
            results = list(pool.map(lambda s: run(args.recipe, s, roots[s], args.extra), args.seeds))
    for r in results:
        print(json.dumps(r))
    print(
        "\n| seed | final return (last 100) | first ≥ target at | env steps | wall s |\n|---|---|---|---|---|"
    )
    for r in results:
        if "error" in r:
            print(f"| {r['seed']} | error: {r['error']} | | | | |")
        else:
            print(
                f"| {r['seed']} | {r['final_return']} | {r['eval_return']} | {r['first_at_threshold']} | {r['env_steps']:,} | "
                f"{r['wall_time_s']} |"
            )


if __name__ == "__main__":
    main()
