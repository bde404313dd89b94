"""Networks for off-policy continuous control (SAC, TD3, DDPG): a critic ensemble and two kinds of actors.

Actions cross these networks in the *normalized* space ``[-1, 1]^d``; :class:`ActionScale` maps them to the env's
Box bounds and back (replay stores what the env received). The critics of an ensemble (TD3's and SAC's twin Q)
run as one batched matmul per layer (``baddbmm`` over stacked weights), not one small forward per critic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lightning_accelrl.envs.base import EnvSpec
from lightning_accelrl.errors import ConfigError
from lightning_accelrl.nets.mlp import ACTIVATIONS, OutputLinear, flatten_obs, in_float32

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0  # the squashed Gaussian's log-std range, mode "tanh" (as CleanRL's SAC)
CLAMP_LOG_STD_MIN = -20.0  # mode "clamp" (the SAC authors' code, Stable-Baselines3, Spinning Up): [-20, 2]
LOG_STD_MODES = ("tanh", "clamp")


def check_log_std_mode(mode: str) -> None:
    """``mode`` is one of :data:`LOG_STD_MODES`, else a one-line ``ConfigError``."""
    if mode not in LOG_STD_MODES:
        raise ConfigError(f"log_std_mode must be one of {', '.join(LOG_STD_MODES)}, got {mode!r}")


def observation_features(obs: torch.Tensor, spec: EnvSpec) -> torch.Tensor:
    """Observations as flat float features (uint8 images scaled to [0, 1])."""
    x = flatten_obs(obs, len(spec.observation_shape))
    return x / 255.0 if spec.observation_dtype == torch.uint8 else x


class ActionScale(nn.Module):
    """The affine map between normalized actions ``[-1, 1]`` and the env's Box ``[low, high]``."""

    def __init__(self, spec: EnvSpec) -> None:
        super().__init__()
        low = torch.tensor(spec.action_low, dtype=torch.float32)
        high = torch.tensor(spec.action_high, dtype=torch.float32)
        if not (torch.isfinite(low).all() and torch.isfinite(high).all()):
            raise ConfigError(
                f"off-policy continuous control squashes actions into the action space's bounds, but they are "
                f"not finite (low {spec.action_low}, high {spec.action_high}): wrap the env with "
                "gymnasium.wrappers.RescaleAction or ClipAction to bounded actions"
            )
        # persistent=False: derived from the env spec, which the checkpoint stores
        self.register_buffer("center", (high + low) / 2, persistent=False)
        self.register_buffer("half_range", (high - low) / 2, persistent=False)

    def to_env(self, normalized: torch.Tensor) -> torch.Tensor:
        return normalized * self.half_range + self.center

    def to_normalized(self, action: torch.Tensor) -> torch.Tensor:
        return (action - self.center) / self.half_range


class EnsembleLinear(nn.Module):
    """``size`` independent linear layers applied to ``[size, N, in]`` in one ``baddbmm``.

    Each member is initialised as ``nn.Linear`` would be (uniform in ±1/√in for weights and biases).
    ``output=True``: the critics' output layer, float32 even under autocast (as ``OutputLinear``).
    """

    def __init__(self, size: int, in_features: int, out_features: int, output: bool = False) -> None:
        super().__init__()
        self.output = output
        bound = 1.0 / math.sqrt(in_features)
        self.weight = nn.Parameter(torch.empty(size, in_features, out_features).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(size, 1, out_features).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor, detach: bool = False) -> torch.Tensor:
        w, b = (self.weight.detach(), self.bias.detach()) if detach else (self.weight, self.bias)
        if self.output:
            return in_float32(lambda h: torch.baddbmm(b, h, w), x)
        return torch.baddbmm(b, x, w)


class CriticEnsemble(nn.Module):
    """``size`` Q-networks ``Q_i(s, a)`` (MLP over the observation features and the normalized action).

    ``forward(obs, action)`` returns ``[size, N]``. ``detach_params=True`` evaluates the critics with their
    weights detached: gradients reach the action (the actor's loss) but never the critics.
    """

    def __init__(
        self, spec: EnvSpec, size: int = 2, hidden: Sequence[int] = (256, 256), activation: str = "relu"
    ) -> None:
        super().__init__()
        self.spec, self.size = spec, size
        widths = [math.prod(spec.observation_shape) + spec.action_dim, *hidden, 1]
        pairs = list(zip(widths[:-1], widths[1:]))
        self.layers = nn.ModuleList(
            EnsembleLinear(size, i, o, output=k == len(pairs) - 1) for k, (i, o) in enumerate(pairs)
        )
        self.activation = ACTIVATIONS[activation]()

    def forward(self, obs: torch.Tensor, action: torch.Tensor, detach_params: bool = False) -> torch.Tensor:
        x = torch.cat([observation_features(obs, self.spec), action], -1)
        x = x.unsqueeze(0).expand(self.size, *x.shape)
        for i, layer in enumerate(self.layers):
            x = layer(x, detach=detach_params)
            if i < len(self.layers) - 1:
                x = self.activation(x)
        return x.squeeze(-1)


