"""The body of a ``sampler: ray`` actor: its envs (seeded from its env stream), a CPU policy copy, and one of three
jobs: n-step transitions into a replay table or rollout segments into a queue table (``run``: a long call that
samples until the budget is spent or the learner stops it), or one on-policy segment per call (``collect``)."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch
from tensordict import TensorDict

from lightning_accelrl.data.replay import TransitionProducer, insert_all
from lightning_accelrl.data.shared_weights import load_flat, parameters_of
from lightning_accelrl.data.source import SourceContext
from lightning_accelrl.data.supervision import INSERT_TIMEOUT_S, stream_seed
from lightning_accelrl.sampling import SyncSampler

try:
    import ray
except ImportError:  # pragma: no cover - exercised only without the extra
    ray = None

__all__ = ["SamplerActor"]


class SamplerActor:
    """Actor body: reports its env steps, acting version and finished episodes to the coordinator."""

    def __init__(self, idx: int, stream: int, agent: Any, ctx: SourceContext, coordinator: Any) -> None:
        torch.set_num_threads(1)  # one core per sampler actor (what it asks Ray for)
        self.idx, self.stream, self.agent, self.ctx, self.coord = idx, stream, agent, ctx, coordinator
        self.params = parameters_of(agent)
        self.version = -1
        self._sampler: SyncSampler | None = None
        self._seen = 0
        coordinator.placed.remote(idx, ray.get_runtime_context().get_node_id())

    def _load(self, version: int, flat: np.ndarray) -> None:
        load_flat(torch.from_numpy(flat.copy()), self.params)
        self.version = self.agent.policy_version = int(version)

    def _new_episodes(self) -> list[tuple[float, float, float]]:
        tracker = self._sampler.tracker
        episodes, self._seen = tracker.last(tracker.episodes - self._seen), tracker.episodes
        return episodes

    def _report(self, finished: bool = False) -> tuple[bool, int, int]:
        steps = self._sampler.env_steps
        return ray.get(
            self.coord.report.remote(self.idx, steps, self._new_episodes(), self.version, finished)
        )

    def run(self, table: Any) -> int:
        """Sample until the rank's budget is spent or the learner asks to stop; returns this actor's env steps.

        Replay algorithms: n-step transitions after every vector step; rollout algorithms: one segment ``[T, B]``
        (one queue item) per ``rollout_steps`` vector steps, acting with the newest weights at its start."""
        ctx, agent = self.ctx, self.agent
        torch.manual_seed(stream_seed(ctx.seed, self.stream))
        env = ctx.make_env(self.stream)
        replay = ctx.needs.kind == "replay"
        self._sampler = SyncSampler(env, 1 if replay else ctx.rollout_steps, store_next_observation=True)
        producer = (
            TransitionProducer(self._sampler, ctx.needs, self.stream * env.num_envs) if replay else None
        )
        try:
            go, total, latest = self._report()
            while go:
                if latest > self.version:  # fetch before stepping: act with the newest published weights
                    self._load(*ray.get(self.coord.get_weights.remote()))
                agent.set_env_steps(total, ctx.budget)
                items = (
                    producer.step(agent)
                    if producer is not None
                    else self._sampler.collect(agent).unsqueeze(0)
                )
                if items is not None:
                    insert_all(
                        table.insert, items, INSERT_TIMEOUT_S, lambda: ray.get(self.coord.stopped.remote())
                    )
                go, total, latest = self._report()
            self._report(finished=True)
            return self._sampler.env_steps
        finally:
            with contextlib.suppress(Exception):
                env.close()

    def collect(self, version: int, flat: np.ndarray, env_steps: int) -> TensorDict:
        """One on-policy segment ``[T, B]`` acting with weights ``flat`` (policy ``version``); the rank's env-step
        count ``env_steps`` drives the agent's schedules. The envs persist across calls."""
        ctx = self.ctx
        if self._sampler is None:
            torch.manual_seed(stream_seed(ctx.seed, self.stream))
            env = ctx.make_env(self.stream)
            self._sampler = SyncSampler(
                env, ctx.rollout_steps, ctx.needs.next_observation, ctx.episode_window
            )
        if version != self.version:
            self._load(version, flat)
        self.agent.set_env_steps(env_steps, ctx.budget)
        segment = self._sampler.collect(self.agent)
        self._report()
        return segment
