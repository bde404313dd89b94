"""Synchronous replay feeding: the envs are stepped exactly as often as the table's rate limiter asks.

The learner asks for a batch; while the limiter refuses the sample, the feeder inserts pending transitions or
steps every env once (one batched forward) and inserts the new n-step transitions. Inserts never block either
(``timeout=0``: what the limiter refuses stays pending), and the band is validated so that sampling or
inserting is always possible: no deadlock whatever the ratio, batch size and env count.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from tensordict import TensorDict

from lightning_accelrl.errors import ConfigError
from lightning_accelrl.replay import (
    FrameStackStorage,
    NStepWriter,
    StreamIndexer,
    Table,
    rate_limiters,
    selectors,
)
from lightning_accelrl.sampling import SyncSampler


def replay_limiter(samples_per_insert: float, min_size: int, batch_size: int, error_buffer: float | None):
    """SampleToInsertRatio whose band is wide enough for a single-threaded loop to always make progress.

    Sampling ``n`` needs ``x − n ≥ min_diff`` and inserting needs ``x + spi ≤ max_diff`` (x = I·spi − S):
    both refused is impossible when ``max_diff − min_diff ≥ n + spi``.
    """
    needed = max(
        (batch_size + samples_per_insert) / 2, samples_per_insert, 1.0
    )  # Reverb: band >= 2·max(1, spi)
    if error_buffer is None:
        error_buffer = max(needed, float(batch_size))
    elif error_buffer < needed:
        raise ConfigError(
            f"replay_error_buffer {error_buffer} is too small for batch_size {batch_size} and replay_ratio "
            f"{samples_per_insert}: use at least {needed:g} (or leave it unset)"
        )
    return rate_limiters.SampleToInsertRatio(samples_per_insert, min_size, error_buffer)


class ReplayFeeder:
    """Owns the table and n-step writer of one rank; ``next_batch`` returns ``table.sample(batch_size)``."""

    def __init__(
        self,
        sampler: SyncSampler,
        capacity: int,
        batch_size: int,
        samples_per_insert: float,
        min_size: int,
        error_buffer: float | None,
        n_step: int,
        gamma: float,
        prioritized: bool,
        priority_exponent: float,
        first_stream: int = 0,
        seed: int | None = None,
    ) -> None:
        if capacity < min_size:
            raise ConfigError(f"replay_capacity {capacity} must be >= learning_starts {min_size}")
        self.sampler = sampler
        self.batch_size = batch_size
        spec = sampler.env.spec
        frames = len(spec.observation_shape) == 3 and spec.observation_dtype == torch.uint8
        self.indexer = (
            StreamIndexer(sampler.num_envs, spec.observation_shape[0], first_stream) if frames else None
        )
        self.table = Table(
            "replay",
            sampler=selectors.Prioritized(priority_exponent) if prioritized else selectors.Uniform(),
            remover=selectors.Fifo(),
            max_size=capacity,
            rate_limiter=replay_limiter(samples_per_insert, min_size, batch_size, error_buffer),
            storage=FrameStackStorage(capacity) if frames else None,
            seed=seed,  # replay sampling follows the run's seed (None: OS entropy)
        )
        self.writer = NStepWriter(n_step, gamma, sampler.num_envs)
        self.pending: TensorDict | None = None
        self.env_time = 0.0  # seconds spent stepping envs because the limiter refused a sample
        self.sample_time = 0.0

    @property
    def env_steps(self) -> int:
        return self.sampler.env_steps

    def next_batch(self, agent: Any, max_env_steps: int | None = None) -> TensorDict | None:
        """A batch as soon as the limiter allows; ``None`` once that would take env steps beyond the budget."""
        while True:
            t0 = time.perf_counter()
            try:
                batch = self.table.sample(self.batch_size, timeout=0)
                self.sample_time += time.perf_counter() - t0
                return batch
            except TimeoutError:
                pass
            if self.pending is None and max_env_steps is not None and self.env_steps >= max_env_steps:
                return None
            self._feed(agent)
            self.env_time += time.perf_counter() - t0

    def _feed(self, agent: Any) -> None:
        if self.pending is None:
            step = self.sampler.collect(agent)[0]
            if self.indexer is not None:
                step = self.indexer(step)
            items = self.writer.add(step)
            if items is None or items.batch_size[0] == 0:
                return
            self.pending = items
        try:
            self.table.insert(self.pending, timeout=0)
            self.pending = None
        except TimeoutError as exc:
            done = int(exc.num_inserted)  # type: ignore[attr-defined]
            if done == 0:  # cannot happen with a band from replay_limiter; guard against a custom table
                raise RuntimeError(f"replay table refuses both samples and inserts: {exc}") from None
            self.pending = self.pending[done:]

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
        return {
            "table": self.table.state_dict(),
            "indexer": None if self.indexer is None else self.indexer.state_dict(),
            "pending": self.pending,
            "env_steps": self.sampler.env_steps,
            "env_time": self.env_time,
            "sample_time": self.sample_time,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore table (items, priorities, limiter counters) and counters.

        The envs restart with fresh episodes after a resume, so the n-step writer starts empty (its partial
        transitions belong to episodes that no longer run) and every stream begins a new episode.
        """
        saved = state.get("indexer")
        if self.indexer is not None and saved is not None:  # checked first: nothing is restored on a mismatch
            own = self.indexer.state_dict()
            for key in ("num_envs", "stack", "first_stream"):
                if saved[key] != own[key]:
                    raise ConfigError(
                        f"the checkpoint's replay table was filled with frame-stack {key}={saved[key]!r}, this "
                        f"rank's envs have {own[key]!r} (a checkpoint of another num_envs, or of another rank)"
                    )
        self.table.load_state_dict(state["table"])
        if self.indexer is not None and saved is not None:
            self.indexer.load_state_dict(saved)
            self.indexer.new_episode(torch.arange(self.sampler.num_envs))
        self.writer.reset()
        self.pending = state["pending"]
        self.sampler.env_steps = int(state["env_steps"])
        self.env_time, self.sample_time = float(state["env_time"]), float(state["sample_time"])
