"""Synchronous sampler: all envs step together, one batched policy forward per step (the paper's batched inference).

Rollouts are written into one preallocated ``TensorDict`` of batch ``[T, B]`` with TorchRL's keys:
``observation``, ``action``, whatever else the agent returns (``sample_log_prob``, ``state_value``...),
``("next", "reward" | "terminated" | "truncated" | "done")`` shaped ``[T, B, 1]``, ``policy_version``, and
optionally ``("next", "observation")`` and ``("next", "state_value")``.

The hot path is one ``act`` and one env step per step; everything else is kept off it. The env steps (in its
threads or processes, where it has them) while the observation and the agent's outputs are copied into the
buffer; rewards and flags are staged as ``[T, B]`` numpy rows and reach the buffer, ``done`` and the episode
statistics once per rollout. On the CPU the buffer is written through numpy views: no torch dispatch per copy,
and no thread pool (torch's ``copy_`` of a frame stack was ~10x slower than numpy's with two busy threads).
"""

from __future__ import annotations

import numpy as np
import torch
from tensordict import TensorDict

from lightning_accelrl.envs.base import BatchedEnv, as_numpy
from lightning_accelrl.sampling.agent import Agent, ValueAgent
from lightning_accelrl.sampling.episodes import EpisodeTracker

FLAG_KEYS = (("next", "reward"), ("next", "terminated"), ("next", "truncated"), ("next", "done"))


class Rows:
    """Per-step writes into one ``[T, B, ...]`` buffer leaf: numpy views on the CPU, torch row views elsewhere."""

    __slots__ = ("array", "rows")

    def __init__(self, leaf: torch.Tensor) -> None:
        self.array = leaf.numpy() if leaf.is_cpu else None
        self.rows = None if leaf.is_cpu else leaf.unbind(0)

    def write(self, t: int, value: torch.Tensor, cols: slice | None = None) -> None:
        """``leaf[t, cols] = value`` (any device; a copy, never a reallocation)."""
        if self.array is not None:
            if cols is None:
                self.array[t] = as_numpy(value)
            else:
                self.array[t, cols] = as_numpy(value)
        else:
            row = self.rows[t] if cols is None else self.rows[t][cols]
            row.copy_(value)


