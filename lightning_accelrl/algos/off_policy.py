"""What the off-policy continuous-control modules (SAC, TD3, DDPG) share, and their named loss terms.

Each algorithm file keeps its hyper-parameters, its actor and its update; this file holds the replay needs,
the critic ensemble and its Polyak target, uniform random actions for the first ``random_steps`` env steps
(pushed by the experience source), and the loss pieces both use (``loss_critic``, ``td_target``).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import torch
from tensordict import TensorDict
from torch import nn
from typing_extensions import override

from lightning_accelrl.algos.base import RLModule, annealed, replay_needs, replay_updates
from lightning_accelrl.algos.large_batch import scaled_lr, scaled_tau
from lightning_accelrl.data.needs import ExperienceNeeds
from lightning_accelrl.envs.base import EnvSpec
from lightning_accelrl.errors import check
from lightning_accelrl.nets.continuous import ActionScale, CriticEnsemble
from lightning_accelrl.nets.factory import (
    CONTINUOUS_NETWORKS,
    build_continuous_critics,
    check_continuous_builtin,
    network_argument,
)
from lightning_accelrl.nets.interfaces import NetworkArg

#: the network arguments of SAC, TD3 and DDPG (stored in the hyper-parameters by plain form)
NETWORK_ARGS = ["actor_network", "critic_network"]


def td_target(
    reward: torch.Tensor, bootstrap_discount: torch.Tensor, next_value: torch.Tensor
) -> torch.Tensor:
    """``r^(n) + γ^n·(1 − terminal)·V(s_{t+n})``; the replay item's ``bootstrap_discount`` holds ``γ^n`` or 0."""
    return reward.reshape(next_value.shape) + bootstrap_discount.reshape(next_value.shape) * next_value


