"""The GPU device kit (benchmarks/gpu/): its CPU dry run, its package list, and the stop-at-target callback."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]
KIT = ROOT / "benchmarks" / "gpu"
# On the device image already: the kit must not ship these (the wheelhouse would replace the image's CUDA torch).
IMAGE = {"torch", "lightning", "pytorch-lightning", "numpy", "rich", "tensorboard", "pytest", "pyyaml",
         "opencv-python-headless", "packaging", "typing-extensions"}  # fmt: skip
NEEDED = {
    "tensordict",
    "gymnasium",
    "ale-py",
    "jsonargparse",
    "msgpack",
    "docstring-parser",
    "typeshed-client",
}


def pinned_names() -> dict[str, str]:
    """The requirement file's pins, ``normalized name -> version``."""
    pins = {}
    for line in (KIT / "requirements-device.txt").read_text().splitlines():
        spec = line.split("#", 1)[0].strip()
        if spec:
            name, version = spec.split("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def test_requirements_name_what_the_image_lacks_and_nothing_it_has() -> None:
    pins = pinned_names()
    assert not IMAGE & pins.keys(), f"already on the device image: {sorted(IMAGE & pins.keys())}"
    assert pins.keys() >= NEEDED, f"missing: {sorted(NEEDED - pins.keys())}"
    assert "torchrl" not in pins  # Atari/CartPole do not import it; it is left out on purpose
    assert "build_wheelhouse.sh" not in (KIT / "requirements-device.txt").read_text()
    assert "requirements-device.txt" in (KIT / "build_wheelhouse.sh").read_text()


def test_stop_at_target_waits_for_a_full_window() -> None:
    spec = importlib.util.spec_from_file_location("stop_at_target", KIT / "stop_at_target.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    callback = module.StopAtTarget(target=18, min_episodes=100)
    trainer = SimpleNamespace(should_stop=False, callback_metrics={})
    for metrics, stops in [
        ({}, False),
        ({"episode_return_mean": 19.0, "episode_window_count": 99.0}, False),  # window not full yet
        ({"episode_return_mean": 17.9, "episode_window_count": 100.0}, False),
        ({"episode_return_mean": 18.0, "episode_window_count": 100.0}, True),
    ]:
        trainer.callback_metrics = metrics
        callback.on_train_batch_end(trainer, None)
        assert trainer.should_stop is stops


@pytest.mark.skipif(
    importlib.util.find_spec("ale_py") is None, reason="needs ale-py (pip install '.[atari]')"
)
def test_cpu_dry_run_writes_every_part_ok(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        ["bash", str(KIT / "device_check.sh"), "--cpu", "--no-install", "--out", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=480,  # a loaded 2-core machine: the dry run took ~225 s at load 7
    )
    parts = {name: json.loads((tmp_path / name / "summary.json").read_text()) for name in
             ("install", "tests", "sampler", "pong")}  # fmt: skip
    failed = {n: p for n, p in parts.items() if not p["ok"]}
    logs = "".join(
        f"\n--- {log}\n{log.read_text()[-1500:]}" for n in failed for log in (tmp_path / n).glob("*.log")
    )
    assert not failed, f"{failed}\n{proc.stdout[-1000:]}{logs}"
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert json.loads((tmp_path / "kit.json").read_text())["ok"]
    assert parts["install"]["errors"] == {} and "lightning_accelrl" in parts["install"]["versions"]
    assert parts["tests"]["failed"] == 0
    assert {r["config"] for r in parts["sampler"]["rows"]} == {"a", "b", "c", "d"}
    assert parts["sampler"]["cnn_frames_per_s_best"] > 0
    # the fit ran on the CPU's 15 s max_time, far short of its budget, and still wrote its summary and curve
    summary = parts["pong"]["summary"]
    assert summary["env"] == "ALE/Pong-v5" and 0 < summary["env_steps"] < 1_000_000
    assert summary["target_return"] == 18 and parts["pong"]["reached_target"] is False
    assert (tmp_path / "pong" / "fit.log").is_file()
    assert list((tmp_path / "pong").rglob("metrics.csv")) and not list((tmp_path / "pong").rglob("*.ckpt"))
