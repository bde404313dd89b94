"""Asynchronous samplers feeding 1 vs 2 synchronous DDP learner ranks (CPU, gloo): throughput and per-rank lag.

APPO on CartPole-v1 with ``sampler: async`` (ppo-cartpole's hyperparameters, segments of 16 envs x 16 steps, one
segment per rank per update), the same total env-step budget in every config:

- ``1x2``: 1 learner rank, 2 sampler processes;
- ``2x1``: 2 learner ranks, 1 sampler process each (the same samplers and envs in all, twice the learners);
- ``2x2``: 2 learner ranks, 2 sampler processes each.

Configs run one at a time, interleaved (1x2, 2x1, 2x2, 1x2, ...), each in its own process group. Reported per run:
env steps/s (all ranks' env steps over the learner's wall time from its first batch), updates/s per rank (every
rank makes the same updates; a global update consumes one segment per rank), each rank's policy lag (mean and
max over the run), and the whole process's wall time (startup of the ranks, samplers and servers included). A 2-rank run needs 2x(1 learner + 1 table server + samplers) processes: on a machine with fewer
cores than that the ranks and samplers share cores, and no speed-up can show.

    .venv/bin/python benchmarks/async_learners.py                          # 1x2, 2x1, 2x2; 2 repeats
    .venv/bin/python benchmarks/async_learners.py --configs 1x2 2x1 --repeats 3 --env-steps 96000

One run (prints one JSON line; ranks > 0 are started by Lightning with the same arguments):
``python benchmarks/async_learners.py --one 2x1 --out-dir DIR``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONFIGS = {"1x2": (1, 2), "2x1": (2, 1), "2x2": (2, 2)}  # (learner ranks, sampler processes per rank)


def run_one(name: str, env_steps: int, out_dir: Path, seed: int) -> None:
    """One fit on this process's rank; every rank writes ``rank{r}.json`` into ``out_dir``."""
    import lightning as L
    import torch

    from lightning_accelrl import APPO, ExperienceDataModule

    torch.set_num_threads(1)
    ranks, procs = CONFIGS[name]
    L.seed_everything(seed, verbose=False)
    model = APPO(
        lr=2e-3,
        gamma=0.98,
        gae_lambda=0.8,
        clip_coef=0.2,
        update_epochs=10,
        minibatch_size=256,
        hidden=(64, 64),
    )
    dm = ExperienceDataModule(
        "CartPole-v1", num_envs=16, rollout_steps=16, total_env_steps=env_steps, updates_per_epoch=50,
        sampler="async", num_sampler_procs=procs, weight_sync_every=1, async_queue_size=1, seed=seed,
    )  # fmt: skip

    class Final(L.Callback):
        def on_fit_end(self, trainer, pl_module) -> None:
            self.stats = trainer.datamodule.statistics()  # collective: every rank calls it

    final = Final()

    trainer = L.Trainer(
        accelerator="cpu", devices=ranks, strategy="ddp" if ranks > 1 else "auto", max_epochs=-1, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=50,
        callbacks=[final],
    )  # fmt: skip
    trainer.fit(model, datamodule=dm)
    stats, wall = final.stats, dm.wall_time
    row = {
        "config": name, "ranks": ranks, "procs_per_rank": procs, "rank": trainer.global_rank, "seed": seed,
        "env_steps": stats["env_steps"], "wall_s": wall, "env_steps_per_s": stats["env_steps"] / wall,
        "updates": dm.updates_done, "updates_per_s": dm.updates_done / wall,
        "episode_return_mean": stats.get("episode_return_mean"),
        "lag": {r: [stats.get(f"policy_lag/rank{r}_mean"), stats.get(f"policy_lag/rank{r}_max")] for r in range(ranks)},
    }  # fmt: skip
    (out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(row))


def launch(name: str, env_steps: int, seed: int, out_root: Path, timeout: float) -> dict:
    """Run one config in a new process group; rank 0's row plus the load average before it started."""
    out_dir = out_root / f"{name}-{seed}-{time.time_ns()}"
    out_dir.mkdir(parents=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env.pop("LOCAL_RANK", None)
    env.pop("WORLD_SIZE", None)
    load, t0 = os.getloadavg()[0], time.monotonic()
    cmd = [sys.executable, __file__, "--one", name, "--out-dir", str(out_dir), "--env-steps", str(env_steps)]
    proc = subprocess.Popen(
        [*cmd, "--seed", str(seed)],
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
    rank0 = out_dir / "rank0.json"
    if proc.returncode != 0 or not rank0.exists():
        sys.exit(f"{name} failed (exit {proc.returncode}):\n{output.decode(errors='replace')[-3000:]}")
    row = json.loads(rank0.read_text())
    row["load_before"], row["process_s"] = load, time.monotonic() - t0
    return row


def render(rows: list[dict]) -> str:
    lines = [
        "| config | learner ranks × samplers | runs | env steps/s (median, min–max) | updates/s per rank | "
        "segments/s (all ranks) | policy lag mean / max per rank | return (last 100) | process wall s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in CONFIGS:
        rs = [r for r in rows if r["config"] == name]
        if not rs:
            continue
        sps = [r["env_steps_per_s"] for r in rs]
        ups = [r["updates_per_s"] for r in rs]
        lags = "; ".join(
            "r" + rank + " " + "/".join(f"{v[i]:.2f}" if i == 0 else f"{v[i]:.0f}" for i in (0, 1))
            for rank, v in _mean_lags(rs).items()
        )
        rets = [r["episode_return_mean"] for r in rs if r["episode_return_mean"] is not None]
        ranks, procs = CONFIGS[name]
        lines.append(
            f"| {name} | {ranks} × {procs} | {len(rs)} | {statistics.median(sps):,.0f} ({min(sps):,.0f}–"
            f"{max(sps):,.0f}) | {statistics.median(ups):.1f} | {ranks * statistics.median(ups):.1f} | {lags} | "
            f"{statistics.median(rets):.0f} | {statistics.median(r['process_s'] for r in rs):.0f} |"
        )
    return "\n".join(lines)


def _mean_lags(rs: list[dict]) -> dict[str, list[float]]:
    """Per rank: the mean of the runs' mean lags, and the largest max."""
    out: dict[str, list[float]] = {}
    for rank in rs[0]["lag"]:
        means = [r["lag"][rank][0] for r in rs if r["lag"][rank][0] is not None]
        maxes = [r["lag"][rank][1] for r in rs if r["lag"][rank][1] is not None]
        out[rank] = [statistics.mean(means), max(maxes)]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--env-steps", type=int, default=48_000, help="the budget, over all ranks")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--one", choices=list(CONFIGS), help="run one config in this process (and its DDP ranks)")
    ap.add_argument("--out-dir", type=Path, default=HERE / "out" / "async_learners")
    ap.add_argument("--timeout", type=float, default=600)
    args = ap.parse_args()
    if args.one:
        run_one(args.one, args.env_steps, args.out_dir, args.seed)
        return
    rows = []
    for repeat in range(args.repeats):
        for name in args.configs:
            row = launch(name, args.env_steps, args.seed + repeat, args.out_dir, args.timeout)
            print(json.dumps(row), flush=True)
            rows.append(row)
    loads = [r["load_before"] for r in rows]
    print(
        f"\n{platform.node()}: {os.cpu_count()} cores; load average before the runs {min(loads):.1f}–{max(loads):.1f}"
    )
    print(render(rows))


if __name__ == "__main__":
    main()
