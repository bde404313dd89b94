"""Evaluation on the user's own envs. VideoEvaluation: env factories are played and filmed, a live env object is
refused at fit start with what to give instead, ``env=`` names another env to play, and the figures are ``accelrl
evaluate``'s. ``accelrl evaluate``: ``--env-factory``, ``--env``, ``--env-kwargs``, ``--ckpt RUN_DIR``. The summary
names a factory as ``--env-factory`` takes it."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import lightning as L
import pytest
from foundation_helpers import trainer_kwargs
from lightning.pytorch.callbacks import ModelCheckpoint
from user_envs import make_cartpole, make_filmable_cartpole

from lightning_accelrl import PPO, ExperienceDataModule, cli
from lightning_accelrl.callbacks import RunSummary, VideoEvaluation
from lightning_accelrl.errors import ConfigError
from lightning_accelrl.evaluation import EnvSource
from lightning_accelrl.video import count_frames


def fit(
    env: object, callback: VideoEvaluation, total: int = 256, extra: list | None = None, **trainer: object
) -> L.Trainer:
    L.seed_everything(0, verbose=False)
    dm = ExperienceDataModule(env, num_envs=4, rollout_steps=16, total_env_steps=total, updates_per_epoch=2)
    t = L.Trainer(**trainer_kwargs(**trainer), max_epochs=-1, callbacks=[callback, *(extra or [])])
    t.fit(PPO(hidden=(8,)), datamodule=dm)
    return t


def test_data_module_says_which_env_evaluation_builds() -> None:
    assert ExperienceDataModule("CartPole-v1", env_kwargs={"sutton_barto_reward": True}).evaluation_env() == (
        EnvSource("CartPole-v1", {"sutton_barto_reward": True}, "auto")
    )
    assert ExperienceDataModule(make_cartpole, vectorization="sync").evaluation_env() == EnvSource(
        make_cartpole, {}, "sync"
    )
    assert ExperienceDataModule(gym.make("CartPole-v1")).evaluation_env() is None  # the training env itself


def test_an_env_factory_is_evaluated_during_fit() -> None:
    callback = VideoEvaluation(every_n_env_steps=128, episodes=3)
    fit(make_cartpole, callback)
    assert [r["env_steps"] for r in callback.results] == [128, 256]
    assert all(r["episodes"] == 3 and r["return_mean"] >= 8 for r in callback.results)  # CartPole: ≥ 8 a game


def test_an_env_factory_that_renders_frames_is_filmed(tmp_path: Path) -> None:
    callback = VideoEvaluation(every_n_env_steps=256, episodes=2, video_dir=str(tmp_path / "videos"))
    fit(make_filmable_cartpole, callback)
    (result,) = callback.results
    videos = sorted((tmp_path / "videos" / "env_steps_256").glob("episode_*.mp4"))
    assert [count_frames(v) for v in videos] == [n + 1 for n in result["lengths"]]


def test_filming_a_factory_without_rgb_frames_stops_at_fit_start(tmp_path: Path) -> None:
    callback = VideoEvaluation(every_n_env_steps=128, episodes=2, video_dir=str(tmp_path / "videos"))
    with pytest.raises(
        ConfigError, match=r"factory user_envs:make_cartpole makes envs with render_mode=None; .*'rgb_array'"
    ):
        fit(make_cartpole, callback)
    assert callback.results == [] and not (tmp_path / "videos").exists()


def test_a_live_env_object_is_never_played_and_env_names_one_to_play() -> None:
    with pytest.raises(
        ConfigError, match=r"no env to play: .*VideoEvaluation\(env=<env id or env factory>\)"
    ):
        fit(gym.make("CartPole-v1"), VideoEvaluation(every_n_env_steps=128, episodes=2))
    callback = VideoEvaluation(every_n_env_steps=128, episodes=2, env=make_cartpole)
    fit(gym.make("CartPole-v1"), callback)
    assert [r["episodes"] for r in callback.results] == [2, 2]


def test_env_is_checked_when_the_callback_is_made() -> None:
    with pytest.raises(ConfigError, match="not a live env object"):
        VideoEvaluation(env=gym.make("CartPole-v1"))
    with pytest.raises(ConfigError, match="NoSuchEnv"):
        VideoEvaluation(env="NoSuchEnv-v0")
    with pytest.raises(ConfigError, match="env_kwargs apply to env="):
        VideoEvaluation(env_kwargs={"max_episode_steps": 50})


def test_an_env_of_another_shape_stops_at_fit_start() -> None:
    callback = VideoEvaluation(every_n_env_steps=128, episodes=2, env="Acrobot-v1")
    with pytest.raises(
        ConfigError,
        match=r"^VideoEvaluation\(env=Acrobot-v1\): its envs differ from those the policy trained on: "
        r"observation_shape \(6,\) \(trained on \(4,\)\); num_actions 3 \(trained on 2\)$",
    ):
        fit("CartPole-v1", callback)
    assert callback.results == []


def test_env_kwargs_reach_the_env_played() -> None:
    callback = VideoEvaluation(
        every_n_env_steps=256, episodes=4, env="CartPole-v1", env_kwargs={"max_episode_steps": 5}
    )
    fit("CartPole-v1", callback)
    assert callback.results[0]["length_mean"] <= 5


def test_the_figures_are_those_of_accelrl_evaluate_on_the_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """The evaluation at the end of fit and ``accelrl evaluate`` on the checkpoint written then play the same
    episodes with the same weights (episodes split over min(episodes, 8) envs, env i seeded seed + i)."""
    callback = VideoEvaluation(every_n_env_steps=10_000, episodes=5, seed=7)
    saving = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    fit("CartPole-v1", callback, total=512, extra=[saving], enable_checkpointing=True)
    (result,) = callback.results
    assert result["env_steps"] == 512
    capsys.readouterr()
    assert (
        cli.main(["evaluate", "--ckpt", str(tmp_path / "last.ckpt"), "--episodes", "5", "--seed", "7"]) == 0
    )
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["returns"] == result["returns"]


def test_the_summary_figure_is_that_of_accelrl_evaluate_on_the_data_modules_envs(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """``summary.json``'s ``eval_return_mean`` plays the episodes on the data module's own ``num_envs`` envs
    (4 here), so ``accelrl evaluate --num-envs 4 --seed S`` on the final checkpoint prints it."""
    summary = RunSummary(eval_episodes=6, eval_seed=7)
    saving = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    callback = VideoEvaluation(every_n_env_steps=10_000, at_fit_end=False)
    fit("CartPole-v1", callback, 512, [saving, summary], enable_checkpointing=True, default_root_dir=tmp_path)
    written = json.loads(summary.path.read_text())
    capsys.readouterr()
    args = ["--ckpt", str(tmp_path / "last.ckpt"), "--episodes", "6", "--seed", "7", "--num-envs", "4"]
    assert cli.main(["evaluate", *args]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert written["eval_episodes"] == 6
    assert printed["return_mean"] == pytest.approx(written["eval_return_mean"])


# ----- accelrl evaluate on the user's own envs -----------------------------------------------------------------
@pytest.fixture(scope="module")
def factory_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint of a run on an env factory: it records no env id."""
    folder = tmp_path_factory.mktemp("factory_run")
    fit(
        make_cartpole,
        VideoEvaluation(every_n_env_steps=10_000, at_fit_end=False),
        total=512,
        extra=[ModelCheckpoint(dirpath=folder, save_last=True)],
        enable_checkpointing=True,
    )
    return folder / "last.ckpt"


