"""Convolutional encoders for stacked frames and the actor-critic built on them.

Observations arrive as ``uint8 [..., C, H, W]`` (the rollout buffers and the host-to-device copies stay uint8,
4x smaller than float32) and are normalised inside the network: ``obs.float() / 255``.
Initialisation follows CleanRL's ``ppo_atari.py``: orthogonal weights (gain sqrt(2)) and zero biases in the
trunk, gain 0.01 for the policy head and 1 for the value head.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lightning_accelrl.envs.base import EnvSpec
from lightning_accelrl.nets.mlp import layer_init


def _normalise(obs: torch.Tensor, channels_last: bool) -> torch.Tensor:
    x = obs.float() / 255.0 if obs.dtype == torch.uint8 else obs.float()
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


class NatureCNN(nn.Module):
    """Mnih et al. (2015): conv 8x8/4 (32), 4x4/2 (64), 3x3/1 (64), linear 512; ReLU throughout."""

    def __init__(
        self, observation_shape: Sequence[int], features: int = 512, channels_last: bool = False
    ) -> None:
        super().__init__()
        c, h, w = observation_shape
        self.channels_last = channels_last
        self.convs = nn.Sequential(
            layer_init(nn.Conv2d(c, 32, 8, stride=4)),
            nn.ReLU(),
            layer_init(nn.Conv2d(32, 64, 4, stride=2)),
            nn.ReLU(),
            layer_init(nn.Conv2d(64, 64, 3, stride=1)),
            nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            flat = self.convs(torch.zeros(1, c, h, w)).shape[-1]
        self.fc = nn.Sequential(layer_init(nn.Linear(flat, features)), nn.ReLU())
        self.out_dim = features
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """``[N, C, H, W]`` (uint8 or float) -> ``[N, features]``."""
        return self.fc(self.convs(_normalise(obs, self.channels_last)))


class _ResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv1(torch.relu(self.conv0(torch.relu(x))))


class _ConvSequence(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.res0 = _ResidualBlock(out_channels)
        self.res1 = _ResidualBlock(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res1(self.res0(self.pool(self.conv(x))))


class ImpalaCNN(nn.Module):
    """Espeholt et al. (2018): three conv sequences (16, 32, 32 channels; each conv, max-pool, 2 residual
    blocks), ReLU, linear 256. Convs keep PyTorch's default init, as CleanRL's ``ppo_procgen.py``."""

    def __init__(
        self,
        observation_shape: Sequence[int],
        channels: Sequence[int] = (16, 32, 32),
        features: int = 256,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        c, h, w = observation_shape
        self.channels_last = channels_last
        seqs: list[nn.Module] = []
        for out in channels:
            seqs.append(_ConvSequence(c, out))
            c = out
        self.convs = nn.Sequential(*seqs, nn.ReLU(), nn.Flatten())
        with torch.no_grad():
            flat = self.convs(torch.zeros(1, *observation_shape)).shape[-1]
        self.fc = nn.Sequential(layer_init(nn.Linear(flat, features)), nn.ReLU())
        self.out_dim = features
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.fc(self.convs(_normalise(obs, self.channels_last)))


ENCODERS: dict[str, type[nn.Module]] = {"nature": NatureCNN, "impala": ImpalaCNN}


def build_encoder(name: str, observation_shape: Sequence[int], channels_last: bool = False) -> nn.Module:
    """``"nature"`` or ``"impala"`` (also accepted: ``"nature_cnn"``, ``"impala_cnn"``)."""
    key = name.removesuffix("_cnn")
    if key not in ENCODERS:
        raise ValueError(f"unknown CNN encoder {name!r}; choose nature or impala")
    if len(observation_shape) != 3:
        raise ValueError(f"CNN encoders need [C, H, W] observations, got shape {tuple(observation_shape)}")
    return ENCODERS[key](observation_shape, channels_last=channels_last)


def encode(encoder: nn.Module, obs: torch.Tensor, obs_ndim: int = 3) -> torch.Tensor:
    """Run ``encoder`` over any leading batch dims: ``[..., C, H, W]`` -> ``[..., features]``."""
    batch = obs.shape[: obs.dim() - obs_ndim]
    x = encoder(obs.reshape(-1, *obs.shape[obs.dim() - obs_ndim :]))
    return x.reshape(*batch, x.shape[-1])


class ActorCriticCNN(nn.Module):
    """Shared CNN trunk with a policy head and a value head (CleanRL's Atari agent).

    Same interface as :class:`~lightning_accelrl.nets.actor_critic.ActorCriticMLP`: ``forward(obs) ->
    (policy params, value [..., 1])``, ``value(obs)``, ``spec``, ``log_std`` for continuous actions.

    Args:
        encoder: ``"nature"`` or ``"impala"``.
        channels_last: run the convolutions in channels-last memory format (faster on recent GPUs).
        compile: wrap the trunk in ``torch.compile`` (first calls are slow; pays off for long runs on GPU).
    """

    def __init__(
        self,
        spec: EnvSpec,
        encoder: str = "nature",
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__()
        self.spec = spec
        self.obs_ndim = len(spec.observation_shape)
        self.encoder = build_encoder(encoder, spec.observation_shape, channels_last)
        out = spec.num_actions if spec.discrete else spec.action_dim
        self.policy_head = layer_init(nn.Linear(self.encoder.out_dim, out), gain=0.01)
        self.value_head = layer_init(nn.Linear(self.encoder.out_dim, 1), gain=1.0)
        if not spec.discrete:
            self.log_std = nn.Parameter(torch.zeros(spec.action_dim))
        # a compiled *function*, not a module attribute: the state dict keeps the same keys either way
        self._compiled = torch.compile(self.encoder.forward, dynamic=True) if compile else None

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        return encode(self._compiled or self.encoder, obs, self.obs_ndim)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.features(obs)
        return self.policy_head(x), self.value_head(x)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.value_head(self.features(obs))


def conv_out_dim(observation_shape: Sequence[int], encoder: str) -> int:
    """Feature width of an encoder for a given observation shape (for tests and docs)."""
    return build_encoder(encoder, observation_shape).out_dim


__all__ = ["ActorCriticCNN", "ImpalaCNN", "NatureCNN", "build_encoder", "conv_out_dim", "encode"]
