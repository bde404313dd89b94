"""Alternating sampler: two groups of envs; while one group steps, the policy runs for the other.

This is the overlap of Stooke & Abbeel (2018), section 3.1: with batched inference on an accelerator the envs
would otherwise idle during every forward pass, and the accelerator during every env step. Here group A's
step runs in the env back-end's threads or processes (``step_async``) while the main thread computes group
B's actions, then the roles swap::

    act(A) send(A) | act(B) send(B) | wait(A) act(A) send(A) | wait(B) act(B) send(B) | ...

Every transition is collected with the current weights (no policy lag), each group steps ``rollout_steps``
times per :meth:`AlternatingSampler.collect`, and env ``i`` keeps seed ``seed + rank * num_envs + i``:
with a deterministic policy the rollouts equal the synchronous sampler's, env by env.

Groups: :class:`~lightning_accelrl.envs.atari.AtariEnv` splits into two C++ vector envs (each in synchronous
mode, whose ``send`` returns at once); a Gymnasium vector env built from env functions (``AsyncVectorEnv``:
two subprocess pools; ``SyncVectorEnv``: no overlap, same results) is rebuilt as two halves. The output is
the :class:`~lightning_accelrl.sampling.sync.SyncSampler` layout: ``[T, B]`` with env ``i`` in column ``i``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from tensordict import TensorDict

from lightning_accelrl.envs.base import BatchedEnv, Step
from lightning_accelrl.errors import ConfigError
from lightning_accelrl.sampling.episodes import EpisodeTracker
from lightning_accelrl.sampling.sync import Agent, SyncSampler


class _BlockingGroup:
    """``step_async``/``step_wait`` for a back-end that can only step synchronously (correct, no overlap)."""

    def __init__(self, env: BatchedEnv) -> None:
        self.env = env
        self.num_envs = env.num_envs
        self.spec = env.spec
        self._actions: torch.Tensor | None = None

    def reset(self) -> torch.Tensor:
        return self.env.reset()

    def step_async(self, actions: torch.Tensor) -> None:
        self._actions = actions

    def step_wait(self) -> Step:
        return self.env.step(self._actions)

    def close(self) -> None:
        self.env.close()


class _GymGroup:
    """Half of a Gymnasium vector env (same-step autoreset) with a non-blocking step where it has one."""

    def __init__(self, venv: Any, seeds: list[int], like: BatchedEnv) -> None:
        self.venv = venv
        self.num_envs = venv.num_envs
        self.spec = like.spec
        self.seeds = seeds
        self._offset = int(getattr(like, "_action_offset", 0))
        self._can_async = hasattr(venv, "step_async")
        self._pending: np.ndarray | None = None

    def reset(self) -> torch.Tensor:
        obs, _ = self.venv.reset(seed=self.seeds)
        return self._obs(obs)

    @staticmethod
    def _obs(obs: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(obs)
        return t.float() if t.dtype == torch.float64 else t

    def step_async(self, actions: torch.Tensor) -> None:
        a = actions.detach().cpu().numpy()
        if self.spec.discrete:
            a = a + self._offset if self._offset else a
        else:
            a = np.clip(a, np.asarray(self.spec.action_low), np.asarray(self.spec.action_high))
        if self._can_async:
            self.venv.step_async(a)
        else:
            self._pending = a

    def step_wait(self) -> Step:
        if self._can_async:
            obs, reward, terminated, truncated, info = self.venv.step_wait()
        else:
            obs, reward, terminated, truncated, info = self.venv.step(self._pending)
        observation = self._obs(obs)
        next_observation = observation
        done = np.logical_or(terminated, truncated)
        if done.any():
            next_observation = observation.clone()
            idx = np.flatnonzero(info["_final_obs"])
            final = np.stack([info["final_obs"][i] for i in idx])
            next_observation[torch.from_numpy(idx)] = self._obs(final).to(next_observation.dtype)
        return Step(
            next_observation,
            torch.from_numpy(np.asarray(reward, dtype=np.float32)),
            torch.from_numpy(np.asarray(terminated)),
            torch.from_numpy(np.asarray(truncated)),
            observation,
        )

    def close(self) -> None:
        self.venv.close()


def _split_gym(env: BatchedEnv, num_groups: int) -> list[Any] | None:
    """Rebuild a GymVectorEnv's vector env (Sync or Async, from its env functions) as ``num_groups`` halves."""
    import gymnasium as gym

    venv = getattr(env, "env", None)
    fns = getattr(venv, "env_fns", None)
    if not isinstance(venv, gym.vector.VectorEnv) or fns is None:
        return None
    seeds = list(getattr(env, "_seeds", range(env.num_envs)))
    size = env.num_envs // num_groups
    mode = gym.vector.AutoresetMode.SAME_STEP
    is_async = isinstance(venv, gym.vector.AsyncVectorEnv)
    venv.close()
    groups = []
    for g in range(num_groups):
        part = fns[g * size : (g + 1) * size]
        if is_async:
            # forkserver: torchrl switches the global start method to spawn (24 s start-ups)
            half = gym.vector.AsyncVectorEnv(part, autoreset_mode=mode, context="forkserver")
        else:
            half = gym.vector.SyncVectorEnv(part, autoreset_mode=mode)
        groups.append(_GymGroup(half, seeds[g * size : (g + 1) * size], env))
    return groups


