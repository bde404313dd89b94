"""``sampler: ray``: sampler actors anywhere in a Ray cluster feed a replay table served by a Ray actor.

```
 sampler actor 0 ─┐  (envs + CPU policy copy, n-step writer)        ┌─ learner (Trainer process)
 sampler actor 1 ─┼─► RayTableClient.insert ─► table actor (limiter) ◄─ RayTableClient.sample
      ...         ┘         ▲ report steps/episodes, fetch weights    └─ coordinator.set_weights every k updates
                            └───────────── coordinator actor ◄────────┘
```

The same design as :mod:`lightning_accelrl.data.async_runner`, with Ray in place of fork and shared memory, so
that samplers can run on other machines (``TableServer`` is one machine only: Unix sockets, shared memory):

- **Data**: a :class:`~lightning_accelrl.replay.ray_table.RayTable` actor owns the replay table and its
  SampleToInsertRatio limiter (the async replay table: same selector, remover, capacity and limiter).
- **Weights and counts**: one small coordinator actor holds the latest published weights (a flat float32 array)
  with their policy version, every sampler's env steps and acting version, the finished episodes not yet read by
  the learner, and the stop flag. Samplers report after every vector step (one round trip: the global env-step
  count stops them at the budget, as the shared counters do in the async runner) and fetch weights only when the
  version they are told about is newer than theirs.
- **Faults**: each sampler runs one long ``run()`` call; the learner watches those calls (``ray.wait`` with no
  timeout) every 0.5 s and while waiting for data (``supervision.watched_sample``). An actor that died or raised
  is replaced while ``max_restarts`` allows (a fresh actor with the current weights, an env stream no sampler used,
  and its slot's env-step count), as in the async runner; beyond that it fails the run with
  :class:`~lightning_accelrl.data.supervision.SamplerProcessError` (one line).
- **Shutdown**: ``close()`` sets the stop flag, gives the samplers a moment to return, then kills every actor
  (samplers, table, coordinator) and, if this runner started Ray itself, shuts Ray down.

- **Checkpoints**: ``state_dict()`` has the format of :meth:`AsyncRunner.state_dict` (the table's state copied
  from its actor, env steps per sampler, the end of the env streams used), so a checkpoint resumes with the table,
  the limiter's counters and the env-step count.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from typing import Any

import numpy as np
import torch
from tensordict import TensorDict

from lightning_accelrl.data.replay import TransitionProducer, insert_all, make_replay_table, stores_frames
from lightning_accelrl.data.shared_weights import flat_parameters, load_flat, parameters_of
from lightning_accelrl.data.source import ExperienceSource, SourceContext
from lightning_accelrl.data.supervision import (
    INSERT_TIMEOUT_S,
    SamplerProcessError,
    Watchdog,
    first_line,
    resume_point,
    sampler_stream,
    stream_seed,
    streams_end,
    watched_sample,
)
from lightning_accelrl.errors import ConfigError
from lightning_accelrl.sampling.agent import Agent
from lightning_accelrl.sampling.episodes import EpisodeTracker

try:
    import ray
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ConfigError("sampler='ray' needs Ray: pip install 'lightning-accelrl[ray]'") from err

__all__ = ["RayRunner"]

log = logging.getLogger(__name__)

_STOP_GRACE_S = 3.0  # close(): how long samplers get to return by themselves before they are killed


class _Coordinator:
    """Actor body: the published weights, per-sampler counters, pending episodes and the stop flag.

    A plain (synchronous) actor: Ray runs its calls one at a time, so no locking is needed.
    """

    def __init__(self, num_procs: int, budget: int, base_steps: list[int] | None = None) -> None:
        self.budget = budget
        self.base = list(base_steps or [0] * num_procs)  # resume: each slot's env steps before this run
        self.env_steps = list(self.base)
        self.versions = [-1] * num_procs
        self.finished = [False] * num_procs
        self.episodes: list[tuple[float, float, float]] = []
        self.stop = False
        self.version, self.weights = -1, np.zeros(0, np.float32)

    def set_weights(self, version: int, flat: np.ndarray) -> None:
        self.version, self.weights = int(version), flat

    def get_weights(self) -> tuple[int, np.ndarray]:
        return self.version, self.weights

    def report(
        self,
        idx: int,
        env_steps: int,
        episodes: list[tuple[float, float, float]],
        version: int,
        finished: bool,
    ) -> tuple[bool, int, int]:
        """A sampler's counts; returns (go on?, total env steps, latest weight version)."""
        self.env_steps[idx], self.versions[idx] = self.base[idx] + env_steps, version
        self.episodes.extend(episodes)
        self.finished[idx] = self.finished[idx] or finished
        total = sum(self.env_steps)
        return (not self.stop and total < self.budget), total, self.version

    def status(self) -> dict[str, Any]:
        """The learner's view; hands over (and forgets) the episodes finished since the last call."""
        episodes, self.episodes = self.episodes, []
        return {
            "env_steps": sum(self.env_steps),
            "env_steps_each": list(self.env_steps),
            "acting_version": min(self.versions),
            "all_finished": all(self.finished),
            "episodes": episodes,
        }

    def request_stop(self) -> None:
        self.stop = True

    def restart_slot(self, idx: int) -> None:
        """A replacement sampler takes slot ``idx``: its own count starts at 0 on top of the dead one's."""
        self.base[idx], self.finished[idx] = self.env_steps[idx], False

    def stopped(self) -> bool:
        return self.stop


