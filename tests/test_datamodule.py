"""ExperienceDataModule: argument checks, spec probing, budget arithmetic, seeding, no prefetch,
env state across epochs, state_dict, and non-string envs."""

from __future__ import annotations

import collections

import gymnasium as gym
import lightning as L
import numpy as np
import pytest
import torch
from foundation_helpers import COUNTING_ID, counting_length, trainer_kwargs

from lightning_accelrl import A2C, PPO, ExperienceDataModule
from lightning_accelrl.data.needs import ExperienceNeeds
from lightning_accelrl.data.rollouts import RolloutSource
from lightning_accelrl.data.source import SourceContext
from lightning_accelrl.envs import env_seeds
from lightning_accelrl.errors import ConfigError
from lightning_accelrl.sampling import SyncSampler


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"num_envs": 0}, "num_envs"),
        ({"rollout_steps": 0}, "rollout_steps"),
        ({"total_env_steps": 0}, "total_env_steps"),
        ({"updates_per_epoch": 0}, "updates_per_epoch"),
        ({"vectorization": "threads"}, "vectorization"),
        ({"env": "CartPole-v2"}, "CartPole-v1"),
    ],
)
def test_config_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        ExperienceDataModule(**kwargs)


def test_env_spec_is_probed_without_building_envs() -> None:
    dm = ExperienceDataModule("CartPole-v1", num_envs=3)
    spec = dm.env_spec
    assert spec.discrete and spec.num_actions == 2 and spec.observation_shape == (4,)
    assert dm.source is None


def test_budget_arithmetic() -> None:
    """Rollout sources count rollouts of their rank's share of the budget; progress is env steps over ranks."""
    dm = ExperienceDataModule("CartPole-v1", num_envs=8, rollout_steps=32, total_env_steps=100_000)
    needs = ExperienceNeeds(kind="rollout")

    def source(world_size: int) -> RolloutSource:
        ctx = SourceContext(
            dm.env_factory(), dm.env_spec, needs, 8, 32, 100_000, rank=0, world_size=world_size
        )
        return RolloutSource(ctx)

    one, two = source(1), source(2)
    assert one.total_updates == 391  # ceil(100000 / 256)
    assert two.total_updates == 196  # two ranks share the budget: ceil(50000 / 256)
    one.close()
    two.close()
    assert dm.env_steps == 0 and dm.progress == 0.0


def test_rollout_stream_is_sized() -> None:
    """A sized iterable: Lightning does not prefetch a rollout collected with stale weights."""
    dm = ExperienceDataModule(
        "CartPole-v1", num_envs=2, rollout_steps=4, total_env_steps=80, updates_per_epoch=7
    )
    trainer = L.Trainer(**trainer_kwargs())
    trainer.fit(A2C(hidden=(8,)), datamodule=dm)
    assert trainer.num_training_batches == 7


def test_one_collect_per_update_and_seeded_first_observation() -> None:
    L.seed_everything(5, verbose=False)  # the env seed defaults to the global seed
    B, T = 3, 4
    collects = []
    first = []

    class Count(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if not first:
                first.append(batch["observation"][0].clone())

    orig = SyncSampler.collect

    def counting_collect(self, agent):
        collects.append(self.env_steps)
        return orig(self, agent)

    dm = ExperienceDataModule(
        "CartPole-v1", num_envs=B, rollout_steps=T, total_env_steps=10 * B * T, updates_per_epoch=3
    )
    model = A2C(hidden=(8,))
    mp = pytest.MonkeyPatch()
    mp.setattr(SyncSampler, "collect", counting_collect)
    try:
        L.Trainer(**trainer_kwargs(callbacks=[Count()])).fit(model, datamodule=dm)
    finally:
        mp.undo()
    assert len(collects) == 10 == dm.updates_done  # no prefetched (wasted) rollout at the end
    assert dm.tracker is not None and dm.env_steps == 10 * B * T  # statistics outlive the envs
    for i, s in enumerate(env_seeds(5, 0, B)):
        env = gym.make("CartPole-v1")
        np.testing.assert_array_equal(first[0][i].numpy(), env.reset(seed=s)[0])
        env.close()


def test_episodes_continue_across_epochs() -> None:
    """``iter()`` runs again each epoch; envs must not be reset mid-episode (counting env: lengths are exact)."""
    L.seed_everything(0, verbose=False)
    B, T, updates = 4, 3, 8
    dm = ExperienceDataModule(
        COUNTING_ID,
        num_envs=B,
        rollout_steps=T,
        total_env_steps=updates * B * T,
        updates_per_epoch=2,  # 4 epochs
        vectorization="sync",
        episode_window=1000,
        seed=0,
    )
    trainer = L.Trainer(**trainer_kwargs())
    trainer.fit(PPO(update_epochs=1, minibatch_size=12, hidden=(8,)), datamodule=dm)
    assert trainer.current_epoch >= 3
    n = updates * T
    expected = collections.Counter()
    for x in env_seeds(0, 0, B):
        length = counting_length(x)
        expected[(length * (length + 1) / 2, length)] += n // length
    got = collections.Counter(zip(dm.tracker.recent_returns, dm.tracker.recent_lengths, strict=True))
    assert got == expected
    stats = dm.statistics()
    assert stats["episodes"] == sum(expected.values())
    assert stats["episode_return_mean"] == pytest.approx(
        sum(r * c for (r, _), c in expected.items()) / sum(expected.values())
    )
    assert stats["env_steps"] == n * B


def test_state_dict_round_trip_before_setup() -> None:
    """A checkpoint's data-module state loads with weights_only=True, before setup, and resumes the counts."""
    import io

    L.seed_everything(0, verbose=False)
    dm = ExperienceDataModule("CartPole-v1", num_envs=2, rollout_steps=16, total_env_steps=640)
    L.Trainer(**trainer_kwargs()).fit(A2C(hidden=(8,)), datamodule=dm)
    state = dm.state_dict()
    episodes = dm.tracker.episodes
    assert state["updates_done"] == 20 and episodes > 0
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)  # Lightning's default when resuming

    dm2 = ExperienceDataModule("CartPole-v1", num_envs=2, rollout_steps=16, total_env_steps=1280)
    dm2.load_state_dict(state)  # before setup: no source yet
    assert dm2.updates_done == 20
    L.Trainer(**trainer_kwargs()).fit(A2C(hidden=(8,)), datamodule=dm2)
    assert dm2.updates_done == 40 and dm2.env_steps == 1280  # the restored counts go on to the new budget
    assert dm2.tracker.episodes > episodes
    assert dm2.wall_time >= state["wall_time"]


