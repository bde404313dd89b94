"""Videos: files decode to episode length + 1 frames; ``accelrl evaluate --video``; the VideoEvaluation callback."""

from __future__ import annotations

import csv
import ctypes.util
import json
from pathlib import Path

import gymnasium as gym
import lightning as L
import numpy as np
import pytest
import torch
from foundation_helpers import trainer_kwargs
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from lightning_accelrl import PPO, ExperienceDataModule, cli
from lightning_accelrl.callbacks import VideoEvaluation
from lightning_accelrl.envs import probe_spec
from lightning_accelrl.errors import ConfigError
from lightning_accelrl.video import count_frames, record_episodes, video_format, write_video

pytest.importorskip("imageio")


def test_ffmpeg_is_available_so_videos_are_mp4() -> None:
    assert video_format() == "mp4"  # imageio-ffmpeg ships its own ffmpeg binary


@pytest.mark.parametrize("fmt", ["mp4", "gif"])
def test_written_video_decodes_to_every_frame(tmp_path: Path, fmt: str) -> None:
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (33, 47, 3), dtype=np.uint8) for _ in range(17)]  # odd sides are padded
    path = write_video(frames, tmp_path / "clip", fps=20, fmt=fmt)
    assert path.suffix == f".{fmt}" and path.stat().st_size > 0
    assert count_frames(path) == 17


def test_float_frames_in_0_1_and_small_grids_are_filmed_visibly(tmp_path: Path) -> None:
    """MinAtar renders 10x10 float colours in [0, 1]: scaled to 0..255 and enlarged pixel for pixel."""
    import imageio.v3 as iio

    grid = np.zeros((10, 10, 3))
    grid[2:4, 5:7] = (1.0, 0.5, 0.25)
    path = write_video([grid] * 3, tmp_path / "grid", fps=10, fmt="gif")  # GIF: lossless colours
    frames = iio.imread(path, index=None)
    assert frames.shape[1:3] == (160, 160)  # 16x, every cell a 16x16 square
    assert tuple(frames[0, 2 * 16 + 8, 5 * 16 + 8, :3]) == (255, 128, 64)
    assert tuple(frames[0, 0, 0, :3]) == (0, 0, 0)


def untrained_ppo(env_id: str = "CartPole-v1") -> PPO:
    model = PPO(hidden=(8,), env_spec=probe_spec(env_id).to_dict())
    model.configure_model()
    return model.eval()


def test_record_episodes_cartpole_one_frame_per_step_plus_reset(tmp_path: Path) -> None:
    result = record_episodes(untrained_ppo(), "CartPole-v1", 2, tmp_path, seed=5, deterministic=False)
    assert result["episodes"] == 2 and len(result["videos"]) == 2
    for video, length, frames, ret in zip(
        result["videos"], result["lengths"], result["frames"], result["returns"]
    ):
        assert Path(video).suffix == ".mp4" and frames == length + 1
        assert count_frames(video) == length + 1
        assert ret == length  # CartPole: +1 per step


