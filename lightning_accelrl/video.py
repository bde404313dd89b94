"""Videos of the agent playing: one file per episode, recorded from a separate single env.

Recording uses one plain (non-vector) env per episode, so the last frame is the true final state (vector envs
reset in the same step an episode ends) and any back-end can be filmed:
- Gymnasium ids: ``gymnasium.make(id, render_mode="rgb_array", **env_kwargs)``; frames from ``env.render()``.
- ``ALE/...`` ids: the Gymnasium implementation of our Atari protocol
  (:func:`lightning_accelrl.envs.atari.make_gym_atari_env`: same preprocessing, same observations as the
  C++ vector env the agent trained on); frames are the raw RGB screens (``ale.getScreenRGB()``), not the
  84x84 grayscale the agent sees.
- env factories (the user's own envs): ``factory(**env_kwargs)`` must return a ``gymnasium.Env`` made with
  ``render_mode="rgb_array"``; frames from ``env.render()``.
An episode of ``L`` steps gives ``L + 1`` frames (the reset frame, then one per step).

Files are MP4 (H.264, through imageio-ffmpeg's bundled ffmpeg binary) or, without imageio-ffmpeg, GIF.
Install with ``pip install 'lightning-accelrl[video]'``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lightning_accelrl.errors import ConfigError
from lightning_accelrl.evaluation import episode_statistics


def video_format() -> str:
    """``"mp4"`` when imageio-ffmpeg (and so an ffmpeg binary) is importable, else ``"gif"``."""
    try:
        import imageio_ffmpeg

        imageio_ffmpeg.get_ffmpeg_exe()
        return "mp4"
    except Exception:
        return "gif"


def _require_imageio() -> Any:
    try:
        import imageio.v2 as imageio
    except ImportError:
        raise ConfigError(
            "recording videos needs imageio: pip install 'lightning-accelrl[video]' (imageio, imageio-ffmpeg)"
        ) from None
    return imageio


def _even(frame: np.ndarray) -> np.ndarray:
    """H.264 in yuv420p needs even sides: pad by one edge row/column where needed (no resampling)."""
    h, w = frame.shape[:2]
    if h % 2 or w % 2:
        frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    return frame


MIN_SIDE = 160  # smaller frames (MinAtar's 10x10 grids) are enlarged, pixel for pixel, to at least this side


def _rgb(frame: Any) -> np.ndarray:
    """``uint8 [H, W, 3]``: gray frames repeated over 3 channels; float frames whose values lie in [0, 1] (MinAtar's
    colour palette) scaled to 0..255, other numbers clipped to it; small frames enlarged by an integer factor
    (nearest neighbour, so every cell stays a sharp square)."""
    a = np.asarray(frame)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=-1)
    if a.dtype != np.uint8:
        if np.issubdtype(a.dtype, np.floating) and a.size and a.min() >= 0.0 and a.max() <= 1.0:
            a = a * 255.0
        a = np.clip(np.rint(a), 0, 255).astype(np.uint8)
    factor = -(-MIN_SIDE // max(1, min(a.shape[:2])))  # ceil
    if factor > 1:
        a = a.repeat(factor, axis=0).repeat(factor, axis=1)
    return np.ascontiguousarray(a[..., :3])


def write_video(
    frames: Sequence[np.ndarray], path: str | Path, fps: float = 30.0, fmt: str | None = None
) -> Path:
    """Write RGB frames (``uint8 [H, W, 3]``, or what :func:`_rgb` turns into it); ``path``'s suffix is replaced by
    ``.mp4`` or ``.gif`` (``fmt``)."""
    if not frames:
        raise ValueError("no frames to write")
    imageio = _require_imageio()
    fmt = fmt or video_format()
    path = Path(path).with_suffix(f".{fmt}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "mp4":
        writer = imageio.get_writer(
            path,
            format="FFMPEG",  # type: ignore[arg-type]
            mode="I",
            fps=fps,
            codec="libx264",
            pixelformat="yuv420p",
            macro_block_size=1,  # sides are made even below; no resize
            quality=7,
            ffmpeg_log_level="error",
        )
        try:
            for frame in frames:
                writer.append_data(_even(_rgb(frame)))
        finally:
            writer.close()
    elif fmt == "gif":
        # Pillow merges identical consecutive frames (adding up their durations)
        imageio.mimsave(path, [_rgb(f) for f in frames], format="GIF", duration=1000.0 / fps, loop=0)  # type: ignore[arg-type]
    else:
        raise ValueError(f"unknown video format {fmt!r}: mp4 or gif")
    return path


def count_frames(path: str | Path) -> int:
    """Decode a video written by :func:`write_video` and count its frames."""
    imageio = _require_imageio()
    reader = imageio.get_reader(path, format="FFMPEG" if str(path).endswith(".mp4") else "GIF")  # type: ignore[arg-type]
    try:
        return sum(1 for _ in reader)
    finally:
        reader.close()


# ----- single envs that can be filmed --------------------------------------------------------------------------
class _FilmedEnv:
    """A single Gymnasium env with torch observations ``[1, ...]`` and an RGB ``frame()``."""

    def __init__(self, env: Any, frame_fn: Any, fps: float) -> None:
        import gymnasium as gym

        from lightning_accelrl.envs.spaces import ObservationEncoder, action_offset

        self.env = env
        self.frame = frame_fn
        self.fps = fps
        self.encoder = ObservationEncoder(env.observation_space)  # as in training: Dict/Discrete encoded
        space = env.action_space
        self.box = isinstance(space, gym.spaces.Box)
        self.offset = 0 if self.box else action_offset(space)
        self.low = np.asarray(space.low, dtype=np.float32) if self.box else None
        self.high = np.asarray(space.high, dtype=np.float32) if self.box else None

    def _obs(self, obs: Any) -> torch.Tensor:
        return self.encoder.one(obs).unsqueeze(0)

    def reset(self, seed: int) -> torch.Tensor:
        obs, _ = self.env.reset(seed=seed)
        return self._obs(obs)

    def step(self, action: torch.Tensor) -> tuple[torch.Tensor, float, bool]:
        a = action.detach().cpu().numpy()[0]
        a = np.clip(a, self.low, self.high) if self.box else a + self.offset
        if a.ndim == 0:
            a = int(a)
        obs, reward, terminated, truncated, _ = self.env.step(a)
        return self._obs(obs), float(reward), bool(terminated or truncated)

    def close(self) -> None:
        self.env.close()


def make_filmed_env(env: Any, env_kwargs: dict[str, Any] | None = None) -> _FilmedEnv:
    """A single env for ``env`` (an id or a factory) whose frames can be recorded (see the module docstring)."""
    import gymnasium as gym

    kwargs = dict(env_kwargs or {})
    _headless_rendering()
    if not isinstance(env, str):
        return _filmed_from_factory(env, kwargs)
    env_id = env
    if env_id.startswith("ALE/"):
        from lightning_accelrl.envs.atari import ATARI_DEFAULTS, make_gym_atari_env

        vec = make_gym_atari_env(env_id, 1, 0, 0, kwargs, vectorization="sync")
        single = vec.env.envs[0]  # GymVectorEnv -> SyncVectorEnv -> the wrapped single env
        ale = single.unwrapped.ale
        fps = 60.0 / max(
            1, int(kwargs.get("frameskip", ATARI_DEFAULTS["frameskip"]))
        )  # one frame per agent step, at real game speed
        return _FilmedEnv(single, ale.getScreenRGB, fps)
    from lightning_accelrl.envs.gym import check_env_id

    check_env_id(env_id)
    kwargs.pop("render_mode", None)
    # the env trained already, checked by Gymnasium then; here its checker only repeats warnings about rendering
    # that the frame conversion handles (MinAtar: float colours, no render_fps)
    kwargs.setdefault("disable_env_checker", True)
    made = gym.make(env_id, render_mode="rgb_array", **kwargs)
    fps = float(made.metadata.get("render_fps") or 30)
    return _FilmedEnv(made, _checked_render(made, env_id), fps)


def _headless_rendering() -> None:
    """Off-screen rendering needs no display: without this SDL (pygame) prints an XDG_RUNTIME_DIR "error", and
    MuJoCo envs try GLFW first, which needs a display and fails only at the first frame; EGL renders off-screen
    (on a GPU's driver or Mesa's software one). A user's own settings stand."""
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        os.environ.setdefault("MUJOCO_GL", "egl")


