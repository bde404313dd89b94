"""SAC and TD3 on Pendulum-v1, ours vs Stable-Baselines3 in one run: greedy evaluation and training wall time.

    .venv/bin/python benchmarks/continuous_pendulum.py --seeds 0 1 2
    .venv/bin/python benchmarks/continuous_pendulum.py --seeds 0 --steps 1000        # plumbing check
    .venv/bin/python benchmarks/continuous_pendulum.py --render run.log              # table of a saved run

For each seed and each algorithm, ours (``accelrl fit --recipe {algo}-pendulum``, through
``recipe_seeds.run``) and the SB3 peer (``peers/sb3_pendulum.py`` in the SB3 venv, rl-zoo hyperparameters) run
one after the other, one process at a time, one thread each (OMP_NUM_THREADS=1), so a busy machine slows both
sides alike. Ours' training time is ``summary.json``'s ``wall_time_s``; SB3's is ``model.learn()``. Both then
evaluate the greedy policy on the same ``--eval-episodes`` (100) start states: ours' summary evaluation seeds its
env with ``EVAL_SEED`` and the peer resets its env with the same seeds per episode (``eval_start_seeds``). Each run
prints one JSON line as it ends (with the 1/5/15-min load average before and after it); the Markdown table with
medians comes last.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from recipe_seeds import run as run_recipe

HERE = Path(__file__).resolve().parent
PEER_PYTHON = HERE / ".venv-sb3" / "bin" / "python"
PEER_SCRIPT = HERE / "peers" / "sb3_pendulum.py"
ALGOS = ("sac", "td3")
EVAL_SEED = 1_000_003  # the summary's evaluation env seed (both recipes evaluate with num_envs 1)
EVAL_ENVS = 1


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def ours(algo: str, seed: int, steps: int | None, episodes: int) -> dict:
    """One ``accelrl fit`` of the ``{algo}-pendulum`` recipe; the fields of its summary.json we compare."""
    extra = ["--summary.eval_episodes", str(episodes), "--summary.eval_seed", str(EVAL_SEED)]
    extra += ["--data.total_env_steps", str(steps)] if steps else []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        r = run_recipe(f"{algo}-pendulum", seed, root, extra)
        summaries = sorted(root.glob("**/summary.json"))
        if "error" not in r and summaries:
            s = json.loads(summaries[-1].read_text())
            r["eval_return_std"] = s.get("eval_return_std")
            r["updates"] = s.get("updates")
    return {"side": "ours", "algo": algo, **r}


def peer(algo: str, seed: int, steps: int | None, episodes: int) -> dict:
    """One SB3 run in the peer venv, evaluated on ours' start states; its JSON line."""
    cmd = [str(PEER_PYTHON), str(PEER_SCRIPT), "--algo", algo, "--seed", str(seed)]
    cmd += ["--eval-episodes", str(episodes), "--eval-seed", str(EVAL_SEED), "--eval-envs", str(EVAL_ENVS)]
    if steps:
        cmd += ["--steps", str(steps)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        return {"side": "sb3", "algo": algo, "seed": seed, "error": proc.stderr.strip().splitlines()[-1:]}
    return {"side": "sb3", **json.loads(lines[-1])}


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(fn, *args) -> dict:
    """``fn(*args)`` with the machine's load average before and after, and its child process's CPU seconds."""
    before, cpu = _load(), _children_cpu_s()
    r = fn(*args)
    return {
        **r,
        "load_before": before,
        "load_after": _load(),
        "process_cpu_s": round(_children_cpu_s() - cpu, 1),
    }


def _f(x, nd: int = 1) -> str:
    return "–" if x is None else f"{x:.{nd}f}"


def table(rows: list[dict], algos: tuple[str, ...] = ALGOS) -> list[str]:
    """Per algorithm: per seed ours vs SB3 (eval, train s, ratio, load), then medians."""
    out = []
    for algo in algos:
        pairs = {}
        for r in rows:
            if r["algo"] == algo:
                pairs.setdefault(r["seed"], {})[r["side"]] = r
        if not pairs:
            continue
        out += [
            f"\n**{algo.upper()}** (ratio = ours train s / SB3 train s; load = 1-min load average before → after;"
            " CPU s = the whole process's CPU seconds, start-up and evaluation included; CPU ratio = ours CPU s /"
            " SB3 CPU s; eval = mean ± std of the greedy episodes, the same start states on both sides)\n",
            "| seed | ours eval | SB3 eval | ours train s | SB3 train s | ratio | load ours | load SB3 "
            "| CPU s ours | CPU s SB3 | CPU ratio |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        evals_o, evals_p, times_o, times_p, ratios, cpu_ratios = [], [], [], [], [], []
        for seed, pr in sorted(pairs.items()):
            o, p = pr.get("ours", {}), pr.get("sb3", {})
            eo, ep = o.get("eval_return"), p.get("eval_return_mean")
            to, tp = o.get("wall_time_s"), p.get("train_wall_s")
            ratio = to / tp if to and tp else None
            for xs, x in ((evals_o, eo), (evals_p, ep), (times_o, to), (times_p, tp), (ratios, ratio)):
                if x is not None:
                    xs.append(x)
            lo = f"{o['load_before'][0]} → {o['load_after'][0]}" if "load_before" in o else "–"
            lp = f"{p['load_before'][0]} → {p['load_after'][0]}" if "load_before" in p else "–"
            err = " ".join(str(s.get("error")) for s in (o, p) if "error" in s)
            co, cp = o.get("process_cpu_s"), p.get("process_cpu_s")
            cpu_ratio = co / cp if co and cp else None
            if cpu_ratio is not None:
                cpu_ratios.append(cpu_ratio)
            cpu = f"{_f(co)} | {_f(cp)} | {_f(cpu_ratio, 2)}"
            so, sp = o.get("eval_return_std"), p.get("eval_return_std")
            pm_o = f"{_f(eo)} ± {_f(so)}" if so is not None else _f(eo)
            pm_p = f"{_f(ep)} ± {_f(sp)}" if sp is not None else _f(ep)
            out.append(
                f"| {seed} | {pm_o} | {pm_p} | {_f(to)} | {_f(tp)} | {_f(ratio, 2)} | {lo} | {lp} | {cpu} |"
                + (f" error: {err}" if err else "")
            )

        def med(xs: list[float], nd: int = 1) -> str:
            return _f(statistics.median(xs), nd) if xs else "–"

        out.append(
            f"| **median** | {med(evals_o)} | {med(evals_p)} | {med(times_o)} | {med(times_p)} | "
            f"{med(ratios, 2)} | | | | | {med(cpu_ratios, 2)} |"
        )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--algos", nargs="+", choices=ALGOS, default=list(ALGOS))
    p.add_argument("--steps", type=int, default=None, help="override both sides' 20k env-step budget")
    p.add_argument("--eval-episodes", type=int, default=100, help="greedy episodes, the same start states")
    p.add_argument("--render", default=None, help="print the table of a saved run's JSON lines and exit")
    args = p.parse_args()
    if args.render:
        rows = [
            json.loads(line) for line in Path(args.render).read_text().splitlines() if line.startswith("{")
        ]
    else:
        rows = []
        for seed in args.seeds:
            for algo in args.algos:
                for fn in (ours, peer):
                    rows.append(timed(fn, algo, seed, args.steps, args.eval_episodes))
                    print(json.dumps(rows[-1]), flush=True)
    print("\n".join(table(rows)))


if __name__ == "__main__":
    sys.exit(main())
