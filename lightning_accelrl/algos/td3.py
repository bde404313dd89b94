"""TD3 (Fujimoto et al., 2018) and DDPG (Lillicrap et al., 2016) as its settings, as LightningModules.

TD3: twin Q-networks whose minimum forms the target, target-policy smoothing (clipped Gaussian noise on the
target actor's action), and delayed updates of the actor and of both targets (every ``policy_delay`` critic
updates). DDPG is TD3 with one critic, no smoothing and no delay. Exploration adds Gaussian noise of std
``exploration_noise`` (in units of half the action range) to the deterministic actor. The data module's
sample-to-insert limiter sets the replay ratio: ``replay_ratio / batch_size`` updates per env step.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from tensordict import TensorDict
from torch import nn
from typing_extensions import override

from lightning_accelrl.algos.large_batch import LrScaling
from lightning_accelrl.algos.off_policy import (
    NETWORK_ARGS,
    OffPolicyContinuous,
    check_common_arguments,
    loss_critic,
    td_target,
)
from lightning_accelrl.envs.base import EnvSpec
from lightning_accelrl.errors import check
from lightning_accelrl.nets.continuous import DeterministicActor
from lightning_accelrl.nets.factory import build_continuous_actor
from lightning_accelrl.nets.interfaces import NetworkArg


def smoothed_target_action(action: torch.Tensor, noise_std: float, noise_clip: float) -> torch.Tensor:
    """``clip(μ'(s') + clip(ε, −c, c), −1, 1)`` with ``ε ~ N(0, σ̃)``: target-policy smoothing."""
    if noise_std <= 0:
        return action
    noise = (torch.randn_like(action) * noise_std).clamp(-noise_clip, noise_clip)
    return (action + noise).clamp(-1.0, 1.0)


def loss_deterministic_actor(q_new: torch.Tensor) -> torch.Tensor:
    """``−E[Q_1(s, μ(s))]``: the first critic scores the actor's action (``q_new`` [E, N])."""
    return -q_new[0].mean()


