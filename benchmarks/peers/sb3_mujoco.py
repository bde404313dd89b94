"""Stable-Baselines3 peer for the MuJoCo SAC, TD3 and PPO benchmark (``benchmarks/continuous_mujoco.py``).

Runs inside the SB3 venv (``benchmarks/.venv-sb3``, plus ``pip install mujoco imageio packaging`` there):

    benchmarks/.venv-sb3/bin/python benchmarks/peers/sb3_mujoco.py --algo td3 --seed 0 --steps 200000

Hyperparameters are rl-baselines3-zoo's MuJoCo entries (hyperparams/sac.yml, td3.yml and ppo.yml,
HalfCheetah-v3/v4; its SAC and TD3 Hopper and Walker2d entries are the same ``mujoco-defaults``), with the zoo's
env setup (``make_vec_env`` + ``Monitor``, one env; PPO's ``normalize: true``
is ``VecNormalize`` with the algorithm's γ, its observation statistics frozen for the evaluation).
Timing: ``time.perf_counter()`` around ``model.learn()`` only. Then a greedy evaluation (deterministic=True)
from the start states lightning_accelrl's evaluation draws (``sb3_pendulum.eval_start_seeds``). Prints exactly
one JSON line on stdout (the last line).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import gymnasium as gym
import numpy as np
import stable_baselines3
import torch
from sb3_pendulum import eval_start_seeds, greedy_eval
from stable_baselines3 import PPO, SAC, TD3
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.noise import NormalActionNoise
from stable_baselines3.common.vec_env import VecNormalize

ENVS = ("HalfCheetah-v5", "Hopper-v5", "Walker2d-v5")
N_TIMESTEPS = 200_000  # rl-zoo trains 1M; this benchmark's budget

# rl-zoo sac.yml, HalfCheetah-v3 (&mujoco-defaults): learning_starts 10000, SB3's defaults otherwise
# (lr 3e-4, buffer 1e6, batch 256, tau 0.005, gamma 0.99, train_freq 1, gradient_steps 1, ent_coef "auto",
# net_arch [256, 256]).
SAC_ZOO = dict(learning_starts=10_000)

# rl-zoo td3.yml, HalfCheetah-v4 (&mujoco-defaults; noise_type normal, noise_std 0.1 become action_noise below);
# SB3's defaults otherwise (gamma 0.99, tau 0.005, buffer 1e6, policy_delay 2, target noise 0.2 clipped at 0.5).
TD3_ZOO = dict(
    learning_starts=10_000,
    train_freq=1,
    gradient_steps=1,
    learning_rate=1e-3,
    batch_size=256,
    policy_kwargs=dict(net_arch=[400, 300]),
)
TD3_NOISE_STD = 0.1

# rl-zoo ppo.yml, HalfCheetah-v4: normalize true (VecNormalize with gamma 0.98), one env, SB3's defaults otherwise
# (GAE, advantage normalization, value clipping off).
PPO_ZOO = dict(
    n_steps=512,
    batch_size=64,
    gamma=0.98,
    learning_rate=2.0633e-05,
    ent_coef=0.000401762,
    clip_range=0.1,
    n_epochs=20,
    gae_lambda=0.92,
    max_grad_norm=0.8,
    vf_coef=0.58096,
    policy_kwargs=dict(
        log_std_init=-2,
        ortho_init=False,
        activation_fn=torch.nn.ReLU,
        net_arch=dict(pi=[256, 256], vf=[256, 256]),
    ),
)


class NormalizedPolicy:
    """``model.predict`` on observations normalized with the training run's frozen VecNormalize statistics."""

    def __init__(self, model, venv: VecNormalize) -> None:
        self.model, self.venv = model, venv

    def predict(self, obs, deterministic: bool = True):
        return self.model.predict(self.venv.normalize_obs(obs), deterministic=deterministic)


def build(algo: str, env, seed: int, learning_starts: int | None):
    """The model with the zoo's hyperparameters for ``algo`` (``learning_starts`` overrides, for plumbing)."""
    if algo == "ppo":
        return PPO("MlpPolicy", env, seed=seed, device="cpu", verbose=0, **PPO_ZOO)
    kwargs = dict(SAC_ZOO if algo == "sac" else TD3_ZOO)
    if learning_starts is not None:
        kwargs["learning_starts"] = learning_starts
    if algo == "sac":
        return SAC("MlpPolicy", env, seed=seed, device="cpu", verbose=0, **kwargs)
    n = env.action_space.shape[-1]
    noise = NormalActionNoise(mean=np.zeros(n), sigma=TD3_NOISE_STD * np.ones(n))
    return TD3("MlpPolicy", env, seed=seed, device="cpu", verbose=0, action_noise=noise, **kwargs)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algo", choices=["sac", "td3", "ppo"], required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--env", choices=ENVS, default=ENVS[0], help="PPO: HalfCheetah-v5 only (its zoo entry)"
    )
    parser.add_argument("--steps", type=int, default=N_TIMESTEPS, help="training env steps (default 200000)")
    parser.add_argument(
        "--learning-starts", type=int, default=None, help="override the zoo's 10000 (plumbing)"
    )
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument(
        "--eval-seed", type=int, default=1_000_003, help="lightning_accelrl's evaluation env seed"
    )
    parser.add_argument(
        "--eval-envs", type=int, default=1, help="the recipe's num_envs (sac/td3-halfcheetah: 1)"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch.set_num_threads (the peer figures use 1)"
    )
    args = parser.parse_args(argv)
    if args.algo == "ppo" and args.env != ENVS[0]:
        parser.error(f"--algo ppo has rl-zoo's settings for {ENVS[0]} only")

    torch.set_num_threads(args.threads)
    env = make_vec_env(args.env, n_envs=1, seed=args.seed)
    if args.algo == "ppo":
        env = VecNormalize(env, gamma=PPO_ZOO["gamma"])
    model = build(args.algo, env, args.seed, args.learning_starts)
    t0 = time.perf_counter()
    model.learn(total_timesteps=args.steps)
    train_wall = time.perf_counter() - t0
    env.close()

    t1 = time.perf_counter()
    policy = model
    if args.algo == "ppo":
        env.training = False  # statistics frozen, as rl-zoo's enjoy.py loads them
        policy = NormalizedPolicy(model, env)
    rets = greedy_eval(policy, eval_start_seeds(args.eval_seed, args.eval_envs, args.eval_episodes), args.env)
    steps, scores = int(model.num_timesteps), np.asarray(rets)
    result = {
        "algo": args.algo,
        "peer": "stable-baselines3",
        "env": args.env,
        "seed": args.seed,
        "env_steps": steps,
    }
    learning_starts = 0 if args.algo == "ppo" else model.learning_starts  # on-policy: learns from the start
    result |= {"learning_starts": learning_starts, "train_wall_s": round(train_wall, 3)}
    result |= {"env_steps_per_s": round(steps / train_wall, 1), "torch_threads": torch.get_num_threads()}
    result |= {
        "eval_return_mean": round(float(scores.mean()), 2),
        "eval_return_std": round(float(scores.std()), 2),
        "eval_returns": scores.round(2).tolist(),
        "eval_seed": args.eval_seed,
        "eval_wall_s": round(time.perf_counter() - t1, 3),
        "hyperparams": f"rl-baselines3-zoo {args.env.split('-')[0]} ({args.algo})",
    }
    result["versions"] = {"stable_baselines3": stable_baselines3.__version__, "torch": torch.__version__}
    result["versions"] |= {"gymnasium": gym.__version__, "python": sys.version.split()[0]}
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
