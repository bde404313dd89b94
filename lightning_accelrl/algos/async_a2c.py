"""Asynchronous A2C (the A3C layout, batched: Stooke & Abbeel, 2018) with V-trace correction (IMPALA's loss).

With ``sampler: async`` the rollout segments come from sampler processes acting with weights a few updates old
(the behaviour policy μ). Plain A2C would follow μ's gradient as if it were π's; here each segment's targets and
advantages are V-trace's (Espeholt et al., 2018, eq. 1 and §4.2), computed with the current network:

    loss = −mean(ρ̄_t · (r_t + γ v_{t+1} − V(x_t)) · log π(a_t|x_t)) + c_v · mean((v_t − V(x_t))²) − c_e · H(π)

with ρ̄_t = min(ρ̄, π/μ). One gradient step per segment, RMSprop as A2C. With no lag (π = μ) and λ = 1 the
V-trace targets are the n-step returns, so on the synchronous sampler this is A2C.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from tensordict import TensorDict
from typing_extensions import override

from lightning_accelrl.algos.a2c import a2c_optimizer
from lightning_accelrl.algos.actor_critic import ActorCriticModule
from lightning_accelrl.algos.appo import vtrace
from lightning_accelrl.algos.base import anneal
from lightning_accelrl.algos.pg_losses import loss_policy_gradient, loss_value
from lightning_accelrl.data.needs import ExperienceNeeds
from lightning_accelrl.errors import check
from lightning_accelrl.nets.actor_critic import LOG_STD_KINDS
from lightning_accelrl.nets.factory import network_argument
from lightning_accelrl.nets.interfaces import NetworkArg


class AsyncA2C(ActorCriticModule):
    """A2C for asynchronous samplers: one V-trace-corrected gradient step per (possibly lagged) segment."""

    def __init__(
        self,
        lr: float = 7e-4,
        gamma: float = 0.99,
        vtrace_lambda: float = 1.0,
        vtrace_rho_clip: float = 1.0,
        vtrace_c_clip: float = 1.0,
        pg_rho_clip: float = 1.0,
        value_coef: float = 0.5,
        entropy_coef: float = 0.0,
        max_grad_norm: float = 0.5,
        anneal_lr: bool = False,
        optimizer: Literal["rmsprop", "adam"] = "rmsprop",
        rmsprop_alpha: float = 0.99,
        eps: float = 1e-5,
        normalize_observations: bool = False,
        log_std: str = "state_independent",
        log_std_init: float = 0.0,
        network: NetworkArg = "auto",
        hidden: Sequence[int] = (64, 64),
        activation: str = "tanh",
        shared_trunk: bool = False,
        env_spec: dict | None = None,
    ) -> None:
        super().__init__()
        check(lr > 0, f"lr must be > 0, got {lr}")
        check(0 < gamma <= 1, f"gamma must be in (0, 1], got {gamma}")
        check(0 <= vtrace_lambda <= 1, f"vtrace_lambda must be in [0, 1], got {vtrace_lambda}")
        check(min(vtrace_rho_clip, vtrace_c_clip, pg_rho_clip) > 0, "V-trace clips must be > 0")
        check(max_grad_norm > 0, f"max_grad_norm must be > 0, got {max_grad_norm}")
        check(optimizer in ("rmsprop", "adam"), f"optimizer must be 'rmsprop' or 'adam', got {optimizer!r}")
        check(log_std in LOG_STD_KINDS, f"log_std must be one of {', '.join(LOG_STD_KINDS)}, got {log_std!r}")
        network, self.net = network_argument(network)
        self.save_hyperparameters(ignore=["network"])  # a module never goes into the hyper-parameters (nor
        self.hparams["network"] = network  # a subclass's **kwargs): its plain form, a name or a class path

    @override
    def experience_needs(self) -> ExperienceNeeds:
        """Rollout segments with the next observations (values are recomputed with the current network)."""
        return ExperienceNeeds(kind="rollout", next_observation=True, lag_corrected=True)

    @override
    def configure_optimizers(self) -> torch.optim.Optimizer:
        return a2c_optimizer(self.parameters(), self.hparams, self.fused_optimizers)

    # acting: ActorCriticModule.act, one batched forward for all envs
    # ----- learning -----------------------------------------------------------------------------------------
    @override
    def training_step(self, batch: TensorDict, batch_idx: int) -> None:
        hp = self.hparams
        opt = self.optimizers()
        lr = anneal(opt.optimizer, hp.lr, self.progress, hp.anneal_lr)
        T, B = batch.batch_size

        # 1. the current policy and value on the segment (with gradients)
        params, value = self(batch["observation"].flatten(0, 1))
        dist = self.dist(params)
        log_pi = dist.log_prob(batch["action"].flatten(0, 1))

        # 2. V-trace targets and importance-weighted advantages against the behaviour policy μ
        with torch.no_grad():
            next_value = self.value(batch["next", "observation"].flatten(0, 1)).reshape(T, B)
            vs, pg_adv = vtrace(
                log_pi.detach().reshape(T, B) - batch["sample_log_prob"].reshape(T, B),
                batch["next", "reward"].reshape(T, B),
                value.detach().reshape(T, B),
                next_value,
                batch["next", "done"].reshape(T, B),
                batch["next", "terminated"].reshape(T, B),
                hp.gamma,
                hp.vtrace_lambda,
                hp.vtrace_rho_clip,
                hp.vtrace_c_clip,
                pg_rho_clip=hp.pg_rho_clip,
            )

        # 3. IMPALA's loss, one step
        pg_loss = loss_policy_gradient(pg_adv.reshape(-1), log_pi)
        value_loss = loss_value(value.squeeze(-1), vs.reshape(-1))
        entropy = dist.entropy().mean()
        loss = pg_loss + hp.value_coef * value_loss - hp.entropy_coef * entropy
        self.gradient_step(opt, loss, hp.max_grad_norm)

        self.update_observation_statistics(batch)
        self.policy_version += 1
        self.log_rollout_stats(
            {
                "train/pg_loss": pg_loss.detach(),
                "train/value_loss": value_loss.detach(),
                "train/entropy": entropy.detach(),
                "train/lr": lr,
            }
        )
