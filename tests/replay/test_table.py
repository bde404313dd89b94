"""Table semantics as docs/replay.md states them (non-blocking parts; see test_table_blocking.py for waits)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tensordict import TensorDict

from lightning_accelrl.replay import Table, rate_limiters, selectors
from lightning_accelrl.replay.table import SAMPLE_INFO_KEYS


def xs(batch: TensorDict) -> list[int]:
    return batch["x"].long().tolist()


def table(sampler=None, remover=None, max_size=10, limiter=None, **kw) -> Table:
    return Table(
        "t",
        sampler or selectors.Fifo(),
        remover or selectors.Fifo(),
        max_size,
        limiter or rate_limiters.MinSize(1),
        **kw,
    )


# -- construction ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw", [{"name": ""}, {"max_size": 0}, {"max_size": -3}])
def test_invalid_table_configuration(kw):
    args = {"name": "t", "max_size": 5} | kw
    with pytest.raises(ValueError):
        Table(args["name"], selectors.Uniform(), selectors.Fifo(), args["max_size"], rate_limiters.MinSize(1))


def test_min_size_above_max_size_warns():
    with pytest.warns(UserWarning, match="never start"):
        table(max_size=3, limiter=rate_limiters.MinSize(4))


def test_queue_and_stack_constructors():
    q, s = Table.queue("q", 4), Table.stack("s", 4)
    assert (q.sampler, q.remover, q.max_times_sampled) == (selectors.Fifo(), selectors.Fifo(), 1)
    assert (s.sampler, s.remover, s.max_times_sampled) == (selectors.Lifo(), selectors.Lifo(), 1)
    assert isinstance(q.rate_limiter, rate_limiters.Queue) and q.rate_limiter.max_diff == 4
    assert isinstance(s.rate_limiter, rate_limiters.Stack) and s.rate_limiter.max_diff == 4
    assert table(max_times_sampled=0).max_times_sampled == 0
    assert table(max_times_sampled=-2).max_times_sampled == 0


def test_limiter_object_is_copied_per_table(make_items):
    lim = rate_limiters.MinSize(1)
    a, b = table(limiter=lim), table(limiter=lim)
    a.insert(make_items(3))
    assert (a.info()["inserts"], b.info()["inserts"], lim.inserts) == (3, 0, 0)


# -- insert and sample ----------------------------------------------------------------------------------------
def test_insert_returns_unique_increasing_int64_keys(make_items):
    t = table()
    k1 = t.insert(make_items(3))
    k2 = t.insert(make_items(1, 3)[0])  # a single item without batch dimension
    assert k1.dtype == torch.int64 and k1.tolist() == [0, 1, 2] and k2.tolist() == [3]
    assert len(t) == t.size == 4
    assert t.insert(make_items(0)).tolist() == []


def test_sample_fields_and_dtypes(make_items):
    t = table(selectors.Uniform(), max_size=5, seed=0)
    t.insert(make_items(4), priority=torch.tensor([1.0, 2.0, 3.0, 4.0]))
    batch = t.sample(8)
    assert batch.batch_size == torch.Size([8])
    assert set(SAMPLE_INFO_KEYS) <= set(batch.keys())
    assert batch["key"].dtype == torch.int64 and batch["times_sampled"].dtype == torch.int64
    assert batch["priority"].dtype == torch.float64 and batch["probability"].dtype == torch.float64
    assert batch["table_size"].tolist() == [4] * 8
    assert torch.equal(batch["priority"], batch["x"].double() + 1)
    assert torch.equal(batch["key"], batch["x"].long())
    assert torch.allclose(batch["probability"], torch.full((8,), 0.25, dtype=torch.float64))
    assert torch.equal(batch["obs"], batch["x"][:, None].expand(8, 3))
    assert torch.equal(batch["next", "obs"], batch["x"][:, None].expand(8, 3) + 1)


def test_times_sampled_counts_each_pick_in_order(make_items):
    t = table(selectors.Fifo())
    t.insert(make_items(2))
    assert t.sample(3)["times_sampled"].tolist() == [1, 2, 3]
    assert t.sample(1)["times_sampled"].tolist() == [4]
    u = table(selectors.Uniform(), seed=3)
    u.insert(make_items(2))
    batch = u.sample(50)
    for item in (0, 1):
        counts = batch["times_sampled"][batch["x"] == item].tolist()
        assert counts == list(range(1, len(counts) + 1))


def test_samples_are_copies_not_views(make_items):
    t = table(selectors.Fifo(), selectors.Fifo(), max_size=1)
    t.insert(make_items(1))
    batch = t.sample(1)
    t.insert(make_items(1, 7))  # evicts item 0, reuses its slot
    assert xs(batch) == [0] and xs(t.sample(1)) == [7]


def test_probabilities_reported(make_items):
    for sel, expected in ((selectors.Fifo(), 1.0), (selectors.Lifo(), 1.0), (selectors.MaxHeap(), 1.0)):
        t = table(sel)
        t.insert(make_items(3))
        assert t.sample(2)["probability"].tolist() == [expected] * 2
    t = table(selectors.Prioritized(0.5), seed=0)
    t.insert(make_items(3), priority=[1.0, 4.0, 0.0])
    batch = t.sample(2000)
    assert 2 not in xs(batch)
    probs = dict(zip(xs(batch), batch["probability"].tolist()))
    assert probs == pytest.approx({0: 1 / 3, 1: 2 / 3})
    assert 500 < xs(batch).count(0) < 830  # expected 667


def test_selector_orders_through_the_table(make_items):
    cases = {
        selectors.Fifo(): 0,
        selectors.Lifo(): 3,
        selectors.MaxHeap(): 1,  # priorities 2, 5, 5, 1: tie at 5 goes to the earlier insert
        selectors.MinHeap(): 3,
    }
    for sel, first in cases.items():
        t = table(sel, max_times_sampled=1)
        t.insert(make_items(4), priority=[2.0, 5.0, 5.0, 1.0])
        assert xs(t.sample(1)) == [first], sel


# -- eviction --------------------------------------------------------------------------------------------------
def evict_one(remover, priorities, new_priority, batch=False):
    t = table(selectors.Uniform(), remover, max_size=3, seed=0)
    t.insert(make(3), priority=priorities)
    t.insert(make(1, 3), priority=new_priority)
    assert len(t) == 3 and t.info()["deletes"] == 1 and t.info()["inserts"] == 4
    return sorted(set(range(4)) - set(xs(t.sample(400))))


def make(n, start=0):
    x = torch.arange(start, start + n, dtype=torch.float32)
    return TensorDict({"x": x}, [n])


def test_eviction_by_each_remover():
    assert evict_one(selectors.Fifo(), [1.0, 2.0, 3.0], 1.0) == [0]
    assert evict_one(selectors.Lifo(), [1.0, 2.0, 3.0], 1.0) == [3]  # the newest is the one just inserted
    assert evict_one(selectors.MaxHeap(), [1.0, 5.0, 3.0], 2.0) == [1]
    assert evict_one(selectors.MinHeap(), [1.0, 5.0, 3.0], 2.0) == [0]
    assert evict_one(selectors.MinHeap(), [4.0, 5.0, 3.0], 2.0) == [3]  # the new item has the lowest priority
    assert evict_one(selectors.MinHeap(), [4.0, 2.0, 3.0], 2.0) == [1]  # tie: the older item goes


def test_random_removers_evict_by_their_distribution():
    evicted = {"Uniform": np.zeros(4), "Prioritized": np.zeros(4)}
    for trial in range(400):
        for name, remover in (("Uniform", selectors.Uniform()), ("Prioritized", selectors.Prioritized(1.0))):
            t = table(selectors.Fifo(), remover, max_size=3, seed=trial)
            t.insert(make(3), priority=[1.0, 1.0, 0.0])
            t.insert(make(1, 3), priority=2.0)
            live = set(xs(t.sample(3, timeout=0))) | {int(x) for x in t.state_dict()["keys"]}
            (gone,) = set(range(4)) - live
            evicted[name][gone] += 1
    assert np.all(evicted["Uniform"] > 60)  # expected 100 each
    assert evicted["Prioritized"][2] == 0  # weight 0 is never picked
    # weights 1, 1, 0, 2 (the new item included): expected 100, 100, 0, 200 evictions
    assert 150 < evicted["Prioritized"][3] < 250
    assert 60 < evicted["Prioritized"][0] < 140 and 60 < evicted["Prioritized"][1] < 140


@pytest.mark.parametrize(
    "remover",
    [selectors.Fifo(), selectors.Lifo(), selectors.MaxHeap(), selectors.MinHeap()],
    ids=lambda s: type(s).__name__,
)
@pytest.mark.parametrize("sizes", [[7], [2, 5], [1] * 7, [4, 3]])
def test_batch_insert_equals_item_by_item(remover, sizes):
    """Eviction inside a batch (including items evicted by later items of the same batch) matches singles."""
    priorities = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0]
    single = table(selectors.Fifo(), remover, max_size=3)
    for i in range(7):
        single.insert(make(1, i), priority=priorities[i])
    batched = table(selectors.Fifo(), remover, max_size=3)
    start = 0
    for size in sizes:
        batched.insert(make(size, start), priority=priorities[start : start + size])
        start += size
    assert xs(single.sample(3, timeout=0)) == xs(batched.sample(3, timeout=0))
    s, b = single.state_dict(), batched.state_dict()
    assert s["keys"].tolist() == b["keys"].tolist()
    assert s["priorities"].tolist() == b["priorities"].tolist()
    assert single.info()["deletes"] == batched.info()["deletes"] == 4


# -- max_times_sampled -----------------------------------------------------------------------------------------
def test_fifo_max_times_sampled_two_one_at_a_time():
    t = table(selectors.Fifo(), max_times_sampled=2)
    t.insert(make(2))  # A = 0, B = 1
    got = [xs(t.sample(1))[0] for _ in range(4)]
    assert got == [0, 0, 1, 1] and len(t) == 0
    assert t.info()["deletes"] == 2
    with pytest.raises(TimeoutError):
        t.sample(1, timeout=0)


def test_fifo_max_times_sampled_two_in_one_sample():
    t = table(selectors.Fifo(), max_times_sampled=2)
    t.insert(make(2))
    batch = t.sample(4)
    assert xs(batch) == [0, 0, 1, 1]
    assert batch["times_sampled"].tolist() == [1, 2, 1, 2]
    assert batch["table_size"].tolist() == [2, 2, 1, 1]
    assert len(t) == 0 and t.info()["deletes"] == 2 and t.info()["samples"] == 4


def test_max_times_sampled_limits_supply():
    t = table(selectors.Uniform(), max_times_sampled=1, seed=0)
    t.insert(make(3))
    with pytest.raises(TimeoutError):
        t.sample(4, timeout=0)  # only 3 samples available: nothing is taken
    assert len(t) == 3 and t.info()["samples"] == 0
    assert sorted(xs(t.sample(3))) == [0, 1, 2] and len(t) == 0
    with pytest.raises(ValueError, match="never"):
        t.sample(11)  # more than max_size * max_times_sampled


# -- priorities, deletes, reset --------------------------------------------------------------------------------
def test_update_priorities_reaches_sampler_and_remover():
    t = table(selectors.MaxHeap(), selectors.MinHeap(), max_size=3)
    keys = t.insert(make(3), priority=[1.0, 2.0, 3.0])
    t.update_priorities(keys[[0, 2]], torch.tensor([10.0, 0.5]))
    assert xs(t.sample(1)) == [0]
    t.insert(make(1, 3), priority=1.0)  # the remover (MinHeap) now evicts item 2 (0.5)
    remaining = set(t.state_dict()["keys"].tolist())
    assert remaining == {0, 1, 3}
    assert t.info()["inserts"] == 4  # updates never touch the limiter


def test_update_priorities_ignores_unknown_keys_and_last_duplicate_wins():
    t = table(selectors.Uniform())
    keys = t.insert(make(2))
    t.update_priorities([keys[0].item(), 999, keys[0].item()], [5.0, 7.0, 6.0])
    assert t.state_dict()["priorities"].tolist() == [6.0, 1.0]
    t.update_priorities(torch.tensor([12345]), torch.tensor([3.0]))


def priorities_by_key(t: Table) -> dict[int, float]:
    state = t.state_dict()
    return dict(zip(state["keys"].tolist(), state["priorities"].tolist()))


@pytest.mark.parametrize("one", [False, True])
def test_insert_without_priority_takes_the_largest_given_so_far(one):
    t = table(selectors.Prioritized(0.6), selectors.Fifo(), max_size=20)
    # the one-item path (no batch dimension) and the batch path
    item = (lambda x: make(1, x)[0]) if one else (lambda x: make(1, x))
    t.insert(make(2))  # none given yet: 1.0
    t.update_priorities([0], [3.5])
    t.insert(item(2))
    t.insert(make(1, 3), priority=7.0)  # an explicit priority counts too
    t.update_priorities([0, 1], [0.1, 0.2])  # lower priorities never lower the largest so far
    t.insert(item(4))
    assert priorities_by_key(t) == {0: 0.1, 1: 0.2, 2: 3.5, 3: 7.0, 4: 7.0}
    t.reset()
    t.insert(item(5))
    assert priorities_by_key(t) == {5: 1.0}


def test_largest_priority_survives_a_round_trip_and_old_states_use_the_items():
    t = table(selectors.Prioritized(0.6), selectors.Fifo(), max_size=20)
    t.insert(make(2), priority=[2.0, 9.0])
    t.update_priorities([1], [0.5])  # the largest given (9.0) is no longer held by any item
    state = t.state_dict()
    restored = table(selectors.Prioritized(0.6), selectors.Fifo(), max_size=20)
    restored.load_state_dict(state)
    restored.insert(make(1, 2))
    assert priorities_by_key(restored)[2] == 9.0
    del state["top_priority"]  # a state saved before the running largest priority was kept
    restored.load_state_dict(state)
    restored.insert(make(1, 2))
    assert priorities_by_key(restored)[2] == 2.0  # the state rewinds the keys: key 2 again


@pytest.mark.parametrize("bad", [-1.0, float("nan")])
def test_bad_priorities_raise_and_change_nothing(bad):
    t = table(selectors.Prioritized(1.0), seed=0)
    keys = t.insert(make(2), priority=[1.0, 2.0])
    before = t.state_dict()
    with pytest.raises(ValueError):
        t.update_priorities(keys, [3.0, bad])
    with pytest.raises(ValueError):
        t.insert(make(2, 2), priority=[1.0, bad])
    with pytest.raises(ValueError):
        t.insert(make(1, 2), priority=bad)
    after = t.state_dict()
    assert after["priorities"].tolist() == before["priorities"].tolist() == [1.0, 2.0]
    assert after["rate_limiter"] == before["rate_limiter"] and after["next_key"] == before["next_key"]
    with pytest.raises(ValueError):
        t.insert(make(1, 2), priority=float("inf"))  # a sum tree cannot hold an infinite weight
    mh = table(selectors.MaxHeap())
    mh.insert(make(2), priority=[1.0, float("inf")])  # heaps can
    assert xs(mh.sample(1)) == [1]


def test_delete_ignores_unknown_keys_and_counts_deletes():
    t = table(selectors.Fifo())
    keys = t.insert(make(4))
    assert t.delete([keys[1].item(), 77, keys[1].item()]) == 1
    assert t.delete(torch.tensor([])) == 0
    assert len(t) == 3 and t.info()["deletes"] == 1
    assert xs(t.sample(1)) == [0]
    t.delete(keys[0])
    assert xs(t.sample(1)) == [2]


def test_delete_frees_room_for_inserts():
    t = table(selectors.Fifo(), max_size=2, limiter=rate_limiters.MinSize(1))
    t.insert(make(2))
    t.delete([0])
    t.insert(make(1, 2))
    assert len(t) == 2 and t.info()["deletes"] == 1  # no eviction was needed


def test_reset_clears_items_and_counters_but_not_keys():
    t = table(selectors.Uniform(), limiter=rate_limiters.SampleToInsertRatio(1, 2, 5))
    t.insert(make(3))
    t.sample(2)
    t.reset()
    info = t.info()
    assert len(t) == 0 and (info["inserts"], info["samples"], info["deletes"]) == (0, 0, 0)
    with pytest.raises(TimeoutError):
        t.sample(1, timeout=0)  # below min_size again
    assert t.insert(make(2)).tolist() == [3, 4]
    assert t.info()["rate_limiter"]["inserts"] == 2


def test_info_reports_limiter_state():
    t = table(selectors.Uniform(), limiter=rate_limiters.SampleToInsertRatio(2, 4, 3))
    t.insert(make(5))
    info = t.info()
    assert info["size"] == 5 and info["max_size"] == 10
    lim = info["rate_limiter"]
    assert (lim["inserts"], lim["samples"], lim["deletes"]) == (5, 0, 0)
    assert (lim["min_diff"], lim["max_diff"], lim["samples_per_insert"]) == (5.0, 11.0, 2.0)
    assert info["insert_blocked_s"] == 0.0 and info["sample_blocked_s"] == 0.0


# -- fields and storage -----------------------------------------------------------------------------------------
def test_fields_must_match_the_first_insert(make_items):
    t = table()
    t.insert(make_items(2))
    good = make_items(1, 2)
    wrong = [
        good.exclude("x"),
        good.set("extra", torch.zeros(1)),
        good.clone().set("x", torch.zeros(1, dtype=torch.float64)),
        good.clone().set("obs", torch.zeros(1, 4)),
        good.clone().set(("next", "obs"), torch.zeros(1, 3, dtype=torch.int64)),
    ]
    for items in wrong:
        with pytest.raises(ValueError, match="fields"):
            t.insert(items)
    assert len(t) == 2 and t.info()["inserts"] == 2
    reordered = TensorDict({"next": good["next"], "obs": good["obs"], "x": good["x"]}, [1])
    t.insert(reordered)
    assert len(t) == 3


@pytest.mark.parametrize("name", SAMPLE_INFO_KEYS)
def test_item_fields_may_not_use_sample_info_names(name):
    with pytest.raises(ValueError, match="clash"):
        table().insert(TensorDict({name: torch.zeros(2)}, [2]))


def test_priority_count_must_match_items():
    with pytest.raises(ValueError):
        table().insert(make(3), priority=[1.0, 2.0])


def test_shared_table_puts_storage_in_shared_memory(make_items):
    t = table(selectors.Uniform(), shared=True)
    t.insert(make_items(3))
    assert all(buf.is_shared() for buf in t.storage._buffers)
    u = table(selectors.Uniform())
    u.insert(make_items(3))
    assert not any(buf.is_shared() for buf in u.storage._buffers)
    u.share_memory_()
    assert all(buf.is_shared() for buf in u.storage._buffers)
    assert xs(u.sample(5)) != []


# -- admission with timeout=0 against a reference model (property test) ----------------------------------------
class Model:
    """The spec's formulas plus table size and max_times_sampled supply, as plain integers."""

    def __init__(self, lim, max_size, mts):
        self.spi, self.min_size = lim.samples_per_insert, lim.min_size_to_sample
        self.min_diff, self.max_diff = lim.min_diff, lim.max_diff
        self.max_size, self.mts = max_size, mts
        self.ins = self.smp = self.dels = 0  # the spec's I, S, D
        self.remaining: list[int] = []  # per item, in insertion order (Fifo sampler and remover)

    def can_insert(self):
        if self.ins + 1 - self.dels <= self.min_size:
            return True
        return (self.ins + 1) * self.spi - self.smp <= self.max_diff

    def insert(self, n):
        done = 0
        while done < n and self.can_insert():
            self.ins += 1
            self.remaining.append(self.mts or 10**9)
            if len(self.remaining) > self.max_size:
                self.remaining.pop(0)
                self.dels += 1
            done += 1
        return done

    def sample(self, n):
        if self.ins - self.dels < self.min_size or self.ins * self.spi - self.smp - n < self.min_diff:
            return False
        if sum(self.remaining) < n or not self.remaining:
            return False
        self.smp += n
        for _ in range(n):
            self.remaining[0] -= 1
            if self.remaining[0] == 0:
                self.remaining.pop(0)
                self.dels += 1
        return True

    def delete_oldest(self):
        if self.remaining:
            self.remaining.pop(0)
            self.dels += 1


