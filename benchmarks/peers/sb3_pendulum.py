"""Stable-Baselines3 peer for the Pendulum-v1 SAC and TD3 benchmark.

Runs inside the SB3 venv (``benchmarks/.venv-sb3``, made by ``benchmarks/setup_peers.sh``), never in ours:

    benchmarks/.venv-sb3/bin/python benchmarks/peers/sb3_pendulum.py --algo sac --seed 0

Hyperparameters are rl-baselines3-zoo's for Pendulum-v1 (hyperparams/sac.yml, hyperparams/td3.yml), with the
zoo's env setup (``make_vec_env`` + ``Monitor``, one env, no normalization). Timing: ``time.perf_counter()``
around ``model.learn()`` only (model and env already built). Then a greedy evaluation (deterministic=True) over
``--eval-episodes`` episodes from the start states lightning_accelrl's evaluation draws (see ``eval_start_seeds``).
Prints exactly one JSON line on stdout (the last line), e.g.

    {"algo": "sac", "seed": 0, "train_wall_s": 361.2, "eval_return_mean": -151.3, ...}
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import gymnasium as gym
import numpy as np
import stable_baselines3
import torch
from stable_baselines3 import SAC, TD3
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.noise import NormalActionNoise

ENV_ID = "Pendulum-v1"
N_TIMESTEPS = 20_000

# rl-baselines3-zoo hyperparams/sac.yml, Pendulum-v1: learning_rate 1e-3, SB3's defaults otherwise
# (buffer 1e6, learning_starts 100, batch 256, tau 0.005, gamma 0.99, train_freq 1, gradient_steps 1,
# ent_coef "auto", net_arch [256, 256]).
SAC_ZOO = dict(learning_rate=1e-3)

# rl-baselines3-zoo hyperparams/td3.yml, Pendulum-v1 (noise_type normal, noise_std 0.1 become action_noise
# below); SB3's defaults otherwise (batch 256, tau 0.005, policy_delay 2, target noise 0.2 clipped at 0.5).
TD3_ZOO = dict(
    gamma=0.98,
    buffer_size=200_000,
    learning_starts=10_000,
    gradient_steps=-1,
    train_freq=(1, "episode"),
    learning_rate=1e-3,
    policy_kwargs=dict(net_arch=[400, 300]),
)
TD3_NOISE_STD = 0.1


def build(algo: str, env, seed: int):
    """The model with the zoo's hyperparameters for ``algo``."""
    if algo == "sac":
        return SAC("MlpPolicy", env, seed=seed, device="cpu", verbose=0, **SAC_ZOO)
    n_actions = env.action_space.shape[-1]
    noise = NormalActionNoise(mean=np.zeros(n_actions), sigma=TD3_NOISE_STD * np.ones(n_actions))
    return TD3("MlpPolicy", env, seed=seed, device="cpu", verbose=0, action_noise=noise, **TD3_ZOO)


def eval_start_seeds(eval_seed: int, eval_envs: int, episodes: int) -> list[int | None]:
    """The reset seed of every episode, as lightning_accelrl's evaluation draws its start states.

    Its summary evaluation builds ``eval_envs`` envs (the recipe's ``num_envs``) seeded ``eval_seed + i``, resets
    each once with its seed and then lets it reset itself (unseeded: the env's generator runs on), giving env i
    ``episodes // eval_envs`` episodes (one more for the first ``episodes % eval_envs``). ``None``: reset unseeded.
    """
    seeds: list[int | None] = []
    for i in range(eval_envs):
        quota = episodes // eval_envs + (i < episodes % eval_envs)
        if quota:
            seeds += [eval_seed + i] + [None] * (quota - 1)
    return seeds


def greedy_eval(model, start_seeds: list[int | None], env_id: str = ENV_ID) -> list[float]:
    """Returns of one episode per entry of ``start_seeds`` with the deterministic policy."""
    env = gym.make(env_id)
    returns = []
    for reset_seed in start_seeds:
        obs, _ = env.reset(seed=reset_seed)
        done, total = False, 0.0
        while not done:
            action, _ = model.predict(obs, deterministic=True)
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    env.close()
    return returns


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--algo", choices=["sac", "td3"], required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=N_TIMESTEPS, help="training env steps (rl-zoo: 20000)")
    p.add_argument("--eval-episodes", type=int, default=100)
    p.add_argument("--eval-seed", type=int, default=1_000_003, help="lightning_accelrl's evaluation env seed")
    p.add_argument("--eval-envs", type=int, default=1, help="the recipe's num_envs (sac/td3-pendulum: 1)")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (the peer figures use 1)")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    env = make_vec_env(ENV_ID, n_envs=1, seed=args.seed)
    model = build(args.algo, env, args.seed)

    t0 = time.perf_counter()
    model.learn(total_timesteps=args.steps)
    train_wall = time.perf_counter() - t0

    t = time.perf_counter()
    rets = greedy_eval(model, eval_start_seeds(args.eval_seed, args.eval_envs, args.eval_episodes))
    result = {
        "algo": args.algo,
        "peer": "stable-baselines3",
        "env": ENV_ID,
        "seed": args.seed,
        "env_steps": int(model.num_timesteps),
        "train_wall_s": round(train_wall, 3),
        "env_steps_per_s": round(model.num_timesteps / train_wall, 1),
        "eval_return_mean": round(float(np.mean(rets)), 2),
        "eval_return_std": round(float(np.std(rets)), 2),
        "eval_returns": [round(r, 2) for r in rets],
        "eval_seed": args.eval_seed,
        "eval_wall_s": round(time.perf_counter() - t, 3),
        "hyperparams": f"rl-baselines3-zoo {ENV_ID} ({args.algo})",
        "torch_threads": torch.get_num_threads(),
        "versions": {
            "stable_baselines3": stable_baselines3.__version__,
            "torch": torch.__version__,
            "gymnasium": gym.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
    }
    env.close()
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
    sys.exit(0)
