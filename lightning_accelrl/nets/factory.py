"""Pick the actor-critic network for an env: MLP for vector observations, a CNN for image observations."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from lightning_accelrl.envs.base import EnvSpec
from lightning_accelrl.errors import ConfigError
from lightning_accelrl.nets.actor_critic import ActorCriticMLP

NETWORKS = ("auto", "mlp")


def is_image(spec: EnvSpec) -> bool:
    """Stacked frames [C, H, W] (e.g. 4x84x84 uint8 from Atari)."""
    return len(spec.observation_shape) == 3


def build_actor_critic(
    spec: EnvSpec,
    network: str = "auto",
    hidden: Sequence[int] = (64, 64),
    activation: str = "tanh",
    shared_trunk: bool = False,
) -> nn.Module:
    """An actor-critic module with ``forward(obs) -> (policy params, value)``, ``value(obs)`` and ``spec``."""
    if network not in NETWORKS:
        raise ConfigError(f"unknown network {network!r}; choose one of {', '.join(NETWORKS)}")
    if network == "auto":
        network = "mlp"
    return ActorCriticMLP(spec, hidden, activation, shared_trunk)
