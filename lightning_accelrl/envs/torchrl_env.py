"""Any TorchRL ``EnvBase`` (batched like ``ParallelEnv``/``SerialEnv``, or a single env) behind the
:class:`BatchedEnv` interface.

TorchRL's ``step_and_maybe_reset`` already has same-step semantics: ``("next", "observation")`` is the true
next observation and the returned root tensordict holds the reset observation where an episode ended.
Discrete actions may use TorchRL's default one-hot encoding or ``categorical_action_encoding=True``: the
samplers and networks always work with action indices, converted to one-hot here when the env wants them.
An unbatched env (``batch_size == []``, e.g. ``GymEnv("CartPole-v1")``) is one env.
"""

from __future__ import annotations

from typing import Any

import torch
from torchrl.data import Binary, Bounded, Categorical, MultiCategorical, MultiOneHot, OneHot
from torchrl.envs import EnvBase

from lightning_accelrl.envs.base import BatchedEnv, EnvSpec, Step, image_layout
from lightning_accelrl.errors import ConfigError


def observation_key(env: EnvBase) -> str:
    """``"observation"``, or the env's only observation key; one-line error otherwise."""
    keys = [k for k in env.observation_spec.keys(True, True) if isinstance(k, str)]
    if "observation" in keys:
        return "observation"
    if len(keys) == 1:
        return keys[0]
    raise ConfigError(
        f"TorchRL env has observation keys {keys}: rename the one to learn from 'observation' (e.g. with "
        "torchrl.envs.RenameTransform), or pass a Gymnasium env, whose Dict observations are supported"
    )


def spec_from_torchrl(env: EnvBase) -> EnvSpec:
    """Spec of one env of a (batched or single) TorchRL env."""
    batch = len(env.batch_size)
    obs_spec = env.observation_spec[observation_key(env)]
    obs_shape = tuple(obs_spec.shape[batch:])
    obs_dtype = torch.float32 if obs_spec.dtype == torch.float64 else obs_spec.dtype
    layout = image_layout(obs_shape)
    action_spec = env.action_spec
    action_shape = tuple(action_spec.shape[batch:])
    if isinstance(action_spec, Binary) and len(action_shape) == 1:  # before Categorical, its base class
        nvec = (2,) * int(action_shape[0])  # n two-way choices, as Gymnasium's MultiBinary
        return EnvSpec(
            obs_shape, obs_dtype, discrete=True, num_actions=sum(nvec), action_nvec=nvec, image_layout=layout
        )
    if isinstance(action_spec, (OneHot, Categorical)) and not isinstance(action_spec, Binary):
        n = int(action_spec.space.n)
        return EnvSpec(obs_shape, obs_dtype, discrete=True, num_actions=n, image_layout=layout)
    if isinstance(action_spec, (MultiOneHot, MultiCategorical)):
        n = torch.as_tensor(action_spec.nvec)  # per dimension, possibly repeated over the batch
        nvec = tuple(int(x) for x in n.reshape(-1, n.shape[-1])[0])
        return EnvSpec(
            obs_shape, obs_dtype, discrete=True, num_actions=sum(nvec), action_nvec=nvec, image_layout=layout
        )
    if isinstance(action_spec, Bounded) and len(action_shape) == 1:
        low = action_spec.space.low.reshape(-1, *action_shape)[0]
        high = action_spec.space.high.reshape(-1, *action_shape)[0]
        return EnvSpec(
            obs_shape,
            obs_dtype,
            discrete=False,
            action_dim=int(action_shape[0]),
            action_low=tuple(low.tolist()),
            action_high=tuple(high.tolist()),
            image_layout=layout,
        )
    raise ConfigError(
        f"TorchRL action spec {type(action_spec).__name__} {action_shape} is not supported: use OneHot, "
        "Categorical, MultiOneHot, MultiCategorical, a 1-D Binary or a 1-D Bounded spec"
    )


class TorchRLEnv(BatchedEnv):
    """Adapter for a TorchRL env with a batch size [B] (B envs) or [] (one env)."""

    def __init__(self, env: EnvBase, seed: int = 0, rank: int = 0) -> None:
        if len(env.batch_size) > 1:
            raise ConfigError(
                f"TorchRL env must have a 1-D batch size (e.g. ParallelEnv) or none, got {tuple(env.batch_size)}"
            )
        self.env = env
        self._batched = len(env.batch_size) == 1
        self.num_envs = int(env.batch_size[0]) if self._batched else 1
        self.spec = spec_from_torchrl(env)
        self._key = observation_key(env)
        spec = env.action_spec
        self._one_hot = isinstance(spec, (OneHot, MultiOneHot))
        self._action_dtype = spec.dtype
        if not self.spec.discrete:  # policies' samples may leave the box: clip as the Gymnasium adapter does
            self._low = torch.tensor(self.spec.action_low, dtype=torch.float32)
            self._high = torch.tensor(self.spec.action_high, dtype=torch.float32)
        self._seed = seed + rank * self.num_envs
        self._td = None

    def _batch(self, x: torch.Tensor) -> torch.Tensor:
        return x if self._batched else x.unsqueeze(0)

    def _obs(self, td: Any) -> torch.Tensor:
        x = self._batch(td[self._key])
        return x.float() if x.dtype == torch.float64 else x

    def _action(self, actions: torch.Tensor) -> torch.Tensor:
        """Action indices [B, ...] -> what the env's action spec wants (one-hot where it is one-hot); continuous
        actions clipped to the spec's bounds."""
        if self.spec.discrete:
            a = actions.long().reshape(self.num_envs, *self.spec.action_shape)
        else:
            a = torch.clamp(actions.float(), self._low.to(actions.device), self._high.to(actions.device))
        if self._one_hot and self.spec.action_nvec:
            a = torch.cat(
                [torch.nn.functional.one_hot(a[:, i], n) for i, n in enumerate(self.spec.action_nvec)], -1
            )
        elif self._one_hot:
            a = torch.nn.functional.one_hot(a, self.spec.num_actions)
        a = a.to(self._action_dtype)
        return a if self._batched else a[0]

    def reset(self) -> torch.Tensor:
        self.env.set_seed(self._seed)
        self._td = self.env.reset()
        return self._obs(self._td)

    def step(self, actions: torch.Tensor) -> Step:
        td = self._td
        td["action"] = self._action(actions.to(td.device if td.device is not None else "cpu"))
        out, self._td = self.env.step_and_maybe_reset(td)
        nxt = out["next"]
        truncated = nxt["truncated"] if "truncated" in nxt.keys() else None  # noqa: SIM118
        return Step(
            self._obs(nxt),
            nxt["reward"].reshape(self.num_envs).float(),
            nxt["terminated"].reshape(self.num_envs),
            truncated.reshape(self.num_envs)
            if truncated is not None
            else torch.zeros(self.num_envs, dtype=torch.bool),
            self._obs(self._td),
        )

    def close(self) -> None:
        if not self.env.is_closed:
            self.env.close()
