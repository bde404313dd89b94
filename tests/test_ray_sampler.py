"""``sampler: ray``: a DQN fit whose samplers are Ray actors feeding a RayTable.

Skipped without Ray. One ``ray.init`` for the module, bound to loopback, with a small object store and a short temp
folder (Unix socket paths are limited to 107 bytes); the data module then uses that connection (as it would a cluster's). Never ``ray stop``.
"""

from __future__ import annotations

import pytest

ray = pytest.importorskip("ray")

import lightning as L  # noqa: E402
import torch  # noqa: E402
from ray_helpers import local_ray  # noqa: E402

from lightning_accelrl import DQN, SAC, ExperienceDataModule  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    with local_ray():
        yield


class _KeepHandles(L.Callback):
    """Remembers the runner's actors (the data module drops the runner at the end of fit)."""

    def __init__(self) -> None:
        self.actors: list = []

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        runner = trainer.datamodule.source
        if not self.actors and runner is not None:
            self.actors = [*runner.actors, runner.coord, runner.table.actor]


def _dead(actor) -> bool:
    try:
        ray.get(actor.__ray_ready__.remote(), timeout=10)
    except ray.exceptions.RayActorError:
        return True
    return False


def test_ray_dqn_fit_finishes_its_budget_and_leaves_no_actor() -> None:
    L.seed_everything(0, verbose=False)
    model = DQN(hidden=[16])
    dm = ExperienceDataModule(
        env="CartPole-v1",
        num_envs=2,
        total_env_steps=3000,
        batch_size=32,
        replay_ratio=4.0,
        learning_starts=200,
        sampler="ray",
        num_sampler_procs=2,
        weight_sync_every=2,
    )
    keep = _KeepHandles()
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=-1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[keep],
    )
    trainer.fit(model, datamodule=dm)
    # the budget stops the samplers; one in-flight vector step per sampler actor may still land
    assert 3000 <= dm.env_steps < 3000 + 2 * 2
    # the limiter holds the ratio: (inserted - learning_starts) * ratio / batch updates, up to the error band
    expected = (3000 - 200) * 4.0 / 32
    assert abs(model.policy_version - expected) <= 32 / 4 + 2, model.policy_version
    assert dm.tracker.episodes > 0 and dm.lags.batches  # episodes came back; lags were recorded
    assert dm.closed and len(keep.actors) == 2 + 2
    assert all(_dead(a) for a in keep.actors)


