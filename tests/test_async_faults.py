"""Async sampling faults: a sampler process killed with ``kill -9`` is restarted (``sampler_restarts``) or fails the
run with one clear line; either way no process and no ``/dev/shm`` entry is left (``run_script`` checks both).

The fail-fast case without restarts is ``test_async.py::test_killed_sampler_fails_the_run_fast_with_a_clear_message``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from test_async import APPO_CFG, run_script

from lightning_accelrl.data.async_runner import sampler_stream


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
    return {
        "algo": "DQN",
        "model": {"hidden": [16]},
        "data": {
            "env": "CartPole-v1",
            "num_envs": 2,
            "total_env_steps": 3000,
            "batch_size": 32,
            "replay_ratio": 4.0,
            "learning_starts": 200,
            "sampler": "async",
            "num_sampler_procs": 2,
            "weight_sync_every": 2,
            "sampler_restarts": restarts,
        },
        "kill_after": kill_after,
    }


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
    cfg["data"].update(total_env_steps=16 * 16 * 40, sampler_restarts=2)  # 40 segments of [16, 16]
    cfg["kill_after"] = [5]
    code, text, result, _ = run_script(tmp_path, cfg, timeout=120)
    assert code == 0, text[-3000:]
    assert result["restarts"] == 1
    assert result["env_steps"] >= 16 * 16 * 40
    # the killed process may take one collected segment with it: the learner then runs one update less
    assert 39 <= result["updates"] <= 40, result["updates"]
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
    line = next(x for x in text.splitlines() if x.startswith("lightning_accelrl.data.async_runner.Sampler"))
    assert "SamplerProcessError: async sampler process 0 of rank 0" in line
    assert "was killed by signal 9 after 1 restart(s) (sampler_restarts=1); stopping the run" in line
    _all_gone(tmp_path)
