"""CleanRL's ``dqn_atari.py`` as the peer of the ``dqn-pong`` recipe: its algorithm and loop, on Gymnasium 1.x.

Runs in our venv (torch, gymnasium, ale-py and opencv: the ``atari`` extra); nothing of lightning_accelrl is
imported. What changed from CleanRL's file (vwxyzjn/cleanrl, ``cleanrl/dqn_atari.py``), and only that:

- The env is ``cleanrl_ppo_atari.make_env`` (imported, not copied): the recipe's v5 protocol instead of
  ``BreakoutNoFrameskip-v4``, i.e. ``ALE/Pong-v5`` with ``frameskip=1``, sticky actions 0.25, the minimal action
  set, episodes capped at 108k frames (v5's default) and Gymnasium's ``AtariPreprocessing`` (30 no-op resets,
  4-frame skip with max-pooling, 84×84 grayscale, no life loss as terminal) in place of CleanRL's SB3-derived
  wrappers, then FIRE on reset, reward sign clipping, 4 stacked frames. One env, as CleanRL ships (it asserts
  ``num_envs == 1``).
- Gymnasium 1.x vector API: ``SyncVectorEnv`` with same-step autoreset (the semantics CleanRL's loop assumes): a
  truncated env's last observation is read from ``final_obs``, episode statistics from ``final_info``.
- Replay: this venv has no SB3 (nor ``cleanrl_utils``), so ``ReplayBuffer`` below is a minimal numpy equivalent
  of SB3's ``ReplayBuffer(optimize_memory_usage=True, handle_timeout_termination=False)``, which CleanRL uses:
  stacked uint8 observations in one ring array, a transition's next observation read from the following slot
  (so the slot at ``pos`` is never sampled, and at an episode's end the next episode's first observation
  overwrites the last one, as in SB3), the same sampling and the same copies into torch tensors.
- No TensorBoard/W&B, no SPS or return prints, no model saving/evaluation (off by default in CleanRL);
  ``--threads`` sets torch's intra-op threads (default: torch's, i.e. every core, as CleanRL).

The maths is CleanRL's: Nature CNN with PyTorch's default init, Adam 1e-4 (eps 1e-8), batch 32, one update
every 4 env steps after ``--learning-starts``, MSE TD loss without gradient clipping, γ 0.99, target network
replaced (τ 1.0) every 1000 env steps, ε 1 → 0.01 over the first 10% of ``--total-timesteps``, acting with a
forward outside ``torch.no_grad``. Where the ``dqn-pong`` recipe differs from it (the recipe is unchanged):

- loss: ours Huber (δ 1), here MSE; gradients: ours clipped to norm 10, here not; Adam eps: ours 1e-4, here 1e-8;
- target copy: ours every 1000 *updates* (4000 env steps), here every 1000 *env steps* (250 updates);
- init: ours orthogonal (gain √2 in the trunk, 1 for the Q head), here PyTorch's default;
- envs: ours 8 stepped together by ale_py's C++ vector env (one batched forward, ε drawn per env) and 2 updates
  per vector step on average (8 sampled per inserted transition, held by a rate limiter); here 1 env and 1
  update every 4 steps: the same ratio;
- replay: ours stores each frame once (~7 KB per transition) and samples from its table; here 28 KB per
  transition (4×84×84 uint8);
- truncation (the 108k-frame cap): ours bootstraps from the true last observation, here from whatever the next
  slot holds (see Replay above).

Timing: the training loop only (envs built, first reset done). Prints one JSON line on stdout (the last line):

    .venv/bin/python benchmarks/peers/cleanrl_dqn_atari.py --total-timesteps 40960 --learning-starts 10000 \
        --buffer-size 100000 --seed 0
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time
from typing import NamedTuple

import ale_py
import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim
from cleanrl_ppo_atari import make_env  # the same env construction as the PPO peer


class ReplayBufferSamples(NamedTuple):
    observations: torch.Tensor
    actions: torch.Tensor
    next_observations: torch.Tensor
    dones: torch.Tensor
    rewards: torch.Tensor


class ReplayBuffer:
    """SB3's ``ReplayBuffer`` with ``optimize_memory_usage=True`` and ``handle_timeout_termination=False``, for a
    ``Box`` observation and a ``Discrete`` action space: what CleanRL's dqn_atari.py builds."""

    def __init__(self, buffer_size: int, observation_space, action_space, device, n_envs: int = 1):
        self.buffer_size, self.n_envs, self.device = max(buffer_size // n_envs, 1), n_envs, device
        self.pos, self.full = 0, False
        # ``observations`` holds the next observations too: slot pos + 1 is transition pos's next observation
        self.observations = np.zeros(
            (self.buffer_size, n_envs, *observation_space.shape), dtype=observation_space.dtype
        )
        self.actions = np.zeros((self.buffer_size, n_envs, 1), dtype=action_space.dtype)
        self.rewards = np.zeros((self.buffer_size, n_envs), dtype=np.float32)
        self.dones = np.zeros((self.buffer_size, n_envs), dtype=np.float32)

    def add(self, obs, next_obs, action, reward, done) -> None:
        self.observations[self.pos] = np.array(obs)
        self.observations[(self.pos + 1) % self.buffer_size] = np.array(next_obs)
        self.actions[self.pos] = np.array(action).reshape((self.n_envs, 1))
        self.rewards[self.pos] = np.array(reward)
        self.dones[self.pos] = np.array(done)
        self.pos += 1
        if self.pos == self.buffer_size:
            self.full, self.pos = True, 0

    def sample(self, batch_size: int) -> ReplayBufferSamples:
        # never the slot at ``pos``: its next observation is not written yet (or is the oldest, overwritten one)
        if self.full:
            batch_inds = np.random.randint(1, self.buffer_size, size=batch_size)
            batch_inds = (batch_inds + self.pos) % self.buffer_size
        else:
            batch_inds = np.random.randint(0, self.pos, size=batch_size)
        env_inds = np.random.randint(0, high=self.n_envs, size=(len(batch_inds),))
        data = (
            self.observations[batch_inds, env_inds, :],
            self.actions[batch_inds, env_inds, :],
            self.observations[(batch_inds + 1) % self.buffer_size, env_inds, :],
            self.dones[batch_inds, env_inds].reshape(-1, 1),
            self.rewards[batch_inds, env_inds].reshape(-1, 1),
        )
        return ReplayBufferSamples(*(torch.tensor(a, device=self.device) for a in data))


class QNetwork(nn.Module):
    def __init__(self, env):
        super().__init__()
        self.network = nn.Sequential(
            nn.Conv2d(4, 32, 8, stride=4),
            nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2),
            nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(3136, 512),
            nn.ReLU(),
            nn.Linear(512, env.single_action_space.n),
        )

    def forward(self, x):
        return self.network(x / 255.0)


