"""Q-value networks for the DQN family: plain, dueling (Wang et al., 2016) and distributional (C51,
Bellemare et al., 2017) heads over an MLP, Nature CNN or IMPALA CNN encoder."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from lightning_accelrl.envs.base import EnvSpec
from lightning_accelrl.errors import ConfigError
from lightning_accelrl.nets.cnn import build_encoder, encode
from lightning_accelrl.nets.factory import check_builtin
from lightning_accelrl.nets.mlp import MLP, flatten_obs
from lightning_accelrl.nets.observations import dict_encoder


class QNetwork(nn.Module):
    """``forward(obs) -> Q [..., A]``, or logits ``[..., A, num_atoms]`` when ``num_atoms > 1``.

    Args:
        spec: a discrete-action env spec.
        encoder: ``"mlp"`` (vectors; Dict observations with images get per-key encoders first), ``"nature"``,
            ``"impala"`` or ``"small"`` (images, either layout; uint8 ok); ``"auto"``: by observation (see
            :func:`~lightning_accelrl.nets.factory.choose_network`). ``"nature_cnn"`` etc. are accepted too.
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
        if not spec.discrete or spec.action_nvec:
            raise ConfigError(
                f"Q-networks need a Discrete action space, got {spec.action_shape or 'a'} "
                f"{'MultiDiscrete' if spec.action_nvec else 'Box'} one: use PPO, A2C or APPO"
            )
        if num_atoms < 1:
            raise ValueError(f"num_atoms must be >= 1, got {num_atoms}")
        self.spec = spec
        self.obs_ndim = len(spec.observation_shape)
        self.num_actions = spec.num_actions
        self.num_atoms = num_atoms
        self.dueling = dueling
        key = check_builtin(encoder if encoder.endswith(("auto", "mlp", "_cnn")) else f"{encoder}_cnn", spec)
        if key == "mlp":
            inputs = dict_encoder(spec, channels_last)
            in_dim = math.prod(spec.observation_shape) if inputs is None else inputs.out_dim
            mlp = MLP(in_dim, hidden, activation=activation)
            self.encoder: nn.Module = mlp if inputs is None else nn.Sequential(inputs, mlp)
            self.encoder.out_dim = mlp.out_dim
            self._cnn = False
        else:
            self.encoder = build_encoder(key, spec.observation_shape, channels_last, spec.layout)
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
