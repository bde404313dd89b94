"""A Ray the library starts does not outlive the process that started it, even one killed with ``kill -9``."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip("ray")

_LEARNER = """
import os, sys, time
from lightning_accelrl.replay.ray_local import start_local_ray
assert start_local_ray(num_cpus=1, object_store_memory=80 * 2**20)
import ray
ray.get(ray.remote(lambda: 1).remote())  # a worker process too
print(os.environ["RAY_AUTH_TOKEN"], flush=True)
time.sleep(600)
"""


def _with_token(token: str) -> list[int]:
    marker = f"RAY_AUTH_TOKEN={token}".encode()
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/environ", "rb") as f:
                if marker in f.read().split(b"\0"):
                    with open(f"/proc/{entry}/stat") as s:
                        if s.read().rsplit(")", 1)[1].split()[0] != "Z":
                            pids.append(int(entry))
    return pids


def _describe(token: str) -> list[str]:
    """Each process still carrying the token: pid, state, parent and command line (what a failure needs)."""
    out = []
    for pid in _with_token(token):
        with contextlib.suppress(OSError):
            with open(f"/proc/{pid}/stat") as f:
                state, ppid = f.read().rsplit(")", 1)[1].split()[:2]
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")[:200]
            out.append(f"pid {pid} state {state} ppid {ppid}: {cmd}")
    return out


@pytest.mark.slow  # starts a Ray: ~10 s on two busy cores
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_ray_processes_die_within_seconds_of_a_killed_learner():
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["OMP_NUM_THREADS"] = "1"
    learner = subprocess.Popen([sys.executable, "-c", _LEARNER], stdout=subprocess.PIPE, text=True, env=env)
    try:
        token = learner.stdout.readline().strip()
        assert token, "the learner did not start Ray"
        assert len(_with_token(token)) >= 4  # learner, gcs, raylet, agents, worker
        learner.send_signal(signal.SIGKILL)
        learner.wait()
        start = time.monotonic()
        while _with_token(token):
            assert time.monotonic() - start < 5.0, f"Ray processes outlived the learner: {_describe(token)}"
            time.sleep(0.05)
    finally:
        if learner.poll() is None:
            learner.kill()
