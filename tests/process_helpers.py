"""Runs in a process group of their own: tests that start processes (DDP ranks, async samplers, table servers)
find every one of them by group, kill the group if a run hangs, and check that nothing outlives the run."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

#: the environment of such runs: one thread per process (2 cores), no warnings in the captured output
QUIET_ENV = {"OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def shm_segments() -> set[str]:
    """Shared-memory segments now (semaphores aside): compare before and after a run for leftovers."""
    return {n for n in os.listdir("/dev/shm") if not n.startswith("sem.")}


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def run_in_own_group(
    cmd: Sequence[str],
    cwd: Path,
    timeout: float,
    what: str,
    env: dict[str, str] | None = None,
    linger_s: float = 5.0,
) -> tuple[int, str, float]:
    """Run ``cmd`` in a new session; on timeout kill its group and fail the test. Waits up to ``linger_s`` for the
    group to vanish, then kills what is left and fails: no process may outlive the run.

    Returns (return code, output, seconds until the main process ended)."""
    t0 = time.monotonic()
    proc = subprocess.Popen(
        list(cmd),
        cwd=cwd,
        env=env if env is not None else dict(os.environ, **QUIET_ENV),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"{what} timed out:\n" + output.decode(errors="replace")[-4000:])
    took = time.monotonic() - t0
    deadline = time.monotonic() + linger_s
    while group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    lingering = group_alive(proc.pid)
    if lingering:
        os.killpg(proc.pid, signal.SIGKILL)
    text = output.decode(errors="replace")
    assert not lingering, f"processes of the {what} outlived it:\n" + text[-3000:]
    return proc.returncode, text, took


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_groups(commands: Sequence[Sequence[str]], envs: Sequence[dict[str, str]], cwd: Path) -> list:
    """One session per command (a node, a DDP rank): its processes are found (and killed) by group."""
    return [
        subprocess.Popen(
            list(cmd),
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        for cmd, env in zip(commands, envs, strict=True)
    ]


def finish(procs: list, timeout: float, what: str) -> list[str]:
    """Wait for every group's main process; on timeout kill them all and fail. Their outputs."""
    outputs, deadline = [], time.monotonic() + timeout
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            outputs.append(out.decode(errors="replace"))
    except subprocess.TimeoutExpired:
        kill_groups(procs)
        pytest.fail(f"{what} timed out")
    return outputs


def kill_groups(procs: list) -> None:
    """SIGTERM first (torchrun then stops its workers, which run in sessions of their own), then SIGKILL."""
    for proc in procs:
        if group_alive(proc.pid):
            os.killpg(proc.pid, signal.SIGTERM)
    wait_gone([proc.pid for proc in procs], 10)
    for proc in procs:
        proc.wait()


def wait_gone(pgids: Sequence[int], linger_s: float) -> list[int]:
    """Process groups still alive ``linger_s`` after the run (killed, then returned: none may outlive it)."""
    deadline = time.monotonic() + linger_s
    while any(group_alive(g) for g in pgids) and time.monotonic() < deadline:
        time.sleep(0.05)
    alive = [g for g in pgids if group_alive(g)]
    for g in alive:
        os.killpg(g, signal.SIGKILL)
    return alive
