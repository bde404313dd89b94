"""CartPole-v1 learning benchmark: our PPO/DQN against Stable-Baselines3 (rl-zoo hyperparameters), in one run.

Runs in OUR venv; the peer runs in its own (``bash benchmarks/setup_peers.sh`` makes ``benchmarks/.venv-sb3``).
For each algorithm and each seed it runs ours, then SB3 (interleaved: ours, SB3, ours, SB3, ...), one process at
a time, prints a table, and writes (or replaces) this benchmark's section in ``benchmarks/RESULTS.md``.

    .venv/bin/python benchmarks/learning_cartpole.py                         # ppo and dqn, seeds 0 1 2
    .venv/bin/python benchmarks/learning_cartpole.py --algo ppo --seeds 0 1 2 3 4
    .venv/bin/python benchmarks/learning_cartpole.py --peer-only --seeds 0   # SB3 only, a quick check

Our side is ``accelrl fit --recipe {ppo,dqn}-cartpole --seed_everything SEED``; its last stdout line is
``summary: PATH`` naming a JSON file with ``env_steps``, ``episodes``, ``episode_return_mean``, ``wall_time_s``,
``env_steps_per_s`` and, for PPO, ``env_steps_to_threshold`` / ``wall_time_to_threshold_s`` (null if not reached),
for DQN ``eval_return_mean``.

Compared figures: PPO, wall time from the start of learning to the threshold (mean of the last 100 training
episodes >= 475); DQN, wall time of the 50k-step training budget, with the greedy evaluation return beside it.
The ratio is ours / SB3 per seed; we report its median, min and max. Process wall times (start-up and imports
included) are recorded too, in the JSON written under ``benchmarks/out/``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import re
import resource
import shlex
import statistics
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PEER_SCRIPT = HERE / "peers" / "sb3_cartpole.py"
DEFAULT_SB3_PYTHON = HERE / ".venv-sb3" / "bin" / "python"
DEFAULT_RESULTS = HERE / "RESULTS.md"
OUT_DIR = HERE / "out"
RECIPES = {"ppo": "ppo-cartpole", "dqn": "dqn-cartpole"}
SUMMARY_RE = re.compile(r"^summary:\s*(.+?)\s*$")

RESULTS_HEADER = """# Benchmark results

Written by the scripts in `benchmarks/` (how to run them: `benchmarks/README.md`). Each section names its date,
machine, versions and command. Machines are shared and noisy: compare only ratios measured in the same run
(ours and the peer interleaved), never absolute times across sections or machines.
"""


class BenchError(RuntimeError):
    """A run failed; the message says which command, its exit status and the tail of its output."""


def _tail(text: str, n: int = 25) -> str:
    lines = (text or "").rstrip().splitlines()
    return "\n".join("    " + line for line in lines[-n:]) or "    (no output)"


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(cmd: list[str], timeout: float, what: str, env: dict | None = None) -> tuple[str, float, float]:
    """``cmd``'s stdout, wall seconds and CPU seconds (the CPU figure is what a busy machine distorts least)."""
    t0, cpu0 = time.perf_counter(), _children_cpu_s()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env)
    except FileNotFoundError as e:
        raise BenchError(f"{what}: cannot start {cmd[0]!r} ({e}).") from e
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        raise BenchError(
            f"{what}: timed out after {timeout:.0f} s\n  command: {shlex.join(cmd)}\n{_tail(out)}"
        ) from e
    elapsed, cpu = time.perf_counter() - t0, _children_cpu_s() - cpu0
    if proc.returncode != 0:
        raise BenchError(
            f"{what}: exited with status {proc.returncode}\n  command: {shlex.join(cmd)}\n"
            f"  stdout (tail):\n{_tail(proc.stdout)}\n  stderr (tail):\n{_tail(proc.stderr)}"
        )
    return proc.stdout, elapsed, cpu


# --------------------------------------------------------------------------------------------- ours
def ours_command(algo: str, seed: int, extra: list[str], template: str | None = None) -> list[str]:
    if template:
        return shlex.split(template.format(algo=algo, seed=seed, recipe=RECIPES[algo])) + extra
    script = Path(sys.executable).parent / "accelrl"
    base = [str(script)] if script.exists() else [sys.executable, "-m", "lightning_accelrl.cli"]
    return [*base, "fit", "--recipe", RECIPES[algo], "--seed_everything", str(seed), *extra]


