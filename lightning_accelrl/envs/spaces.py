"""Gymnasium spaces -> :class:`EnvSpec`, and the observation encoding that puts any supported observation into
one tensor per step (the samplers preallocate one ``observation`` tensor of ``spec.observation_shape``).

- ``Box`` (any dtype: bool, uint8, float...) passes through; float64 becomes float32.
- ``Discrete`` becomes a one-hot float vector; ``MultiDiscrete`` one one-hot block per dimension; ``MultiBinary``
  a float vector.
- ``Dict`` and ``Tuple`` (nested too) become one float vector, their keys in the space's order (Gymnasium sorts
  a dict's keys; a tuple's keys are its positions "0", "1", ...; nested keys are joined by ".");
  ``spec.observation_parts`` records each key's slice, shape and dtype, so networks can split it back.

Actions: ``Discrete``, ``MultiDiscrete``, 1-D ``MultiBinary`` (as that many two-way choices) and 1-D ``Box``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from lightning_accelrl.envs.base import EnvSpec, ObservationPart, image_layout
from lightning_accelrl.errors import ConfigError

_UNSUPPORTED = "is not supported: use Box, Discrete, MultiDiscrete, MultiBinary or a Dict or Tuple of them"
_COMPOSITE = (gym.spaces.Dict, gym.spaces.Tuple)


def torch_dtype(dtype: Any) -> torch.dtype:
    """The torch dtype of a numpy dtype, float64 narrowed to float32."""
    t = torch.from_numpy(np.zeros((), dtype=dtype)).dtype
    return torch.float32 if t == torch.float64 else t


def _leaves(space: gym.Space, prefix: str = "") -> list[tuple[str, gym.Space]]:
    """(key, space) of every leaf of a (nested) Dict or Tuple, keys joined with '.' (a tuple's keys: positions)."""
    if isinstance(space, _COMPOSITE):
        items = space.spaces.items() if isinstance(space, gym.spaces.Dict) else enumerate(space.spaces)
        out: list[tuple[str, gym.Space]] = []
        for key, sub in items:
            out += _leaves(sub, f"{prefix}{key}.")
        return out
    return [(prefix.removesuffix("."), space)]


def _one_hot_sizes(space: gym.Space) -> tuple[np.ndarray, np.ndarray] | None:
    """(starts, sizes) of the one-hot blocks of a Discrete/MultiDiscrete space, None for other spaces."""
    if isinstance(space, gym.spaces.Discrete):
        return np.asarray([space.start]), np.asarray([space.n])
    if isinstance(space, gym.spaces.MultiDiscrete):
        if space.nvec.ndim != 1:
            raise ConfigError(
                f"observation space {space} is not supported: only 1-D MultiDiscrete observations are"
            )
        return np.asarray(space.start), np.asarray(space.nvec)
    return None


def _encoded_shape(space: gym.Space) -> tuple[int, ...]:
    blocks = _one_hot_sizes(space)
    if blocks is not None:
        return (int(blocks[1].sum()),)
    if isinstance(space, (gym.spaces.Box, gym.spaces.MultiBinary)):
        return tuple(int(d) for d in space.shape)
    raise ConfigError(f"observation space {space} {_UNSUPPORTED}")


def _leaf_encoder(space: gym.Space) -> Callable[[np.ndarray], torch.Tensor]:
    """Batched numpy observations [B, ...] of one space -> a float32 tensor [B, encoded size]."""
    blocks = _one_hot_sizes(space)
    if blocks is not None:
        starts, sizes = blocks
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        width = int(sizes.sum())

        def one_hot(x: np.ndarray) -> torch.Tensor:
            idx = np.asarray(x, dtype=np.int64).reshape(len(x), -1) - starts + offsets
            out = torch.zeros(len(x), width)
            out.scatter_(1, torch.from_numpy(idx), 1.0)
            return out

        return one_hot
    return lambda x: torch.from_numpy(np.asarray(x, dtype=np.float32).reshape(len(x), -1))


class ObservationEncoder:
    """Turns a vector env's batched observations (arrays, or dicts of arrays) into one tensor [B, ...]."""

    def __init__(self, space: gym.Space) -> None:
        self.space = space
        self.passthrough = isinstance(space, gym.spaces.Box)
        if self.passthrough:
            self.shape = tuple(int(d) for d in space.shape)
            self.dtype = torch_dtype(space.dtype)
            self.parts: tuple[ObservationPart, ...] = ()
            return
        leaves = _leaves(space)
        self._keys = [key for key, _ in leaves]
        self._encoders = [_leaf_encoder(sub) for _, sub in leaves]
        if isinstance(space, _COMPOSITE):
            self.parts = tuple(
                ObservationPart(
                    key,
                    _encoded_shape(sub),
                    torch_dtype(sub.dtype) if isinstance(sub, gym.spaces.Box) else torch.float32,
                    image_layout(tuple(sub.shape)) if isinstance(sub, gym.spaces.Box) else "",
                )
                for key, sub in leaves
            )
            self.shape = (sum(p.size for p in self.parts),)
        else:
            self.parts = ()
            self.shape = (int(np.prod(_encoded_shape(space))),)
        self.dtype = torch.float32

    def batch(self, obs: Any) -> torch.Tensor:
        """Observations of all envs [B, ...] -> tensor [B, *shape]."""
        if self.passthrough:
            t = torch.from_numpy(np.asarray(obs))
            return t.float() if t.dtype == torch.float64 else t
        if not self.parts:
            return self._encoders[0](obs)
        return torch.cat(
            [enc(_get(obs, key)) for key, enc in zip(self._keys, self._encoders, strict=True)], 1
        )

    def one(self, obs: Any) -> torch.Tensor:
        """The observation of one env (e.g. a final observation from ``info``) -> tensor [*shape]."""
        if self.passthrough:
            return self.batch(np.asarray(obs)[None])[0]
        return self.batch(_add_batch_dim(obs))[0]


def _get(obs: Any, key: str) -> Any:
    for part in key.split("."):
        obs = obs[int(part)] if isinstance(obs, tuple) else obs[part]
    return obs


def _add_batch_dim(obs: Any) -> Any:
    if isinstance(obs, dict):
        return {k: _add_batch_dim(v) for k, v in obs.items()}
    if isinstance(obs, tuple):
        return tuple(_add_batch_dim(v) for v in obs)
    return np.asarray(obs)[None]


def action_fields(action_space: gym.Space) -> dict[str, Any]:
    """The :class:`EnvSpec` fields of an action space."""
    if isinstance(action_space, gym.spaces.Discrete):
        return {"discrete": True, "num_actions": int(action_space.n)}
    if isinstance(action_space, gym.spaces.MultiDiscrete) and action_space.nvec.ndim == 1:
        nvec = tuple(int(n) for n in action_space.nvec)
        return {"discrete": True, "num_actions": sum(nvec), "action_nvec": nvec}
    if isinstance(action_space, gym.spaces.MultiBinary) and len(action_space.shape) == 1:
        # n two-way choices: a categorical over {0, 1} per button is a Bernoulli (SB3's MultiBinary policy)
        nvec = (2,) * int(action_space.shape[0])
        return {"discrete": True, "num_actions": sum(nvec), "action_nvec": nvec}
    if isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1:
        return {
            "discrete": False,
            "action_dim": int(action_space.shape[0]),
            "action_low": tuple(float(x) for x in action_space.low),
            "action_high": tuple(float(x) for x in action_space.high),
        }
    raise ConfigError(
        f"action space {action_space} is not supported: use Discrete, 1-D MultiDiscrete, 1-D MultiBinary or a 1-D "
        "Box"
    )


def spec_from_spaces(observation_space: gym.Space, action_space: gym.Space, frame_stack: int = 0) -> EnvSpec:
    """Describe single-env spaces (the observation as :class:`ObservationEncoder` delivers it)."""
    enc = ObservationEncoder(observation_space)
    return EnvSpec(
        enc.shape,
        enc.dtype,
        image_layout=image_layout(enc.shape),
        frame_stack=frame_stack,
        observation_parts=enc.parts,
        **action_fields(action_space),
    )


def action_offset(action_space: gym.Space) -> np.ndarray | int:
    """What to add to 0-based actions (Gymnasium's ``start`` of Discrete/MultiDiscrete spaces)."""
    if isinstance(action_space, (gym.spaces.Discrete, gym.spaces.MultiDiscrete)):
        start = np.asarray(action_space.start)
        return start if start.any() else 0
    return 0