def linear_schedule(start_e: float, end_e: float, duration: int, t: int):
    slope = (end_e - start_e) / duration
    return max(slope * t + start_e, end_e)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env-id", default="ALE/Pong-v5")
    p.add_argument("--total-timesteps", type=int, default=40_960)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--learning-starts", type=int, default=80_000)
    p.add_argument("--buffer-size", type=int, default=1_000_000)
    args = p.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    lr, gamma, tau, target_network_frequency, batch_size = 1e-4, 0.99, 1.0, 1000, 32
    start_e, end_e, exploration_fraction, train_frequency = 1.0, 0.01, 0.10, 4

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    device = torch.device("cpu")
    autoreset = gym.vector.AutoresetMode.SAME_STEP
    envs = gym.vector.SyncVectorEnv([make_env(args.env_id)], autoreset_mode=autoreset)
    envs.single_action_space.seed(args.seed)  # CleanRL's make_env seeds the (single) env's action space

    q_network = QNetwork(envs).to(device)
    optimizer = optim.Adam(q_network.parameters(), lr=lr)
    target_network = QNetwork(envs).to(device)
    target_network.load_state_dict(q_network.state_dict())
    rb = ReplayBuffer(args.buffer_size, envs.single_observation_space, envs.single_action_space, device)

    updates, scores = 0, []
    obs, _ = envs.reset(seed=args.seed)
    start_time = time.perf_counter()
    for global_step in range(args.total_timesteps):
        epsilon = linear_schedule(start_e, end_e, exploration_fraction * args.total_timesteps, global_step)
        if random.random() < epsilon:
            actions = np.array([envs.single_action_space.sample() for _ in range(envs.num_envs)])
        else:
            q_values = q_network(torch.Tensor(obs).to(device))
            actions = torch.argmax(q_values, dim=1).cpu().numpy()

        next_obs, rewards, terminations, truncations, infos = envs.step(actions)
        final = infos.get("final_info", {})
        if "episode" in final:  # the game score (RecordEpisodeStatistics sits before reward clipping)
            scores += [float(r) for r, ended in zip(final["episode"]["r"], final["_episode"]) if ended]

        # a truncated episode's next observation is its last one, not the reset's (same-step autoreset)
        real_next_obs = next_obs.copy()
        for idx, trunc in enumerate(truncations):
            if trunc:
                real_next_obs[idx] = infos["final_obs"][idx]
        rb.add(obs, real_next_obs, actions, rewards, terminations)
        obs = next_obs

        if global_step > args.learning_starts:
            if global_step % train_frequency == 0:
                data = rb.sample(batch_size)
                with torch.no_grad():
                    target_max, _ = target_network(data.next_observations).max(dim=1)
                    td_target = data.rewards.flatten() + gamma * target_max * (1 - data.dones.flatten())
                old_val = q_network(data.observations).gather(1, data.actions).squeeze()
                loss = F.mse_loss(td_target, old_val)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                updates += 1

            if global_step % target_network_frequency == 0:
                for target_network_param, q_network_param in zip(
                    target_network.parameters(), q_network.parameters()
                ):
                    target_network_param.data.copy_(
                        tau * q_network_param.data + (1.0 - tau) * target_network_param.data
                    )
    wall = time.perf_counter() - start_time
    envs.close()
    env_steps = args.total_timesteps
    print(
        json.dumps(
            {
                "side": "cleanrl",
                "env": args.env_id,
                "seed": args.seed,
                "env_steps": env_steps,
                "wall_time_s": round(wall, 2),
                "env_steps_per_s": round(env_steps / wall, 1),
                "torch_threads": torch.get_num_threads(),
                "episodes": len(scores),
                "score_mean": round(float(np.mean(scores)), 2) if scores else None,
                "updates": updates,
                "cores": os.cpu_count(),
                "versions": {
                    "torch": torch.__version__,
                    "gymnasium": gym.__version__,
                    "ale_py": ale_py.__version__,
                },
                "python": platform.python_version(),
            }
        )
    )


if __name__ == "__main__":
    main()
