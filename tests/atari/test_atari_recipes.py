"""Smoke test per Atari recipe: ``accelrl fit --recipe X`` with a tiny budget exits 0 and writes summary.json."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ale_py")

QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
SMALL = {
    # 2 updates of 4 envs x 32 steps, one epoch of 2 minibatches each
    "ppo": [
        "--data.rollout_steps",
        "32",
        "--data.total_env_steps",
        "256",
        "--model.init_args.update_epochs",
        "1",
    ],
    "a2c": ["--data.total_env_steps", "200"],  # 10 updates of 4 envs x 5 steps
}


@pytest.mark.parametrize("recipe", ["ppo-pong", "ppo-breakout", "a2c-pong", "a2c-breakout"])
def test_recipe_smoke(recipe: str, tmp_path: Path) -> None:
    algo = recipe.split("-")[0]
    extra = ["--model.init_args.minibatch_size", "64"] if algo == "ppo" else []
    cmd = [sys.executable, "-m", "lightning_accelrl.cli", "fit", "--recipe", recipe, "--data.num_envs", "4"]
    proc = subprocess.run(
        [*cmd, *SMALL[algo], *extra, *QUIET], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("summary: "), proc.stdout[-2000:]
    summary = json.loads((tmp_path / last.removeprefix("summary: ")).read_text())
    assert summary["env"].startswith("ALE/") and summary["env_steps"] >= 200
    assert summary["algorithm"] == algo.upper()


def test_summary_reports_the_game_score_beside_the_clipped_return(tmp_path: Path) -> None:
    # Space Invaders (aliens are worth 5-30 points) with episodes cut at 200 frames: 8 episodes in 400 env steps
    cmd = [sys.executable, "-m", "lightning_accelrl.cli", "fit", "--recipe", "a2c-breakout"]
    args = ["--data.env", "ALE/SpaceInvaders-v5", "--data.num_envs", "4", "--data.total_env_steps", "400"]
    args += ["--data.env_kwargs", '{"max_num_frames_per_episode": 200}']
    proc = subprocess.run([*cmd, *args, *QUIET], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    path = tmp_path / proc.stdout.strip().splitlines()[-1].removeprefix("summary: ")
    summary = json.loads(path.read_text())
    assert summary["episodes"] >= 8
    assert summary["episode_score_mean"] > summary["episode_return_mean"] > 0
    metrics = (path.parent / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "episode_score_mean" in metrics  # logged, not only summarised
