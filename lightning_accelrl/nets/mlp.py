"""Multi-layer perceptrons with the orthogonal initialisation policy-gradient methods are tuned for."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn
from typing_extensions import override

ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU, "gelu": nn.GELU}


def layer_init(layer: nn.Linear, gain: float = math.sqrt(2), bias: float = 0.0) -> nn.Linear:
    """Orthogonal weights, constant bias (as in the PPO implementation details of Huang et al., 2022)."""
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.constant_(layer.bias, bias)
    return layer


class OutputLinear(nn.Linear):
    """A network's output layer (logits, values, Q-values, action means): float32 even under autocast.

    Under ``bf16-mixed`` autocast would hand back the outputs in bfloat16, whose 8-bit mantissa rounds a Q-value
    of 300 to steps of 2 and a log-probability to ~1% (noise in PPO's ratio); this layer casts its input features
    up and runs in float32 instead. It is small next to the network it ends, so the update stays bf16-fast. Without
    autocast it is ``nn.Linear`` (same parameters, init and state-dict keys).
    """

    @override
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return in_float32(super().forward, x)


def in_float32(layer: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` in float32 even under autocast (``x`` cast up); without autocast, ``layer(x)`` as it is."""
    if torch.is_autocast_enabled(x.device.type):
        with torch.autocast(x.device.type, enabled=False):
            return layer(x.float())
    return layer(x)


class MLP(nn.Sequential):
    """``in_dim -> hidden... -> out_dim``; the last layer is an ``OutputLinear`` with its own init gain."""

    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int],
        out_dim: int | None = None,
        activation: str = "tanh",
        out_gain: float = 1.0,
    ) -> None:
        layers: list[nn.Module] = []
        last = in_dim
        for width in hidden:
            layers += [layer_init(nn.Linear(last, width)), ACTIVATIONS[activation]()]
            last = width
        if out_dim is not None:
            layers.append(layer_init(OutputLinear(last, out_dim), gain=out_gain))
            last = out_dim
        super().__init__(*layers)
        self.out_dim = last


def flatten_obs(obs: torch.Tensor, obs_ndim: int) -> torch.Tensor:
    """Flatten the observation dims, keeping the batch dims, and cast to float."""
    return obs.reshape(*obs.shape[: obs.dim() - obs_ndim], -1).float()


def policy_params(head: torch.Tensor, log_std: torch.Tensor | None) -> torch.Tensor:
    """What an actor-critic returns as policy parameters: the logits (``log_std`` None), or for continuous
    actions the mean and the log-std side by side ``[..., 2 * action_dim]``."""
    return head if log_std is None else torch.cat([head, log_std.expand_as(head)], -1)
