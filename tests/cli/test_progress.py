"""The progress bar of ``accelrl fit`` counts env steps of the budget, with speed and recent return."""

from __future__ import annotations

from pathlib import Path

from test_cli import accelrl

from lightning_accelrl.callbacks.progress import describe, si


def test_text_of_the_bar() -> None:
    metrics = {"env_steps_per_s": 6300.0, "episode_return_mean": 472.4}
    assert describe(64_256, 100_000, metrics) == "64,256/100,000 env steps · 6.3k steps/s · return 472"
    assert describe(512, 100_000, {"episode_return_mean": -21.37}) == "512/100,000 env steps · return -21.4"
    assert describe(0, 100_000, {"episode_return_mean": float("nan")}) == "0/100,000 env steps"
    assert describe(300, 0, {}) == "300 env steps"  # budget not known yet
    assert [si(v) for v in (950, 6300, 1.25e6, 3e9)] == ["950", "6.3k", "1.2M", "3.0G"]


def test_fit_shows_env_steps_of_the_budget_not_epochs(tmp_path: Path) -> None:
    budget = ["--data.total_env_steps", "1024", "--data.updates_per_epoch", "2", "--data.num_envs", "4"]
    proc = accelrl(
        "fit", "--recipe", "ppo-cartpole", *budget, "--trainer.enable_model_summary", "false", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "1,024/1,024 env steps" in proc.stdout and " steps/s" in proc.stdout
    assert "Epoch" not in proc.stdout


def test_a_module_that_is_not_an_rl_module_gets_lightnings_epoch_bar(capsys) -> None:  # noqa: ANN001
    import lightning as L
    from lightning.pytorch.demos.boring_classes import BoringModel

    from lightning_accelrl.callbacks.progress import EnvStepProgressBar

    trainer = L.Trainer(
        max_steps=3,
        callbacks=[EnvStepProgressBar()],
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        limit_val_batches=0,
        accelerator="cpu",
    )
    trainer.fit(BoringModel())
    out = capsys.readouterr().out
    assert "Epoch 0" in out and "env steps" not in out
