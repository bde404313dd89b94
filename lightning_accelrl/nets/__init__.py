"""Networks: MLPs and actor-critic heads (CNN encoders arrive with the Atari work)."""

from lightning_accelrl.nets.actor_critic import ActionDist, ActorCriticMLP
from lightning_accelrl.nets.mlp import MLP, layer_init

__all__ = ["MLP", "ActionDist", "ActorCriticMLP", "layer_init"]
