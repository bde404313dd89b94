"""SAC, TD3 and PPO on MuJoCo, ours vs Stable-Baselines3 at one env-step budget: greedy evaluation and cost.

    .venv/bin/python benchmarks/continuous_mujoco.py --algos td3 --seeds 0 >> run.log     # 200k env steps
    .venv/bin/python benchmarks/continuous_mujoco.py --seeds 0 --steps 2000 --warmup 500    # plumbing check
    .venv/bin/python benchmarks/continuous_mujoco.py --algos ppo --seeds 0 --steps 1000000  # PPO's own budget
    .venv/bin/python benchmarks/continuous_mujoco.py --algos sac --env Walker2d-v5 --seeds 0  # sac-walker2d
    .venv/bin/python benchmarks/continuous_mujoco.py --render run.log                      # table of saved runs

The MuJoCo counterpart of ``continuous_pendulum.py`` (its timing, load and CPU accounting and its table): for
each seed and algorithm, ours (``accelrl fit --recipe {algo}-{env}``, e.g. ``sac-walker2d``, through
``recipe_seeds.run``, with ``--data.total_env_steps``) and the SB3 peer (``peers/sb3_mujoco.py`` in the SB3 venv,
rl-zoo's hyperparameters for that env; ``--env`` HalfCheetah-v5 by default, PPO on it only) run one after the
other, one thread each. Both then evaluate the greedy policy on the same ``--eval-episodes`` (10) start states. ``--warmup`` shortens both sides' 10k random steps / learning starts, for
plumbing checks only. Each run prints one JSON line as it ends; the tables come last.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from continuous_pendulum import EVAL_SEED, PEER_PYTHON, _f, table, timed
from recipe_seeds import run as run_recipe

HERE = Path(__file__).resolve().parent
PEER = HERE / "peers" / "sb3_mujoco.py"
ALGOS = ("sac", "td3", "ppo")
ENVS = ("HalfCheetah-v5", "Hopper-v5", "Walker2d-v5")
STEPS = 200_000
# published returns at 1M env steps, for scale: HalfCheetah CleanRL's SAC and TD3 (v4), rl-zoo's PPO (v3);
# Hopper and Walker2d rl-zoo's (v3), as the recipes' headers
REFERENCE_1M = {
    "HalfCheetah-v5": {"sac": "CleanRL 9,635", "td3": "CleanRL 9,583", "ppo": "rl-zoo 5,819"},
    "Hopper-v5": {"sac": "rl-zoo 2,326", "td3": "rl-zoo 3,606"},
    "Walker2d-v5": {"sac": "rl-zoo 3,863", "td3": "rl-zoo 4,718"},
}


def _commit() -> str:
    """The checkout ours ran from (``-dirty``: with uncommitted changes somewhere in the tree)."""
    proc = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=HERE, capture_output=True, text=True
    )
    return proc.stdout.strip()


def recipe_name(algo: str, env: str) -> str:
    """``sac`` on ``Walker2d-v5``: ``sac-walker2d``."""
    return f"{algo}-{env.split('-')[0].lower()}"


def ours(
    algo: str, env: str, seed: int, steps: int, episodes: int, warmup: int | None, keep: str | None
) -> dict:
    """One ``accelrl fit`` of the ``{algo}-{env}`` recipe; its summary's figures (run kept under ``keep``)."""
    extra = ["--data.total_env_steps", str(steps), "--summary.eval_episodes", str(episodes)]
    extra += ["--summary.eval_seed", str(EVAL_SEED)]
    if warmup is not None:
        extra += ["--data.learning_starts", str(warmup), "--model.init_args.random_steps", str(warmup)]
    commit = _commit()  # the code the run imports, before anyone commits during it
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(keep, f"{recipe_name(algo, env)}-s{seed}") if keep else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        r = run_recipe(recipe_name(algo, env), seed, root, extra)
        found = sorted(root.glob("**/summary.json"), key=lambda p: p.stat().st_mtime)
        s = json.loads(found[-1].read_text()) if found and "error" not in r else {}
    more = {"eval_return_std": s.get("eval_return_std"), "updates": s.get("updates"), "commit": commit}
    return {"side": "ours", "algo": algo, "env": env, **r, **more}


