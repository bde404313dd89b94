"""Start Ray for this library on one machine: bound to loopback, token-authenticated, and gone with the learner.

:func:`start_local_ray` is what the library calls whenever *it* starts Ray (a Ray the user started, or an
``address`` the user gives, is left as it is). The head listens on 127.0.0.1 only
(``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``), every connection must carry a random per-run token
(``RAY_AUTH_MODE=token``), the dashboard and usage statistics are off, and a small watchdog process kills the Ray
processes and removes their folder as soon as the process that started them dies, even by ``kill -9``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

__all__ = ["loopback_ray_env", "reaped_with_this_process", "start_local_ray"]

_MARK = "ACCELRL_RAY_RUN"
# The watchdog: reads the run's mark, then waits for end-of-file on stdin (its parent's end of the pipe closes when
# the parent dies, however it dies), SIGKILLs this user's processes of that Ray, and removes the Ray folder. A
# process is of that Ray if its environment holds the mark (every process of it inherits the mark from the head),
# or if it has a file open in the Ray folder (every Ray process logs there): Ray's agents rename themselves with
# setproctitle, which overwrites the environment /proc shows, so the mark alone misses them.
_WATCHDOG = r"""
import os, shutil, signal, sys, time
if os.fork():  # leave at once: the watchdog itself is nobody's child process (init adopts it)
    os._exit(0)
signal.signal(signal.SIGINT, signal.SIG_IGN)
folder = os.path.realpath(sys.argv[1]) + "/"
guarded = int(sys.argv[2])  # the process that started us: its pipe can close while it exits, its logs still open
mark = sys.stdin.buffer.readline().strip()
sys.stdin.buffer.read()
me, uid = os.getpid(), os.getuid()


def of_this_ray(proc):
    with open(proc + "/environ", "rb") as f:
        if mark in f.read().split(b"\0"):
            return True
    for fd in os.listdir(proc + "/fd"):
        try:
            if os.readlink(proc + "/fd/" + fd).startswith(folder):
                return True
        except OSError:
            pass
    return False


# Sweep until three sweeps in a row find nothing (a process forked while a sweep ran appears only in a later
# one), for at most 10 s.
deadline, clean = time.monotonic() + 10.0, 0
while clean < 3 and time.monotonic() < deadline:
    killed = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in (me, guarded):
            continue
        proc = "/proc/" + entry
        try:
            if os.stat(proc).st_uid != uid:
                continue
            with open(proc + "/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":  # dead, waiting to be reaped
                    continue
            if of_this_ray(proc):
                os.kill(int(entry), signal.SIGKILL)
                killed += 1
        except OSError:
            pass
    clean = clean + 1 if killed == 0 else 0
    time.sleep(0.05)
shutil.rmtree(folder, ignore_errors=True)
"""


def start_local_ray(**kwargs: Any) -> bool:
    """Start a single-node Ray on loopback unless one is running; returns whether this call started it.

    ``kwargs`` go to ``ray.init`` (e.g. ``num_cpus``, ``object_store_memory``); ``address`` is refused (connect to
    a cluster with ``ray.init`` yourself). Sets, for this process and the Ray processes it starts,
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (listen on 127.0.0.1), ``RAY_AUTH_MODE=token`` with a random
    ``RAY_AUTH_TOKEN``, and ``RAY_USAGE_STATS_ENABLED=0``.
    """
    imported = sys.modules.get("ray")
    if imported is not None and imported.is_initialized():
        return False
    if "address" in kwargs:
        raise ValueError(
            "start_local_ray starts a local Ray; to join a cluster call ray.init(address=...) first"
        )
    loopback_ray_env()
    import ray

    # A short folder of our own (Ray's Unix socket paths must stay under 107 bytes) that names its processes.
    folder = kwargs.pop("_temp_dir", None) or tempfile.mkdtemp(prefix="accelrl-ray-", dir="/tmp")
    kwargs.setdefault("include_dashboard", False)
    kwargs.setdefault("log_to_driver", False)
    with reaped_with_this_process(folder):
        ray.init(_temp_dir=folder, **kwargs)
    return True


def loopback_ray_env() -> None:
    """Environment for Ray processes this process starts (``ray.init``, ``ray.cluster_utils.Cluster``): every
    node on 127.0.0.1, a random per-run token (kept if ``RAY_AUTH_TOKEN`` is set), no usage statistics."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
    if "ray" in sys.modules:  # Ray read these when it was imported: refresh both places it keeps them
        from ray._private import ray_constants
        from ray._raylet import Config

        ray_constants.ENABLE_RAY_CLUSTER = False
        Config.initialize("")


@contextlib.contextmanager
def reaped_with_this_process(folder: str) -> Iterator[None]:
    """Ray processes started inside this block (and their children) are killed, and ``folder`` removed, as soon
    as this process dies, however it dies (Linux)."""
    mark = f"{_MARK}={secrets.token_hex(8)}"
    if sys.platform.startswith("linux"):
        _start_watchdog(folder, mark)
    os.environ[_MARK] = mark.partition("=")[2]  # only the Ray processes started now inherit it
    try:
        yield
    finally:
        del os.environ[_MARK]


def _start_watchdog(folder: str, mark: str) -> None:
    """A process that cleans up after us when we die; it holds the read end of a pipe only we write to."""
    # Ray's token stays out of the watchdog's environment: it needs none, and holds no secret it does not need.
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_TOKEN"}
    proc = subprocess.Popen(
        [sys.executable, "-c", _WATCHDOG, folder, str(os.getpid())],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl-C or group kill of the learner must not take the cleaner with it
        close_fds=True,
    )
    proc.stdin.write(mark.encode() + b"\n")
    proc.stdin.flush()
    proc.wait()  # the launcher, which exits as soon as it has forked the watchdog
    # Keep our end open for the life of this process (closing it early would start the clean-up). Forked children
    # inherit it too, which only delays the clean-up until the last of them has exited.
    _WATCHDOGS.append(proc)


_WATCHDOGS: list[subprocess.Popen] = []
