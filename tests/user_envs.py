"""Small envs as a user would write them: a channels-last bool grid, Dict observations, MultiDiscrete and
MultiBinary actions.

Each is a contextual bandit stretched into short episodes, so a policy learns it in a few thousand steps and
a random one is far from the best return: the tests can tell learning from luck.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np


class LitChannelGrid(gym.Env):
    """10x10x4 bool grid, channels last (MinAtar's layout): one cell of one channel is lit; choosing the action
    of the lit channel earns 1. Episodes last ``length`` steps: random policy 0.25 * length, best ``length``."""

    def __init__(self, size: int = 10, channels: int = 4, length: int = 8) -> None:
        self.observation_space = gym.spaces.Box(0, 1, (size, size, channels), dtype=bool)
        self.action_space = gym.spaces.Discrete(channels)
        self.size, self.channels, self.length = size, channels, length

    def _draw(self) -> np.ndarray:
        self.lit = int(self.np_random.integers(self.channels))
        obs = np.zeros(self.observation_space.shape, dtype=bool)
        y, x = self.np_random.integers(self.size, size=2)
        obs[y, x, self.lit] = True
        return obs

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.t = 0
        return self._draw(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        reward = float(int(action) == self.lit)
        self.t += 1
        return self._draw(), reward, False, self.t >= self.length, {}


class DictCue(gym.Env):
    """Dict observation: ``cue`` (Discrete(3), one-hot for the network), ``noise`` (a float vector) and ``grid`` (a
    6x6x2 uint8 image); acting ``cue`` earns 1. Episodes of ``length`` steps."""

    def __init__(self, length: int = 8) -> None:
        self.observation_space = gym.spaces.Dict(
            {
                "cue": gym.spaces.Discrete(3),
                "noise": gym.spaces.Box(-1, 1, (2,), dtype=np.float32),
                "grid": gym.spaces.Box(0, 255, (6, 6, 2), dtype=np.uint8),
            }
        )
        self.action_space = gym.spaces.Discrete(3)
        self.length = length

    def _draw(self) -> dict[str, Any]:
        self.cue = int(self.np_random.integers(3))
        return {
            "cue": self.cue,
            "noise": self.np_random.uniform(-1, 1, 2).astype(np.float32),
            "grid": self.np_random.integers(0, 256, (6, 6, 2), dtype=np.uint8),
        }

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        self.t = 0
        return self._draw(), {}

    def step(self, action: Any) -> tuple[dict, float, bool, bool, dict]:
        reward = float(int(action) == self.cue)
        self.t += 1
        return self._draw(), reward, False, self.t >= self.length, {}


class TupleCue(gym.Env):
    """Tuple observation ``(noise, (cue, flag))``: a float Box, then a nested Tuple of Discrete(3) and
    MultiBinary(2); acting ``cue`` earns 1. Episodes of ``length`` steps."""

    def __init__(self, length: int = 8) -> None:
        self.observation_space = gym.spaces.Tuple(
            (
                gym.spaces.Box(-1, 1, (2,), dtype=np.float32),
                gym.spaces.Tuple((gym.spaces.Discrete(3), gym.spaces.MultiBinary(2))),
            )
        )
        self.action_space = gym.spaces.Discrete(3)
        self.length = length

    def _draw(self) -> tuple:
        self.cue = int(self.np_random.integers(3))
        flags = self.np_random.integers(0, 2, 2, dtype=np.int8)
        return self.np_random.uniform(-1, 1, 2).astype(np.float32), (self.cue, flags)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[tuple, dict]:
        super().reset(seed=seed)
        self.t = 0
        return self._draw(), {}

    def step(self, action: Any) -> tuple[tuple, float, bool, bool, dict]:
        reward = float(int(action) == self.cue)
        self.t += 1
        return self._draw(), reward, False, self.t >= self.length, {}


class TwoDials(gym.Env):
    """MultiDiscrete([3, 2]) actions: each dial set to its cue (shown one-hot in a Box) earns 0.5."""

    def __init__(self, length: int = 8) -> None:
        self.observation_space = gym.spaces.Box(0, 1, (5,), dtype=np.float32)
        self.action_space = gym.spaces.MultiDiscrete([3, 2])
        self.length = length

    def _draw(self) -> np.ndarray:
        self.cues = (int(self.np_random.integers(3)), int(self.np_random.integers(2)))
        obs = np.zeros(5, dtype=np.float32)
        obs[self.cues[0]] = obs[3 + self.cues[1]] = 1.0
        return obs

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.t = 0
        return self._draw(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        a = np.asarray(action)
        reward = 0.5 * float(a[0] == self.cues[0]) + 0.5 * float(a[1] == self.cues[1])
        self.t += 1
        return self._draw(), reward, False, self.t >= self.length, {}


class Buttons(gym.Env):
    """MultiBinary(4) actions, as stable-retro's button presses: each button pressed as its cue (a 0/1 Box) says
    earns 0.25; the action must be a 0/1 vector the space contains."""

    def __init__(self, length: int = 8) -> None:
        self.observation_space = gym.spaces.Box(0, 1, (4,), dtype=np.float32)
        self.action_space = gym.spaces.MultiBinary(4)
        self.length = length

    def _draw(self) -> np.ndarray:
        self.cues = self.np_random.integers(0, 2, size=4)
        return self.cues.astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.t = 0
        return self._draw(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        assert self.action_space.contains(np.asarray(action, dtype=np.int8)), action
        reward = 0.25 * float(np.sum(np.asarray(action) == self.cues))
        self.t += 1
        return self._draw(), reward, False, self.t >= self.length, {}


def make_cartpole() -> gym.Env:
    """An env factory: a module-level function, so it pickles (Ray) and forks (async sampler) alike."""
    return gym.make("CartPole-v1")


def make_filmable_cartpole() -> gym.Env:
    """An env factory whose envs render RGB frames, so the user's own env can be filmed."""
    return gym.make("CartPole-v1", render_mode="rgb_array")
