"""DDP resume of the DQN family: every rank gets back its *own* replay table (not rank 0's).

Two CPU ranks (gloo) train DQN for a few epochs, checkpoint, and resume from the checkpoint. Each rank records
its table at save time (``on_save_checkpoint`` runs on every rank) and as the resumed run starts; the two
must match rank by rank. Cases: CartPole (vector observations) and a tiny frame-stacked env (uint8 [4, 8, 8]
observations: frame-deduplicated storage, whose stream ids depend on the rank).

The two processes are started here with torchrun's environment variables (``LOCAL_RANK`` set: Lightning then
does not launch them itself), so that each process can run several ``fit`` calls: all cases in one launch.
"""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from process_helpers import QUIET_ENV, finish, free_port, start_groups

from lightning_accelrl import ExperienceDataModule
from lightning_accelrl.errors import ConfigError

SCRIPT = textwrap.dedent(
    """
    import os, sys, traceback
    from collections import deque
    from datetime import timedelta

    import torch
    torch.set_num_threads(1)
    import gymnasium as gym
    import numpy as np
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.strategies import DDPStrategy
    from lightning_accelrl import ExperienceDataModule
    from lightning_accelrl.algos import DQN
    from lightning_accelrl.data.async_runner import AsyncRunner
    from lightning_accelrl.data.replay import ReplaySource


    class TinyFrames(gym.Env):
        # frame-stacked uint8 observations [4, 8, 8] (consecutive stacks share 3 frames), episodes of 5-12 steps
        observation_space = gym.spaces.Box(0, 255, (4, 8, 8), np.uint8)
        action_space = gym.spaces.Discrete(2)

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            self.t, self.length = 0, int(self.np_random.integers(5, 13))
            base = int(self.np_random.integers(0, 200))
            self.frames = deque([np.full((8, 8), base, np.uint8)] * 4, maxlen=4)
            return np.stack(self.frames), {}

        def step(self, action):
            self.t += 1
            self.frames.append(np.full((8, 8), (int(self.frames[-1][0, 0]) + 1 + int(action)) % 256, np.uint8))
            return np.stack(self.frames), float(action), self.t >= self.length, False, {}


    gym.register("AccelrlTinyFrames-v0", entry_point=TinyFrames)


    def summary(dm):
        table = dm.source.table
        state, info = table.state_dict(), table.info()
        obs = table.storage.read(state["slots"])["observation"] if info["size"] else torch.zeros(1)
        return {
            "size": info["size"],
            "counters": [info[k] for k in ("inserts", "samples", "deletes", "next_key")],
            "keys": state["keys"].clone(),
            "priorities": state["priorities"].clone(),
            "obs_sum": float(obs.double().sum()),
            "env_steps": dm.source.env_steps,
        }


    def async_summary(state):
        table = state["table"]
        return {
            "size": int(table["keys"].numel()),
            "keys": table["keys"].clone(),
            "priorities": table["priorities"].clone(),
            "limiter": table["rate_limiter"],
            "env_steps": state["env_steps"].clone(),
        }


    ASYNC = {"saved": None, "given": None}  # async: what this rank's runner saved last / was given to resume
    _state_dict = AsyncRunner.state_dict
    _start = AsyncRunner.start


    def recording_state_dict(self):
        state = _state_dict(self)
        ASYNC["saved"] = async_summary(state)
        return state


    def recording_start(self, agent):
        ASYNC["given"] = None if self._resume is None else async_summary(self._resume)
        _start(self, agent)


    AsyncRunner.state_dict = recording_state_dict
    AsyncRunner.start = recording_start


    class Snap(L.Callback):
        def __init__(self):
            self.saved = self.started = None

        def on_save_checkpoint(self, trainer, pl_module, checkpoint):
            if isinstance(trainer.datamodule.source, ReplaySource):
                self.saved = summary(trainer.datamodule)

        def on_train_start(self, trainer, pl_module):
            if isinstance(trainer.datamodule.source, ReplaySource):
                self.started = summary(trainer.datamodule)


    def fit(root, env, max_epochs, ckpt_path=None, sampler="sync"):
        L.seed_everything(0, verbose=False)
        dm = ExperienceDataModule(
            env, num_envs=2, total_env_steps=100_000, seed=1, updates_per_epoch=40, batch_size=16,
            replay_capacity=300, replay_ratio=4.0, learning_starts=32, vectorization="sync",
            sampler=sampler, num_sampler_procs=1,
        )
        model = DQN(network="mlp", hidden=(16,), prioritized=True, n_step=2, target_update_period=10)
        snap = Snap()
        trainer = L.Trainer(
            accelerator="cpu", devices=2, strategy=DDPStrategy(timeout=timedelta(seconds=60)),
            default_root_dir=root, max_epochs=max_epochs, logger=False, enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[ModelCheckpoint(dirpath=os.path.join(root, "ckpt"), save_last=True), snap],
        )
        trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
        return snap, trainer.global_rank


    def main():
        out = sys.argv[1]
        result = {}
        cases = (
            ("cartpole", "CartPole-v1", "sync"),
            ("frames", "AccelrlTinyFrames-v0", "sync"),
            ("async", "AccelrlTinyFrames-v0", "async"),
        )
        for case, env, sampler in cases:
            root = os.path.join(out, case)
            first, rank = fit(root, env, 3, sampler=sampler)  # 120 updates: the table has been evicting
            saved = first.saved if sampler == "sync" else ASYNC["saved"]
            try:
                ckpt = os.path.join(root, "ckpt", "last.ckpt")
                resumed, _ = fit(root, env, 4, ckpt_path=ckpt, sampler=sampler)
                result[case] = {"saved": saved, "started": resumed.started if sampler == "sync" else ASYNC["given"]}
            except Exception as exc:
                result[case] = {"saved": saved, "error": "".join(traceback.format_exception_only(exc))}
                torch.save(result, os.path.join(out, f"rank{rank}.pt"))
                raise
        torch.save(result, os.path.join(out, f"rank{rank}.pt"))


    if __name__ == "__main__":
        main()
    """
)


