"""``sampler: ray`` on a two-node Ray cluster on loopback: sampler actors on the second node (placed there by
``ray_sampler_resources``), the table and coordinator on the learner's node, and what losing a sampler node does.

Skipped without Ray. One cluster for the module (head: 1 CPU; node 2: 2 CPUs and the resource ``sampler_node``);
the node-loss tests add and remove nodes of their own.
"""

from __future__ import annotations

import time

import pytest

ray = pytest.importorskip("ray")

import lightning as L  # noqa: E402
from ray_helpers import loopback_cluster  # noqa: E402

from lightning_accelrl import DQN, PPO, ExperienceDataModule  # noqa: E402
from lightning_accelrl.data import ray_fleet  # noqa: E402
from lightning_accelrl.data.supervision import SamplerProcessError  # noqa: E402


@pytest.fixture(scope="module")
def cluster():
    with loopback_cluster(sampler_node=2) as (cluster, node):
        yield cluster, node


class _Nodes(L.Callback):
    """Records the nodes of the sampler actors and of the coordinator once the run is under way; optionally calls
    ``at(trainer)`` once at policy version ``version``."""

    def __init__(self, version: int | None = None, at=None) -> None:
        self.samplers: list[str] = []
        self.coordinator = ""
        self.version, self.at = version, at
        self.after: list[str] = []

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        fleet = trainer.datamodule.source.fleet
        if not self.samplers:
            self.samplers = fleet.node_ids()
            self.coordinator = ray.get(fleet.coord.node_id.remote())
        if self.at is not None and pl_module.policy_version >= self.version:
            self.at, at = None, self.at
            at(trainer)
        if not self.after and self.version is not None and pl_module.policy_version >= self.version + 4:
            self.after = fleet.node_ids()


def _trainer(callback: L.Callback) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu", max_epochs=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[callback],
    )  # fmt: skip


def _dqn_data(resources: dict, **kwargs) -> ExperienceDataModule:
    return ExperienceDataModule(
        env="CartPole-v1", num_envs=2, batch_size=32, replay_ratio=4.0, learning_starts=200, sampler="ray",
        num_sampler_procs=2, seed=0, ray_sampler_resources=resources, **kwargs,
    )  # fmt: skip


def test_dqn_samplers_run_on_the_sampler_node(cluster) -> None:
    _, node = cluster
    L.seed_everything(0, verbose=False)
    nodes, model = _Nodes(), DQN(hidden=[16])
    dm = _dqn_data({"sampler_node": 1}, total_env_steps=1500)
    _trainer(nodes).fit(model, datamodule=dm)
    learner = ray.get_runtime_context().get_node_id()
    assert nodes.samplers == [node.node_id] * 2 and node.node_id != learner
    assert nodes.coordinator == learner  # the table is pinned there the same way
    assert 1500 <= dm.env_steps < 1500 + 2 * 2
    assert abs(model.policy_version - (1500 - 200) * 4.0 / 32) <= 32 / 4 + 2


def test_ppo_samplers_run_on_the_sampler_node(cluster) -> None:
    _, node = cluster
    L.seed_everything(0, verbose=False)
    nodes = _Nodes()
    dm = ExperienceDataModule(
        env="CartPole-v1", num_envs=2, rollout_steps=16, total_env_steps=640, sampler="ray", num_sampler_procs=2,
        seed=0, ray_sampler_resources={"sampler_node": 1},
    )  # fmt: skip
    _trainer(nodes).fit(PPO(hidden=(16,), update_epochs=1, minibatch_size=32), datamodule=dm)
    learner = ray.get_runtime_context().get_node_id()
    assert nodes.samplers == [node.node_id] * 2 and node.node_id != learner
    assert dm.updates_done == 10 and dm.env_steps == 640 and dm.lags.max == 0


@pytest.mark.slow
def test_losing_the_only_sampler_node_fails_the_run_with_one_line(cluster, monkeypatch) -> None:
    """The actors die with their node; their replacements find no node with the resource: one line, no hang."""
    lab, _ = cluster
    lost = lab.add_node(num_cpus=2, resources={"lost_node": 2}, object_store_memory=80 * 2**20)
    monkeypatch.setattr(ray_fleet, "PLACEMENT_TIMEOUT_S", 30.0)  # starting an actor takes seconds
    L.seed_everything(0, verbose=False)
    when: list[float] = []

    def lose(trainer) -> None:
        when.append(time.monotonic())
        lab.remove_node(lost)

    dm = _dqn_data({"lost_node": 1}, total_env_steps=1_000_000, sampler_restarts=4)
    with pytest.raises(
        SamplerProcessError, match=r"^ray sampler actor \d of rank 0 found no node with "
    ) as info:
        _trainer(_Nodes(version=20, at=lose)).fit(DQN(hidden=[16]), datamodule=dm)
    assert "\n" not in str(info.value) and "'lost_node': 1.0" in str(info.value)
    assert time.monotonic() - when[0] < 90  # the placement timeout (30 s) after the node's loss was seen
    assert (
        dm.closed and dm.source.restarts == 2
    )  # both actors died with the node and were replaced (unplaced)


@pytest.mark.slow
def test_losing_a_sampler_node_moves_its_actors_to_another(cluster) -> None:
    """Two nodes offer the resource; the one the actors run on is lost: the replacements run on the other, and the
    on-policy run finishes its budget."""
    lab, _ = cluster
    small = {"object_store_memory": 80 * 2**20}
    first = lab.add_node(num_cpus=2, resources={"moving_node": 2}, **small)
    L.seed_everything(0, verbose=False)
    spare: list = []

    def lose(trainer) -> None:
        spare.append(lab.add_node(num_cpus=2, resources={"moving_node": 2}, **small))
        lab.remove_node(first)

    nodes = _Nodes(version=3, at=lose)
    dm = ExperienceDataModule(
        env="CartPole-v1", num_envs=2, rollout_steps=16, total_env_steps=1280, sampler="ray", num_sampler_procs=2,
        seed=0, ray_sampler_resources={"moving_node": 1}, sampler_restarts=2,
    )  # fmt: skip
    _trainer(nodes).fit(PPO(hidden=(16,), update_epochs=1, minibatch_size=32), datamodule=dm)
    assert nodes.samplers == [first.node_id] * 2
    assert nodes.after == [spare[0].node_id] * 2
    assert dm.source.restarts == 2 and dm.updates_done == 20 and dm.lags.max == 0
    lab.remove_node(spare[0])
