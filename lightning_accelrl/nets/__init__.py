"""Networks: MLPs, CNNs (Nature, IMPALA, small grids), actor-critic and Q heads, and the interfaces a user's own
network follows (:mod:`lightning_accelrl.nets.interfaces`)."""

from lightning_accelrl.nets.actor_critic import ActionDist, ActorCriticMLP
from lightning_accelrl.nets.interfaces import (
    ActorCriticNetwork,
    DistributionalQNetwork,
    NetworkArg,
    QValueNetwork,
    RecordsInitArgs,
)
from lightning_accelrl.nets.mlp import MLP, OutputLinear, layer_init

__all__ = [
    "MLP",
    "ActionDist",
    "ActorCriticMLP",
    "ActorCriticNetwork",
    "DistributionalQNetwork",
    "NetworkArg",
    "OutputLinear",
    "QValueNetwork",
    "RecordsInitArgs",
    "layer_init",
]
