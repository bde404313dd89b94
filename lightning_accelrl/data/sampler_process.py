"""The body of an async sampler process: its envs, a CPU policy copy, batched inference, inserts into the table.

Forked by :class:`~lightning_accelrl.data.async_runner.AsyncRunner`. Everything it shares with the learner is in
:class:`SamplerShared` (shared-memory tensors): weights, the per-sampler counters, the finished-episode rings and
the stop flag. It pushes the rank's env-step count into its agent before every step, so ε and other schedules
follow the run's progress.
"""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
from dataclasses import dataclass
from typing import Any

import torch

from lightning_accelrl.data.needs import ExperienceNeeds
from lightning_accelrl.data.replay import TransitionProducer, insert_all
from lightning_accelrl.data.shared_weights import SharedWeights, parameters_of
from lightning_accelrl.data.supervision import INSERT_TIMEOUT_S, stream_seed
from lightning_accelrl.replay.serving.processes import child_signals
from lightning_accelrl.sampling import SyncSampler

# columns of the per-sampler counters
ENV_STEPS, EPISODES, VERSION, STATE = range(4)
RUNNING, FINISHED = 0, 1


@dataclass
class SamplerShared:
    """The shared-memory state of one rank's samplers (each row written by its sampler only)."""

    weights: SharedWeights
    counters: torch.Tensor  # [procs, 4] int64: env steps, episodes, acting version, state
    episodes: torch.Tensor  # [procs, window, 3] float64 rings: (return, length, score or NaN)
    stop: torch.Tensor  # [1] int64: the learner asks everybody to stop

    @classmethod
    def create(cls, params: list[torch.Tensor], num_procs: int, window: int) -> SamplerShared:
        return cls(
            SharedWeights(params),
            torch.zeros(num_procs, 4, dtype=torch.int64).share_memory_(),
            torch.zeros(num_procs, window, 3, dtype=torch.float64).share_memory_(),
            torch.zeros(1, dtype=torch.int64).share_memory_(),
        )

    @property
    def env_steps(self) -> int:
        return int(self.counters[:, ENV_STEPS].sum())


@dataclass(frozen=True)
class SamplerJob:
    """What one sampler process runs: its slot, env stream, the env factory and the experience it produces."""

    idx: int
    stream: int
    make_env: Any  # make_env(stream) -> BatchedEnv
    needs: ExperienceNeeds
    rollout_steps: int
    budget: int  # env steps of all this rank's samplers
    seed: int


def sampler_main(job: SamplerJob, shared: SamplerShared, agent: Any, client: Any) -> None:
    """Process entry point: run the loop, record how it ended, exit without the learner's exit handlers."""
    child_signals()  # Ctrl-C goes to the learner, which stops us in order; SIGTERM kills us
    torch.set_num_threads(1)  # before any torch op: a forked child hangs on its first parallel op otherwise
    code = 0
    try:
        _sample_loop(job, shared, agent, client)
        shared.counters[job.idx, STATE] = FINISHED
    except ConnectionError:
        if not int(shared.stop[0]):  # the server went away without being asked to: the learner is gone
            code = 1
    except Exception:
        if not int(shared.stop[0]):
            sys.stderr.write(f"async sampler process {job.idx} failed:\n{traceback.format_exc()}")
            code = 1
    sys.stderr.flush()
    os._exit(code)  # no inherited atexit handlers or finalizers (they belong to the learner)


def _publish_episodes(shared: SamplerShared, idx: int, episodes: list[tuple[float, float, float]]) -> None:
    """Entries first, then the count: the learner never reads an entry before it is written."""
    window = shared.episodes.shape[1]
    published = int(shared.counters[idx, EPISODES])
    for k, episode in enumerate(episodes):
        shared.episodes[idx, (published + k) % window] = torch.tensor(episode, dtype=torch.float64)
    shared.counters[idx, EPISODES] = published + len(episodes)


def _sample_loop(job: SamplerJob, shared: SamplerShared, agent: Any, client: Any) -> None:
    torch.manual_seed(stream_seed(job.seed, job.stream))
    env = job.make_env(job.stream)
    replay = job.needs.kind == "replay"
    window = shared.episodes.shape[1]
    sampler = SyncSampler(env, 1 if replay else job.rollout_steps, True, episode_window=window)
    producer = TransitionProducer(sampler, job.needs, job.stream * env.num_envs) if replay else None
    params, counters, stop = parameters_of(agent), shared.counters, shared.stop
    base_steps = int(counters[job.idx, ENV_STEPS])  # a restarted sampler continues its slot's counts
    seq, episodes_seen = -1, 0
    try:
        while not int(stop[0]) and shared.env_steps < job.budget:
            got = shared.weights.fetch(params, seq)
            if got is not None:
                seq, agent.policy_version = got
                counters[job.idx, VERSION] = agent.policy_version
            agent.set_env_steps(shared.env_steps, job.budget)
            # replay: n-step transitions; rollouts: one item, the whole segment [T, B]
            items = producer.step(agent) if producer is not None else sampler.collect(agent).unsqueeze(0)
            counters[job.idx, ENV_STEPS] = base_steps + sampler.env_steps
            tracker = sampler.tracker
            if tracker.episodes > episodes_seen:
                _publish_episodes(shared, job.idx, tracker.last(tracker.episodes - episodes_seen))
                episodes_seen = tracker.episodes
            if items is not None:
                insert_all(client.insert, items, INSERT_TIMEOUT_S, lambda: bool(int(stop[0])))
    finally:
        with contextlib.suppress(Exception):
            env.close()
