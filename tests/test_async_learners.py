"""Asynchronous samplers feeding synchronous DDP learners: 2 CPU ranks (gloo), each with its own sampler processes
and its own served table (DQN: a replay table) or queue (APPO: rollout segments).

Checked: identical parameters on both ranks, each rank's samplers are distinct processes on distinct env streams,
the budget is counted over both ranks, and the policy lag is reported per rank; also the placement config in
``docs/configs/appo-async-ddp.yaml`` runs through ``accelrl fit --config`` on 2 CPU ranks.
"""

from __future__ import annotations

import json
import math
import os
import sys
import textwrap
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from process_helpers import run_in_own_group, shm_segments
from rank_recording import with_tests_dir_on_path

from lightning_accelrl.data.statistics import LagMeter, lag_by_rank, reduced_statistics
from lightning_accelrl.data.supervision import sampler_stream
from lightning_accelrl.envs import env_seeds

ROOT = Path(__file__).parents[1]
SEED, PROCS = 3, 2
CONFIGS = {
    # DQN: 2 envs per sampler, 1,000 env steps per rank: (1000 - 200) * 4 / 32 = 100 updates per rank
    "DQN": {
        "model": {"hidden": [16], "target_update_period": 20},
        "data": {"num_envs": 2, "total_env_steps": 2000, "batch_size": 32, "replay_ratio": 4.0,
                 "learning_starts": 200, "weight_sync_every": 2},
    },
    # APPO: segments of 16 steps x 4 envs; 6 segments per rank
    "APPO": {
        "model": {"hidden": [16], "update_epochs": 2, "minibatch_size": 32},
        "data": {"num_envs": 4, "rollout_steps": 16, "total_env_steps": 2 * 6 * 64, "async_queue_size": 1},
    },
}  # fmt: skip

SCRIPT = (
    textwrap.dedent(
        """
    import json, os, sys
    import torch
    torch.set_num_threads(1)
    import lightning as L
    from lightning_accelrl import APPO, DQN, ExperienceDataModule
    from rank_recording import MemLogger, flat


    class Record(L.Callback):
        def __init__(self):
            self.pids, self.first_obs, self.final = None, None, None

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if self.pids is None:  # the first batch: rollouts start at the envs' reset
                self.first_obs = batch["observation"][0].clone() if batch.ndim == 2 else None
                src = trainer.datamodule.source
                self.pids = {"samplers": [p.pid for p in src.procs], "server": src.server.pid}

        def on_fit_end(self, trainer, pl_module):
            self.final = trainer.datamodule.statistics()  # collective: every rank calls it


    def main():
        out, algo, cfg = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
        L.seed_everything(0, verbose=False)
        model = {"APPO": APPO, "DQN": DQN}[algo](**cfg["model"])
        dm = ExperienceDataModule(
            "CartPole-v1", seed=SEED, sampler="async", num_sampler_procs=PROCS, **cfg["data"]
        )
        rec, mem = Record(), MemLogger()
        trainer = L.Trainer(
            strategy="ddp", devices=2, accelerator="cpu", logger=mem, log_every_n_steps=2,
            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, max_epochs=-1,
            callbacks=[rec],
        )
        trainer.fit(model, datamodule=dm)
        torch.save(
            {
                "rank": trainer.global_rank, "pid": os.getpid(), "pids": rec.pids, "first_obs": rec.first_obs,
                "params": flat(model),
                "updates": dm.updates_done, "local_env_steps": dm.source.env_steps,
                "lag_mean": dm.lags.mean, "lag_max": dm.lags.max, "lag_batches": dm.lags.batches,
                "final": rec.final, "rows": mem.rows,
            },
            os.path.join(out, f"rank{trainer.global_rank}.pt"),
        )


    if __name__ == "__main__":
        main()
    """
    )
    .replace("SEED", str(SEED))
    .replace("PROCS", str(PROCS))
)


