"""Reverb 0.14 side of the replay benchmark: run with the Reverb venv's Python (``benchmarks/.venv-reverb``).

A local ``reverb.Server`` lives in this process; the client talks to it on localhost (Reverb's sampler reads a
table of a server in the same process directly, without gRPC: the "in-process" case). Prints one ``RESULT {json}``
line. Variants measured for each operation (the best one is the reported figure; all are kept in the JSON):

- single-item insert: ``client.insert(data, {table: p})`` (a new writer per call) and a persistent
  ``TrajectoryWriter`` (``append`` + ``create_item`` per call; its ``flush`` is timed at the end of the loop);
- batched insert of 256: the persistent ``TrajectoryWriter``, 256 ``append`` + ``create_item`` then ``flush``
  (Reverb has no batched-item call);
- sample 256: ``TrajectoryDataset.from_table_signature(...).batch(256)`` (background workers, prefetching) and
  ``client.sample(table, 256, emit_timesteps=False)``;
- priority update of 256 keys: ``client.mutate_priorities``.
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata as md
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common  # noqa: E402
import numpy as np  # noqa: E402


def _tf_one_thread():
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    return tf


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", type=float, default=1.0, help="seconds per timed operation")
    ap.add_argument("--only", default="", help="comma-separated kind.op names to run (default: all)")
    args = ap.parse_args()
    tf = _tf_one_thread()
    import reverb

    only = set(filter(None, args.only.split(",")))
    results: dict[str, dict] = {}

    def spec_small():
        return {
            "obs": tf.TensorSpec([4], tf.float32),
            "action": tf.TensorSpec([], tf.int64),
            "reward": tf.TensorSpec([], tf.float32),
            "done": tf.TensorSpec([], tf.bool),
        }

    def spec_frames():
        return {
            "obs": tf.TensorSpec([common.STACK, common.H, common.W], tf.uint8),
            "next_obs": tf.TensorSpec([common.STACK, common.H, common.W], tf.uint8),
            "action": tf.TensorSpec([], tf.int64),
            "reward": tf.TensorSpec([], tf.float32),
            "done": tf.TensorSpec([], tf.bool),
        }

    def table(name, sampler, cap, spec):
        return reverb.Table(
            name=name,
            sampler=sampler,
            remover=reverb.selectors.Fifo(),
            max_size=cap,
            rate_limiter=reverb.rate_limiters.MinSize(1),
            signature=spec,
        )

    tables = [
        # client.insert stores a [1, ...] timestep sequence, which the signatures below do not match: its own tables
        table("small_u_insert", reverb.selectors.Uniform(), common.SMALL_CAPACITY, None),
        table("frames_u_insert", reverb.selectors.Uniform(), common.FRAMES_CAPACITY, None),
        table("small_u", reverb.selectors.Uniform(), common.SMALL_CAPACITY, spec_small()),
        table(
            "small_p",
            reverb.selectors.Prioritized(common.PRIORITY_EXPONENT),
            common.SMALL_CAPACITY,
            spec_small(),
        ),
        table("frames_u", reverb.selectors.Uniform(), common.FRAMES_CAPACITY, spec_frames()),
        table(
            "frames_p",
            reverb.selectors.Prioritized(common.PRIORITY_EXPONENT),
            common.FRAMES_CAPACITY,
            spec_frames(),
        ),
    ]
    server = reverb.Server(tables=tables)  # picks a free port
    address = f"localhost:{server.port}"
    client = reverb.Client(address)
    rng = np.random.default_rng(0)

    small = common.small_arrays(4096)
    small_steps = [{k: v[i] for k, v in small.items()} for i in range(4096)]
    pool = common.frame_pool()
    counter = {"t": 0}

    def frame_step(t):
        obs, nxt = common.frame_item_views(pool, t)
        return {
            "obs": obs,
            "next_obs": nxt,
            "action": np.int64(t % 4),
            "reward": np.float32(1.0),
            "done": np.bool_(False),
        }

    def step_of(kind):
        t = counter["t"]
        counter["t"] = t + 1
        return small_steps[t % 4096] if kind == "small" else frame_step(t)

    def writer_insert(writer, name, n, kind, prios=None):
        for i in range(n):
            writer.append(step_of(kind))
            traj = {k: col[-1] for k, col in writer.history.items()}
            writer.create_item(name, 1.0 if prios is None else float(prios[i]), traj)

    def prefill(name, kind, cap, prioritized):
        with client.trajectory_writer(num_keep_alive_refs=1) as w:
            done = 0
            while done < cap:
                n = min(1024, cap - done)
                writer_insert(w, name, n, kind, rng.random(n) + 0.01 if prioritized else None)
                w.flush()
                done += n

    def record(kind, op, variants):
        best = max(variants, key=lambda v: variants[v]["items_per_s"])
        r = dict(variants[best])
        r["variant"] = best
        r["variants"] = {v: round(x["items_per_s"], 1) for v, x in variants.items()}
        r["bytes_per_s"] = r["items_per_s"] * common.ITEM_BYTES[kind]
        results[common.op_name(kind, op)] = r
        print(
            f"reverb {kind}.{op}: {r['items_per_s']:,.0f} items/s ({best}; {r['variants']})", file=sys.stderr
        )

    def want(kind, op):
        return not only or common.op_name(kind, op) in only

    def sample_op(kind, op, name):
        variants = {}
        ds = reverb.TrajectoryDataset.from_table_signature(
            server_address=address, table=name, max_in_flight_samples_per_worker=2 * common.BATCH
        ).batch(common.BATCH, drop_remainder=True)
        it = iter(ds)
        variants["TrajectoryDataset.batch(256)"] = common.rate(
            lambda: next(it), common.BATCH, args.budget, warmup=3
        )
        it = ds = None  # stops the dataset's background workers
        gc.collect()
        variants["client.sample(256)"] = common.rate(
            lambda: list(client.sample(name, common.BATCH, emit_timesteps=False)), common.BATCH, args.budget
        )
        record(kind, op, variants)

    def run_kind(kind, cap):
        tu, tp = f"{kind}_u", f"{kind}_p"
        prefill(tu, kind, cap, False)
        prefill(tp, kind, cap, True)
        if want(kind, "insert_single"):
            variants = {}
            variants["client.insert"] = common.rate(
                lambda: client.insert(step_of(kind), {f"{tu}_insert": 1.0}), 1, args.budget
            )
            w = client.trajectory_writer(num_keep_alive_refs=1)
            variants["TrajectoryWriter(append+create_item)"] = common.rate(
                lambda: writer_insert(w, tu, 1, kind), 1, args.budget, finish=w.flush
            )

            def insert_flush():
                writer_insert(w, tu, 1, kind)
                w.flush()

            variants["TrajectoryWriter(append+create_item+flush)"] = common.rate(insert_flush, 1, args.budget)
            w.close()
            record(kind, "insert_single", variants)
        if want(kind, "insert_batch256"):
            wb = client.trajectory_writer(num_keep_alive_refs=1)

            def batch():
                writer_insert(wb, tu, common.BATCH, kind)
                wb.flush()

            record(
                kind,
                "insert_batch256",
                {
                    "TrajectoryWriter(256x append+create_item, flush)": common.rate(
                        batch, common.BATCH, args.budget
                    )
                },
            )
            wb.close()
        for op, name in (("sample256_uniform", tu), ("sample256_prioritized", tp)):
            if want(kind, op):
                sample_op(kind, op, name)
        if kind == "small" and want(kind, "update_priorities256"):
            keys = set()
            for s in client.sample(tp, 4 * common.BATCH, emit_timesteps=False):
                keys.add(int(s.info.key))
            keys = list(keys)[: common.BATCH]
            assert len(keys) == common.BATCH, len(keys)

            def update():
                p = rng.random(common.BATCH) + 0.01
                client.mutate_priorities(tp, updates=dict(zip(keys, p.tolist())))

            record(
                kind,
                "update_priorities256",
                {"client.mutate_priorities": common.rate(update, common.BATCH, args.budget)},
            )

    run_kind("small", common.SMALL_CAPACITY)
    run_kind("frames", common.FRAMES_CAPACITY)

    info = client.server_info()
    sizes = {name: t.current_size for name, t in info.items()}
    server.stop()
    common.emit(
        {
            "library": "reverb",
            "versions": {
                "dm-reverb": md.version("dm-reverb"),
                "tensorflow-cpu": md.version("tensorflow-cpu"),
                "numpy": np.__version__,
            },
            "machine": common.machine(),
            "table_sizes": sizes,
            "results": results,
        }
    )


if __name__ == "__main__":
    main()
