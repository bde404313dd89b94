"""The agent contract: everything a sampler (in this process, a sampler process or a Ray actor) calls on a policy.

Samplers call nothing else. Schedules are *pushed*: whoever counts env steps (the experience source, or the
sampler process reading the shared count) calls :meth:`Agent.set_env_steps` before acting, and the agent derives
its exploration rate (ε, β, learning rate, clip range) from it, as rlpyt's algorithm sets its agent's ε. No
sampler needs a Trainer, and no object imitates one.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class Agent(Protocol):
    """A batched policy. ``act`` returns at least ``"action"`` (``[B, ...]`` tensors); agents whose ``act`` also
    returns ``"state_value"`` implement :class:`ValueAgent`."""

    #: updates applied so far; samplers record it with the data they collect
    policy_version: int

    @property
    def device(self) -> torch.device: ...

    def act(self, observation: torch.Tensor) -> dict[str, torch.Tensor]:
        """One batched forward for all envs: ``{"action": [B, ...], ...}``."""
        ...

    def set_env_steps(self, env_steps: int, total_env_steps: int) -> None:
        """The env steps collected so far out of the budget: drives every schedule of the agent."""
        ...


@runtime_checkable
class ValueAgent(Agent, Protocol):
    """An actor-critic agent: samplers bootstrap truncated episodes and the last step with :meth:`value`."""

    def value(self, observation: torch.Tensor) -> torch.Tensor:
        """State values ``[B, 1]`` of a batch of observations."""
        ...
