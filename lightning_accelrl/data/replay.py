"""Replay experience: n-step transitions produced from env steps, a replay table, and the synchronous source.

- :class:`TransitionProducer` turns one vector step of a sampler into n-step transitions (with frame-stack
  indices for image envs): the one producer loop of the sync source, the sampler processes and the Ray actors.
- :func:`make_replay_table` builds a rank's table (uniform or prioritized selector, FIFO remover, limiter).
- :class:`ReplaySource` steps the envs exactly as often as the table's rate limiter asks: the learner asks for a
  batch; while the limiter refuses the sample, the source inserts pending transitions or steps every env once
  (one batched forward) and inserts the new transitions. Inserts never block (``timeout=0``: what the limiter
  refuses stays pending), and the band is validated so that sampling or inserting is always possible: no
  deadlock whatever the ratio, batch size and env count.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from tensordict import TensorDict

from lightning_accelrl.data.needs import ExperienceNeeds
from lightning_accelrl.data.source import ExperienceSource, SourceContext
from lightning_accelrl.envs.base import EnvSpec
from lightning_accelrl.errors import ConfigError
from lightning_accelrl.replay import (
    FrameStackStorage,
    NStepWriter,
    StreamIndexer,
    Table,
    rate_limiters,
    selectors,
)
from lightning_accelrl.replay.errors import InsertTimeout
from lightning_accelrl.sampling import SyncSampler
from lightning_accelrl.sampling.agent import Agent


def replay_limiter(samples_per_insert: float, min_size: int, sample_size: int, error_buffer: float | None):
    """SampleToInsertRatio whose band is wide enough for a single-threaded loop to always make progress.

    Sampling ``n`` needs ``x − n ≥ min_diff`` and inserting needs ``x + spi ≤ max_diff`` (x = I·spi − S):
    both refused is impossible when ``max_diff − min_diff ≥ n + spi``. ``sample_size`` is one training batch's
    sample: ``batch_size`` × the algorithm's ``updates_per_batch``.
    """
    needed = max(
        (sample_size + samples_per_insert) / 2, samples_per_insert, 1.0
    )  # Reverb: band >= 2·max(1, spi)
    if error_buffer is None:
        error_buffer = max(needed, float(sample_size))
    elif error_buffer < needed:
        raise ConfigError(
            f"replay_error_buffer {error_buffer} is too small for samples of {sample_size} items per training "
            f"batch (batch_size × updates_per_batch) and replay_ratio {samples_per_insert}: use at least "
            f"{needed:g} (or leave it unset)"
        )
    return rate_limiters.SampleToInsertRatio(samples_per_insert, min_size, error_buffer)


def stores_frames(spec: EnvSpec) -> bool:
    """Frame stacks (``[S, H, W]`` uint8 with ``spec.frame_stack`` frames) go to a frame-deduplicating storage;
    other images (RGB, channels last, single frames) are stored as they are."""
    return spec.is_frame_stack


def check_replay_settings(settings: dict[str, Any]) -> None:
    """The table must be able to hold ``learning_starts`` items before the first sample."""
    if settings["replay_capacity"] < settings["learning_starts"]:
        raise ConfigError(
            f"replay_capacity {settings['replay_capacity']} must be >= learning_starts {settings['learning_starts']}"
        )


def make_replay_table(
    needs: ExperienceNeeds,
    settings: dict[str, Any],
    frames: bool,
    seed: int | None = None,
    state: dict[str, Any] | None = None,
) -> Table:
    """A rank's replay table: ``settings`` are the data module's replay arguments (capacity, ratio, batch size,
    learning starts, error buffer); ``state`` restores a checkpoint's table (items, priorities, counters)."""
    check_replay_settings(settings)
    capacity = settings["replay_capacity"]
    table = Table(
        "replay",
        sampler=selectors.Prioritized(needs.priority_exponent) if needs.prioritized else selectors.Uniform(),
        remover=selectors.Fifo(),
        max_size=capacity,
        rate_limiter=replay_limiter(
            settings["replay_ratio"],
            settings["learning_starts"],
            settings["batch_size"] * needs.updates_per_batch,  # one training batch's sample
            settings["replay_error_buffer"],
        ),
        storage=FrameStackStorage(capacity) if frames else None,
        seed=seed,  # replay sampling follows the run's seed (None: OS entropy)
    )
    if state is not None:
        table.load_state_dict(state)
    return table


class TransitionProducer:
    """Steps a one-step sampler and returns the n-step transitions that became complete (or None)."""

    def __init__(self, sampler: SyncSampler, needs: ExperienceNeeds, first_stream: int) -> None:
        spec = sampler.env.spec
        self.sampler = sampler
        self.writer = NStepWriter(needs.n_step, needs.gamma, sampler.num_envs, needs.bootstrap_truncated)
        self.indexer = (
            StreamIndexer(sampler.num_envs, spec.observation_shape[0], first_stream)
            if stores_frames(spec)
            else None
        )

    def step(self, agent: Agent) -> TensorDict | None:
        step = self.sampler.collect(agent)[0]
        if self.indexer is not None:
            step = self.indexer(step)
        items = self.writer.add(step)
        return None if items is None or items.batch_size[0] == 0 else items

    def new_episodes(self) -> None:
        """Every env starts a fresh episode (after a resume: partial transitions belong to old episodes)."""
        self.writer.reset()
        if self.indexer is not None:
            self.indexer.new_episode(torch.arange(self.sampler.num_envs))