def ours(
    algo: str, seed: int, extra: list[str] | None = None, timeout: float = 1800, template: str | None = None
) -> dict:
    """Run our CLI for one seed and return its summary.json (plus ``process_wall_s``)."""
    cmd = ours_command(algo, seed, extra or [], template)
    stdout, elapsed, cpu = _run(cmd, timeout, f"ours ({algo}, seed {seed})")
    paths = [m.group(1) for line in stdout.splitlines() if (m := SUMMARY_RE.match(line.strip()))]
    if not paths:
        raise BenchError(
            f"ours ({algo}, seed {seed}): the CLI exited 0 but printed no 'summary: PATH' line\n"
            f"  command: {shlex.join(cmd)}\n  stdout (tail):\n{_tail(stdout)}"
        )
    path = Path(paths[-1])
    if not path.is_absolute():
        path = REPO / path
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise BenchError(f"ours ({algo}, seed {seed}): cannot read summary {path}: {e}") from e
    required = ["env_steps", "wall_time_s"] + (
        ["env_steps_to_threshold", "wall_time_to_threshold_s"] if algo == "ppo" else ["eval_return_mean"]
    )
    missing = [k for k in required if k not in summary]
    if missing:
        raise BenchError(f"ours ({algo}, seed {seed}): summary {path} lacks keys {missing}")
    summary["summary_path"] = str(path)
    summary["process_wall_s"] = round(elapsed, 3)
    summary["process_cpu_s"] = round(cpu, 3)
    return summary


# --------------------------------------------------------------------------------------------- peer
def peer(
    algo: str, seed: int, sb3_python: Path, threshold: float, total_steps: int | None, timeout: float = 1800
) -> dict:
    """Run the SB3 peer for one seed in its own venv and return its JSON line."""
    if not sb3_python.exists():
        raise BenchError(
            f"SB3 venv missing: {sb3_python} does not exist. Run: bash benchmarks/setup_peers.sh"
        )
    cmd = [
        str(sb3_python),
        str(PEER_SCRIPT),
        "--algo",
        algo,
        "--seed",
        str(seed),
        "--threshold",
        str(threshold),
    ]
    if total_steps:
        cmd += ["--total-steps", str(total_steps)]
    stdout, elapsed, cpu = _run(cmd, timeout, f"SB3 ({algo}, seed {seed})")
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise BenchError(f"SB3 ({algo}, seed {seed}): no JSON line on stdout\n{_tail(stdout)}")
    result = json.loads(lines[-1])
    result["process_wall_s"] = round(elapsed, 3)
    result["process_cpu_s"] = round(cpu, 3)
    return result


# --------------------------------------------------------------------------------------------- report
def _fmt(x, nd: int = 1) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def _steps(x) -> str:
    return "–" if x is None else f"{x / 1000:.1f}k"


def _median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def _ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def compared_time(algo: str, r: dict | None):
    """The figure the ratio compares: PPO time to threshold, DQN training wall time of the budget."""
    if r is None:
        return None
    return r.get("wall_time_to_threshold_s") if algo == "ppo" else r.get("wall_time_s")


