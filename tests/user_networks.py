"""Networks as a user would write them, against lightning_accelrl.nets.interfaces (built as ``cls(spec=..., ...)``)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from lightning_accelrl.envs import EnvSpec


class TinyActorCritic(nn.Module):
    """Shared tanh trunk, logits and value heads (discrete actions)."""

    def __init__(self, spec: EnvSpec, hidden: int = 32) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(math.prod(spec.observation_shape), hidden), nn.Tanh())
        self.logits = nn.Linear(hidden, spec.num_actions)
        self.critic = nn.Linear(hidden, 1)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.trunk(obs.flatten(1).float())
        return self.logits(x), self.critic(x)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(self.trunk(obs.flatten(1).float()))


class RecordedActorCritic(TinyActorCritic):
    """The same network, recording its constructor arguments: its checkpoints rebuild it by themselves."""

    def __init__(self, spec: EnvSpec, hidden: int = 32) -> None:
        super().__init__(spec, hidden)
        self.init_args: dict[str, Any] = {"hidden": hidden}


class TinyQ(nn.Module):
    """Q-values [N, num_actions]; ``num_atoms`` > 0: C51 logits [N, num_actions, num_atoms]."""

    def __init__(self, spec: EnvSpec, hidden: int = 64, num_atoms: int = 0) -> None:
        super().__init__()
        self.shape = (spec.num_actions, num_atoms) if num_atoms else (spec.num_actions,)
        self.net = nn.Sequential(
            nn.Linear(math.prod(spec.observation_shape), hidden),
            nn.ReLU(),
            nn.Linear(hidden, math.prod(self.shape)),
        )

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs.flatten(1).float()).reshape(-1, *self.shape)


# ----- off-policy continuous control (SAC, TD3, DDPG) --------------------------------------------------------
class LayerNormCritic(nn.Module):
    """Q(s, a) [N, 1] with LayerNorm after each hidden layer (as in DroQ and RLPD critics)."""

    def __init__(self, spec: EnvSpec, hidden: int = 64) -> None:
        super().__init__()
        width = math.prod(spec.observation_shape) + spec.action_dim
        self.net = nn.Sequential(
            nn.Linear(width, hidden), nn.LayerNorm(hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.LayerNorm(hidden), nn.ReLU(),
            nn.Linear(hidden, 1),
        )  # fmt: skip

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([obs.flatten(1).float(), action], -1))


class RecordedLayerNormCritic(LayerNormCritic):
    """The same critic, recording its constructor arguments: SAC and TD3 build their second critic from them."""

    def __init__(self, spec: EnvSpec, hidden: int = 64) -> None:
        super().__init__(spec, hidden)
        self.init_args: dict[str, Any] = {"hidden": hidden}


class GaussianActor(nn.Module):
    """SAC's actor: (mean, log-std clamped to [-20, 2]) of the pre-squash Gaussian, each [N, action_dim]."""

    def __init__(self, spec: EnvSpec, hidden: int = 64) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(math.prod(spec.observation_shape), hidden), nn.ReLU())
        self.mean = nn.Linear(hidden, spec.action_dim)
        self.log_std = nn.Linear(hidden, spec.action_dim)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(obs.flatten(1).float())
        return self.mean(h), self.log_std(h).clamp(-20.0, 2.0)


class TanhActor(nn.Module):
    """TD3's and DDPG's actor: tanh(MLP(obs)) in [-1, 1], [N, action_dim]."""

    def __init__(self, spec: EnvSpec, hidden: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(math.prod(spec.observation_shape), hidden),
            nn.ReLU(),
            nn.Linear(hidden, spec.action_dim),
        )

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(obs.flatten(1).float()))