class RandomAgent:
    device = "cpu"
    policy_version = 0

    def set_env_steps(self, env_steps: int, total_env_steps: int) -> None:
        pass

    def __init__(self, n: int) -> None:
        self.n = n
        self.g = torch.Generator().manual_seed(0)

    def policy(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        assert obs.shape == (1, 4, 84, 84) and obs.dtype == torch.uint8  # what the agent trained on
        return torch.randint(0, self.n, (obs.shape[0],), generator=self.g)


def test_record_atari_raw_rgb_screens(tmp_path: Path) -> None:
    pytest.importorskip("ale_py")
    result = record_episodes(RandomAgent(6), "ALE/Pong-v5", 1, tmp_path, max_steps=30)
    assert result["lengths"] == [30] and count_frames(result["videos"][0]) == 31
    import imageio.v2 as imageio

    with imageio.get_reader(result["videos"][0], format="FFMPEG") as reader:
        assert reader.get_data(0).shape == (210, 160, 3)  # the game screen, not the 84x84 observation


class ZeroTorques:
    """Continuous actions of zeros (a MuJoCo env's standing start)."""

    device = "cpu"

    def __init__(self, action_dim: int) -> None:
        self.action_dim = action_dim

    def policy(self, obs: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        return torch.zeros(obs.shape[0], self.action_dim)


@pytest.mark.skipif(ctypes.util.find_library("EGL") is None, reason="no libEGL on this machine")
def test_mujoco_videos_render_without_a_display(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("mujoco")
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "MUJOCO_GL"):
        monkeypatch.delenv(name, raising=False)  # Gymnasium would try GLFW first and fail at the first frame
    result = record_episodes(ZeroTorques(3), "Hopper-v5", 1, tmp_path, max_steps=5)
    assert result["frames"] == [result["lengths"][0] + 1]
    assert count_frames(result["videos"][0]) == result["lengths"][0] + 1


class UnrenderableCartPole(gym.Wrapper):
    def render(self) -> None:
        raise RuntimeError("no OpenGL context\nmore lines of the back-end's report")


def test_an_env_that_cannot_render_is_a_one_line_config_error(tmp_path: Path) -> None:
    gym.register(
        "UnrenderableCartPole-v0",
        entry_point=lambda **kw: UnrenderableCartPole(gym.make("CartPole-v1", **kw)),
    )
    try:
        with pytest.raises(
            ConfigError,
            match=r"could not render a frame for the video \(RuntimeError: no OpenGL "
            r"context\); MuJoCo envs render through MUJOCO_GL",
        ):
            record_episodes(untrained_ppo(), "UnrenderableCartPole-v0", 1, tmp_path)
    finally:
        gym.registry.pop("UnrenderableCartPole-v0")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ckpt")
    L.seed_everything(0, verbose=False)
    dm = ExperienceDataModule(
        "CartPole-v1", num_envs=4, rollout_steps=16, total_env_steps=128, updates_per_epoch=2
    )
    trainer = L.Trainer(
        **trainer_kwargs(enable_checkpointing=True),
        max_epochs=-1,
        default_root_dir=root,
        callbacks=[ModelCheckpoint(dirpath=root, save_last=True)],
    )
    trainer.fit(PPO(hidden=(8,)), datamodule=dm)
    return root / "last.ckpt"


def test_evaluate_with_video_cli(checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert (
        cli.main(["evaluate", "--ckpt", str(checkpoint), "--episodes", "3", "--video", str(tmp_path / "v")])
        == 0
    )
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["episodes"] == 3 and sorted(Path(v).name for v in result["videos"]) == [
        "episode_000.mp4",
        "episode_001.mp4",
        "episode_002.mp4",
    ]
    for video, length in zip(result["videos"], result["lengths"]):
        assert count_frames(video) == length + 1
    # the same episodes as plain evaluate: episode i is seeded seed + i in both (greedy policy, same dynamics)
    assert cli.main(["evaluate", "--ckpt", str(checkpoint), "--episodes", "3"]) == 0
    plain = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert sorted(plain["returns"]) == sorted(result["returns"])


def test_evaluate_video_into_a_file_is_one_line_error(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    target = tmp_path / "a_file"
    target.write_text("x")
    assert cli.main(["evaluate", "--ckpt", str(checkpoint), "--video", str(target)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("accelrl: error: --video") and "is a file" in err[0]


def test_video_evaluation_callback_records_and_logs_during_fit(tmp_path: Path) -> None:
    L.seed_everything(0, verbose=False)
    dm = ExperienceDataModule(
        "CartPole-v1", num_envs=4, rollout_steps=16, total_env_steps=256, updates_per_epoch=2
    )
    callback = VideoEvaluation(every_n_env_steps=128, episodes=2, video_dir="videos", max_episode_steps=40)
    logger = CSVLogger(tmp_path, name="run")
    trainer = L.Trainer(**trainer_kwargs(logger=logger), max_epochs=-1, callbacks=[callback])
    trainer.fit(PPO(hidden=(8,)), datamodule=dm)
    assert [r["env_steps"] for r in callback.results] == [128, 256]  # at 128 and 256 (the end: no second one)
    for r in callback.results:
        folder = Path(logger.log_dir) / "videos" / f"env_steps_{r['env_steps']}"
        videos = sorted(folder.glob("episode_*.mp4"))
        assert len(videos) == 2
        assert [count_frames(v) for v in videos] == [n + 1 for n in r["lengths"]]
    with open(Path(logger.log_dir) / "metrics.csv", newline="") as f:
        rows = [row for row in csv.DictReader(f) if row.get("eval/return_mean")]
    assert [float(row["env_steps"]) for row in rows] == [128.0, 256.0]
    assert [float(row["eval/return_mean"]) for row in rows] == pytest.approx(
        [r["return_mean"] for r in callback.results]
    )
