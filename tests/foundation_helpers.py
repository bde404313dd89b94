"""Helpers for the foundation-path tests (imported by name: ``conftest`` is ambiguous, tests/replay has one too).

A deterministic counting env registered with Gymnasium, and fast Trainer settings.

``CountingEnv``: the observation is ``[t, L]`` where ``t`` counts the steps since the last reset and ``L`` is the
episode length of that env (``2 + seed % 5``, fixed at the first seeded reset, so envs of one vector env end
their episodes at different times). The reward of step t is t, so a finished episode returns L(L+1)/2.
Any transition (s, s') that stays inside one episode has ``s'[0] == s[0] + 1``; one that crosses a boundary
would not.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

COUNTING_ID = "AccelrlTestCounting-v0"
COUNTING_BOX_ID = "AccelrlTestCountingBox-v0"  # the same with a Box action
COUNTING_TL_ID = "AccelrlTestCountingTL-v0"  # time limit 4: envs with L = 5 are truncated
TIME_LIMIT = 4


def counting_length(seed: int) -> int:
    return 2 + seed % 5


class CountingEnv(gym.Env):
    metadata = {"render_modes": []}

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(0.0, 1000.0, shape=(2,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.length = 3
        self.t = 0

    def _obs(self) -> np.ndarray:
        return np.array([self.t, self.length], dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self.length = counting_length(seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        return self._obs(), float(self.t), self.t >= self.length, False, {}


class CountingBoxEnv(CountingEnv):
    """The counting env with one continuous action in [-1, 1] (the reward adds a tenth of it)."""

    def __init__(self) -> None:
        super().__init__()
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(1,), dtype=np.float32)

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(0)
        return obs, reward + 0.1 * float(np.asarray(action).reshape(-1)[0]), terminated, truncated, info


if COUNTING_ID not in gym.registry:
    gym.register(COUNTING_ID, entry_point=CountingEnv)
    gym.register(COUNTING_BOX_ID, entry_point=CountingBoxEnv)
    gym.register(COUNTING_TL_ID, entry_point=CountingEnv, max_episode_steps=TIME_LIMIT)


def trainer_kwargs(**overrides) -> dict:
    """Fast, quiet Trainer settings for tests."""
    kw = {
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }
    kw.update(overrides)
    return kw
