"""Learning report: run recipes over seeds (one run at a time) and write RESULTS.md-ready tables and curves.

    python benchmarks/learning_report.py --recipes a2c-acrobot dqn-acrobot --seeds 0 1 2 \\
        --runs /tmp/zoo --md /tmp/report.md --curves docs/curves
    python benchmarks/learning_report.py --recipes a2c-acrobot --seeds 0 1 2 --runs /tmp/zoo \\
        --md /tmp/report.md --report-only

Each run is ``accelrl fit --recipe NAME --seed_everything SEED`` in ``RUNS/NAME/sSEED``; a seed whose folder
already holds a ``summary.json`` is not run again, so an interrupted report resumes where it stopped. The
tables go between ``<!-- BEGIN SECTION -->`` and ``<!-- END SECTION -->`` of the ``--md`` file (replaced in
place, else appended): per recipe and seed the final training return (mean of the last 100 episodes), the
greedy evaluation for recipes that run one, env steps to target, wall time, env steps/s and the machine's load,
and how many seeds met the recipe's promise (the greedy evaluation where the recipe runs one, else the final
training return). ``--curves DIR`` draws each recipe's seeds into ``DIR/NAME.png`` with ``accelrl plot``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # recipe_seeds and results_md sit beside this file
from recipe_seeds import plot_curves, read_summary, run  # noqa: E402
from results_md import replace_section  # noqa: E402

LOAD_FILE = "load.json"  # the machine's load averages when the run ended, written beside the run
COLUMNS = (
    "| seed | final return (last 100) | greedy eval | first ≥ target at | env steps | wall s | env steps/s "
    "| load (1/5/15 min) |\n|---|---|---|---|---|---|---|---|"
)


def seed_row(root: Path, seed: int) -> dict:
    """One seed's figures from its run folder, with the load averages recorded when it ended (if any)."""
    row = read_summary(root, seed)
    load = root / LOAD_FILE
    row["load"] = json.loads(load.read_text()) if load.exists() else None
    return row


def met(row: dict) -> bool:
    """Whether a seed met the promise: its greedy evaluation where it ran one, else its final training mean."""
    figure = row["eval_return"] if row.get("eval_return") is not None else row.get("final_return")
    return figure is not None and row.get("target") is not None and figure >= row["target"]


def _cell(value: float | None, bold: bool) -> str:
    if value is None:
        return ""
    text = f"{value:.2f}".removesuffix("0") if isinstance(value, float) else str(value)  # -83.4, -99.85
    text = text.replace("-", "−")
    return f"**{text}**" if bold else text


def row_markdown(row: dict) -> str:
    """One table row; the figure the promise is judged on is bold where it meets the target."""
    if "error" in row:
        return f"| {row['seed']} | error: {' '.join(row['error'])} | | | | | | |"
    uses_eval = row.get("eval_return") is not None
    first = row.get("first_at_threshold")
    load = row.get("load")
    return (
        f"| {row['seed']} | {_cell(row['final_return'], met(row) and not uses_eval)} "
        f"| {_cell(row.get('eval_return'), met(row) and uses_eval)} "
        f"| {f'{first:,}' if first is not None else 'not reached'} | {row['env_steps']:,} "
        f"| {row['wall_time_s']} | {row['env_steps_per_s']:,} "
        f"| {'/'.join(f'{x:.1f}' for x in load) if load else ''} |"
    )


def recipe_markdown(recipe: str, rows: list[dict], curve: str | None) -> str:
    """A recipe's heading, its verdict over the seeds, its table and its curve's link."""
    done = [r for r in rows if "error" not in r]
    target = done[0]["target"] if done else None
    judged = "greedy eval" if done and done[0].get("eval_return") is not None else "final return (last 100)"
    passed = [str(r["seed"]) for r in done if met(r)]
    verdict = f"Target {_cell(target, False)} ({judged}) met on {len(passed)} of {len(rows)} seeds" + (
        f" ({', '.join(passed)})." if passed else "."
    )
    heading = f"### {recipe}" + (f" ({done[0]['env']})" if done and done[0].get("env") else "")
    lines = [heading, "", verdict, "", COLUMNS, *(row_markdown(r) for r in rows)]
    if curve:
        lines += ["", f"Curve: [{curve}]({curve})"]
    return "\n".join(lines) + "\n"


def write_report(
    md: Path, section: str, runs: Path, recipes: list[str], seeds: list[int], curves: str | None
) -> str:
    """Put every recipe's seeds (from ``runs``) as tables into ``md``'s section; returns the text."""
    parts = []
    for recipe in recipes:
        rows = [seed_row(runs / recipe / f"s{s}", s) for s in seeds]
        curve = f"{curves}/{recipe}.png" if curves else None
        parts.append(recipe_markdown(recipe, rows, curve))
    text = "\n".join(parts)
    replace_section(section, text, md)
    return text


def run_missing(runs: Path, recipes: list[str], seeds: list[int], extra: list[str]) -> None:
    """Run, one at a time, every recipe and seed whose folder has no ``summary.json`` yet."""
    for recipe in recipes:
        for seed in seeds:
            root = (runs / recipe / f"s{seed}").resolve()
            if any(root.glob("**/summary.json")):
                continue
            root.mkdir(parents=True, exist_ok=True)
            result = run(recipe, seed, root, extra)
            (root / LOAD_FILE).write_text(json.dumps([round(x, 2) for x in os.getloadavg()]))
            print(json.dumps({"recipe": recipe, **result}), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipes", nargs="+", required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--runs", required=True, help="the run folders go under RUNS/RECIPE/sSEED")
    p.add_argument("--md", required=True, help="the markdown file whose marked section receives the tables")
    p.add_argument("--section", default="learning-report", help="the section's marker name")
    p.add_argument("--curves", default=None, help="also draw each recipe's seeds into CURVES/RECIPE.png")
    p.add_argument("--report-only", action="store_true", help="run nothing: report the folders as they are")
    p.add_argument("extra", nargs="*", help="more accelrl fit arguments, after --")
    args = p.parse_args()
    runs = Path(args.runs)
    if not args.report_only:
        run_missing(runs, args.recipes, args.seeds, args.extra)
    if args.curves:
        Path(args.curves).mkdir(parents=True, exist_ok=True)
        for recipe in args.recipes:
            roots = [runs / recipe / f"s{s}" for s in args.seeds if (runs / recipe / f"s{s}").exists()]
            plot_curves(recipe, roots, f"{args.curves}/{recipe}.png")
    print(write_report(Path(args.md), args.section, runs, args.recipes, args.seeds, args.curves))


if __name__ == "__main__":
    main()
