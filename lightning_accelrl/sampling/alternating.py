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

import numpy as np
import torch
from tensordict import TensorDict

from lightning_accelrl.envs.base import BatchedEnv, Step
from lightning_accelrl.errors import ConfigError
from lightning_accelrl.sampling.agent import Agent
from lightning_accelrl.sampling.episodes import EpisodeTracker
from lightning_accelrl.sampling.sync import SyncSampler


def split_env(env: BatchedEnv, num_groups: int = 2) -> list[BatchedEnv]:
    """``num_groups`` equal groups of ``env``'s envs (batched envs: ``step_async`` lets a group step meanwhile).

    ``env`` is consumed (closed or rebuilt); group g holds envs ``g * B/num_groups ...`` with their seeds.
    """
    if env.num_envs < num_groups or env.num_envs % num_groups:
        raise ConfigError(
            f"the alternating sampler needs num_envs divisible by {num_groups} (and >= it), got {env.num_envs}"
        )
    return env.split(num_groups)


class GroupedEnv(BatchedEnv):
    """The groups seen as one batched env (spec, ``num_envs``, synchronous ``reset``/``step``, ``close``)."""

    def __init__(self, groups: list[BatchedEnv]) -> None:
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
        on_cpu = device.type == "cpu"
        groups = self.env.groups
        starts = np.cumsum([0, *self.env.sizes]).tolist()
        cols = [slice(starts[g], starts[g + 1]) for g in range(len(groups))]
        if self._group_obs is None:
            self._group_obs = [g.reset() for g in groups]
        T = self.rollout_steps
        truncated_values: list[tuple[int, torch.Tensor, torch.Tensor]] = []
        pending: list[dict[str, torch.Tensor]] = [{}] * len(groups)

        def launch(g: int, t: int) -> None:
            obs = self._group_obs[g] if on_cpu else self._group_obs[g].to(device, non_blocking=True)
            out = agent.act(obs)
            if self.buffer is None:
                self._prepare(
                    {k: v.new_empty((self.env.num_envs, *v.shape[1:])) for k, v in out.items()}, device
                )
            groups[g].step_async(out["action"])  # the group steps while we act for the other one
            rows, sl = self._rows, cols[g]
            rows["observation"].write(t, obs, sl)
            for key, value in out.items():
                rows[key].write(t, value, sl)
            pending[g] = out

        def finish(g: int, t: int) -> None:
            sl = cols[g]
            step = groups[g].step_wait_arrays()
            reward, terminated, truncated, _ = self._flags
            reward[t, sl] = step.reward
            terminated[t, sl] = step.terminated
            truncated[t, sl] = step.truncated
            if step.score_reward is not None:
                self._score_rows()[t, sl] = step.score_reward
            if self.store_next_observation:
                self._rows["next", "observation"].write(t, step.next_observation, sl)
            if "state_value" in pending[g] and np.count_nonzero(truncated[t, sl]):
                idx = torch.from_numpy(truncated[t, sl].nonzero()[0])
                final = step.next_observation.index_select(0, idx).to(device)
                truncated_values.append((t, (idx + sl.start).to(device), agent.value(final)))
            self._group_obs[g] = step.observation

        launch(0, 0)
        for t in range(T):
            launch(1, t)  # overlaps with group 0's step
            finish(0, t)
            if t + 1 < T:
                launch(0, t + 1)  # overlaps with group 1's step
            finish(1, t)

        self._finish_flags()
        if "state_value" in self._views:
            self._bootstrap(agent, torch.cat(self._group_obs).to(device), truncated_values)
        self._views["policy_version"].fill_(int(agent.policy_version))
        self.env_steps += T * self.env.num_envs
        self.observation = None  # the groups hold the current observations
        return self.buffer