class SyncSampler:
    """Collects ``rollout_steps`` steps from every env of ``env`` per :meth:`collect` call.

    If the agent's ``act`` returns ``"state_value"``, the sampler also fills ``("next", "state_value")``:
    the value of s_{t+1}, taken from the next step's forward, from ``agent.value`` of the *final* observation
    where an episode was truncated (time limits bootstrap), and of the last observation for the last step.
    """

    def __init__(
        self,
        env: BatchedEnv,
        rollout_steps: int,
        store_next_observation: bool = False,
        episode_window: int = 100,
    ) -> None:
        self.env = env
        self.rollout_steps = rollout_steps
        self.store_next_observation = store_next_observation
        self.tracker = EpisodeTracker(env.num_envs, episode_window)
        self.observation: torch.Tensor | None = None
        self.buffer: TensorDict | None = None
        self._views: dict = {}  # leaf key -> tensor of the buffer
        self._rows: dict = {}  # leaf key -> Rows, for the keys written step by step
        self._flags: tuple[np.ndarray, ...] = ()  # [T, B] reward, terminated, truncated, done
        self._staged = False  # flags staged on the host (buffer on an accelerator), copied once per rollout
        self._scores: np.ndarray | None = None  # [T, B] game rewards, for envs that report them (Atari)
        self.env_steps = 0  # steps of this sampler (all its envs), not global

    @property
    def num_envs(self) -> int:
        return self.env.num_envs

    def _allocate(self, out: dict[str, torch.Tensor], device: torch.device) -> TensorDict:
        T, B = self.rollout_steps, self.env.num_envs
        spec = self.env.spec

        def empty(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
            return torch.zeros((T, B, *shape), dtype=dtype, device=device)

        td = TensorDict(
            {
                "observation": empty(spec.observation_shape, spec.observation_dtype),
                "policy_version": empty((), torch.int64),
                "next": {
                    "reward": empty((1,), torch.float32),
                    "terminated": empty((1,), torch.bool),
                    "truncated": empty((1,), torch.bool),
                    "done": empty((1,), torch.bool),
                },
            },
            batch_size=[T, B],
            device=device,
        )
        for key, value in out.items():
            td[key] = empty(tuple(value.shape[1:]), value.dtype)
        if self.store_next_observation:
            td["next", "observation"] = empty(spec.observation_shape, spec.observation_dtype)
        if "state_value" in out:
            td["next", "state_value"] = empty(tuple(out["state_value"].shape[1:]), out["state_value"].dtype)
        return td

    def _prepare(self, out: dict[str, torch.Tensor], device: torch.device) -> None:
        """Allocate the buffer (``out``: one step's agent outputs for all envs) and its fast write paths."""
        self.buffer = self._allocate(out, device)
        # raw tensors: TensorDict item access costs ~10 us per key per step
        self._views = {k: self.buffer.get(k) for k in self.buffer.keys(include_nested=True, leaves_only=True)}
        per_step = ["observation", *out]
        if self.store_next_observation:
            per_step.append(("next", "observation"))
        self._rows = {k: Rows(self._views[k]) for k in per_step}
        self._staged = device.type != "cpu"
        if not self._staged:  # the flags are written in place, through views of the buffer
            self._flags = tuple(self._views[k].squeeze(-1).numpy() for k in FLAG_KEYS)
        else:  # staged on the host, copied once per rollout
            T, B = self.rollout_steps, self.env.num_envs
            dtypes = (np.float32, np.bool_, np.bool_, np.bool_)
            self._flags = tuple(np.zeros((T, B), dtype) for dtype in dtypes)

    def _score_rows(self) -> np.ndarray:
        """The ``[T, B]`` game-reward rows (allocated when the env first reports game rewards)."""
        if self._scores is None:
            self._scores = np.zeros((self.rollout_steps, self.env.num_envs), np.float32)
        return self._scores

    def _finish_flags(self) -> None:
        """``done`` from the staged flags, the flags into the buffer (if staged), episode statistics."""
        reward, terminated, truncated, done = self._flags
        np.logical_or(terminated, truncated, out=done)
        if self._staged:
            for key, staged in zip(FLAG_KEYS, self._flags, strict=True):
                self._views[key].copy_(torch.from_numpy(staged).unsqueeze(-1))
        self.tracker.update_rollout(reward, done, self._scores)

    def _bootstrap(self, agent: ValueAgent, last_obs: torch.Tensor, truncated_values: list) -> None:
        """``("next", "state_value")``: the next step's value, the last observation's, final ones at truncation."""
        values, next_values = self._views["state_value"], self._views["next", "state_value"]
        next_values[:-1].copy_(values[1:])
        next_values[-1].copy_(agent.value(last_obs))
        for t, idx, v in truncated_values:
            next_values[t].index_copy_(0, idx, v)

    @torch.no_grad()
    def collect(self, agent: Agent) -> TensorDict:
        """Step all envs ``rollout_steps`` times with ``agent``; return the rollout (valid until the next call)."""
        device = torch.device(agent.device)
        on_cpu = device.type == "cpu"
        env = self.env
        if self.observation is None:
            self.observation = env.reset()
        truncated_values: list[tuple[int, torch.Tensor, torch.Tensor]] = []
        has_value = False
        for t in range(self.rollout_steps):
            obs = self.observation if on_cpu else self.observation.to(device, non_blocking=True)
            out = agent.act(obs)
            if self.buffer is None:
                self._prepare(out, device)
            has_value = "state_value" in out
            env.step_async(out["action"])  # the env steps while we copy this step's data
            rows = self._rows
            rows["observation"].write(t, obs)
            for key, value in out.items():
                rows[key].write(t, value)
            step = env.step_wait_arrays()
            reward, terminated, truncated, _ = self._flags
            reward[t] = step.reward
            terminated[t] = step.terminated
            truncated[t] = step.truncated
            if step.score_reward is not None:
                self._score_rows()[t] = step.score_reward
            if self.store_next_observation:
                rows["next", "observation"].write(t, step.next_observation)
            if has_value and np.count_nonzero(truncated[t]):
                idx = torch.from_numpy(truncated[t].nonzero()[0])
                final = step.next_observation.index_select(0, idx).to(device)
                truncated_values.append((t, idx.to(device), agent.value(final)))
            self.observation = step.observation
        self._finish_flags()
        if has_value:
            self._bootstrap(agent, self.observation.to(device), truncated_values)
        self._views["policy_version"].fill_(int(agent.policy_version))
        self.env_steps += self.rollout_steps * env.num_envs
        return self.buffer

    def close(self) -> None:
        self.env.close()
