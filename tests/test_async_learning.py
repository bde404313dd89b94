"""Async DQN learns CartPole: the ``dqn-async-cartpole`` recipe reaches a training mean return of 475.

The run (2 sampler processes x 8 envs feeding a served replay table, the learner sampling it under the
SampleToInsertRatio limiter) happens in a script started with ``sys.executable`` in its own session, so that
every process it starts can be killed by process group if it hangs.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from process_helpers import run_in_own_group

RECIPE = Path(__file__).resolve().parents[1] / "lightning_accelrl" / "recipes" / "dqn-async-cartpole.yaml"

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch
    torch.set_num_threads(1)
    import lightning as L
    from lightning_accelrl import DQN, ExperienceDataModule

    class StopAtTarget(L.Callback):
        def __init__(self, target):
            self.target, self.reached, self.trajectory, self.next = target, None, [], 0

        def on_train_batch_end(self, trainer, pl_module, *args):
            dm = trainer.datamodule
            tr = dm.tracker
            if tr.recent_returns and dm.env_steps >= self.next:  # the curve, for the failure message
                self.trajectory.append((dm.env_steps, round(sum(tr.recent_returns) / len(tr.recent_returns))))
                self.next += 10_000
            if len(tr.recent_returns) == tr.recent_returns.maxlen and self.reached is None:
                mean = sum(tr.recent_returns) / len(tr.recent_returns)
                if mean >= self.target:
                    self.reached = {"env_steps": dm.env_steps, "wall_time_s": dm.wall_time, "mean": mean}
                    trainer.should_stop = True

    def main():
        cfg, out = json.loads(sys.argv[1]), sys.argv[2]
        L.seed_everything(cfg["seed"], verbose=False)
        model = DQN(**cfg["model"])
        dm = ExperienceDataModule(seed=cfg["seed"], **cfg["data"])
        stop = StopAtTarget(cfg["target"])
        trainer = L.Trainer(
            accelerator="cpu", max_epochs=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, log_every_n_steps=50, callbacks=[stop],
        )
        trainer.fit(model, datamodule=dm)
        tr = dm.tracker
        with open(out, "w") as f:
            json.dump({
                "reached": stop.reached, "env_steps": dm.env_steps, "updates": model.policy_version,
                "final_mean": sum(tr.recent_returns) / max(1, len(tr.recent_returns)), "lags": [lag for lag, n in sorted(dm.lags.histogram.items()) for _ in range(n)],
                "trajectory": stop.trajectory,
            }, f)

    if __name__ == "__main__":
        main()
    """
)


def recipe_config(seed: int) -> dict:
    recipe = yaml.safe_load(RECIPE.read_text())
    return {
        "seed": seed,
        "model": recipe["model"]["init_args"],
        "data": recipe["data"],
        "target": recipe["summary"]["target_return"],
    }


def test_recipe_is_async_dqn_with_a_stated_budget() -> None:
    cfg = recipe_config(0)
    assert cfg["data"]["sampler"] == "async" and cfg["data"]["num_sampler_procs"] >= 2
    assert cfg["target"] == 475
    assert cfg["data"]["total_env_steps"] <= 200_000


@pytest.mark.slow
def test_async_dqn_reaches_475_on_cartpole(tmp_path: Path) -> None:
    # Seed 0 of the recipe (budget 200k env steps). Measured on 2 cores, 2-3 runs at once: 475 at 60.5k-78.6k env
    # steps in 9 runs of seed 0; 30 of 30 runs over 18 seeds by 117k (benchmarks/RESULTS.md). An async run is not bit-reproducible
    # (timing decides what each sample sees), hence the margin in the budget.
    cfg = recipe_config(0)
    script, out = tmp_path / "run.py", tmp_path / "result.json"
    script.write_text(SCRIPT)
    cmd = [sys.executable, str(script), json.dumps(cfg), str(out)]
    code, text, _ = run_in_own_group(cmd, tmp_path, 900, "async DQN run")
    assert code == 0, text[-3000:]
    result = json.loads(out.read_text())
    assert result["reached"] is not None, (
        f"final training mean {result['final_mean']:.1f}; (env steps, mean) every 10k: {result['trajectory']}"
    )
    assert result["reached"]["mean"] >= 475
    assert result["reached"]["env_steps"] <= cfg["data"]["total_env_steps"]
    # really asynchronous: some batches were sampled while samplers acted with older weights
    assert max(result["lags"]) >= 1