class _SamplerActor:
    """Actor body: builds its envs (seeds from its env stream), acts with a CPU policy copy, inserts n-step
    transitions into the table and reports to the coordinator after every vector step."""

    def __init__(
        self, idx: int, stream: int, agent: Any, ctx: SourceContext, table: Any, coordinator: Any
    ) -> None:
        torch.set_num_threads(1)  # one core per sampler actor (what it asks Ray for)
        self.idx, self.stream, self.agent, self.ctx = idx, stream, agent, ctx
        self.table, self.coord = table, coordinator

    def run(self) -> int:
        """Sample until the rank's budget is spent or the learner asks to stop; returns this actor's env steps."""
        from lightning_accelrl.sampling import SyncSampler

        ctx, agent = self.ctx, self.agent
        torch.manual_seed(stream_seed(ctx.seed, self.stream))
        env = ctx.make_env(self.stream)
        params = parameters_of(agent)
        sampler = SyncSampler(env, 1, store_next_observation=True)
        producer = TransitionProducer(sampler, ctx.needs, self.stream * env.num_envs)
        version, seen = -1, 0
        try:
            go, total, latest = ray.get(self.coord.report.remote(self.idx, 0, [], version, False))
            while go:
                if latest > version:  # fetch before stepping: act with the newest published weights
                    version, flat = ray.get(self.coord.get_weights.remote())
                    load_flat(torch.from_numpy(flat.copy()), params)
                    agent.policy_version = version
                agent.set_env_steps(total, ctx.budget)
                items = producer.step(agent)
                tracker = sampler.tracker
                episodes, seen = tracker.last(tracker.episodes - seen), tracker.episodes
                if items is not None:
                    insert_all(
                        self.table.insert,
                        items,
                        INSERT_TIMEOUT_S,
                        lambda: ray.get(self.coord.stopped.remote()),
                    )
                go, total, latest = ray.get(
                    self.coord.report.remote(self.idx, sampler.env_steps, episodes, version, False)
                )
            ray.get(self.coord.report.remote(self.idx, sampler.env_steps, [], version, True))
            return sampler.env_steps
        finally:
            with contextlib.suppress(Exception):
                env.close()