def _ddp_env() -> dict[str, str]:
    env = with_tests_dir_on_path(dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore"))
    env.pop("LOCAL_RANK", None)
    env.pop("WORLD_SIZE", None)
    return env


@pytest.fixture(scope="module", params=["DQN", "APPO"])
def ddp_async(request, tmp_path_factory) -> tuple[str, dict[int, dict]]:
    algo = request.param
    tmp = tmp_path_factory.mktemp(f"async-learners-{algo}")
    script = tmp / "ddp_async.py"
    script.write_text(SCRIPT)
    shm_before = shm_segments()
    cmd = [sys.executable, str(script), str(tmp), algo, json.dumps(CONFIGS[algo])]
    code, text, _ = run_in_own_group(cmd, tmp, 240, f"DDP async {algo} run", env=_ddp_env(), linger_s=10)
    assert code == 0, text[-4000:]
    assert shm_segments() - shm_before == set()
    return algo, {r: torch.load(tmp / f"rank{r}.pt", weights_only=False) for r in (0, 1)}


def test_parameters_identical_across_ranks(ddp_async) -> None:
    _, runs = ddp_async
    assert runs[0]["updates"] == runs[1]["updates"] > 0
    torch.testing.assert_close(runs[0]["params"], runs[1]["params"], rtol=0, atol=0)


def test_each_rank_has_its_own_sampler_processes_and_server(ddp_async) -> None:
    _, runs = ddp_async
    pids = [runs[r]["pids"] for r in (0, 1)]
    samplers = pids[0]["samplers"] + pids[1]["samplers"]
    servers = [pids[0]["server"], pids[1]["server"]]
    learners = [runs[0]["pid"], runs[1]["pid"]]
    assert len(samplers) == 2 * PROCS
    assert len(set(samplers) | set(servers) | set(learners)) == 2 * PROCS + 4  # all distinct processes


def test_each_rank_samples_its_own_env_streams(ddp_async) -> None:
    algo, runs = ddp_async
    if algo != "APPO":
        pytest.skip(
            "replay batches are random draws from the table; the queue's first segment starts at a reset"
        )
    num_envs = CONFIGS[algo]["data"]["num_envs"]

    def reset_obs(stream: int) -> np.ndarray:
        envs = [gym.make("CartPole-v1") for _ in range(num_envs)]
        return np.stack(
            [e.reset(seed=s)[0] for e, s in zip(envs, env_seeds(SEED, stream, num_envs), strict=True)]
        )

    for rank, run in runs.items():
        first = run["first_obs"].numpy()
        own = [sampler_stream(rank, PROCS, i, world_size=2) for i in range(PROCS)]
        other = [sampler_stream(1 - rank, PROCS, i, world_size=2) for i in range(PROCS)]
        assert any(np.array_equal(first, reset_obs(s)) for s in own), f"rank {rank}: not one of its streams"
        assert not any(np.array_equal(first, reset_obs(s)) for s in other)


def test_budget_is_counted_over_both_ranks(ddp_async) -> None:
    algo, runs = ddp_async
    data = CONFIGS[algo]["data"]
    share = math.ceil(data["total_env_steps"] / 2)
    per_step = PROCS * data["num_envs"] * data.get("rollout_steps", 1)  # what the samplers may overshoot by
    for run in runs.values():
        assert share <= run["local_env_steps"] <= share + per_step
    logged = runs[0]["final"]["env_steps"]
    assert logged == runs[0]["local_env_steps"] + runs[1]["local_env_steps"]
    if algo == "APPO":  # one segment of T x num_envs per update
        assert runs[0]["updates"] == math.ceil(share / (data["rollout_steps"] * data["num_envs"]))
    else:  # the limiter's ratio on each rank's table, within its band
        expected = (share - data["learning_starts"]) * data["replay_ratio"] / data["batch_size"]
        assert abs(runs[0]["updates"] - expected) <= 0.2 * expected


def test_policy_lag_is_reported_per_rank(ddp_async) -> None:
    _, runs = ddp_async
    for run in runs.values():  # every rank computes the same figures
        final = run["final"]
        for rank in (0, 1):
            assert runs[rank]["lag_batches"] == runs[rank]["updates"]
            assert final[f"policy_lag/rank{rank}_mean"] == pytest.approx(runs[rank]["lag_mean"])
            assert final[f"policy_lag/rank{rank}_max"] == runs[rank]["lag_max"]
        assert final["policy_lag/max"] == max(runs[0]["lag_max"], runs[1]["lag_max"])
        both = (runs[0]["lag_mean"] + runs[1]["lag_mean"]) / 2  # equal batch counts on both ranks
        assert final["policy_lag/mean"] == pytest.approx(both)
    logged = [row for row in runs[0]["rows"] if "policy_lag/rank1_mean" in row]
    assert logged and all("train/policy_lag" in row and "policy_lag/rank0_max" in row for row in logged)


# ----- the per-rank figures without processes -------------------------------------------------------------------
def test_lag_by_rank_names_each_rank_and_the_whole_run() -> None:
    per_rank = [6.0, 4.0, 3.0, 0.0, 0.0, 0.0, 2.0, 4.0, 1.0]  # rank 1 measured nothing
    stats = lag_by_rank(per_rank)
    assert stats == {
        "policy_lag/rank0_mean": 1.5,
        "policy_lag/rank0_max": 3.0,
        "policy_lag/rank2_mean": 0.5,
        "policy_lag/rank2_max": 1.0,
        "policy_lag/mean": 1.0,
        "policy_lag/max": 3.0,
    }
    assert lag_by_rank([0.0, 0.0, 0.0]) == {}


class _FakeStrategy:
    """A 2-rank reduction: adds the other rank's values (what an all-reduce of both would give)."""

    root_device = torch.device("cpu")
    world_size = 2

    def __init__(self, rank: int, other: torch.Tensor | None = None) -> None:
        self.global_rank, self.other, self.sent = rank, other, None

    def reduce(self, t: torch.Tensor, reduce_op: str) -> torch.Tensor:
        assert reduce_op == "sum"
        self.sent = t.clone()
        return t if self.other is None else t + self.other


class _Source:
    def __init__(self) -> None:
        from lightning_accelrl.sampling.episodes import EpisodeTracker

        self.tracker, self.env_steps, self.restarts = EpisodeTracker(1, 10), 100, 0

    def stats(self) -> dict[str, float]:
        return {}


def test_reduced_statistics_gathers_each_ranks_lag_in_one_reduction() -> None:
    meters = [LagMeter(), LagMeter()]
    for lag in (0, 1, 2):
        meters[0].add(lag)
    for lag in (4, 4, 4):
        meters[1].add(lag)
    rank1 = _FakeStrategy(1)
    reduced_statistics(_Source(), 1.0, meters[1], rank1)  # what rank 1 contributes
    stats = reduced_statistics(_Source(), 1.0, meters[0], _FakeStrategy(0, rank1.sent))
    assert stats["policy_lag/rank0_mean"] == 1.0 and stats["policy_lag/rank0_max"] == 2.0
    assert stats["policy_lag/rank1_mean"] == 4.0 and stats["policy_lag/rank1_max"] == 4.0
    assert stats["policy_lag/mean"] == 2.5 and stats["policy_lag/max"] == 4.0
    assert stats["train/policy_lag"] == 2.5  # the window since the last log, over both ranks
    assert stats["env_steps"] == 200
    meters[0].add(1)
    again = reduced_statistics(_Source(), 1.0, meters[0])  # one rank, the window was taken
    assert again["train/policy_lag"] == 1.0 and again["policy_lag/rank0_mean"] == 1.0
    assert "policy_lag/rank1_mean" not in again


# ----- the placement config ------------------------------------------------------------------------------------
def test_placement_config_runs_with_two_cpu_ranks(tmp_path: Path) -> None:
    config = ROOT / "docs" / "configs" / "appo-async-ddp.yaml"
    cmd = [
        sys.executable,
        "-m",
        "lightning_accelrl.cli",
        "fit",
        "--config",
        str(config),
        "--trainer.accelerator",
        "cpu",
        "--trainer.devices",
        "2",
        "--trainer.enable_progress_bar",
        "false",
        "--data.num_envs",
        "4",
        "--data.rollout_steps",
        "8",
        "--data.num_sampler_procs",
        "1",
        "--data.total_env_steps",
        "256",
        "--model.init_args.hidden",
        "[16]",
        "--model.init_args.minibatch_size",
        "32",
        "--model.init_args.update_epochs",
        "1",
    ]  # fmt: skip  (the config's logger writes to runs/ under the working directory)
    code, text, _ = run_in_own_group(cmd, tmp_path, 240, "accelrl fit --config", env=_ddp_env(), linger_s=10)
    assert code == 0, text[-4000:]
    summaries = list((tmp_path / "runs").rglob("summary.json"))
    assert len(summaries) == 1, text[-2000:]
    summary = json.loads(summaries[0].read_text())
    assert summary["world_size"] == 2 and summary["env_steps"] >= 256
    assert summary["algorithm"] == "APPO"
    by_rank = summary["policy_lag_by_rank"]  # each rank's own lag, and the figures over both ranks
    assert [row["rank"] for row in by_rank] == [0, 1]
    assert summary["policy_lag_max"] == max(row["max"] for row in by_rank)
    assert (
        min(row["mean"] for row in by_rank)
        <= summary["policy_lag_mean"]
        <= max(row["mean"] for row in by_rank)
    )
