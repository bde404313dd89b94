"""A Ray the library starts does not outlive the process that started it, even one killed with ``kill -9``."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

pytest.importorskip("ray")

_LEARNER = """
import os, sys, time
from lightning_accelrl.replay.ray_local import start_local_ray
assert start_local_ray(num_cpus=1, object_store_memory=80 * 2**20, _temp_dir=sys.argv[1])
import ray
ray.get(ray.remote(lambda: 1).remote())  # a worker process too
print(os.environ["RAY_AUTH_TOKEN"], flush=True)
time.sleep(600)
"""


def _of_ray(token: str, folder: str) -> list[int]:
    """Live processes of the learner's Ray: the token in their environment, or a file open in its folder (Ray's
    agents overwrite the environment /proc shows when they rename themselves, but keep their logs open)."""
    marker = f"RAY_AUTH_TOKEN={token}".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError):
            with open(f"/proc/{entry}/stat") as s:
                if s.read().rsplit(")", 1)[1].split()[0] == "Z":
                    continue
            with open(f"/proc/{entry}/environ", "rb") as f:
                ours = marker in f.read().split(b"\0")
            fds = f"/proc/{entry}/fd"
            if ours or any(_link(f"{fds}/{fd}").startswith(folder + "/") for fd in os.listdir(fds)):
                pids.append(int(entry))
    return pids


def _link(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


def _describe(pids: list[int]) -> list[str]:
    """Each process: pid, state, parent and command line (what a failure needs)."""
    out = []
    for pid in pids:
        with contextlib.suppress(OSError):
            with open(f"/proc/{pid}/stat") as f:
                state, ppid = f.read().rsplit(")", 1)[1].split()[:2]
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")[:200]
            out.append(f"pid {pid} state {state} ppid {ppid}: {cmd}")
    return out


def _learner_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["OMP_NUM_THREADS"] = "1"
    return env


def _wait_gone(token: str, folder: str, limit_s: float) -> None:
    """Wait until no process of the learner's Ray is left and its folder is removed; fail after ``limit_s``."""
    start = time.monotonic()
    while (left := _of_ray(token, folder)) or os.path.exists(folder):
        assert time.monotonic() - start < limit_s, (
            f"Ray processes outlived the learner: {_describe(left)}" if left else "the Ray folder is left"
        )
        time.sleep(0.05)


@pytest.mark.slow  # starts a Ray: ~10 s on two busy cores
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_ray_processes_die_within_seconds_of_a_killed_learner():
    env = _learner_env()
    folder = os.path.realpath(tempfile.mkdtemp(prefix="accelrl-ray-test-", dir="/tmp"))
    learner = subprocess.Popen(
        [sys.executable, "-c", _LEARNER, folder], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        token = learner.stdout.readline().strip()
        assert token, "the learner did not start Ray"
        assert len(_of_ray(token, folder)) >= 4  # learner, gcs, raylet, agents, worker
        learner.send_signal(signal.SIGKILL)
        learner.wait()
        _wait_gone(token, folder, 5.0)
    finally:
        if learner.poll() is None:
            learner.kill()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow  # starts a Ray: ~10 s on two busy cores
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_learner_that_started_ray_exits_normally_and_leaves_nothing():
    # The watchdog's pipe closes while the learner's interpreter shuts down, its Ray logs still open: the watchdog
    # must spare it (it once SIGKILLed it: exit status -9 after a passing test run), and clean up the rest.
    env = _learner_env()
    folder = os.path.realpath(tempfile.mkdtemp(prefix="accelrl-ray-test-", dir="/tmp"))
    script = _LEARNER.replace("time.sleep(600)", "")
    try:
        proc = subprocess.run(
            [sys.executable, "-c", script, folder], capture_output=True, text=True, env=env, timeout=120
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        token = proc.stdout.strip()
        _wait_gone(token, folder, 15.0)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
