"""On-policy rollouts in this process: each batch is a fresh ``[T, B]`` rollout collected with the current weights.

``sync``: every env steps, then one batched forward (the paper's batched inference); ``alternating``: two env
groups, one stepping while the policy runs for the other (the paper's overlap). The data module hands these
batches to Lightning as a sized iterable, so Lightning does not prefetch: rollout k+1 is collected after update
k was applied (zero policy lag).
"""

from __future__ import annotations

import math
from typing import Any

from tensordict import TensorDict

from lightning_accelrl.data.source import ExperienceSource, SourceContext
from lightning_accelrl.sampling import SyncSampler
from lightning_accelrl.sampling.agent import Agent


class RolloutSource(ExperienceSource):
    """``ceil(budget / (T·B))`` rollouts of this rank's envs, then ``None``."""

    def __init__(self, ctx: SourceContext, alternating: bool = False) -> None:
        self.ctx = ctx
        env = ctx.make_env(ctx.rank)
        if alternating:
            from lightning_accelrl.sampling.alternating import AlternatingSampler

            self.sampler: SyncSampler = AlternatingSampler(
                env, ctx.rollout_steps, ctx.needs.next_observation, ctx.episode_window
            )
        else:
            self.sampler = SyncSampler(env, ctx.rollout_steps, ctx.needs.next_observation, ctx.episode_window)
        self.tracker = self.sampler.tracker
        self.updates = 0
        self.total_updates = math.ceil(ctx.budget / (ctx.rollout_steps * env.num_envs))

    def start(self, agent: Agent) -> None:
        """Nothing to start: the envs step in :meth:`next_batch`."""

    def next_batch(self, agent: Agent) -> TensorDict | None:
        if self.updates >= self.total_updates:
            return None
        agent.set_env_steps(self.env_steps * self.ctx.world_size, self.ctx.total_env_steps)
        rollout = self.sampler.collect(agent)
        self.updates += 1
        return rollout

    @property
    def exhausted(self) -> bool:
        return self.updates >= self.total_updates

    @property
    def env_steps(self) -> int:
        return self.sampler.env_steps

    def state_dict(self) -> dict[str, Any]:
        return {
            "updates": self.updates,
            "env_steps": self.sampler.env_steps,
            "tracker": self.tracker.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates = int(state["updates"])
        self.sampler.env_steps = int(state["env_steps"])
        self.tracker.load_state_dict(state["tracker"])

    def close(self) -> None:
        self.sampler.close()