def test_ray_samplers_feed_sac() -> None:
    """Continuous actions through Ray actors: the table's items carry float actions inside the Box, the
    limiter paces the updates and the episodes come back."""
    L.seed_everything(0, verbose=False)
    model = SAC(actor_hidden=(16,), critic_hidden=(16,), random_steps=200)
    dm = ExperienceDataModule(
        env="Pendulum-v1", num_envs=2, total_env_steps=1200, batch_size=32, replay_ratio=8.0,
        learning_starts=100, sampler="ray", num_sampler_procs=2, weight_sync_every=2,
    )  # fmt: skip
    actions = []

    class Actions(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            actions.append(batch["action"])

    trainer = L.Trainer(
        accelerator="cpu", max_epochs=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[Actions()],
    )  # fmt: skip
    trainer.fit(model, datamodule=dm)
    assert dm.env_steps >= 1200 and model.updates > 100
    sampled = torch.cat(actions)
    assert sampled.dtype == torch.float32 and sampled.shape[1:] == (1,)
    assert sampled.abs().max() <= 2.0 and sampled.std() > 0.1
    assert dm.tracker.episodes >= 4  # 4 envs x 300 steps: the 200-step episodes came back


class _KillSampler(_KeepHandles):
    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        super().on_train_batch_end(trainer, pl_module, *args)
        if pl_module.policy_version == 20:
            ray.kill(trainer.datamodule.source.actors[0])


def test_killed_sampler_actor_fails_the_run_with_one_line() -> None:
    from lightning_accelrl.data.async_runner import SamplerProcessError

    L.seed_everything(0, verbose=False)
    dm = ExperienceDataModule(
        env="CartPole-v1",
        num_envs=2,
        total_env_steps=1_000_000,
        batch_size=32,
        learning_starts=100,
        sampler="ray",
        num_sampler_procs=2,
    )
    kill = _KillSampler()
    trainer = L.Trainer(
        accelerator="cpu", max_epochs=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        callbacks=[kill],
    )  # fmt: skip
    with pytest.raises(SamplerProcessError, match=r"^ray sampler actor 0 of rank 0 failed \(") as info:
        trainer.fit(DQN(hidden=[16]), datamodule=dm)
    assert "\n" not in str(info.value), str(info.value)
    assert dm.closed and all(_dead(a) for a in kill.actors)


class _SaveAt(L.Callback):
    """Saves a checkpoint at one policy version (the samplers go on meanwhile) and stops; records the served
    table's limiter counters at the first batch of a resumed run."""

    def __init__(self, path, at: int | None) -> None:
        self.path, self.at, self.first_state = path, at, None

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        runner = trainer.datamodule.source
        if self.first_state is None and runner is not None:
            self.first_state = runner.table.state_dict()
        if self.at is not None and pl_module.policy_version == self.at:
            trainer.save_checkpoint(self.path)
            trainer.should_stop = True


def _fit(callback: L.Callback, model: DQN, ckpt_path=None, **data) -> ExperienceDataModule:
    """A seeded 2-actor DQN fit on CartPole (batch 32, replay ratio 4, learning starts 200) with ``callback``."""
    dm = ExperienceDataModule(
        env="CartPole-v1", num_envs=2, batch_size=32, replay_ratio=4.0, learning_starts=200, sampler="ray",
        num_sampler_procs=2, weight_sync_every=2, seed=0, **data,
    )  # fmt: skip
    trainer = L.Trainer(
        accelerator="cpu", max_epochs=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[callback],
    )  # fmt: skip
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
    return dm


def _ray_fit(ckpt, save_at: int | None) -> tuple[DQN, ExperienceDataModule, _SaveAt]:
    L.seed_everything(0, verbose=False)
    model, cb = DQN(hidden=[16], prioritized=True, n_step=2), _SaveAt(ckpt, save_at)
    dm = _fit(cb, model, None if save_at is not None else ckpt, total_env_steps=3000, replay_capacity=600)
    return model, dm, cb


def test_ray_dqn_resumes_with_its_table_and_limiter_counters(tmp_path) -> None:
    import torch

    ckpt = tmp_path / "mid.ckpt"
    _ray_fit(ckpt, save_at=150)
    saved = torch.load(ckpt, weights_only=True)["ExperienceDataModule"]["ranks"][0]["source"]
    table, lim = saved["table"], saved["table"]["rate_limiter"]
    assert len(table["keys"]) == 600 and lim["deletes"] > 0 and lim["samples"] > 0  # full, evicting, sampled
    assert len(set(table["priorities"].tolist())) > 1  # TD-error priorities came back from the learner
    saved_steps = int(saved["env_steps"].sum())
    assert saved_steps >= lim["inserts"] > 1000

    model, dm, cb = _ray_fit(ckpt, save_at=None)
    first = cb.first_state["rate_limiter"]  # the restored counters, plus what the samplers added since
    assert first["inserts"] >= lim["inserts"] and first["samples"] >= lim["samples"]
    assert cb.first_state["next_key"] >= table["next_key"]
    # the budget goes on from the checkpoint, and the limiter held the ratio over both runs together: a reset
    # limiter would have waited for 200 fresh inserts (25 updates fewer than this)
    assert 3000 <= dm.env_steps < 3000 + 2 * 2
    expected = (3000 - 200) * 4.0 / 32
    assert abs(model.policy_version - expected) <= 32 / 4 + 2, model.policy_version


class _KillAt(L.Callback):
    """``ray.kill`` sampler actor 0 at each of the given policy versions (once its replacement is running);
    remembers every actor it saw, replacements included."""

    def __init__(self, versions: list[int]) -> None:
        self.versions, self.actors, self.killed = list(versions), set(), set()

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        runner = trainer.datamodule.source
        if runner is None:
            return
        self.actors |= {*runner.actors, runner.coord, runner.table.actor}
        target = runner.actors[0]
        if self.versions and pl_module.policy_version >= self.versions[0] and target not in self.killed:
            self.versions.pop(0)
            self.killed.add(target)
            ray.kill(target)


def test_killed_sampler_actor_is_replaced_and_the_run_finishes() -> None:
    model, dm, kill = _restart_fit([20], restarts=1, budget=3000)
    assert dm.source.restarts == 1 and not kill.versions
    # the replacement went on with the dead actor's env-step count: the budget ends the run as usual
    assert 3000 <= dm.env_steps < 3000 + 2 * 2
    expected = (3000 - 200) * 4.0 / 32  # and the limiter held the ratio (the dead actor's last step is lost)
    assert abs(model.policy_version - expected) <= 32 / 4 + 2, model.policy_version
    assert len(kill.actors) == 2 + 2 + 1 and all(_dead(a) for a in kill.actors)  # none outlives the run


def test_a_failure_beyond_sampler_restarts_fails_the_run_with_one_line() -> None:
    from lightning_accelrl.data.async_runner import SamplerProcessError

    with pytest.raises(
        SamplerProcessError, match=r"after 1 restart\(s\) \(sampler_restarts=1\); stopping"
    ) as info:
        _restart_fit([20, 40], restarts=1, budget=1_000_000)
    assert "\n" not in str(info.value) and str(info.value).startswith(
        "ray sampler actor 0 of rank 0 failed ("
    )


def _restart_fit(kill_at: list[int], restarts: int, budget: int) -> tuple[DQN, ExperienceDataModule, _KillAt]:
    L.seed_everything(0, verbose=False)
    model, kill = DQN(hidden=[16]), _KillAt(kill_at)
    dm = _fit(kill, model, total_env_steps=budget, sampler_restarts=restarts)
    return model, dm, kill


def test_placement_tells_a_request_the_cluster_lacks_from_a_slow_start() -> None:
    """``fits`` decides which deadline applies to an actor that has not started: the short one when the cluster's
    totals cannot hold it (a lost node, a resource no node offers), the long one when they can (a slow start)."""
    from lightning_accelrl.data.ray_fleet import PLACEMENT_TIMEOUT_S, START_TIMEOUT_S, fits

    cluster = {"CPU": 3.0, "memory": 1e9, "sampler_node": 2.0}
    assert fits({"num_cpus": 1}, cluster)
    assert fits({"num_cpus": 1, "resources": {"sampler_node": 2}}, cluster)
    assert not fits({"num_cpus": 1, "resources": {"sampler_node": 3}}, cluster)
    assert not fits({"num_cpus": 1, "resources": {"lost_node": 1}}, cluster)  # its node left the totals
    assert not fits({"num_cpus": 4}, cluster)
    assert fits({"num_cpus": 0}, {})
    assert PLACEMENT_TIMEOUT_S < START_TIMEOUT_S
