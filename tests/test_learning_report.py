"""benchmarks/learning_report.py's tables, from tiny fake run folders (no learning)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
import learning_report  # noqa: E402  (benchmarks/ is on sys.path)


def fake_run(runs: Path, recipe: str, seed: int, final: float, target: float, **more: object) -> Path:
    """A seed's folder as ``accelrl fit`` leaves it: ``summary.json`` under its logger's version folder."""
    root = runs / recipe / f"s{seed}"
    log = root / "runs" / recipe / "version_0"
    log.mkdir(parents=True)
    summary = {
        "episode_return_mean": final,
        "env_steps": 1000,
        "wall_time_s": 12.345,
        "env_steps_per_s": 81.0,
        "target_return": target,
        "env_steps_to_threshold": None,
        "env": "Acrobot-v1",
        **more,
    }
    (log / "summary.json").write_text(json.dumps(summary))
    (log / "metrics.csv").write_text(
        "env_steps,episode_return_mean\n" + "".join(f"{i * 100},{final + 10 - i}\n" for i in range(10))
    )
    return root


def test_training_return_promise_per_seed(tmp_path: Path) -> None:
    fake_run(tmp_path, "a2c-x", 0, -80.04, -83.4, env_steps_to_threshold=12800)
    fake_run(tmp_path, "a2c-x", 1, -90.0, -83.4)
    (tmp_path / "a2c-x" / "s1" / learning_report.LOAD_FILE).write_text("[3.5, 4.25, 5.0]")
    md = tmp_path / "RESULTS.md"
    text = learning_report.write_report(md, "zoo", tmp_path, ["a2c-x"], [0, 1, 2], None)
    lines = text.splitlines()
    assert lines[0] == "### a2c-x (Acrobot-v1)"
    assert "Target −83.4 (final return (last 100)) met on 1 of 3 seeds (0)." in text
    assert "| 0 | **−80.0** |  | 12,800 | 1,000 | 12.3 | 81 |  |" in lines
    assert "| 1 | −90.0 |  | not reached | 1,000 | 12.3 | 81 | 3.5/4.2/5.0 |" in lines
    assert "| 2 | error: no summary.json | | | | | | |" in lines
    assert md.read_text().startswith("# Benchmark results\n")  # a new file gets the results header


def test_greedy_eval_is_the_promise_where_the_recipe_runs_one(tmp_path: Path) -> None:
    fake_run(tmp_path, "dqn-x", 0, -120.0, -101, eval_return_mean=-99.85)
    fake_run(tmp_path, "dqn-x", 1, -95.0, -101, eval_return_mean=-103.0)
    text = learning_report.write_report(tmp_path / "r.md", "zoo", tmp_path, ["dqn-x"], [0, 1], "docs/curves")
    assert "Target −101 (greedy eval) met on 1 of 2 seeds (0)." in text
    assert "| 0 | −120.0 | **−99.85** |" in text
    # a training mean over the target does not count for a recipe promising its greedy evaluation
    assert "| 1 | −95.0 | −103.0 |" in text
    assert text.rstrip().endswith("Curve: [docs/curves/dqn-x.png](docs/curves/dqn-x.png)")


def test_section_is_replaced_in_place(tmp_path: Path) -> None:
    md = tmp_path / "RESULTS.md"
    md.write_text("# Results\n\nbefore\n\n<!-- BEGIN zoo -->\nold table\n<!-- END zoo -->\n\nafter\n")
    fake_run(tmp_path, "a2c-x", 0, -80.0, -83.4)
    learning_report.write_report(md, "zoo", tmp_path, ["a2c-x"], [0], None)
    learning_report.write_report(md, "zoo", tmp_path, ["a2c-x"], [0], None)
    body = md.read_text()
    assert "old table" not in body
    assert body.count("### a2c-x (Acrobot-v1)") == 1
    assert body.startswith("# Results\n\nbefore\n\n<!-- BEGIN zoo -->\n### a2c-x (Acrobot-v1)")
    assert body.endswith("<!-- END zoo -->\n\nafter\n")


@pytest.mark.timeout(120)
def test_report_only_cli_writes_table_and_curve(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    for seed in (0, 1):
        fake_run(tmp_path / "runs", "a2c-x", seed, -80.0 - seed, -83.4)
    md, curves = tmp_path / "out.md", tmp_path / "curves"
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / "learning_report.py"), "--recipes", "a2c-x", "--seeds", "0", "1",
         "--runs", str(tmp_path / "runs"), "--md", str(md), "--curves", str(curves), "--report-only"],
        capture_output=True, text=True, timeout=100,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "met on 2 of 2 seeds (0, 1)." in md.read_text()
    assert (curves / "a2c-x.png").stat().st_size > 1000
