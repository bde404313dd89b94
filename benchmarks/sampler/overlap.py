"""Does the AlternatingSampler overlap env steps with inference? A policy that costs ``--policy-ms`` per forward
without using the CPU (``time.sleep``: a stand-in for a forward pass on a GPU) vs the SyncSampler, interleaved.

Ideal ratio alternating/sync: (env + policy) / max(env, policy) per step, when the policy cost does not grow
with the batch (as on a GPU). Run: ``python benchmarks/sampler/overlap.py --envs 16 --policy-ms 12``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from lightning_accelrl.envs import make_env
from lightning_accelrl.sampling.alternating import AlternatingSampler
from lightning_accelrl.sampling.sync import SyncSampler


class SleepingAgent:
    device = torch.device("cpu")
    policy_version = 0

    def __init__(self, seconds: float, num_actions: int) -> None:
        self.seconds = seconds
        self.num_actions = num_actions

    def act(self, obs: torch.Tensor) -> dict[str, torch.Tensor]:
        time.sleep(self.seconds)
        return {"action": torch.randint(0, self.num_actions, (obs.shape[0],))}

    def set_env_steps(self, env_steps: int, total_env_steps: int) -> None:
        """The agent contract: no schedule to drive."""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--envs", type=int, default=16)
    p.add_argument("--steps", type=int, default=32)
    p.add_argument("--policy-ms", type=float, default=12.0)
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args()
    torch.set_num_threads(1)
    n, T = args.envs, args.steps
    sync = SyncSampler(make_env("ALE/Pong-v5", n, seed=0), T)
    alt = AlternatingSampler(make_env("ALE/Pong-v5", n, seed=0), T)
    agent = SleepingAgent(args.policy_ms / 1000, sync.env.spec.num_actions)
    sync.collect(agent)
    alt.collect(agent)
    rs, ra = [], []
    for _ in range(args.repeats):
        t = time.perf_counter()
        sync.collect(agent)
        rs.append(n * T / (time.perf_counter() - t))
        t = time.perf_counter()
        alt.collect(agent)
        ra.append(n * T / (time.perf_counter() - t))
    ratios = [b / a for a, b in zip(rs, ra, strict=True)]
    print(
        f"{n} envs, policy {args.policy_ms:g} ms: sync {statistics.median(rs):.0f} steps/s, alternating "
        f"{statistics.median(ra):.0f} steps/s; alternating/sync {statistics.median(ratios):.2f} "
        f"({min(ratios):.2f}-{max(ratios):.2f}), {args.repeats} interleaved repeats"
    )
    sync.close()
    alt.close()


if __name__ == "__main__":
    main()
