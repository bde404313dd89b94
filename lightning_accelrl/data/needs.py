"""The algorithm ↔ data contract: what an algorithm declares it needs, and what it may call on its data side.

An algorithm (an :class:`ExperienceConsumer`) declares :class:`ExperienceNeeds`; the data module checks them
against the env at ``setup`` and then *connects* itself to the algorithm (:meth:`ExperienceConsumer.connect_experience`)
with an :class:`ExperienceLink`: priority write-back and run statistics. An algorithm that was never connected
(another datamodule, a plain dataloader) fails at the start of ``fit`` with one line naming what it needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import torch

from lightning_accelrl.envs.base import EnvSpec
from lightning_accelrl.sampling.agent import Agent


@dataclass(frozen=True)
class ExperienceNeeds:
    """What an algorithm trains on.

    - ``kind="rollout"``: fresh on-policy rollouts ``[T, B]`` (TorchRL keys: ``observation``, ``action``, the
      agent's outputs, ``("next", "reward"|"terminated"|"truncated"|"done")``, ``policy_version``; with
      ``next_observation`` also ``("next", "observation")``; agents that return ``state_value`` get
      ``("next", "state_value")``).
    - ``kind="replay"``: samples of n-step transitions from a replay table (``observation``, ``action``,
      ``("next", "observation"|"reward")``, ``bootstrap_discount``, and the table's ``key``, ``probability``,
      ``table_size``, ``priority``); ``prioritized`` tables take priority write-backs. ``bootstrap_truncated``:
      whether a truncated step (a time limit) bootstraps from its final observation (the default, Gymnasium's
      meaning of truncation) or ends the n-step return like a terminal step (``bootstrap_discount`` 0).
      ``updates_per_batch`` K: one training batch feeds K updates of ``batch_size`` each. The data side samples
      ``K · batch_size`` items at once and hands them as ``[K, batch_size]`` (``[batch_size]`` when K is 1), so
      Lightning's per-batch work and the table's per-call work are paid once for K updates.
    - ``actions``: the action spaces the algorithm handles: ``"discrete"`` (one Discrete), ``"continuous"`` (a Box)
      or ``"any"``.
    - ``lag_corrected``: rollouts may come from older policies (the algorithm corrects for the lag with the
      behaviour log-probs and versions it is given, e.g. V-trace); sources that can collect either way pick the
      asynchronous one for these algorithms.
    """

    kind: Literal["rollout", "replay"] = "rollout"
    next_observation: bool = False
    n_step: int = 1
    gamma: float = 0.99
    prioritized: bool = False
    priority_exponent: float = 0.6
    bootstrap_truncated: bool = True
    updates_per_batch: int = 1
    actions: Literal["any", "discrete", "continuous"] = "any"
    lag_corrected: bool = False

    def describe(self) -> str:
        """One phrase for error messages: what the algorithm must be fed."""
        if self.kind == "rollout":
            return "on-policy rollouts [T, B]" + (" with next observations" if self.next_observation else "")
        prio = "prioritized " if self.prioritized else ""
        return f"{prio}replay samples of {self.n_step}-step transitions"


@runtime_checkable
class ExperienceLink(Protocol):
    """What an algorithm may call on the data side it was connected to."""

    def update_priorities(self, keys: torch.Tensor, priorities: torch.Tensor) -> None:
        """New priorities for sampled keys (prioritized replay)."""
        ...

    def statistics(self) -> dict[str, float]:
        """Run statistics to log (episode returns, env steps/s, replay fill...), reduced over ranks."""
        ...

    @property
    def env_spec(self) -> EnvSpec:
        """The env's observation and action description (networks are built from it)."""
        ...

    @property
    def base_seed(self) -> int:
        """The run's seed (the algorithm derives per-rank action-sampling seeds from it)."""
        ...


@runtime_checkable
class ExperienceConsumer(Agent, Protocol):
    """An algorithm the data module can drive: an :class:`Agent` that declares its needs and takes a link."""

    def experience_needs(self) -> ExperienceNeeds: ...

    def connect_experience(self, link: ExperienceLink | None) -> None: ...

    def detached_copy(self) -> Any:
        """A CPU copy without the Trainer, for samplers in other processes or on other machines."""
        ...


def as_consumer(module: Any) -> ExperienceConsumer:
    """``module`` if it implements :class:`ExperienceConsumer`, else a one-line :class:`ConfigError`."""
    from lightning_accelrl.errors import ConfigError

    if not isinstance(module, ExperienceConsumer):
        raise ConfigError(
            f"ExperienceDataModule trains algorithms that declare experience_needs() and act on envs "
            f"(lightning_accelrl's RLModule subclasses); {type(module).__name__} does not"
        )
    return module
