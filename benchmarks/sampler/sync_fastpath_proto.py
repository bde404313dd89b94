"""Prototype of proposed changes to SyncSampler.collect and GymVectorEnv.step (files owned by others: not applied).

Measured on CartPole, 64 envs, trivial policy, against Gymnasium's SyncVectorEnv alone (the sampler goal is >= 0.9):
  - SyncSampler: reward/terminated/truncated staged in [T, B] CPU tensors and copied to the rollout buffer once per
    rollout (no per-step unsqueeze/copy_ x 4, ``done`` computed once), the tracker fed after the loop,
    ``truncated.numpy().any()`` instead of ``bool(tensor.any())``;
  - GymVectorEnv.step: ``actions.numpy()`` without ``detach().cpu()`` on CPU; on done steps the final observations
    gathered in numpy (``obs.copy(); nxt[idx] = np.stack(final_obs[idx])``) instead of clone + list + fancy index.
Run: ``python benchmarks/sampler/sync_fastpath_proto.py`` (checks the rollouts are identical, then times them).
"""

import statistics
import time

import numpy as np
import torch

from lightning_accelrl.envs import make_env
from lightning_accelrl.envs.base import Step
from lightning_accelrl.envs.gym import GymVectorEnv
from lightning_accelrl.sampling.sync import SyncSampler


class FastSync(SyncSampler):
    @torch.no_grad()
    def collect(self, agent):
        device = torch.device(agent.device)
        if self.observation is None:
            self.observation = self.env.reset()
        truncated_values = []
        T = self.rollout_steps
        cpu_flags = None
        for t in range(T):
            obs = self.observation.to(device, non_blocking=True)
            out = agent.act(obs)
            if self.buffer is None:
                self.buffer = self._allocate(out, device)
                self._views = {
                    k: self.buffer.get(k) for k in self.buffer.keys(include_nested=True, leaves_only=True)
                }
            bufs = self._views
            if cpu_flags is None:
                # [T, B] staging on the CPU for reward/terminated/truncated: one copy to the device per rollout
                B = self.env.num_envs
                cpu_flags = (
                    torch.empty(T, B),
                    torch.empty(T, B, dtype=torch.bool),
                    torch.empty(T, B, dtype=torch.bool),
                )
            bufs["observation"][t].copy_(obs)
            for k, value in out.items():
                bufs[k][t].copy_(value)
            step = self.env.step(out["action"])
            cpu_flags[0][t].copy_(step.reward)
            cpu_flags[1][t].copy_(step.terminated)
            cpu_flags[2][t].copy_(step.truncated)
            if self.store_next_observation:
                bufs["next", "observation"][t].copy_(step.next_observation)
            if "state_value" in out and step.truncated.numpy().any():
                idx = step.truncated.nonzero().squeeze(-1)
                final = step.next_observation.index_select(0, idx).to(device)
                truncated_values.append((t, idx.to(device), agent.value(final)))
            self.observation = step.observation
        reward, term, trunc = cpu_flags
        done = term | trunc
        bufs["next", "reward"].copy_(reward.unsqueeze(-1), non_blocking=True)
        bufs["next", "terminated"].copy_(term.unsqueeze(-1), non_blocking=True)
        bufs["next", "truncated"].copy_(trunc.unsqueeze(-1), non_blocking=True)
        bufs["next", "done"].copy_(done.unsqueeze(-1), non_blocking=True)
        for t in range(T):  # tracker: numpy only, could be vectorised over T too
            self.tracker.update(reward[t], done[t])
        if "state_value" in out:
            values, next_values = bufs["state_value"], bufs["next", "state_value"]
            next_values[:-1].copy_(values[1:])
            next_values[-1].copy_(agent.value(self.observation.to(device)))
            for t, idx, v in truncated_values:
                next_values[t].index_copy_(0, idx, v)
        bufs["policy_version"].fill_(int(getattr(agent, "policy_version", 0)))
        self.env_steps += T * self.env.num_envs
        return self.buffer


def rat_of(r: dict, x: str) -> float:
    return statistics.median([u / v for u, v in zip(r[x], r["raw"], strict=True)])


class Trivial:
    device = torch.device("cpu")

    def __init__(self):
        self.a = torch.zeros(64, dtype=torch.long)

    def act(self, obs):
        return {"action": self.a}


if __name__ == "__main__":
    torch.set_num_threads(1)
    n, T = 64, 128
    a = SyncSampler(make_env("CartPole-v1", n, seed=0, vectorization="sync"), T)
    b = FastSync(make_env("CartPole-v1", n, seed=0, vectorization="sync"), T)
    venv = make_env("CartPole-v1", n, seed=0, vectorization="sync").env
    venv.reset(seed=0)
    acts = np.zeros((T, n), dtype=np.int64)
    ag = Trivial()
    ta, tb = a.collect(ag), b.collect(ag)
    ta, tb = a.collect(ag), b.collect(ag)
    assert all(torch.equal(ta[k], tb[k]) for k in ta.keys(True, True)), "rollouts differ"
    assert list(a.tracker.recent_returns) == list(b.tracker.recent_returns)
    r = {"raw": [], "current": [], "proposed": []}
    for _ in range(9):
        t = time.perf_counter()
        for i in range(T):
            venv.step(acts[i])
        r["raw"].append(T * n / (time.perf_counter() - t))
        t = time.perf_counter()
        a.collect(ag)
        r["current"].append(T * n / (time.perf_counter() - t))
        t = time.perf_counter()
        b.collect(ag)
        r["proposed"].append(T * n / (time.perf_counter() - t))
    print(
        {k: round(statistics.median(v)) for k, v in r.items()},
        "current/raw",
        round(rat_of(r, "current"), 2),
        "proposed/raw",
        round(rat_of(r, "proposed"), 2),
    )


class FastGym(GymVectorEnv):
    def step(self, actions):
        a = actions.numpy() if actions.device.type == "cpu" else actions.cpu().numpy()
        if self._action_offset:
            a = a + self._action_offset
        obs, reward, terminated, truncated, info = self.env.step(a)
        observation = self._obs(obs)
        next_observation = observation
        if "_final_obs" in info:  # present only when some env finished
            idx = np.flatnonzero(info["_final_obs"])
            nxt = obs.copy()
            nxt[idx] = np.stack(info["final_obs"][idx])
            next_observation = self._obs(nxt)
        return Step(
            next_observation,
            torch.from_numpy(reward.astype(np.float32, copy=False)),
            torch.from_numpy(terminated),
            torch.from_numpy(truncated),
            observation,
        )


if __name__ == "__main__":
    c = FastSync(FastGym("CartPole-v1", n, seed=0, vectorization="sync"), T)
    a2 = SyncSampler(make_env("CartPole-v1", n, seed=0, vectorization="sync"), T)
    for _ in range(2):
        ta, tc = a2.collect(ag), c.collect(ag)
    assert all(torch.equal(ta[k], tc[k]) for k in ta.keys(True, True)), "rollouts differ"
    r = {"raw": [], "current": [], "both": []}
    for _ in range(9):
        t = time.perf_counter()
        for i in range(T):
            venv.step(acts[i])
        r["raw"].append(T * n / (time.perf_counter() - t))
        t = time.perf_counter()
        a2.collect(ag)
        r["current"].append(T * n / (time.perf_counter() - t))
        t = time.perf_counter()
        c.collect(ag)
        r["both"].append(T * n / (time.perf_counter() - t))
    print(
        {k: round(statistics.median(v)) for k, v in r.items()},
        "current/raw",
        round(rat_of(r, "current"), 2),
        "sampler+env fixes/raw",
        round(rat_of(r, "both"), 2),
    )