class CriticList(nn.Module):
    """A user's critics (each ``q(obs, action) -> [N, 1]``, see ``nets.interfaces.ContinuousQNetwork``) called as
    :class:`CriticEnsemble` is: ``forward(obs, action, detach_params=False) -> [size, N]`` in float32, one critic
    after the other.
    """

    def __init__(self, critics: Sequence[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(critics)

    def forward(self, obs: torch.Tensor, action: torch.Tensor, detach_params: bool = False) -> torch.Tensor:
        values = []
        for critic in self.members:
            if detach_params:  # the weights as constants: gradients reach the action, never the critic
                weights = {name: p.detach() for name, p in critic.named_parameters()}
                q = torch.func.functional_call(critic, weights, (obs, action))
            else:
                q = critic(obs, action)
            values.append(q.reshape(obs.shape[0]).float())
        return torch.stack(values)


def mlp_trunk(in_dim: int, hidden: Sequence[int], activation: str) -> tuple[nn.Sequential, int]:
    """Linear + activation layers (PyTorch's default init, as SB3's and CleanRL's off-policy actors)."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(in_dim, width), ACTIVATIONS[activation]()]
        in_dim = width
    return nn.Sequential(*layers), in_dim


class SquashedGaussianActor(nn.Module):
    """SAC's policy: a Gaussian over pre-squash actions ``u``, squashed by ``tanh`` into ``[-1, 1]``.

    ``forward(obs)`` returns (mean, log_std) of ``u``. ``log_std_mode`` bounds the log-std head's output ``x``:
    ``"tanh"`` maps it smoothly into ``[-5, 2]`` (``-5 + 3.5·(tanh(x) + 1)``, CleanRL's SAC; the std starts near
    0.22), ``"clamp"`` clips it to ``[-20, 2]`` (the SAC authors' code, Stable-Baselines3 and Spinning Up; the std
    starts near 1).
    """

    def __init__(
        self,
        spec: EnvSpec,
        hidden: Sequence[int] = (256, 256),
        activation: str = "relu",
        log_std_mode: str = "tanh",
    ) -> None:
        super().__init__()
        check_log_std_mode(log_std_mode)
        self.spec, self.log_std_mode = spec, log_std_mode
        self.trunk, width = mlp_trunk(math.prod(spec.observation_shape), hidden, activation)
        self.mean = OutputLinear(width, spec.action_dim)
        self.log_std = OutputLinear(width, spec.action_dim)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(observation_features(obs, self.spec))
        x = self.log_std(h)
        if self.log_std_mode == "clamp":
            return self.mean(h), x.clamp(CLAMP_LOG_STD_MIN, LOG_STD_MAX)
        return self.mean(h), LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (torch.tanh(x) + 1)


def squashed_sample(
    mean: torch.Tensor, log_std: torch.Tensor, deterministic: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """(``a = tanh(u)``, ``log π(a|s)``) for ``u ~ N(mean, exp(log_std))`` (reparameterized).

    The change of variables subtracts ``Σ log(1 − tanh²(u))``, written as ``2·(log 2 − u − softplus(−2u))``,
    which stays finite where ``tanh(u)`` rounds to ±1 (SAC paper, appendix C).
    """
    u = mean if deterministic else mean + log_std.exp() * torch.randn_like(mean)
    gaussian = (-0.5 * ((u - mean) / log_std.exp()).pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
    correction = (2.0 * (math.log(2.0) - u - F.softplus(-2.0 * u))).sum(-1)
    return torch.tanh(u), gaussian - correction


class DeterministicActor(nn.Module):
    """TD3's and DDPG's policy: ``μ(s) = tanh(MLP(s))`` in ``[-1, 1]``."""

    def __init__(self, spec: EnvSpec, hidden: Sequence[int] = (256, 256), activation: str = "relu") -> None:
        super().__init__()
        self.spec = spec
        self.trunk, width = mlp_trunk(math.prod(spec.observation_shape), hidden, activation)
        self.out = OutputLinear(width, spec.action_dim)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.out(self.trunk(observation_features(obs, self.spec))))