def evaluate(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, dict | str]:
    capsys.readouterr()
    code = cli.main(["evaluate", *args])
    out, err = capsys.readouterr()
    return code, json.loads(out.strip().splitlines()[-1]) if code == 0 else err.strip()


def test_evaluate_a_factory_run_with_env_factory(
    factory_checkpoint: Path, capsys: pytest.CaptureFixture
) -> None:
    code, err = evaluate(capsys, "--ckpt", str(factory_checkpoint))
    assert code == 2 and len(err.splitlines()) == 1
    assert "does not record a Gymnasium env id" in err and "--env-factory" in err
    code, mine = evaluate(
        capsys, "--ckpt", str(factory_checkpoint), "--env-factory", "user_envs:make_cartpole"
    )
    assert code == 0 and mine["env"] == "user_envs:make_cartpole" and mine["episodes"] == 10
    code, by_id = evaluate(capsys, "--ckpt", str(factory_checkpoint), "--env", "CartPole-v1")
    assert code == 0 and by_id["returns"] == mine["returns"]  # the same envs, seeded alike


def test_evaluate_films_a_factory_that_renders_frames(
    factory_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    args = ["--ckpt", str(factory_checkpoint), "--episodes", "2", "--video", str(tmp_path)]
    code, result = evaluate(capsys, *args, "--env-factory", "user_envs:make_filmable_cartpole")
    assert code == 0 and [count_frames(v) for v in result["videos"]] == [n + 1 for n in result["lengths"]]
    code, err = evaluate(capsys, *args, "--env-factory", "user_envs:make_cartpole")
    assert code == 2 and "render_mode='rgb_array'" in err and len(err.splitlines()) == 1


def test_evaluate_env_kwargs_reach_the_env(factory_checkpoint: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["--ckpt", str(factory_checkpoint), "--env", "CartPole-v1"]
    code, plain = evaluate(capsys, *args)
    assert code == 0 and max(plain["returns"]) > 6  # CartPole: the return is the episode's length
    code, cut = evaluate(capsys, *args, "--env-kwargs", '{"max_episode_steps": 6}')
    assert code == 0 and max(cut["returns"]) == 6


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--env", "Acrobot-v1"],
            "Acrobot-v1: its envs differ from those the policy trained on: observation_shape (6,)",
        ),
        (["--env", "CartPole-v1", "--env-kwargs", "{x"], "--env-kwargs is not JSON"),
        (["--env", "CartPole-v1", "--env-kwargs", "[1]"], "--env-kwargs must be a JSON object, got list"),
        (["--env-factory", "user_envs:nope"], "module 'user_envs' has no function or class 'nope'"),
        (["--env-factory", "no_such_module:make"], "No module named 'no_such_module'"),
        (["--env-factory", "make_env"], "give MODULE:NAME"),
        (["--env", "CartPole-v1", "--env-factory", "user_envs:make_cartpole"], "not allowed with"),
    ],
)
def test_evaluate_wrong_env_arguments_are_one_line(
    factory_checkpoint: Path, capsys: pytest.CaptureFixture, args: list[str], message: str
) -> None:
    code, err = evaluate(capsys, "--ckpt", str(factory_checkpoint), *args)
    assert code == 2 and len(err.splitlines()) == 1 and message in err


