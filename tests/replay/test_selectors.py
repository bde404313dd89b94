"""Selectors on their own (bound to slots): order, probabilities, tie-breaks, and the sum tree they build on."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_accelrl.replay import selectors
from lightning_accelrl.replay.sumtree import SumTree


def bound(selector: selectors.Selector, priorities: list[float], capacity: int = 16) -> selectors.Selector:
    """Bind and add items in slots 0..n-1 in order, with recency 0..n-1."""
    sel = selector.bind(capacity)
    n = len(priorities)
    sel.add(np.arange(n), np.array(priorities, dtype=np.float64), np.arange(n))
    return sel


def assert_frequencies(counts: np.ndarray, probs: np.ndarray, draws: int) -> None:
    """Each count within 6 standard deviations of its expectation (never flakes; fixed seeds anyway)."""
    expected = probs * draws
    sd = np.sqrt(draws * probs * (1 - probs)) + 1e-9
    assert np.all(np.abs(counts - expected) <= 6 * sd + 1), (counts, expected)


def test_uniform_picks_every_item_equally_and_reports_one_over_size():
    sel = bound(selectors.Uniform(), [1.0, 5.0, 0.0, 2.0])
    rng = np.random.default_rng(0)
    slots, probs = sel.sample(40_000, rng)
    assert np.all(probs == 0.25)
    assert_frequencies(np.bincount(slots, minlength=4), np.full(4, 0.25), 40_000)
    slot, prob = sel.select(rng)
    assert 0 <= slot < 4 and prob == 0.25
    sel.remove(1)
    slots, probs = sel.sample(3_000, rng)
    assert set(slots.tolist()) == {0, 2, 3} and np.all(probs == pytest.approx(1 / 3))


def test_prioritized_half_exponent_on_1_4_0():
    """The spec's check: Prioritized(0.5) over {1, 4, 0} reports 1/3 and 2/3 and never returns the zero item."""
    sel = bound(selectors.Prioritized(0.5), [1.0, 4.0, 0.0])
    rng = np.random.default_rng(1)
    slots, probs = sel.sample(30_000, rng)
    assert 2 not in set(slots.tolist())
    assert np.allclose(probs[slots == 0], 1 / 3) and np.allclose(probs[slots == 1], 2 / 3)
    assert_frequencies(np.bincount(slots, minlength=3)[:2], np.array([1 / 3, 2 / 3]), 30_000)
    for _ in range(300):
        slot, prob = sel.select(rng)
        assert slot != 2 and prob == pytest.approx([1 / 3, 2 / 3][slot])


def test_prioritized_zero_exponent_still_never_picks_zero_priority():
    sel = bound(selectors.Prioritized(0.0), [3.0, 0.0, 0.5, 0.0])
    slots, probs = sel.sample(5_000, np.random.default_rng(2))
    assert set(slots.tolist()) == {0, 2}
    assert np.allclose(probs, 0.5)


def test_prioritized_all_zero_is_uniform():
    sel = bound(selectors.Prioritized(0.7), [0.0, 0.0, 0.0, 0.0, 0.0])
    slots, probs = sel.sample(25_000, np.random.default_rng(3))
    assert np.allclose(probs, 0.2)
    assert_frequencies(np.bincount(slots, minlength=5), np.full(5, 0.2), 25_000)
    assert sel.select(np.random.default_rng(3))[1] == pytest.approx(0.2)


def test_prioritized_general_weights_and_updates():
    pri = [0.5, 2.0, 3.0, 1.0, 7.0]
    alpha = 0.6
    sel = bound(selectors.Prioritized(alpha), pri)
    w = np.array(pri) ** alpha
    rng = np.random.default_rng(4)
    slots, probs = sel.sample(50_000, rng)
    assert np.allclose(probs, (w / w.sum())[slots])
    assert_frequencies(np.bincount(slots, minlength=5), w / w.sum(), 50_000)
    sel.update(np.array([4, 0]), np.array([0.0, 9.0]), np.array([5, 6]))
    sel.remove(2)
    w = np.array([9.0, 2.0, 0.0, 1.0, 0.0]) ** alpha
    slots, probs = sel.sample(50_000, rng)
    assert set(slots.tolist()) <= {0, 1, 3}
    assert np.allclose(sel.probabilities(np.array([0, 1, 3])), w[[0, 1, 3]] / w.sum())
    assert_frequencies(np.bincount(slots, minlength=5), w / w.sum(), 50_000)


def test_fifo_and_lifo_order():
    fifo = bound(selectors.Fifo(), [5.0, 1.0, 3.0])
    lifo = bound(selectors.Lifo(), [5.0, 1.0, 3.0])
    rng = np.random.default_rng(0)
    assert fifo.select(rng) == (0, 1.0)
    assert lifo.select(rng) == (2, 1.0)
    fifo.update(np.array([0]), np.array([0.0]), np.array([9]))  # updates do not reorder
    assert fifo.select(rng)[0] == 0
    fifo.remove(0)
    lifo.remove(2)
    assert fifo.select(rng)[0] == 1 and lifo.select(rng)[0] == 1
    fifo.add_one(7, 1.0, 10)
    lifo.add_one(7, 1.0, 10)
    assert fifo.select(rng)[0] == 1 and lifo.select(rng)[0] == 7
    slots, probs = fifo.sample(4, rng)
    assert slots.tolist() == [1, 1, 1, 1] and probs.tolist() == [1.0] * 4
    assert fifo.oldest(2) == [1, 2]