def split_env(env: BatchedEnv, num_groups: int = 2) -> list[Any]:
    """``num_groups`` equal groups of ``env``'s envs, each with ``reset``/``step_async``/``step_wait``/``close``.

    ``env`` is consumed (closed or rebuilt); group g holds envs ``g * B/num_groups ...`` with their seeds.
    """
    if env.num_envs < num_groups or env.num_envs % num_groups:
        raise ConfigError(
            f"the alternating sampler needs num_envs divisible by {num_groups} (and >= it), got {env.num_envs}"
        )
    if hasattr(env, "split"):
        groups = env.split(num_groups)
        return [g if hasattr(g, "step_async") else _BlockingGroup(g) for g in groups]
    groups = _split_gym(env, num_groups)
    if groups is not None:
        return groups
    raise ConfigError(
        f"the alternating sampler cannot split a {type(env).__name__} into env groups: use an Atari id "
        "(ale_py vector env) or a Gymnasium id / vector env built from env functions"
    )


class GroupedEnv(BatchedEnv):
    """The groups seen as one batched env (spec, ``num_envs``, synchronous ``reset``/``step``, ``close``)."""

    def __init__(self, groups: list[Any]) -> None:
        self.groups = groups
        self.spec = groups[0].spec
        self.sizes = [g.num_envs for g in groups]
        self.num_envs = sum(self.sizes)

    def reset(self) -> torch.Tensor:
        return torch.cat([g.reset() for g in self.groups])

    def step(self, actions: torch.Tensor) -> Step:
        for g, a in zip(self.groups, actions.split(self.sizes), strict=True):
            g.step_async(a)
        steps = [g.step_wait() for g in self.groups]
        return Step(*(torch.cat(parts) for parts in zip(*steps, strict=True)))

    def close(self) -> None:
        for g in self.groups:
            g.close()


class AlternatingSampler(SyncSampler):
    """Same interface and rollout layout as :class:`SyncSampler`; two env groups overlap stepping and inference.

    Args:
        env: a batched env that can be split into two groups (an :class:`~lightning_accelrl.envs.atari.AtariEnv`,
            or a Gymnasium vector env built from env functions); it is consumed and rebuilt as two halves.
            ``num_envs`` must be even.
        rollout_steps: steps per env per :meth:`collect` (T).
        store_next_observation: also store ``("next", "observation")``.
        episode_window: finished episodes averaged by :attr:`tracker`.
    """

    def __init__(
        self,
        env: BatchedEnv,
        rollout_steps: int,
        store_next_observation: bool = False,
        episode_window: int = 100,
    ) -> None:
        grouped = env if isinstance(env, GroupedEnv) else GroupedEnv(split_env(env, 2))
        super().__init__(grouped, rollout_steps, store_next_observation, episode_window)
        self.tracker = EpisodeTracker(grouped.num_envs, episode_window)
        self._group_obs: list[torch.Tensor] | None = None

    @torch.no_grad()
    def collect(self, agent: Agent) -> TensorDict:
        """Step every env ``rollout_steps`` times with ``agent``; return the rollout (valid until the next call)."""
        device = torch.device(agent.device)
        groups = self.env.groups
        slices, start = [], 0
        for size in self.env.sizes:
            slices.append(slice(start, start + size))
            start += size
        if self._group_obs is None:
            self._group_obs = [g.reset() for g in groups]
        T = self.rollout_steps
        nxt = ("next", "reward"), ("next", "terminated"), ("next", "truncated"), ("next", "done")
        truncated_values: list[tuple[int, torch.Tensor, torch.Tensor]] = []
        pending: list[dict[str, torch.Tensor] | None] = [None] * len(groups)

        def launch(g: int, t: int) -> None:
            obs = self._group_obs[g].to(device, non_blocking=True)
            out = agent.act(obs)
            if self.buffer is None:
                full = {k: v.new_empty((self.env.num_envs, *v.shape[1:])) for k, v in out.items()}
                self.buffer = self._allocate(full, device)
                self._views = {
                    k: self.buffer.get(k) for k in self.buffer.keys(include_nested=True, leaves_only=True)
                }
            bufs, sl = self._views, slices[g]
            bufs["observation"][t, sl].copy_(obs)
            for key, value in out.items():
                bufs[key][t, sl].copy_(value)
            groups[g].step_async(out["action"])  # the group steps while we act for the other one
            pending[g] = out

        def finish(g: int, t: int, rewards: list, dones: list) -> None:
            out, sl = pending[g], slices[g]
            step = groups[g].step_wait()
            done = step.terminated | step.truncated
            bufs = self._views
            for key, value in zip(nxt, (step.reward, step.terminated, step.truncated, done), strict=True):
                bufs[key][t, sl].copy_(value.unsqueeze(-1))
            if self.store_next_observation:
                bufs["next", "observation"][t, sl].copy_(step.next_observation)
            if "state_value" in out and bool(step.truncated.any()):
                idx = step.truncated.nonzero().squeeze(-1)
                final = step.next_observation.index_select(0, idx).to(device)
                truncated_values.append((t, (idx + sl.start).to(device), agent.value(final)))
            rewards.append(step.reward)
            dones.append(done)
            self._group_obs[g] = step.observation

        launch(0, 0)
        for t in range(T):
            rewards: list[torch.Tensor] = []
            dones: list[torch.Tensor] = []
            launch(1, t)  # overlaps with group 0's step
            finish(0, t, rewards, dones)
            if t + 1 < T:
                launch(0, t + 1)  # overlaps with group 1's step
            finish(1, t, rewards, dones)
            self.tracker.update(torch.cat(rewards), torch.cat(dones))

        bufs = self._views
        if "state_value" in bufs:
            values, next_values = bufs["state_value"], bufs["next", "state_value"]
            next_values[:-1].copy_(values[1:])
            last = torch.cat(self._group_obs).to(device)
            next_values[-1].copy_(agent.value(last))
            for t, idx, v in truncated_values:
                next_values[t].index_copy_(0, idx, v)
        bufs["policy_version"].fill_(int(getattr(agent, "policy_version", 0)))
        self.env_steps += T * self.env.num_envs
        self.observation = None  # the groups hold the current observations
        return self.buffer
