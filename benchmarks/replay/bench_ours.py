"""Our side of the replay benchmark (and TorchRL's, which runs in our venv): one library per process.

    .venv/bin/python benchmarks/replay/bench_ours.py --lib ours      # lightning_accelrl.replay.Table
    .venv/bin/python benchmarks/replay/bench_ours.py --lib torchrl   # torchrl TensorDictReplayBuffer
    .venv/bin/python benchmarks/replay/bench_ours.py --lib memory    # bytes per frame transition

Prints one ``RESULT {json}`` line (see ``common.py`` for the items and operations). Ours: a `Table` with a Fifo
remover and a ``MinSize(1)`` limiter; frame items go to a `FrameStackStorage` (one stream, one endless episode,
so each new item brings one new frame). Extra figures of ours: the limiter "on" (a `SampleToInsertRatio` whose
band is checked item by item), frame items in a plain `TensorStorage` (no deduplication), and a bare
``index_select`` gather of the same bytes as a 256-item frame sample. TorchRL: `TensorDictReplayBuffer` over a
`LazyTensorStorage`, `RandomSampler` (uniform) and `PrioritizedSampler` (prioritized; recorded as unavailable,
with the error, when its compiled extension does not load).
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata as md
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from tensordict import TensorDict  # noqa: E402

N_SINGLE = 4096  # pre-built single small items, cycled
MAX_FRAME_SINGLES = (
    40_000  # pre-built single frame items (views into the frame pool); a timed loop stops there
)


# ----------------------------------------------------------------------------------------------- items
def small_batch(n: int, seed: int = 0) -> TensorDict:
    a = common.small_arrays(n, seed)
    return TensorDict(
        {
            "observation": torch.from_numpy(a["obs"]),
            "action": torch.from_numpy(a["action"]),
            "next": {"reward": torch.from_numpy(a["reward"]), "done": torch.from_numpy(a["done"])},
        },
        batch_size=[n],
    )


def small_singles(n: int) -> list[TensorDict]:
    a = common.small_arrays(n)
    t = {k: torch.from_numpy(v) for k, v in a.items()}
    return [
        TensorDict(
            {
                "observation": t["obs"][i],
                "action": t["action"][i],
                "next": {"reward": t["reward"][i], "done": t["done"][i]},
            },
            batch_size=[],
        )
        for i in range(n)
    ]


class FrameItems:
    """Frame transitions of one endless stream: item t has frames t .. t + 4 (its obs stack's newest frame is at
    position t + 3). ``index`` adds the stream/step keys our FrameStackStorage needs."""

    def __init__(self, index: bool) -> None:
        self.pool = torch.from_numpy(common.frame_pool())
        self.index = index
        self.t = 0

    def _td(self, obs, nxt, action, reward, done, t0, n, batch):
        d = {
            "observation": obs,
            "action": action,
            "next": {"observation": nxt, "reward": reward, "done": done},
        }
        if self.index:
            step = torch.arange(t0, t0 + n) + (common.STACK - 1)
            d["stream"] = torch.zeros(n, dtype=torch.int64)
            d["step"] = step
            d["next"]["step"] = step + 1
            if not batch:
                d["stream"], d["step"], d["next"]["step"] = d["stream"][0], d["step"][0], d["next"]["step"][0]
        return TensorDict(d, batch_size=[n] if batch else [])

    def single(self) -> TensorDict:
        t = self.t
        self.t += 1
        p = t % common.FRAME_POOL
        return self._td(
            self.pool[p : p + common.STACK],
            self.pool[p + 1 : p + 1 + common.STACK],
            torch.tensor(t % 4),
            torch.tensor(1.0),
            torch.tensor(False),
            t,
            1,
            False,
        )

    def batch(self, n: int) -> TensorDict:
        t = self.t
        self.t += n
        obs, nxt = common.frame_batch(self.pool.numpy(), t, n)
        return self._td(
            torch.from_numpy(obs),
            torch.from_numpy(nxt),
            torch.arange(n) % 4,
            torch.ones(n),
            torch.zeros(n, dtype=torch.bool),
            t,
            n,
            True,
        )


def record(results, kind, op, r, variant, extra=None):
    r = dict(r)
    r["variant"] = variant
    r["bytes_per_s"] = r["items_per_s"] * common.ITEM_BYTES[kind.split("[")[0]]
    if extra:
        r.update(extra)
    results[common.op_name(kind, op)] = r
    print(
        f"{kind}.{op}: {r['items_per_s']:,.0f} items/s  {r['us_per_call']:.1f} us/call  ({variant})",
        file=sys.stderr,
        flush=True,
    )


# ----------------------------------------------------------------------------------------------- ours
def _fill(table, make, cap, rng, prioritized):
    done = 0
    while done < cap:
        n = min(1024, cap - done)
        table.insert(make(n), priority=rng.random(n) + 0.01 if prioritized else 1.0)
        done += n


def _ours_small(results, budget, want, limiter_name, make_limiter, full):
    from lightning_accelrl.replay import Table
    from lightning_accelrl.replay.selectors import Fifo, Prioritized, Uniform

    cap, rng = common.SMALL_CAPACITY, np.random.default_rng(0)
    kind = "small" if full else "small[limiter=SampleToInsertRatio]"
    singles = small_singles(N_SINGLE)
    batches = [small_batch(common.BATCH, seed=s) for s in range(16)]
    tu = Table("small_u", Uniform(), Fifo(), cap, make_limiter(), seed=0)
    _fill(tu, small_batch, cap, rng, False)
    c = {"i": 0}

    def one():
        c["i"] += 1
        return tu.insert(singles[c["i"] % N_SINGLE])

    def batch():
        c["i"] += 1
        return tu.insert(batches[c["i"] % 16])

    if want("small", "insert_single"):
        record(
            results,
            kind,
            "insert_single",
            common.rate(one, 1, budget),
            f"Table.insert(item []), {limiter_name}",
        )
    if want("small", "insert_batch256"):
        record(
            results,
            kind,
            "insert_batch256",
            common.rate(batch, common.BATCH, budget),
            f"Table.insert(items [256]), {limiter_name}",
        )
    if not full:
        return
    if want("small", "sample256_uniform"):
        record(
            results,
            kind,
            "sample256_uniform",
            common.rate(lambda: tu.sample(common.BATCH), common.BATCH, budget),
            "Table.sample(256), Uniform",
        )
    tu = None
    gc.collect()
    tp = Table("small_p", Prioritized(common.PRIORITY_EXPONENT), Fifo(), cap, make_limiter(), seed=0)
    _fill(tp, small_batch, cap, rng, True)
    if want("small", "sample256_prioritized"):
        record(
            results,
            kind,
            "sample256_prioritized",
            common.rate(lambda: tp.sample(common.BATCH), common.BATCH, budget),
            f"Table.sample(256), Prioritized({common.PRIORITY_EXPONENT})",
        )
    if want("small", "update_priorities256"):
        keys = torch.from_numpy(
            rng.choice(cap, common.BATCH, replace=False).astype(np.int64)
        )  # keys 0 .. cap-1

        def update():
            tp.update_priorities(keys, torch.rand(common.BATCH, dtype=torch.float64) + 0.01)

        record(
            results,
            kind,
            "update_priorities256",
            common.rate(update, common.BATCH, budget),
            "Table.update_priorities(256 keys)",
        )


def _ours_frames(results, budget, want, dedup):
    from lightning_accelrl.replay import FrameStackStorage, Table, TensorStorage
    from lightning_accelrl.replay.rate_limiters import MinSize
    from lightning_accelrl.replay.selectors import Fifo, Prioritized, Uniform

    cap, rng = common.FRAMES_CAPACITY, np.random.default_rng(0)
    storage_name = "FrameStackStorage" if dedup else "TensorStorage (no dedup)"
    kind = "frames" if dedup else "frames[storage=TensorStorage]"

    def make_storage():
        return FrameStackStorage(cap) if dedup else TensorStorage(cap)

    gen = FrameItems(index=dedup)
    tu = Table("frames_u", Uniform(), Fifo(), cap, MinSize(1), storage=make_storage(), seed=0)
    _fill(tu, gen.batch, cap, rng, False)
    if want("frames", "insert_single"):
        it = iter([gen.single() for _ in range(MAX_FRAME_SINGLES)])
        record(
            results,
            kind,
            "insert_single",
            common.rate(lambda: tu.insert(next(it)), 1, budget, max_calls=MAX_FRAME_SINGLES - 10),
            f"Table.insert(item []), {storage_name}",
        )
        it = None
        gc.collect()
    if want("frames", "insert_batch256"):
        fb = [gen.batch(common.BATCH) for _ in range(8)]
        c = {"i": 0}

        def fbatch():
            # pre-built batches re-used with fresh positions: the storage sees 256 new frames every call
            c["i"] += 1
            items = fb[c["i"] % 8]
            if dedup:
                items["step"] += 8 * common.BATCH
                items["next", "step"] += 8 * common.BATCH
            return tu.insert(items)

        record(
            results,
            kind,
            "insert_batch256",
            common.rate(fbatch, common.BATCH, budget),
            f"Table.insert(items [256]), {storage_name}",
        )
        fb = None
    if want("frames", "sample256_uniform"):
        record(
            results,
            kind,
            "sample256_uniform",
            common.rate(lambda: tu.sample(common.BATCH), common.BATCH, budget),
            f"Table.sample(256), Uniform, {storage_name}",
        )
    tu = None
    gc.collect()
    if not dedup or not want("frames", "sample256_prioritized"):
        return
    gen = FrameItems(index=True)
    tp = Table(
        "frames_p",
        Prioritized(common.PRIORITY_EXPONENT),
        Fifo(),
        cap,
        MinSize(1),
        storage=FrameStackStorage(cap),
        seed=0,
    )
    _fill(tp, gen.batch, cap, rng, True)
    record(
        results,
        kind,
        "sample256_prioritized",
        common.rate(lambda: tp.sample(common.BATCH), common.BATCH, budget),
        f"Table.sample(256), Prioritized({common.PRIORITY_EXPONENT}), {storage_name}",
    )


def _bare_gather(results, budget):
    """The same bytes as a 256-item frame sample: 2 x 256 stacks of 4 frames from a frame pool, no table."""
    cap = common.FRAMES_CAPACITY
    frames = torch.randint(0, 256, (cap + cap // 64 + 1024 + 1, common.H, common.W), dtype=torch.uint8)
    offs = torch.arange(common.STACK)
    shape = (common.BATCH, common.STACK, common.H, common.W)

    def gather():
        idx = torch.randint(0, cap, (common.BATCH,))[:, None] + offs
        obs = frames.index_select(0, idx.reshape(-1)).view(shape)
        nxt = frames.index_select(0, (idx + 1).reshape(-1)).view(shape)
        return obs, nxt

    record(
        results,
        "frames",
        "bare_index_select",
        common.rate(gather, common.BATCH, budget),
        "2 x frames.index_select(0, 1024 frame ids) from a [F, 84, 84] uint8 pool",
    )


def run_ours(budget: float, only: set[str]) -> dict:
    from lightning_accelrl.replay.rate_limiters import MinSize, SampleToInsertRatio

    results: dict[str, dict] = {}

    def want(kind, op):
        return not only or common.op_name(kind, op) in only

    _ours_small(results, budget, want, "MinSize(1)", lambda: MinSize(1), full=True)
    _ours_small(
        results,
        budget,
        want,
        "SampleToInsertRatio(1, 1, (-1e15, 1e15))",
        lambda: SampleToInsertRatio(1.0, 1, (-1e15, 1e15)),
        full=False,
    )
    _ours_frames(results, budget, want, dedup=True)
    _ours_frames(results, budget, want, dedup=False)
    if want("frames", "bare_index_select"):
        _bare_gather(results, budget)
    return results


# ----------------------------------------------------------------------------------------------- torchrl
def _prioritized_sampler(cap):
    import warnings

    from torchrl.data.replay_buffers.samplers import PrioritizedSampler

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return PrioritizedSampler(cap, alpha=common.PRIORITY_EXPONENT, beta=0.4), None
    except Exception as err:  # the compiled extension fails to load with torch 2.13
        detail = ""
        try:
            import torchrl._torchrl  # noqa: F401
        except Exception as ext_err:
            detail = f" (import torchrl._torchrl: {type(ext_err).__name__}: {str(ext_err)[:160]}...)"
        return None, f"unavailable (extension fails to load): {type(err).__name__}: {err}{detail}"


def _torchrl_kind(results, unavailable, budget, want, kind):
    from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer
    from torchrl.data.replay_buffers.samplers import RandomSampler

    if kind == "small":
        cap, make = common.SMALL_CAPACITY, small_batch
        singles = small_singles(N_SINGLE)
        batches = [small_batch(common.BATCH, seed=s) for s in range(16)]
    else:
        gen = FrameItems(index=False)
        cap, make = common.FRAMES_CAPACITY, gen.batch
        batches = [gen.batch(common.BATCH) for _ in range(8)]

    def fill(rb):
        done = 0
        while done < cap:
            n = min(1024, cap - done)
            rb.extend(make(n))
            done += n

    rb = TensorDictReplayBuffer(
        storage=LazyTensorStorage(cap), sampler=RandomSampler(), batch_size=common.BATCH
    )
    fill(rb)
    c = {"i": 0}
    if want(kind, "insert_single"):
        if kind == "small":

            def one():
                c["i"] += 1
                return rb.add(singles[c["i"] % N_SINGLE])

            record(
                results,
                kind,
                "insert_single",
                common.rate(one, 1, budget),
                "TensorDictReplayBuffer.add(item [])",
            )
        else:
            it = iter([gen.single() for _ in range(MAX_FRAME_SINGLES)])
            record(
                results,
                kind,
                "insert_single",
                common.rate(lambda: rb.add(next(it)), 1, budget, max_calls=MAX_FRAME_SINGLES - 10),
                "TensorDictReplayBuffer.add(item [])",
            )
            it = None
    if want(kind, "insert_batch256"):

        def batch():
            c["i"] += 1
            return rb.extend(batches[c["i"] % len(batches)])

        record(
            results,
            kind,
            "insert_batch256",
            common.rate(batch, common.BATCH, budget),
            "TensorDictReplayBuffer.extend(items [256])",
        )
    if want(kind, "sample256_uniform"):
        record(
            results,
            kind,
            "sample256_uniform",
            common.rate(rb.sample, common.BATCH, budget),
            "TensorDictReplayBuffer.sample() (batch_size 256), RandomSampler, LazyTensorStorage",
        )
    rb = None
    gc.collect()
    sampler, err = _prioritized_sampler(cap)
    ops = ["sample256_prioritized"] + (["update_priorities256"] if kind == "small" else [])
    ops = [op for op in ops if want(kind, op)]
    if sampler is None:
        for op in ops:
            unavailable[common.op_name(kind, op)] = err
            print(f"{kind}.{op}: {err}", file=sys.stderr, flush=True)
        return
    rb = TensorDictReplayBuffer(storage=LazyTensorStorage(cap), sampler=sampler, batch_size=common.BATCH)
    fill(rb)
    if "sample256_prioritized" in ops:
        record(
            results,
            kind,
            "sample256_prioritized",
            common.rate(rb.sample, common.BATCH, budget),
            "TensorDictReplayBuffer.sample(), PrioritizedSampler",
        )
    if "update_priorities256" in ops:
        idx = torch.randperm(cap)[: common.BATCH]
        record(
            results,
            kind,
            "update_priorities256",
            common.rate(
                lambda: rb.update_priority(idx, torch.rand(common.BATCH) + 0.01), common.BATCH, budget
            ),
            "TensorDictReplayBuffer.update_priority(256 indices)",
        )


def run_torchrl(budget: float, only: set[str]) -> tuple[dict, dict]:
    results: dict[str, dict] = {}
    unavailable: dict[str, str] = {}

    def want(kind, op):
        return not only or common.op_name(kind, op) in only

    for kind in ("small", "frames"):
        _torchrl_kind(results, unavailable, budget, want, kind)
        gc.collect()
    return results, unavailable


# ----------------------------------------------------------------------------------------------- memory
def run_memory(capacity: int, episode_len: int, streams: int) -> dict:
    """Fill a Table with FrameStackStorage to capacity with items from ``streams`` envs whose episodes last
    ``episode_len`` steps and whose first stacks are zero-padded (as a frame-stacking env pads); report bytes."""
    from lightning_accelrl.replay import FrameStackStorage, Table, TensorStorage
    from lightning_accelrl.replay.rate_limiters import MinSize
    from lightning_accelrl.replay.selectors import Fifo, Uniform

    s = common.STACK
    pool = torch.from_numpy(common.frame_pool())
    storage = FrameStackStorage(capacity)
    table = Table("mem", Uniform(), Fifo(), capacity, MinSize(1), storage=storage)
    per_stream = -(-capacity // streams) + 8  # a few more than needed so the table evicts too
    stride = episode_len + s  # StreamIndexer: positions jump by S after an episode ends
    for start in range(0, per_stream, 256):
        n = min(256, per_stream - start)
        i = torch.arange(start, start + n)
        episode, k = i // episode_len, i % episode_len
        for stream in range(streams):
            newest = (s - 1) + episode * stride + k  # position of the newest frame of the obs stack
            pos = newest[:, None] + torch.arange(-(s - 1), 2)  # [n, S + 1]: obs frames, then the next frame
            first = (s - 1) + episode * stride  # the episode's first observed frame
            pad = pos < first[:, None]  # frames before the episode's first: zero padding
            frames = (
                pool.index_select(0, ((pos + 7919 * stream) % common.FRAME_POOL).reshape(-1))
                .view(n, s + 1, common.H, common.W)
                .clone()
            )
            frames[pad] = 0
            items = TensorDict(
                {
                    "observation": frames[:, :s],
                    "action": torch.zeros(n, dtype=torch.int64),
                    "stream": torch.full((n,), stream),
                    "step": newest,
                    "next": {
                        "observation": frames[:, 1:],
                        "reward": torch.zeros(n),
                        "done": k == episode_len - 1,
                        "step": newest + 1,
                    },
                },
                batch_size=[n],
            )
            table.insert(items)
    naive = TensorStorage(8)
    naive.write(
        torch.arange(1),
        TensorDict(
            {
                "observation": torch.zeros(1, s, common.H, common.W, dtype=torch.uint8),
                "action": torch.zeros(1, dtype=torch.int64),
                "next": {
                    "observation": torch.zeros(1, s, common.H, common.W, dtype=torch.uint8),
                    "reward": torch.zeros(1),
                    "done": torch.zeros(1, dtype=torch.bool),
                },
            },
            batch_size=[1],
        ),
    )
    live = len(table)
    used_frames = storage.num_frames
    out = {
        "capacity": capacity,
        "items": live,
        "streams": streams,
        "episode_len": episode_len,
        "frame_capacity": storage.frame_capacity,
        "frames_in_use": used_frames,
        "frames_per_item": used_frames / live,
        "allocated_bytes_per_item": storage.bytes_per_item(),
        "used_bytes_per_item": (
            storage.nbytes() - (storage.frame_capacity - used_frames) * common.FRAME_BYTES
        )
        / live,
        "naive_bytes_per_item": naive.nbytes() / 8,
    }
    print(out, file=sys.stderr, flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", choices=["ours", "torchrl", "memory"], required=True)
    ap.add_argument("--budget", type=float, default=1.0, help="seconds per timed operation")
    ap.add_argument("--only", default="", help="comma-separated kind.op names to run (default: all)")
    ap.add_argument("--mem-capacity", type=int, default=100_000)
    ap.add_argument("--mem-episode", type=int, default=1_000)
    ap.add_argument("--mem-streams", type=int, default=8)
    args = ap.parse_args()
    torch.set_num_threads(1)
    only = set(filter(None, args.only.split(",")))
    t0 = time.perf_counter()
    versions = {"torch": torch.__version__, "tensordict": md.version("tensordict"), "numpy": np.__version__}
    payload: dict = {"library": args.lib, "machine": common.machine()}
    if args.lib == "ours":
        versions["lightning_accelrl"] = _our_version()
        payload["results"] = run_ours(args.budget, only)
    elif args.lib == "torchrl":
        versions["torchrl"] = md.version("torchrl")
        payload["results"], payload["unavailable"] = run_torchrl(args.budget, only)
    else:
        versions["lightning_accelrl"] = _our_version()
        payload["memory"] = run_memory(args.mem_capacity, args.mem_episode, args.mem_streams)
    payload["versions"] = versions
    payload["seconds"] = time.perf_counter() - t0
    common.emit(payload)


def _our_version() -> str:
    try:
        return md.version("lightning_accelrl")
    except md.PackageNotFoundError:
        return "source"


if __name__ == "__main__":
    main()