def insert_all(
    insert: Callable[..., Any], items: TensorDict, timeout: float, stop: Callable[[], bool]
) -> None:
    """Insert every item, blocking while the limiter refuses and asking ``stop()`` between waits (the sampler
    processes' and Ray actors' insert loop: an insert that timed out keeps what it admitted)."""
    while True:
        try:
            insert(items, timeout=timeout)
            return
        except InsertTimeout as err:  # Table, TableClient and RayTable alike
            done = err.num_inserted
            if done:
                items = items[done:]
            if stop():
                return


def _plain(td: TensorDict) -> dict[str, Any]:
    """A TensorDict as plain containers (checkpoints load with ``weights_only=True``)."""
    return {"data": td.to_dict(), "batch_size": list(td.batch_size)}


class ReplaySource(ExperienceSource):
    """This rank's envs, n-step producer and replay table; ``next_batch`` is ``table.sample(batch_size)``."""

    def __init__(self, ctx: SourceContext) -> None:
        self.ctx = ctx
        self.settings = ctx.settings
        env = ctx.make_env(ctx.rank)
        self.sampler = SyncSampler(env, 1, store_next_observation=True, episode_window=ctx.episode_window)
        self.tracker = self.sampler.tracker
        self.producer = TransitionProducer(self.sampler, ctx.needs, first_stream=ctx.rank * env.num_envs)
        self.table = make_replay_table(
            ctx.needs, ctx.settings, stores_frames(env.spec), seed=ctx.seed + 104_729 * ctx.rank
        )
        self.batch_size = ctx.sample_size
        self.pending: TensorDict | None = None
        self.env_time = 0.0  # seconds spent stepping envs because the limiter refused a sample
        self.sample_time = 0.0

    def start(self, agent: Agent) -> None:
        """Nothing to start: the envs step in :meth:`next_batch`."""

    @property
    def env_steps(self) -> int:
        return self.sampler.env_steps

    def next_batch(self, agent: Agent) -> TensorDict | None:
        """A batch as soon as the limiter allows; ``None`` once that would take env steps beyond the budget."""
        while True:
            t0 = time.perf_counter()
            try:
                batch = self.table.sample(self.batch_size, timeout=0)
                self.sample_time += time.perf_counter() - t0
                return batch
            except TimeoutError:
                pass
            if self.pending is None and self.env_steps >= self.ctx.budget:
                return None
            self._feed(agent)
            self.env_time += time.perf_counter() - t0

    def _feed(self, agent: Agent) -> None:
        if self.pending is None:
            agent.set_env_steps(self.env_steps * self.ctx.world_size, self.ctx.total_env_steps)
            self.pending = self.producer.step(agent)
            if self.pending is None:
                return
        try:
            self.table.insert(self.pending, timeout=0)
            self.pending = None
        except InsertTimeout as exc:
            done = exc.num_inserted
            if done == 0:  # cannot happen with a band from replay_limiter; guard against a custom table
                raise RuntimeError(f"replay table refuses both samples and inserts: {exc}") from None
            self.pending = self.pending[done:]

    def policy_lag(self, agent: Agent, batch: TensorDict) -> int | None:
        return None  # replay data is old by design; acting uses the current weights

    def update_priorities(self, keys: torch.Tensor, priorities: torch.Tensor) -> None:
        self.table.update_priorities(keys.detach().cpu(), priorities.detach().float().cpu())

    def stats(self) -> dict[str, float]:
        info = self.table.info()
        inserts, samples = float(info["inserts"]), float(info["samples"])
        return {
            "replay/size": float(self.table.size),
            "replay/ratio": samples / inserts if inserts else 0.0,
            "replay/env_time_s": self.env_time,
            "replay/sample_time_s": self.sample_time,
        }

    def state_dict(self) -> dict[str, Any]:
        """This rank's replay state (under DDP the data module gathers every rank's into the checkpoint)."""
        indexer = self.producer.indexer
        return {
            "table": self.table.state_dict(),
            "indexer": None if indexer is None else indexer.state_dict(),
            "pending": None if self.pending is None else _plain(self.pending),
            "env_steps": self.sampler.env_steps,
            "env_time": self.env_time,
            "sample_time": self.sample_time,
            "tracker": self.tracker.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore table (items, priorities, limiter counters) and counters.

        The envs restart with fresh episodes after a resume, so the n-step writer starts empty (its partial
        transitions belong to episodes that no longer run) and every stream begins a new episode.
        """
        saved, indexer = state.get("indexer"), self.producer.indexer
        if indexer is not None and saved is not None:  # checked first: nothing is restored on a mismatch
            own = indexer.state_dict()
            for key in ("num_envs", "stack", "first_stream"):
                if saved[key] != own[key]:
                    raise ConfigError(
                        f"the checkpoint's replay table was filled with frame-stack {key}={saved[key]!r}, this "
                        f"rank's envs have {own[key]!r} (a checkpoint of another num_envs, or of another rank)"
                    )
        self.table.load_state_dict(state["table"])
        if indexer is not None and saved is not None:
            indexer.load_state_dict(saved)
        self.producer.new_episodes()
        pending = state["pending"]
        self.pending = (
            None if pending is None else TensorDict(pending["data"], batch_size=pending["batch_size"])
        )
        self.sampler.env_steps = int(state["env_steps"])
        self.env_time, self.sample_time = float(state["env_time"]), float(state["sample_time"])
        if state.get("tracker") is not None:
            self.tracker.load_state_dict(state["tracker"])

    def close(self) -> None:
        self.sampler.close()