def test_heaps_pick_extremes_and_break_ties_by_least_recent():
    rng = np.random.default_rng(0)
    mx = bound(selectors.MaxHeap(), [2.0, 5.0, 5.0, 1.0])
    mn = bound(selectors.MinHeap(), [2.0, 5.0, 1.0, 1.0])
    assert mx.select(rng) == (1, 1.0)  # 1 and 2 tie at 5: slot 1 was inserted first
    assert mn.select(rng) == (2, 1.0)  # 2 and 3 tie at 1: slot 2 first
    mx.update(np.array([1]), np.array([5.0]), np.array([10]))  # same priority, now most recent
    assert mx.select(rng)[0] == 2
    mn.update(np.array([2]), np.array([1.0]), np.array([10]))
    assert mn.select(rng)[0] == 3
    mx.update(np.array([3]), np.array([9.0]), np.array([11]))  # updates re-order
    assert mx.select(rng)[0] == 3
    mx.remove(3)
    assert mx.select(rng)[0] == 2
    mn.remove(3)
    mn.remove(2)
    assert mn.select(rng)[0] == 0


def test_heap_matches_sorted_reference_under_many_updates():
    rng = np.random.default_rng(5)
    n = 50
    for cls, sign in ((selectors.MinHeap, 1), (selectors.MaxHeap, -1)):
        sel = cls().bind(n)
        pri = rng.integers(0, 5, n).astype(float)
        rec = np.arange(n)
        sel.add(np.arange(n), pri, rec)
        live = set(range(n))
        counter = n
        for step in range(2_000):
            if step % 7 == 0 and len(live) > 1:
                victim = int(rng.choice(sorted(live)))
                sel.remove(victim)
                live.discard(victim)
            slot = int(rng.choice(sorted(live)))
            pri[slot] = float(rng.integers(0, 5))
            rec[slot] = counter
            counter += 1
            sel.update(np.array([slot]), pri[[slot]], rec[[slot]])
            expected = min(live, key=lambda s: (sign * pri[s], rec[s]))
            assert sel.select(rng)[0] == expected
        assert len(sel._heap) <= 2 * len(live) + 65  # lazy entries are compacted


def test_selectors_bind_fresh_copies_and_round_trip_config():
    proto = selectors.Prioritized(0.3)
    a, b = proto.bind(4), proto.bind(4)
    a.add(np.array([0]), np.array([1.0]), np.array([0]))
    assert b._members.n == 0
    for sel in (
        selectors.Uniform(),
        proto,
        selectors.Fifo(),
        selectors.Lifo(),
        selectors.MaxHeap(),
        selectors.MinHeap(),
    ):
        assert selectors.from_config(sel.config()) == sel
    with pytest.raises(ValueError):
        selectors.Prioritized(-0.1)
    with pytest.raises(ValueError):
        selectors.from_config({"type": "Nope"})


def test_removal_keeps_uniform_members_dense():
    sel = bound(selectors.Uniform(), [1.0] * 6)
    for slot in (0, 5, 3):
        sel.remove(slot)
    slots, _ = sel.sample(3_000, np.random.default_rng(6))
    assert set(slots.tolist()) == {1, 2, 4}
    sel.clear()
    sel.add(np.array([3]), np.array([1.0]), np.array([0]))
    assert set(sel.sample(10, np.random.default_rng(0))[0].tolist()) == {3}


weights_st = st.floats(0.0, 100.0).map(lambda v: 0.0 if v < 1e-6 else v)  # no subnormal totals


@settings(max_examples=60, deadline=None)
@given(
    weights=st.lists(weights_st, min_size=1, max_size=70),
    updates=st.lists(st.tuples(st.integers(0, 69), weights_st), max_size=30),
)
def test_sumtree_matches_brute_force(weights, updates):
    n = len(weights)
    tree = SumTree(n)
    w = np.array(weights)
    tree.set(np.arange(n), w)
    for leaf, value in updates:
        if leaf < n:
            tree.set(np.array([leaf]), np.array([value]))  # scalar path
            w[leaf] = value
    batch = [(i, v) for i, v in dict(updates).items() if i < n]
    if batch:
        leaves = np.array([i for i, _ in batch])
        tree.set(leaves, np.array([v for _, v in batch]) * 0.5)  # vectorised path
        w[leaves] = np.array([v for _, v in batch]) * 0.5
    assert tree.total == pytest.approx(w.sum(), rel=1e-12, abs=1e-12)
    if w.sum() > 0:
        cum = np.cumsum(w)
        targets = np.linspace(0, w.sum(), 50, endpoint=False)
        found = tree.find(targets)
        assert np.all(w[found] > 0)
        expected = np.searchsorted(cum, targets, side="right")
        # Equal up to rounding at interval boundaries, where either neighbour is acceptable only if positive.
        mismatch = found != expected
        assert np.all(np.abs(cum[expected[mismatch]] - targets[mismatch]) < 1e-9 * max(1.0, w.sum()))
        assert all(w[tree.find_one(float(t))] > 0 for t in targets[:10])
