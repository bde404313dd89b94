"""The zoo recipes (Acrobot, MountainCar, LunarLander): each header states its rl-zoo target, budget and
source, the YAML agrees with the header, and ``accelrl fit --recipe NAME`` runs a few hundred env steps end to
end.

The learning proof (seeds 0, 1 and 2 over the whole budget, 5 to 25 minutes a seed on 2 CPU cores) is in
``benchmarks/RESULTS.md``, section "Classic-control zoo" (``python benchmarks/learning_report.py --recipes
NAME --seeds 0 1 2 --runs DIR --md FILE``), not in the suite.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

RECIPES_DIR = Path(__file__).parents[2] / "lightning_accelrl" / "recipes"
CLI = [sys.executable, "-m", "lightning_accelrl.cli"]
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
SHORT_REPLAY = [
    "--data.total_env_steps",
    "600",
    "--data.learning_starts",
    "300",
    "--summary.eval_episodes",
    "1",
]

# recipe -> (env, rl-zoo target, overrides that shorten the run to a few hundred env steps)
ZOO = {
    "dqn-acrobot": ("Acrobot-v1", -76.6, SHORT_REPLAY),
    "a2c-acrobot": ("Acrobot-v1", -83.4, ["--data.total_env_steps", "400"]),
    "ppo-acrobot": ("Acrobot-v1", -73.5, ["--data.total_env_steps", "400", "--data.rollout_steps", "16"]),
    "dqn-lunarlander": ("LunarLander-v3", 154, SHORT_REPLAY),
    "dqn-mountaincar": ("MountainCar-v0", -101, SHORT_REPLAY),
    "ppo-mountaincar": ("MountainCar-v0", -110, ["--data.total_env_steps", "1024"]),
    "ppo-lunarlander": (
        "LunarLander-v3",
        242,
        ["--data.total_env_steps", "400", "--data.rollout_steps", "16", "--summary.eval_episodes", "1"],
    ),
}
# recipe -> the module its env needs (an optional extra), skipped where it is not installed
NEEDS = {"ppo-lunarlander": "Box2D", "dqn-lunarlander": "Box2D"}


def header(path: Path) -> str:
    """The comment lines at the top of a recipe."""
    lines = path.read_text().splitlines()
    return "\n".join(line for line in lines[: next(i for i, x in enumerate(lines) if not x.startswith("#"))])


@pytest.mark.parametrize("recipe", sorted(ZOO))
def test_header_states_target_budget_and_source(recipe: str) -> None:
    path = RECIPES_DIR / f"{recipe}.yaml"
    env, target, _ = ZOO[recipe]
    config = yaml.safe_load(path.read_text())
    text = header(path)
    assert config["data"]["env"] == env
    assert config["summary"]["target_return"] == target
    assert "rl-zoo benchmark.md" in text, text
    assert f">= {target}" in text, text
    budget = config["data"]["total_env_steps"]
    assert f"{budget // 1000}k" in text or (budget % 1_000_000 == 0 and f"{budget // 1_000_000}M" in text), (
        text
    )


@pytest.mark.parametrize("recipe", sorted(ZOO))
def test_recipe_runs_a_few_hundred_steps(recipe: str, tmp_path: Path) -> None:
    env, target, short = ZOO[recipe]
    if recipe in NEEDS:
        pytest.importorskip(NEEDS[recipe])
    proc = subprocess.run(
        [*CLI, "fit", "--recipe", recipe, "--seed_everything", "0", *QUIET, *short],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("summary: "), proc.stdout[-2000:]
    summary = json.loads((tmp_path / last.removeprefix("summary: ")).read_text())
    budget = int(short[short.index("--data.total_env_steps") + 1])
    assert summary["env"] == env
    assert (
        budget <= summary["env_steps"] < budget + 16 * 16
    )  # the last batch may overshoot by one vector batch
    assert summary["updates"] > 0
    assert summary["target_return"] == target