def peer(
    algo: str, env: str, seed: int, steps: int, episodes: int, warmup: int | None, keep: str | None
) -> dict:
    """One SB3 run in the peer venv, evaluated on ours' start states; its JSON line."""
    cmd = [str(PEER_PYTHON), str(PEER), "--algo", algo, "--env", env, "--seed", str(seed)]
    cmd += ["--steps", str(steps)]
    cmd += ["--eval-episodes", str(episodes), "--eval-seed", str(EVAL_SEED)]
    cmd += ["--learning-starts", str(warmup)] if warmup is not None else []
    proc = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
    last = (proc.stdout.strip().splitlines() or [""])[-1]
    if proc.returncode or not last.startswith("{"):
        error = proc.stderr.strip().splitlines()[-1:]
        return {"side": "sb3", "algo": algo, "env": env, "seed": seed, "error": error}
    return {"side": "sb3", **json.loads(last)}


def throughput(rows: list[dict]) -> list[str]:
    """Per algorithm and seed: each side's env steps, env steps/s over training, and ours' update count."""
    out = [
        "\n| algo | seed | ours env steps | SB3 env steps | ours env steps/s | SB3 env steps/s | ours updates "
        "| published at 1M |",
        "|---|---|---|---|---|---|---|---|",
    ]
    by_key: dict[tuple, dict] = {}
    for r in rows:
        by_key.setdefault((r["algo"], r["seed"]), {})[r["side"]] = r
    for (algo, seed), pr in sorted(by_key.items()):
        o, p = pr.get("ours", {}), pr.get("sb3", {})
        cells = [o.get("env_steps"), p.get("env_steps"), o.get("env_steps_per_s"), p.get("env_steps_per_s")]
        env = o.get("env") or p.get("env") or ENVS[0]  # runs saved before --env: HalfCheetah
        cells = [_f(c, 0) for c in cells] + [_f(o.get("updates"), 0), REFERENCE_1M[env].get(algo, "")]
        out.append(f"| {algo.upper()} | {seed} | " + " | ".join(cells) + " |")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--algos", nargs="+", choices=ALGOS, default=list(ALGOS))
    p.add_argument("--sides", nargs="+", choices=("ours", "sb3"), default=["ours", "sb3"])
    p.add_argument("--env", choices=ENVS, default=ENVS[0], help="PPO: HalfCheetah-v5 only")
    p.add_argument("--steps", type=int, default=STEPS, help="both sides' env-step budget (default 200000)")
    p.add_argument("--warmup", type=int, default=None, help="both sides' random steps / learning starts")
    p.add_argument("--eval-episodes", type=int, default=10, help="greedy episodes, the same start states")
    p.add_argument("--keep", default=None, help="keep ours' run folders (metrics.csv) under this folder")
    p.add_argument("--render", nargs="+", default=None, help="print the tables of saved runs' JSON lines")
    args = p.parse_args()
    if "ppo" in args.algos and args.env != ENVS[0] and not args.render:
        p.error(f"--algos ppo: the ppo recipe and rl-zoo's settings are for {ENVS[0]} only")
    if args.render:
        lines = [ln for f in args.render for ln in Path(f).read_text().splitlines() if ln.startswith("{")]
        rows = [json.loads(ln) for ln in lines]
    else:
        rows = []
        for seed in args.seeds:
            for algo in args.algos:
                for side in args.sides:
                    fn = ours if side == "ours" else peer
                    warmup = None if algo == "ppo" else args.warmup  # on-policy PPO has no warm-up to shorten
                    rows.append(
                        timed(fn, algo, args.env, seed, args.steps, args.eval_episodes, warmup, args.keep)
                    )
                    print(json.dumps(rows[-1]), flush=True)
    print("\n".join(table(rows, ALGOS) + throughput(rows)))


if __name__ == "__main__":
    sys.exit(main())
