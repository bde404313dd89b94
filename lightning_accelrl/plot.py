"""Learning curves from run folders: ``accelrl plot RUN_DIR [RUN_DIR ...] --out curve.png``.

A *run* is a logger version folder holding ``metrics.csv`` (``runs/NAME/version_N``); a RUN_DIR may be such a
folder or any folder above it (``runs/NAME``, ``runs``): every ``metrics.csv`` below it is a run.

What is drawn: ``episode_return_mean`` (mean of the last ``episode_window`` finished episodes; ``--y
episode_score_mean``: the unclipped game score of Atari runs; ``--y eval/return_mean``: the evaluations of the
``VideoEvaluation`` callback) against env steps and against wall-clock seconds.
Runs of one group are drawn as their mean with a min–max band (``--spread std``: ±1 std); a group of one run is
its own curve. By default a group is one config up to seeds: the ``config_id`` that ``accelrl fit`` writes to
``summary.json``, else the same identity computed from the run's ``config.yaml``
(:func:`lightning_accelrl.run_name.config_id`), so runs of one recipe with another env are never averaged
together; ``--group-by name`` groups by logger folder name instead. A resumed run (its ``config.yaml`` names a ``ckpt_path`` inside another given run) is joined to the
run it continues, so the pair is one curve.

Wall time of a logged row is ``env_steps / env_steps_per_s`` (both logged together; the throughput is computed
over the run's wall time so far, earlier segments of resumed runs included), so it is exact to float32
precision. Rows logged without the throughput (the evaluations) take the wall time interpolated between the rows
that have it. CSV files without ``env_steps_per_s`` fall back to ``summary.json``'s ``wall_time_s``,
spread over the logged steps in proportion to the step index (an approximation, marked in the legend with ``~``).

No torch import: this module stays fast (matplotlib with the Agg back-end).
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lightning_accelrl.errors import ConfigError
from lightning_accelrl.run_name import config_id, identity_items

Y_KEY = "episode_return_mean"
LEGEND_WIDTH = 48  # characters per legend line (fontsize 8 on a 6.4-inch axes)
#: what ``--y`` may draw, with its axis label
Y_LABELS = {
    "episode_return_mean": "episode return (mean of recent episodes)",
    "episode_score_mean": "game score (mean of recent episodes, unclipped)",
    "eval/return_mean": "evaluation return (mean of its episodes)",
}
#: why a run has no row of a ``--y`` column other than the default
Y_MISSING = {
    "episode_score_mean": "the run logged no game score: episode_score_mean exists for Atari runs",
    "eval/return_mean": "the run logged no evaluation: eval/return_mean comes from the VideoEvaluation callback",
}
X_LABELS = {"env_steps": "env steps", "wall_time": "wall-clock time (s)"}


@dataclass
class Run:
    """One logged run: its points sorted by env steps."""

    path: Path
    name: str  # logger name (the folder above version_N)
    env_steps: np.ndarray
    returns: np.ndarray
    wall_time: np.ndarray | None
    wall_time_exact: bool = True
    config: dict[str, Any] = field(default_factory=dict)
    config_id: str | None = None  # the config up to seeds (None: no config.yaml or summary.json tells it)

    @property
    def label(self) -> str:
        return f"{self.name}/{self.path.name}" if self.path.name != self.name else self.name

    def series(self, x: str) -> tuple[np.ndarray, np.ndarray] | None:
        xs = self.env_steps if x == "env_steps" else self.wall_time
        if xs is None:
            return None
        return xs, self.returns


def _float(value: str | None) -> float:
    try:
        return float(value) if value not in (None, "") else math.nan
    except ValueError:
        return math.nan


def read_run(run_dir: Path, y: str = Y_KEY) -> Run:
    """Read ``run_dir/metrics.csv`` (and ``config.yaml``/``summary.json`` when present); ``y``: the column drawn."""
    csv_path = run_dir / "metrics.csv"
    try:
        with csv_path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as exc:
        raise ConfigError(f"cannot read {str(csv_path)!r}: {exc.strerror or exc}") from None
    points = []
    clock = []  # (env steps, wall s) of every row that logged the throughput
    for row in rows:
        steps, ret, speed = (
            _float(row.get("env_steps")),
            _float(row.get(y)),
            _float(row.get("env_steps_per_s")),
        )
        if math.isfinite(steps) and math.isfinite(speed) and speed > 0:
            clock.append((steps, steps / speed))
        if math.isfinite(steps) and math.isfinite(ret):
            points.append((steps, ret, _float(row.get("wall_time_s")), speed, _float(row.get("step"))))
    if not points:
        why = "no finished episode was logged yet"
        if y != Y_KEY and rows and y not in rows[0]:
            why = Y_MISSING.get(y, f"the run logged no {y}")
        raise ConfigError(f"{str(csv_path)!r} has no rows with env_steps and {y} ({why})")
    points.sort(key=lambda p: p[0])
    arr = np.asarray(points, dtype=np.float64)
    env_steps, returns, wall_col, speed, step = arr.T
    exact = True
    if np.isfinite(wall_col).all():
        wall: np.ndarray | None = wall_col
    elif (np.isfinite(speed) & (speed > 0)).all():
        wall = env_steps / speed
    elif clock:
        known = np.asarray(sorted(clock), dtype=np.float64)
        wall = np.interp(env_steps, known[:, 0], known[:, 1])
    else:
        wall, exact = _wall_from_summary(run_dir, step), False
    config = _read_config(run_dir)
    name = run_dir.parent.name if run_dir.name.startswith("version_") else run_dir.name
    identity = _summary(run_dir).get("config_id") or (config_id(config) if identity_items(config) else None)
    return Run(run_dir, name, env_steps, returns, wall, exact, config, identity)


def _summary(run_dir: Path) -> dict[str, Any]:
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return {}
    return summary if isinstance(summary, dict) else {}


def _wall_from_summary(run_dir: Path, step: np.ndarray) -> np.ndarray | None:
    try:
        total = float(_summary(run_dir)["wall_time_s"])
    except (ValueError, KeyError, TypeError):
        return None
    if not np.isfinite(step).all():
        step = np.arange(len(step), dtype=np.float64)
    return total * (step + 1) / (step.max() + 1)


def _read_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "config.yaml"
    if not path.is_file():
        return {}
    try:
        import yaml

        cfg = yaml.safe_load(path.read_text())
    except Exception:
        return {}
    return cfg if isinstance(cfg, dict) else {}


def find_runs(paths: list[str | Path], y: str = Y_KEY) -> list[Run]:
    """Runs under the given folders (each folder: a version folder or any folder above version folders)."""
    runs: list[Run] = []
    seen: set[Path] = set()
    for given in paths:
        root = Path(given)
        if not root.exists():
            raise ConfigError(f"run directory {str(root)!r} not found")
        if not root.is_dir():
            raise ConfigError(
                f"{str(root)!r} is not a directory (give a run folder such as runs/NAME/version_0)"
            )
        csvs = (
            [root / "metrics.csv"] if (root / "metrics.csv").is_file() else sorted(root.rglob("metrics.csv"))
        )
        if not csvs:
            raise ConfigError(
                f"no metrics.csv under {str(root)!r}: not the folder of a run logged by a CSVLogger, or a run "
                "that ended before its first logging step (--trainer.log_every_n_steps)"
            )
        for c in csvs:
            run_dir = c.parent.resolve()
            if run_dir not in seen:
                seen.add(run_dir)
                runs.append(read_run(c.parent, y))
    return join_resumed(runs)


# ----- resumed runs ----------------------------------------------------------------------------------------------
def _resumed_from(run: Run, runs: list[Run]) -> Run | None:
    ckpt = run.config.get("ckpt_path")
    if not isinstance(ckpt, str) or not ckpt:
        return None
    candidates = [Path(ckpt)] if Path(ckpt).is_absolute() else [a / ckpt for a in run.path.resolve().parents]
    for other in runs:
        if other is run:
            continue
        root = other.path.resolve()
        for cand in candidates:
            resolved = Path(os.path.abspath(cand))
            if root in resolved.parents:
                return other
    return None


def join_resumed(runs: list[Run]) -> list[Run]:
    """A run resumed from another given run's checkpoint continues that run's curve: join them into one."""
    parent = {id(r): _resumed_from(r, runs) for r in runs}
    children = {id(p) for p in parent.values() if p is not None}
    out = []
    for run in runs:
        if id(run) in children:
            continue  # shown as the start of its continuation
        chain = [run]
        while (p := parent[id(chain[0])]) is not None and p not in chain:
            chain.insert(0, p)
        joined = chain[0]
        for nxt in chain[1:]:
            keep = (
                joined.env_steps < nxt.env_steps[0]
            )  # the continuation replaces anything after the checkpoint
            walls = None
            if joined.wall_time is not None and nxt.wall_time is not None:
                walls = np.concatenate([joined.wall_time[keep], nxt.wall_time])
            joined = Run(
                nxt.path,
                nxt.name,
                np.concatenate([joined.env_steps[keep], nxt.env_steps]),
                np.concatenate([joined.returns[keep], nxt.returns]),
                walls,
                joined.wall_time_exact and nxt.wall_time_exact,
                nxt.config,
                nxt.config_id,
            )
        out.append(joined)
    return out


# ----- groups ------------------------------------------------------------------------------------------------------
def group_runs(runs: list[Run], group_by: str = "config") -> dict[str, list[Run]]:
    """``config``: same config up to seeds (labelled by folder name, plus the identity where names repeat);
    ``name``: same logger folder name; ``none``: every run alone."""
    if group_by not in ("config", "name", "none"):
        raise ConfigError(f"--group-by must be config, name or none, got {group_by!r}")
    keyed: dict[Any, list[Run]] = {}
    for run in runs:
        if group_by == "config":
            key: Any = ("id", run.config_id) if run.config_id else ("name", run.name)
        else:
            key = run.name if group_by == "name" else run.label
        keyed.setdefault(key, []).append(run)
    if group_by == "none":
        if len(keyed) < len(runs):  # same labels from different folders
            return {f"{r.label} ({i})": [r] for i, r in enumerate(runs)}
        return {str(k): v for k, v in keyed.items()}
    if group_by == "name":
        return {str(k): v for k, v in keyed.items()}
    names: dict[str, int] = {}
    for members in keyed.values():
        names[members[0].name] = names.get(members[0].name, 0) + 1
    groups: dict[str, list[Run]] = {}
    for (kind, value), members in keyed.items():
        name = members[0].name
        groups[name if names[name] == 1 or kind == "name" else f"{name} [{value}]"] = members
    return groups


def aggregate(series: list[tuple[np.ndarray, np.ndarray]], spread: str = "minmax") -> tuple[np.ndarray, ...]:
    """Mean and band of several curves on the union of their x values, over the x range they all cover."""
    lo = max(float(x[0]) for x, _ in series)
    hi = min(float(x[-1]) for x, _ in series)
    if lo > hi:  # no common range: fall back to the union (each curve held at its ends)
        lo, hi = min(float(x[0]) for x, _ in series), max(float(x[-1]) for x, _ in series)
    grid = np.unique(np.concatenate([x for x, _ in series]))
    grid = grid[(grid >= lo) & (grid <= hi)]
    ys = np.stack([np.interp(grid, x, y) for x, y in series])
    mean = ys.mean(axis=0)
    if spread == "std":
        sd = ys.std(axis=0)
        return grid, mean, mean - sd, mean + sd
    if spread == "minmax":
        return grid, mean, ys.min(axis=0), ys.max(axis=0)
    raise ConfigError(f"--spread must be minmax or std, got {spread!r}")


# ----- drawing -----------------------------------------------------------------------------------------------------
def _check_out(out: Path) -> None:
    if out.suffix.lower() not in (".png", ".pdf", ".svg", ".jpg", ".jpeg"):
        raise ConfigError(f"--out {str(out)!r}: use a .png, .pdf, .svg or .jpg file name")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise ConfigError(f"cannot write {str(out)!r}: directory {str(parent)!r} does not exist")
    if out.is_dir():
        raise ConfigError(f"cannot write {str(out)!r}: it is a directory")
    if not os.access(parent, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise ConfigError(f"cannot write {str(out)!r}: permission denied")


def legend_label(text: str, width: int = LEGEND_WIDTH) -> str:
    """``text`` on lines of at most ``width`` characters, broken before a ``+`` (run names carry their
    overrides: ``ppo-cartpole+model.lr=0.001+...``) or after a space; a longer piece keeps its own line. Legends
    sit inside the axes, so an unbroken long name would squeeze the plot to the side of the figure."""
    lines = [""]
    for piece in re.split(r"(?=\+)|(?<= )", text):
        if lines[-1] and len(lines[-1]) + len(piece) > width:
            lines.append("")
        lines[-1] += piece
    return "\n".join(line.rstrip() for line in lines)


def plot_runs(
    paths: list[str | Path],
    out: str | Path,
    x: str = "both",
    group_by: str = "config",
    spread: str = "minmax",
    title: str | None = None,
    y: str = Y_KEY,
) -> dict[str, Any]:
    """Draw the learning curves of the runs under ``paths`` into ``out``; returns what was drawn (for tests/CLI)."""
    if x not in ("both", "env_steps", "wall_time"):
        raise ConfigError(f"--x must be env_steps, wall_time or both, got {x!r}")
    if y not in Y_LABELS:
        raise ConfigError(f"--y must be one of {', '.join(Y_LABELS)}, got {y!r}")
    out = Path(out)
    _check_out(out)
    runs = find_runs(list(paths), y)
    groups = group_runs(runs, group_by)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("plotting needs matplotlib: pip install 'lightning-accelrl[plot]'") from None

    axes_x = ["env_steps", "wall_time"] if x == "both" else [x]
    fig, axes = plt.subplots(1, len(axes_x), figsize=(6.4 * len(axes_x), 4.2), squeeze=False)
    drawn: dict[str, Any] = {"runs": len(runs), "groups": {}, "legend": []}
    for ax, xkey in zip(axes[0], axes_x):
        for i, (label, members) in enumerate(groups.items()):
            color = f"C{i % 10}"
            series = [s for s in (r.series(xkey) for r in members) if s is not None]
            if not series:
                continue
            approx = xkey == "wall_time" and not all(r.wall_time_exact for r in members)
            text = label + (
                f" (mean of {len(series)}, {'±std' if spread == 'std' else 'min–max'})"
                if len(series) > 1
                else ""
            )
            text = legend_label(text + (" ~time" if approx else ""))
            if text not in drawn["legend"]:
                drawn["legend"].append(text)
            if len(series) == 1:
                xs, ys = series[0]
                ax.plot(xs, ys, color=color, label=text, lw=1.6)
            else:
                grid, mean, low, high = aggregate(series, spread)
                ax.plot(grid, mean, color=color, label=text, lw=1.8)
                ax.fill_between(grid, low, high, color=color, alpha=0.2, lw=0)
            drawn["groups"].setdefault(label, len(series))
        ax.set_xlabel(X_LABELS[xkey])
        ax.set_ylabel(Y_LABELS[y])
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    try:
        fig.savefig(out, dpi=110)
    except OSError as exc:
        raise ConfigError(f"cannot write {str(out)!r}: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)
    drawn["out"] = str(out)
    return drawn
