"""Per-call latency of a replay table in-process, through a TableServer, and (with --ray) through a Ray actor.

Usage: python benchmarks/replay_serving.py [--ray] [--repeats 300]
Prints p50/p90 in microseconds for: insert of one small item, sample(256) of small items, sample(256) of
84x84x4 uint8 frame stacks (7.2 MB per batch). Results are quoted in docs/replay_serving.md.
"""

from __future__ import annotations

import argparse
import functools
import time

import numpy as np
import torch
from tensordict import TensorDict

from lightning_accelrl.replay import Table, TableServer, rate_limiters, selectors


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


def frames(n: int) -> TensorDict:
    return TensorDict({"observation": torch.randint(0, 255, (n, 4, 84, 84), dtype=torch.uint8)}, [n])


def make_table(max_size: int = 5000) -> Table:
    return Table("bench", selectors.Uniform(), selectors.Fifo(), max_size, rate_limiters.MinSize(1), seed=0)


def timeit(fn, repeats: int) -> tuple[float, float]:
    for _ in range(min(20, repeats)):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.percentile(times, 50) * 1e6), float(np.percentile(times, 90) * 1e6)


def run(table, label: str, repeats: int) -> None:
    one = small(1)
    table.insert(small(2000))
    print(f"{label:12s} insert 1 small item      p50 {timeit(lambda: table.insert(one), repeats)[0]:8.0f} us")
    print(f"{label:12s} sample(256) small items  p50 {timeit(lambda: table.sample(256), repeats)[0]:8.0f} us")


def run_frames(table, label: str, repeats: int) -> None:
    table.insert(frames(1000))
    p50, p90 = timeit(lambda: table.sample(256), repeats)
    print(f"{label:12s} sample(256) 84x84x4 u8   p50 {p50:8.0f} us  p90 {p90:8.0f} us")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ray", action="store_true")
    parser.add_argument("--repeats", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(1)
    run(make_table(), "in-process", args.repeats)
    run_frames(make_table(1000), "in-process", args.repeats // 3)
    with TableServer(make_table, start_method="fork") as server:
        run(server.client(), "server", args.repeats)
    with TableServer(functools.partial(make_table, 1000), start_method="fork") as server:
        run_frames(server.client(), "server", args.repeats // 3)
    if args.ray:
        import ray

        from lightning_accelrl.replay.ray_local import start_local_ray
        from lightning_accelrl.replay.ray_table import RayTable

        start_local_ray(num_cpus=2, object_store_memory=300 * 2**20)  # loopback, token, cleaned up after us
        try:
            t = RayTable.create(
                "bench", selectors.Uniform(), selectors.Fifo(), 5000, rate_limiters.MinSize(1)
            )
            run(t, "ray", args.repeats)
            t = RayTable.create(
                "bench", selectors.Uniform(), selectors.Fifo(), 1000, rate_limiters.MinSize(1)
            )
            run_frames(t, "ray", args.repeats // 3)
        finally:
            ray.shutdown()


if __name__ == "__main__":
    main()
