"""Q-value networks for the DQN family: plain, dueling (Wang et al., 2016) and distributional (C51,
Bellemare et al., 2017) heads over an MLP, Nature CNN or IMPALA CNN encoder."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lightning_accelrl.envs.base import EnvSpec
from lightning_accelrl.nets.cnn import build_encoder, encode
from lightning_accelrl.nets.mlp import MLP, flatten_obs


class QNetwork(nn.Module):
    """``forward(obs) -> Q [..., A]``, or logits ``[..., A, num_atoms]`` when ``num_atoms > 1``.

    Args:
        spec: a discrete-action env spec.
        encoder: ``"mlp"`` (vector observations), ``"nature"`` or ``"impala"`` (stacked frames, uint8 ok);
            ``"auto"``: nature for [C, H, W] observations, else mlp. The factory names ``"nature_cnn"`` and
            ``"impala_cnn"`` are accepted too.
        hidden: hidden widths of the MLP encoder (ignored by the CNN encoders, which end in their own
            linear layer: 512 for Nature, 256 for IMPALA).
        head_hidden: hidden widths inside each head stream (e.g. ``(512,)`` for the dueling paper's streams).
        dueling: value stream + advantage stream, ``Q = V + A - mean_a A`` (per atom when distributional).
        num_atoms: 1 for expected Q-values; > 1 for a categorical return distribution (C51: 51).
    """

    def __init__(
        self,
        spec: EnvSpec,
        encoder: str = "auto",
        hidden: Sequence[int] = (64, 64),
        activation: str = "relu",
        dueling: bool = False,
        num_atoms: int = 1,
        head_hidden: Sequence[int] = (),
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        if not spec.discrete:
            raise ValueError("QNetwork needs a discrete action space")
        if num_atoms < 1:
            raise ValueError(f"num_atoms must be >= 1, got {num_atoms}")
        self.spec = spec
        self.obs_ndim = len(spec.observation_shape)
        self.num_actions = spec.num_actions
        self.num_atoms = num_atoms
        self.dueling = dueling
        key = encoder.removesuffix("_cnn")
        if key == "auto":
            key = "nature" if len(spec.observation_shape) == 3 else "mlp"
        if key == "mlp":
            in_dim = 1
            for d in spec.observation_shape:
                in_dim *= d
            self.encoder: nn.Module = MLP(in_dim, hidden, activation=activation)
            self._cnn = False
        else:
            self.encoder = build_encoder(key, spec.observation_shape, channels_last)
            self._cnn = True
        width = self.encoder.out_dim
        self.advantage = MLP(width, head_hidden, self.num_actions * num_atoms, activation, out_gain=1.0)
        self.value_stream = MLP(width, head_hidden, num_atoms, activation, out_gain=1.0) if dueling else None

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        if self._cnn:
            return encode(self.encoder, obs, self.obs_ndim)
        return self.encoder(flatten_obs(obs, self.obs_ndim))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = self.features(obs)
        batch = x.shape[:-1]
        adv = self.advantage(x).reshape(*batch, self.num_actions, self.num_atoms)
        if self.value_stream is not None:
            value = self.value_stream(x).reshape(*batch, 1, self.num_atoms)
            adv = value + adv - adv.mean(dim=-2, keepdim=True)
        return adv.squeeze(-1) if self.num_atoms == 1 else adv
