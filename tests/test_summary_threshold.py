"""RunSummary checks the target return on the batches that log the run statistics, and finds the first one."""

from __future__ import annotations

import lightning as L
import torch

from lightning_accelrl import PPO, ExperienceDataModule
from lightning_accelrl.callbacks.summary import RunSummary

NUM_ENVS, ROLLOUT, WINDOW, EVERY, TARGET = 4, 16, 5, 3, 12.0


class Record(L.Callback):
    """What the summary should find: per batch, the env steps, whether it logs, and the window's state."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, bool, float | None]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        dm = trainer.datamodule
        returns = dm.tracker.recent_returns
        mean = sum(returns) / len(returns) if len(returns) == WINDOW else None
        logs = trainer.should_stop or dm.updates_done % EVERY == 0
        self.rows.append((dm.env_steps, logs, mean))


def test_threshold_is_read_on_logging_batches(tmp_path) -> None:
    torch.manual_seed(0)
    dm = ExperienceDataModule(
        "CartPole-v1",
        num_envs=NUM_ENVS,
        rollout_steps=ROLLOUT,
        total_env_steps=40 * NUM_ENVS * ROLLOUT,
        episode_window=WINDOW,
        seed=0,
    )
    summary, record = RunSummary(target_return=TARGET), Record()
    trainer = L.Trainer(
        max_epochs=-1,
        log_every_n_steps=EVERY,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=[summary, record],
    )
    trainer.fit(PPO(update_epochs=1, minibatch_size=64), datamodule=dm)
    expected = next(
        steps for steps, logs, mean in record.rows if logs and mean is not None and mean >= TARGET
    )
    assert summary.reached is not None
    assert summary.reached["env_steps"] == expected
    assert expected % (EVERY * NUM_ENVS * ROLLOUT) == 0
