"""The per-item and bulk fast paths give the same results as the general (batched, one-by-one) paths."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_frames import FakeStackEnv  # tests/replay is on sys.path (rootdir-relative imports)

from lightning_accelrl.replay import FrameStackStorage, StreamIndexer, Table
from lightning_accelrl.replay.nstep import NStepWriter
from lightning_accelrl.replay.rate_limiters import MinSize
from lightning_accelrl.replay.selectors import Fifo, MinHeap, Prioritized, Uniform, _Members
from lightning_accelrl.replay.storage import field_leaves


def _live_data(table: Table) -> dict:
    state = table.state_dict()
    keys = state["keys"]
    data = table.storage.read(state["slots"]) if len(keys) else None
    return {"keys": keys.tolist(), "data": data}


def _assert_same(a: Table, b: Table) -> None:
    da, db = _live_data(a), _live_data(b)
    assert da["keys"] == db["keys"]
    for key in da["data"].keys(True, True):
        assert torch.equal(da["data"][key], db["data"][key]), key


@pytest.mark.parametrize("remover", [Fifo(), MinHeap()])
@pytest.mark.parametrize("sampler", [Uniform(), Prioritized(0.7)])
def test_single_items_as_batches_of_one(make_items, sampler, remover) -> None:
    one = Table("one", sampler, remover, 10, MinSize(1), seed=3)
    batch = Table("batch", sampler, remover, 10, MinSize(1), seed=3)
    items = make_items(40)
    prios = np.random.default_rng(0).random(40) + 0.1
    for i in range(40):
        k1 = one.insert(items[i], priority=float(prios[i]))
        k2 = batch.insert(items[i : i + 1], priority=float(prios[i]))
        assert k1.tolist() == k2.tolist() == [i]
        assert k1.dtype == torch.int64
    _assert_same(one, batch)
    s1, s2 = one.sample(64), batch.sample(64)
    for key in s1.keys(True, True):
        assert torch.equal(s1[key], s2[key]), key
    assert one.info()["deletes"] == batch.info()["deletes"] == 30


def test_single_item_field_errors_and_priorities(make_items) -> None:
    table = Table("t", Uniform(), Fifo(), 4, MinSize(1))
    table.insert(make_items(1)[0])
    bad = make_items(1)[0]
    bad["x"] = bad["x"].double()
    with pytest.raises(ValueError, match="dtype"):
        table.insert(bad)
    with pytest.raises(ValueError, match="priorities"):
        table.insert(make_items(1)[0], priority=-1.0)
    with pytest.raises(ValueError, match="got 2 priorities"):
        table.insert(make_items(1)[0], priority=[1.0, 2.0])
    table.insert(make_items(1)[0], priority=torch.tensor(2.0))
    table.insert(make_items(1)[0], priority=3)
    assert len(table) == 3
    assert sorted(table.sample(32)["priority"].unique().tolist()) == [1.0, 2.0, 3.0]


def test_single_item_needing_grad_and_shared(make_items) -> None:
    table = Table("t", Uniform(), Fifo(), 4, MinSize(1))
    table.insert(make_items(1)[0])
    table.share_memory_()  # buffers move: the numpy views must follow
    item = make_items(1, start=7)[0]
    item["obs"] = item["obs"].requires_grad_()
    table.insert(item)
    table.insert(make_items(1, start=8)[0])
    got = table.storage.read(torch.arange(3))
    assert got["x"].tolist() == [0.0, 7.0, 8.0]
    assert got["obs"][:, 0].tolist() == [0.0, 7.0, 8.0]
    assert got["next", "obs"][:, 0].tolist() == [1.0, 8.0, 9.0]


@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("padding", ["zero", "reset"])
def test_frame_items_one_by_one_as_batches(n: int, padding: str) -> None:
    """Single frame items (per-item path) and the same items in batches of one (vectorised path) make equal
    tables, with evictions (the per-slot release path) and a small frame pool."""
    env = FakeStackEnv(3, padding=padding, seed=5)
    indexer, writer = StreamIndexer(3, 4), NStepWriter(n, 0.9, 3)
    tables = [
        Table(
            "a", Uniform(), Fifo(), 30, MinSize(1), storage=FrameStackStorage(30, 30 + 120, check_writes=True)
        ),
        Table("b", Uniform(), Fifo(), 30, MinSize(1), storage=FrameStackStorage(30, 30 + 120)),
    ]
    for t in range(120):
        out = writer.add(indexer(env.step()))
        if out is None:
            continue
        for i in range(out.batch_size[0]):
            tables[0].insert(out[i])
            tables[1].insert(out[i : i + 1])
        if t % 20 == 19:
            _assert_same(*tables)
    _assert_same(*tables)
    a, b = (tb.storage for tb in tables)
    assert a.num_frames == b.num_frames
    assert torch.equal(a._refcount, b._refcount)
    assert torch.equal(a._free, b._free) and torch.equal(a._free_ptr, b._free_ptr)
    for tb in tables:
        tb.reset()
        assert tb.storage.num_frames == 0


def test_frame_single_item_errors() -> None:
    env = FakeStackEnv(1, seed=1)
    indexer = StreamIndexer(1, 4)
    table = Table("f", Uniform(), Fifo(), 8, MinSize(1), storage=FrameStackStorage(8, 20, check_writes=True))
    items = [indexer(env.step()) for _ in range(4)]
    table.insert(items[0][0])
    bad = items[1][0].clone()
    bad["next", "step"] = bad["step"]
    with pytest.raises(ValueError, match="greater"):
        table.storage.write_item(5, bad, field_leaves(bad))
    wrong = items[1][0].clone()
    wrong["step"] = wrong["step"] - 1  # claims frames the pool holds with other pixels
    wrong["next", "step"] = wrong["next", "step"] - 1
    with pytest.raises(ValueError, match="numbering"):
        table.insert(wrong)


def test_members_remove_many_matches_a_set() -> None:
    rng = np.random.default_rng(0)
    m = _Members(200)
    live: set[int] = set()
    free = list(range(200))
    for _ in range(300):
        add = [free.pop(rng.integers(len(free))) for _ in range(rng.integers(0, min(30, len(free)) + 1))]
        if add:
            m.add(np.array(add, dtype=np.int64))
            live.update(add)
        if live:
            gone = rng.choice(sorted(live), size=rng.integers(0, len(live) + 1), replace=False)
            m.remove_many(np.asarray(gone, dtype=np.int64))
            live.difference_update(gone.tolist())
            free.extend(gone.tolist())
        assert m.n == len(live)
        assert set(m.items[: m.n].tolist()) == live
        assert all(m.pos[s] == i for i, s in enumerate(m.items[: m.n].tolist()))
        assert (m.pos >= 0).sum() == len(live)


@pytest.mark.parametrize("sampler", [Uniform(), Prioritized(1.0)])
def test_bulk_eviction_and_delete_keep_selectors_consistent(make_items, sampler) -> None:
    table = Table("t", sampler, Fifo(), 100, MinSize(1), seed=0)
    for start in range(0, 1050, 70):  # 15 batches: keys 0 .. 1049
        table.insert(make_items(70, start=start))
    assert len(table) == 100
    live = set(range(950, 1050))
    assert table.delete(torch.tensor(list(range(960, 1000)) + [3])) == 40
    live -= set(range(960, 1000))
    keys = set(table.sample(4000)["key"].tolist())
    assert keys == live
    assert int(table.sample(8)["table_size"][0]) == 60


def test_times_sampled_with_and_without_repeats(make_items) -> None:
    table = Table("t", Uniform(), Fifo(), 3, MinSize(1), seed=0)
    table.insert(make_items(3))
    seen = {0: 0, 1: 0, 2: 0}
    for _ in range(20):
        s = table.sample(5)  # always repeats
        for key, count in zip(s["key"].tolist(), s["times_sampled"].tolist()):
            seen[key] += 1
            assert count == seen[key]
    big = Table("b", Uniform(), Fifo(), 100_000, MinSize(1), seed=0)
    big.insert(make_items(100_000))
    s = big.sample(16)  # almost surely distinct
    assert s["times_sampled"].tolist() == [1] * 16
    s2 = big.sample(100_000)
    assert int(s2["times_sampled"].max()) >= 2


@pytest.mark.parametrize("capacity", [3, 2048, 2049, 5000, 70_000])
def test_sumtree_deep_trees_match_brute_force(capacity: int) -> None:
    """Trees deeper than the levels find() skips with one searchsorted (and set() recomputes by slices)."""
    from lightning_accelrl.replay.sumtree import SumTree

    rng = np.random.default_rng(capacity)
    tree = SumTree(capacity)
    w = rng.random(capacity) * (rng.random(capacity) > 0.3)
    tree.set(np.arange(capacity), w)
    for _ in range(5):
        k = int(rng.integers(3, min(capacity, 300) + 1))
        leaves = rng.choice(capacity, k, replace=False)
        w[leaves] = rng.random(k) * (rng.random(k) > 0.3)
        tree.set(leaves, w[leaves])
        tree.set_one(int(leaves[0]), 0.5)
        w[leaves[0]] = 0.5
    assert tree.total == pytest.approx(w.sum(), rel=1e-12)
    targets = rng.random(2000) * w.sum()
    found = tree.find(targets)
    assert np.all(w[found] > 0)
    expected = np.searchsorted(np.cumsum(w), targets, side="right")
    mismatch = found != expected
    assert mismatch.mean() < 0.01  # only at interval boundaries, by rounding
    assert all(w[tree.find_one(float(t))] > 0 for t in targets[:20])
