"""``sampler: ray`` for rollout algorithms: on-policy batches (PPO, A2C) collected by every actor with the current
weights, and asynchronous segments (APPO) with their behaviour policy's version.

Skipped without Ray. One local Ray for the module (loopback, per-run token, small object store).
"""

from __future__ import annotations

import pytest

ray = pytest.importorskip("ray")

import lightning as L  # noqa: E402
import torch  # noqa: E402
from ray_helpers import local_ray  # noqa: E402

from lightning_accelrl import A2C, APPO, PPO, ExperienceDataModule  # noqa: E402
from lightning_accelrl.errors import ConfigError  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    with local_ray():
        yield


class _Batches(L.Callback):
    """Keeps the first training batch and the source's state at the last one."""

    def __init__(self) -> None:
        self.first = None
        self.state = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.first is None:
            self.first = batch.clone()

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        self.state = trainer.datamodule.state_dict()


def _fit(model, callback: L.Callback | None = None, **data) -> ExperienceDataModule:
    L.seed_everything(0, verbose=False)
    dm = ExperienceDataModule(env="CartPole-v1", rollout_steps=16, seed=0, **data)
    trainer = L.Trainer(
        accelerator="cpu", max_epochs=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[callback] if callback else [],
    )  # fmt: skip
    trainer.fit(model, datamodule=dm)
    return dm


def test_ppo_through_ray_has_the_sync_layout_runs_its_budget_with_no_lag(tmp_path) -> None:
    ray_batches, sync_batches = _Batches(), _Batches()
    model = PPO(hidden=(16,), update_epochs=1, minibatch_size=32)
    dm = _fit(model, ray_batches, sampler="ray", num_sampler_procs=2, num_envs=2, total_env_steps=1000)
    _fit(PPO(hidden=(16,), update_epochs=1, minibatch_size=32), sync_batches, num_envs=4, total_env_steps=64)
    got, want = ray_batches.first, sync_batches.first
    assert got.batch_size == want.batch_size == torch.Size([16, 4])  # [T, procs x envs per actor]
    assert set(got.keys(True, True)) == set(want.keys(True, True))
    for key in want.keys(True, True):
        assert got[key].shape == want[key].shape and got[key].dtype == want[key].dtype, key
    # ceil(1000 / (16 x 4)) = 16 updates of 64 env steps, every one collected with the current weights
    assert dm.updates_done == 16 and dm.env_steps == 1024
    assert dm.lags.batches == 16 and dm.lags.max == 0
    assert dm.tracker.episodes > 0
    # the two actors' envs are different seeds: their first observations differ
    assert not torch.equal(got["observation"][0, :2], got["observation"][0, 2:])
    path = tmp_path / "state.pt"
    torch.save(ray_batches.state, path)  # checkpoint-safe: plain containers and tensors
    saved = torch.load(path, weights_only=True)["ranks"][0]["source"]
    assert saved["kind"] == "on_policy" and int(saved["env_steps"].sum()) == 1024


def test_a2c_through_ray_runs_its_budget() -> None:
    dm = _fit(A2C(hidden=(16,)), sampler="ray", num_sampler_procs=2, num_envs=2, total_env_steps=640)
    assert dm.updates_done == 10 and dm.env_steps == 640 and dm.lags.max == 0


def test_appo_through_ray_takes_lagged_segments() -> None:
    """APPO declares it corrects for lag: ``ray_rollouts: auto`` collects asynchronously for it."""
    batches = _Batches()
    dm = _fit(
        APPO(hidden=(16,), update_epochs=1, minibatch_size=32), batches, sampler="ray",
        num_sampler_procs=2, num_envs=2, total_env_steps=960, async_queue_size=2,
    )  # fmt: skip
    # one segment [T, envs of one actor] per update: 960 / (16 x 2) = 30 updates
    assert batches.first.batch_size == torch.Size([16, 2])
    assert dm.updates_done == 30 and dm.env_steps >= 960
    assert dm.lags.batches == 30 and dm.lags.max >= 1  # segments acted with older weights arrive
    assert {"policy_version", "sample_log_prob"} <= set(batches.first.keys())


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"ray_rollouts": "sometimes"}, r"^ray_rollouts must be auto, on_policy or async, got 'sometimes'$"),
        ({"ray_sampler_resources": {"CPU": 2}}, r"^ray_sampler_resources must map custom resource names"),
        ({"ray_sampler_resources": {"sampler_node": 0}}, r"^ray_sampler_resources must map"),
    ],
)
def test_bad_ray_settings_fail_with_one_line(bad, message) -> None:
    dm = ExperienceDataModule(env="CartPole-v1", total_env_steps=1000, sampler="ray", **bad)
    trainer = L.Trainer(accelerator="cpu", max_epochs=1, logger=False, enable_checkpointing=False)
    with pytest.raises(ConfigError, match=message) as info:
        trainer.fit(PPO(), datamodule=dm)
    assert "\n" not in str(info.value)


def test_a_ray_address_nobody_listens_on_fails_at_once_with_one_line(monkeypatch) -> None:
    from lightning_accelrl.data import ray_fleet

    monkeypatch.setattr(ray_fleet.ray, "is_initialized", lambda: False)  # as in a process not connected yet
    with pytest.raises(ConfigError, match=r"^nothing answers at ray_address='127.0.0.1:1' ") as info:
        ray_fleet.connect_ray("127.0.0.1:1")
    assert "\n" not in str(info.value)
