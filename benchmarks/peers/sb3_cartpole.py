"""Stable-Baselines3 peer for the CartPole-v1 learning benchmark.

Runs inside the SB3 venv (``benchmarks/.venv-sb3``, made by ``benchmarks/setup_peers.sh``), never in ours:

    benchmarks/.venv-sb3/bin/python benchmarks/peers/sb3_cartpole.py --algo ppo --seed 0

Hyperparameters are rl-baselines3-zoo's for CartPole-v1 (hyperparams/ppo.yml, hyperparams/dqn.yml), with the
zoo's env setup (``make_vec_env`` + ``Monitor``, DummyVecEnv, no normalization). Prints exactly one JSON line on
stdout (the last line), e.g.

    {"algo": "ppo", "seed": 0, "env_steps_to_threshold": 61696, "wall_time_to_threshold_s": 12.7, ...}

Threshold: the mean return of the last 100 *training* episodes (a full window of 100 finished episodes, as
reported by ``Monitor``) reaches ``--threshold``. It is checked after every vector-env step.
Timing: ``time.perf_counter()`` from just before ``model.learn()`` (model and env already built, imports done)
to the vector-env step at which the threshold was first met. PPO stops training there unless
``--no-stop``; DQN always trains its full budget, then runs a greedy evaluation (deterministic=True) over
``--eval-episodes`` fresh episodes.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections import deque

import gymnasium as gym
import numpy as np
import stable_baselines3
import torch
from stable_baselines3 import DQN, PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env

ENV_ID = "CartPole-v1"


def linear(initial: float):
    """rl-zoo's ``lin_X`` schedule: X at the start, 0 at the end of the budget."""

    def schedule(progress_remaining: float) -> float:
        return progress_remaining * initial

    return schedule


# rl-baselines3-zoo hyperparams/ppo.yml, CartPole-v1 ("# Tuned").
PPO_ZOO = dict(
    n_envs=8,
    n_timesteps=100_000,
    kwargs=dict(
        n_steps=32,
        batch_size=256,
        gae_lambda=0.8,
        gamma=0.98,
        n_epochs=20,
        ent_coef=0.0,
        learning_rate=linear(1e-3),
        clip_range=linear(0.2),
    ),
)

# rl-baselines3-zoo hyperparams/dqn.yml, CartPole-v1 ("# Almost Tuned").
DQN_ZOO = dict(
    n_envs=1,
    n_timesteps=50_000,
    kwargs=dict(
        learning_rate=2.3e-3,
        batch_size=64,
        buffer_size=100_000,
        learning_starts=1000,
        gamma=0.99,
        target_update_interval=10,
        train_freq=256,
        gradient_steps=128,
        exploration_fraction=0.16,
        exploration_final_eps=0.04,
        policy_kwargs=dict(net_arch=[256, 256]),
    ),
)


class ThresholdCallback(BaseCallback):
    """Tracks finished training episodes and notes when the last-100 mean first reaches the threshold."""

    def __init__(self, threshold: float, window: int, stop: bool, t0_ref: list[float]):
        super().__init__()
        self.threshold = threshold
        self.returns: deque[float] = deque(maxlen=window)
        self.episodes = 0
        self.stop = stop
        self.t0_ref = t0_ref
        self.steps_to_threshold: int | None = None
        self.time_to_threshold: float | None = None

    def _on_step(self) -> bool:
        new = False
        for info in self.locals["infos"]:
            ep = info.get("episode")
            if ep is not None:
                self.returns.append(float(ep["r"]))
                self.episodes += 1
                new = True
        if (
            new
            and self.steps_to_threshold is None
            and len(self.returns) == self.returns.maxlen
            and np.mean(self.returns) >= self.threshold
        ):
            self.time_to_threshold = time.perf_counter() - self.t0_ref[0]
            self.steps_to_threshold = int(self.num_timesteps)
            if self.stop:
                return False
        return True


def greedy_eval(model, seed: int, episodes: int, env_id: str = ENV_ID, seed_stride: int = 100) -> list[float]:
    """Returns of ``episodes`` deterministic episodes from the start states ``10_000 + seed_stride·seed + i``."""
    env = gym.make(env_id)
    returns = []
    for i in range(episodes):
        obs, _ = env.reset(seed=10_000 + seed_stride * seed + i)
        done, total = False, 0.0
        while not done:
            action, _ = model.predict(obs, deterministic=True)
            obs, reward, terminated, truncated, _ = env.step(int(action))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    env.close()
    return returns


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--algo", choices=["ppo", "dqn"], required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--total-steps", type=int, default=None, help="default: rl-zoo n_timesteps (ppo 1e5, dqn 5e4)"
    )
    p.add_argument("--threshold", type=float, default=475.0)
    p.add_argument("--window", type=int, default=100, help="training episodes in the threshold mean")
    p.add_argument(
        "--no-stop", action="store_true", help="PPO: keep training to the full budget after the threshold"
    )
    p.add_argument("--eval-episodes", type=int, default=10, help="DQN greedy evaluation episodes (0: none)")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (the peer figures use 1)")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    zoo = PPO_ZOO if args.algo == "ppo" else DQN_ZOO
    total = args.total_steps or zoo["n_timesteps"]
    stop = args.algo == "ppo" and not args.no_stop

    env = make_vec_env(ENV_ID, n_envs=zoo["n_envs"], seed=args.seed)
    cls = PPO if args.algo == "ppo" else DQN
    model = cls("MlpPolicy", env, seed=args.seed, device="cpu", verbose=0, **zoo["kwargs"])

    t0_ref = [0.0]
    cb = ThresholdCallback(args.threshold, args.window, stop, t0_ref)
    t0_ref[0] = time.perf_counter()
    model.learn(total_timesteps=total, callback=cb)
    wall = time.perf_counter() - t0_ref[0]

    result = {
        "algo": args.algo,
        "peer": "stable-baselines3",
        "env": ENV_ID,
        "seed": args.seed,
        "threshold": args.threshold,
        "env_steps_to_threshold": cb.steps_to_threshold,
        "wall_time_to_threshold_s": None if cb.time_to_threshold is None else round(cb.time_to_threshold, 3),
        "env_steps": int(model.num_timesteps),
        "budget_steps": total,
        "stopped_at_threshold": bool(stop and cb.steps_to_threshold is not None),
        "wall_time_s": round(wall, 3),
        "env_steps_per_s": round(model.num_timesteps / wall, 1),
        "episodes": cb.episodes,
        "train_return_mean_last100": round(float(np.mean(cb.returns)), 2) if cb.returns else None,
    }
    if args.algo == "dqn" and args.eval_episodes > 0:
        t = time.perf_counter()
        rets = greedy_eval(model, args.seed, args.eval_episodes)
        result["eval_return_mean"] = round(float(np.mean(rets)), 2)
        result["eval_returns"] = rets
        result["eval_wall_time_s"] = round(time.perf_counter() - t, 3)
    result["hyperparams"] = "rl-baselines3-zoo CartPole-v1"
    result["torch_threads"] = torch.get_num_threads()
    result["versions"] = {
        "stable_baselines3": stable_baselines3.__version__,
        "torch": torch.__version__,
        "gymnasium": gym.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }
    env.close()
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
    sys.exit(0)