class RayRunner(ExperienceSource):
    """Starts and watches the table actor, the coordinator and the sampler actors of one rank (replay algorithms).

    Settings (``ctx.settings``): ``num_sampler_procs`` (sampler actors of this rank), ``weight_sync_every``,
    ``sampler_restarts`` (actors that die or raise are replaced up to this many times in all; the next failure
    raises :class:`SamplerProcessError`), ``ray_actor_options`` (``ray.remote(...).options`` for the sampler
    actors, default ``{"num_cpus": 1}``: Ray spreads them over the cluster's CPUs, other nodes included) and the
    replay-table settings. A resumed run's table and env-step count go on; its samplers take env streams above the
    saved run's.
    """

    def __init__(self, ctx: SourceContext) -> None:
        if ctx.needs.kind != "replay":
            raise ConfigError(
                f"sampler='ray' supports replay (DQN-family) algorithms only; this one needs {ctx.needs.describe()}"
            )
        settings = ctx.settings
        self.ctx = ctx
        self.num_procs = int(settings["num_sampler_procs"])
        self.weight_sync_every = max(1, int(settings["weight_sync_every"]))
        self.actor_options = dict(settings.get("ray_actor_options") or {"num_cpus": 1})
        self.max_restarts = max(0, int(settings["sampler_restarts"]))
        self.budget = ctx.budget
        self.tracker = EpisodeTracker(1, ctx.episode_window)
        self.restarts = 0
        self._attempts = [0] * self.num_procs  # restarts per sampler slot (selects its env stream)
        self.table: Any = None
        self.coord: Any = None
        self.actors: list[Any] = []
        self._runs: list[Any] = []
        self._done: set[int] = set()
        self._pushed_version = -1
        self._resume_table: dict[str, Any] | None = None
        self._stream_offset = 0  # resume: streams of the saved run stay below this
        self._base_steps = [0] * self.num_procs
        self._status: dict[str, Any] = {
            "env_steps": 0, "env_steps_each": list(self._base_steps), "acting_version": 0,
            "all_finished": False, "episodes": [],
        }  # fmt: skip
        self._watchdog = Watchdog(self.check)
        self._started_ray = False
        self._closed = False

    # ----- lifecycle --------------------------------------------------------------------------------------
    def start(self, agent: Agent) -> None:
        from lightning_accelrl.replay.ray_local import start_local_ray
        from lightning_accelrl.replay.ray_table import RayTable

        # local Ray on loopback, unless the user's ray.init(address="auto") ran before: then the actors may land on
        # any node
        if start_local_ray():
            self._started_ray = True
        self._params = parameters_of(agent)
        try:
            ctx = self.ctx
            seed = stream_seed(ctx.seed, -1 - ctx.rank)
            frames = stores_frames(ctx.env_spec)
            factory = _table_factory(ctx, frames, seed, self._resume_table)
            # the table and coordinator take no CPU slot: they must never keep samplers from being scheduled
            self.table = RayTable.create("replay", factory=factory, actor_options={"num_cpus": 0})
            self._resume_table = None  # shipped to the table actor with its factory
            self.coord = (
                ray.remote(_Coordinator)
                .options(num_cpus=0)
                .remote(self.num_procs, self.budget, self._base_steps)
            )
            self.publish(agent, force=True)
            self._agent = agent.detached_copy()  # replacements start from it too (and fetch current weights)
            for i in range(self.num_procs):
                actor = self._spawn(i)
                self.actors.append(actor)
                self._runs.append(actor.run.remote())
        except BaseException:
            self.close()
            raise

    def _spawn(self, idx: int) -> Any:
        """Sampler actor ``idx`` on the env stream of its slot's current restart count."""
        stream = self._stream_offset + sampler_stream(
            self.ctx.rank, self.num_procs, idx, self._attempts[idx], self.ctx.world_size
        )
        actor_cls = ray.remote(_SamplerActor).options(max_restarts=0, **self.actor_options)
        return actor_cls.remote(idx, stream, copy.deepcopy(self._agent), self.ctx, self.table, self.coord)

    def close(self) -> None:
        """Stop the samplers (stop flag, then kill), the table and the coordinator; idempotent."""
        if self._closed:
            return
        with contextlib.suppress(Exception):
            self._drain()
        self._closed = True
        if self.coord is not None:
            with contextlib.suppress(Exception):
                ray.get(self.coord.request_stop.remote(), timeout=2.0)
        if self._runs:
            with contextlib.suppress(Exception):
                ray.wait(self._runs, num_returns=len(self._runs), timeout=_STOP_GRACE_S)
        for actor in [*self.actors, self.coord]:
            if actor is not None:
                with contextlib.suppress(Exception):
                    ray.kill(actor)
        if self.table is not None:
            with contextlib.suppress(Exception):
                self.table.kill()
        if self._started_ray:
            with contextlib.suppress(Exception):
                ray.shutdown()

    def state_dict(self) -> dict[str, Any]:
        """``AsyncRunner.state_dict``'s format: the table's state from its actor (a consistent snapshot taken
        while the samplers go on), env steps per sampler, the streams' end, the episode window."""
        table = self.table.state_dict()
        self._drain()
        return {
            "kind": "replay",
            "table": table,
            "env_steps": torch.tensor(self._status["env_steps_each"], dtype=torch.int64),
            "stream_end": streams_end(
                self._stream_offset, self.num_procs, self._attempts, self.ctx.world_size
            ),
            "tracker": self.tracker.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._resume_table, self._stream_offset, self._base_steps = resume_point(
            state, "replay", self.num_procs
        )
        self._status["env_steps"] = sum(self._base_steps)
        self._status["env_steps_each"] = list(self._base_steps)
        if state.get("tracker") is not None:
            self.tracker.load_state_dict(state["tracker"])

    # ----- the learner's side ---------------------------------------------------------------------------------
    def publish(self, agent: Agent, force: bool = False) -> None:
        """New weights for the samplers when ``weight_sync_every`` updates passed since the last publication."""
        version = int(agent.policy_version)
        if force or version - self._pushed_version >= self.weight_sync_every:
            flat = flat_parameters(self._params)
            self.coord.set_weights.remote(version, flat.numpy())  # ordered with later calls of this driver
            self._pushed_version = version

    def check(self) -> None:
        """Replace sampler actors that died or raised while ``sampler_restarts`` allows; raise
        :class:`SamplerProcessError` (one line) for a failure beyond that."""
        pending = [ref for i, ref in enumerate(self._runs) if i not in self._done]
        if not pending:
            return
        ready, _ = ray.wait(pending, num_returns=len(pending), timeout=0)
        for ref in ready:
            i = self._runs.index(ref)
            try:
                ray.get(ref)
            except Exception as err:
                what = f"ray sampler actor {i} of rank {self.ctx.rank} failed ({first_line(err)})"
                if self.restarts >= self.max_restarts:
                    after = f" after {self.restarts} restart(s) (sampler_restarts={self.max_restarts})"
                    raise SamplerProcessError(
                        f"{what}{after if self.max_restarts else ''}; stopping the run"
                    ) from None
                self._restart(i, what)
                continue
            self._done.add(i)

    def _restart(self, idx: int, what: str) -> None:
        self.restarts += 1
        self._attempts[idx] += 1
        log.warning("%s; restarting it (restart %d of %d)", what, self.restarts, self.max_restarts)
        with contextlib.suppress(Exception):
            ray.kill(self.actors[idx])  # it raised rather than died: make sure it is gone
        ray.get(self.coord.restart_slot.remote(idx))
        self.actors[idx] = self._spawn(idx)
        self._runs[idx] = self.actors[idx].run.remote()

    def _drain(self) -> None:
        """Counts from the coordinator; the episodes finished since the last call go into the tracker."""
        if self._closed or self.coord is None:
            return
        try:
            status = ray.get(self.coord.status.remote())
        except Exception as err:
            raise SamplerProcessError(f"lost the ray sampler coordinator ({first_line(err)})") from None
        for episode in status["episodes"]:
            self.tracker.add(*episode)
        status["episodes"] = []
        self._status = status

    def all_finished(self) -> bool:
        """Whether every sampler actor finished, asked of the coordinator."""
        self._drain()
        return bool(self._status["all_finished"])

    @property
    def env_steps(self) -> int:
        return int(self._status["env_steps"])

    def next_batch(self, agent: Agent) -> TensorDict | None:
        self.publish(agent)
        self._drain()
        if self.env_steps >= self.budget and self._status["all_finished"]:
            return None
        batch_size = int(self.ctx.settings["batch_size"])
        return watched_sample(
            self._watchdog, self.table.sample, batch_size, self.all_finished, "the ray replay table"
        )

    def policy_lag(self, agent: Agent, batch: TensorDict) -> int | None:
        return int(agent.policy_version) - int(self._status["acting_version"])

    def update_priorities(self, keys: torch.Tensor, priorities: torch.Tensor) -> None:
        self.table.update_priorities(keys.detach().cpu(), priorities.detach().float().cpu())


def _table_factory(ctx: SourceContext, frames: bool, seed: int, state: dict[str, Any] | None) -> Any:
    """The rank's replay table, built inside the table actor (from ``state`` when resuming)."""
    import functools

    return functools.partial(make_replay_table, ctx.needs, ctx.settings, frames, seed, state)