ops = st.lists(
    st.one_of(
        st.tuples(st.just("insert"), st.integers(1, 6)),
        st.tuples(st.just("sample"), st.integers(1, 4)),
        st.tuples(st.just("delete"), st.just(1)),
    ),
    min_size=1,
    max_size=40,
)
limiters = st.one_of(
    st.builds(rate_limiters.MinSize, st.integers(1, 4)),
    st.builds(rate_limiters.Queue, st.integers(4, 6)),
    st.builds(
        rate_limiters.SampleToInsertRatio,
        st.sampled_from([0.5, 1.0, 2.0, 3.0]),
        st.integers(1, 4),
        st.sampled_from([6.0, 8.0, 12.0]),
    ),
)


@pytest.mark.filterwarnings("ignore:.*sampling can never start")
@settings(max_examples=120, deadline=None)
@given(limiter=limiters, max_size=st.integers(1, 8), mts=st.sampled_from([0, 1, 2]), program=ops)
def test_admission_matches_reference_model(limiter, max_size, mts, program):
    t = table(selectors.Fifo(), selectors.Fifo(), max_size=max_size, limiter=limiter, max_times_sampled=mts)
    model = Model(limiter, max_size, mts)
    next_x = 0
    for op, n in program:
        if op == "insert":
            expected = model.insert(n)
            try:
                keys = t.insert(make(n, next_x), timeout=0)
                assert expected == n
                assert len(keys) == n
            except TimeoutError as err:
                assert err.num_inserted == expected < n
                assert f"{expected} of {n}" in str(err)
            next_x += n
        elif op == "sample":
            if n > limiter.max_diff - limiter.min_diff or (mts and n > max_size * mts):
                with pytest.raises(ValueError):
                    t.sample(n, timeout=0)
                continue
            expected = model.sample(n)
            try:
                t.sample(n, timeout=0)
                assert expected
            except TimeoutError:
                assert not expected
        else:
            model.delete_oldest()
            keys = t.state_dict()["keys"]
            t.delete(keys[:1])
        info = t.info()
        assert (info["inserts"], info["samples"], info["deletes"]) == (model.ins, model.smp, model.dels)
        assert len(t) == len(model.remaining) == model.ins - model.dels
