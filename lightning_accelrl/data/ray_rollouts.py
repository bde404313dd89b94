"""``sampler: ray`` for on-policy rollouts (PPO, A2C): every batch is collected by all sampler actors with the
current weights, like ``sampler: sync``, on envs that may live on other nodes.

```
 learner: publish version v ─► collect(v, weights) on every actor ─► wait for all (watching them) ─► cat on env axis
                                  actor i: T steps of its B envs ─► segment [T, B] (through Ray's object store)
```

Per update the learner puts the flat weights into Ray's object store once and calls ``collect`` on each sampler
actor; each acts ``rollout_steps`` steps on its ``num_envs`` envs (which persist across calls, like the sync
sampler's) and returns its segment. The learner concatenates the segments in actor order along the env axis: one
``[T, procs·num_envs]`` batch with :class:`~lightning_accelrl.data.rollouts.RolloutSource`'s keys and layout, every
step acted with the weights of the update before (zero policy lag). A failed ``collect`` is retried on a
replacement actor while ``sampler_restarts`` allows (see :class:`~lightning_accelrl.data.ray_fleet.RayFleet`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from tensordict import TensorDict

from lightning_accelrl.data.ray_fleet import RayFleet
from lightning_accelrl.data.ray_sampler import SamplerActor
from lightning_accelrl.data.shared_weights import flat_parameters, parameters_of
from lightning_accelrl.data.source import ExperienceSource, SourceContext
from lightning_accelrl.data.supervision import CHECK_S, resume_point
from lightning_accelrl.sampling.agent import Agent

try:
    import ray
except ImportError:  # pragma: no cover - ray_fleet raised the ConfigError already
    ray = None

__all__ = ["RayRolloutSource"]

_KIND = "on_policy"  # the checkpoint's kind: no table, counts only


class RayRolloutSource(ExperienceSource):
    """``ceil(budget / (T·procs·B))`` on-policy batches ``[T, procs·B]`` collected by Ray actors, then ``None``."""

    def __init__(self, ctx: SourceContext) -> None:
        self.ctx = ctx
        self.fleet = RayFleet(ctx, SamplerActor)
        self.tracker = self.fleet.tracker
        self.updates = 0
        self.total_updates = math.ceil(ctx.budget / (ctx.rollout_steps * ctx.num_envs * self.fleet.num_procs))
        self._calls: list[Any] = []

    @property
    def restarts(self) -> int:  # type: ignore[override]
        return self.fleet.restarts

    @property
    def actors(self) -> list[Any]:
        return self.fleet.actors

    def start(self, agent: Agent) -> None:
        self.fleet.connect()
        self._params = parameters_of(agent)
        try:
            self.fleet.start(agent, self.ctx.budget)
        except BaseException:
            self.close()
            raise

    def next_batch(self, agent: Agent) -> TensorDict | None:
        if self.updates >= self.total_updates:
            return None
        version = int(agent.policy_version)
        weights = ray.put(flat_parameters(self._params).numpy())  # once per update, read by every actor
        steps = self.env_steps * self.ctx.world_size

        def call(i: int) -> Any:
            return self.fleet.actors[i].collect.remote(version, weights, steps)

        self._calls = [call(i) for i in range(self.fleet.num_procs)]
        segments: dict[int, TensorDict] = {}
        while len(segments) < len(self._calls):
            pending = [ref for i, ref in enumerate(self._calls) if i not in segments]
            ready, _ = ray.wait(pending, num_returns=len(pending), timeout=CHECK_S)
            for ref in ready:
                i = self._calls.index(ref)
                try:
                    segments[i] = ray.get(ref)
                except Exception as err:
                    self.fleet.failed(i, err)  # raises beyond sampler_restarts
                    self._calls[i] = call(i)
            self.fleet.check_placement()
        self._calls = []
        self.updates += 1
        self.fleet.drain()
        return torch.cat([segments[i] for i in range(len(segments))], dim=1)

    @property
    def exhausted(self) -> bool:
        return self.updates >= self.total_updates

    @property
    def env_steps(self) -> int:
        return self.fleet.env_steps

    def state_dict(self) -> dict[str, Any]:
        self.fleet.drain()
        return {"kind": _KIND, "table": None, "updates": self.updates, **self.fleet.state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        _, offset, base_steps = resume_point(state, _KIND, self.fleet.num_procs)
        self.fleet.resume(offset, base_steps)
        self.updates = int(state["updates"])
        if state.get("tracker") is not None:
            self.tracker.load_state_dict(state["tracker"])

    def close(self) -> None:
        """Kill the sampler actors (their envs go with them) and the coordinator; leave Ray if we joined it."""
        if self.fleet.closed:
            return
        self.fleet.close(self._calls)
        self.fleet.disconnect()