def _filmed_from_factory(factory: Any, kwargs: dict[str, Any]) -> _FilmedEnv:
    """The user's factory's env, filmed through its own ``render()``: it must be one Gymnasium env that renders
    RGB arrays (the factory decides how its env is made, so the render mode is its to set)."""
    import gymnasium as gym

    from lightning_accelrl.envs import env_name

    name = env_name(factory)
    made = factory(**kwargs)
    if not isinstance(made, gym.Env):
        raise ConfigError(
            f"videos film one gymnasium.Env, but the env factory {name} returns {type(made).__name__}: film a "
            "factory of single Gymnasium envs"
        )
    if made.render_mode != "rgb_array":
        made.close()
        raise ConfigError(
            f"the env factory {name} makes envs with render_mode={made.render_mode!r}; to film them, make them "
            "with render_mode='rgb_array' (e.g. gymnasium.make(id, render_mode='rgb_array'))"
        )
    fps = float(made.metadata.get("render_fps") or 30)
    return _FilmedEnv(made, _checked_render(made, name), fps)


def _checked_render(env: Any, name: str) -> Any:
    """``env.render``, with a failure to render turned into one line that says what to set."""

    def frame() -> Any:
        try:
            return env.render()
        except Exception as exc:  # the back-ends raise their own types (mujoco.FatalError, pygame.error, ...)
            first_line = str(exc).splitlines()[0] if str(exc) else ""
            raise ConfigError(
                f"{name} could not render a frame for the video ({type(exc).__name__}: {first_line}); MuJoCo "
                f"envs render through MUJOCO_GL (now {os.environ.get('MUJOCO_GL')!r}): without a display use egl "
                "(needs libEGL) or osmesa (needs libOSMesa)"
            ) from None

    return frame