def table(algo: str, rows: list[dict], peer_only: bool) -> list[str]:
    """Markdown table lines for one algorithm: each seed, then medians."""
    if algo == "ppo":
        ours_cols = ["ours steps→thr", "ours s→thr", "ours steps/s"]
        peer_cols = ["SB3 steps→thr", "SB3 s→thr", "SB3 steps/s", "SB3 train mean₁₀₀"]

        def ours_vals(o):
            return [
                _steps(o.get("env_steps_to_threshold")),
                _fmt(o.get("wall_time_to_threshold_s")),
                _fmt(o.get("env_steps_per_s"), 0),
            ]

        def peer_vals(p):
            return [
                _steps(p.get("env_steps_to_threshold")),
                _fmt(p.get("wall_time_to_threshold_s")),
                _fmt(p.get("env_steps_per_s"), 0),
                _fmt(p.get("train_return_mean_last100")),
            ]
    else:
        ours_cols = ["ours steps", "ours train s", "ours eval", "ours steps/s"]
        peer_cols = ["SB3 steps", "SB3 train s", "SB3 eval", "SB3 steps/s", "SB3 train mean₁₀₀"]

        def ours_vals(o):
            return [
                _steps(o.get("env_steps")),
                _fmt(o.get("wall_time_s")),
                _fmt(o.get("eval_return_mean")),
                _fmt(o.get("env_steps_per_s"), 0),
            ]

        def peer_vals(p):
            return [
                _steps(p.get("env_steps")),
                _fmt(p.get("wall_time_s")),
                _fmt(p.get("eval_return_mean")),
                _fmt(p.get("env_steps_per_s"), 0),
                _fmt(p.get("train_return_mean_last100")),
            ]

    cols = ["seed"] + ([] if peer_only else ours_cols) + peer_cols + ([] if peer_only else ["ratio ours/SB3"])
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        o, p = row.get("ours"), row.get("sb3")
        cells = [str(row["seed"])]
        if not peer_only:
            cells += ours_vals(o) if o else ["failed"] + ["–"] * (len(ours_cols) - 1)
        cells += peer_vals(p) if p else ["failed"] + ["–"] * (len(peer_cols) - 1)
        if not peer_only:
            cells.append(_fmt(_ratio(compared_time(algo, o), compared_time(algo, p)), 2))
        out.append("| " + " | ".join(cells) + " |")

    def med(side, key):
        return _median([(r.get(side) or {}).get(key) for r in rows])

    if algo == "ppo":
        o_med = [
            _steps(med("ours", "env_steps_to_threshold")),
            _fmt(med("ours", "wall_time_to_threshold_s")),
            _fmt(med("ours", "env_steps_per_s"), 0),
        ]
        p_med = [
            _steps(med("sb3", "env_steps_to_threshold")),
            _fmt(med("sb3", "wall_time_to_threshold_s")),
            _fmt(med("sb3", "env_steps_per_s"), 0),
            _fmt(med("sb3", "train_return_mean_last100")),
        ]
    else:
        o_med = [
            _steps(med("ours", "env_steps")),
            _fmt(med("ours", "wall_time_s")),
            _fmt(med("ours", "eval_return_mean")),
            _fmt(med("ours", "env_steps_per_s"), 0),
        ]
        p_med = [
            _steps(med("sb3", "env_steps")),
            _fmt(med("sb3", "wall_time_s")),
            _fmt(med("sb3", "eval_return_mean")),
            _fmt(med("sb3", "env_steps_per_s"), 0),
            _fmt(med("sb3", "train_return_mean_last100")),
        ]
    cells = ["**median**"] + ([] if peer_only else o_med) + p_med
    if not peer_only:
        cells.append(
            _fmt(
                _median(
                    [
                        _ratio(compared_time(algo, r.get("ours")), compared_time(algo, r.get("sb3")))
                        for r in rows
                    ]
                ),
                2,
            )
        )
    out.append("| " + " | ".join(cells) + " |")
    return out


def summary_lines(algo: str, rows: list[dict], peer_only: bool, threshold: float) -> list[str]:
    lines = []
    n = len(rows)
    if algo == "ppo":
        for side, name in ([] if peer_only else [("ours", "ours")]) + [("sb3", "SB3")]:
            solved = sum(1 for r in rows if (r.get(side) or {}).get("env_steps_to_threshold") is not None)
            lines.append(f"- {name}: {solved}/{n} seeds reached {threshold:g}.")
    else:
        for side, name in ([] if peer_only else [("ours", "ours")]) + [("sb3", "SB3")]:
            good = sum(1 for r in rows if ((r.get(side) or {}).get("eval_return_mean") or 0) >= threshold)
            lines.append(f"- {name}: {good}/{n} seeds with greedy evaluation ≥ {threshold:g}.")
    if not peer_only:
        ratios = [
            x
            for r in rows
            if (x := _ratio(compared_time(algo, r.get("ours")), compared_time(algo, r.get("sb3"))))
            is not None
        ]
        what = "time to threshold" if algo == "ppo" else "training wall time of the budget"
        if ratios:
            lines.append(
                f"- **Wall-time ratio ours/SB3 ({what}): median {statistics.median(ratios):.2f}, "
                f"min {min(ratios):.2f}, max {max(ratios):.2f}** over {len(ratios)} seed(s) where both "
                "have the figure."
            )
        else:
            lines.append(f"- Wall-time ratio ours/SB3 ({what}): no seed where both have the figure.")
    if algo == "dqn" and not peer_only:
        for r in rows:
            o, p = r.get("ours"), r.get("sb3")
            if o and p and abs(o["env_steps"] - p["env_steps"]) > 0.02 * p["env_steps"]:
                lines.append(
                    f"- Warning (seed {r['seed']}): budgets differ, ours {o['env_steps']} vs SB3 {p['env_steps']} "
                    "env steps; the training-time ratio compares unequal work."
                )
    proc_o = _median([(r.get("ours") or {}).get("process_wall_s") for r in rows])
    proc_p = _median([(r.get("sb3") or {}).get("process_wall_s") for r in rows])
    lines.append(
        "- Process wall time, start-up included (median): "
        + ("" if peer_only else f"ours {_fmt(proc_o)} s, ")
        + f"SB3 {_fmt(proc_p)} s."
    )
    cpu_o = [(r.get("ours") or {}).get("process_cpu_s") for r in rows]
    cpu_p = [(r.get("sb3") or {}).get("process_cpu_s") for r in rows]
    cpu_ratios = [x for o, p in zip(cpu_o, cpu_p) if (x := _ratio(o, p)) is not None]
    lines.append(
        "- Process CPU seconds, start-up and the whole budget included (median; the reading a busy machine "
        "distorts least): "
        + ("" if peer_only else f"ours {_fmt(_median(cpu_o))}, ")
        + f"SB3 {_fmt(_median(cpu_p))}"
        + (f"; ratio ours/SB3 per seed {', '.join(f'{x:.2f}' for x in cpu_ratios)}." if cpu_ratios else ".")
    )
    return lines


