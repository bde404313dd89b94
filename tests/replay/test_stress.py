"""Load: 64 client processes (32 producers, 32 consumers) on one table server, blocking calls with timeouts
under a sample-to-insert limiter. Every item is sampled exactly ``max_times_sampled`` times with its own data, the
limiter band holds at every observation, no call returns later than its timeout (plus scheduling slack on a busy
machine), and nothing is left behind: no child process, no /dev/shm entry."""

from __future__ import annotations

import functools
import multiprocessing as mp
import os
import time

import numpy as np
import pytest
from test_server import _band_ok, _consumer, _producer, _start, children_of  # (tests/replay is on sys.path)

from lightning_accelrl.replay import Table, TableServer, rate_limiters, selectors

# 64 processes on a couple of busy cores: a blocked call may be woken late by the scheduler, never by the server.
SLACK_S = 3.0


def _gated(gate, target, client, *args) -> None:  # noqa: ANN001, ANN002
    """Connect to the server, wait for the gate, then run ``target(client, *args)``."""
    client.info()
    gate.wait(120)
    target(client, *args)


@pytest.mark.slow  # 64 processes: ~20-40 s on two busy cores
def test_64_client_processes_on_one_server(tmp_path):
    shm_before = set(os.listdir("/dev/shm"))
    producers, consumers, per_producer, mts = 32, 32, 40, 3
    total = producers * per_producer
    factory = functools.partial(
        Table,
        "stress64",
        selectors.Uniform(),
        selectors.Fifo(),
        256,
        rate_limiters.SampleToInsertRatio(mts, 1, (0, 200)),
        max_times_sampled=mts,
        seed=0,
    )
    server = TableServer(factory, start_method="fork").start()
    c = server.client()
    gate = mp.get_context("fork").Event()
    procs = [
        _start(_gated, gate, _producer, c, 10_000 * i, per_producer, 4, str(tmp_path / f"p{i}.npy"), 10.0)
        for i in range(producers)
    ]
    procs += [
        _start(_gated, gate, _consumer, c, total, 4, str(tmp_path / f"c{i}.npy"), 0.5)
        for i in range(consumers)
    ]
    # every client connects before any starts its work: on a busy machine the first processes would otherwise
    # finish before the last ones start, and the server would never hold all 64 at once
    deadline = time.monotonic() + 120
    while c.info()["clients"] < len(procs) + 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert c.info()["clients"] == len(procs) + 1  # the 64 and this process
    gate.set()
    peak_clients = 0
    while any(p.is_alive() for p in procs):
        info = c.info()
        _band_ok(info)
        peak_clients = max(peak_clients, info["clients"])
        time.sleep(0.01)
    for p in procs:
        p.join(10)
        assert p.exitcode == 0
    info = c.info()
    assert (info["inserts"], info["samples"], info["deletes"], info["size"]) == (total, mts * total, total, 0)
    assert peak_clients > 32  # the clients really were served at the same time
    inserted = np.concatenate([np.load(tmp_path / f"p{i}.npy") for i in range(producers)], axis=1)
    sampled = np.concatenate([np.load(tmp_path / f"c{i}.npy") for i in range(consumers)], axis=1)
    x_of = dict(zip(inserted[0].astype(int).tolist(), inserted[1].tolist()))
    assert len(x_of) == total  # unique keys, none lost
    keys, counts = np.unique(sampled[0].astype(int), return_counts=True)
    assert set(keys.tolist()) == set(x_of) and (counts == mts).all()  # each item exactly mts times
    assert all(x_of[int(k)] == x for k, x in zip(sampled[0], sampled[1]))  # each sample carries its own item
    assert max(inserted[2].max(), sampled[2].max()) < SLACK_S  # no call returned (much) past its timeout
    server.stop()
    assert not children_of(os.getpid()) and not mp.active_children()
    assert {e for e in set(os.listdir("/dev/shm")) - shm_before if not e.startswith("sem.mp-")} == set()
