"""RunSummary: writes ``summary.json`` (the run's headline figures) into the log directory at the end of fit."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer

from lightning_accelrl.algos.base import is_logging_batch
from lightning_accelrl.atomic import atomic_write
from lightning_accelrl.data.needs import ExperienceLink
from lightning_accelrl.envs import env_name


class RunSummary(Callback):
    """Records when ``episode_return_mean`` first reaches ``target_return`` and writes ``summary.json``.

    The threshold counts only once the window of recent episodes is full (100 by default, as rl-zoo and
    Stable-Baselines3 report it), so an early lucky handful of episodes does not count.

    With ``eval_episodes > 0`` the greedy policy is also evaluated on fresh envs at the end of fit
    (``eval_return_mean``): the episodes are split over the data module's ``num_envs`` envs seeded from
    ``eval_seed``, so ``accelrl evaluate --episodes N --num-envs NUM_ENVS --seed EVAL_SEED`` prints the same figure
    for the final checkpoint. The file is written atomically and fsynced.
    """

    #: the run's config identity, set by ``accelrl fit`` (:func:`lightning_accelrl.run_name.config_id`);
    #: ``accelrl plot`` draws runs of one identity as one curve
    config_id: str | None = None

    def __init__(
        self,
        target_return: float | None = None,
        eval_episodes: int = 0,
        eval_seed: int = 1_000_003,
        filename: str = "summary.json",
    ) -> None:
        self.target_return = target_return
        self.eval_episodes = eval_episodes
        self.eval_seed = eval_seed
        self.filename = filename
        self.reached: dict[str, float] | None = None
        self.path: Path | None = None

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        """Check the threshold on the batches that log the run statistics (reading the logged metrics costs
        ~0.1 ms; they change only on those batches)."""
        if self.target_return is None or self.reached is not None or not is_logging_batch(trainer):
            return
        dm = trainer.datamodule
        value = trainer.callback_metrics.get("episode_return_mean")
        full = dm.tracker is not None and len(dm.tracker.recent_returns) >= dm.tracker.recent_returns.maxlen
        if value is not None and full and float(value) >= self.target_return:
            self.reached = {"env_steps": dm.env_steps, "wall_time_s": dm.wall_time}

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        dm = trainer.datamodule
        # fast_dev_run is a smoke test that writes nothing (Lightning drops its loggers and checkpoints too):
        # without a log directory the file would land in the working directory
        if not isinstance(dm, ExperienceLink) or trainer.fast_dev_run:
            return
        stats = dm.statistics()
        wall = dm.wall_time
        summary: dict[str, Any] = {
            "algorithm": type(pl_module).__name__,
            "config_id": self.config_id,
            "env": env_name(dm.env),
            "seed": dm.base_seed,
            "world_size": trainer.world_size,
            "env_steps": dm.env_steps,
            "episodes": int(stats.get("episodes", 0)),
            "episode_return_mean": stats.get("episode_return_mean", math.nan),
            "episode_length_mean": stats.get("episode_length_mean", math.nan),
            "wall_time_s": wall,
            "env_steps_per_s": dm.env_steps / wall if wall > 0 else math.nan,
            "updates": int(dm.updates_done),
            "policy_lag_max": dm.lags.max,
        }
        if "policy_lag/max" in stats:  # over all ranks, and each rank's own figures
            summary["policy_lag_mean"] = stats["policy_lag/mean"]
            summary["policy_lag_max"] = int(stats["policy_lag/max"])
            summary["policy_lag_by_rank"] = [
                {
                    "rank": r,
                    "mean": stats[f"policy_lag/rank{r}_mean"],
                    "max": int(stats[f"policy_lag/rank{r}_max"]),
                }
                for r in range(trainer.world_size)
                if f"policy_lag/rank{r}_mean" in stats
            ]
        if "episode_score_mean" in stats:  # Atari: the unclipped game score next to the clipped return
            summary["episode_score_mean"] = stats["episode_score_mean"]
        if self.target_return is not None:
            summary["target_return"] = self.target_return
            summary["env_steps_to_threshold"] = self.reached["env_steps"] if self.reached else None
            summary["wall_time_to_threshold_s"] = self.reached["wall_time_s"] if self.reached else None
        if self.eval_episodes > 0:
            summary.update(self._evaluate(trainer, pl_module, dm))
        # on every rank: trainer.log_dir broadcasts from rank 0 under DDP
        log_dir = Path(trainer.log_dir or trainer.default_root_dir)
        if trainer.is_global_zero:
            log_dir.mkdir(parents=True, exist_ok=True)
            self.path = log_dir / self.filename
            with atomic_write(self.path) as file:
                file.write((json.dumps(_finite(summary), indent=2) + "\n").encode())

    def written_path(self, trainer: Trainer) -> Path | None:
        """The ``summary.json`` this fit wrote, or ``None``: ``path`` in the process that wrote it; in the
        process that launched ``ddp_spawn`` workers (the fit and this callback's copy ran in them), the file in
        the run's log directory, which the launcher shares with them (none under fast_dev_run)."""
        if self.path is not None or trainer.fast_dev_run:
            return self.path
        candidate = Path(trainer.log_dir or trainer.default_root_dir) / self.filename
        return candidate if candidate.is_file() else None

    def _evaluate(self, trainer: Trainer, pl_module: LightningModule, dm: Any) -> dict[str, Any]:
        from lightning_accelrl.evaluation import evaluate_policy

        env = dm.build_env(rank=trainer.global_rank, seed=self.eval_seed)
        try:
            was_training = pl_module.training
            pl_module.eval()
            result = evaluate_policy(pl_module, env, self.eval_episodes, deterministic=True)
            pl_module.train(was_training)
        finally:
            env.close()
        return {
            "eval_episodes": result["episodes"],
            "eval_return_mean": result["return_mean"],
            "eval_return_std": result["return_std"],
        }


def _finite(d: dict[str, Any]) -> dict[str, Any]:
    """JSON has no NaN: write null instead."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}
