"""Sync vs async sampling on CartPole-v1: wall-clock time until the mean return of the last 100 training episodes
reaches 475, medians over seeds, and the policy-lag distribution of the async runs.

Each (config, seed) runs in its own process, one at a time; a run stops as soon as the threshold is reached (or at
its env-step budget). Configs (same algorithm and hyperparameters in a pair, only the sampler differs):

- ``appo-sync`` / ``appo-async``: APPO (V-trace), ppo-cartpole's hyperparameters, 256 transitions per update:
  sync 16 envs x T = 16; async 2 sampler processes x 16 envs, T = 16, one [16, 16] segment per update.
- ``dqn-sync`` / ``dqn-async``: the ``dqn-async-cartpole`` recipe (double-Q, dueling, 5-step, batch 256, replay
  ratio 32, Polyak 0.02, lr 2e-3 annealed, eps 1 -> 0.01 over 10%, budget 200k): async 2 sampler processes x 8
  envs, sync the same 16 envs in the Trainer process. DQN's policy lag is the staleness of the acting weights
  (learner version minus the oldest version a sampler acts with) when a batch is sampled.

    .venv/bin/python benchmarks/async_vs_sync.py                       # all four configs, seeds 0 1 2
    .venv/bin/python benchmarks/async_vs_sync.py --configs appo-async --seeds 0
    .venv/bin/python benchmarks/async_vs_sync.py --write                # also update benchmarks/RESULTS.md

One run: ``python benchmarks/async_vs_sync.py --one appo-async --seed 0`` prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from results_md import replace_section  # noqa: E402  (benchmarks/ is sys.path[0] when run)

HERE = Path(__file__).resolve().parent
TARGET = 475.0


def appo(sampler: str) -> tuple[dict, dict]:
    model = dict(
        lr=2e-3,
        gamma=0.98,
        gae_lambda=0.8,
        clip_coef=0.2,
        update_epochs=10,
        minibatch_size=256,
        anneal_lr=True,
        hidden=(64, 64),
    )
    data = dict(env="CartPole-v1", rollout_steps=16, total_env_steps=150_000, updates_per_epoch=50)
    if sampler == "async":
        data.update(
            num_envs=16, sampler="async", num_sampler_procs=2, weight_sync_every=1, async_queue_size=1
        )
    else:
        data.update(num_envs=16)
    return model, data


def dqn(sampler: str) -> tuple[dict, dict]:
    """The ``dqn-async-cartpole`` recipe; sync runs the same 16 envs in-process."""
    import yaml

    recipe = yaml.safe_load(
        (HERE.parent / "lightning_accelrl" / "recipes" / "dqn-async-cartpole.yaml").read_text()
    )
    model, data = dict(recipe["model"]["init_args"]), dict(recipe["data"])
    if sampler == "sync":
        envs = data.pop("num_envs") * data.pop("num_sampler_procs")
        for key in ("sampler", "weight_sync_every", "async_queue_size"):
            data.pop(key, None)
        data["num_envs"] = envs
    return model, data


CONFIGS = {
    "appo-sync": ("APPO", lambda: appo("sync")),
    "appo-async": ("APPO", lambda: appo("async")),
    "dqn-sync": ("DQN", lambda: dqn("sync")),
    "dqn-async": ("DQN", lambda: dqn("async")),
}


def run_one(name: str, seed: int, target: float = TARGET) -> dict:
    """Train one config until the threshold or the budget; returns the figures (runs in this process)."""
    import torch

    torch.set_num_threads(1)
    import lightning as L

    import lightning_accelrl
    from lightning_accelrl import ExperienceDataModule

    cls_name, make = CONFIGS[name]
    model_kwargs, data_kwargs = make()

    class StopAtTarget(L.Callback):
        def __init__(self) -> None:
            self.reached: dict | None = None

        def on_train_batch_end(self, trainer, pl_module, *args) -> None:
            dm = trainer.datamodule
            tr = dm.tracker
            if tr is None or len(tr.recent_returns) < tr.recent_returns.maxlen:
                return
            mean = sum(tr.recent_returns) / len(tr.recent_returns)
            if mean >= target and self.reached is None:
                self.reached = {"wall_time_s": dm.wall_time, "env_steps": dm.env_steps, "return": mean}
                trainer.should_stop = True

    L.seed_everything(seed, verbose=False)
    model = getattr(lightning_accelrl, cls_name)(**model_kwargs)
    dm = ExperienceDataModule(seed=seed, **data_kwargs)
    stop = StopAtTarget()
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=-1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=50,
        callbacks=[stop],
    )
    t0 = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    process_s = time.perf_counter() - t0
    tr = dm.tracker
    mean = sum(tr.recent_returns) / max(1, len(tr.recent_returns))
    return {
        "config": name,
        "seed": seed,
        "reached": stop.reached is not None,
        "wall_time_to_target_s": None if stop.reached is None else stop.reached["wall_time_s"],
        "env_steps_to_target": None if stop.reached is None else stop.reached["env_steps"],
        "final_return_mean": mean,
        "env_steps": dm.env_steps,
        "updates": model.policy_version,
        "fit_wall_s": process_s,
        "policy_lags": [lag for lag, n in sorted(dm.lags.histogram.items()) for _ in range(n)],
    }


def lag_distribution(lags: list[int]) -> dict[int, float]:
    if not lags:
        return {}
    counts: dict[int, int] = {}
    for lag in lags:
        counts[lag] = counts.get(lag, 0) + 1
    return {k: counts[k] / len(lags) for k in sorted(counts)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--one", choices=list(CONFIGS), help="run one config in this process, print JSON")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--write", action="store_true", help="write the summary into benchmarks/RESULTS.md")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument(
        "--merge",
        type=Path,
        help="a JSON file from an earlier run (benchmarks/out/): its results for configs not run now are reported too",
    )
    args = ap.parse_args()
    if args.one:
        result = run_one(args.one, args.seed)
        print("RESULT " + json.dumps(result))
        return

    results = []
    for seed in args.seeds:
        for name in args.configs:  # interleaved: sync and async of one seed back to back
            env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
            t0 = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, __file__, "--one", name, "--seed", str(seed)],
                capture_output=True,
                text=True,
                env=env,
                timeout=args.timeout,
            )
            line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode != 0 or not line:
                print(f"{name} seed {seed} failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
                continue
            r = json.loads(line[0][7:])
            r["process_wall_s"] = time.perf_counter() - t0
            r["load_1min"] = os.getloadavg()[0]
            results.append(r)
            print(
                f"{name:11s} seed {seed}: reached={r['reached']} t={r['wall_time_to_target_s']} "
                f"steps={r['env_steps_to_target']} final={r['final_return_mean']:.1f} updates={r['updates']} "
                f"load={r['load_1min']:.1f}",
                flush=True,
            )
    out_dir = HERE / "out"
    out_dir.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (out_dir / f"async_vs_sync-{stamp}.json").write_text(json.dumps(results, indent=1))
    merged: list[str] = []
    if args.merge is not None:
        earlier = [r for r in json.loads(args.merge.read_text()) if r["config"] not in args.configs]
        merged = sorted({r["config"] for r in earlier})
        results = earlier + results
    text = render(results)
    if merged:
        text += f"- Rows {', '.join(merged)}: from an earlier run of this script ({args.merge.name}), not rerun now.\n"
    print(text)
    if args.write:
        write_results(text)


def render(results: list[dict]) -> str:
    loads = [r["load_1min"] for r in results if "load_1min" in r]
    load = f"{min(loads):.1f}–{max(loads):.1f}" if loads else "n/a"
    lines = [
        "## Sync vs async sampling (CartPole-v1, time to a mean return of 475)",
        "",
        f"{time.strftime('%Y-%m-%d')}, `python benchmarks/async_vs_sync.py` on {platform.machine()}, {os.cpu_count()} CPU cores shared with other "
        f"jobs (1-minute load average after each run {load}); **no GPU was available in this task**, so there are no GPU figures.",
        "A run stops when the mean of the last 100 training episodes reaches 475; wall time from the start of "
        "learning (sampler start-up included for async). Sync and async of a pair share algorithm and hyperparameters.",
        "",
        "| config | seeds reached | median wall s to 475 (per seed) | median env steps to 475 (per seed) | updates (median) "
        "| policy lag p50 / p90 / max |",
        "|---|---|---|---|---|---|",
    ]
    for name in CONFIGS:
        rs = [r for r in results if r["config"] == name]
        if not rs:
            continue
        ok = [r for r in rs if r["reached"]]
        t = statistics.median(r["wall_time_to_target_s"] for r in ok) if ok else None
        s = statistics.median(r["env_steps_to_target"] for r in ok) if ok else None
        u = statistics.median(r["updates"] for r in rs)
        lags = sorted(x for r in rs for x in r["policy_lags"])
        if lags:
            lag = f"{lags[len(lags) // 2]} / {lags[int(0.9 * (len(lags) - 1))]} / {lags[-1]}"
        else:
            lag = "0 (sync)"
        per_seed = ", ".join(f"{r['wall_time_to_target_s']:.1f}" if r["reached"] else "–" for r in rs)
        per_steps = ", ".join(f"{r['env_steps_to_target'] / 1000:.0f}k" if r["reached"] else "–" for r in rs)
        lines.append(
            f"| {name} | {len(ok)}/{len(rs)} | {t:.1f} ({per_seed}) | {s:,.0f} ({per_steps}) | {u:.0f} | {lag} |"
            if t is not None
            else f"| {name} | 0/{len(rs)} | – | – | {u:.0f} | {lag} |"
        )
    lines.append("")
    for name in CONFIGS:
        lags = [x for r in results if r["config"] == name for x in r["policy_lags"]]
        if lags and name.endswith("async"):
            dist = lag_distribution(lags)
            shown = {k: v for k, v in dist.items() if v >= 0.005}
            body = ", ".join(f"{k}: {v:.0%}" for k, v in shown.items())
            rest = [k for k in dist if k not in shown]
            if rest:
                names = (
                    ", ".join(map(str, rest)) if len(rest) <= 6 else f"{rest[0]}, {rest[1]}, ..., {rest[-1]}"
                )
                body += f"; lags {names} ({len(rest)} values): {sum(dist[k] for k in rest):.1%} together"
            lines.append(
                f"- {name} policy-lag distribution (updates; fraction of {len(lags)} batches, all seeds): {body}"
            )
    return "\n".join(lines) + "\n"


def write_results(text: str) -> None:
    replace_section("async", text)


if __name__ == "__main__":
    main()
