"""What every algorithm module shares: the env spec, the policy version, rollout statistics and checkpoints.

The algorithm files (``ppo.py``, ``a2c.py``...) hold only their networks' use and their losses.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from lightning.pytorch import LightningModule

from lightning_accelrl.envs.base import EnvSpec
from lightning_accelrl.errors import ConfigError


class RLModule(LightningModule):
    """Base LightningModule for RL: manual optimisation, env-spec plumbing, episode-statistics logging.

    Networks are built in :meth:`configure_model` from ``env_spec`` (a dict, filled from the datamodule's
    ``env_spec`` when not given and then stored in the hyper-parameters, so a checkpoint rebuilds itself).
    """

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.policy_version = 0  # number of updates applied; rollouts record the version that collected them
        self.policy_lags: list[int] = []  # lag of each training batch (0 for the synchronous sampler)

    # ----- env spec and networks -------------------------------------------------------------------------
    @property
    def env_spec(self) -> EnvSpec:
        spec = self.hparams.get("env_spec")
        if spec is None:
            dm = self._datamodule()
            if dm is None or not hasattr(dm, "env_spec"):
                raise ConfigError(
                    f"{type(self).__name__} needs env_spec=... or a datamodule with an env_spec (e.g. ExperienceDataModule)"
                )
            spec = dm.env_spec.to_dict()
            self.hparams["env_spec"] = spec
        return EnvSpec.from_dict(spec)

    def _datamodule(self) -> Any:
        trainer = self._trainer
        return None if trainer is None else trainer.datamodule

    def build_networks(self, spec: EnvSpec) -> None:
        """Create the algorithm's networks for ``spec`` (called once, in ``configure_model``)."""
        raise NotImplementedError

    def on_fit_start(self) -> None:
        """Per-rank randomness for action sampling: ``seed_everything`` gives every rank the same torch stream."""
        if self.trainer.world_size > 1:
            dm = self._datamodule()
            base = dm._base_seed() if hasattr(dm, "_base_seed") else int(os.environ.get("PL_GLOBAL_SEED", 0))
            torch.manual_seed(base + 7919 * self.trainer.global_rank)

    def configure_model(self) -> None:
        if not getattr(self, "_built", False):
            self.build_networks(self.env_spec)
            self._built = True

    def experience_spec(self) -> dict[str, Any]:
        """What the data module must stream: fresh on-policy rollouts (the default) or replay samples."""
        return {"kind": "rollout"}

    # ----- progress, logging ------------------------------------------------------------------------------
    @property
    def progress(self) -> float:
        """Fraction of the env-step budget consumed, from the datamodule (0 when there is none)."""
        return float(getattr(self._datamodule(), "progress", 0.0))

    def track_policy_lag(self, batch: Any) -> None:
        if "policy_version" in batch.keys():  # noqa: SIM118 - TensorDict membership needs keys()
            lag = self.policy_version - int(batch["policy_version"].min())
            self.policy_lags.append(lag)

    def log_rollout_stats(self, metrics: dict[str, float | torch.Tensor]) -> None:
        """Log the datamodule's episode statistics (reduced over ranks as (sum, count) pairs) and the losses.

        Only on the batches where Lightning writes to its loggers (every ``trainer.log_every_n_steps`` training
        batches, the same on every rank): reducing and logging cost ~0.1-0.4 ms per value, which would dominate
        the short training steps of small networks.
        """
        connector = getattr(self.trainer, "_logger_connector", None)
        if not getattr(connector, "should_update_logs", True):
            return
        dm = self._datamodule()
        stats = dm.rank_reduced_stats(self.trainer.strategy) if hasattr(dm, "rank_reduced_stats") else {}
        bar = {k: stats.pop(k) for k in ("episode_return_mean", "env_steps_per_s") if k in stats}
        if bar:
            self.log_dict(bar, prog_bar=True, on_step=True, on_epoch=False)
        self.log_dict({**stats, **metrics}, on_step=True, on_epoch=False)

    # ----- checkpoints ------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        cls = type(self)
        checkpoint["accelrl"] = {
            "algorithm": f"{cls.__module__}.{cls.__qualname__}",
            "policy_version": self.policy_version,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        info = checkpoint.get("accelrl", {})
        self.policy_version = int(info.get("policy_version", 0))
        spec = checkpoint.get("hyper_parameters", {}).get("env_spec")
        if spec is not None and self.hparams.get("env_spec") is None:
            self.hparams["env_spec"] = spec
        self.configure_model()


def anneal(optimizer: torch.optim.Optimizer, base_lr: float, progress: float, enabled: bool) -> float:
    """Linear decay of the learning rate to zero over the env-step budget (when enabled)."""
    lr = base_lr * max(0.0, 1.0 - progress) if enabled else base_lr
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr
