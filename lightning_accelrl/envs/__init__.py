"""Batched environments: Gymnasium vector envs, ale_py's C++ Atari vector env, TorchRL envs, behind one
same-step-autoreset interface."""

from __future__ import annotations

from typing import Any

from lightning_accelrl.envs.base import BatchedEnv, EnvSpec, Step, env_seeds

__all__ = ["BatchedEnv", "EnvSpec", "Step", "env_seeds", "make_env", "probe_spec"]


def make_env(
    env: Any,
    num_envs: int = 8,
    seed: int = 0,
    rank: int = 0,
    vectorization: str = "auto",
    env_kwargs: dict | None = None,
) -> BatchedEnv:
    """Turn an env id, a Gymnasium vector env, a TorchRL ``EnvBase`` or a :class:`BatchedEnv` into a batched env.

    ``ALE/...`` ids go to ale_py's C++ vector env (:class:`~lightning_accelrl.envs.atari.AtariEnv`) with
    ``vectorization="auto"`` or ``"ale"``, to Gymnasium's vector envs with the same preprocessing for
    ``"async"``/``"sync"``; ``env_kwargs`` then holds the Atari protocol (sticky actions, episodic life...).
    """
    if isinstance(env, BatchedEnv):
        return env
    if isinstance(env, str) and (env.startswith("ALE/") or vectorization == "ale"):
        from lightning_accelrl.envs.atari import make_atari_env

        return make_atari_env(env, num_envs, seed, rank, vectorization, env_kwargs)
    if isinstance(env, str):
        from lightning_accelrl.envs.gym import GymVectorEnv

        return GymVectorEnv(env, num_envs, seed, rank, vectorization, env_kwargs)  # type: ignore[arg-type]
    import gymnasium as gym

    if isinstance(env, gym.vector.VectorEnv):
        from lightning_accelrl.envs.gym import GymVectorEnv

        return GymVectorEnv(env, seed=seed, rank=rank)
    if hasattr(env, "step_and_maybe_reset"):
        from lightning_accelrl.envs.torchrl_env import TorchRLEnv

        return TorchRLEnv(env, seed=seed, rank=rank)
    from lightning_accelrl.errors import ConfigError

    raise ConfigError(
        f"cannot build a batched env from {type(env).__name__}: pass a Gymnasium id, vector env or TorchRL env"
    )


def probe_spec(env: str, env_kwargs: dict | None = None, vectorization: str = "auto") -> EnvSpec:
    """Spec of an env id without building its vector env (Atari ids: from the ROM and the protocol)."""
    if env.startswith("ALE/") or vectorization == "ale":
        from lightning_accelrl.envs.atari import atari_spec

        return atari_spec(env, env_kwargs)
    from lightning_accelrl.envs.gym import probe_spec as gym_probe_spec

    return gym_probe_spec(env, env_kwargs)
