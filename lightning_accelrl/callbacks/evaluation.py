"""VideoEvaluation: evaluate the policy (and film it) every N env steps during fit; logs ``eval/return_mean``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from typing_extensions import override

from lightning_accelrl.algos.base import RLModule
from lightning_accelrl.envs import env_kind, env_name, make_env
from lightning_accelrl.errors import ConfigError, check
from lightning_accelrl.evaluation import (
    EnvSource,
    EvaluationEnvSource,
    check_same_spec,
    evaluate_policy,
    evaluation_num_envs,
)

EVAL_KEYS = ("return_mean", "return_std", "length_mean")  # logged as eval/<key>


def _env_steps(module: LightningModule) -> int:
    """Env steps so far, as the experience source pushed them to the algorithm (0 for other modules)."""
    return int(module.env_steps) if isinstance(module, RLModule) else 0


def _from_rank_zero(trainer: Trainer, module: LightningModule, values: list[float]) -> list[float]:
    """Rank 0's ``values`` on every rank: a sum over ranks of a tensor only rank 0 fills (a tensor collective,
    nothing pickled). As they are on one rank."""
    if trainer.world_size <= 1:
        return values
    mine = values if trainer.is_global_zero else [0.0] * len(values)
    summed = trainer.strategy.reduce(
        torch.tensor(mine, dtype=torch.float64, device=module.device), reduce_op="sum"
    )
    return [float(v) for v in summed.tolist()]


def _rank_zero_env_steps(trainer: Trainer, module: LightningModule) -> int:
    """Rank 0's env-step count on every rank, so that all ranks evaluate at the same batch."""
    return int(_from_rank_zero(trainer, module, [float(_env_steps(module))])[0])