def test_statistics_without_episodes() -> None:
    """No finished episode: counts, but no (biased zero) mean return."""
    dm = ExperienceDataModule("CartPole-v1", num_envs=2, rollout_steps=2, total_env_steps=4)
    L.Trainer(**trainer_kwargs()).fit(A2C(hidden=(8,)), datamodule=dm)
    stats = dm.statistics()
    assert stats["episodes"] == 0 and stats["env_steps"] == 4
    assert "episode_return_mean" not in stats


def test_user_vector_env() -> None:
    L.seed_everything(0, verbose=False)
    venv = gym.make_vec(
        "CartPole-v1",
        num_envs=3,
        vectorization_mode="sync",
        vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP},
    )
    dm = ExperienceDataModule(venv, rollout_steps=4, total_env_steps=48)
    assert dm.env_spec.num_actions == 2
    seen = []

    class Steps(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            seen.append((tuple(batch.batch_size), trainer.datamodule.env_steps))

    L.Trainer(**trainer_kwargs(callbacks=[Steps()])).fit(A2C(hidden=(8,)), datamodule=dm)
    # num_envs (default 8) is ignored: the env's own 3 envs count
    assert seen == [((4, 3), 12), ((4, 3), 24), ((4, 3), 36), ((4, 3), 48)]
    assert dm.updates_done == 4


def test_env_steps_after_fit_with_a_batched_env() -> None:
    L.seed_everything(0, verbose=False)
    venv = gym.make_vec(
        "CartPole-v1",
        num_envs=3,
        vectorization_mode="sync",
        vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP},
    )
    dm = ExperienceDataModule(venv, rollout_steps=4, total_env_steps=48)
    L.Trainer(**trainer_kwargs()).fit(A2C(hidden=(8,)), datamodule=dm)
    assert dm.env_steps == 48 and dm.updates_done == 4


def test_torchrl_env() -> None:
    from torchrl.envs import GymEnv, SerialEnv

    L.seed_everything(0, verbose=False)
    tenv = SerialEnv(2, lambda: GymEnv("CartPole-v1", categorical_action_encoding=True))
    shapes = {}

    class Keep(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            shapes.update({k: tuple(v.shape) for k, v in batch.items(include_nested=True, leaves_only=True)})

    dm = ExperienceDataModule(tenv, rollout_steps=8, total_env_steps=48)
    model = PPO(update_epochs=1, minibatch_size=8, hidden=(8,))
    L.Trainer(**trainer_kwargs(callbacks=[Keep()])).fit(model, datamodule=dm)
    assert dm.updates_done == 3
    assert shapes["observation"] == (8, 2, 4)
    assert shapes["action"] == (8, 2)
    assert shapes[("next", "reward")] == (8, 2, 1)
    assert shapes[("next", "state_value")] == (8, 2, 1)
    assert dm.lags.histogram == {0: 3}  # every rollout collected with the current weights
