"""ExperienceDataModule: owns the envs, the sampler and (for off-policy algorithms) the replay table.

The algorithm says which experience it needs (``experience_spec()``):
- **rollouts** (PPO, A2C): each training batch is a fresh rollout ``[T, B]`` collected with the *current*
  weights. The stream is a sized iterable, so Lightning does not prefetch: rollout k+1 is collected after
  update k has been applied (zero policy lag; ``RLModule.policy_lags`` records it).
- **replay** (DQN family): each training batch is ``table.sample(batch_size)`` from a replay table whose
  SampleToInsertRatio limiter holds the replay ratio; the envs are stepped exactly as often as it requires.
Budgets are env steps over all ranks; the run stops when ``total_env_steps`` is reached.
"""

from __future__ import annotations

import functools
import math
import os
import time
from typing import Any, Literal

import torch
from lightning.pytorch import LightningDataModule
from tensordict import TensorDict

from lightning_accelrl.data.async_runner import AsyncRunner
from lightning_accelrl.data.replay import ReplayFeeder, replay_limiter
from lightning_accelrl.envs import BatchedEnv, EnvSpec, make_env
from lightning_accelrl.errors import ConfigError, check
from lightning_accelrl.sampling import EpisodeTracker, SyncSampler


class ExperienceDataModule(LightningDataModule):
    """Vector envs + batched-inference sampler, as a Lightning DataModule.

    Args:
        env: a Gymnasium id (``"CartPole-v1"``), a Gymnasium vector env (same-step autoreset), a batched TorchRL
            ``EnvBase`` (e.g. ``ParallelEnv``) or a :class:`~lightning_accelrl.envs.BatchedEnv`.
        num_envs: envs per rank (ignored when ``env`` is already batched).
        rollout_steps: steps per env per rollout (T); a batch has ``rollout_steps * num_envs`` transitions.
        total_env_steps: the budget, summed over ranks.
        vectorization: ``auto`` (in-process for cheap envs, subprocesses otherwise), ``sync`` or ``async``.
        env_kwargs: keyword arguments for ``gymnasium.make``.
        seed: base seed; env i of rank r gets ``seed + r * num_envs + i``. Defaults to ``seed_everything``'s seed.
        updates_per_epoch: training batches per Lightning epoch (checkpoints are written at epoch ends).
        episode_window: finished episodes averaged into ``episode_return_mean``.
        batch_size: replay mode: transitions per training batch (``table.sample(batch_size)``).
        replay_capacity: replay mode: table size (oldest transitions are evicted first).
        replay_ratio: replay mode: sampled transitions per inserted transition (the limiter's samples_per_insert).
        learning_starts: replay mode: transitions in the table before the first sample (``min_size_to_sample``).
        replay_error_buffer: replay mode: how far the ratio may drift, in samples (default: wide enough that
            the single-threaded loop can always sample or insert).
        sampler: ``sync`` (all envs step, then one batched forward), ``alternating`` (two env groups: one
            steps while the policy runs for the other, the paper's overlap; rollout mode) or ``async``
            (``num_sampler_procs`` sampler processes, each with ``num_envs`` envs and a CPU policy copy, feed a
            served table; the learner samples from it: see ``lightning_accelrl.data.async_runner``) or ``ray``
            (replay algorithms: ``num_sampler_procs`` Ray actors, on any node of the Ray cluster, feed a RayTable;
            Ray is started locally unless ``ray.init(address=...)`` ran before: see ``data.ray_runner``).
        num_sampler_procs: async: sampler processes per rank.
        weight_sync_every: async: the samplers get new weights every this many updates.
        async_queue_size: async rollout mode: rollout segments the queue holds (default ``max(2, procs)``);
            with the processes' own segment in progress it bounds the policy lag.
        sampler_restarts: async and ray: how many times in all (per rank) a sampler process or actor that dies
            (crash, ``kill -9``, out of memory, lost node) is replaced by a fresh one, which takes the current
            weights and new env seeds (it does not replay the dead one's episodes) and continues its env-step
            count. 0 (default): the first death stops the run with ``SamplerProcessError``; so does the death
            after the last restart.
            The count is logged as ``async/sampler_restarts``.
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
        sampler: Literal["sync", "alternating", "async", "ray"] = "sync",
        num_sampler_procs: int = 2,
        weight_sync_every: int = 1,
        async_queue_size: int | None = None,
        sampler_restarts: int = 0,
    ) -> None:
        super().__init__()
        check(num_envs >= 1, f"num_envs must be >= 1, got {num_envs}")
        check(rollout_steps >= 1, f"rollout_steps must be >= 1, got {rollout_steps}")
        check(total_env_steps >= 1, f"total_env_steps must be >= 1, got {total_env_steps}")
        check(updates_per_epoch >= 1, f"updates_per_epoch must be >= 1, got {updates_per_epoch}")
        check(
            sampler in ("sync", "alternating", "async", "ray"),
            f"sampler must be sync, alternating, async or ray, got {sampler!r}",
        )
        if sampler == "ray":
            import importlib.util

            check(
                importlib.util.find_spec("ray") is not None,
                "sampler='ray' needs Ray: pip install 'lightning-accelrl[ray]'",
            )
        check(num_sampler_procs >= 1, f"num_sampler_procs must be >= 1, got {num_sampler_procs}")
        check(weight_sync_every >= 1, f"weight_sync_every must be >= 1, got {weight_sync_every}")
        check(
            async_queue_size is None or async_queue_size >= 1,
            f"async_queue_size must be >= 1, got {async_queue_size}",
        )
        check(sampler_restarts >= 0, f"sampler_restarts must be >= 0, got {sampler_restarts}")
        check(
            sampler not in ("async", "ray") or isinstance(env, str),
            f"sampler={sampler!r} needs an env id (each sampler process builds its own envs)",
        )
        check(batch_size >= 1, f"batch_size must be >= 1, got {batch_size}")
        check(replay_capacity >= 1, f"replay_capacity must be >= 1, got {replay_capacity}")
        check(replay_ratio > 0, f"replay_ratio must be > 0, got {replay_ratio}")
        check(learning_starts >= 1, f"learning_starts must be >= 1, got {learning_starts}")
        check(
            vectorization in ("auto", "sync", "async"),
            f"vectorization must be auto, sync or async, got {vectorization!r}",
        )
        if isinstance(env, str):
            from lightning_accelrl.envs.gym import check_env_id

            check_env_id(env)
            self.save_hyperparameters()
        else:
            self.save_hyperparameters(ignore=["env"])
        self.env = env
        self.num_envs = num_envs
        self.rollout_steps = rollout_steps
        self.total_env_steps = total_env_steps
        self.vectorization = vectorization
        self.env_kwargs = env_kwargs or {}
        self.seed = seed
        self.updates_per_epoch = updates_per_epoch
        self.episode_window = episode_window
        self.batch_size = batch_size
        self.replay_capacity = replay_capacity
        self.replay_ratio = replay_ratio
        self.learning_starts = learning_starts
        self.replay_error_buffer = replay_error_buffer
        self.sampler_kind = sampler
        self.num_sampler_procs = num_sampler_procs
        self.weight_sync_every = weight_sync_every
        self.async_queue_size = async_queue_size
        self.sampler_restarts = sampler_restarts
        self._restarts_before = 0  # sampler restarts of runners already closed
        self.runner: Any = None  # AsyncRunner, or RayRunner (same learner-side interface)
        self._spec_kind = "rollout"
        self._lag_mark = 0
        self._async_final_env_steps: int | None = None
        self.feeder: ReplayFeeder | None = None
        self._exhausted = False
        self._pending_replay_state: dict | None = None
        self._pending_async_state: dict | None = None
        self.sampler: SyncSampler | None = None
        self.tracker: EpisodeTracker | None = None  # outlives the sampler, for summaries after fit
        self._spec: EnvSpec | None = None
        self.updates_done = 0
        self._elapsed_before = 0.0  # wall time of earlier runs (resume)
        self._start: float | None = None
        self._world_size = 1
        self._envs_per_rank: int | None = None if isinstance(env, str) else make_env(env).num_envs

    # ----- env --------------------------------------------------------------------------------------------
    @property
    def env_spec(self) -> EnvSpec:
        """Observation/action description for building networks (probed without building the vector env)."""
        if self._spec is None:
            if self.sampler is not None:
                self._spec = self.sampler.env.spec
            elif isinstance(self.env, str):
                from lightning_accelrl.envs import probe_spec  # Atari ids: from the ROM and the protocol

                self._spec = probe_spec(self.env, self.env_kwargs, self.vectorization)
            else:
                self._spec = make_env(self.env).spec
        return self._spec

    def build_env(self, rank: int = 0, seed: int | None = None) -> BatchedEnv:
        seed = self._base_seed() if seed is None else seed
        return make_env(self.env, self.num_envs, seed, rank, self.vectorization, self.env_kwargs)

    def _base_seed(self) -> int:
        return self.seed if self.seed is not None else int(os.environ.get("PL_GLOBAL_SEED", 0))

    def setup(self, stage: str) -> None:
        if stage != "fit" or self.sampler is not None:
            return
        rank = self.trainer.global_rank if self.trainer is not None else 0
        self._world_size = self.trainer.world_size if self.trainer is not None else 1
        module = self.trainer.lightning_module if self.trainer is not None else None
        spec = module.experience_spec() if hasattr(module, "experience_spec") else {"kind": "rollout"}
        self._spec_kind = spec["kind"]
        # async: the sampler processes start in train_dataloader, once the model is built
        if self.sampler_kind == "ray" and spec["kind"] != "replay":
            raise ConfigError(
                f"sampler='ray' supports replay (DQN-family) algorithms only; this module needs {spec['kind']}"
            )
        if self.sampler_kind in ("async", "ray"):
            self._experience_spec = spec
            self._envs_per_rank = self.num_envs
            if self.tracker is None:
                self.tracker = EpisodeTracker(1, self.episode_window)
            return
        env = self.build_env(rank)
        self._envs_per_rank = env.num_envs  # a given batched env decides, not the num_envs argument
        if spec["kind"] == "replay":
            self.sampler = SyncSampler(
                env, 1, store_next_observation=True, episode_window=self.episode_window
            )
            self.feeder = ReplayFeeder(
                self.sampler,
                capacity=self.replay_capacity,
                batch_size=self.batch_size,
                samples_per_insert=self.replay_ratio,
                min_size=self.learning_starts,
                error_buffer=self.replay_error_buffer,
                n_step=spec["n_step"],
                gamma=spec["gamma"],
                prioritized=spec["prioritized"],
                priority_exponent=spec["priority_exponent"],
                first_stream=rank * env.num_envs,
                seed=self._base_seed() + 104_729 * rank,
            )
            if self._pending_replay_state is not None:
                self.feeder.load_state_dict(self._pending_replay_state)
                self._pending_replay_state = None
        elif self.sampler_kind == "alternating":
            from lightning_accelrl.sampling.alternating import AlternatingSampler

            self.sampler = AlternatingSampler(env, self.rollout_steps, episode_window=self.episode_window)
        else:
            self.sampler = SyncSampler(
                env,
                self.rollout_steps,
                store_next_observation=bool(spec.get("next_observation", False)),
                episode_window=self.episode_window,
            )
        if self.tracker is not None:  # restored from a checkpoint before the envs existed
            self.sampler.tracker.load_state_dict(self.tracker.state_dict())
        self.tracker = self.sampler.tracker

    def teardown(self, stage: str) -> None:
        self.close_async()
        if self.sampler is not None:
            self.sampler.close()
            self.sampler = None

    # ----- budget -------------------------------------------------------------------------------------------
    @property
    def env_steps_per_update(self) -> int:
        """Env steps of one rollout over all ranks."""
        return self.rollout_steps * self._num_envs_per_rank() * self._world_size

    def _num_envs_per_rank(self) -> int:
        return self._envs_per_rank or self.num_envs

    @property
    def total_updates(self) -> int:
        return math.ceil(self.total_env_steps / self.env_steps_per_update)

    @property
    def env_steps(self) -> int:
        """Env steps collected so far, over all ranks."""
        if self.feeder is not None:
            return self.feeder.env_steps * self._world_size
        if self.runner is not None:
            return self.runner.env_steps * self._world_size
        if self._async_final_env_steps is not None:
            return self._async_final_env_steps * self._world_size
        return self.updates_done * self.env_steps_per_update

    @property
    def progress(self) -> float:
        """Fraction of the budget collected so far, the batch in training included (Stable-Baselines3's
        convention: annealed rates reach 0 on the last update; measured on CartPole PPO it reached 475 at
        64k/83k/70k env steps for seeds 0-2, vs 86k/96k/86k when the in-flight batch was excluded)."""
        return min(1.0, self.env_steps / self.total_env_steps)

    @property
    def wall_time(self) -> float:
        return self._elapsed_before + (0.0 if self._start is None else time.perf_counter() - self._start)

    # ----- streaming --------------------------------------------------------------------------------------
    def train_dataloader(self) -> _RolloutStream:
        if self.sampler_kind in ("async", "ray") and self.runner is None and self.trainer is not None:
            self.start_async(self.trainer.lightning_module)
        return _RolloutStream(self)

    # ----- asynchronous sampling ----------------------------------------------------------------------------
    def start_async(self, module: Any) -> None:
        """Start this rank's table server and sampler processes (``sampler="async"``), or its table actor and
        sampler actors (``sampler="ray"``)."""
        rank = self.trainer.global_rank if self.trainer is not None else 0
        spec = getattr(self, "_experience_spec", None) or module.experience_spec()
        replay = None
        if spec["kind"] == "replay":
            check(
                self.replay_capacity >= self.learning_starts,
                f"replay_capacity {self.replay_capacity} must be >= learning_starts {self.learning_starts}",
            )
            shape, dtype = self.env_spec.observation_shape, self.env_spec.observation_dtype
            replay = {
                "capacity": self.replay_capacity,
                "limiter": replay_limiter(
                    self.replay_ratio, self.learning_starts, self.batch_size, self.replay_error_buffer
                ),
                "frames": len(shape) == 3 and dtype == torch.uint8,
            }
        env_factory = functools.partial(
            make_env,
            self.env,
            self.num_envs,
            self._base_seed(),
            vectorization=self.vectorization,
            env_kwargs=self.env_kwargs,
        )
        if self.sampler_kind == "ray":
            from lightning_accelrl.data.ray_runner import RayRunner

            self.runner = RayRunner(
                module,
                env_factory=env_factory,
                spec=spec,
                num_procs=self.num_sampler_procs,
                rank=rank,
                budget=math.ceil(self.total_env_steps / self._world_size),
                replay=replay,
                weight_sync_every=self.weight_sync_every,
                world_size=self._world_size,
                resume=self._pending_async_state,
                max_restarts=self.sampler_restarts,
            ).start()
            self._pending_async_state = None
            return
        self.runner = AsyncRunner(
            module,
            env_factory=env_factory,
            kind=spec["kind"],
            spec=spec,
            num_procs=self.num_sampler_procs,
            rank=rank,
            num_envs=self.num_envs,
            rollout_steps=self.rollout_steps,
            budget=math.ceil(self.total_env_steps / self._world_size),
            weight_sync_every=self.weight_sync_every,
            queue_size=self.async_queue_size,
            replay=replay,
            max_restarts=self.sampler_restarts,
            world_size=self._world_size,
            resume=self._pending_async_state,
        ).start()
        self._pending_async_state = None

    def close_async(self) -> None:
        if self.runner is not None:
            self._drain_episodes()
            self.runner.close()
            self._async_final_env_steps = self.runner.env_steps
            self._restarts_before += self.runner.restarts
            self.runner = None

    @property
    def sampler_restart_count(self) -> int:
        """Async: sampler processes of this rank restarted so far (see ``sampler_restarts``)."""
        return self._restarts_before + (self.runner.restarts if self.runner is not None else 0)

    def on_exception(self, exception: BaseException) -> None:
        """Stop the sampler processes and the table server when fit fails or is interrupted."""
        self.close_async()

    def _drain_episodes(self) -> None:
        if self.runner is None or self.tracker is None:
            return
        for episode in self.runner.drain_episodes():
            self.tracker.add(*episode)

    def _next_async_batch(self) -> TensorDict:
        runner, module = self.runner, self.trainer.lightning_module
        if self._start is None:
            self._start = time.perf_counter()
        runner.publish(module)
        self._drain_episodes()
        if self._spec_kind == "replay":
            done = runner.env_steps >= runner.budget and runner.all_finished
            batch = None if done else runner.sample(self.batch_size)
        else:
            batch = None if self.updates_done >= self.total_updates else runner.next_rollout()
        ok = batch is not None
        if self._world_size > 1:
            ok = self.trainer.strategy.reduce_boolean_decision(ok, all=True)
        if not ok:
            self._exhausted = True
            self.trainer.should_stop = True
            raise StopIteration
        if self._spec_kind == "replay":  # DQN records no lag itself: the samplers' acting weights' staleness
            module.policy_lags.append(int(module.policy_version) - runner.acting_version)
        self.updates_done += 1
        if self._spec_kind == "rollout" and self.updates_done >= self.total_updates:
            self.trainer.should_stop = True
        return batch

    @property
    def finished(self) -> bool:
        """The env-step budget is spent (replay mode: no batch can be had without stepping beyond it)."""
        if self.feeder is not None or (self.runner is not None and self._spec_kind == "replay"):
            return self._exhausted
        return self.updates_done >= self.total_updates

    def next_batch(self) -> TensorDict:
        """The next training batch: a fresh rollout, or a replay sample once the limiter allows it."""
        if self.runner is not None:
            return self._next_async_batch()
        if self.feeder is None:
            return self.next_rollout()
        if self._start is None:
            self._start = time.perf_counter()
        budget = math.ceil(self.total_env_steps / self._world_size)
        batch = self.feeder.next_batch(self.trainer.lightning_module, max_env_steps=budget)
        ok = batch is not None
        if self._world_size > 1:  # every rank must run the same number of steps: stop when any rank must
            ok = self.trainer.strategy.reduce_boolean_decision(ok, all=True)
        if not ok:
            self._exhausted = True
            self.trainer.should_stop = True
            raise StopIteration
        self.updates_done += 1
        return batch

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """TensorDicts move as a whole (Lightning's generic collection walk costs ~0.2 ms per batch)."""
        if isinstance(batch, TensorDict):
            return batch.to(device, non_blocking=True) if batch.device != device else batch
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def update_priorities(self, keys: torch.Tensor, priorities: torch.Tensor) -> None:
        """Prioritized replay: new priorities (e.g. |TD error|) for sampled keys of this rank's table."""
        if self.feeder is not None:
            self.feeder.update_priorities(keys, priorities)
        elif self.runner is not None:
            self.runner.update_priorities(keys, priorities)

    def next_rollout(self) -> TensorDict:
        agent = self.trainer.lightning_module
        if self._start is None:
            self._start = time.perf_counter()
        rollout = self.sampler.collect(agent)
        self.updates_done += 1
        if self.updates_done >= self.total_updates:
            self.trainer.should_stop = True
        return rollout

    def rank_reduced_stats(self, strategy: Any = None) -> dict[str, float]:
        """Episode statistics over all ranks: (sum, count) pairs are all-reduced, then divided."""
        tracker = self.tracker or EpisodeTracker(1)
        ret_sum, count = tracker.return_sum_count()
        steps = (
            self.env_steps / self._world_size
        )  # this rank's (exact in replay mode, where ranks may differ)
        local = [ret_sum, float(count), float(sum(tracker.recent_lengths)), float(tracker.episodes), steps]
        local.append(float(self.sampler_restart_count))
        local += [float(sum(tracker.recent_scores)), float(len(tracker.recent_scores))]
        if strategy is not None and self._world_size > 1:
            t = torch.tensor(local, dtype=torch.float64, device=strategy.root_device)
            local = strategy.reduce(t, reduce_op="sum").tolist()
        ret_sum, count, len_sum, episodes, env_steps, restarts, score_sum, score_count = local
        elapsed = max(self.wall_time, 1e-9)
        stats = {"env_steps": env_steps, "episodes": episodes, "env_steps_per_s": env_steps / elapsed}
        if self.feeder is not None:
            stats.update(self.feeder.stats())
        module = self.trainer.lightning_module if self.trainer is not None else None
        lags = getattr(module, "policy_lags", None)
        if self.sampler_kind in ("async", "ray"):
            stats["async/sampler_restarts"] = restarts  # over all ranks
        if self.sampler_kind in ("async", "ray") and lags:  # mean lag of the batches since the last log
            recent = lags[self._lag_mark :] or lags[-1:]
            stats["train/policy_lag"] = sum(recent) / len(recent)
            self._lag_mark = len(lags)
        if count > 0:
            stats["episode_window_count"] = count
            stats["episode_return_mean"] = ret_sum / count
            stats["episode_length_mean"] = len_sum / count
        if score_count > 0:  # the game's own score where rewards are clipped (Atari): what papers report
            stats["episode_score_mean"] = score_sum / score_count
        return stats

    # ----- checkpoints --------------------------------------------------------------------------------------
    # Per-rank state: each rank has its own replay table (sync: ReplayFeeder; async: the served table) and its own
    # episode window. Lightning calls ``state_dict`` on every rank but writes rank 0's result only, so with
    # several ranks every rank's part is gathered into it as ``ranks`` (a list indexed by global rank) and each
    # rank restores its own entry. World size 1 keeps the flat format (``replay``/``async``/``tracker``).
    _RANK_KEYS = ("tracker", "replay", "async")

    def _rank_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"tracker": self.tracker.state_dict() if self.tracker is not None else None}
        if self.feeder is not None:
            state["replay"] = self.feeder.state_dict()
        if (
            self.runner is not None
        ):  # async: the served table, env steps and streams (see AsyncRunner.state_dict)
            state["async"] = self.runner.state_dict()
        return state

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"updates_done": self.updates_done, "wall_time": self.wall_time}
        local = self._rank_state()
        if self._world_size > 1 and _distributed():
            state["world_size"] = self._world_size
            state["ranks"] = gather_rank_states(local, self._world_size)
        else:
            state.update(local)
        return state

    def _own_rank_state(self, state: dict[str, Any]) -> dict[str, Any]:
        """This rank's part of a checkpoint written by ``state_dict`` (see the comment above it)."""
        rank = self.trainer.global_rank if self.trainer is not None else 0
        world = self._world_size
        ranks = state.get("ranks")
        # flat: written by one process (or by rank 0 alone, by versions that did not save tables per rank)
        if ranks is None:
            local = {key: state.get(key) for key in self._RANK_KEYS}
            if world > 1 and (local["replay"] is not None or local["async"] is not None):
                raise ConfigError(
                    "this checkpoint holds one replay table (of a single-process run, or rank 0's of an older DDP "
                    f"run), but this run has {world} ranks: resume it with 1 process, or start a new run from its "
                    "weights (see docs/scaling.md)"
                )
            if rank > 0:  # the episode window belongs to rank 0's envs: the other ranks start a fresh one
                local["tracker"] = None
            return local
        saved = len(ranks)
        if saved != world:
            if any(
                r is not None and (r.get("replay") is not None or r.get("async") is not None) for r in ranks
            ):
                raise ConfigError(
                    f"this checkpoint holds the replay tables of {saved} ranks, but this run has {world}: resume "
                    f"it with {saved} processes (devices x nodes), or start a new run from its weights "
                    "(see docs/scaling.md)"
                )
            # rollout mode: only episode windows; ranks beyond the saved ones start fresh windows
            return ranks[rank] if rank < saved and ranks[rank] is not None else {}
        if ranks[rank] is None:
            raise ConfigError(f"this checkpoint has no state for rank {rank} (it was not written by rank 0)")
        return ranks[rank]

    def load_state_dict(self, state: dict[str, Any]) -> None:
        local = self._own_rank_state(state)  # first: a mismatch fails before anything is restored
        self.updates_done = int(state["updates_done"])
        self._elapsed_before = float(state.get("wall_time", 0.0))
        self._start = None
        if local.get("replay") is not None:
            if self.feeder is not None:
                self.feeder.load_state_dict(local["replay"])
            else:
                self._pending_replay_state = local["replay"]
        if local.get("async") is not None:
            self._pending_async_state = local["async"]  # the runner starts in train_dataloader, after this
        if local.get("tracker") is not None:
            if self.tracker is None:
                self.tracker = EpisodeTracker(self.num_envs, self.episode_window)
            self.tracker.load_state_dict(local["tracker"])


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


