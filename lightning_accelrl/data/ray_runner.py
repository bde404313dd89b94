"""``sampler: ray`` for replay algorithms and asynchronous rollouts: sampler actors anywhere in a Ray cluster feed
a table served by a Ray actor.

```
 sampler actor 0 ─┐  (envs + CPU policy copy)                         ┌─ learner (Trainer process)
 sampler actor 1 ─┼─► RayTableClient.insert ─► table actor (limiter) ◄─ RayTableClient.sample
      ...         ┘         ▲ report steps/episodes, fetch weights    └─ coordinator.set_weights every k updates
                            └───────────── coordinator actor ◄────────┘
```

The same design as :mod:`lightning_accelrl.data.async_runner`, with Ray in place of fork and shared memory, so
that samplers can run on other machines (``TableServer`` is one machine only: Unix sockets, shared memory):

- **Data**: a :class:`~lightning_accelrl.replay.ray_table.RayTable` actor on the learner's node owns the table.
  Replay algorithms: the replay table and its SampleToInsertRatio limiter (same selector, remover, capacity and
  limiter as the async replay table); samplers insert n-step transitions after every vector step. Asynchronous
  rollouts (``ray_rollouts: async``: APPO, AsyncA2C): a Queue table of whole segments ``[T, B]``, each sampled
  once, with the behaviour policy's outputs and ``policy_version`` (the lag the learner logs and V-trace corrects).
- **Weights, counts, faults, placement**: :class:`~lightning_accelrl.data.ray_fleet.RayFleet` (the coordinator
  actor, supervision and restarts, ``ray_sampler_resources``). Each sampler runs one long ``run()`` call; the
  learner watches those calls every 0.5 s and while waiting for data (``supervision.watched_sample``).
- **Shutdown**: ``close()`` sets the stop flag, gives the samplers a moment to return, then kills every actor
  (samplers, table, coordinator) and leaves Ray if this runner joined or started it.
- **Checkpoints**: ``state_dict()`` has the format of :meth:`AsyncRunner.state_dict` (the table's state copied
  from its actor, env steps per sampler, the end of the env streams used), so a checkpoint resumes with the table,
  the limiter's counters and the env-step count.
"""

from __future__ import annotations

import contextlib
import functools
import math
from typing import Any

import torch
from tensordict import TensorDict

from lightning_accelrl.data.async_runner import rollout_queue_table
from lightning_accelrl.data.ray_fleet import RayFleet, learner_node_options
from lightning_accelrl.data.ray_sampler import SamplerActor
from lightning_accelrl.data.replay import make_replay_table, stores_frames
from lightning_accelrl.data.source import ExperienceSource, SourceContext
from lightning_accelrl.data.supervision import Watchdog, resume_point, stream_seed, watched_sample
from lightning_accelrl.sampling.agent import Agent

try:
    import ray
except ImportError:  # pragma: no cover - ray_fleet raised the ConfigError already
    ray = None

__all__ = ["RayRunner"]

_META_KEYS = ("key", "priority", "probability", "times_sampled", "table_size")


