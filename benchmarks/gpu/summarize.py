"""Turns one part's raw outputs (pytest JUnit XML, the sampler benchmark's log, a fit's run folder) into JSON.

Usage: ``summarize.py tests|sampler|pong SOURCE RC OUT_JSON [--gpu]`` and ``summarize.py kit OUT_DIR``.
Every part's JSON has ``part``, ``ok`` and ``rc``; ``kit`` gathers them into ``kit.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

SAMPLER_ROW = re.compile(r"^\| (\d+) \| (\w) \| ([^|]+) \| ([\d,]+) \| ([\d,]+) \| ([^|]+) \|$")
CNN_CONFIGS = ("c", "d")  # the Nature CNN policy: sync and alternating samplers
GPU_SAMPLER_GOAL_FPS = 80_000


def tests(junit: Path, rc: int, gpu: bool) -> dict[str, Any]:
    """Counts of the CUDA-relevant tests; on the GPU a test skipped for want of CUDA is a failure."""
    out: dict[str, Any] = {"part": "tests", "rc": rc, "passed": 0, "failed": 0, "skipped": 0, "skips": []}
    if junit.is_file():
        for case in ET.parse(junit).getroot().iter("testcase"):
            name = f"{case.get('classname')}::{case.get('name')}"
            if case.find("failure") is not None or case.find("error") is not None:
                out["failed"] += 1
            elif (skip := case.find("skipped")) is not None:
                out["skipped"] += 1
                out["skips"].append(f"{name}: {skip.get('message', '')}")
            else:
                out["passed"] += 1
    cuda_skipped = any("cuda" in s.lower() for s in out["skips"])
    out["ok"] = rc == 0 and out["failed"] == 0 and not (gpu and (cuda_skipped or out["passed"] == 0))
    return out


def sampler(log: Path, rc: int) -> dict[str, Any]:
    """The benchmark's table rows (steps/s and frames/s medians) and the CNN policy's best frames/s."""
    rows = []
    text = log.read_text(errors="replace") if log.is_file() else ""
    for line in text.splitlines():
        if m := SAMPLER_ROW.match(line.strip()):
            n, key, label, steps, frames, spread = m.groups()
            rows.append(
                {
                    "envs": int(n),
                    "config": key,
                    "what": label.strip(),
                    "steps_per_s": float(steps.replace(",", "")),
                    "frames_per_s": float(frames.replace(",", "")),
                    "steps_per_s_min_max": spread.strip(),
                }
            )
    cnn = [r["frames_per_s"] for r in rows if r["config"] in CNN_CONFIGS]
    machine = next(
        (line[len("- Machine: ") :] for line in text.splitlines() if line.startswith("- Machine: ")), None
    )
    best = max(cnn) if cnn else None
    return {
        "part": "sampler",
        "ok": rc == 0 and bool(rows),
        "rc": rc,
        "machine": machine,
        "rows": rows,
        "cnn_frames_per_s_best": best,
        "goal_frames_per_s": GPU_SAMPLER_GOAL_FPS,
        "goal_met": best is not None and best >= GPU_SAMPLER_GOAL_FPS,
    }


def pong(run_dir: Path, rc: int) -> dict[str, Any]:
    """The fit's summary.json, the curve's last row, and whether +target was reached (and how fast)."""
    out: dict[str, Any] = {"part": "pong", "rc": rc}
    summaries = sorted(run_dir.rglob("summary.json"))
    if summaries:
        out["summary"] = json.loads(summaries[-1].read_text())
        out["summary_path"] = str(summaries[-1])
    curves = sorted(run_dir.rglob("metrics.csv"))
    if curves:
        rows = [r for r in csv.DictReader(curves[-1].open()) if r.get("episode_return_mean")]
        out["curve_points"] = len(rows)
        out["curve_last"] = rows[-1] if rows else None
    s = out.get("summary", {})
    out["reached_target"] = s.get("env_steps_to_threshold") is not None
    log = run_dir / "fit.log"
    timed_out = log.is_file() and "Time limit reached" in log.read_text(errors="replace")
    out["stopped_by"] = (
        "target" if out["reached_target"] else "max_time" if timed_out else "budget" if rc == 0 else "error"
    )
    out["ok"] = rc == 0 and "summary" in out
    return out


def kit(out_dir: Path) -> dict[str, Any]:
    """All parts' summaries in one file; ``ok`` when every part ran cleanly."""
    parts = {}
    for name in ("install", "tests", "sampler", "pong"):
        try:
            parts[name] = json.loads((out_dir / name / "summary.json").read_text())
        except (OSError, ValueError):  # the part died before writing its summary: its log says why
            parts[name] = {"part": name, "ok": False, "rc": None}
    return {"ok": all(p.get("ok") for p in parts.values()), "parts": parts}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("part", choices=("tests", "sampler", "pong", "kit"))
    p.add_argument("source", type=Path)
    p.add_argument("rc", type=int, nargs="?", default=0)
    p.add_argument("out", type=Path, nargs="?")
    p.add_argument("--gpu", action="store_true", help="tests: a CUDA test that skipped is a failure")
    a = p.parse_args()
    if a.part == "kit":
        result, target = kit(a.source), a.source / "kit.json"
    else:
        result = {
            "tests": lambda: tests(a.source, a.rc, a.gpu),
            "sampler": lambda: sampler(a.source, a.rc),
        }.get(a.part, lambda: pong(a.source, a.rc))()
        target = a.out
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{a.part}: ok={result['ok']} -> {target}")


if __name__ == "__main__":
    main()
