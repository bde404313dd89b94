"""Synchronous sampler: all envs step together, one batched policy forward per step (the paper's batched inference).

Rollouts are written into one preallocated ``TensorDict`` of batch ``[T, B]`` with TorchRL's keys:
``observation``, ``action``, whatever else the agent returns (``sample_log_prob``, ``state_value``...),
``("next", "reward" | "terminated" | "truncated" | "done")`` shaped ``[T, B, 1]``, ``policy_version``, and
optionally ``("next", "observation")`` and ``("next", "state_value")``.
"""

from __future__ import annotations

from typing import Protocol

import torch
from tensordict import TensorDict

from lightning_accelrl.envs.base import BatchedEnv
from lightning_accelrl.sampling.episodes import EpisodeTracker

_NEXT_KEYS = (("next", "reward"), ("next", "terminated"), ("next", "truncated"), ("next", "done"))


class Agent(Protocol):
    """What a sampler needs from a policy. ``act`` must return at least ``"action"`` ([B, ...] tensors)."""

    device: torch.device

    def act(self, observation: torch.Tensor) -> dict[str, torch.Tensor]: ...


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
        self._views: dict = {}
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

    @torch.no_grad()
    def collect(self, agent: Agent) -> TensorDict:
        """Step all envs ``rollout_steps`` times with ``agent``; return the rollout (valid until the next call)."""
        device = torch.device(agent.device)
        if self.observation is None:
            self.observation = self.env.reset()
        truncated_values: list[tuple[int, torch.Tensor, torch.Tensor]] = []
        for t in range(self.rollout_steps):
            obs = self.observation.to(device, non_blocking=True)
            out = agent.act(obs)
            if self.buffer is None:
                self.buffer = self._allocate(out, device)
                # raw tensor views: TensorDict item assignment costs ~10 us per key per step
                self._views = {
                    k: self.buffer.get(k) for k in self.buffer.keys(include_nested=True, leaves_only=True)
                }
            bufs = self._views
            bufs["observation"][t].copy_(obs)
            for key, value in out.items():
                bufs[key][t].copy_(value)
            step = self.env.step(out["action"])
            done = step.terminated | step.truncated
            for key, value in zip(
                _NEXT_KEYS, (step.reward, step.terminated, step.truncated, done), strict=True
            ):
                bufs[key][t].copy_(value.unsqueeze(-1))
            if self.store_next_observation:
                bufs["next", "observation"][t].copy_(step.next_observation)
            if "state_value" in out and step.truncated.numpy().any():  # numpy: no tensor op on the hot path
                idx = step.truncated.nonzero().squeeze(-1)
                final = step.next_observation.index_select(0, idx).to(device)
                truncated_values.append((t, idx.to(device), agent.value(final)))
            self.tracker.update(step.reward, done)
            self.observation = step.observation
        if "state_value" in out:
            values, next_values = bufs["state_value"], bufs["next", "state_value"]
            next_values[:-1].copy_(values[1:])
            next_values[-1].copy_(agent.value(self.observation.to(device)))
            for t, idx, v in truncated_values:
                next_values[t].index_copy_(0, idx, v)
        bufs["policy_version"].fill_(int(getattr(agent, "policy_version", 0)))
        self.env_steps += self.rollout_steps * self.env.num_envs
        return self.buffer

    def close(self) -> None:
        self.env.close()
