"""An env factory with the Ray sampler: each actor builds its envs from the pickled factory."""

from __future__ import annotations

import lightning as L
import pytest

ray = pytest.importorskip("ray")

import user_envs  # noqa: E402
from foundation_helpers import trainer_kwargs  # noqa: E402
from ray_helpers import local_ray  # noqa: E402

from lightning_accelrl import DQN, ExperienceDataModule  # noqa: E402


def test_env_factory_with_the_ray_sampler() -> None:
    L.seed_everything(0, verbose=False)
    model = DQN(hidden=(16,))
    dm = ExperienceDataModule(
        user_envs.make_cartpole,
        sampler="ray",
        num_sampler_procs=1,
        num_envs=2,
        total_env_steps=600,
        learning_starts=200,
        batch_size=32,
        replay_ratio=1.0,
    )
    with local_ray(
        by_value=user_envs
    ):  # Ray workers cannot import the tests folder: the factory goes by value
        L.Trainer(**trainer_kwargs(max_epochs=-1)).fit(model, datamodule=dm)
    assert dm.env_steps >= 600 and model.policy_version > 0
