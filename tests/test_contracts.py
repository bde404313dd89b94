"""The seams between experience and algorithms, as a user's own Lightning project meets them.

- algorithm ↔ data: an algorithm declares its needs; the data module checks them at setup; any other data source
  fails at the start of fit in one line (never a silent fallback);
- push, not pull: the source's env-step count drives the schedules;
- experience sources: a user's own source plugs in through a factory, without editing the data module;
- a user's callbacks (``ModelCheckpoint`` on ``episode_return_mean``) see the run statistics.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from foundation_helpers import trainer_kwargs
from lightning.pytorch.callbacks import ModelCheckpoint
from tensordict import TensorDict

from lightning_accelrl import DQN, PPO, ExperienceDataModule
from lightning_accelrl.data import ExperienceNeeds, ExperienceSource, SourceContext, register_source
from lightning_accelrl.data.rollouts import RolloutSource
from lightning_accelrl.errors import ConfigError


def test_dqn_with_a_plain_dataloader_fails_at_fit_start_in_one_line() -> None:
    """No silent ε = 1 forever: without an experience source the algorithm refuses to start."""
    spec = ExperienceDataModule("CartPole-v1").env_spec.to_dict()
    model = DQN(env_spec=spec, hidden=(8,))
    loader = torch.utils.data.DataLoader(torch.zeros(8, 4), batch_size=4)
    with pytest.raises(ConfigError) as err:
        L.Trainer(**trainer_kwargs(max_epochs=1)).fit(model, train_dataloaders=loader)
    message = str(err.value)
    assert "\n" not in message
    assert (
        "DQN trains on replay samples of 1-step transitions" in message and "ExperienceDataModule" in message
    )
    assert model.policy_version == 0  # nothing was trained


def test_data_module_refuses_a_module_that_is_not_an_rl_algorithm() -> None:
    class Plain(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(4, 2)

        def training_step(self, batch, batch_idx):  # noqa: ANN001
            return self.layer(batch["observation"].float()).sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    with pytest.raises(ConfigError, match="declare experience_needs"):
        L.Trainer(**trainer_kwargs(max_epochs=1)).fit(Plain(), datamodule=ExperienceDataModule("CartPole-v1"))


def test_needs_are_checked_against_the_env_at_setup() -> None:
    """DQN needs discrete actions: Pendulum's Box actions are refused before any env is stepped."""
    dm = ExperienceDataModule("Pendulum-v1", num_envs=2, total_env_steps=100)
    with pytest.raises(ConfigError, match="DQN needs a discrete action space") as err:
        L.Trainer(**trainer_kwargs(max_epochs=1)).fit(DQN(hidden=(8,)), datamodule=dm)
    assert "\n" not in str(err.value)
    assert "(a Box of 1 dimension): use SAC, TD3" in str(err.value)  # names the algorithms that fit
    assert dm.source is None


@pytest.mark.parametrize(
    "needs",
    [
        ExperienceNeeds(kind="rollout", updates_per_batch=2),
        ExperienceNeeds(kind="replay", updates_per_batch=0),
    ],
)
def test_updates_per_batch_is_refused_where_it_means_nothing(needs: ExperienceNeeds) -> None:
    """A user's algorithm may declare any needs: K updates per batch must be >= 1, and replay only."""
    from lightning_accelrl.data.settings import check_needs

    spec = ExperienceDataModule("CartPole-v1").env_spec
    with pytest.raises(ConfigError, match="updates per batch: use 1 or more, with replay only"):
        check_needs(needs, spec, "MyAlgorithm")


def test_schedules_follow_the_pushed_env_steps() -> None:
    """ε is a function of the env steps the source pushed, not of anything read from a Trainer."""
    model = DQN(exploration_initial=1.0, exploration_final=0.1, exploration_fraction=0.5)
    assert model.epsilon == 1.0  # nothing pushed yet
    model.set_env_steps(25_000, 100_000)
    assert model.epsilon == pytest.approx(0.55)
    model.set_env_steps(50_000, 100_000)
    assert model.epsilon == pytest.approx(0.1)


def test_sync_replay_pushes_env_steps_while_acting() -> None:
    """Each env step of the sync replay source is taken with the ε of the env steps collected so far."""
    L.seed_everything(0, verbose=False)
    seen: list[tuple[int, float]] = []

    class Recording(DQN):
        def act(self, observation: torch.Tensor) -> dict[str, torch.Tensor]:
            seen.append((self.env_steps, self.epsilon))
            return super().act(observation)

    dm = ExperienceDataModule(
        "CartPole-v1", num_envs=2, total_env_steps=400, learning_starts=50, batch_size=16
    )
    model = Recording(hidden=(8,), exploration_fraction=0.5, exploration_final=0.0)
    L.Trainer(**trainer_kwargs(max_epochs=-1)).fit(model, datamodule=dm)
    steps = [s for s, _ in seen]
    assert steps == list(range(0, 400, 2))  # pushed before every vector step: 0, 2, 4, ...
    assert seen[0][1] == 1.0 and seen[-1][1] == pytest.approx(0.0)
    assert all(a >= b for (_, a), (_, b) in zip(seen, seen[1:], strict=False))  # ε only goes down
    assert model.progress == pytest.approx(398 / 400) or model.progress == 1.0


