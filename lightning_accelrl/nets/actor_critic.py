"""Actor-critic networks and the action distributions policy-gradient algorithms need."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from lightning_accelrl.envs.base import EnvSpec
from lightning_accelrl.nets.mlp import MLP, flatten_obs


class ActorCriticMLP(nn.Module):
    """Separate (default) or shared MLP trunks for policy and value.

    Discrete actions: categorical logits. Continuous actions: Gaussian mean with a state-independent log-std.
    """

    def __init__(
        self,
        spec: EnvSpec,
        hidden: Sequence[int] = (64, 64),
        activation: str = "tanh",
        shared: bool = False,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.obs_ndim = len(spec.observation_shape)
        in_dim = math.prod(spec.observation_shape)
        out = spec.num_actions if spec.discrete else spec.action_dim
        self.shared = shared
        if shared:
            self.trunk = MLP(in_dim, hidden, activation=activation)
            self.policy_head = MLP(self.trunk.out_dim, (), out, out_gain=0.01)
            self.value_head = MLP(self.trunk.out_dim, (), 1, out_gain=1.0)
        else:
            self.policy_head = MLP(in_dim, hidden, out, activation, out_gain=0.01)
            self.value_head = MLP(in_dim, hidden, 1, activation, out_gain=1.0)
        if not spec.discrete:
            self.log_std = nn.Parameter(torch.zeros(spec.action_dim))

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(policy parameters, state value [..., 1]) for observations [..., *obs_shape]."""
        x = flatten_obs(obs, self.obs_ndim)
        if self.shared:
            x = self.trunk(x)
        return self.policy_head(x), self.value_head(x)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        x = flatten_obs(obs, self.obs_ndim)
        return self.value_head(self.trunk(x) if self.shared else x)


class ActionDist:
    """Sampling, log-probabilities and entropy for categorical or diagonal-Gaussian policies.

    Written out instead of ``torch.distributions``: its argument validation and object construction cost
    more than the tiny networks' forward pass in the sampler's per-step path.
    """

    def __init__(self, params: torch.Tensor, log_std: torch.Tensor | None = None) -> None:
        self.discrete = log_std is None
        if self.discrete:
            self.logits = params - params.logsumexp(-1, keepdim=True)
        else:
            self.mean, self.log_std = params, log_std.expand_as(params)

    def sample(self) -> torch.Tensor:
        if self.discrete:
            u = torch.rand_like(self.logits).clamp_(1e-20, 1.0)
            return (self.logits - (-u.log()).log()).argmax(-1)  # Gumbel-max
        return self.mean + self.log_std.exp() * torch.randn_like(self.mean)

    def mode(self) -> torch.Tensor:
        return self.logits.argmax(-1) if self.discrete else self.mean

    def log_prob(self, action: torch.Tensor) -> torch.Tensor:
        if self.discrete:
            return self.logits.gather(-1, action.long().unsqueeze(-1)).squeeze(-1)
        z = (action - self.mean) / self.log_std.exp()
        return (-0.5 * z.pow(2) - self.log_std - 0.5 * math.log(2 * math.pi)).sum(-1)

    def entropy(self) -> torch.Tensor:
        if self.discrete:
            return -(self.logits.exp() * self.logits).sum(-1)
        return (self.log_std + 0.5 * math.log(2 * math.pi * math.e)).sum(-1)
