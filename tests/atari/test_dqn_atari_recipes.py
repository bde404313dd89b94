"""Smoke tests of the DQN-family Atari recipes: a few hundred env steps through the CLI, replay on deduplicated frames."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ale_py")

SMALL = [
    "--data.total_env_steps", "400",
    "--data.learning_starts", "64",
    "--data.replay_capacity", "2000",
    "--data.num_envs", "4",
    "--trainer.accelerator", "cpu",
    "--trainer.enable_progress_bar", "false",
    "--trainer.enable_model_summary", "false",
]  # fmt: skip


@pytest.mark.parametrize(("recipe", "algorithm"), [("dqn-pong", "DQN"), ("c51-breakout", "CategoricalDQN")])
def test_dqn_family_atari_recipe_runs(tmp_path: Path, recipe: str, algorithm: str) -> None:
    cmd = [sys.executable, "-m", "lightning_accelrl.cli", "fit", "--recipe", recipe, *SMALL]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(
        (tmp_path / proc.stdout.strip().splitlines()[-1].removeprefix("summary: ")).read_text()
    )
    assert summary["algorithm"] == algorithm and summary["env_steps"] == 400
    assert summary["updates"] > 0  # learning started after 64 transitions, at replay ratio 8 with batch 32


def test_replay_on_atari_uses_frame_deduplicated_storage() -> None:
    import lightning as L
    import torch

    from lightning_accelrl import DQN, ExperienceDataModule
    from lightning_accelrl.replay import FrameStackStorage

    L.seed_everything(0, verbose=False)
    dm = ExperienceDataModule(
        "ALE/Pong-v5", num_envs=2, total_env_steps=200, batch_size=16, learning_starts=32, replay_capacity=500
    )
    trainer = L.Trainer(
        accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False, max_epochs=-1
    )
    trainer.fit(DQN(network="nature_cnn", target_update_period=10), datamodule=dm)
    table = dm.source.table
    assert isinstance(table.storage, FrameStackStorage)
    # each 84x84 frame stored once: one new frame per transition, plus the first stack of each env's episode
    assert table.storage.num_frames <= table.size + 4 * 2
    batch = table.storage.read(torch.arange(8))  # the first 8 items, bypassing the limiter
    assert (
        batch["observation"].shape == (8, 4, 84, 84)
        and batch["next", "observation"].dtype == batch["observation"].dtype
    )
    # the newest frames of s and the oldest three of s' coincide for one-step transitions inside an episode
    inside = batch["bootstrap_discount"].reshape(-1) > 0
    assert (batch["observation"][inside, 1:] == batch["next", "observation"][inside, :3]).all()
