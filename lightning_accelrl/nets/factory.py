"""Pick the actor-critic network for an env: MLP for vector observations, a CNN for image observations."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from lightning_accelrl.envs.base import EnvSpec
from lightning_accelrl.errors import ConfigError
from lightning_accelrl.nets.actor_critic import ActorCriticMLP

NETWORKS = ("auto", "mlp", "nature_cnn", "impala_cnn")


def is_image(spec: EnvSpec) -> bool:
    """Stacked frames [C, H, W] (e.g. 4x84x84 uint8 from Atari)."""
    return len(spec.observation_shape) == 3


def build_actor_critic(
    spec: EnvSpec,
    network: str = "auto",
    hidden: Sequence[int] = (64, 64),
    activation: str = "tanh",
    shared_trunk: bool = False,
    channels_last: bool = False,
    compile: bool = False,
) -> nn.Module:
    """An actor-critic module with ``forward(obs) -> (policy params, value)``, ``value(obs)`` and ``spec``.

    ``auto``: the Nature CNN for image observations ([C, H, W], e.g. Atari's 4x84x84 uint8), else an MLP.
    ``hidden``/``activation``/``shared_trunk`` apply to the MLP; ``channels_last``/``compile`` to the CNNs.
    """
    if network not in NETWORKS:
        raise ConfigError(f"unknown network {network!r}; choose one of {', '.join(NETWORKS)}")
    if network == "auto":
        network = "nature_cnn" if is_image(spec) else "mlp"
    if network == "mlp":
        return ActorCriticMLP(spec, hidden, activation, shared_trunk)
    if not is_image(spec):
        raise ConfigError(
            f"network {network!r} needs image observations [C, H, W], got shape {spec.observation_shape}"
        )
    from lightning_accelrl.nets.cnn import ActorCriticCNN

    return ActorCriticCNN(spec, network.removesuffix("_cnn"), channels_last=channels_last, compile=compile)
