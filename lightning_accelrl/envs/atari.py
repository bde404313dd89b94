"""Atari through ale_py's C++ vector env (``AtariVectorEnv``), behind the :class:`BatchedEnv` interface.

The whole DQN/PPO preprocessing runs in C++ threads: frame skip 4 with max-pool over the last two frames,
84x84 grayscale, a stack of 4 frames (zero-padded at episode starts), up to 30 no-op starts, reward clipping,
FIRE on reset, optional episodic life. Sticky actions default to 0.25, as in the ``-v5`` protocol of
Machado et al. (2018) (``AtariVectorEnv``'s own default is 0.0).

The vector env runs in *same-step* autoreset mode: on a done step ``info["final_obs"]`` holds the true final
stack (valid only for the done rows) and the observation is already the reset stack, which is exactly
our :class:`~lightning_accelrl.envs.base.Step` contract.

Observations are ``uint8 [num_envs, 4, 84, 84]`` tensors sharing memory with the arrays ALE returns (fresh
arrays every step, so they can be held). With CUDA present they are copied into pinned, double-buffered host
memory instead, so the sampler's ``.to(device, non_blocking=True)`` is a true asynchronous copy.

The alternative back-end, Gymnasium's ``AsyncVectorEnv`` with ``AtariPreprocessing`` and
``FrameStackObservation`` (same layout, same protocol), is :func:`make_gym_atari_env`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from lightning_accelrl.envs.base import BatchedEnv, EnvSpec, Step, StepArrays, as_numpy, env_seeds
from lightning_accelrl.errors import ConfigError

#: The protocol knobs (``ExperienceDataModule(env_kwargs=...)``) and their defaults.
ATARI_DEFAULTS: dict[str, Any] = {
    "repeat_action_probability": 0.25,  # sticky actions, v5 protocol (AtariVectorEnv's own default is 0.0)
    "full_action_space": False,  # minimal action set (v5 default); True: all 18 actions
    "frameskip": 4,
    "noop_max": 30,
    "episodic_life": False,  # ALE: a life loss ends the episode AND restarts the game
    "life_loss_info": False,  # terminated=True on a life loss, the game goes on (CleanRL's EpisodicLifeEnv)
    "reward_clipping": True,
    "use_fire_reset": True,
    "max_num_frames_per_episode": 108_000,  # 30 minutes of play at 60 Hz, as v5
    "stack_num": 4,
    "img_height": 84,
    "img_width": 84,
    "maxpool": True,
}
_BACKEND_KWARGS = ("batch_size", "num_threads", "thread_affinity_offset", "pin_memory")


def ale_game(env_id: str) -> str:
    """ROM name of an id: ``"ALE/Pong-v5"``, ``"Pong"``, ``"PongNoFrameskip-v4"``, ``"pong"`` -> ``"pong"``.

    Raises a one-line :class:`ConfigError` (with close matches) for a game ale_py does not ship.
    """
    from ale_py import roms

    name = env_id.removeprefix("ALE/")
    name = re.sub(r"-v\d+$", "", name)
    name = re.sub(r"(NoFrameskip|Deterministic)$", "", name)
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()
    known = roms.get_all_rom_ids()
    if snake in known:
        return snake
    close = difflib.get_close_matches(snake, known, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ConfigError(f"unknown Atari game {env_id!r}.{hint}")


def _protocol(env_kwargs: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split user kwargs into (protocol with defaults filled, back-end options); unknown keys are errors."""
    kwargs = dict(env_kwargs or {})
    unknown = set(kwargs) - set(ATARI_DEFAULTS) - set(_BACKEND_KWARGS)
    if unknown:
        close = {k: difflib.get_close_matches(k, [*ATARI_DEFAULTS, *_BACKEND_KWARGS], n=1) for k in unknown}
        hints = ", ".join(f"{k!r}" + (f" (did you mean {c[0]!r}?)" if c else "") for k, c in close.items())
        raise ConfigError(f"unknown Atari env_kwargs {hints}; known: {', '.join(ATARI_DEFAULTS)}")
    protocol = {k: kwargs.pop(k, v) for k, v in ATARI_DEFAULTS.items()}
    if not 0.0 <= protocol["repeat_action_probability"] <= 1.0:
        raise ConfigError(
            f"repeat_action_probability must be in [0, 1], got {protocol['repeat_action_probability']}"
        )
    return protocol, kwargs


def num_actions(game: str, full_action_space: bool) -> int:
    """Size of the game's minimal (or the full, 18) action set, read from the ROM."""
    if full_action_space:
        return 18
    import ale_py
    from ale_py import roms

    ale = ale_py.ALEInterface()
    ale.setLoggerMode(ale_py.LoggerMode.Error)
    ale.loadROM(roms.get_rom_path(game))
    return len(ale.getMinimalActionSet())


