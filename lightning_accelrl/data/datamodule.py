"""ExperienceDataModule: the Lightning adapter that builds one experience source per rank and drives it.

The algorithm declares what it needs (:meth:`experience_needs`: rollouts or replay samples); at ``setup`` the data
module checks that against the env, builds the source the ``sampler`` argument names (``sync``, ``alternating``,
``async``, ``ray``, a registered name or a factory: see :mod:`lightning_accelrl.data.sources`), and connects
itself to the algorithm (priority write-back, statistics). Each training batch comes from the source; after each
one the env-step count is pushed into the algorithm, which derives its schedules from it. Budgets are env steps
over all ranks; the run stops when the budget is spent (every rank stops at the same batch).
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any, Literal

import torch
from lightning.pytorch import LightningDataModule
from tensordict import TensorDict

from lightning_accelrl.data.needs import ExperienceConsumer, as_consumer
from lightning_accelrl.data.ranks import (
    all_ranks_step,
    destroy_process_groups_at_exit,
    gather_rank_states,
    own_rank_state,
)
from lightning_accelrl.data.settings import check_arguments, check_needs
from lightning_accelrl.data.source import ExperienceSource, SourceContext, SourceFactory
from lightning_accelrl.data.sources import source_factory
from lightning_accelrl.data.statistics import LagMeter, reduced_statistics
from lightning_accelrl.envs import EnvSpec, env_kind, make_env
from lightning_accelrl.errors import ConfigError
from lightning_accelrl.evaluation import EnvSource
from lightning_accelrl.sampling import EpisodeTracker


class ExperienceDataModule(LightningDataModule):
    """Envs + an experience source, as a Lightning DataModule.

    Args:
        env: a Gymnasium id (``"CartPole-v1"``; ``"mypkg.envs:MyEnv-v0"`` imports ``mypkg.envs`` first), an env
            factory (a picklable callable returning a ``gym.Env``, a vector env or a TorchRL env; every sampler),
            or an env object (``gym.Env``, same-step vector env, TorchRL ``EnvBase``, ``BatchedEnv``; sync and
            alternating samplers): see ``docs/envs_and_networks.md``.
        num_envs: envs per rank (per sampler process with ``sampler="async"``/``"ray"``).
        rollout_steps: steps per env per rollout (T); a batch has ``rollout_steps * num_envs`` transitions.
        total_env_steps: the budget, summed over ranks.
        vectorization: ``auto`` (in-process for cheap envs, subprocesses otherwise), ``sync`` or ``async``.
        env_kwargs: keyword arguments for ``gymnasium.make``.
        seed: base seed; env i of rank r gets ``seed + r * num_envs + i``. Defaults to ``seed_everything``'s seed.
        updates_per_epoch: training batches per Lightning epoch (checkpoints are written at epoch ends).
        episode_window: finished episodes averaged into ``episode_return_mean``.
        batch_size: replay: transitions per update (a training batch samples ``batch_size`` for each of the
            algorithm's ``updates_per_batch`` updates in one ``table.sample``).
        replay_capacity: replay: table size (oldest transitions are evicted first).
        replay_ratio: replay: sampled transitions per inserted transition (the limiter's samples_per_insert: the
            update-to-data ratio times the batch size).
        learning_starts: replay: transitions in the table before the first sample (``min_size_to_sample``).
        replay_error_buffer: replay: how far the ratio may drift, in samples (default: wide enough that the
            single-threaded loop can always sample or insert).
        sampler: the experience source: ``sync`` (all envs step, then one batched forward), ``alternating`` (two
            env groups: one steps while the policy runs for the other; rollouts), ``async``
            (``num_sampler_procs`` sampler processes, each with ``num_envs`` envs and a CPU policy copy, feed a
            served table), ``ray`` (Ray actors on any node of the Ray cluster: replay and async rollouts through a
            Ray-served table, on-policy rollouts collected by all actors per batch), a name given to
            ``register_source``, or a factory ``(SourceContext) -> ExperienceSource``.
        num_sampler_procs: async/ray: sampler processes (actors) per rank.
        weight_sync_every: async/ray: the samplers get new weights every this many updates.
        async_queue_size: async rollouts: segments the queue holds (default ``max(2, procs)``); it bounds the lag.
        sampler_restarts: async/ray: how many times in all (per rank) a sampler process or actor that dies is
            replaced by a fresh one (current weights, new env seeds, its slot's env-step count). 0 (default): the
            first death stops the run with ``SamplerProcessError``; so does the death after the last restart.
        ray_rollouts: ray, rollout algorithms: ``on_policy`` (every batch collected by all actors with the current
            weights) or ``async`` (segments taken as they arrive, with their policy version); ``auto`` (default):
            ``async`` for algorithms that correct for policy lag (APPO, AsyncA2C), ``on_policy`` for the others.
        ray_sampler_resources: ray: custom Ray resources each sampler actor asks for besides 1 CPU (e.g.
            ``{"sampler_node": 1}``: only nodes started with ``--resources '{"sampler_node": N}'`` take them).
        ray_address: ray: the address of a running Ray cluster to join (``127.0.0.1:6379``); default: the Ray
            this process is connected to, else a local Ray on loopback.
    """

    def __init__(
        self,
        env: Any = "CartPole-v1",
        num_envs: int = 8,
        rollout_steps: int = 128,
        total_env_steps: int = 100_000,
        vectorization: Literal["auto", "sync", "async"] = "auto",
        env_kwargs: dict[str, Any] | None = None,
        seed: int | None = None,
        updates_per_epoch: int = 50,
        episode_window: int = 100,
        batch_size: int = 256,
        replay_capacity: int = 100_000,
        replay_ratio: float = 8.0,
        learning_starts: int = 1_000,
        replay_error_buffer: float | None = None,
        sampler: str | SourceFactory = "sync",
        num_sampler_procs: int = 2,
        weight_sync_every: int = 1,
        async_queue_size: int | None = None,
        sampler_restarts: int = 0,
        ray_rollouts: Literal["auto", "on_policy", "async"] = "auto",
        ray_sampler_resources: dict[str, float] | None = None,
        ray_address: str | None = None,
    ) -> None:
        super().__init__()
        check_arguments(dict(locals()))
        self._factory = source_factory(sampler)
        if isinstance(env, str):
            from lightning_accelrl.envs.gym import check_env_id

            check_env_id(env)
        plain = isinstance(env, str) and isinstance(sampler, str)
        self.save_hyperparameters() if plain else self.save_hyperparameters(ignore=["env", "sampler"])
        self.env = env
        self.num_envs = num_envs
        self.rollout_steps = rollout_steps
        self.total_env_steps = total_env_steps
        self.vectorization = vectorization
        self.env_kwargs = env_kwargs or {}
        self.seed = seed
        self.updates_per_epoch = updates_per_epoch
        self.episode_window = episode_window
        self.sampler_kind = sampler if isinstance(sampler, str) else "custom"
        self.settings = {
            "batch_size": batch_size,
            "replay_capacity": replay_capacity,
            "replay_ratio": replay_ratio,
            "learning_starts": learning_starts,
            "replay_error_buffer": replay_error_buffer,
            "num_sampler_procs": num_sampler_procs,
            "weight_sync_every": weight_sync_every,
            "async_queue_size": async_queue_size,
            "sampler_restarts": sampler_restarts,
            "ray_rollouts": ray_rollouts,
            "ray_sampler_resources": ray_sampler_resources,
            "ray_address": ray_address,
        }
        self.source: ExperienceSource | None = None
        self._consumer: ExperienceConsumer | None = None
        self._started = self._exhausted = self._closed = False
        self._pending_state: dict[str, Any] | None = None
        self._spec: EnvSpec | None = None
        self._world_size, self._rank = 1, 0
        self.updates_done = 0
        self._updates_per_batch = 1  # replay: the algorithm's updates per training batch ([K, B] batches)
        self._env_steps_all: int | None = None
        self.lags = LagMeter()
        self._elapsed_before = 0.0  # wall time of earlier runs (resume)
        self._start: float | None = None

    # ----- env --------------------------------------------------------------------------------------------
    @property
    def env_spec(self) -> EnvSpec:
        """Observation/action description for building networks (probed without building the vector env)."""
        if self._spec is None:
            from lightning_accelrl.envs import probe_spec

            self._spec = probe_spec(self.env, self.env_kwargs, self.vectorization)
        return self._spec

    @property
    def base_seed(self) -> int:
        """The run's seed: ``seed``, else ``seed_everything``'s."""
        return self.seed if self.seed is not None else int(os.environ.get("PL_GLOBAL_SEED", 0))

    def env_factory(self) -> functools.partial:
        """``factory(stream)`` builds this data module's batched env for env stream (or rank) ``stream``; picklable."""
        return functools.partial(
            make_env,
            self.env,
            self.num_envs,
            self.base_seed,
            vectorization=self.vectorization,
            env_kwargs=self.env_kwargs,
        )

    def build_env(self, rank: int = 0, seed: int | None = None) -> Any:
        """A batched env like the training envs of ``rank`` (e.g. for evaluation), seeded from ``seed``."""
        seed = self.base_seed if seed is None else seed
        return make_env(self.env, self.num_envs, seed, rank, self.vectorization, self.env_kwargs)

    def evaluation_env(self) -> EnvSource | None:
        """Where evaluation builds fresh envs like the training envs (:class:`EvaluationEnvSource`); ``None`` for a
        live env object, which is the training env itself."""
        if env_kind(self.env) == "object":
            return None
        return EnvSource(self.env, dict(self.env_kwargs), self.vectorization)

    # ----- Lightning hooks --------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        """Check the algorithm's needs against the env, build this rank's source, connect to the algorithm."""
        if stage != "fit" or (self.source is not None and not self._closed):
            return
        if self._closed:  # fitted before: a new fit is a new run (resume from a checkpoint to continue one)
            self.updates_done, self.lags, self._start, self._elapsed_before = 0, LagMeter(), None, 0.0
        trainer = self.trainer
        consumer = as_consumer(trainer.lightning_module)
        self._rank, self._world_size = trainer.global_rank, trainer.world_size
        destroy_process_groups_at_exit()  # the strategy has set up the process group by now (if any)
        needs = consumer.experience_needs()
        check_needs(needs, self.env_spec, type(consumer).__name__)
        self._updates_per_batch = needs.updates_per_batch if needs.kind == "replay" else 1
        ctx = SourceContext(
            make_env=self.env_factory(),
            env_spec=self.env_spec,
            needs=needs,
            num_envs=self.num_envs,
            rollout_steps=self.rollout_steps,
            total_env_steps=self.total_env_steps,
            rank=self._rank,
            world_size=self._world_size,
            seed=self.base_seed,
            episode_window=self.episode_window,
            settings=dict(self.settings),
        )
        self.source = self._factory(ctx)
        self._env_steps_all = None  # DDP: all ranks' env steps, agreed at each batch
        self._started = self._exhausted = self._closed = False
        if self._pending_state is not None:
            self.source.load_state_dict(self._pending_state)
            self._pending_state = None
        consumer.connect_experience(self)
        self._consumer = consumer

    def train_dataloader(self) -> _BatchStream:
        if self.source is None:
            raise ConfigError(
                "ExperienceDataModule streams batches inside Trainer.fit (setup builds its source)"
            )
        if not self._started:
            self.source.start(self._consumer)
            self._started = True
        return _BatchStream(self)

    def teardown(self, stage: str) -> None:
        self.close()
        if self._consumer is not None:
            self._consumer.connect_experience(None)
            self._consumer = None

    def on_exception(self, exception: BaseException) -> None:
        """Stop sampler processes and table servers when fit fails or is interrupted."""
        self.close()

    def close(self) -> None:
        """Release the source's envs, processes and tables (its counts stay readable)."""
        if self.source is not None and not self._closed:
            self._closed = True
            self.source.close()

    @property
    def closed(self) -> bool:
        """The source was built and has been closed (its counts and episode window stay readable)."""
        return self._closed

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """TensorDicts move as a whole (Lightning's generic collection walk costs ~0.2 ms per batch); host batches
        (sources produce them on the CPU unless they set a device) stay as they are for a CPU learner."""
        if isinstance(batch, TensorDict):
            if batch.device == device or (batch.device is None and device.type == "cpu"):
                return batch
            return batch.to(device, non_blocking=True)
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    # ----- driving the source -----------------------------------------------------------------------------
    def next_batch(self) -> TensorDict | None:
        """The source's next batch; ``None`` once any rank's share of the budget is spent (all ranks stop)."""
        if self._exhausted:
            return None
        if self._start is None:
            self._start = time.perf_counter()
        agent = self._consumer
        self.source.publish(agent)
        batch = self.source.next_batch(agent)
        ok = batch is not None
        if self._world_size > 1:  # every rank must run the same number of steps: stop when any rank must
            ok, self._env_steps_all = all_ranks_step(self.trainer.strategy, ok, self.source.env_steps)
        if not ok:
            self._exhausted = True
            self.trainer.should_stop = True
            return None
        self.updates_done += self._updates_per_batch  # replay: updates; rollouts: training batches
        if self._updates_per_batch > 1:  # K updates' samples, drawn in one call: [K * B] -> [K, B]
            batch = batch.reshape(self._updates_per_batch, -1)
        agent.set_env_steps(self.env_steps, self.total_env_steps)  # this batch included
        self.lags.add(self.source.policy_lag(agent, batch))
        if self.source.exhausted:  # the last batch: end the epoch after it (no empty epoch to start)
            self._exhausted = True
            self.trainer.should_stop = True
        return batch

    @property
    def env_steps(self) -> int:
        """Env steps collected so far, over all ranks (under DDP: summed over ranks at the last batch)."""
        if self._env_steps_all is not None:
            return self._env_steps_all
        return 0 if self.source is None else self.source.env_steps * self._world_size

    @property
    def progress(self) -> float:
        """Fraction of the budget collected so far (the batch in training included)."""
        return min(1.0, self.env_steps / self.total_env_steps)

    @property
    def tracker(self) -> EpisodeTracker | None:
        """Finished episodes of this rank's envs."""
        return None if self.source is None else self.source.tracker

    @property
    def wall_time(self) -> float:
        return self._elapsed_before + (0.0 if self._start is None else time.perf_counter() - self._start)

    # ----- the algorithm's link (ExperienceLink) ----------------------------------------------------------
    def update_priorities(self, keys: torch.Tensor, priorities: torch.Tensor) -> None:
        """Prioritized replay: new priorities (e.g. |TD error|) for sampled keys of this rank's table."""
        self.source.update_priorities(keys, priorities)

    def statistics(self) -> dict[str, float]:
        """Episode statistics, throughput and the source's figures, reduced over ranks (collective under DDP)."""
        strategy = self.trainer.strategy if self._world_size > 1 else None
        return reduced_statistics(self.source, self.wall_time, self.lags, strategy)

    # ----- checkpoints ------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        local = {"source": None if self.source is None else self.source.state_dict()}
        return {
            "updates_done": self.updates_done,
            "wall_time": self.wall_time,
            "world_size": self._world_size,
            "ranks": gather_rank_states(local, self._world_size),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        local = own_rank_state(state["ranks"], self._rank, self._world_size)  # first: checks before restoring
        self.updates_done = int(state["updates_done"])
        self._elapsed_before = float(state.get("wall_time", 0.0))
        self._start = None
        if local.get("source") is None:
            return
        if self.source is None:  # restored before setup: applied when the source is built
            self._pending_state = local["source"]
        else:
            self.source.load_state_dict(local["source"])


class _BatchStream:
    """Sized iterable of training batches: the size stops Lightning from prefetching (which would add policy lag)."""

    def __init__(self, dm: ExperienceDataModule) -> None:
        self.dm = dm

    def __len__(self) -> int:
        return self.dm.updates_per_epoch

    def __iter__(self) -> _BatchStream:
        self._count = 0
        if self.dm.source.exhausted:
            self.dm.trainer.should_stop = True
        return self

    def __next__(self) -> TensorDict:
        if self._count >= len(self):
            raise StopIteration
        batch = self.dm.next_batch()
        if batch is None:
            raise StopIteration
        self._count += 1
        return batch