class VideoEvaluation(Callback):
    """Every ``every_n_env_steps`` env steps (over all ranks), play ``episodes`` fresh episodes on rank 0.

    Logs ``eval/return_mean``, ``eval/return_std``, ``eval/length_mean`` and ``env_steps`` to every logger
    (directly, at the current step, so the values are written whatever ``log_every_n_steps`` is).
    With ``video_dir`` each episode is also recorded (:func:`lightning_accelrl.video.record_episodes`) to
    ``video_dir/env_steps_<N>/episode_<i>.mp4``; a relative ``video_dir`` is placed in the run's log folder.
    Without it, the episodes run on ``min(episodes, 8)`` envs stepped together (faster, no frames), as
    ``accelrl evaluate`` plays them: the same seed gives the same figures as ``accelrl evaluate --seed`` on a
    checkpoint written at that step.

    The env played: ``env`` (an env id or an env factory, with ``env_kwargs``), else the data module's own
    (:class:`~lightning_accelrl.evaluation.EvaluationEnvSource`: an id or a factory; a live env object is the
    training env itself and is never played). Films of a factory's envs need them made with
    ``render_mode="rgb_array"``. What cannot be played or filmed, or an ``env`` whose observations or actions are
    not those the policy trains on, is a one-line error when fit starts.

    Evaluation draws from its own seeds and a forked torch generator, so it does not change the training run.
    Under DDP, rank 0 plays the episodes and every rank receives its ``eval/*`` values (in ``callback_metrics``,
    so a ``ModelCheckpoint`` monitoring them decides alike on every rank); when to evaluate follows rank 0's
    env-step count (one all-reduce of a number per training batch), which asynchronous samplers may count
    differently on other ranks.
    """

    def __init__(
        self,
        every_n_env_steps: int = 50_000,
        episodes: int = 5,
        video_dir: str | None = None,
        deterministic: bool = True,
        seed: int = 1_000_003,
        at_fit_end: bool = True,
        max_episode_steps: int | None = None,
        env: Any = None,
        env_kwargs: dict[str, Any] | None = None,
    ) -> None:
        check(every_n_env_steps >= 1, f"every_n_env_steps must be >= 1, got {every_n_env_steps}")
        check(episodes >= 1, f"episodes must be >= 1, got {episodes}")
        if env is not None and env_kind(env) == "object":
            raise ConfigError(
                "VideoEvaluation(env=...) takes an env id or an env factory, not a live env object: it builds "
                "fresh envs for each evaluation"
            )
        if isinstance(env, str):
            from lightning_accelrl.envs.gym import check_env_id

            check_env_id(env)
        check(
            env is not None or env_kwargs is None,
            "VideoEvaluation: env_kwargs apply to env=...; give env too",
        )
        self.env = env
        self.env_kwargs = env_kwargs
        self.every_n_env_steps = every_n_env_steps
        self.episodes = episodes
        self.video_dir = video_dir
        self.deterministic = deterministic
        self.seed = seed
        self.at_fit_end = at_fit_end
        self.max_episode_steps = max_episode_steps
        self.next_at: int | None = None
        self.last_at: int | None = None
        self.results: list[dict[str, Any]] = []  # one entry per evaluation (rank 0)
        self.source: EnvSource | None = None  # the env played, settled when fit starts

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """Settle the env to play; check that an ``env`` of the callback's own has the observations and actions
        the policy trains on, and on rank 0 with ``video_dir`` that it can be filmed (one env built and closed
        each), so that a wrong env stops the run now rather than at its first evaluation."""
        if stage != "fit":
            return
        self.source = self._env_source(trainer.datamodule)
        if self.env is not None and isinstance(pl_module, RLModule):
            check_same_spec(pl_module.env_spec, self.source, f"VideoEvaluation(env={env_name(self.env)})")
        if self.video_dir is not None and trainer.is_global_zero:
            from lightning_accelrl.video import make_filmed_env

            make_filmed_env(self.source.env, self.source.env_kwargs).close()

    def _env_source(self, datamodule: Any) -> EnvSource:
        if self.env is not None:
            return EnvSource(self.env, dict(self.env_kwargs or {}))
        source = datamodule.evaluation_env() if isinstance(datamodule, EvaluationEnvSource) else None
        if source is None:
            raise ConfigError(
                "VideoEvaluation has no env to play: the data module trains on a live env object (or does not "
                "say which env it trains on); give VideoEvaluation(env=<env id or env factory>)"
            )
        return source

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"next_at": self.next_at, "last_at": self.last_at}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.next_at = state_dict.get("next_at")
        self.last_at = state_dict.get("last_at")

    @override
    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        steps = _rank_zero_env_steps(trainer, pl_module)
        if self.next_at is None:
            self.next_at = (steps // self.every_n_env_steps + 1) * self.every_n_env_steps
        if steps >= self.next_at:
            self.next_at = (steps // self.every_n_env_steps + 1) * self.every_n_env_steps
            self.evaluate(trainer, pl_module, steps)

    @override
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        steps = _rank_zero_env_steps(trainer, pl_module)
        if self.at_fit_end and self.last_at != steps and steps > 0:
            self.evaluate(trainer, pl_module, steps)

    def evaluate(self, trainer: Trainer, pl_module: LightningModule, env_steps: int) -> dict[str, Any] | None:
        """Play the episodes on rank 0 (every rank calls this at the same batch); its results reach every rank's
        ``callback_metrics``. Returns the result on rank 0, None on the others."""
        self.last_at = env_steps
        result = None
        values = [math.nan] * len(EVAL_KEYS)
        if trainer.is_global_zero:
            was_training = pl_module.training
            pl_module.eval()
            try:
                with torch.random.fork_rng(devices=[]):
                    result = self._run(trainer, pl_module, env_steps)
            finally:
                pl_module.train(was_training)
            result["env_steps"] = env_steps
            self.results.append(result)
            values = [float(result[key]) for key in EVAL_KEYS]
        values = _from_rank_zero(trainer, pl_module, values)
        metrics = {f"eval/{key}": v for key, v in zip(EVAL_KEYS, values) if not math.isnan(v)}
        metrics["env_steps"] = float(env_steps)
        for logger in trainer.loggers if trainer.is_global_zero else []:
            logger.log_metrics(metrics, step=trainer.global_step)
        trainer.callback_metrics.update({k: torch.tensor(v) for k, v in metrics.items()})
        return result

    def _run(self, trainer: Trainer, pl_module: LightningModule, env_steps: int) -> dict[str, Any]:
        source = self.source if self.source is not None else self._env_source(trainer.datamodule)
        if self.video_dir is not None:
            from lightning_accelrl.video import record_episodes

            root = Path(self.video_dir)
            if not root.is_absolute():
                root = Path(trainer.log_dir or trainer.default_root_dir) / root
            return record_episodes(
                pl_module,
                source.env,
                self.episodes,
                root / f"env_steps_{env_steps}",
                seed=self.seed,
                deterministic=self.deterministic,
                env_kwargs=source.env_kwargs,
                max_steps=self.max_episode_steps,
            )
        env = make_env(
            source.env,
            evaluation_num_envs(self.episodes),
            self.seed,
            0,
            source.vectorization,
            source.env_kwargs,
        )
        try:
            return evaluate_policy(pl_module, env, self.episodes, deterministic=self.deterministic)
        finally:
            env.close()