@torch.no_grad()
def record_episodes(
    agent: Any,
    env: Any,
    episodes: int,
    video_dir: str | Path,
    seed: int = 1_000_003,
    deterministic: bool = True,
    env_kwargs: dict[str, Any] | None = None,
    max_steps: int | None = None,
    prefix: str = "episode",
    fps: float | None = None,
) -> dict[str, Any]:
    """Play ``episodes`` episodes of ``env`` (an id or a factory; episode i seeded ``seed + i``), one video file each
    in ``video_dir``.

    Returns the same statistics as :func:`~lightning_accelrl.evaluation.evaluate_policy` plus ``videos``
    (the paths) and ``frames`` (frames per video: episode length + 1). ``max_steps`` cuts long episodes.
    """
    if episodes < 1:
        raise ConfigError(f"episodes must be >= 1, got {episodes}")
    out = Path(video_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create video directory {str(out)!r}: {exc.strerror or exc}") from None
    device = torch.device(agent.device)
    returns: list[float] = []
    lengths: list[int] = []
    videos: list[str] = []
    frame_counts: list[int] = []
    filmed = make_filmed_env(env, env_kwargs)
    try:
        for i in range(episodes):
            obs = filmed.reset(seed + i)
            frames = [filmed.frame()]
            total, length, done = 0.0, 0, False
            while not done and (max_steps is None or length < max_steps):
                action = agent.policy(obs.to(device), deterministic=deterministic)
                obs, reward, done = filmed.step(action)
                total += reward
                length += 1
                frames.append(filmed.frame())
            path = write_video(frames, out / f"{prefix}_{i:03d}", fps=fps or filmed.fps)
            returns.append(total)
            lengths.append(length)
            videos.append(str(path))
            frame_counts.append(len(frames))
    finally:
        filmed.close()
    return {
        **episode_statistics(returns, lengths),
        "lengths": lengths,
        "videos": videos,
        "frames": frame_counts,
    }