def atari_spec(env_id: str, env_kwargs: dict[str, Any] | None = None) -> EnvSpec:
    """Spec of an Atari id under the protocol in ``env_kwargs``, without starting a vector env."""
    game = ale_game(env_id)
    protocol, _ = _protocol(env_kwargs)
    shape = (protocol["stack_num"], protocol["img_height"], protocol["img_width"])
    return EnvSpec(
        shape,
        torch.uint8,
        discrete=True,
        num_actions=num_actions(game, protocol["full_action_space"]),
        image_layout="CHW",
        frame_stack=protocol["stack_num"],
    )


class AtariEnv(BatchedEnv):
    """``num_envs`` Atari games in ale_py's C++ vector env, same-step autoreset.

    Args:
        game: ``"ALE/Pong-v5"``, ``"Pong"``, ``"pong"`` (the ROM is what counts; the protocol comes from the kwargs).
        num_envs: games stepped together.
        seed, rank: env i gets seed ``seed + rank * num_envs + i``.
        repeat_action_probability ... maxpool: the protocol, see :data:`ATARI_DEFAULTS`.
        batch_size: ``0`` (= ``num_envs``): synchronous :meth:`step`. ``0 < batch_size < num_envs``: the
            envpool-style async API (:meth:`async_reset`, :meth:`send`, :meth:`recv`), whose batches hold the
            first ``batch_size`` envs to finish (``env_ids`` says which).
        num_threads: C++ worker threads (0: ``min(batch_size, cores)``).
        thread_affinity_offset: pin worker threads to cores from this one (-1: no pinning).
        pin_memory: copy observations into pinned host memory (default: when CUDA is available).
        seeds: explicit per-env seeds (overrides ``seed``/``rank``; used by :meth:`split`).
    """

    def __init__(
        self,
        game: str = "ALE/Pong-v5",
        num_envs: int = 8,
        seed: int = 0,
        rank: int = 0,
        *,
        repeat_action_probability: float = 0.25,
        full_action_space: bool = False,
        frameskip: int = 4,
        noop_max: int = 30,
        episodic_life: bool = False,
        life_loss_info: bool = False,
        reward_clipping: bool = True,
        use_fire_reset: bool = True,
        max_num_frames_per_episode: int = 108_000,
        stack_num: int = 4,
        img_height: int = 84,
        img_width: int = 84,
        maxpool: bool = True,
        batch_size: int = 0,
        num_threads: int = 0,
        thread_affinity_offset: int = -1,
        pin_memory: bool | None = None,
        seeds: Sequence[int] | None = None,
    ) -> None:
        from ale_py.vector_env import AtariVectorEnv

        if num_envs < 1:
            raise ConfigError(f"num_envs must be >= 1, got {num_envs}")
        if not 0 <= batch_size <= num_envs:
            raise ConfigError(f"batch_size must be in [0, num_envs={num_envs}], got {batch_size}")
        self.game = ale_game(game)
        self.env_id = game
        self.protocol = {
            "repeat_action_probability": float(repeat_action_probability),
            "full_action_space": bool(full_action_space),
            "frameskip": int(frameskip),
            "noop_max": int(noop_max),
            "episodic_life": bool(episodic_life),
            "life_loss_info": bool(life_loss_info),
            "reward_clipping": bool(reward_clipping),
            "use_fire_reset": bool(use_fire_reset),
            "max_num_frames_per_episode": int(max_num_frames_per_episode),
            "stack_num": int(stack_num),
            "img_height": int(img_height),
            "img_width": int(img_width),
            "maxpool": bool(maxpool),
        }
        _protocol(self.protocol)  # validation
        self._backend = {"num_threads": num_threads, "thread_affinity_offset": thread_affinity_offset}
        self.num_envs = num_envs
        self.batch_size = batch_size or num_envs
        self.seeds = list(seeds) if seeds is not None else env_seeds(seed, rank, num_envs)
        if len(self.seeds) != num_envs:
            raise ConfigError(f"got {len(self.seeds)} seeds for {num_envs} envs")
        self.env = AtariVectorEnv(
            self.game,
            num_envs,
            batch_size=batch_size,
            autoreset_mode="SameStep",
            grayscale=True,
            **self._backend,
            **{**self.protocol, "reward_clipping": False},  # clipped here, so the raw score can be kept
        )
        n = int(self.env.single_action_space.n)
        shape = (stack_num, img_height, img_width)
        self.spec = EnvSpec(shape, torch.uint8, True, n, image_layout="CHW", frame_stack=stack_num)
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else bool(pin_memory)
        self._pinned: list[torch.Tensor] = []
        self._flip = 0
        self._last_ids: np.ndarray | None = None
        self._last_obs: np.ndarray | None = None  # for render()
        self._clip = self.protocol["reward_clipping"]

    # ----- helpers ----------------------------------------------------------------------------------------
    def _obs(self, obs: np.ndarray) -> torch.Tensor:
        self._last_obs = obs
        t = torch.from_numpy(obs)  # zero-copy: ALE hands out a fresh array every call
        if not self.pin_memory:
            return t
        if not self._pinned or self._pinned[0].shape != t.shape:
            self._pinned = [torch.empty(t.shape, dtype=t.dtype).pin_memory() for _ in range(2)]
        # double-buffered: the sampler reads step k's tensors until step k+1 returns
        self._flip ^= 1
        pinned = self._pinned[self._flip]
        np.copyto(pinned.numpy(), obs)  # numpy: torch's copy_ goes through the thread pool (10x slower here)
        return pinned

    def _actions(self, actions: torch.Tensor | np.ndarray) -> np.ndarray:
        a = as_numpy(actions) if isinstance(actions, torch.Tensor) else np.asarray(actions)
        if a.dtype != np.int64 and a.dtype != np.int32:
            a = a.astype(np.int64)
        return a.reshape(-1)

    def _make_step(self, obs, reward, terminated, truncated, info) -> StepArrays:  # noqa: ANN001 - numpy arrays
        observation = self._obs(obs)
        done = terminated | truncated
        reward = reward.astype(np.float32, copy=False)
        next_observation = observation
        if np.count_nonzero(done):
            rows = done.nonzero()[0]
            final = obs.copy()
            final[rows] = info["final_obs"][rows]  # only done rows of final_obs are valid
            next_observation = torch.from_numpy(final)
        score = reward
        if self._clip:
            reward = np.minimum(np.maximum(reward, -1.0), 1.0)  # = np.clip, without its Python overhead
        return StepArrays(next_observation, reward, terminated, truncated, observation, score)

    def _check_sync(self, what: str) -> None:
        if self.batch_size != self.num_envs:
            raise RuntimeError(
                f"AtariEnv.{what} needs batch_size == num_envs; with batch_size={self.batch_size} "
                "use async_reset/send/recv"
            )

    # ----- synchronous API (the BatchedEnv contract) -------------------------------------------------------
    def reset(self) -> torch.Tensor:
        self._check_sync("reset")
        obs, _ = self.env.reset(seed=np.asarray(self.seeds, dtype=np.int64))
        return self._obs(obs)

    def step(self, actions: torch.Tensor) -> Step:
        self._check_sync("step")
        self.env.send(self._actions(actions))
        return self._make_step(*self.env.recv()).to_step()

    # non-blocking halves of step(): the C++ threads step while the caller computes (alternating sampler)
    def step_async(self, actions: torch.Tensor) -> None:
        self._check_sync("step_async")
        self.env.send(self._actions(actions))

    def step_wait(self) -> Step:
        return self._make_step(*self.env.recv()).to_step()

    def step_wait_arrays(self) -> StepArrays:
        return self._make_step(*self.env.recv())

    # ----- envpool-style async batches (batch_size < num_envs) -----------------------------------------
    def async_reset(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Reset all envs; return the first batch ``(observation [b, ...], env_ids [b])``."""
        obs, info = self.env.reset(seed=np.asarray(self.seeds, dtype=np.int64))
        self._last_ids = np.asarray(info["env_id"])
        return self._obs(obs), torch.from_numpy(self._last_ids.astype(np.int64))

    def send(self, actions: torch.Tensor, env_ids: torch.Tensor | np.ndarray | None = None) -> None:
        """Actions for the envs of the last received batch (ALE's rule: ``env_ids`` must be those, in order)."""
        if self._last_ids is None:
            raise RuntimeError("call async_reset() before send()")
        if env_ids is not None:
            ids = env_ids.cpu().numpy() if isinstance(env_ids, torch.Tensor) else np.asarray(env_ids)
            if not np.array_equal(ids, self._last_ids):
                raise ValueError(
                    f"AtariVectorEnv steps the envs of the last received batch {self._last_ids.tolist()}, "
                    f"got env_ids {ids.tolist()}"
                )
        self.env.send(self._actions(actions))
        self._last_ids = None

    def recv(self) -> tuple[Step, torch.Tensor]:
        """The next ``batch_size`` envs to finish: ``(Step [b], env_ids [b])`` (same-step autoreset rows)."""
        obs, reward, terminated, truncated, info = self.env.recv()
        self._last_ids = np.asarray(info["env_id"])
        step = self._make_step(obs, reward, terminated, truncated, info).to_step()
        return step, torch.from_numpy(self._last_ids.astype(np.int64))

    # ----- groups for the alternating sampler --------------------------------------------------------------
    def split(self, num_groups: int) -> list[AtariEnv]:
        """Close this env and return ``num_groups`` envs over the same games and seeds (env i keeps its seed)."""
        if self.num_envs % num_groups:
            raise ConfigError(f"num_envs={self.num_envs} does not split into {num_groups} equal groups")
        size = self.num_envs // num_groups
        self.close()
        return [
            AtariEnv(
                self.env_id,
                size,
                **self.protocol,
                **self._backend,
                pin_memory=self.pin_memory,
                seeds=self.seeds[g * size : (g + 1) * size],
            )
            for g in range(num_groups)
        ]

    def render(self) -> list:
        """The latest preprocessed frame of each env as RGB ``uint8 [H, W, 3]`` (cheap; not the raw screen)."""
        if self._last_obs is None:
            raise RuntimeError("render() before reset()")
        return [np.repeat(o[-1][..., None], 3, axis=-1) for o in self._last_obs]

    def close(self) -> None:
        env = getattr(self, "env", None)
        if env is not None:
            env.close()
            self.env = None


# ----- Gymnasium alternative: AsyncVectorEnv + AtariPreprocessing + FrameStackObservation ----------------
def _fire_reset(env: Any) -> Any:
    import gymnasium as gym

    class FireReset(gym.Wrapper):
        """Press FIRE after reset in games that need it to start (as ALE's ``use_fire_reset``)."""

        def reset(self, **kwargs: Any) -> Any:
            obs, info = self.env.reset(**kwargs)
            obs, _, terminated, truncated, info = self.env.step(1)
            if terminated or truncated:
                obs, info = self.env.reset(**kwargs)
            return obs, info

    meanings = env.unwrapped.get_action_meanings()
    return FireReset(env) if len(meanings) >= 3 and meanings[1] == "FIRE" else env


def _gym_atari_thunk(game: str, protocol: dict[str, Any]) -> Any:
    def thunk() -> Any:
        from ale_py.env import AtariEnv as AleGymEnv
        from gymnasium.wrappers import AtariPreprocessing, ClipReward, FrameStackObservation

        env = AleGymEnv(
            game,
            frameskip=1,  # AtariPreprocessing skips (with max-pool)
            repeat_action_probability=protocol["repeat_action_probability"],
            full_action_space=protocol["full_action_space"],
            max_num_frames_per_episode=protocol["max_num_frames_per_episode"],
        )
        env = AtariPreprocessing(
            env,
            noop_max=protocol["noop_max"],
            frame_skip=protocol["frameskip"],
            screen_size=(protocol["img_width"], protocol["img_height"]),
            terminal_on_life_loss=protocol["episodic_life"] or protocol["life_loss_info"],
            grayscale_obs=True,
        )
        if protocol["use_fire_reset"]:
            env = _fire_reset(env)
        if protocol["reward_clipping"]:
            env = ClipReward(env, -1.0, 1.0)
        return FrameStackObservation(env, protocol["stack_num"], padding_type="zero")

    return thunk


def make_gym_atari_env(
    env_id: str,
    num_envs: int = 8,
    seed: int = 0,
    rank: int = 0,
    env_kwargs: dict[str, Any] | None = None,
    vectorization: str = "async",
) -> BatchedEnv:
    """The same protocol and observation layout ([4, 84, 84] uint8) through Gymnasium's vector envs.

    Slower than :class:`AtariEnv` (one Python process per env, preprocessing in Python); kept as the
    reference implementation of the protocol and for users who add their own Gymnasium wrappers.
    """
    from lightning_accelrl.envs.gym import GymVectorEnv, vector_env

    game = ale_game(env_id)
    protocol, _ = _protocol(env_kwargs)
    fns = [_gym_atari_thunk(game, protocol) for _ in range(num_envs)]
    venv = vector_env(fns, "sync" if vectorization == "sync" else "async")
    return GymVectorEnv(venv, seed=seed, rank=rank, frame_stack=protocol["stack_num"])


def make_atari_env(
    env_id: str,
    num_envs: int = 8,
    seed: int = 0,
    rank: int = 0,
    vectorization: str = "auto",
    env_kwargs: dict[str, Any] | None = None,
) -> BatchedEnv:
    """``auto``/``ale``: :class:`AtariEnv`; ``async``/``sync``: Gymnasium vector envs with the same protocol."""
    if vectorization in ("auto", "ale"):
        protocol, backend = _protocol(env_kwargs)
        return AtariEnv(env_id, num_envs, seed, rank, **protocol, **backend)
    if vectorization in ("async", "sync"):
        return make_gym_atari_env(env_id, num_envs, seed, rank, env_kwargs, vectorization)
    raise ConfigError(f"vectorization must be auto, ale, sync or async for Atari, got {vectorization!r}")
