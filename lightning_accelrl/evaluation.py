"""Evaluation of a policy over a fixed number of fresh episodes (the number ``accelrl evaluate`` prints), and the
contract by which a data module tells evaluation callbacks which env to play."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from lightning_accelrl.envs import probe_spec
from lightning_accelrl.envs.base import BatchedEnv, EnvSpec
from lightning_accelrl.errors import ConfigError


@dataclass(frozen=True)
class EnvSource:
    """What fresh evaluation envs are built from: an env id or an env factory (never a live env object, which
    would be the training env itself), its keyword arguments, and the vectorization of a batch of them."""

    env: Any
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    vectorization: str = "auto"


@runtime_checkable
class EvaluationEnvSource(Protocol):
    """What evaluation callbacks ask of a data module: the source of its training envs, or ``None`` when it
    trains on a live env object (evaluation must then be given its own env)."""

    def evaluation_env(self) -> EnvSource | None: ...


def check_same_spec(trained: EnvSpec, source: EnvSource, name: str) -> None:
    """A policy plays only envs with the observations and actions it was trained on: a ``ConfigError`` naming each
    difference (one env of ``source`` is built to read its spec), e.g. ``observation_shape (6,) (trained on (4,))``."""
    spec = probe_spec(source.env, source.env_kwargs, source.vectorization)
    differ = [
        f"{f.name} {getattr(spec, f.name)} (trained on {getattr(trained, f.name)})"
        for f in fields(spec)
        if getattr(spec, f.name) != getattr(trained, f.name)
    ]
    if differ:
        raise ConfigError(f"{name}: its envs differ from those the policy trained on: {'; '.join(differ)}")


def evaluation_num_envs(episodes: int) -> int:
    """Envs stepped together to play ``episodes`` fresh episodes: ``accelrl evaluate``'s default and
    ``VideoEvaluation``'s, one rule so that the two give the same figures."""
    return min(episodes, 8)


@torch.no_grad()
def evaluate_policy(
    agent: Any,
    env: BatchedEnv,
    episodes: int,
    deterministic: bool = True,
    max_steps: int = 1_000_000,
) -> dict[str, Any]:
    """Run ``episodes`` episodes, split evenly over the vector env's envs (so short episodes are not over-counted).

    ``agent.policy(obs, deterministic)`` gives actions. Returns mean/std/min/max of returns and the per-episode lists.
    """
    n = env.num_envs
    quota = np.array([episodes // n + (i < episodes % n) for i in range(n)])
    device = torch.device(agent.device)
    returns: list[float] = []
    lengths: list[int] = []
    ret = np.zeros(n)
    length = np.zeros(n, dtype=np.int64)
    obs = env.reset()
    for _ in range(max_steps):
        if len(returns) >= episodes:
            break
        action = agent.policy(obs.to(device), deterministic=deterministic)
        step = env.step(action)
        ret += step.reward.numpy()
        length += 1
        done = (step.terminated | step.truncated).numpy()
        for i in np.flatnonzero(done):
            if quota[i] > 0:
                quota[i] -= 1
                returns.append(float(ret[i]))
                lengths.append(int(length[i]))
            ret[i], length[i] = 0.0, 0
        obs = step.observation
    return episode_statistics(returns, lengths)


def episode_statistics(returns: list[float], lengths: list[int]) -> dict[str, Any]:
    """Count, mean/std/min/max of the returns (NaN without episodes), the mean length and the rounded returns."""
    arr = np.asarray(returns, dtype=np.float64)
    return {
        "episodes": len(returns),
        "return_mean": float(arr.mean()) if len(arr) else math.nan,
        "return_std": float(arr.std()) if len(arr) else math.nan,
        "return_min": float(arr.min()) if len(arr) else math.nan,
        "return_max": float(arr.max()) if len(arr) else math.nan,
        "length_mean": float(np.mean(lengths)) if lengths else math.nan,
        "returns": [round(r, 4) for r in returns],
    }