class CountingSource(ExperienceSource):
    """A user's source: the sync rollouts, counting batches (e.g. to add logging or filtering of its own)."""

    def __init__(self, ctx: SourceContext) -> None:
        self.inner = RolloutSource(ctx)
        self.tracker = self.inner.tracker
        self.batches = 0

    def start(self, agent) -> None:  # noqa: ANN001
        self.inner.start(agent)

    def next_batch(self, agent) -> TensorDict | None:  # noqa: ANN001
        batch = self.inner.next_batch(agent)
        self.batches += batch is not None
        return batch

    @property
    def env_steps(self) -> int:
        return self.inner.env_steps

    def stats(self) -> dict[str, float]:
        return {"counting/batches": float(self.batches)}

    def state_dict(self) -> dict:
        return {"inner": self.inner.state_dict(), "batches": self.batches}

    def load_state_dict(self, state: dict) -> None:
        self.inner.load_state_dict(state["inner"])
        self.batches = state["batches"]

    def close(self) -> None:
        self.inner.close()


def test_a_user_source_plugs_in_without_editing_the_data_module() -> None:
    L.seed_everything(0, verbose=False)
    made: list[CountingSource] = []

    def factory(ctx: SourceContext) -> ExperienceSource:
        assert ctx.needs == ExperienceNeeds(kind="rollout") and ctx.budget == 256
        made.append(CountingSource(ctx))
        return made[-1]

    register_source("counting", factory)
    for sampler in (factory, "counting"):
        dm = ExperienceDataModule(
            "CartPole-v1", num_envs=4, rollout_steps=16, total_env_steps=256, sampler=sampler
        )
        L.Trainer(**trainer_kwargs(max_epochs=-1, log_every_n_steps=1)).fit(PPO(hidden=(8,)), datamodule=dm)
        assert made[-1].batches == 4 == dm.updates_done and dm.env_steps == 256
        assert dm.statistics()["counting/batches"] == 4.0
    with pytest.raises(ConfigError, match="unknown sampler 'nope'"):
        ExperienceDataModule("CartPole-v1", sampler="nope")


def test_user_model_checkpoint_monitors_the_episode_return(tmp_path: Path) -> None:
    L.seed_everything(0, verbose=False)
    best = ModelCheckpoint(dirpath=tmp_path, monitor="episode_return_mean", mode="max", filename="best")
    dm = ExperienceDataModule(
        "CartPole-v1", num_envs=4, rollout_steps=32, total_env_steps=4096, updates_per_epoch=8
    )
    trainer = L.Trainer(
        **trainer_kwargs(max_epochs=-1, log_every_n_steps=1, enable_checkpointing=True, callbacks=[best])
    )
    trainer.fit(PPO(hidden=(16,)), datamodule=dm)
    assert Path(best.best_model_path).name == "best.ckpt" and best.best_model_score is not None
    assert float(best.best_model_score) > 0
    restored = PPO.load_from_checkpoint(best.best_model_path)
    assert restored.policy_version > 0 and restored.env_steps > 0  # the pushed progress is checkpointed too


def test_user_model_checkpoint_keeps_the_best_evaluated_policy(tmp_path: Path) -> None:
    """VideoEvaluation's ``eval/return_mean`` reaches ModelCheckpoint's monitor: the kept checkpoint is the one
    of the best evaluation (greedy episodes), not of the last epoch."""
    from lightning_accelrl.callbacks import VideoEvaluation

    L.seed_everything(0, verbose=False)
    evaluation = VideoEvaluation(every_n_env_steps=1024, episodes=3, at_fit_end=False)
    best = ModelCheckpoint(
        dirpath=tmp_path, monitor="eval/return_mean", mode="max", filename="best-{env_steps:.0f}"
    )
    dm = ExperienceDataModule(
        "CartPole-v1", num_envs=4, rollout_steps=32, total_env_steps=6144, updates_per_epoch=8
    )
    trainer = L.Trainer(
        **trainer_kwargs(max_epochs=-1, enable_checkpointing=True, callbacks=[evaluation, best])
    )
    trainer.fit(PPO(hidden=(16,)), datamodule=dm)
    scores = {r["env_steps"]: r["return_mean"] for r in evaluation.results}
    assert len(scores) == 6  # after every epoch of 8 x 128 env steps
    top = max(
        scores, key=lambda k: (scores[k], -k)
    )  # the first of the best (a later tie does not replace it)
    assert float(best.best_model_score) == pytest.approx(scores[top])
    assert Path(best.best_model_path).name == f"best-env_steps={top}.ckpt"


def test_a_data_module_fitted_again_starts_a_new_run() -> None:
    L.seed_everything(0, verbose=False)
    dm = ExperienceDataModule("CartPole-v1", num_envs=2, rollout_steps=8, total_env_steps=64)
    for _ in range(2):
        L.Trainer(**trainer_kwargs(max_epochs=-1)).fit(PPO(hidden=(8,)), datamodule=dm)
        assert dm.updates_done == 4 and dm.env_steps == 64 and dm.closed
