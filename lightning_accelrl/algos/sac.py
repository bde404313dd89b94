"""Soft Actor-Critic (Haarnoja et al., 2018, "SAC: algorithms and applications"), as a LightningModule.

Twin Q-networks with a Polyak-averaged target, a tanh-squashed Gaussian policy with the change-of-variables
correction, and the entropy temperature α tuned automatically towards a target entropy (−dim(A) by default).
Each training batch is one ``table.sample(batch_size)``; the data module's sample-to-insert limiter sets the
replay ratio, so ``replay_ratio / batch_size`` is the update-to-data ratio (1 update of 256 per env step:
``replay_ratio: 256``).

One update steps the critics first, then the actor and the temperature against the updated critics (the SAC
paper's Algorithm 1, as Stable-Baselines3 and CleanRL): the actor's loss reads the critics through detached
weights, so each loss moves only its own parameters.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from tensordict import TensorDict
from torch import nn
from typing_extensions import override

from lightning_accelrl.algos.large_batch import LrScaling
from lightning_accelrl.algos.off_policy import (
    NETWORK_ARGS,
    OffPolicyContinuous,
    check_common_arguments,
    ddp_reach,
    loss_critic,
    td_target,
)
from lightning_accelrl.envs.base import EnvSpec
from lightning_accelrl.errors import check
from lightning_accelrl.nets.continuous import SquashedGaussianActor, check_log_std_mode, squashed_sample
from lightning_accelrl.nets.factory import build_continuous_actor
from lightning_accelrl.nets.interfaces import NetworkArg


def soft_q_target(
    reward: torch.Tensor,
    bootstrap_discount: torch.Tensor,
    next_q: torch.Tensor,
    next_log_prob: torch.Tensor,
    alpha: torch.Tensor,
) -> torch.Tensor:
    """``r + γ^n·(min_i Q'_i(s', a') − α·log π(a'|s'))`` with ``a' ~ π(·|s')`` (``next_q`` [E, N])."""
    return td_target(reward, bootstrap_discount, next_q.min(0).values - alpha * next_log_prob)


def loss_actor(alpha: torch.Tensor, log_prob: torch.Tensor, q_new: torch.Tensor) -> torch.Tensor:
    """``E[α·log π(ã|s) − min_i Q_i(s, ã)]`` with ``ã ~ π(·|s)`` reparameterized (``q_new`` [E, N])."""
    return (alpha * log_prob - q_new.min(0).values).mean()


def loss_alpha(log_alpha: torch.Tensor, log_prob: torch.Tensor, target_entropy: float) -> torch.Tensor:
    """``E[−log α · (log π(ã|s) + H̄)]``: raises α while the policy's entropy is below the target ``H̄``."""
    return -(log_alpha * (log_prob.detach() + target_entropy)).mean()


class SAC(OffPolicyContinuous):
    """SAC on replay tables, for Box action spaces with finite bounds.

    ``entropy_coef``: a fixed α, or ``None`` (default) to tune it from ``initial_entropy_coef`` towards
    ``target_entropy`` (``None``: −dim(A)). ``actor_network``/``critic_network``: ``"mlp"`` (sized by
    ``actor_hidden``/``critic_hidden``/``activation``), or the user's networks (``nets.interfaces``:
    ``SquashedGaussianPolicyNetwork``, ``ContinuousQNetwork``). ``log_std_mode``: how the built-in actor bounds
    its log-std, ``"tanh"`` (into [−5, 2], CleanRL's) or ``"clamp"`` (to [−20, 2], the SAC authors' and
    Stable-Baselines3's); see :class:`~lightning_accelrl.nets.continuous.SquashedGaussianActor`.
    """

    def __init__(
        self,
        actor_lr: float = 3e-4,
        critic_lr: float = 3e-4,
        alpha_lr: float = 3e-4,
        anneal_lr: bool = False,
        gamma: float = 0.99,
        n_step: int = 1,
        bootstrap_truncated: bool = True,
        updates_per_batch: int = 1,
        tau: float = 0.005,
        entropy_coef: float | None = None,
        initial_entropy_coef: float = 1.0,
        target_entropy: float | None = None,
        num_critics: int = 2,
        random_steps: int = 100,
        actor_hidden: Sequence[int] = (256, 256),
        critic_hidden: Sequence[int] = (256, 256),
        activation: str = "relu",
        log_std_mode: str = "tanh",
        actor_network: NetworkArg = "mlp",
        critic_network: NetworkArg = "mlp",
        lr_scaling: LrScaling = "none",
        reference_batch_size: int = 256,
        env_spec: dict | None = None,
    ) -> None:
        super().__init__(actor_network, critic_network)
        for name, lr in (("actor_lr", actor_lr), ("critic_lr", critic_lr), ("alpha_lr", alpha_lr)):
            check(lr > 0, f"{name} must be > 0, got {lr}")
        check_common_arguments(
            gamma, n_step, tau, num_critics, random_steps, lr_scaling, reference_batch_size, updates_per_batch
        )
        check(entropy_coef is None or entropy_coef >= 0, f"entropy_coef must be >= 0, got {entropy_coef}")
        check(initial_entropy_coef > 0, f"initial_entropy_coef must be > 0, got {initial_entropy_coef}")
        check_log_std_mode(log_std_mode)  # now, not when the actor is built at fit start
        self.save_hyperparameters(ignore=NETWORK_ARGS)
        self.store_network_arguments()
        start = entropy_coef if entropy_coef is not None else initial_entropy_coef
        # log α is a parameter even when fixed (then never stepped): one layout for checkpoints and samplers
        self.log_alpha = nn.Parameter(
            torch.tensor(math.log(max(start, 1e-12))), requires_grad=entropy_coef is None
        )

    @override
    def build_actor(self, spec: EnvSpec, given: nn.Module | None) -> nn.Module:
        hp = self.hparams
        self.target_entropy = (
            float(-spec.action_dim) if hp.target_entropy is None else float(hp.target_entropy)
        )
        return build_continuous_actor(
            spec,
            hp.actor_network,
            given,
            lambda: SquashedGaussianActor(spec, hp.actor_hidden, hp.activation, hp.log_std_mode),
            "SAC's actor (mean, log_std)",
            ((2, spec.action_dim), (2, spec.action_dim)),
        )

    @override
    def configure_optimizers(self) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
        """Two Adams (fused where allowed): the actor's (with the temperature as a second group), the critics'."""
        hp = self.hparams
        actor_groups = [{"params": list(self.actor.parameters()), "lr": hp.actor_lr, "base_lr": hp.actor_lr}]
        if hp.entropy_coef is None:
            actor_groups.append({"params": [self.log_alpha], "lr": hp.alpha_lr, "base_lr": hp.alpha_lr})
        critic_groups = [
            {"params": list(self.critic.parameters()), "lr": hp.critic_lr, "base_lr": hp.critic_lr}
        ]
        fused = self.fused_optimizers
        return torch.optim.Adam(actor_groups, fused=fused), torch.optim.Adam(critic_groups, fused=fused)

    # ----- acting -------------------------------------------------------------------------------------------
    @override
    def explore(self, observation: torch.Tensor) -> torch.Tensor:
        return squashed_sample(*self.actor(observation))[0]

    def policy(self, observation: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        """Evaluation actions: ``tanh`` of the Gaussian's mean (deterministic), or a sample, in env units."""
        return self.scale.to_env(squashed_sample(*self.actor(observation), deterministic=deterministic)[0])

    # ----- learning -----------------------------------------------------------------------------------------
    @override
    def update(self, batch: TensorDict) -> dict[str, torch.Tensor]:
        hp = self.hparams
        actor_opt, critic_opt = self.optimizers()
        n = batch.batch_size[0]
        for opt in (actor_opt, critic_opt):
            for group in opt.optimizer.param_groups:
                group["lr"] = self.learning_rate(group["base_lr"], n)
        obs, next_obs = batch["observation"], batch["next", "observation"]
        action = self.scale.to_normalized(batch["action"])
        alpha = self.log_alpha.detach().exp()
        distributed = self.trainer.world_size > 1

        # 1. critic target: min of the target critics at a' ~ π(·|s') minus the entropy term, bootstrapped
        with torch.no_grad():
            next_action, next_log_prob = squashed_sample(*self.actor(next_obs))
            next_q = self.critic_target(next_obs, next_action)
            target = soft_q_target(
                batch["next", "reward"], batch["bootstrap_discount"], next_q, next_log_prob, alpha
            )

        # 2. the critics' step
        q = self.critic(obs, action)
        critic_loss = loss_critic(q, target)
        critic_opt.zero_grad()
        self.manual_backward(
            critic_loss + (ddp_reach([*self.actor.parameters(), self.log_alpha]) if distributed else 0.0)
        )
        critic_opt.step()

        # 3. actor (reparameterized actions through the updated critics' detached weights) and temperature
        new_action, log_prob = squashed_sample(*self.actor(obs))
        actor_loss = loss_actor(alpha, log_prob, self.critic(obs, new_action, detach_params=True))
        loss = actor_loss + (ddp_reach(self.critic.parameters()) if distributed else 0.0)
        if hp.entropy_coef is None:
            loss = loss + loss_alpha(self.log_alpha, log_prob, self.target_entropy)
        actor_opt.zero_grad()
        self.manual_backward(loss)
        actor_opt.step()
        self.updates += 1
        self.policy_version += 1

        # 4. targets
        self.polyak(self.critic_target, self.critic, n)
        return {
            "train/critic_loss": critic_loss.detach(),
            "train/actor_loss": actor_loss.detach(),
            "train/alpha": alpha,
            "train/entropy": -log_prob.detach().mean(),
            "train/q_mean": q.detach().mean(),
        }
