"""Convolutional encoders for images and stacked frames, and the actor-critic built on them.

Observations arrive as ``uint8 [..., C, H, W]`` (the rollout buffers and the host-to-device copies stay uint8,
4x smaller than float32) and are normalised inside the network: ``obs.float() / 255``; bool and float images
are cast to float. Channels-last observations (``layout="HWC"``, e.g. MinAtar's 10x10xC bool grids) are
permuted to channels-first by the network's first step, so envs hand over what they produce.
Initialisation follows CleanRL's ``ppo_atari.py``: orthogonal weights (gain sqrt(2)) and zero biases in the
trunk, gain 0.01 for the policy head and 1 for the value head.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lightning_accelrl.envs.base import EnvSpec
from lightning_accelrl.nets.mlp import OutputLinear, layer_init, policy_params


def _normalise(obs: torch.Tensor, channels_last: bool, hwc: bool = False) -> torch.Tensor:
    """Float [N, C, H, W] from uint8 (scaled to [0, 1]), bool or float images, either layout."""
    x = obs.float() / 255.0 if obs.dtype == torch.uint8 else obs.float()
    if hwc:
        x = x.permute(0, 3, 1, 2)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def chw(observation_shape: Sequence[int], layout: str = "CHW") -> tuple[int, int, int]:
    """(channels, height, width) of an image observation shape in ``layout`` ("CHW" or "HWC")."""
    if len(observation_shape) != 3:
        raise ValueError(f"CNN encoders need 3-D image observations, got shape {tuple(observation_shape)}")
    if layout == "HWC":
        h, w, c = observation_shape
        return c, h, w
    c, h, w = observation_shape
    return c, h, w


class NatureCNN(nn.Module):
    """Mnih et al. (2015): conv 8x8/4 (32), 4x4/2 (64), 3x3/1 (64), linear 512; ReLU throughout."""

    def __init__(
        self,
        observation_shape: Sequence[int],
        features: int = 512,
        channels_last: bool = False,
        layout: str = "CHW",
    ) -> None:
        super().__init__()
        c, h, w = chw(observation_shape, layout)
        self.channels_last, self.hwc = channels_last, layout == "HWC"
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
        """``[N, C, H, W]`` (or ``[N, H, W, C]``; uint8, bool or float) -> ``[N, features]``."""
        return self.fc(self.convs(_normalise(obs, self.channels_last, self.hwc)))


class SmallCNN(nn.Module):
    """For small grids (MinAtar's 10x10, gridworlds), as MinAtar's baselines (Young & Tian, 2019): 3x3 convs at
    stride 1 (16 channels), ReLU, linear ``features`` (128); padded where the grid is under 5 cells, so any size
    works. The same orthogonal init as the Nature CNN."""

    def __init__(
        self,
        observation_shape: Sequence[int],
        channels: Sequence[int] = (16,),
        features: int = 128,
        channels_last: bool = False,
        layout: str = "CHW",
    ) -> None:
        super().__init__()
        c, h, w = chw(observation_shape, layout)
        self.channels_last, self.hwc = channels_last, layout == "HWC"
        layers: list[nn.Module] = []
        for out in channels:
            pad = 1 if min(h, w) < 5 else 0
            layers += [layer_init(nn.Conv2d(c, out, 3, padding=pad)), nn.ReLU()]
            c, h, w = out, h + 2 * pad - 2, w + 2 * pad - 2
        self.convs = nn.Sequential(*layers, nn.Flatten())
        self.fc = nn.Sequential(layer_init(nn.Linear(c * h * w, features)), nn.ReLU())
        self.out_dim = features
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.fc(self.convs(_normalise(obs, self.channels_last, self.hwc)))


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
        layout: str = "CHW",
    ) -> None:
        super().__init__()
        c, h, w = chw(observation_shape, layout)
        self.channels_last, self.hwc = channels_last, layout == "HWC"
        seqs: list[nn.Module] = []
        c_in = c
        for out in channels:
            seqs.append(_ConvSequence(c, out))
            c = out
        self.convs = nn.Sequential(*seqs, nn.ReLU(), nn.Flatten())
        with torch.no_grad():
            flat = self.convs(torch.zeros(1, c_in, h, w)).shape[-1]
        self.fc = nn.Sequential(layer_init(nn.Linear(flat, features)), nn.ReLU())
        self.out_dim = features
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.fc(self.convs(_normalise(obs, self.channels_last, self.hwc)))


ENCODERS: dict[str, type[nn.Module]] = {"nature": NatureCNN, "impala": ImpalaCNN, "small": SmallCNN}
#: images at least this many pixels high and wide get the Nature CNN from ``auto``, smaller ones the small CNN
NATURE_MIN_SIZE = 36


def auto_encoder(observation_shape: Sequence[int], layout: str = "CHW") -> str:
    """``"nature"`` for Atari-sized frames (>= 36 px: what its 8x8/4, 4x4/2, 3x3/1 convs need), else ``"small"``."""
    _, h, w = chw(observation_shape, layout)
    return "nature" if min(h, w) >= NATURE_MIN_SIZE else "small"


def build_encoder(
    name: str, observation_shape: Sequence[int], channels_last: bool = False, layout: str = "CHW"
) -> nn.Module:
    """``"nature"``, ``"impala"``, ``"small"`` or ``"auto"`` (also accepted: ``"nature_cnn"``...) for images in
    ``layout``; ``channels_last`` is the memory format of the convolutions (a speed option on GPUs)."""
    key = name.removesuffix("_cnn")
    if key == "auto":
        key = auto_encoder(observation_shape, layout)
    if key not in ENCODERS:
        raise ValueError(f"unknown CNN encoder {name!r}; choose nature, impala or small")
    chw(observation_shape, layout)  # a one-line error for shapes that are no images
    return ENCODERS[key](observation_shape, channels_last=channels_last, layout=layout)


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
        encoder: ``"nature"``, ``"impala"``, ``"small"`` or ``"auto"`` (by image size).
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
        self.encoder = build_encoder(encoder, spec.observation_shape, channels_last, spec.layout)
        out = spec.num_actions if spec.discrete else spec.action_dim
        self.policy_head = layer_init(OutputLinear(self.encoder.out_dim, out), gain=0.01)
        self.value_head = layer_init(OutputLinear(self.encoder.out_dim, 1), gain=1.0)
        self.log_std = None if spec.discrete else nn.Parameter(torch.zeros(spec.action_dim))
        # a compiled *function*, not a module attribute: the state dict keeps the same keys either way
        self._compiled = torch.compile(self.encoder.forward, dynamic=True) if compile else None

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        return encode(self._compiled or self.encoder, obs, self.obs_ndim)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.features(obs)
        return policy_params(self.policy_head(x), self.log_std), self.value_head(x)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.value_head(self.features(obs))


__all__ = [
    "ActorCriticCNN",
    "ImpalaCNN",
    "NatureCNN",
    "SmallCNN",
    "auto_encoder",
    "build_encoder",
    "encode",
]