# --------------------------------------------------------------------------------------------- environment facts
def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = "none used (CPU benchmark)"
    return f"{os.cpu_count()} cores (nproc), {model}, {platform.system()} {platform.machine()}; GPU: {gpu}"


def ours_versions() -> str:
    parts = []
    for dist in ["lightning-accelrl", "torch", "lightning", "torchrl", "tensordict", "gymnasium", "numpy"]:
        with contextlib.suppress(metadata.PackageNotFoundError):
            parts.append(f"{dist} {metadata.version(dist)}")
    try:
        rev = subprocess.run(
            ["git", "describe", "--always", "--dirty"], capture_output=True, text=True, cwd=REPO, timeout=10
        ).stdout.strip()
        if rev:
            parts.insert(0, f"git {rev}")
    except (OSError, subprocess.SubprocessError):
        pass
    return ", ".join(parts) + f", Python {platform.python_version()}"


def peer_versions(rows: list[dict]) -> str:
    for r in rows:
        v = (r.get("sb3") or {}).get("versions")
        if v:
            return ", ".join(f"{k.replace('_', '-')} {val}" for k, val in v.items())
    return "unknown"


def _load() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def section(algo: str, rows: list[dict], args, command: str, loads: list[float | None] = ()) -> str:
    tag = f"learning_cartpole:{algo}" + (":peer-only" if args.peer_only else "")
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    if args.peer_only:
        title = f"## CartPole-v1 {algo.upper()}: Stable-Baselines3 only (peer-only smoke figures, {now[:10]})"
    else:
        title = f"## CartPole-v1 {algo.upper()}: ours vs Stable-Baselines3 (rl-zoo hyperparameters)"
    budget = args.sb3_total_steps or (100_000 if algo == "ppo" else 50_000)
    what = (
        "full training (sampling + learning) on CPU; threshold: mean return of the last 100 training episodes "
        f"≥ {args.threshold:g}; time from the start of learning to the threshold (SB3 stops there)"
        if algo == "ppo"
        else f"full training (sampling + learning) on CPU for a {budget // 1000}k-step budget (SB3 rounds up to a multiple "
        "of train_freq 256), then a greedy (deterministic) evaluation over 10 fresh episodes"
    )
    lines = [
        f"<!-- BEGIN {tag} -->",
        title,
        "",
        f"- Date: {now}",
        f"- Machine: {machine()}",
    ]
    if not args.peer_only:
        lines.append(f"- Ours: {ours_versions()}")
    lines += [
        f"- Peer: {peer_versions(rows)}; rl-baselines3-zoo CartPole-v1 hyperparameters; one torch thread",
        f"- Command: `{command}`",
        "- Load average (1 min) before and after each seed: " + (", ".join(_fmt(x, 2) for x in loads) or "–"),
        f"- Measured: {what}." + ("" if args.peer_only else " Runs interleaved per seed: ours, then SB3."),
        "",
        *table(algo, rows, args.peer_only),
        "",
        *summary_lines(algo, rows, args.peer_only, args.threshold),
        f"<!-- END {tag} -->",
    ]
    return "\n".join(lines) + "\n"