_CPU_GROUP: list[Any] = [None, None]  # [default process group it was made for, the gloo group]


def _cpu_group() -> Any:
    """A gloo group over all ranks (made once per default process group; every rank must call this): object
    collectives over NCCL would stage every rank's pickled table in GPU memory."""
    world = torch.distributed.group.WORLD
    if _CPU_GROUP[0] is not world:
        _CPU_GROUP[:] = [world, torch.distributed.new_group(backend="gloo")]
    return _CPU_GROUP[1]


def gather_rank_states(local: Any, world_size: int) -> list[Any]:
    """Every rank's ``local`` on rank 0 (a list indexed by global rank), over CPU; collective: call on all ranks.

    Other ranks get a list with only their own entry (what a strategy that writes one file per rank would need).
    """
    dist = torch.distributed
    rank = dist.get_rank()
    out: list[Any] | None = [None] * world_size if rank == 0 else None
    dist.gather_object(local, out, dst=0, group=_cpu_group())
    if out is None:
        out = [None] * world_size
        out[rank] = local
    return out


class _RolloutStream:
    """Sized iterable of training batches: the size stops Lightning from prefetching (which would add policy lag)."""

    def __init__(self, dm: ExperienceDataModule) -> None:
        self.dm = dm

    def __len__(self) -> int:
        return self.dm.updates_per_epoch

    def __iter__(self) -> _RolloutStream:
        self._count = 0
        if self.dm.finished:
            self.dm.trainer.should_stop = True
        return self

    def __next__(self) -> TensorDict:
        if self._count >= len(self) or self.dm.finished:
            raise StopIteration
        self._count += 1
        return self.dm.next_batch()