def test_evaluate_env_kwargs_are_added_to_the_checkpoints(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    L.seed_everything(0, verbose=False)
    dm = ExperienceDataModule(
        "CartPole-v1", num_envs=4, rollout_steps=16, total_env_steps=128, env_kwargs={"max_episode_steps": 7}
    )
    trainer = L.Trainer(
        **trainer_kwargs(enable_checkpointing=True),
        max_epochs=-1,
        callbacks=[ModelCheckpoint(dirpath=tmp_path, save_last=True)],
    )
    trainer.fit(PPO(hidden=(8,)), datamodule=dm)
    args = ["--ckpt", str(tmp_path / "last.ckpt")]
    code, kept = evaluate(capsys, *args, "--env-kwargs", '{"sutton_barto_reward": true}')
    assert code == 0 and max(kept["returns"]) == 0.0  # Sutton & Barto's reward: 0 a step, -1 at a fall
    code, cut = evaluate(capsys, *args)
    assert code == 0 and max(cut["returns"]) <= 7  # the checkpoint's max_episode_steps
    code, replaced = evaluate(capsys, *args, "--env", "CartPole-v1")
    assert code == 0 and max(replaced["returns"]) > 7  # --env: only --env-kwargs apply


def test_summary_names_a_factory_as_accelrl_evaluate_takes_it(tmp_path: Path) -> None:
    from lightning.pytorch.loggers import CSVLogger

    from lightning_accelrl.callbacks import RunSummary

    summary = RunSummary(eval_episodes=2)
    fit(
        make_cartpole,
        VideoEvaluation(at_fit_end=False),
        total=128,
        extra=[summary],
        logger=CSVLogger(tmp_path),
    )
    written = json.loads(summary.path.read_text())
    assert written["env"] == "user_envs:make_cartpole" and written["eval_episodes"] == 2


def test_evaluate_a_run_folder_takes_its_newest_last_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    for version in ("version_0", "version_1"):
        folder = tmp_path / "runs" / "ppo" / version / "checkpoints"
        fit(
            "CartPole-v1",
            VideoEvaluation(at_fit_end=False),
            total=64,
            extra=[ModelCheckpoint(folder, save_last=True)],
            enable_checkpointing=True,
        )
    newest = str(tmp_path / "runs" / "ppo" / "version_1" / "checkpoints" / "last.ckpt")
    code, result = evaluate(capsys, "--ckpt", str(tmp_path / "runs"), "--episodes", "2")
    assert code == 0 and result["ckpt"] == newest
    (tmp_path / "empty").mkdir()
    code, err = evaluate(capsys, "--ckpt", str(tmp_path / "empty"))
    assert code == 2 and "no last.ckpt below this folder" in err and len(err.splitlines()) == 1


def test_evaluate_env_kwargs_that_reshape_the_env_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    saving = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    fit(
        "FrozenLake-v1",
        VideoEvaluation(at_fit_end=False),
        total=128,
        extra=[saving],
        enable_checkpointing=True,
    )
    code, err = evaluate(capsys, "--ckpt", str(tmp_path / "last.ckpt"), "--env-kwargs", '{"map_name": "8x8"}')
    assert code == 2 and len(err.splitlines()) == 1
    assert (
        "FrozenLake-v1: its envs differ from those the policy trained on: observation_shape (64,) (trained on (16,))"
        in err
    )
