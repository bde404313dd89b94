"""Replay benchmark: our `Table` vs dm-reverb 0.14 vs TorchRL's `TensorDictReplayBuffer`, in one run.

    .venv/bin/python benchmarks/replay/run.py                 # 3 repeats, ~5 min; writes benchmarks/RESULTS.md
    .venv/bin/python benchmarks/replay/run.py --repeats 5 --budget 2
    .venv/bin/python benchmarks/replay/run.py --no-write      # print only

Each repeat runs ours, Reverb, TorchRL (in that order: interleaved, one process at a time, one torch/TF thread),
each in a fresh process (Reverb in ``benchmarks/.venv-reverb``, made by ``benchmarks/setup_peers.sh``); then one
memory measurement of our FrameStackStorage. Prints a Markdown table of medians (min-max) and ratios per repeat,
and replaces the section between ``<!-- BEGIN replay -->`` and ``<!-- END replay -->`` in RESULTS.md. Raw JSON
goes to ``benchmarks/out/``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))

import common  # noqa: E402

BEGIN, END = "<!-- BEGIN replay -->", "<!-- END replay -->"
LIBS = ("ours", "reverb", "torchrl")

# (op, peer, minimum ratio ours/peer): the goals of the issue
GOALS = [
    ("small.insert_single", "reverb", 3.0),
    ("frames.insert_single", "reverb", 3.0),
    ("small.sample256_uniform", "reverb", 10.0),
    ("small.sample256_prioritized", "reverb", 10.0),
    ("frames.sample256_uniform", "reverb", 3.0),
    ("frames.sample256_prioritized", "reverb", 3.0),
    ("frames.sample256_uniform", "bare", 0.5),
]
MAIN_OPS = [common.op_name(k, o) for k, o in common.OPS]
EXTRA_OURS = [
    "small[limiter=SampleToInsertRatio].insert_single",
    "small[limiter=SampleToInsertRatio].insert_batch256",
    "frames[storage=TensorStorage].insert_single",
    "frames[storage=TensorStorage].insert_batch256",
    "frames[storage=TensorStorage].sample256_uniform",
    "frames.bare_index_select",
]


def command(lib: str, args) -> list[str]:
    if lib == "reverb":
        return [args.reverb_python, str(HERE / "bench_reverb.py"), "--budget", str(args.budget)]
    return [sys.executable, str(HERE / "bench_ours.py"), "--lib", lib, "--budget", str(args.budget)]


def run_one(cmd: list[str], timeout: float) -> dict:
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        TF_CPP_MIN_LOG_LEVEL="2",
        PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    )
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.exit(
            f"failed ({proc.returncode}): {' '.join(cmd)}\n--- stdout\n{proc.stdout[-3000:]}\n"
            f"--- stderr\n{proc.stderr[-3000:]}"
        )
    out = json.loads(lines[-1][len("RESULT ") :])
    out["wall_s"] = time.perf_counter() - t0
    return out


def stats(xs: list[float]) -> tuple[float, float, float]:
    return statistics.median(xs), min(xs), max(xs)


def fmt_rate(x: float) -> str:
    if x >= 1e6:
        return f"{x / 1e6:.2f}M"
    if x >= 1e4:
        return f"{x / 1e3:.0f}k"
    if x >= 1e3:
        return f"{x / 1e3:.1f}k"
    return f"{x:.0f}"


def fmt_cell(xs: list[float] | None, kind: str) -> str:
    if not xs:
        return "–"
    m, lo, hi = stats(xs)
    s = f"{fmt_rate(m)} ({fmt_rate(lo)}–{fmt_rate(hi)})"
    if kind == "frames":
        s += f" = {m * common.FRAMES_BYTES / 1e9:.2f} GB/s"
    return s


def fmt_ratio(xs: list[float] | None) -> str:
    if not xs:
        return "–"
    m, lo, hi = stats(xs)
    return f"{m:.2f}× ({lo:.2f}–{hi:.2f})"


def series(runs: dict[str, list[dict]], lib: str, op: str) -> list[float] | None:
    xs = [r["results"][op]["items_per_s"] for r in runs[lib] if op in r.get("results", {})]
    return xs or None


def ratios(runs, op: str, peer: str, peer_op: str | None = None) -> list[float] | None:
    """ours / peer per repeat (repeat i of ours with repeat i of the peer)."""
    peer_lib, peer_op = ("ours", "frames.bare_index_select") if peer == "bare" else (peer, peer_op or op)
    out = []
    for a, b in zip(runs["ours"], runs[peer_lib]):
        if op in a["results"] and peer_op in b.get("results", {}):
            out.append(a["results"][op]["items_per_s"] / b["results"][peer_op]["items_per_s"])
    return out or None


def git_state() -> str:
    def git(*a):
        return subprocess.run(["git", *a], capture_output=True, text=True, cwd=ROOT).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "lightning_accelrl/replay")
    return f"{head}" + (" (lightning_accelrl/replay modified in the work tree)" if dirty else "")


def report(runs: dict[str, list[dict]], memory: dict, args, started: str, wall: float) -> str:
    m = runs["ours"][0]["machine"]
    v = {}
    for lib in LIBS:
        v.update(runs[lib][0]["versions"])
    versions = ", ".join(f"{k} {val}" for k, val in v.items())
    lines = [
        f"Date: {started} UTC. Machine: {m['nproc']} CPUs ({m['cpu']}), shared and noisy; Python {m['python']}; "
        f"no GPU used. One torch / TF intra- and inter-op thread per process.",
        f"Versions: {versions}; our code at commit {runs['ours'][0].get('git', 'unknown')}.",
        f"Command: `.venv/bin/python benchmarks/replay/run.py --repeats {args.repeats} --budget {args.budget}` "
        f"({wall / 60:.1f} min). Each repeat runs ours, Reverb, TorchRL in turn, each in a fresh process; every "
        f"figure is the median over {args.repeats} repeats (min–max), in items/s; ratios are taken per repeat.",
        "",
        "Items: **small** = obs float32[4], action int64, reward float32, done bool (29 B); **frames** = a DQN "
        f"transition, obs and next obs uint8[4, 84, 84] + action, reward, done ({common.FRAMES_BYTES:,} B of "
        "payload, counted for GB/s; random pixels). Tables: Fifo remover, MinSize(1) limiter, "
        f"{common.SMALL_CAPACITY:,} small / {common.FRAMES_CAPACITY:,} frame items, full (inserts evict); "
        f"prioritized: exponent {common.PRIORITY_EXPONENT}. Ours stores frames in `FrameStackStorage` (one stream, "
        "one endless episode: each new item brings one new frame); Reverb and TorchRL store both stacks.",
        "",
        "| operation | ours | Reverb 0.14 (in-process) | TorchRL 0.14 | ours / Reverb | ours / TorchRL |",
        "|---|---|---|---|---|---|",
    ]
    unavailable = {}
    for r in runs["torchrl"]:
        unavailable.update(r.get("unavailable", {}))
    for op in MAIN_OPS:
        kind = op.split(".")[0]
        trl = fmt_cell(series(runs, "torchrl", op), kind)
        if op in unavailable:
            trl = "unavailable (extension fails to load)"
        lines.append(
            f"| {op} | {fmt_cell(series(runs, 'ours', op), kind)} | {fmt_cell(series(runs, 'reverb', op), kind)} | "
            f"{trl} | {fmt_ratio(ratios(runs, op, 'reverb'))} | {fmt_ratio(ratios(runs, op, 'torchrl'))} |"
        )
    lines += [
        "",
        "Ours, other configurations (same runs):",
        "",
        "| operation | ours | note |",
        "|---|---|---|",
    ]
    notes = {
        "small[limiter=SampleToInsertRatio].insert_single": "limiter on: band checked per item (vs MinSize(1) "
        f"above: {fmt_ratio(_ratio_same(runs, 'small[limiter=SampleToInsertRatio].insert_single', 'small.insert_single'))})",
        "small[limiter=SampleToInsertRatio].insert_batch256": "limiter on (vs MinSize(1): "
        f"{fmt_ratio(_ratio_same(runs, 'small[limiter=SampleToInsertRatio].insert_batch256', 'small.insert_batch256'))})",
        "frames[storage=TensorStorage].insert_single": "no frame dedup (stores both stacks)",
        "frames[storage=TensorStorage].insert_batch256": "no frame dedup",
        "frames[storage=TensorStorage].sample256_uniform": "no frame dedup",
        "frames.bare_index_select": "floor: 2 × `index_select` of 1,024 frames from a uint8 [F, 84, 84] pool "
        "(the same 14.5 MB a 256-item sample returns), no table",
    }
    for op in EXTRA_OURS:
        lines.append(
            f"| {op} | {fmt_cell(series(runs, 'ours', op), op.split('[')[0].split('.')[0])} | {notes[op]} |"
        )
    variants = runs["reverb"][0]["results"]
    lines += [
        "",
        "Reverb's figure is its best variant (median items/s of each variant over the repeats):",
        "",
    ]
    for op in MAIN_OPS:
        if op not in variants:
            continue
        per = {}
        for r in runs["reverb"]:
            for name, x in r["results"][op]["variants"].items():
                per.setdefault(name, []).append(x)
        lines.append(
            f"- {op}: " + "; ".join(f"`{n}` {fmt_rate(statistics.median(x))}" for n, x in per.items())
        )
    if unavailable:
        first = next(iter(unavailable.values()))
        lines += ["", f"TorchRL prioritized ({', '.join(unavailable)}): {first}"]
    lines += ["", "Goals (ours / peer, median of per-repeat ratios (min–max)):", ""]
    for op, peer, goal in GOALS:
        r = ratios(runs, op, peer)
        if r is None:
            lines.append(f"- {op} ≥ {goal}× {peer}: not measured")
            continue
        med = statistics.median(r)
        verdict = "**met**" if med >= goal else "**missed**"
        peer_name = "bare index_select" if peer == "bare" else "Reverb"
        lines.append(f"- {op} ≥ {goal:g}× {peer_name}: {fmt_ratio(r)} — {verdict}")
    behind = []
    for op in MAIN_OPS:
        r = ratios(runs, op, "torchrl")
        if r is not None and statistics.median(r) < 1.0:
            behind.append(f"{op} ({fmt_ratio(r)})")
    lines.append(
        "- ≥ TorchRL on every op: "
        + ("**met**" if not behind else "**missed** on " + ", ".join(behind))
        + (" (TorchRL's prioritized ops are unavailable)" if unavailable else "")
    )
    if memory:
        mm = memory["memory"]
        lines += [
            "",
            f"Memory per frame transition (`FrameStackStorage`, capacity {mm['capacity']:,}, filled from "
            f"{mm['streams']} streams with {mm['episode_len']}-step episodes and zero-padded first stacks): "
            f"**{mm['allocated_bytes_per_item']:,.0f} B allocated** ({mm['allocated_bytes_per_item'] / 1024:.2f} KiB; "
            f"the whole pool of {mm['frame_capacity']:,} frames / capacity), {mm['used_bytes_per_item']:,.0f} B in use "
            f"({mm['frames_per_item']:.4f} frames per item), vs **{mm['naive_bytes_per_item']:,.0f} B** for a naive "
            f"obs + next obs store ({mm['naive_bytes_per_item'] / mm['allocated_bytes_per_item']:.1f}× more). "
            f"Goal ≤ 7.3 KB: {'**met**' if mm['allocated_bytes_per_item'] <= 7300 else '**met in KiB (≤ 7.3 KiB = 7,475 B), missed by decimal kB**' if mm['allocated_bytes_per_item'] <= 7475 else '**missed**'}.",
        ]
    return "\n".join(lines)


def _ratio_same(runs, op: str, base: str) -> list[float] | None:
    out = [
        r["results"][op]["items_per_s"] / r["results"][base]["items_per_s"]
        for r in runs["ours"]
        if op in r["results"] and base in r["results"]
    ]
    return out or None


def write_section(path: Path, body: str) -> None:
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    section = (
        f"{BEGIN}\n## Replay: our Table vs Reverb vs TorchRL (`benchmarks/replay/run.py`)\n\n{body}\n{END}"
    )
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)


def goal_lines(body: str) -> list[str]:
    return [ln for ln in body.splitlines() if ln.startswith("- ") and ("**met" in ln or "**missed" in ln)]


def rerender(args) -> None:
    saved = [json.loads(Path(p).read_text()) for p in args.from_json]
    bodies = []
    for d in saved:
        a = argparse.Namespace(**d["args"])
        started = d.get("started", "see the raw file")
        bodies.append(report(d["runs"], d["memory"], a, started, d.get("wall_s", 0.0)))
    body = bodies[0]
    for path, d, other in zip(args.from_json[1:], saved[1:], bodies[1:]):
        n = len(d["runs"]["ours"])
        load = d.get("loadavg")
        body += (
            f"\n\nNoise check, another run ({Path(path).name}, {n} repeats"
            + (f", load average {load[0]:.1f} → {load[1]:.1f}" if load else "")
            + "):\n\n"
            + "\n".join(goal_lines(other))
        )
    if args.note:
        body += "\n\n" + args.note
    print(body)
    if not args.no_write:
        write_section(Path(args.results), body)
        print(f"wrote the replay section of {args.results}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--budget", type=float, default=1.0, help="seconds per timed operation")
    ap.add_argument("--libs", default=",".join(LIBS), help="subset to run (the report needs all three)")
    ap.add_argument("--reverb-python", default=str(ROOT / "benchmarks/.venv-reverb/bin/python"))
    ap.add_argument("--results", default=str(ROOT / "benchmarks/RESULTS.md"))
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument(
        "--from-json",
        nargs="+",
        metavar="RAW",
        help="re-render saved runs (benchmarks/out/replay-*.json) instead of measuring: the first one "
        "is the table; the goal lines of the others are appended (a noise check)",
    )
    ap.add_argument("--note", default="", help="a sentence added to the report (e.g. the machine's load)")
    args = ap.parse_args()
    if args.from_json:
        rerender(args)
        return
    libs = [x for x in args.libs.split(",") if x]
    if "reverb" in libs and not Path(args.reverb_python).exists():
        sys.exit(f"{args.reverb_python} not found: run `bash benchmarks/setup_peers.sh` first")
    started = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    runs: dict[str, list[dict]] = {lib: [] for lib in LIBS}
    for rep in range(args.repeats):
        for lib in libs:
            out = run_one(command(lib, args), args.timeout)
            if lib == "ours":
                out["git"] = git_state()
            runs[lib].append(out)
            print(
                f"repeat {rep + 1}/{args.repeats} {lib}: {out['wall_s']:.0f} s", file=sys.stderr, flush=True
            )
    memory = run_one([sys.executable, str(HERE / "bench_ours.py"), "--lib", "memory"], args.timeout)
    wall = time.perf_counter() - t0
    out_dir = ROOT / "benchmarks/out"
    out_dir.mkdir(parents=True, exist_ok=True)
    raw = out_dir / f"replay-{started.replace(' ', 'T').replace(':', '')}.json"
    loadavg = [load0, os.getloadavg()[0]]
    raw.write_text(
        json.dumps(
            {
                "args": vars(args),
                "runs": runs,
                "memory": memory,
                "started": started,
                "wall_s": wall,
                "loadavg": loadavg,
            },
            indent=1,
        )
    )
    if any(not runs[lib] for lib in LIBS):
        print(f"raw results in {raw} (the report needs ours, reverb and torchrl)")
        return
    body = report(runs, memory, args, started, wall)
    body += (
        f"\n\nLoad average (1 min) at the start and end of the run: {loadavg[0]:.1f}, {loadavg[1]:.1f} "
        f"on {os.cpu_count()} CPUs (other work shares this machine)."
    )
    if args.note:
        body += "\n\n" + args.note
    print(body)
    print(f"\nraw results: {raw}")
    if not args.no_write:
        write_section(Path(args.results), body)
        print(f"wrote the replay section of {args.results}")


if __name__ == "__main__":
    main()
