"""CleanRL's ``ppo_atari.py`` as the peer of the ``ppo-breakout`` recipe: its algorithm and loop, on Gymnasium 1.x.

Runs in our venv (torch, gymnasium, ale-py and opencv: the ``atari`` extra); nothing of lightning_accelrl is
imported. What changed from CleanRL's file (vwxyzjn/cleanrl, ``cleanrl/ppo_atari.py``), and only that:

- The env follows the recipe's v5 protocol instead of ``BreakoutNoFrameskip-v4``: ``ALE/Breakout-v5`` with
  ``frameskip=1``, sticky actions 0.25, the minimal action set, and Gymnasium's ``AtariPreprocessing`` (30 no-op
  resets, 4-frame skip with max-pooling, 84×84 grayscale, no life loss as terminal) in place of SB3's wrappers
  (which CleanRL imports; this venv has no SB3), then FIRE on reset, reward sign clipping, 4 stacked frames.
- Gymnasium 1.x vector API: ``SyncVectorEnv`` with same-step autoreset (the semantics CleanRL's loop assumes),
  episode statistics read from ``final_info``.
- No TensorBoard/W&B; ``--threads`` sets torch's intra-op threads (default: torch's, i.e. every core, as CleanRL).

The maths is CleanRL's: Nature CNN with orthogonal init, 8 envs × 128 steps, GAE 0.95, γ 0.99, 4 epochs of 4
minibatches, clip 0.1 (policy and value), entropy 0.01, value 0.5, grad norm 0.5, Adam 2.5e-4 (eps 1e-5) annealed.
Timing: the training loop only (envs built, first reset done). Prints one JSON line on stdout (the last line):

    .venv/bin/python benchmarks/peers/cleanrl_ppo_atari.py --total-timesteps 40960 --seed 0
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time

import ale_py
import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.optim as optim
from torch.distributions.categorical import Categorical

gym.register_envs(ale_py)


class FireReset(gym.Wrapper):
    """Press FIRE after a reset (SB3's ``FireResetEnv``, which CleanRL uses): Breakout waits for it."""

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        obs, _, terminated, truncated, info = self.env.step(1)
        if terminated or truncated:
            obs, info = self.env.reset(**kwargs)
        return obs, info


def make_env(env_id: str):
    def thunk():
        env = gym.make(env_id, frameskip=1, repeat_action_probability=0.25, full_action_space=False)
        env = gym.wrappers.RecordEpisodeStatistics(env)
        env = gym.wrappers.AtariPreprocessing(
            env, noop_max=30, frame_skip=4, screen_size=84, terminal_on_life_loss=False, grayscale_obs=True
        )
        if "FIRE" in env.unwrapped.get_action_meanings():
            env = FireReset(env)
        env = gym.wrappers.TransformReward(env, lambda r: float(np.sign(r)))  # CleanRL's ClipRewardEnv
        return gym.wrappers.FrameStackObservation(env, 4)

    return thunk


SQRT2 = float(np.sqrt(2))


def layer_init(layer, std=SQRT2, bias_const=0.0):
    torch.nn.init.orthogonal_(layer.weight, std)
    torch.nn.init.constant_(layer.bias, bias_const)
    return layer


class Agent(nn.Module):
    def __init__(self, envs):
        super().__init__()
        self.network = nn.Sequential(
            layer_init(nn.Conv2d(4, 32, 8, stride=4)),
            nn.ReLU(),
            layer_init(nn.Conv2d(32, 64, 4, stride=2)),
            nn.ReLU(),
            layer_init(nn.Conv2d(64, 64, 3, stride=1)),
            nn.ReLU(),
            nn.Flatten(),
            layer_init(nn.Linear(64 * 7 * 7, 512)),
            nn.ReLU(),
        )
        self.actor = layer_init(nn.Linear(512, envs.single_action_space.n), std=0.01)
        self.critic = layer_init(nn.Linear(512, 1), std=1)

    def get_value(self, x):
        return self.critic(self.network(x / 255.0))

    def get_action_and_value(self, x, action=None):
        hidden = self.network(x / 255.0)
        logits = self.actor(hidden)
        probs = Categorical(logits=logits)
        if action is None:
            action = probs.sample()
        return action, probs.log_prob(action), probs.entropy(), self.critic(hidden)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env-id", default="ALE/Breakout-v5")
    p.add_argument("--total-timesteps", type=int, default=40_960)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--num-envs", type=int, default=8)
    p.add_argument("--num-steps", type=int, default=128)
    args = p.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    lr, gamma, gae_lambda, epochs, num_minibatches = 2.5e-4, 0.99, 0.95, 4, 4
    clip_coef, ent_coef, vf_coef, max_grad_norm = 0.1, 0.01, 0.5, 0.5
    batch_size = args.num_envs * args.num_steps
    minibatch_size = batch_size // num_minibatches
    num_iterations = args.total_timesteps // batch_size

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    device = torch.device("cpu")
    envs = gym.vector.SyncVectorEnv(
        [make_env(args.env_id) for _ in range(args.num_envs)],
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
    )
    agent = Agent(envs).to(device)
    optimizer = optim.Adam(agent.parameters(), lr=lr, eps=1e-5)

    obs = torch.zeros((args.num_steps, args.num_envs) + envs.single_observation_space.shape).to(device)
    actions = torch.zeros((args.num_steps, args.num_envs) + envs.single_action_space.shape).to(device)
    logprobs = torch.zeros((args.num_steps, args.num_envs)).to(device)
    rewards = torch.zeros((args.num_steps, args.num_envs)).to(device)
    dones = torch.zeros((args.num_steps, args.num_envs)).to(device)
    values = torch.zeros((args.num_steps, args.num_envs)).to(device)

    global_step, scores = 0, []
    next_obs, _ = envs.reset(seed=args.seed)
    next_obs = torch.Tensor(next_obs).to(device)
    next_done = torch.zeros(args.num_envs).to(device)
    start_time = time.perf_counter()
    for iteration in range(1, num_iterations + 1):
        optimizer.param_groups[0]["lr"] = (1.0 - (iteration - 1.0) / num_iterations) * lr
        for step in range(0, args.num_steps):
            global_step += args.num_envs
            obs[step] = next_obs
            dones[step] = next_done
            with torch.no_grad():
                action, logprob, _, value = agent.get_action_and_value(next_obs)
                values[step] = value.flatten()
            actions[step] = action
            logprobs[step] = logprob
            next_obs, reward, terminations, truncations, infos = envs.step(action.cpu().numpy())
            next_done = np.logical_or(terminations, truncations)
            rewards[step] = torch.tensor(reward).to(device).view(-1)
            next_obs, next_done = torch.Tensor(next_obs).to(device), torch.Tensor(next_done).to(device)
            final = infos.get("final_info", {})
            if "episode" in final:  # the game score (RecordEpisodeStatistics sits before reward clipping)
                scores += [float(r) for r, ended in zip(final["episode"]["r"], final["_episode"]) if ended]

        with torch.no_grad():
            next_value = agent.get_value(next_obs).reshape(1, -1)
            advantages = torch.zeros_like(rewards).to(device)
            lastgaelam = 0
            for t in reversed(range(args.num_steps)):
                if t == args.num_steps - 1:
                    nextnonterminal = 1.0 - next_done
                    nextvalues = next_value
                else:
                    nextnonterminal = 1.0 - dones[t + 1]
                    nextvalues = values[t + 1]
                delta = rewards[t] + gamma * nextvalues * nextnonterminal - values[t]
                advantages[t] = lastgaelam = delta + gamma * gae_lambda * nextnonterminal * lastgaelam
            returns = advantages + values

        b_obs = obs.reshape((-1,) + envs.single_observation_space.shape)
        b_logprobs = logprobs.reshape(-1)
        b_actions = actions.reshape((-1,) + envs.single_action_space.shape)
        b_advantages = advantages.reshape(-1)
        b_returns = returns.reshape(-1)
        b_values = values.reshape(-1)
        b_inds = np.arange(batch_size)
        for _ in range(epochs):
            np.random.shuffle(b_inds)
            for start in range(0, batch_size, minibatch_size):
                mb_inds = b_inds[start : start + minibatch_size]
                _, newlogprob, entropy, newvalue = agent.get_action_and_value(
                    b_obs[mb_inds], b_actions.long()[mb_inds]
                )
                ratio = (newlogprob - b_logprobs[mb_inds]).exp()
                mb_advantages = b_advantages[mb_inds]
                mb_advantages = (mb_advantages - mb_advantages.mean()) / (mb_advantages.std() + 1e-8)
                pg_loss1 = -mb_advantages * ratio
                pg_loss2 = -mb_advantages * torch.clamp(ratio, 1 - clip_coef, 1 + clip_coef)
                pg_loss = torch.max(pg_loss1, pg_loss2).mean()
                newvalue = newvalue.view(-1)
                v_loss_unclipped = (newvalue - b_returns[mb_inds]) ** 2
                v_clipped = b_values[mb_inds] + torch.clamp(
                    newvalue - b_values[mb_inds], -clip_coef, clip_coef
                )
                v_loss_clipped = (v_clipped - b_returns[mb_inds]) ** 2
                v_loss = 0.5 * torch.max(v_loss_unclipped, v_loss_clipped).mean()
                loss = pg_loss - ent_coef * entropy.mean() + v_loss * vf_coef
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), max_grad_norm)
                optimizer.step()
    wall = time.perf_counter() - start_time
    envs.close()
    print(
        json.dumps(
            {
                "side": "cleanrl",
                "env": args.env_id,
                "seed": args.seed,
                "env_steps": global_step,
                "wall_time_s": round(wall, 2),
                "env_steps_per_s": round(global_step / wall, 1),
                "torch_threads": torch.get_num_threads(),
                "episodes": len(scores),
                "score_mean": round(float(np.mean(scores)), 2) if scores else None,
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