def launch(tmp: Path, script: str, timeout: float = 240) -> dict[int, dict]:
    """Run ``script`` as 2 DDP ranks (torchrun-style variables); each rank saves ``rank{r}.pt`` in ``tmp``."""
    path = tmp / "ddp_resume.py"
    path.write_text(script)
    port = str(free_port())
    envs = [
        dict(
            os.environ,
            **QUIET_ENV,
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=port,
            WORLD_SIZE="2",
            NODE_RANK="0",
            LOCAL_RANK=str(rank),
            RANK=str(rank),
        )
        for rank in (0, 1)
    ]
    procs = start_groups([[sys.executable, str(path), str(tmp)]] * 2, envs, tmp)
    outputs = finish(procs, timeout, "DDP resume run")
    results = {}
    for rank, proc in enumerate(procs):
        f = tmp / f"rank{rank}.pt"
        results[rank] = torch.load(f, weights_only=False) if f.exists() else {}
        results[rank]["returncode"] = proc.returncode
        results[rank]["output"] = outputs[rank] if rank < len(outputs) else ""
    return results


@pytest.fixture(scope="module")
def ddp_resume(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("ddp_resume")
    return {**launch(tmp, SCRIPT), "root": tmp}


def _ran(ddp_resume: dict[int, dict], case: str) -> None:
    for rank in (0, 1):
        r = ddp_resume[rank]
        assert r["returncode"] == 0 and "error" not in r.get(case, {}), r["output"][-4000:]


@pytest.mark.parametrize("case", ["cartpole", "frames"])
def test_each_rank_resumes_with_its_own_table(ddp_resume, case: str) -> None:
    """Sync replay: after the resume, each rank's table is the one it had when the checkpoint was taken.

    (Before per-rank checkpoint state, rank 1 resumed with rank 0's table, and with frame-stacked observations
    it failed: ``checkpoint first_stream=0 does not match 2``.)"""
    _ran(ddp_resume, case)
    saved = {rank: ddp_resume[rank][case]["saved"] for rank in (0, 1)}
    started = {rank: ddp_resume[rank][case]["started"] for rank in (0, 1)}
    assert saved[0]["size"] == saved[1]["size"] == 300  # full, evicting
    assert saved[0]["obs_sum"] != saved[1]["obs_sum"]  # the ranks' tables hold different transitions
    for rank in (0, 1):
        s, t = saved[rank], started[rank]
        assert t["size"] == s["size"] and t["counters"] == s["counters"] and t["env_steps"] == s["env_steps"]
        assert torch.equal(t["keys"], s["keys"]) and torch.equal(t["priorities"], s["priorities"])
        assert t["obs_sum"] == s["obs_sum"], rank


def test_async_each_rank_restores_its_own_served_table(ddp_resume) -> None:
    """Async replay: each rank's table server is given the snapshot that rank took for the checkpoint."""
    _ran(ddp_resume, "async")
    saved = {rank: ddp_resume[rank]["async"]["saved"] for rank in (0, 1)}
    given = {rank: ddp_resume[rank]["async"]["started"] for rank in (0, 1)}
    assert not torch.equal(saved[0]["priorities"], saved[1]["priorities"])  # different tables
    for rank in (0, 1):
        s, g = saved[rank], given[rank]
        assert g is not None and g["size"] == s["size"] > 0 and g["limiter"] == s["limiter"]
        for key in ("keys", "priorities", "env_steps"):
            assert torch.equal(g[key], s[key]), (rank, key)


def test_checkpoint_holds_every_rank_and_refuses_another_world_size(ddp_resume) -> None:
    """A 2-rank checkpoint resumed by one process fails with a one-line ConfigError, before anything is restored."""
    _ran(ddp_resume, "cartpole")
    ckpt = torch.load(ddp_resume["root"] / "cartpole" / "ckpt" / "last.ckpt", weights_only=False)
    state = ckpt["ExperienceDataModule"]
    assert state["world_size"] == 2 and len(state["ranks"]) == 2
    assert all(r["source"]["table"]["keys"].numel() == 300 for r in state["ranks"])
    dm = ExperienceDataModule("CartPole-v1")
    with pytest.raises(ConfigError, match=r"replay tables of 2 rank\(s\), but this run has 1") as err:
        dm.load_state_dict(state)
    assert "\n" not in str(err.value) and dm.updates_done == 0


def test_single_process_checkpoint_refused_by_several_ranks() -> None:
    dm = ExperienceDataModule("CartPole-v1")
    dm._world_size = 2  # as set up by a 2-rank trainer (rank 0)
    one = {"updates_done": 3, "wall_time": 1.0, "world_size": 1, "ranks": [{"source": {"table": {}}}]}
    with pytest.raises(ConfigError, match=r"replay tables of 1 rank\(s\), but this run has 2"):
        dm.load_state_dict(one)
    # rollouts (no tables): another world size resumes; ranks beyond the saved ones continue rank r mod saved
    dm.load_state_dict(
        {"updates_done": 3, "wall_time": 1.0, "world_size": 3, "ranks": [{"source": None}] * 3}
    )
    assert dm.updates_done == 3
