"""Advantage Actor-Critic (synchronous A2C, Mnih et al., 2016; batched as in Stooke & Abbeel, 2018).

One training step = one rollout [T, B] and one gradient step: policy gradient with (GAE or n-step)
advantages, value regression, entropy bonus, RMSprop as in the original.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import torch
from tensordict import TensorDict

from lightning_accelrl.algos.actor_critic import ActorCriticModule
from lightning_accelrl.algos.base import anneal
from lightning_accelrl.algos.pg_losses import loss_policy_gradient, loss_value, normalized
from lightning_accelrl.algos.returns import gae
from lightning_accelrl.errors import check
from lightning_accelrl.nets.actor_critic import LOG_STD_KINDS
from lightning_accelrl.nets.factory import network_argument
from lightning_accelrl.nets.interfaces import NetworkArg


def a2c_optimizer(
    parameters: Iterable[torch.nn.Parameter], hp: Mapping[str, Any], fused: bool = True
) -> torch.optim.Optimizer:
    """RMSprop as in the original A2C (``hp.optimizer == "rmsprop"``), or Adam (``fused``: one kernel); ``lr``,
    ``eps``, ``rmsprop_alpha`` from the hyper-parameters."""
    if hp["optimizer"] == "rmsprop":
        return torch.optim.RMSprop(parameters, lr=hp["lr"], alpha=hp["rmsprop_alpha"], eps=hp["eps"])
    return torch.optim.Adam(parameters, lr=hp["lr"], eps=hp["eps"], fused=fused)


class A2C(ActorCriticModule):
    """A2C: one synchronous update per rollout of all envs.

    ``normalize_observations``, ``normalize_rewards``, ``log_std``, ``log_std_init``: as :class:`PPO`'s.
    """

    def __init__(
        self,
        lr: float = 7e-4,
        gamma: float = 0.99,
        gae_lambda: float = 1.0,
        value_coef: float = 0.5,
        entropy_coef: float = 0.0,
        max_grad_norm: float = 0.5,
        normalize_advantage: bool = False,
        anneal_lr: bool = False,
        optimizer: Literal["rmsprop", "adam"] = "rmsprop",
        rmsprop_alpha: float = 0.99,
        eps: float = 1e-5,
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
        check(max_grad_norm > 0, f"max_grad_norm must be > 0, got {max_grad_norm}")
        check(optimizer in ("rmsprop", "adam"), f"optimizer must be 'rmsprop' or 'adam', got {optimizer!r}")
        check(log_std in LOG_STD_KINDS, f"log_std must be one of {', '.join(LOG_STD_KINDS)}, got {log_std!r}")
        network, self.net = network_argument(network)
        self.save_hyperparameters(ignore=["network"])  # a module never goes into the hyper-parameters (nor
        self.hparams["network"] = network  # a subclass's **kwargs): its plain form, a name or a class path

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return a2c_optimizer(self.parameters(), self.hparams, self.fused_optimizers)

    def training_step(self, batch: TensorDict, batch_idx: int) -> None:
        hp = self.hparams
        opt = self.optimizers()
        lr = anneal(opt.optimizer, hp.lr, self.progress, hp.anneal_lr)

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
        obs = batch["observation"].flatten(0, 1)
        actions = batch["action"].flatten(0, 1)
        advantages, returns = advantages.reshape(-1), returns.reshape(-1)
        if hp.normalize_advantage:
            advantages = normalized(advantages)

        params, value = self(obs)  # re-evaluated with gradients; the rollout's values carry none
        dist = self.dist(params)
        pg_loss = loss_policy_gradient(advantages, dist.log_prob(actions))
        value_loss = loss_value(value.squeeze(-1), returns)
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
