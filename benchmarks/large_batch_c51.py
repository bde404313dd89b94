"""Large-batch Categorical DQN on CartPole-v1: does batch 2,048 learn as fast per env step as batch 32?

The paper (Stooke & Abbeel, "Accelerated Methods for Deep Reinforcement Learning") found that Categorical DQN kept
its performance with training batches up to 2,048 when the replay ratio (sampled transitions per inserted
transition) is kept and the learning rate is scaled with the batch. This is that check at small scale:

- the same C51 agent (double-Q, 3-step returns, support [0, 100], 16 envs, replay ratio kept), batch 32 and
  batch 2,048; with the ratio kept, batch 2,048 makes 64× fewer (and 64× larger) updates per env step;
- replay ratio 32 (``--replay-ratio``; at 8, batch 2,048 made only ~230 updates in 60k steps and never learned);
- learning rate by the linear rule, ``lr = lr_32 · batch / 32`` (64× at batch 2,048), documented in
  ``docs/dqn.md``; ``--lr-rule sqrt`` or ``none`` tries the alternatives (sqrt: 2.5× the env steps, seed 0);
- figure compared: env steps until the mean return of the last ``--window`` training episodes first reaches
  ``--threshold`` (the run stops there or at ``--max-steps``), per seed, median over seeds, ratio 2048 / 32.

Runs are in-process and interleaved per seed (batch 32, then batch 2,048), one torch thread. It writes its section
of ``benchmarks/RESULTS.md`` between ``<!-- BEGIN large-batch -->`` and ``<!-- END large-batch -->``.

    .venv/bin/python benchmarks/large_batch_c51.py                      # seeds 0 1 2
    .venv/bin/python benchmarks/large_batch_c51.py --seeds 0 1 2 3 4 --no-write
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_RESULTS = HERE / "RESULTS.md"
BEGIN, END = "<!-- BEGIN large-batch -->", "<!-- END large-batch -->"


def scaled_lr(base_lr: float, base_batch: int, batch: int, rule: str) -> float:
    """The learning-rate rule of ``DQN(lr_scaling=...)``: ``linear`` (measured best here), ``sqrt`` or ``none``."""
    from lightning_accelrl.algos.large_batch import scaled_lr as rule_lr

    return rule_lr(base_lr, batch, base_batch, rule)


def scaled_tau(base_tau: float, base_batch: int, batch: int, rule: str) -> float:
    """Polyak rate per update. ``steps``: the target's time constant is kept in env steps (what ``DQN(lr_scaling=...)``
    does); ``updates``: the same τ per update."""
    from lightning_accelrl.algos.large_batch import scaled_tau as rule_tau

    return rule_tau(base_tau, batch, base_batch) if rule == "steps" else base_tau


def run_one(seed: int, batch: int, lr: float, args: argparse.Namespace) -> dict:
    """Train C51 until the training-return threshold (or the step cap); return the figures."""
    import lightning as L
    from lightning.pytorch import Callback

    from lightning_accelrl import CategoricalDQN, ExperienceDataModule

    class Threshold(Callback):
        def __init__(self) -> None:
            self.reached: dict | None = None

        def on_train_batch_end(self, trainer, pl_module, *a) -> None:
            dm = trainer.datamodule
            tr = dm.tracker
            if self.reached is None and tr is not None and len(tr.recent_returns) >= args.window:
                recent = list(tr.recent_returns)[-args.window :]
                if sum(recent) / len(recent) >= args.threshold:
                    self.reached = {
                        "env_steps": dm.env_steps,
                        "wall_s": dm.wall_time,
                        "updates": pl_module.updates,
                    }
                    trainer.should_stop = True

    L.seed_everything(seed, verbose=False)
    model = CategoricalDQN(
        num_atoms=51,
        v_min=0.0,
        v_max=100.0,
        lr=lr,
        gamma=0.99,
        n_step=3,
        double_q=True,
        target_tau=scaled_tau(args.target_tau, args.batches[0], batch, args.tau_rule),
        exploration_initial=1.0,
        exploration_final=0.01,
        exploration_fraction=args.exploration_fraction,
        hidden=(256, 256),
    )
    dm = ExperienceDataModule(
        env="CartPole-v1",
        num_envs=args.num_envs,
        total_env_steps=args.max_steps,
        batch_size=batch,
        replay_ratio=args.replay_ratio,
        learning_starts=max(args.learning_starts, *args.batches),  # the same start for both batches
        replay_capacity=100_000,
        updates_per_epoch=1_000_000,
        episode_window=max(100, args.window),
    )
    cb = Threshold()
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=-1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[cb],
        log_every_n_steps=1_000_000,
    )
    t0 = time.perf_counter()
    trainer.fit(model, datamodule=dm)
    return {
        "seed": seed,
        "batch": batch,
        "lr": lr,
        "env_steps_to_threshold": cb.reached["env_steps"] if cb.reached else None,
        "wall_s_to_threshold": round(cb.reached["wall_s"], 2) if cb.reached else None,
        "updates_to_threshold": cb.reached["updates"] if cb.reached else None,
        "env_steps": dm.env_steps,
        "updates": model.updates,
        "wall_s": round(time.perf_counter() - t0, 2),
    }


def _k(x) -> str:
    return "not reached" if x is None else f"{x / 1000:.1f}k"


def section(rows: list[dict], args: argparse.Namespace, command: str) -> str:
    import torch

    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    small, large = args.batches
    lines = [
        BEGIN,
        f"## Large-batch Categorical DQN on CartPole-v1: batch {large:,} vs batch {small}",
        "",
        f"- Date: {now}",
        f"- Machine: {os.cpu_count()} cores (nproc), {platform.machine()}, no GPU; one torch thread; torch "
        f"{torch.__version__}",
        f"- Command: `{command}`",
        f"- Agent: C51 (51 atoms on [0, 100]), double-Q, 3-step returns, Polyak target τ {args.target_tau} per "
        f"update at batch {small} (→ {scaled_tau(args.target_tau, small, large, args.tau_rule):.3g} at batch {large:,}: "
        f"rule '{args.tau_rule}', the target's time constant kept in env steps), learning starts at "
        f"{max(args.learning_starts, *args.batches)} transitions for both, "
        f"{args.num_envs} envs, ε 1 → 0.01 over {args.exploration_fraction:.0%} of {args.max_steps // 1000}k steps, "
        f"replay ratio {args.replay_ratio:g} for both batches (batch {large:,} makes {large // small}× fewer updates), "
        f"lr {args.base_lr:g} at batch {small} scaled by the **{args.lr_rule}** rule "
        f"(→ {scaled_lr(args.base_lr, small, large, args.lr_rule):g} at batch {large:,}).",
        f"- Figure: env steps until the mean return of the last {args.window} training episodes (ε-greedy) first "
        f"reaches {args.threshold:g}; cap {args.max_steps // 1000}k steps. Interleaved per seed: batch {small}, then "
        f"{large:,}.",
        "",
        "| seed | batch | lr | env steps → thr | updates → thr | wall s → thr |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['seed']} | {r['batch']:,} | {r['lr']:.3g} | {_k(r['env_steps_to_threshold'])} | "
            f"{r['updates_to_threshold'] if r['updates_to_threshold'] is not None else '–'} | "
            f"{r['wall_s_to_threshold'] if r['wall_s_to_threshold'] is not None else '–'} |"
        )
    meds = {}
    for b in args.batches:
        xs = [r["env_steps_to_threshold"] for r in rows if r["batch"] == b]
        reached = [x for x in xs if x is not None]
        meds[b] = statistics.median(reached) if len(reached) == len(xs) and xs else None
        lines.append(
            f"| **median** | {b:,} | | {_k(meds[b])} | | |"
            if meds[b] is not None
            else f"| **median** | {b:,} | | {len(reached)}/{len(xs)} reached | | |"
        )
    lines.append("")
    if meds[small] and meds[large]:
        ratio = meds[large] / meds[small]
        per_seed = [
            a["env_steps_to_threshold"] / b["env_steps_to_threshold"]
            for a in rows
            for b in rows
            if a["seed"] == b["seed"]
            and a["batch"] == large
            and b["batch"] == small
            and a["env_steps_to_threshold"]
            and b["env_steps_to_threshold"]
        ]
        verdict = "within ±15%" if abs(ratio - 1) <= 0.15 else "NOT within ±15%"
        lines.append(
            f"- **Env steps to threshold, batch {large:,} / batch {small}: median ratio {ratio:.2f} ({verdict})**; "
            f"per-seed ratios {', '.join(f'{x:.2f}' for x in per_seed)}."
        )
        walls = {
            b: statistics.median(
                r["wall_s_to_threshold"] for r in rows if r["batch"] == b and r["wall_s_to_threshold"]
            )
            for b in (small, large)
        }
        lines.append(
            f"- Wall time to threshold (same machine, interleaved): median {walls[small]:.1f} s at batch {small}, "
            f"{walls[large]:.1f} s at batch {large:,} ({walls[small] / walls[large]:.1f}x faster with the large batch)."
        )
    else:
        lines.append("- Not every seed reached the threshold in both settings: no ratio is claimed.")
    lines.append(END)
    return "\n".join(lines) + "\n"


def update_results(path: Path, body: str) -> None:
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    pattern = re.compile(rf"{re.escape(BEGIN)}.*?{re.escape(END)}\n?", re.S)
    text = pattern.sub(lambda _m: body, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + body
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--batches", nargs=2, type=int, default=[32, 2048], metavar=("SMALL", "LARGE"))
    p.add_argument("--base-lr", type=float, default=7e-4, help="learning rate at the small batch")
    p.add_argument("--lr-rule", choices=["sqrt", "linear", "none"], default="linear")
    p.add_argument("--replay-ratio", type=float, default=32.0)
    p.add_argument("--num-envs", type=int, default=16)
    p.add_argument("--learning-starts", type=int, default=1000)
    p.add_argument("--target-tau", type=float, default=0.01, help="Polyak rate per update at the small batch")
    p.add_argument("--tau-rule", choices=["steps", "updates"], default="steps")
    p.add_argument("--exploration-fraction", type=float, default=0.2)
    p.add_argument("--max-steps", type=int, default=60_000)
    p.add_argument("--threshold", type=float, default=400.0)
    p.add_argument("--window", type=int, default=20)
    p.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args(argv)
    command = shlex.join(
        ["python", "benchmarks/large_batch_c51.py", *(argv if argv is not None else sys.argv[1:])]
    )

    warnings.filterwarnings("ignore")
    import torch

    torch.set_num_threads(1)
    rows = []
    small = args.batches[0]
    for seed in args.seeds:
        for batch in args.batches:
            lr = scaled_lr(args.base_lr, small, batch, args.lr_rule)
            r = run_one(seed, batch, lr, args)
            rows.append(r)
            print(json.dumps(r), file=sys.stderr, flush=True)
    body = section(rows, args, command)
    print(body)
    out = HERE / "out"
    out.mkdir(exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    (out / f"large_batch_c51-{stamp}.json").write_text(
        json.dumps({"command": command, "rows": rows}, indent=1)
    )
    if not args.no_write:
        update_results(args.results, body)
        try:
            rev = subprocess.run(
                ["git", "describe", "--always", "--dirty"], capture_output=True, text=True, cwd=REPO
            )
            print(f"updated {args.results} (git {rev.stdout.strip()})", file=sys.stderr)
        except OSError:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
