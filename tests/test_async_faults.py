"""Async sampling faults and checkpoints: a sampler process killed with ``kill -9`` is restarted (``sampler_restarts``) or fails the
run with one clear line; either way no process and no ``/dev/shm`` entry is left (``run_script`` checks both).

A checkpoint taken mid-run holds the served table (items, priorities, limiter counters) and the env-step count; the
resumed run goes on from there. The fail-fast case without restarts is ``test_async.py::test_killed_sampler_fails_the_run_fast_with_a_clear_message``.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from process_helpers import run_in_own_group, shm_segments
from test_async import APPO_CFG, SMALL_DQN_CFG, run_script

from lightning_accelrl.data.supervision import sampler_stream


def test_restarted_samplers_take_env_streams_no_sampler_used() -> None:
    world, procs = 2, 3
    seen = set()
    for restarts in range(3):
        for rank in range(world):
            for idx in range(procs):
                seen.add(sampler_stream(rank, procs, idx, restarts, world))
    assert seen == set(
        range(3 * world * procs)
    )  # disjoint blocks: seeds and frame-stack streams never repeat
    assert (
        sampler_stream(1, procs, 2) == 1 * procs + 2
    )  # first start: the streams (seeds) used before restarts


def _dqn_cfg(restarts: int, kill_after: list[int]) -> dict:
    cfg = json.loads(json.dumps(SMALL_DQN_CFG))
    cfg["data"]["sampler_restarts"] = restarts
    cfg["kill_after"] = kill_after
    return cfg


def _all_gone(tmp_path: Path) -> None:
    for pid in json.loads((tmp_path / "result.json.pids").read_text()):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_killed_dqn_sampler_is_restarted_and_the_run_finishes_its_budget(tmp_path: Path) -> None:
    # ~350 updates in all (see test_async_run_finishes_its_budget_cleanly); the kill comes at update 60
    code, text, result, _ = run_script(tmp_path, _dqn_cfg(1, [60]), timeout=120)
    assert code == 0, text[-3000:]
    assert (tmp_path / "result.json.killed").exists()
    assert "async sampler process 0 of rank 0" in text and "restarting it (restart 1 of 1)" in text, text[
        -3000:
    ]
    assert result["restarts"] == 1
    assert result["restarts_metric"] == 1.0  # logged
    # the budget is spent (the restarted process continues the dead one's count); one step per process in flight
    assert 3000 <= result["env_steps"] < 3000 + 2 * 2
    expected = (
        (3000 - 200) * 4.0 / 32
    )  # the limiter still holds the ratio (the killed process lost <= 1 step)
    assert abs(result["updates"] - expected) <= 32 / 4 + 2, result["updates"]
    _all_gone(tmp_path)


def test_killed_appo_sampler_is_restarted_and_the_run_finishes_its_budget(tmp_path: Path) -> None:
    cfg = json.loads(json.dumps(APPO_CFG))
    cfg.pop("target")
    cfg["model"]["update_epochs"] = 2
    # 200 segments of [16, 16]: the run must outlast the runner's 0.5-s check after the kill (a quiet machine
    # made 40 updates in less than that, and the death went unnoticed because the budget was already spent)
    cfg["data"].update(total_env_steps=16 * 16 * 200, sampler_restarts=2)
    cfg["kill_after"] = [5]
    code, text, result, _ = run_script(tmp_path, cfg, timeout=120)
    assert code == 0, text[-3000:]
    assert result["restarts"] == 1
    assert result["env_steps"] >= 16 * 16 * 200
    # the killed process may take one collected segment with it: the learner then runs one update less
    assert 199 <= result["updates"] <= 200, result["updates"]
    _all_gone(tmp_path)


def test_a_death_beyond_sampler_restarts_fails_fast_with_a_clear_message(tmp_path: Path) -> None:
    cfg = _dqn_cfg(1, [40, 80])
    cfg["data"]["total_env_steps"] = 1_000_000
    code, text, result, _ = run_script(tmp_path, cfg, timeout=120)
    ended = time.time()
    killed = float((tmp_path / "result.json.killed").read_text())  # the second kill
    assert code != 0 and result is None
    assert ended - killed < 10, ended - killed
    assert "restarting it (restart 1 of 1)" in text, text[-3000:]
    line = next(x for x in text.splitlines() if x.startswith("lightning_accelrl.data.supervision.Sampler"))
    assert "SamplerProcessError: async sampler process 0 of rank 0" in line
    assert "was killed by signal 9 after 1 restart(s) (sampler_restarts=1); stopping the run" in line
    _all_gone(tmp_path)


# ----- async table in checkpoints ------------------------------------------------------------------------------------
RESUME_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import torch
    torch.set_num_threads(1)
    import lightning as L
    from lightning_accelrl import DQN, ExperienceDataModule
    from lightning_accelrl.data import async_runner

    seen = {}
    spawn = async_runner.AsyncRunner._spawn

    def spawn_and_record(self, idx):  # the server's table as the run starts: before any sampler exists
        if not seen:
            seen["info"] = self.client.info()
            seen["state"] = self.client.state_dict()
            seen["env_steps"] = self.env_steps
        return spawn(self, idx)

    async_runner.AsyncRunner._spawn = spawn_and_record

    class SaveMidRun(L.Callback):
        def __init__(self, path, at):
            self.path, self.at = path, at

        def on_train_batch_end(self, trainer, pl_module, *args):
            if self.at is not None and pl_module.policy_version == self.at:
                trainer.save_checkpoint(self.path)  # the samplers go on meanwhile
                trainer.should_stop = True

    def main():
        tmp, phase = sys.argv[1], sys.argv[2]
        ckpt = os.path.join(tmp, "mid.ckpt")
        L.seed_everything(0, verbose=False)
        model = DQN(hidden=(16,), prioritized=True, n_step=2, target_update_period=50)
        dm = ExperienceDataModule(
            "CartPole-v1", num_envs=2, total_env_steps=2000, batch_size=32, replay_ratio=4.0, learning_starts=200,
            replay_capacity=600, sampler="async", num_sampler_procs=2, weight_sync_every=2, seed=0,
            updates_per_epoch=1000,
        )
        trainer = L.Trainer(
            accelerator="cpu", max_epochs=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, callbacks=[SaveMidRun(ckpt, 100 if phase == "first" else None)],
        )
        trainer.fit(model, datamodule=dm, ckpt_path=None if phase == "first" else ckpt)
        torch.save({**seen, "env_steps_end": dm.env_steps, "updates_done": dm.updates_done,
                    "policy_version": model.policy_version}, os.path.join(tmp, phase + ".pt"))

    if __name__ == "__main__":
        main()
    """
)


