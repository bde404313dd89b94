"""The experience-source contract: one way of producing training batches for one rank.

Implementations: :class:`~lightning_accelrl.data.rollouts.RolloutSource` (sync or alternating samplers in this
process), :class:`~lightning_accelrl.data.replay.ReplaySource` (envs stepped as the table's rate limiter asks),
:class:`~lightning_accelrl.data.async_runner.AsyncRunner` (sampler processes feeding a served table) and
:class:`~lightning_accelrl.data.ray_runner.RayRunner` (Ray actors feeding a Ray-served table). The data module
builds one through a factory ``(SourceContext) -> ExperienceSource`` (``ExperienceDataModule(sampler=...)``
takes a registered name or such a factory) and drives it through these methods only, in the way TorchRL's
``DataCollectorBase`` is driven.

Life cycle: built at ``setup`` (cheap; sync sources build their envs here), ``load_state_dict`` possibly (resume),
``start(agent)`` once the model is built and restored, then ``next_batch(agent)`` until it returns ``None`` (this
rank's share of the budget is spent), then ``close()``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tensordict import TensorDict

from lightning_accelrl.data.needs import ExperienceNeeds
from lightning_accelrl.envs.base import BatchedEnv, EnvSpec
from lightning_accelrl.errors import ConfigError
from lightning_accelrl.sampling.agent import Agent
from lightning_accelrl.sampling.episodes import EpisodeTracker


@dataclass(frozen=True)
class SourceContext:
    """Everything a source factory gets: the env, the rank's place in the run, the budget and the settings.

    ``make_env(stream, num_envs=None)`` builds a batched env whose seeds start at ``seed + stream * num_envs``;
    it is picklable (``functools.partial``), so sampler processes and Ray actors call it themselves.
    """

    make_env: Callable[..., BatchedEnv]
    env_spec: EnvSpec
    needs: ExperienceNeeds
    num_envs: int
    rollout_steps: int
    total_env_steps: int
    rank: int = 0
    world_size: int = 1
    seed: int = 0
    episode_window: int = 100
    #: source-specific settings (replay table, sampler processes...): see ``ExperienceDataModule``'s arguments
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def sample_size(self) -> int:
        """Items a replay source samples for one training batch: ``batch_size`` for each of the algorithm's
        ``updates_per_batch`` updates (the data module hands them on as ``[updates_per_batch, batch_size]``)."""
        return int(self.settings["batch_size"]) * self.needs.updates_per_batch

    @property
    def budget(self) -> int:
        """This rank's share of the env-step budget."""
        return math.ceil(self.total_env_steps / self.world_size)


class ExperienceSource(ABC):
    """Produces this rank's training batches; counts its env steps; keeps its finished episodes."""

    #: the finished episodes of this rank's envs (a window for statistics, and the episode count)
    tracker: EpisodeTracker
    #: sampler processes or actors replaced after a failure (sources that have none keep 0)
    restarts: int = 0

    @abstractmethod
    def start(self, agent: Agent) -> None:
        """Begin producing (start processes or actors; copy the agent's weights where it acts elsewhere)."""

    @abstractmethod
    def next_batch(self, agent: Agent) -> TensorDict | None:
        """The next training batch, or ``None`` once this rank's share of the budget is spent.

        Sources acting in this process push the env-step count into the agent (``agent.set_env_steps``) before
        every step they take with it."""

    @property
    @abstractmethod
    def env_steps(self) -> int:
        """Env steps this rank's envs took so far (all of its envs, samplers and restarts included)."""

    @property
    def exhausted(self) -> bool:
        """Known in advance: no further batch can be had within the budget (rollout sources count their
        rollouts); sources that cannot tell keep ``False`` and return ``None`` from :meth:`next_batch`."""
        return False

    def publish(self, agent: Agent) -> None:  # noqa: B027 - optional hook
        """New weights are available (called before each batch); sources acting elsewhere copy them."""

    def update_priorities(self, keys: Any, priorities: Any) -> None:
        """Priority write-back for sampled keys; only replay sources have priorities."""
        raise ConfigError(f"{type(self).__name__} has no replay table: priorities cannot be updated")

    def policy_lag(self, agent: Agent, batch: TensorDict) -> int | None:
        """Updates between the weights that collected ``batch`` and the agent's (None: not meaningful)."""
        if "policy_version" not in batch.keys():  # noqa: SIM118 - TensorDict membership needs keys()
            return None
        return int(agent.policy_version) - int(batch["policy_version"].min())

    def stats(self) -> dict[str, float]:
        """Source-specific figures to log (replay fill and ratio, sampler restarts...), this rank's."""
        return {}

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """What resuming needs (plain containers and tensors only: checkpoints load with weights_only)."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (called before :meth:`start`)."""

    @abstractmethod
    def close(self) -> None:
        """Release envs, processes and tables (idempotent)."""


SourceFactory = Callable[[SourceContext], ExperienceSource]
