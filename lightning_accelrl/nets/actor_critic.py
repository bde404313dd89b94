"""Actor-critic networks and the action distributions policy-gradient algorithms need."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from lightning_accelrl.envs.base import EnvSpec
from lightning_accelrl.nets.mlp import MLP, flatten_obs, policy_params

#: how a Gaussian policy's log-std is parameterised (the ``log_std`` option of PPO, A2C and APPO)
LOG_STD_KINDS = ("state_independent", "state_dependent")
#: the range a state-dependent log-std is clamped to (std from 2e-9 to 7.4)
LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0


class ActorCriticMLP(nn.Module):
    """Separate (default) or shared MLP trunks for policy and value.

    Discrete actions: categorical logits (MultiDiscrete: one block of logits per dimension). Continuous actions:
    Gaussian mean and log-std, returned side by side as the policy parameters. The log-std is one parameter per
    action dimension (``log_std="state_independent"``) or a second output of the policy head clamped to
    [``LOG_STD_MIN``, ``LOG_STD_MAX``] (``"state_dependent"``); either starts at ``log_std_init``.
    ``encoder``: a module run first (e.g. the per-key encoder of Dict observations with images), with ``out_dim``.
    """

    def __init__(
        self,
        spec: EnvSpec,
        hidden: Sequence[int] = (64, 64),
        activation: str = "tanh",
        shared: bool = False,
        encoder: nn.Module | None = None,
        log_std: str = "state_independent",
        log_std_init: float = 0.0,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.obs_ndim = len(spec.observation_shape)
        self.encoder = encoder
        in_dim = math.prod(spec.observation_shape) if encoder is None else encoder.out_dim
        self.state_dependent_std = not spec.discrete and log_std == "state_dependent"
        out = spec.num_actions if spec.discrete else spec.action_dim * (2 if self.state_dependent_std else 1)
        self.shared = shared
        if shared:
            self.trunk = MLP(in_dim, hidden, activation=activation)
            self.policy_head = MLP(self.trunk.out_dim, (), out, out_gain=0.01)
            self.value_head = MLP(self.trunk.out_dim, (), 1, out_gain=1.0)
        else:
            self.policy_head = MLP(in_dim, hidden, out, activation, out_gain=0.01)
            self.value_head = MLP(in_dim, hidden, 1, activation, out_gain=1.0)
        self.log_std = None
        if self.state_dependent_std:  # the head's log-std half starts near log_std_init (small weights)
            nn.init.constant_(self.policy_head[-1].bias[spec.action_dim :], log_std_init)
        elif not spec.discrete:
            self.log_std = nn.Parameter(torch.full((spec.action_dim,), float(log_std_init)))

    def _input(self, obs: torch.Tensor) -> torch.Tensor:
        x = flatten_obs(obs, self.obs_ndim)
        if self.encoder is not None:
            x = self.encoder(x)
        return self.trunk(x) if self.shared else x

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(policy parameters, state value [..., 1]) for observations [..., *obs_shape]."""
        x = self._input(obs)
        head = self.policy_head(x)
        if self.state_dependent_std:
            mean, log_std = head.chunk(2, -1)
            head = torch.cat([mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)], -1)
        return policy_params(head, self.log_std), self.value_head(x)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.value_head(self._input(obs))


class ActionDist:
    """Sampling, log-probabilities and entropy for categorical, multi-categorical or diagonal-Gaussian policies.

    Written out instead of ``torch.distributions``: its argument validation and object construction cost
    more than the tiny networks' forward pass in the sampler's per-step path.
    """

    def __init__(
        self, params: torch.Tensor, log_std: torch.Tensor | None = None, nvec: Sequence[int] = ()
    ) -> None:
        self.discrete = log_std is None
        self.nvec = tuple(nvec)
        if self.nvec:  # one categorical per action dimension, normalised block by block
            self.blocks = [b - b.logsumexp(-1, keepdim=True) for b in params.split(self.nvec, -1)]
        elif self.discrete:
            self.logits = params - params.logsumexp(-1, keepdim=True)
        else:
            self.mean, self.log_std = params, log_std.expand_as(params)

    @classmethod
    def from_params(cls, params: torch.Tensor, spec: EnvSpec) -> ActionDist:
        """The distribution an actor-critic's policy parameters describe for ``spec``'s action space."""
        if not spec.discrete:
            mean, log_std = params.chunk(2, -1)
            return cls(mean, log_std)
        return cls(params, nvec=spec.action_nvec)

    @staticmethod
    def _gumbel_max(logits: torch.Tensor) -> torch.Tensor:
        u = torch.rand_like(logits).clamp_(1e-20, 1.0)
        return (logits - (-u.log()).log()).argmax(-1)

    def sample(self) -> torch.Tensor:
        if self.nvec:
            return torch.stack([self._gumbel_max(b) for b in self.blocks], -1)
        if self.discrete:
            return self._gumbel_max(self.logits)
        return self.mean + self.log_std.exp() * torch.randn_like(self.mean)

    def mode(self) -> torch.Tensor:
        if self.nvec:
            return torch.stack([b.argmax(-1) for b in self.blocks], -1)
        return self.logits.argmax(-1) if self.discrete else self.mean

    def log_prob(self, action: torch.Tensor) -> torch.Tensor:
        if self.nvec:
            a = action.long()
            return sum(b.gather(-1, a[..., i : i + 1]).squeeze(-1) for i, b in enumerate(self.blocks))
        if self.discrete:
            return self.logits.gather(-1, action.long().unsqueeze(-1)).squeeze(-1)
        z = (action - self.mean) / self.log_std.exp()
        return (-0.5 * z.pow(2) - self.log_std - 0.5 * math.log(2 * math.pi)).sum(-1)

    def entropy(self) -> torch.Tensor:
        if self.nvec:
            return sum(-(b.exp() * b).sum(-1) for b in self.blocks)
        if self.discrete:
            return -(self.logits.exp() * self.logits).sum(-1)
        return (self.log_std + 0.5 * math.log(2 * math.pi * math.e)).sum(-1)