def _run_phase(tmp_path: Path, phase: str) -> torch.Tensor:
    script = tmp_path / "resume_async.py"
    script.write_text(RESUME_SCRIPT)
    shm_before = shm_segments()
    cmd = [sys.executable, str(script), str(tmp_path), phase]
    code, output, _ = run_in_own_group(cmd, tmp_path, 120, "async resume run")
    assert shm_segments() - shm_before == set()
    assert code == 0, output[-3000:]
    return torch.load(tmp_path / f"{phase}.pt", weights_only=False)


def test_async_dqn_resumes_with_its_table_priorities_and_limiter_counters(tmp_path: Path) -> None:
    first = _run_phase(tmp_path, "first")
    assert first["policy_version"] == 100
    ckpt = torch.load(tmp_path / "mid.ckpt", weights_only=True)
    saved = ckpt["ExperienceDataModule"]["ranks"][0]["source"]
    table = saved["table"]
    lim = table["rate_limiter"]
    assert len(table["keys"]) == 600 and lim["deletes"] > 0 and lim["samples"] > 0  # full, evicting, sampled
    assert len(set(table["priorities"].tolist())) > 1  # TD-error priorities were written back
    saved_steps = int(saved["env_steps"].sum())
    assert saved_steps >= lim["inserts"]  # n-step transitions lag the env steps a little

    resumed = _run_phase(tmp_path, "resumed")
    info, state = resumed["info"], resumed["state"]
    assert info["size"] == len(table["keys"])
    assert state["rate_limiter"] == lim  # inserts, samples, deletes
    for key in ("keys", "priorities", "times_sampled", "recency"):
        assert torch.equal(state[key], table[key]), key
    assert state["next_key"] == table["next_key"]
    assert resumed["env_steps"] == saved_steps  # the budget goes on from the checkpoint
    # and the resumed run finishes its budget (one in-flight vector step per sampler process may still land)
    assert 2000 <= resumed["env_steps_end"] < 2000 + 2 * 2
    assert resumed["updates_done"] > 100 and resumed["policy_version"] == resumed["updates_done"]
