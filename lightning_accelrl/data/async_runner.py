"""``sampler="async"``: sampler processes with their own envs and CPU policy copies feed a served table.

```
 sampler proc 0 ─┐  (envs + CPU policy copy, batched inference)     ┌─ learner (Trainer process)
 sampler proc 1 ─┼─► TableClient.insert ─► TableServer (table + limiter) ◄─ TableClient.sample
      ...        ┘                                                    └─ SharedWeights.publish every k updates
```

- **Data** goes through a :class:`~lightning_accelrl.replay.TableServer` (a process owning the table and its rate
  limiter; items travel through shared-memory staging buffers). Rollout algorithms (APPO, or any rollout
  algorithm): a Queue table of whole rollout segments ``[T, B]``, sampled once each. Replay algorithms (DQN
  family): a uniform or prioritized table of n-step transitions under a SampleToInsertRatio limiter, which bounds
  the ratio both ways.
- **Weights** reach the samplers through :class:`~lightning_accelrl.data.shared_weights.SharedWeights`; the
  version they act with is recorded per item (``policy_version``).
- **Statistics** (env steps, finished episodes, acting versions) go through small shared tensors, one row per
  sampler, each written by its sampler only (:mod:`lightning_accelrl.data.sampler_process`).
- **Faults**: the learner checks its samplers every 0.5 s and while waiting for data; a sampler that exited
  without finishing is restarted (a fresh fork with the current weights and envs on new seeds and stream ids) while
  ``sampler_restarts`` allows, and then raises :class:`SamplerProcessError` (one line) within about a second.
  Children ignore SIGINT (the learner stops them in order), and exit when the learner process dies (the table
  server does; their next call fails). ``close()`` stops the samplers and the server; nothing stays in
  ``/dev/shm`` (torch's file-descriptor sharing unlinks names at once).

Samplers are started with ``fork`` (about 6 ms each; ``spawn`` would pickle the module and re-import torch,
~1 s per process): a forked child calls ``torch.set_num_threads(1)`` before any torch op, and the policy copy it
uses is a CPU deep copy made before the fork, so a learner on a GPU is fine (the child never touches CUDA).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import multiprocessing as mp
import time
import weakref
from typing import Any

import torch
from tensordict import TensorDict

from lightning_accelrl.data.replay import make_replay_table, stores_frames
from lightning_accelrl.data.sampler_process import (
    ENV_STEPS,
    EPISODES,
    FINISHED,
    STATE,
    VERSION,
    SamplerJob,
    SamplerShared,
    sampler_main,
)
from lightning_accelrl.data.shared_weights import parameters_of
from lightning_accelrl.data.source import ExperienceSource, SourceContext
from lightning_accelrl.data.supervision import (
    SamplerProcessError,
    Watchdog,
    resume_point,
    sampler_stream,
    stream_seed,
    streams_end,
    watched_sample,
)
from lightning_accelrl.replay.serving.processes import sigint_blocked
from lightning_accelrl.sampling.agent import Agent
from lightning_accelrl.sampling.episodes import EpisodeTracker

__all__ = ["AsyncRunner", "SamplerProcessError"]

log = logging.getLogger(__name__)

_META_KEYS = ("key", "priority", "probability", "times_sampled", "table_size")
_EPISODE_RING = 1024  # finished episodes kept per sampler between two reads by the learner


def rollout_queue_table(max_size: int, state: dict[str, Any] | None = None) -> Any:
    """The rollout queue (every segment sampled once), built where the table is served; restored when resuming."""
    from lightning_accelrl.replay import Table

    table = Table.queue("rollouts", max_size)
    if state is not None:  # resume (in the server process, before it serves anybody)
        table.load_state_dict(state)
    return table


class AsyncRunner(ExperienceSource):
    """Starts and watches the sampler processes and the table server of one rank; the learner's side of both.

    Settings (``ctx.settings``): ``num_sampler_procs`` (processes of this rank, each with ``ctx.num_envs`` envs),
    ``weight_sync_every`` (publish weights every this many updates), ``async_queue_size`` (rollouts: segments the
    queue holds, default ``max(2, procs)``; it bounds the policy lag), ``sampler_restarts`` (samplers that die are
    replaced up to this many times in all; the next death raises :class:`SamplerProcessError`), and for replay
    algorithms the replay-table settings. A resumed run's table (items, priorities, limiter counters) and env-step
    count go on; its samplers take env streams above the saved run's (new seeds, and frame-stack stream ids that
    cannot collide with the restored frames).
    """

    def __init__(self, ctx: SourceContext) -> None:
        settings = ctx.settings
        self.ctx, self.kind = ctx, ctx.needs.kind
        self.num_procs = int(settings["num_sampler_procs"])
        self.weight_sync_every = max(1, int(settings["weight_sync_every"]))
        self.queue_size = settings.get("async_queue_size") or max(2, self.num_procs)
        self.max_restarts = max(0, int(settings["sampler_restarts"]))
        self.budget = ctx.budget
        self.total_updates = math.ceil(ctx.budget / (ctx.rollout_steps * ctx.num_envs))
        self.updates = 0
        self.tracker = EpisodeTracker(1, ctx.episode_window)
        self.restarts = 0
        self._attempts = [0] * self.num_procs  # restarts per sampler slot (selects its env stream)
        self._stream_offset = 0  # resume: streams of the saved run stay below this
        self._resume: dict[str, Any] | None = None
        self._steps_resumed: list[int] | None = None
        self.shared: SamplerShared | None = None
        self.server: Any = None
        self.client: Any = None
        self.procs: list[Any] = []
        self._seen = [0] * self.num_procs
        self._pushed_version = -1
        self._watchdog = Watchdog(self.check)
        self._closed = False
        self._finalizer: Any = None

    # ----- lifecycle --------------------------------------------------------------------------------------
    def start(self, agent: Agent) -> None:
        from lightning_accelrl.replay import TableServer

        self._params = parameters_of(agent)
        self.shared = SamplerShared.create(self._params, self.num_procs, _EPISODE_RING)
        if self._steps_resumed is not None:
            self.shared.counters[:, ENV_STEPS] = torch.tensor(self._steps_resumed, dtype=torch.int64)
        table_state = None if self._resume is None else self._resume["table"]
        if self.kind == "rollout":
            factory = functools.partial(rollout_queue_table, self.queue_size, table_state)
        else:  # one replay-sampling stream per rank's table
            seed = stream_seed(self.ctx.seed, -1 - self.ctx.rank)
            frames = stores_frames(self.ctx.env_spec)
            factory = functools.partial(
                make_replay_table, self.ctx.needs, self.ctx.settings, frames, seed, table_state
            )
        self._resume = None
        self.server = TableServer(factory, start_method="fork").start()  # fork: the state is not pickled
        self._finalizer = weakref.finalize(
            self, AsyncRunner._cleanup, self.shared.stop, self.procs, [self.server]
        )
        self.client = self.server.client()
        self.publish(agent, force=True)
        self.shared.counters[:, VERSION] = self._pushed_version  # what the samplers will act with first
        # restarted samplers fork from this copy too (each fetches the current weights before its first step)
        self._agent = agent.detached_copy()
        for i in range(self.num_procs):
            self.procs.append(self._spawn(i))

    def _spawn(self, idx: int) -> Any:
        """Fork sampler ``idx`` (SIGINT blocked across the fork: see :func:`sigint_blocked`)."""
        ctx = mp.get_context("fork")  # explicit: `import torchrl` switches the global default to spawn
        stream = self._stream_offset + sampler_stream(
            self.ctx.rank, self.num_procs, idx, self._attempts[idx], self.ctx.world_size
        )
        job = SamplerJob(
            idx, stream, self.ctx.make_env, self.ctx.needs, self.ctx.rollout_steps, self.budget, self.ctx.seed
        )
        p = ctx.Process(
            target=sampler_main,
            args=(job, self.shared, self._agent, self.client),
            name=f"accelrl-sampler-{self.ctx.rank}-{idx}",
            daemon=True,
        )
        with sigint_blocked():
            p.start()
        return p

    def close(self) -> None:
        """Stop samplers and the table server (idempotent; also run at exit and on garbage collection)."""
        if self._closed or self.shared is None:
            return
        self._drain()
        self._closed = True
        self._finalizer.detach()
        AsyncRunner._cleanup(self.shared.stop, self.procs, [self.server])
        self.server = None
        if self.client is not None:
            with contextlib.suppress(Exception):
                self.client.close()

    @staticmethod
    def _cleanup(stop_flag: torch.Tensor, procs: list[Any], server: list[Any]) -> None:
        stop_flag.fill_(1)
        if server[0] is not None:  # blocked inserts then fail at once, and the samplers see the stop flag
            with contextlib.suppress(Exception):
                server[0].stop(timeout=2.0)
        deadline = time.monotonic() + 3.0
        for p in procs:
            with contextlib.suppress(ValueError):  # a closed process object (replaced by a restart)
                p.join(max(0.0, deadline - time.monotonic()))
        for p in procs:
            with contextlib.suppress(ValueError):
                if p.is_alive():
                    p.terminate()
                    p.join(1.0)
                if p.is_alive():
                    p.kill()
                    p.join(1.0)

    def state_dict(self) -> dict[str, Any]:
        """The table (a consistent snapshot from the server, taken while the samplers go on), the env steps per
        sampler slot, the end of the env streams used so far, the episode window and the update count."""
        self._drain()
        return {
            "kind": self.kind,
            "table": self.client.state_dict(),
            "env_steps": self.shared.counters[:, ENV_STEPS].clone(),
            "stream_end": streams_end(
                self._stream_offset, self.num_procs, self._attempts, self.ctx.world_size
            ),
            "updates": self.updates,
            "tracker": self.tracker.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._resume = state
        _, self._stream_offset, self._steps_resumed = resume_point(state, self.kind, self.num_procs)
        self.updates = int(state.get("updates", 0))
        if state.get("tracker") is not None:
            self.tracker.load_state_dict(state["tracker"])

    # ----- the learner's side ---------------------------------------------------------------------------------
    def publish(self, agent: Agent, force: bool = False) -> None:
        """New weights for the samplers when ``weight_sync_every`` updates passed since the last publication."""
        version = int(agent.policy_version)
        if force or version - self._pushed_version >= self.weight_sync_every:
            self.shared.weights.publish(self._params, version)
            self._pushed_version = version

    def check(self) -> None:
        """Restart samplers that died while ``sampler_restarts`` allows; raise :class:`SamplerProcessError` when
        one died beyond that, or when the server died (it holds the table: not restartable)."""
        rank, counters = self.ctx.rank, self.shared.counters
        if self.server is not None and not self.server.is_alive():
            raise SamplerProcessError(f"the replay table server of rank {rank} died; stopping the run")
        for i, p in enumerate(self.procs):
            code = p.exitcode
            if code is None or (code == 0 and int(counters[i, STATE]) == FINISHED):
                continue
            how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
            what = f"async sampler process {i} of rank {rank} (pid {p.pid}) {how}"
            if self.restarts >= self.max_restarts or int(self.shared.stop[0]):
                after = f" after {self.restarts} restart(s) (sampler_restarts={self.max_restarts})"
                raise SamplerProcessError(f"{what}{after if self.max_restarts else ''}; stopping the run")
            self.restarts += 1
            self._attempts[i] += 1
            log.warning("%s; restarting it (restart %d of %d)", what, self.restarts, self.max_restarts)
            self.procs[i] = self._spawn(i)  # in place: the exit finalizer holds this list
            with contextlib.suppress(ValueError):
                p.close()  # reaped already (exitcode is set): release its resources

    def all_finished(self) -> bool:
        """Whether every sampler finished its share of the budget."""
        return bool((self.shared.counters[:, STATE] == FINISHED).all())

    def next_batch(self, agent: Agent) -> TensorDict | None:
        self.publish(agent)
        self._drain()
        if self.kind == "replay":
            if self.env_steps >= self.budget and self.all_finished():
                return None
            return watched_sample(
                self._watchdog,
                self.client.sample,
                self.ctx.sample_size,
                self.all_finished,
                "the replay table server",
            )
        if self.updates >= self.total_updates:
            return None
        item = watched_sample(self._watchdog, self.client.sample, 1, self.all_finished, "the table server")
        if item is None:
            return None
        self.updates += 1
        seg = item.exclude(*_META_KEYS)[0]
        seg.batch_size = torch.Size([self.ctx.rollout_steps, self.ctx.num_envs])
        return seg

    @property
    def exhausted(self) -> bool:
        return self.kind == "rollout" and self.updates >= self.total_updates

    def policy_lag(self, agent: Agent, batch: TensorDict) -> int | None:
        if self.kind == "replay":  # how stale the weights the samplers act with are
            return int(agent.policy_version) - int(self.shared.counters[:, VERSION].min())
        return super().policy_lag(agent, batch)

    def update_priorities(self, keys: torch.Tensor, priorities: torch.Tensor) -> None:
        self.client.update_priorities(keys.detach().cpu(), priorities.detach().float().cpu())

    @property
    def env_steps(self) -> int:
        if self.shared is None:
            return sum(self._steps_resumed or [0])
        return self.shared.env_steps

    def stats(self) -> dict[str, float]:
        self._drain()
        return {}

    def _drain(self) -> None:
        """Episodes the samplers finished since the last call, into the tracker."""
        if self.shared is None or self._closed:
            return
        counters, ring = self.shared.counters, self.shared.episodes
        window = ring.shape[1]
        for i in range(self.num_procs):
            count = int(counters[i, EPISODES])
            new = min(count - self._seen[i], window)
            for j in range(count - new, count):
                self.tracker.add(*ring[i, j % window].tolist())
            self._seen[i] = count