def update_results(path: Path, sections: dict[str, str]) -> None:
    text = path.read_text() if path.exists() else RESULTS_HEADER
    for tag, body in sections.items():
        pattern = re.compile(rf"<!-- BEGIN {re.escape(tag)} -->.*?<!-- END {re.escape(tag)} -->\n?", re.S)
        if pattern.search(text):
            text = pattern.sub(lambda _m, b=body: b, text)
        else:
            text = text.rstrip("\n") + "\n\n" + body
    path.write_text(text)


# --------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="CartPole-v1 learning benchmark: ours vs Stable-Baselines3.")
    p.add_argument("--algo", nargs="+", choices=["ppo", "dqn"], default=["ppo", "dqn"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--peer-only", action="store_true", help="run only the SB3 side (quick check)")
    p.add_argument("--threshold", type=float, default=475.0)
    p.add_argument(
        "--sb3-total-steps", type=int, default=None, help="SB3 budget (default rl-zoo: ppo 1e5, dqn 5e4)"
    )
    p.add_argument("--sb3-python", type=Path, default=DEFAULT_SB3_PYTHON)
    p.add_argument("--ours-extra", default="", help="extra arguments for our CLI, one shell-quoted string")
    p.add_argument(
        "--ours-cmd",
        default=None,
        help="replace our command: a template with {algo} {seed} {recipe}, e.g. for a stub",
    )
    p.add_argument("--timeout", type=float, default=1800, help="seconds per run")
    p.add_argument("--keep-going", action="store_true", help="record a failed run and continue")
    p.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    p.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = p.parse_args(argv)

    command = shlex.join(
        ["python", "benchmarks/learning_cartpole.py", *(argv if argv is not None else sys.argv[1:])]
    )
    extra = shlex.split(args.ours_extra)
    all_rows: dict[str, list[dict]] = {}
    loads: dict[str, list[float | None]] = {}
    failures: list[str] = []

    def attempt(fn, *a, **kw):
        try:
            return fn(*a, **kw)
        except BenchError as e:
            if not args.keep_going:
                raise
            failures.append(str(e))
            print(f"FAILED (continuing): {e}", file=sys.stderr, flush=True)
            return None

    try:
        for algo in args.algo:
            rows = all_rows.setdefault(algo, [])
            loads[algo] = [_load()]
            for seed in args.seeds:
                row: dict = {"seed": seed}
                if not args.peer_only:
                    print(f"[{algo} seed {seed}] ours ...", file=sys.stderr, flush=True)
                    row["ours"] = attempt(ours, algo, seed, extra, args.timeout, args.ours_cmd)
                print(f"[{algo} seed {seed}] SB3 ...", file=sys.stderr, flush=True)
                row["sb3"] = attempt(
                    peer, algo, seed, args.sb3_python, args.threshold, args.sb3_total_steps, args.timeout
                )
                rows.append(row)
                loads[algo].append(_load())
                for side in ("ours", "sb3"):
                    r = row.get(side)
                    if r:
                        print(
                            f"  {side}: steps→thr {_fmt(r.get('env_steps_to_threshold'))} "
                            f"s→thr {_fmt(r.get('wall_time_to_threshold_s'))} train s {_fmt(r.get('wall_time_s'))} "
                            f"eval {_fmt(r.get('eval_return_mean'))}",
                            file=sys.stderr,
                            flush=True,
                        )
    except BenchError as e:
        print(
            f"\nerror: {e}\n(use --peer-only to run only SB3, or --keep-going to record failures)",
            file=sys.stderr,
        )
        return 2

    sections = {}
    for algo, rows in all_rows.items():
        body = section(algo, rows, args, command, loads.get(algo, []))
        print(body)
        tag = f"learning_cartpole:{algo}" + (":peer-only" if args.peer_only else "")
        sections[tag] = body

    OUT_DIR.mkdir(exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    raw = OUT_DIR / f"learning_cartpole-{stamp}.json"
    raw.write_text(
        json.dumps({"command": command, "rows": all_rows, "loads": loads, "failures": failures}, indent=1)
    )
    print(f"raw results: {raw.relative_to(REPO)}", file=sys.stderr)
    if not args.no_write:
        update_results(args.results, sections)
        print(f"updated {args.results}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