class TD3(OffPolicyContinuous):
    """TD3 on replay tables, for Box action spaces with finite bounds.

    ``actor_network``/``critic_network``: ``"mlp"`` (sized by ``actor_hidden``/``critic_hidden``/``activation``),
    or the user's networks (``nets.interfaces``: ``DeterministicPolicyNetwork``, ``ContinuousQNetwork``).
    """

    def __init__(
        self,
        actor_lr: float = 1e-3,
        critic_lr: float = 1e-3,
        anneal_lr: bool = False,
        gamma: float = 0.99,
        n_step: int = 1,
        bootstrap_truncated: bool = True,
        updates_per_batch: int = 1,
        tau: float = 0.005,
        policy_delay: int = 2,
        target_policy_noise: float = 0.2,
        target_noise_clip: float = 0.5,
        exploration_noise: float = 0.1,
        num_critics: int = 2,
        random_steps: int = 100,
        actor_hidden: Sequence[int] = (256, 256),
        critic_hidden: Sequence[int] = (256, 256),
        activation: str = "relu",
        actor_network: NetworkArg = "mlp",
        critic_network: NetworkArg = "mlp",
        lr_scaling: LrScaling = "none",
        reference_batch_size: int = 256,
        env_spec: dict | None = None,
    ) -> None:
        super().__init__(actor_network, critic_network)
        check(actor_lr > 0 and critic_lr > 0, f"learning rates must be > 0, got {actor_lr}, {critic_lr}")
        check_common_arguments(
            gamma, n_step, tau, num_critics, random_steps, lr_scaling, reference_batch_size, updates_per_batch
        )
        check(policy_delay >= 1, f"policy_delay must be >= 1, got {policy_delay}")
        check(target_policy_noise >= 0, f"target_policy_noise must be >= 0, got {target_policy_noise}")
        check(target_noise_clip >= 0, f"target_noise_clip must be >= 0, got {target_noise_clip}")
        check(exploration_noise >= 0, f"exploration_noise must be >= 0, got {exploration_noise}")
        self.save_hyperparameters(ignore=NETWORK_ARGS)
        self.store_network_arguments()

    @override
    def build_actor(self, spec: EnvSpec, given: nn.Module | None) -> nn.Module:
        hp = self.hparams
        actor = build_continuous_actor(
            spec,
            hp.actor_network,
            given,
            lambda: DeterministicActor(spec, hp.actor_hidden, hp.activation),
            f"{type(self).__name__}'s actor",
            ((2, spec.action_dim),),
        )
        self.actor_target = copy.deepcopy(actor).requires_grad_(False)
        return actor

    @override
    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        """Two Adams (fused where allowed): the critics step every update, the actor every ``policy_delay`` updates."""
        hp = self.hparams
        return [
            torch.optim.Adam(self.actor.parameters(), lr=hp.actor_lr, fused=self.fused_optimizers),
            torch.optim.Adam(self.critic.parameters(), lr=hp.critic_lr, fused=self.fused_optimizers),
        ]

    # ----- acting -------------------------------------------------------------------------------------------
    @override
    def explore(self, observation: torch.Tensor) -> torch.Tensor:
        action = self.actor(observation)
        noise = torch.randn_like(action) * self.hparams.exploration_noise
        return (action + noise).clamp(-1.0, 1.0)

    def policy(self, observation: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        """Evaluation actions in env units: the actor's (deterministic) or with exploration noise."""
        return self.scale.to_env(self.actor(observation) if deterministic else self.explore(observation))

    # ----- learning -----------------------------------------------------------------------------------------
    @override
    def update(self, batch: TensorDict) -> dict[str, torch.Tensor]:
        hp = self.hparams
        actor_opt, critic_opt = self.optimizers()
        n = batch.batch_size[0]
        actor_opt.optimizer.param_groups[0]["lr"] = self.learning_rate(hp.actor_lr, n)
        critic_opt.optimizer.param_groups[0]["lr"] = self.learning_rate(hp.critic_lr, n)
        obs, next_obs = batch["observation"], batch["next", "observation"]
        action = self.scale.to_normalized(batch["action"])
        update_actor = (self.updates + 1) % hp.policy_delay == 0

        # 1. critic target: min of the target critics at the smoothed target action
        with torch.no_grad():
            next_action = smoothed_target_action(
                self.actor_target(next_obs), hp.target_policy_noise, hp.target_noise_clip
            )
            next_q = self.critic_target(next_obs, next_action).min(0).values
            target = td_target(batch["next", "reward"], batch["bootstrap_discount"], next_q)
        q = self.critic(obs, action)
        critic_loss = loss_critic(q, target)
        loss = critic_loss

        # 2. actor, every policy_delay updates, through the critics' detached weights (one backward for both).
        # Under DDP the actor's loss is in every backward (scaled by 0 between its updates): DDP's reducer
        # expects a gradient for every parameter of every backward.
        actor_loss = None
        if update_actor or self.trainer.world_size > 1:
            actor_loss = loss_deterministic_actor(self.critic(obs, self.actor(obs), detach_params=True))
            loss = loss + (actor_loss if update_actor else 0.0 * actor_loss)
        actor_opt.zero_grad()
        critic_opt.zero_grad()
        self.manual_backward(loss)
        critic_opt.step()
        if update_actor:
            actor_opt.step()
        self.updates += 1
        self.policy_version += 1

        # 3. targets follow the actor's schedule
        if update_actor:
            self.polyak(self.critic_target, self.critic, n)
            self.polyak(self.actor_target, self.actor, n)
        metrics = {"train/critic_loss": critic_loss.detach(), "train/q_mean": q.detach().mean()}
        if update_actor:
            metrics["train/actor_loss"] = actor_loss.detach()
        return metrics


class DDPG(TD3):
    """DDPG: TD3 with one critic, no target-policy smoothing and the actor updated every step (other arguments:
    :class:`TD3`'s)."""

    def __init__(
        self,
        policy_delay: int = 1,
        target_policy_noise: float = 0.0,
        target_noise_clip: float = 0.0,
        num_critics: int = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            policy_delay=policy_delay,
            target_policy_noise=target_policy_noise,
            target_noise_clip=target_noise_clip,
            num_critics=num_critics,
            **kwargs,
        )
