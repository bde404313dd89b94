"""Any batched TorchRL ``EnvBase`` (e.g. ``ParallelEnv``) behind the :class:`BatchedEnv` interface.

TorchRL's ``step_and_maybe_reset`` already has same-step semantics: ``("next", "observation")`` is the true
next observation and the returned root tensordict holds the reset observation where an episode ended.
"""

from __future__ import annotations

import torch

from lightning_accelrl.envs.base import BatchedEnv, EnvSpec, Step
from lightning_accelrl.errors import ConfigError


def spec_from_torchrl(env) -> EnvSpec:  # env: torchrl.envs.EnvBase
    obs_spec = env.observation_spec["observation"]
    batch = len(env.batch_size)
    obs_shape = tuple(obs_spec.shape[batch:])
    action_spec = env.action_spec
    name = type(action_spec).__name__
    if name in ("OneHot", "OneHotDiscreteTensorSpec"):
        raise ConfigError(
            "one-hot action specs are not supported: build the env with categorical_action_encoding=True"
        )
    if name in ("Categorical", "DiscreteTensorSpec"):
        return EnvSpec(obs_shape, obs_spec.dtype, discrete=True, num_actions=int(action_spec.space.n))
    low = action_spec.space.low.reshape(-1, *action_spec.shape[batch:])[0]
    high = action_spec.space.high.reshape(-1, *action_spec.shape[batch:])[0]
    return EnvSpec(
        obs_shape,
        obs_spec.dtype,
        discrete=False,
        action_dim=int(action_spec.shape[-1]),
        action_low=tuple(low.tolist()),
        action_high=tuple(high.tolist()),
    )


class TorchRLEnv(BatchedEnv):
    """Adapter for a TorchRL env with a one-dimensional batch size [B]."""

    def __init__(self, env, seed: int = 0, rank: int = 0) -> None:
        if len(env.batch_size) != 1:
            raise ConfigError(
                f"TorchRL env must have a 1-D batch size (e.g. ParallelEnv), got {tuple(env.batch_size)}"
            )
        self.env = env
        self.num_envs = int(env.batch_size[0])
        self.spec = spec_from_torchrl(env)
        self._seed = seed + rank * self.num_envs
        self._td = None

    def reset(self) -> torch.Tensor:
        self.env.set_seed(self._seed)
        self._td = self.env.reset()
        return self._td["observation"]

    def step(self, actions: torch.Tensor) -> Step:
        td = self._td
        td["action"] = actions.to(td.device if td.device is not None else "cpu").reshape(
            self.num_envs, *self.env.action_spec.shape[1:]
        )
        out, self._td = self.env.step_and_maybe_reset(td)
        nxt = out["next"]
        return Step(
            nxt["observation"],
            nxt["reward"].reshape(self.num_envs).float(),
            nxt["terminated"].reshape(self.num_envs),
            nxt["truncated"].reshape(self.num_envs)
            if "truncated" in nxt.keys()  # noqa: SIM118
            else torch.zeros(self.num_envs, dtype=torch.bool),
            self._td["observation"],
        )

    def close(self) -> None:
        if not self.env.is_closed:
            self.env.close()
