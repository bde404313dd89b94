"""Proximal Policy Optimization (Schulman et al., 2017), written out plainly as a LightningModule.

One training step = one rollout [T, B] from the sampler: GAE advantages from the values recorded while
sampling, then ``update_epochs`` passes of shuffled minibatches over the clipped surrogate objective.
Continuous actions (``Box``): a diagonal Gaussian with a state-independent or state-dependent log-std, and the
``normalize_observations``/``normalize_rewards`` options (see ``docs/ppo_continuous.md``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tensordict import TensorDict

from lightning_accelrl.algos.actor_critic import ActorCriticModule
from lightning_accelrl.algos.base import anneal
from lightning_accelrl.algos.pg_losses import (
    clip_fraction,
    loss_clipped_surrogate,
    loss_value,
    loss_value_clipped,
    normalized,
)
from lightning_accelrl.algos.returns import gae
from lightning_accelrl.errors import check
from lightning_accelrl.nets.actor_critic import LOG_STD_KINDS
from lightning_accelrl.nets.factory import network_argument
from lightning_accelrl.nets.interfaces import NetworkArg


class PPO(ActorCriticModule):
    """PPO with clipped surrogate, (optionally clipped) value loss, entropy bonus and LR/clip annealing.

    ``normalize_observations``: running mean/variance normalization of observations (updated after each
    update). ``normalize_rewards``: rewards divided by the running std of the discounted return.
    ``log_std``: ``"state_independent"`` or ``"state_dependent"`` (Box actions, built-in MLP), from ``log_std_init``.
    """

    def __init__(
        self,
        lr: float = 3e-4,
        gamma: float = 0.99,
        gae_lambda: float = 0.95,
        clip_coef: float = 0.2,
        clip_value_loss: bool = False,
        value_coef: float = 0.5,
        entropy_coef: float = 0.0,
        update_epochs: int = 10,
        minibatch_size: int = 64,
        max_grad_norm: float = 0.5,
        normalize_advantage: bool = True,
        anneal_lr: bool = True,
        anneal_clip: bool = False,
        target_kl: float | None = None,
        adam_eps: float = 1e-5,
        normalize_observations: bool = False,
        normalize_rewards: bool = False,
        log_std: str = "state_independent",
        log_std_init: float = 0.0,
        network: NetworkArg = "auto",
        hidden: Sequence[int] = (64, 64),
        activation: str = "tanh",
        shared_trunk: bool = False,
        channels_last: bool = False,
        compile_network: bool = False,
        env_spec: dict | None = None,
    ) -> None:
        super().__init__()
        check(lr > 0, f"lr must be > 0, got {lr}")
        check(0 < gamma <= 1, f"gamma must be in (0, 1], got {gamma}")
        check(0 <= gae_lambda <= 1, f"gae_lambda must be in [0, 1], got {gae_lambda}")
        check(clip_coef > 0, f"clip_coef must be > 0, got {clip_coef}")
        check(update_epochs >= 1, f"update_epochs must be >= 1, got {update_epochs}")
        check(minibatch_size >= 1, f"minibatch_size must be >= 1, got {minibatch_size}")
        check(max_grad_norm > 0, f"max_grad_norm must be > 0, got {max_grad_norm}")
        check(log_std in LOG_STD_KINDS, f"log_std must be one of {', '.join(LOG_STD_KINDS)}, got {log_std!r}")
        network, self.net = network_argument(network)
        self.save_hyperparameters(ignore=["network"])  # a module never goes into the hyper-parameters (nor
        self.hparams["network"] = network  # a subclass's **kwargs): its plain form, a name or a class path

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # fused (where allowed): one kernel for all parameters (~20% faster steps for classic control's small nets)
        return torch.optim.Adam(
            self.parameters(), lr=self.hparams.lr, eps=self.hparams.adam_eps, fused=self.fused_optimizers
        )

    # acting: ActorCriticModule.act, one batched forward for all envs
    # ----- learning -----------------------------------------------------------------------------------------
    def training_step(self, batch: TensorDict, batch_idx: int) -> None:
        hp = self.hparams
        opt = self.optimizers()
        lr = anneal(opt.optimizer, hp.lr, self.progress, hp.anneal_lr)
        clip = hp.clip_coef * (1.0 - self.progress) if hp.anneal_clip else hp.clip_coef

        with torch.no_grad():
            advantages, returns = gae(
                self.scaled_rewards(batch, hp.gamma),
                batch["state_value"],
                batch["next", "state_value"],
                batch["next", "done"],
                batch["next", "terminated"],
                hp.gamma,
                hp.gae_lambda,
            )
        observations = batch["observation"].flatten(0, 1)
        actions = batch["action"].flatten(0, 1)
        old_log_probs = batch["sample_log_prob"].flatten(0, 1)
        old_values = batch["state_value"].reshape(-1)
        advantages, returns = advantages.reshape(-1), returns.reshape(-1)
        n = observations.shape[0]
        mb = min(hp.minibatch_size, n)

        stats: dict[str, list[torch.Tensor]] = {
            "pg_loss": [],
            "value_loss": [],
            "entropy": [],
            "approx_kl": [],
            "clip_frac": [],
        }
        for _ in range(hp.update_epochs):
            perm = torch.randperm(n, device=self.device)
            for start in range(0, n - mb + 1, mb):
                idx = perm[start : start + mb]
                params, value = self(observations.index_select(0, idx))
                dist = self.dist(params)
                logp = dist.log_prob(actions.index_select(0, idx))
                log_ratio = logp - old_log_probs.index_select(0, idx)
                ratio = log_ratio.exp()
                adv = advantages.index_select(0, idx)
                if hp.normalize_advantage and mb > 1:
                    adv = normalized(adv)
                pg_loss = loss_clipped_surrogate(adv, ratio, clip)

                value = value.squeeze(-1)
                ret = returns.index_select(0, idx)
                if hp.clip_value_loss:
                    value_loss = 0.5 * loss_value_clipped(value, old_values.index_select(0, idx), ret, clip)
                else:
                    value_loss = 0.5 * loss_value(value, ret)
                entropy = dist.entropy().mean()
                loss = pg_loss + hp.value_coef * value_loss - hp.entropy_coef * entropy

                self.gradient_step(opt, loss, hp.max_grad_norm)

                with torch.no_grad():
                    stats["pg_loss"].append(pg_loss.detach())
                    stats["value_loss"].append(value_loss.detach())
                    stats["entropy"].append(entropy.detach())
                    stats["approx_kl"].append(((ratio - 1) - log_ratio).mean())
                    stats["clip_frac"].append(clip_fraction(ratio, clip))
            if hp.target_kl is not None:
                kl = stats["approx_kl"][-1]
                if self.trainer.world_size > 1:  # every rank must stop after the same epoch (DDP)
                    kl = self.trainer.strategy.reduce(kl, reduce_op="mean")
                if float(kl) > hp.target_kl:
                    break

        self.update_observation_statistics(batch)
        self.policy_version += 1
        metrics = {f"train/{k}": torch.stack(v).mean() for k, v in stats.items()}
        metrics["train/lr"] = lr
        self.log_rollout_stats(metrics)
