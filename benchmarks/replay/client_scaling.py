"""Throughput of one TableServer against the number of client processes (1 -> 256).

Usage: python benchmarks/replay/client_scaling.py [--clients 1 4 16 64 256] [--seconds 3]

For each client count N, three runs on a fresh server (Uniform sampler, Fifo remover, 100k items, MinSize(1)):
- insert: N processes each insert one small item per call (CartPole-sized transition, 12 fields' worth of bytes);
- sample: N processes each call ``sample(1)`` on a prefilled table;
- sample64: N processes each call ``sample(64)`` (items/s counts the items).
Clients start together (a barrier), run for ``--seconds`` and report their call counts; the figure is the total
over the measured window. Prints a Markdown table for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time

import torch
from tensordict import TensorDict

from lightning_accelrl.replay import Table, TableClient, TableServer, rate_limiters, selectors

FORK = mp.get_context("fork")


def small(n: int) -> TensorDict:
    return TensorDict(
        {
            "observation": torch.zeros(n, 4),
            "action": torch.zeros(n, dtype=torch.int64),
            "reward": torch.zeros(n),
            "next": {"observation": torch.zeros(n, 4), "done": torch.zeros(n, dtype=torch.bool)},
        },
        [n],
    )


def make_table() -> Table:
    return Table("bench", selectors.Uniform(), selectors.Fifo(), 100_000, rate_limiters.MinSize(1), seed=0)


def _client(client: TableClient, mode: str, barrier, seconds: float, out) -> None:
    torch.set_num_threads(1)
    one = small(1)
    batch = 64 if mode == "sample64" else 1
    client.size  # noqa: B018  (connect before the clock starts)
    barrier.wait()
    calls, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        if mode == "insert":
            client.insert(one, timeout=10)
        else:
            client.sample(batch, timeout=10)
        calls += 1
    out.put(calls)


def measure(n: int, mode: str, seconds: float) -> tuple[float, float]:
    """(calls/s, items/s) of n clients in ``mode``."""
    with TableServer(make_table, start_method="fork") as server:
        client = server.client()
        client.insert(small(10_000))
        barrier, out = FORK.Barrier(n + 1), FORK.Queue()
        procs = [FORK.Process(target=_client, args=(client, mode, barrier, seconds, out)) for _ in range(n)]
        for p in procs:
            p.start()
        barrier.wait()
        total = sum(out.get(timeout=seconds + 120) for _ in range(n))
        for p in procs:
            p.join(30)
    per_call = 64 if mode == "sample64" else 1
    return total / seconds, total * per_call / seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16, 64, 256])
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"# {os.cpu_count()} CPUs; {args.seconds:g} s per run")
    print("| clients | inserts/s | sample(1) calls/s | sample(64) calls/s | sampled items/s (sample(64)) |")
    print("|---:|---:|---:|---:|---:|")
    for n in args.clients:
        ins, _ = measure(n, "insert", args.seconds)
        s1, _ = measure(n, "sample", args.seconds)
        s64, items = measure(n, "sample64", args.seconds)
        print(f"| {n} | {ins:,.0f} | {s1:,.0f} | {s64:,.0f} | {items:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
