"""Sync vs async sampling on Atari Pong, CPU: training throughput (env steps/s, updates/s) and policy lag.

Full training (sampling + learning), not raw simulation, with the recipes' ALE v5 protocol (sticky actions 0.25,
frame skip 4, 84x84 gray x4 frame stack, ale_py's C++ vector env) and 8 envs in every config:

- ``dqn-sync`` / ``dqn-async`` (the default pair): dqn-pong's settings (Nature CNN, batch 32, replay ratio 8,
  i.e. one update per 4 transitions, Adam lr 1e-4, hard target every 1,000 updates, eps 1 -> 0.01) except
  ``learning_starts`` 2,000 (dqn-pong: 80,000) and a 50,000-transition table, so that a short run is in the learning
  phase. Sync: 8 envs stepped in the Trainer process as the limiter asks; async: 2 sampler processes x 4 envs
  insert into the served table (frame-deduplicated storage) while the learner samples it, weights every update.
- ``appo-sync`` / ``appo-async``: APPO with ppo-pong's hyperparameters (4 epochs of 256-transition minibatches
  on 1,024 transitions per update); sync 8 envs x T 128, async 2 processes x 4 envs x T 256. On 2 busy CPU cores
  one such update took ~30 s, so a 25-s window holds 0-1 updates: use ``--seconds 120`` or more for these.

Each run is its own process, configs interleaved (sync, async, sync, async, ...). The clock starts at the end of the
first update (env, network and process start-up, and the replay warm-up, excluded) and runs ``--seconds``; env
steps/s counts the steps collected in that window (frames/s = 4 x env steps/s), updates/s the learner's updates.

    .venv/bin/python benchmarks/async_atari.py                          # dqn pair, 3 repeats x 25 s
    .venv/bin/python benchmarks/async_atari.py --configs appo-sync appo-async --seconds 120
    .venv/bin/python benchmarks/async_atari.py --repeats 5 --seconds 30 --write

One run: ``python benchmarks/async_atari.py --one dqn-async`` prints one JSON line.
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
from importlib import metadata
from pathlib import Path

from results_md import replace_section  # noqa: E402  (benchmarks/ is sys.path[0] when run)

HERE = Path(__file__).resolve().parent
FRAME_SKIP = 4

ENV_KWARGS = dict(  # the ppo-pong recipe's protocol
    repeat_action_probability=0.25,
    full_action_space=False,
    frameskip=FRAME_SKIP,
    noop_max=30,
    episodic_life=False,
    life_loss_info=False,
    reward_clipping=True,
    use_fire_reset=True,
    max_num_frames_per_episode=108_000,
)
DQN_MODEL = dict(  # dqn-pong's hyperparameters
    lr=1e-4,
    gamma=0.99,
    n_step=1,
    target_update_period=1000,
    exploration_initial=1.0,
    exploration_final=0.01,
    exploration_fraction=0.1,
    max_grad_norm=10.0,
    adam_eps=1e-4,
    network="nature_cnn",
)
APPO_MODEL = dict(  # ppo-pong's hyperparameters, on APPO (V-trace + PPO's clipped surrogate)
    lr=2.5e-4,
    gamma=0.99,
    gae_lambda=0.95,
    clip_coef=0.1,
    update_epochs=4,
    minibatch_size=256,
    entropy_coef=0.01,
    value_coef=0.5,
    max_grad_norm=0.5,
    adam_eps=1e-5,
    anneal_lr=True,
    network="nature_cnn",
)


def data_kwargs(name: str) -> dict:
    data = dict(env="ALE/Pong-v5", env_kwargs=ENV_KWARGS, total_env_steps=10_000_000, updates_per_epoch=100)
    if name.startswith("dqn"):
        data.update(batch_size=32, replay_ratio=8.0, learning_starts=2000, replay_capacity=50_000)
        if name == "dqn-sync":
            data.update(num_envs=8)
        else:
            data.update(num_envs=4, sampler="async", num_sampler_procs=2, weight_sync_every=1)
        return data
    if name == "appo-sync":
        data.update(num_envs=8, rollout_steps=128)
    else:
        data.update(
            num_envs=4,
            rollout_steps=256,
            sampler="async",
            num_sampler_procs=2,
            weight_sync_every=1,
            async_queue_size=1,
        )
    return data


CONFIGS = ("dqn-sync", "dqn-async", "appo-sync", "appo-async")


def run_one(name: str, seconds: float, seed: int = 0) -> dict:
    """Train ``name`` for ``seconds`` after its first update; returns the throughput figures."""
    import torch

    torch.set_num_threads(1)
    import lightning as L

    from lightning_accelrl import APPO, DQN, ExperienceDataModule

    class Window(L.Callback):
        def __init__(self) -> None:
            self.start: tuple[float, int, int] | None = None
            self.end: tuple[float, int, int] | None = None

        def on_train_batch_end(self, trainer, pl_module, *args) -> None:
            now, dm = time.perf_counter(), trainer.datamodule
            mark = (now, dm.env_steps, pl_module.policy_version)
            if self.start is None:
                self.start = mark
                return
            self.end = mark
            if now - self.start[0] >= seconds:
                trainer.should_stop = True

    L.seed_everything(seed, verbose=False)
    model = DQN(**DQN_MODEL) if name.startswith("dqn") else APPO(**APPO_MODEL)
    dm = ExperienceDataModule(seed=seed, **data_kwargs(name))
    window = Window()
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=-1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=50,
        callbacks=[window],
    )
    t0 = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    (ts, s0, u0), (te, s1, u1) = window.start, window.end
    elapsed = te - ts
    lags = [lag for lag, n in sorted(dm.lags.histogram.items()) for _ in range(n)]  # every batch's lag
    return {
        "config": name,
        "seconds": elapsed,
        "env_steps": s1 - s0,
        "updates": u1 - u0,
        "env_steps_per_s": (s1 - s0) / elapsed,
        "frames_per_s": FRAME_SKIP * (s1 - s0) / elapsed,
        "updates_per_s": (u1 - u0) / elapsed,
        "startup_s": ts - t0,
        "policy_lags": lags,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="+", default=["dqn-sync", "dqn-async"], choices=CONFIGS)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=25.0, help="measured window per run")
    ap.add_argument("--one", choices=CONFIGS, help="run one config in this process, print JSON")
    ap.add_argument("--write", action="store_true", help="write the summary into benchmarks/RESULTS.md")
    ap.add_argument("--timeout", type=float, default=300)
    args = ap.parse_args()
    if args.one:
        print("RESULT " + json.dumps(run_one(args.one, args.seconds)))
        return

    results, loads = [], []
    for rep in range(args.repeats):
        for name in args.configs:  # interleaved
            env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
            cmd = [sys.executable, __file__, "--one", name, "--seconds", str(args.seconds)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.timeout)
            line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode != 0 or not line:
                print(f"{name} repeat {rep} failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
                continue
            r = json.loads(line[0][7:])
            r["repeat"] = rep
            r["load_1min"] = os.getloadavg()[0]
            loads.append(r["load_1min"])
            results.append(r)
            print(
                f"{name:10s} repeat {rep}: {r['env_steps_per_s']:.0f} env steps/s, {r['updates_per_s']:.3f} updates/s "
                f"({r['updates']} updates in {r['seconds']:.1f} s), load {r['load_1min']:.1f}",
                flush=True,
            )
    out_dir = HERE / "out"
    out_dir.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (out_dir / f"async_atari-{stamp}.json").write_text(json.dumps(results, indent=1))
    text = render(results, args)
    print(text)
    if args.write:
        write_results(text)


def _lags(lags: list[int]) -> str:
    if not lags:
        return "0 (sync)"
    s = sorted(lags)
    return f"{s[len(s) // 2]} / {s[int(0.9 * (len(s) - 1))]} / {s[-1]}"


def render(results: list[dict], args: argparse.Namespace) -> str:
    loads = [r["load_1min"] for r in results]
    load = f"{min(loads):.1f}–{max(loads):.1f}" if loads else "n/a"
    versions = ", ".join(f"{p} {metadata.version(p)}" for p in ("torch", "lightning", "ale-py"))
    lines = [
        "## Sync vs async sampling on Atari Pong (CPU): training throughput and policy lag",
        "",
        f"{time.strftime('%Y-%m-%d')}, `python benchmarks/async_atari.py --configs {' '.join(args.configs)} "
        f"--repeats {args.repeats} --seconds {args.seconds:g} --write` on {platform.machine()}, {os.cpu_count()} CPU "
        f"cores shared with other jobs (1-minute load average after each run {load}), {versions}, one torch thread "
        "per process. **No GPU was available in this task**: learner and samplers all run on the CPU.",
        "Full training (sampling + learning), 8 envs in every config, ALE v5 protocol of the Pong recipes. "
        "DQN: dqn-pong's settings (Nature CNN, batch 32, replay ratio 8 = one update per 4 transitions, lr 1e-4) "
        "except learning_starts 2,000 and a 50k table; sync steps its 8 envs as the limiter asks, async has 2 "
        "sampler processes x 4 envs, weights every update. APPO: ppo-pong's settings, 1,024 transitions per update "
        "(sync 8 x T 128, async 2 x 4 x T 256, queue of 1). "
        f"Window: {args.seconds:g} s after the first update; configs interleaved; frames/s = 4 x env steps/s.",
        "",
        "| config | env steps/s, median (runs) | frames/s | updates/s, median (runs) | policy lag p50 / p90 / max |",
        "|---|---|---|---|---|",
    ]
    for name in CONFIGS:
        rs = [r for r in results if r["config"] == name]
        if not rs:
            continue
        sps = statistics.median(r["env_steps_per_s"] for r in rs)
        ups = statistics.median(r["updates_per_s"] for r in rs)
        runs_s = ", ".join(f"{r['env_steps_per_s']:.0f}" for r in rs)
        runs_u = ", ".join(f"{r['updates_per_s']:.3g}" for r in rs)
        lags = [x for r in rs for x in r["policy_lags"]]
        lines.append(
            f"| {name} | {sps:.0f} ({runs_s}) | {FRAME_SKIP * sps:.0f} | {ups:.3g} ({runs_u}) | "
            f"{_lags(lags) if name.endswith('async') else '0 (sync)'} |"
        )
    lines.append("")
    for algo in ("dqn", "appo"):
        sync = [r for r in results if r["config"] == f"{algo}-sync"]
        asyn = [r for r in results if r["config"] == f"{algo}-async"]
        pairs = [a["env_steps_per_s"] / b["env_steps_per_s"] for a, b in zip(asyn, sync, strict=False)]
        if pairs:
            lines.append(
                f"- {algo}: async / sync env steps/s per interleaved pair: median {statistics.median(pairs):.2f} "
                f"(min {min(pairs):.2f}, max {max(pairs):.2f})."
            )
        lags = [x for r in asyn for x in r["policy_lags"]]
        if lags:
            counts: dict[int, int] = {}
            for x in lags:
                counts[x] = counts.get(x, 0) + 1
            dist = ", ".join(f"{k}: {counts[k] / len(lags):.0%}" for k in sorted(counts)[:12])
            lines.append(
                f"- {algo}-async policy-lag distribution (learner version minus the acting weights' version, per "
                f"batch; fraction of {len(lags)} batches): {dist}"
            )
    return "\n".join(lines) + "\n"


def write_results(text: str) -> None:
    replace_section("async-atari", text)


if __name__ == "__main__":
    main()
