"""Gymnasium vector envs behind the :class:`BatchedEnv` interface.

We build vector envs in *same-step* autoreset mode (Gymnasium 1.x defaults to next-step, where the step after
a done returns the reset observation with reward 0: code written for the other mode learns from transitions
that cross episode boundaries). User-built vector envs in next-step mode are refused with a clear error.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch

from lightning_accelrl.envs.base import BatchedEnv, EnvSpec, Step, StepArrays, as_numpy, env_seeds
from lightning_accelrl.errors import ConfigError

Vectorization = Literal["auto", "sync", "async"]
_CHEAP_ENTRY_POINTS = ("gymnasium.envs.classic_control", "gymnasium.envs.toy_text")


def check_env_id(env_id: str) -> None:
    """Raise a one-line :class:`ConfigError` for an id Gymnasium does not know, with close matches."""
    _register_optional_envs(env_id)
    if env_id in gym.registry:
        return
    close = difflib.get_close_matches(env_id, list(gym.registry), n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    extra = (
        " Atari ids need the atari extra: pip install 'lightning-accelrl[atari]'." if "ALE/" in env_id else ""
    )
    raise ConfigError(f"unknown env id {env_id!r}.{hint}{extra}")


def _register_optional_envs(env_id: str) -> None:
    if env_id.startswith("ALE/") and env_id not in gym.registry:
        try:
            import ale_py

            gym.register_envs(ale_py)
        except ImportError:
            pass


def spec_from_spaces(observation_space: gym.Space, action_space: gym.Space) -> EnvSpec:
    """Describe single-env spaces for network construction."""
    if not isinstance(observation_space, gym.spaces.Box):
        raise ConfigError(
            f"observation space {observation_space} is not supported: only Box observations are"
        )
    obs_dtype = torch.from_numpy(np.zeros((), dtype=observation_space.dtype)).dtype
    if obs_dtype == torch.float64:
        obs_dtype = torch.float32
    if isinstance(action_space, gym.spaces.Discrete):
        return EnvSpec(
            tuple(observation_space.shape), obs_dtype, discrete=True, num_actions=int(action_space.n)
        )
    if isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1:
        return EnvSpec(
            tuple(observation_space.shape),
            obs_dtype,
            discrete=False,
            action_dim=int(action_space.shape[0]),
            action_low=tuple(float(x) for x in action_space.low),
            action_high=tuple(float(x) for x in action_space.high),
        )
    raise ConfigError(f"action space {action_space} is not supported: use Discrete or a 1-D Box")


def probe_spec(env_id: str, env_kwargs: dict[str, Any] | None = None) -> EnvSpec:
    """Spec of ``env_id`` from one throw-away env (cheap next to building the vector env)."""
    check_env_id(env_id)
    env = gym.make(env_id, **(env_kwargs or {}))
    try:
        return spec_from_spaces(env.observation_space, env.action_space)
    finally:
        env.close()


def choose_vectorization(env_id: str, num_envs: int, mode: Vectorization) -> Literal["sync", "async"]:
    """``auto``: in-process for cheap envs (classic control: IPC would cost more than the step), else processes."""
    if mode != "auto":
        return mode
    entry = str(gym.spec(env_id).entry_point)
    if num_envs == 1 or entry.startswith(_CHEAP_ENTRY_POINTS):
        return "sync"
    return "async"


class GymVectorEnv(BatchedEnv):
    """A Gymnasium vector env (built from an id, or given) in same-step autoreset mode.

    ``seeds`` (explicit per-env seeds) overrides ``seed``/``rank``; the alternating sampler uses it for its halves.
    """

    def __init__(
        self,
        env: str | gym.vector.VectorEnv,
        num_envs: int = 8,
        seed: int = 0,
        rank: int = 0,
        vectorization: Vectorization = "auto",
        env_kwargs: dict[str, Any] | None = None,
        seeds: Sequence[int] | None = None,
    ) -> None:
        if isinstance(env, str):
            check_env_id(env)
            if num_envs < 1:
                raise ConfigError(f"num_envs must be >= 1, got {num_envs}")
            mode = choose_vectorization(env, num_envs, vectorization)
            vector_kwargs: dict[str, Any] = {"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}
            if mode == "sync":
                vector_kwargs["copy"] = False  # the sampler copies into its own buffers at once
            else:
                # forkserver: torchrl switches the global start method to spawn (24 s start-ups)
                vector_kwargs["context"] = "forkserver"
            self.env = gym.make_vec(
                env,
                num_envs=num_envs,
                vectorization_mode=mode,
                vector_kwargs=vector_kwargs,
                **(env_kwargs or {}),
            )
        else:
            self.env = env
            mode_found = env.metadata.get("autoreset_mode", gym.vector.AutoresetMode.NEXT_STEP)
            if mode_found != gym.vector.AutoresetMode.SAME_STEP:
                raise ConfigError(
                    f"vector env uses autoreset mode {mode_found}; build it with "
                    "vector_kwargs={'autoreset_mode': gymnasium.vector.AutoresetMode.SAME_STEP}"
                )
        self.num_envs = self.env.num_envs
        self.spec = spec_from_spaces(self.env.single_observation_space, self.env.single_action_space)
        self._seeds = list(seeds) if seeds is not None else env_seeds(seed, rank, self.num_envs)
        if len(self._seeds) != self.num_envs:
            raise ConfigError(f"got {len(self._seeds)} seeds for {self.num_envs} envs")
        self.env.action_space.seed(self._seeds[0])
        space = self.env.single_action_space
        self._action_offset = int(space.start) if isinstance(space, gym.spaces.Discrete) else 0
        if not self.spec.discrete:
            self._low = np.asarray(self.spec.action_low, dtype=np.float32)
            self._high = np.asarray(self.spec.action_high, dtype=np.float32)
        # subprocesses step while the sampler works, unless they write the observations we still read
        venv = self.env
        self._can_async = isinstance(venv, gym.vector.AsyncVectorEnv) and (
            venv.copy or not venv.shared_memory
        )

    def reset(self) -> torch.Tensor:
        obs, _ = self.env.reset(seed=self._seeds)
        return self._obs(obs)

    @staticmethod
    def _obs(obs: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(obs)
        return t.float() if t.dtype == torch.float64 else t

    def _actions(self, actions: torch.Tensor) -> np.ndarray:
        a = as_numpy(actions)
        if not self.spec.discrete:
            return np.clip(a, self._low, self._high)
        return a + self._action_offset if self._action_offset else a

    def _step_arrays(
        self, obs: np.ndarray, reward: Any, terminated: Any, truncated: Any, info: dict
    ) -> StepArrays:
        """Same-step autoreset results: final observations swapped in where episodes ended."""
        observation = self._obs(obs)
        next_observation = observation
        final_mask = info.get("_final_obs")  # present only on steps where some env finished
        if final_mask is not None:
            final, final_obs = obs.copy(), info["final_obs"]
            for i in final_mask.nonzero()[0].tolist():  # few rows per step: faster than np.stack
                final[i] = final_obs[i]
            next_observation = self._obs(final)
        return StepArrays(
            next_observation,
            np.asarray(reward, dtype=np.float32),
            np.asarray(terminated),
            np.asarray(truncated),
            observation,
        )

    def step(self, actions: torch.Tensor) -> Step:
        return self._step_arrays(*self.env.step(self._actions(actions))).to_step()

    def step_async(self, actions: torch.Tensor) -> None:
        if self._can_async:
            self.env.step_async(self._actions(actions))
        else:
            super().step_async(actions)

    def step_wait(self) -> Step:
        return self.step_wait_arrays().to_step()

    def step_wait_arrays(self) -> StepArrays:
        if self._can_async:
            return self._step_arrays(*self.env.step_wait())
        actions, self._pending_actions = self._pending_actions, None
        return self._step_arrays(*self.env.step(self._actions(actions)))

    def render(self) -> list:
        return list(self.env.render())

    def close(self) -> None:
        self.env.close()