class RayRunner(ExperienceSource):
    """Starts and watches the table actor, the coordinator and the sampler actors of one rank (replay algorithms,
    asynchronous rollouts).

    Settings (``ctx.settings``): ``num_sampler_procs`` (sampler actors of this rank), ``weight_sync_every``,
    ``sampler_restarts``, ``ray_sampler_resources``, ``ray_address`` (see :class:`RayFleet`),
    ``async_queue_size`` (rollouts: segments the queue holds, default ``max(2, procs)``; it bounds the lag) and the
    replay-table settings. A resumed run's table and env-step count go on; its samplers take env streams above the
    saved run's.
    """

    def __init__(self, ctx: SourceContext) -> None:
        self.ctx, self.kind = ctx, ctx.needs.kind
        self.fleet = RayFleet(ctx, SamplerActor)
        self.tracker = self.fleet.tracker
        self.budget = ctx.budget
        self.queue_size = ctx.settings.get("async_queue_size") or max(2, self.fleet.num_procs)
        self.total_updates = math.ceil(ctx.budget / (ctx.rollout_steps * ctx.num_envs))
        self.updates = 0
        self.table: Any = None
        self._runs: list[Any] = []
        self._done: set[int] = set()
        self._resume_table: dict[str, Any] | None = None
        self._watchdog = Watchdog(self.check)

    @property
    def restarts(self) -> int:  # type: ignore[override]
        return self.fleet.restarts

    @property
    def actors(self) -> list[Any]:
        """The sampler actors (replacements take their slot)."""
        return self.fleet.actors

    @property
    def coord(self) -> Any:
        return self.fleet.coord

    # ----- lifecycle --------------------------------------------------------------------------------------
    def start(self, agent: Agent) -> None:
        from lightning_accelrl.replay.ray_table import RayTable

        self.fleet.connect()
        try:
            # the table takes no CPU slot (it must never keep samplers from being scheduled), on the learner's node
            self.table = RayTable.create(
                self.kind, factory=self._table_factory(), actor_options=learner_node_options()
            )
            self._resume_table = None  # shipped to the table actor with its factory
            self.fleet.start(agent, self.budget)
            self._runs = [actor.run.remote(self.table) for actor in self.fleet.actors]
        except BaseException:
            self.close()
            raise

    def _table_factory(self) -> Any:
        """The rank's table, built inside the table actor (from the saved state when resuming)."""
        if self.kind == "rollout":
            return functools.partial(rollout_queue_table, self.queue_size, self._resume_table)
        ctx = self.ctx
        seed = stream_seed(ctx.seed, -1 - ctx.rank)  # one replay-sampling stream per rank's table
        frames = stores_frames(ctx.env_spec)
        return functools.partial(make_replay_table, ctx.needs, ctx.settings, frames, seed, self._resume_table)

    def close(self) -> None:
        """Stop the samplers (stop flag, then kill), the table and the coordinator; idempotent."""
        if self.fleet.closed:
            return
        self.fleet.close(self._runs)
        if self.table is not None:
            with contextlib.suppress(Exception):
                self.table.kill()
        self.fleet.disconnect()

    def state_dict(self) -> dict[str, Any]:
        """``AsyncRunner.state_dict``'s format: the table's state from its actor (a consistent snapshot taken
        while the samplers go on), env steps per sampler, the streams' end, the episode window."""
        table = self.table.state_dict()
        self.fleet.drain()
        return {"kind": self.kind, "table": table, "updates": self.updates, **self.fleet.state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._resume_table, offset, base_steps = resume_point(state, self.kind, self.fleet.num_procs)
        self.fleet.resume(offset, base_steps)
        self.updates = int(state.get("updates", 0))
        if state.get("tracker") is not None:
            self.tracker.load_state_dict(state["tracker"])

    # ----- the learner's side ---------------------------------------------------------------------------------
    def publish(self, agent: Agent, force: bool = False) -> None:
        self.fleet.publish(agent, force)

    def check(self) -> None:
        """Replace sampler actors that died or raised while ``sampler_restarts`` allows; raise
        :class:`SamplerProcessError` (one line) for a failure beyond that or an actor no node takes."""
        self.fleet.check_placement()
        pending = [ref for i, ref in enumerate(self._runs) if i not in self._done]
        if not pending:
            return
        ready, _ = ray.wait(pending, num_returns=len(pending), timeout=0)
        for ref in ready:
            i = self._runs.index(ref)
            try:
                ray.get(ref)
            except Exception as err:
                self.fleet.failed(i, err)
                self._runs[i] = self.fleet.actors[i].run.remote(self.table)
                continue
            self._done.add(i)

    def all_finished(self) -> bool:
        """Whether every sampler actor finished, asked of the coordinator."""
        self.fleet.drain()
        return bool(self.fleet.status["all_finished"])

    @property
    def env_steps(self) -> int:
        return self.fleet.env_steps

    def next_batch(self, agent: Agent) -> TensorDict | None:
        self.publish(agent)
        self.fleet.drain()
        if self.kind == "replay":
            if self.env_steps >= self.budget and self.fleet.status["all_finished"]:
                return None
            return watched_sample(
                self._watchdog,
                self.table.sample,
                self.ctx.sample_size,
                self.all_finished,
                "the ray replay table",
            )
        if self.updates >= self.total_updates:
            return None
        item = watched_sample(
            self._watchdog, self.table.sample, 1, self.all_finished, "the ray rollout queue"
        )
        if item is None:
            return None
        self.updates += 1
        segment = item.exclude(*_META_KEYS)[
            0
        ].clone()  # the sample shares the object store's read-only memory
        segment.batch_size = torch.Size([self.ctx.rollout_steps, self.ctx.num_envs])
        return segment

    @property
    def exhausted(self) -> bool:
        return self.kind == "rollout" and self.updates >= self.total_updates

    def policy_lag(self, agent: Agent, batch: TensorDict) -> int | None:
        if self.kind == "replay":  # how stale the weights the samplers act with are
            return int(agent.policy_version) - int(self.fleet.status["acting_version"])
        return super().policy_lag(agent, batch)

    def update_priorities(self, keys: torch.Tensor, priorities: torch.Tensor) -> None:
        self.table.update_priorities(keys.detach().cpu(), priorities.detach().float().cpu())
