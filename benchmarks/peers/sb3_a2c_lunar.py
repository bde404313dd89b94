"""Stable-Baselines3 peer for the a2c-lunarlander recipe: SB3's A2C with rl-zoo's LunarLander settings.

Runs inside the SB3 venv (``benchmarks/.venv-sb3``, made by ``benchmarks/setup_peers.sh``), never in ours:

    benchmarks/.venv-sb3/bin/python benchmarks/peers/sb3_a2c_lunar.py --seed 0

Hyperparameters are rl-baselines3-zoo's for LunarLander-v2 (hyperparams/a2c.yml), run on LunarLander-v3 with the
zoo's env setup (``make_vec_env`` + ``Monitor``, DummyVecEnv, no normalization). After the budget, a greedy
evaluation (deterministic=True) over ``--eval-episodes`` fresh episodes. Prints one JSON line on stdout (the last
line) with the training curve (mean of the last 100 training episodes every ``--curve-every`` env steps).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections import deque

import gymnasium as gym
import numpy as np
import stable_baselines3
import torch
from sb3_cartpole import greedy_eval
from stable_baselines3 import A2C
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env

ENV_ID = "LunarLander-v3"

# rl-baselines3-zoo hyperparams/a2c.yml, LunarLander-v2; the rest are A2C's defaults (RMSprop alpha 0.99,
# eps 1e-5, lambda 1, value 0.5, grad norm 0.5, no advantage normalization, separate 64x64 tanh MLPs).
ZOO = dict(n_envs=8, n_timesteps=200_000, kwargs=dict(gamma=0.995, n_steps=5, ent_coef=1e-5))
LR = 8.3e-4  # lin_0.00083: annealed linearly to 0 over the budget


class CurveCallback(BaseCallback):
    """Keeps the last-100 training return mean every ``every`` env steps."""

    def __init__(self, every: int):
        super().__init__()
        self.every = every
        self.returns: deque[float] = deque(maxlen=100)
        self.episodes = 0
        self.curve: list[tuple[int, float]] = []
        self.next_mark = every

    def _on_step(self) -> bool:
        for info in self.locals["infos"]:
            ep = info.get("episode")
            if ep is not None:
                self.returns.append(float(ep["r"]))
                self.episodes += 1
        if self.num_timesteps >= self.next_mark and self.returns:
            self.curve.append((int(self.num_timesteps), round(float(np.mean(self.returns)), 1)))
            self.next_mark += self.every
        return True


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--total-steps", type=int, default=ZOO["n_timesteps"])
    p.add_argument("--eval-episodes", type=int, default=100)
    p.add_argument("--curve-every", type=int, default=10_000)
    p.add_argument("--save", default=None, help="also save the trained model (SB3 zip) here")
    args = p.parse_args()

    torch.set_num_threads(1)
    env = make_vec_env(ENV_ID, n_envs=ZOO["n_envs"], seed=args.seed)
    model = A2C(
        "MlpPolicy", env, seed=args.seed, device="cpu", verbose=0,
        learning_rate=lambda remaining: remaining * LR, **ZOO["kwargs"],
    )  # fmt: skip
    cb = CurveCallback(args.curve_every)
    t0 = time.perf_counter()
    model.learn(total_timesteps=args.total_steps, callback=cb)
    wall = time.perf_counter() - t0
    if args.save:
        model.save(args.save)
    rets = greedy_eval(model, args.seed, args.eval_episodes, ENV_ID, 1000) if args.eval_episodes > 0 else []
    result = {
        "algo": "a2c",
        "peer": "stable-baselines3",
        "env": ENV_ID,
        "seed": args.seed,
        "env_steps": int(model.num_timesteps),
        "wall_time_s": round(wall, 1),
        "env_steps_per_s": round(model.num_timesteps / wall, 1),
        "episodes": cb.episodes,
        "train_return_mean_last100": round(float(np.mean(cb.returns)), 2) if cb.returns else None,
        "eval_return_mean": round(float(np.mean(rets)), 2) if rets else None,
        "eval_return_std": round(float(np.std(rets)), 2) if rets else None,
        "eval_episodes": len(rets),
        "curve": cb.curve,
        "hyperparams": "rl-baselines3-zoo a2c.yml LunarLander-v2",
        "versions": {
            "stable_baselines3": stable_baselines3.__version__,
            "torch": torch.__version__,
            "gymnasium": gym.__version__,
            "python": platform.python_version(),
        },
    }
    env.close()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
