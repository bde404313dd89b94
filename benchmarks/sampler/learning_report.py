"""Write the CPU Atari learning check into benchmarks/RESULTS.md (markers ``atari-learning``).

Reads a run folder of ``accelrl fit`` (metrics.csv, summary.json, config.yaml) and tabulates
``episode_return_mean`` against env steps. Usage:
``python benchmarks/sampler/learning_report.py RUN_DIR --command "accelrl fit ..." [--note "..."]``.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parents[1] / "RESULTS.md"
sys.path.insert(0, str(RESULTS.parent))
from results_md import replace_section  # noqa: E402


def write_section(text: str, results: Path = RESULTS) -> None:
    replace_section("atari-learning", text, results)


def section(run: Path, command: str, note: str, every: int) -> str:
    with open(run / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("env_steps")]
    summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").exists() else {}
    picked = [r for i, r in enumerate(rows) if i % every == 0 or i == len(rows) - 1]
    table = [
        "| env steps | frames | episode_return_mean (window) | episodes | entropy | approx_kl | steps/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in picked:
        steps = int(float(r["env_steps"]))
        ret = r.get("episode_return_mean") or "–"
        window = r.get("episode_window_count") or "0"
        table.append(
            f"| {steps:,} | {4 * steps:,} | {float(ret):.2f} ({int(float(window))}) | {int(float(r['episodes']))} | "
            f"{float(r['train/entropy']):.3f} | {float(r['train/approx_kl']):.4f} | {float(r['env_steps_per_s']):.1f} |"
            if ret != "–"
            else f"| {steps:,} | {4 * steps:,} | – | {int(float(r['episodes']))} | | | |"
        )
    import torch

    when = datetime.datetime.fromtimestamp((run / "metrics.csv").stat().st_mtime, datetime.UTC)
    lines = [
        f"## Atari learning check on CPU: PPO Breakout ({when:%Y-%m-%d})",
        "",
        f"- Date: run finished {when:%Y-%m-%d %H:%M} UTC",
        f"- Machine: {os.cpu_count()} cores, {platform.system()} {platform.machine()}, shared; GPU: none available",
        f"- Versions: torch {torch.__version__}, python {platform.python_version()}",
        f"- Command: `{command}`",
        "- Measured: full training (sampling + learning) with the `ppo-breakout` recipe (v5 protocol: sticky actions "
        "0.25, no episodic life; CleanRL's PPO hyperparameters) on a cut budget; `episode_return_mean` is the mean "
        "*clipped* return (bricks hit over a 5-life game) of the last ≤100 finished episodes.",
        "",
        *table,
        "",
    ]
    if summary:
        lines.append(
            f"- summary.json: {summary.get('env_steps'):,} env steps in {summary.get('wall_time_s', 0):.0f} s "
            f"({summary.get('env_steps_per_s', 0):.1f} steps/s), episodes {summary.get('episodes')}, "
            f"episode_return_mean {summary.get('episode_return_mean')}"
        )
    if note:
        lines.append(note)
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("run", type=Path)
    p.add_argument("--command", required=True)
    p.add_argument("--note", default="")
    p.add_argument("--every", type=int, default=4, help="table row every N logged updates")
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    text = section(args.run, args.command, args.note, args.every)
    print(text)
    if not args.no_write:
        write_section(text, args.results)


if __name__ == "__main__":
    main()