def loss_critic(q: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared TD error of every critic of the ensemble (``q`` [E, N]) against one target [N], summed over
    critics (each critic's gradient is its own MSE's, as with separate losses)."""
    return (q - target.unsqueeze(0)).pow(2).mean(-1).sum()


def ddp_reach(params: Iterable[torch.Tensor]) -> torch.Tensor:
    """``0 ×`` the sum of ``params``: added to a loss that leaves them out, it gives each a zero gradient, because
    DDP's reducer expects a gradient for every parameter in every backward."""
    return 0.0 * sum(p.sum() for p in params if p.requires_grad)


def check_common_arguments(
    gamma: float,
    n_step: int,
    tau: float,
    num_critics: int,
    random_steps: int,
    lr_scaling: str,
    reference_batch_size: int,
    updates_per_batch: int,
) -> None:
    """The arguments SAC and TD3 share, each refused in one line (``ConfigError``)."""
    check(0 < gamma <= 1, f"gamma must be in (0, 1], got {gamma}")
    check(n_step >= 1, f"n_step must be >= 1, got {n_step}")
    check(0 < tau <= 1, f"tau must be in (0, 1], got {tau}")
    check(num_critics >= 1, f"num_critics must be >= 1, got {num_critics}")
    check(random_steps >= 0, f"random_steps must be >= 0, got {random_steps}")
    check(
        lr_scaling in ("none", "linear", "sqrt"),
        f"lr_scaling must be none, linear or sqrt, got {lr_scaling!r}",
    )
    check(reference_batch_size >= 1, f"reference_batch_size must be >= 1, got {reference_batch_size}")
    check(updates_per_batch >= 1, f"updates_per_batch must be >= 1, got {updates_per_batch}")


class OffPolicyContinuous(RLModule):
    """Base of SAC and TD3: ``self.critic`` (an ensemble of Q-networks) and ``self.critic_target``, the action
    scale, replay needs of n-step transitions with continuous actions, random warm-up actions and Polyak updates.

    Subclasses return their actor from :meth:`build_actor` and implement :meth:`explore` and :meth:`policy`.
    """

    def __init__(self, actor_network: NetworkArg, critic_network: NetworkArg) -> None:
        """``actor_network``, ``critic_network``: ``"mlp"`` (the built-in MLPs), an ``nn.Module`` or a class path
        with ``init_args`` (see ``nets.interfaces``). Subclasses call ``save_hyperparameters(ignore=NETWORK_ARGS)``
        and then :meth:`store_network_arguments`."""
        super().__init__()
        self.updates = 0
        # the plain forms for the hyper-parameters; self.actor / self.critic: the instances given, else None
        actor_plain, self.actor = network_argument(actor_network, "actor_network", CONTINUOUS_NETWORKS)
        critic_plain, self.critic = network_argument(critic_network, "critic_network", CONTINUOUS_NETWORKS)
        check_continuous_builtin(actor_plain, "actor_network")
        check_continuous_builtin(critic_plain, "critic_network")
        self._network_args = {"actor_network": actor_plain, "critic_network": critic_plain}

    def store_network_arguments(self) -> None:
        """The networks' plain forms (a name or a class path) in the hyper-parameters, never a module (nor a
        subclass's ``**kwargs`` holding one)."""
        self.hparams.update(self._network_args)

    # ----- what the data module must provide ------------------------------------------------------------
    @override
    def experience_needs(self) -> ExperienceNeeds:
        return replay_needs(self.hparams, actions="continuous")

    # ----- learning -----------------------------------------------------------------------------------------
    @override
    def training_step(self, batch: TensorDict, batch_idx: int) -> None:
        """One update per replay sample of the batch (``updates_per_batch`` of them), then the logs."""
        for sample in replay_updates(batch):
            metrics = self.update(sample)
        self.log_rollout_stats(metrics)

    def update(self, batch: TensorDict) -> dict[str, torch.Tensor]:
        """One update on a replay sample ``[B]``; returns the metrics to log."""
        raise NotImplementedError

    # ----- networks -----------------------------------------------------------------------------------------
    def build_networks(self, spec: EnvSpec) -> None:
        hp = self.hparams
        self.scale = ActionScale(spec)
        self.action_dim = spec.action_dim
        given = self.critic  # a critic_network instance, else None
        self.critic = build_continuous_critics(
            spec,
            hp.critic_network,
            given,
            hp.num_critics,
            lambda: CriticEnsemble(spec, hp.num_critics, hp.critic_hidden, hp.activation),
            type(self).__name__,
        )
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.actor = self.build_actor(spec, self.actor)

    def build_actor(self, spec: EnvSpec, given: nn.Module | None) -> nn.Module:
        """The actor for ``spec``: ``given`` (an ``actor_network`` instance), the user's class path or the
        built-in MLP."""
        raise NotImplementedError

    # ----- acting -------------------------------------------------------------------------------------------
    def act(self, observation: torch.Tensor) -> dict[str, torch.Tensor]:
        """Uniform random actions for the first ``random_steps`` env steps, then the exploring policy."""
        if self.env_steps < self.hparams.random_steps:
            shape = (observation.shape[0], self.action_dim)
            normalized = torch.rand(shape, device=observation.device) * 2 - 1
        else:
            normalized = self.explore(observation)
        return {"action": self.scale.to_env(normalized)}

    def explore(self, observation: torch.Tensor) -> torch.Tensor:
        """Exploring actions in ``[-1, 1]`` for a batch of observations."""
        raise NotImplementedError

    # ----- learning helpers ---------------------------------------------------------------------------------
    def learning_rate(self, lr: float, batch_size: int) -> float:
        """``lr``, scaled by the large-batch rule when ``lr_scaling`` is set (tuned at the reference batch), and
        decayed linearly to 0 over the env-step budget with ``anneal_lr`` (SB3's ``lin_<lr>`` schedules)."""
        hp = self.hparams
        scaled = scaled_lr(lr, batch_size, hp.reference_batch_size, hp.lr_scaling)  # "none": lr as it is
        return annealed(scaled, self.progress, hp.anneal_lr)

    @torch.no_grad()
    def polyak(self, target: nn.Module, online: nn.Module, batch_size: int) -> None:
        """``θ' ← (1 − τ)·θ' + τ·θ``; with ``lr_scaling`` set, τ keeps its time constant in env steps."""
        hp = self.hparams
        tau = hp.tau if hp.lr_scaling == "none" else scaled_tau(hp.tau, batch_size, hp.reference_batch_size)
        torch._foreach_lerp_(list(target.parameters()), list(online.parameters()), tau)

    # ----- checkpoints --------------------------------------------------------------------------------------
    @override
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["accelrl"]["updates"] = self.updates

    @override
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self.updates = int(checkpoint.get("accelrl", {}).get("updates", 0))
