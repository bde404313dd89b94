"""What every algorithm module shares: the env spec, the policy version, rollout statistics and checkpoints.

The algorithm files (``ppo.py``, ``a2c.py``...) hold only their networks' use and their losses.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.core.optimizer import LightningOptimizer
from tensordict import TensorDict
from typing_extensions import override

from lightning_accelrl import __version__
from lightning_accelrl.data.needs import ExperienceLink, ExperienceNeeds
from lightning_accelrl.envs.base import EnvSpec
from lightning_accelrl.errors import ConfigError
from lightning_accelrl.trusted import class_path


class RLModule(LightningModule):
    """Base LightningModule for RL: manual optimisation, env-spec plumbing, pushed progress, statistics logging.

    Networks are built in :meth:`configure_model` from ``env_spec`` (a dict, filled from the datamodule's
    ``env_spec`` when not given and then stored in the hyper-parameters, so a checkpoint rebuilds itself).
    The experience source pushes the env-step count (:meth:`set_env_steps`); schedules read :attr:`progress`.
    Training needs a data module that implements the experience contract (``ExperienceDataModule``): it connects
    itself at ``setup`` (:meth:`connect_experience`); without it ``fit`` stops at once with one line.
    """

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.policy_version = 0  # number of updates applied; rollouts record the version that collected them
        self.env_steps = 0  # pushed by the experience source: env steps collected so far (all ranks)
        self.total_env_steps = 0  # the budget those env steps count towards
        self._experience: ExperienceLink | None = None
        self._built = False  # networks are built once (configure_model, or a checkpoint's on_load_checkpoint)

    # ----- env spec and networks -------------------------------------------------------------------------
    @property
    def env_spec(self) -> EnvSpec:
        spec = self.hparams.get("env_spec")
        if spec is None:
            if self._experience is None:
                raise ConfigError(
                    f"{type(self).__name__} needs env_spec=... or an experience source that gives it "
                    "(fit it with lightning_accelrl.ExperienceDataModule)"
                )
            spec = (
                self._experience.env_spec.to_dict()
            )  # pushed with the connection, at the data module's setup
            self.hparams["env_spec"] = spec
        return EnvSpec.from_dict(spec)

    def build_networks(self, spec: EnvSpec) -> None:
        """Create the algorithm's networks for ``spec`` (called once, in ``configure_model``)."""
        raise NotImplementedError

    @override
    def configure_model(self) -> None:
        if not self._built:
            self.build_networks(self.env_spec)
            self._built = True

    # ----- the experience contract (lightning_accelrl.data.needs) ----------------------------------------
    def experience_needs(self) -> ExperienceNeeds:
        """What the data module must stream: fresh on-policy rollouts (the default) or replay samples."""
        return ExperienceNeeds(kind="rollout")

    def connect_experience(self, link: ExperienceLink | None) -> None:
        """Called by the data module at ``setup`` (and with ``None`` at ``teardown``)."""
        self._experience = link

    def set_env_steps(self, env_steps: int, total_env_steps: int) -> None:
        """Pushed by the experience source before acting and after each batch: drives every schedule."""
        self.env_steps, self.total_env_steps = int(env_steps), int(total_env_steps)

    @property
    def progress(self) -> float:
        """Fraction of the env-step budget collected so far (0 until a source pushed a count)."""
        if self.total_env_steps <= 0:
            return 0.0
        return min(1.0, self.env_steps / self.total_env_steps)

    def detached_copy(self) -> RLModule:
        """A CPU copy in eval mode without the Trainer: the policy that sampler processes and actors run."""
        trainer, self._trainer = self._trainer, None
        link, self._experience = self._experience, None
        try:
            agent = copy.deepcopy(self)
        finally:
            self._trainer, self._experience = trainer, link
        return agent.cpu().eval()

    @override
    def on_fit_start(self) -> None:
        """Fail at once without an experience source or with 64-bit precision; per-rank randomness for action
        sampling."""
        if str(self.trainer.precision).startswith("64"):
            raise ConfigError(
                f"Trainer precision {self.trainer.precision!r} is not supported: envs hand over float32 "
                "observations and replay stores float32; use 32-true (the default), bf16-mixed or 16-mixed"
            )
        if self._experience is None:
            raise ConfigError(
                f"{type(self).__name__} trains on {self.experience_needs().describe()} from an experience "
                "source: fit it with lightning_accelrl.ExperienceDataModule (or a data module that calls "
                "connect_experience), not a plain dataloader or another datamodule"
            )
        if self.trainer.world_size > 1:  # seed_everything gives every rank the same torch stream
            torch.manual_seed(self._experience.base_seed + 7919 * self.trainer.global_rank)

    # ----- learning ---------------------------------------------------------------------------------------
    @property
    def fused_optimizers(self) -> bool:
        """Whether ``configure_optimizers`` may build fused optimizers (one kernel per step: on a CPU, ~0.4 ms
        against ~1-5 ms for the per-tensor Adam on the Nature CNN's 1.7M parameters). Everywhere but under
        ``16-mixed``, whose gradient scaler must unscale the gradients before they are clipped, which a fused
        optimizer only does inside its own step."""
        return self._trainer is None or str(self.trainer.precision) != "16-mixed"

    def gradient_step(self, optimizer: LightningOptimizer, loss: torch.Tensor, max_grad_norm: float) -> None:
        """One optimizer step on ``loss``: clear the gradients, backward through Lightning (precision, DDP),
        clip the gradients' global norm to ``max_grad_norm``, step."""
        optimizer.zero_grad()
        self.manual_backward(loss)
        if str(self.trainer.precision) == "bf16-mixed":
            # Lightning's mixed-precision plugin refuses to clip for any fused optimizer, because fp16's scaler
            # would have to unscale first; bf16 has no scaler and its gradients are the true ones: clip them as
            # they are, with the same global-norm rule as the plugin.
            params = [p for group in optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        else:
            self.clip_gradients(optimizer, gradient_clip_val=max_grad_norm, gradient_clip_algorithm="norm")
        optimizer.step()

    # ----- logging ----------------------------------------------------------------------------------------
    def logs_this_batch(self) -> bool:
        """Whether this training batch logs (see :func:`is_logging_batch`): build costly metrics only then."""
        return is_logging_batch(self.trainer)

    def log_rollout_stats(self, metrics: dict[str, float | torch.Tensor]) -> None:
        """Log the run statistics (reduced over ranks as (sum, count) pairs) and the losses.

        Only on the batches where Lightning writes to its loggers (:func:`is_logging_batch`, the same on every
        rank): reducing and logging cost ~0.1-0.4 ms per value, which would dominate the short training steps of
        small networks.
        """
        if not is_logging_batch(self.trainer):
            return
        stats = self._experience.statistics()
        bar = {k: stats.pop(k) for k in ("episode_return_mean", "env_steps_per_s") if k in stats}
        if bar:
            self.log_dict(bar, prog_bar=True, on_step=True, on_epoch=False)
        self.log_dict({**stats, **metrics}, on_step=True, on_epoch=False)

    def update_priorities(self, keys: torch.Tensor, priorities: torch.Tensor) -> None:
        """Prioritized replay: write new priorities back to the table the batch came from."""
        self._experience.update_priorities(keys, priorities)

    # ----- checkpoints ------------------------------------------------------------------------------------
    @override
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["accelrl"] = {
            "algorithm": class_path(type(self)),
            "version": __version__,
            "policy_version": self.policy_version,
            "env_steps": self.env_steps,
            "total_env_steps": self.total_env_steps,
        }

    @override
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        info = checkpoint.get("accelrl", {})
        self.policy_version = int(info.get("policy_version", 0))
        self.set_env_steps(int(info.get("env_steps", 0)), int(info.get("total_env_steps", 0)))
        spec = checkpoint.get("hyper_parameters", {}).get("env_spec")
        if spec is not None and self.hparams.get("env_spec") is None:
            self.hparams["env_spec"] = spec
        self.configure_model()


def replay_needs(hparams: Any, **more: Any) -> ExperienceNeeds:
    """Replay needs from the options every replay algorithm has (``n_step``, ``gamma``, ``bootstrap_truncated``,
    ``updates_per_batch``), plus the algorithm's own (``actions``, ``prioritized``...)."""
    return ExperienceNeeds(
        kind="replay",
        n_step=hparams.n_step,
        gamma=hparams.gamma,
        bootstrap_truncated=hparams.bootstrap_truncated,
        updates_per_batch=hparams.updates_per_batch,
        **more,
    )


def replay_updates(batch: TensorDict) -> tuple[TensorDict, ...]:
    """The samples of each update in a replay training batch: ``[K, B]`` (an algorithm's ``updates_per_batch``
    K > 1) gives K batches of ``[B]``; a ``[B]`` batch is one update."""
    return batch.unbind(0) if batch.batch_dims == 2 else (batch,)


def is_logging_batch(trainer: Trainer) -> bool:
    """Every ``trainer.log_every_n_steps`` training batches (counted over the run), and the last batch of a run:
    the batches on which :meth:`RLModule.log_rollout_stats` logs (and the run summary reads the logged figures)."""
    every = trainer.log_every_n_steps
    batches = trainer.fit_loop.epoch_loop.batch_progress.total.ready  # this batch included
    return trainer.should_stop or (every > 0 and batches % every == 0)


def annealed(base_lr: float, progress: float, enabled: bool) -> float:
    """``base_lr`` decayed linearly to zero over the env-step budget (when enabled)."""
    return base_lr * max(0.0, 1.0 - progress) if enabled else base_lr


def anneal(optimizer: torch.optim.Optimizer, base_lr: float, progress: float, enabled: bool) -> float:
    """Set every parameter group's learning rate to :func:`annealed` ``base_lr``; returns it."""
    lr = annealed(base_lr, progress, enabled)
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr
