"""Rate limiters: Reverb's admission formulas, the band of each limiter, and validation at construction."""

from __future__ import annotations

import math
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_accelrl.replay.rate_limiters import MinSize, Queue, RateLimiter, SampleToInsertRatio, Stack


def ref_can_insert(ins, smp, dels, n, spi, min_size, min_diff, max_diff):
    """The spec's can_insert, with I, S, D spelled ins, smp, dels."""
    if ins + n - dels <= min_size:
        return True
    return (ins + n) * spi - smp <= max_diff


def ref_can_sample(ins, smp, dels, n, spi, min_size, min_diff, max_diff):
    if ins - dels < min_size:
        return False
    return ins * spi - smp - n >= min_diff


def test_bands_of_each_limiter():
    assert (MinSize(3).samples_per_insert, MinSize(3).min_size_to_sample) == (1.0, 3)
    assert (MinSize(3).min_diff, MinSize(3).max_diff) == (-math.inf, math.inf)
    r = SampleToInsertRatio(2, 4, 3)
    assert (r.samples_per_insert, r.min_size_to_sample, r.min_diff, r.max_diff) == (2.0, 4, 5.0, 11.0)
    r = SampleToInsertRatio(2, 4, (6.0, 20.0))
    assert (r.min_diff, r.max_diff) == (6.0, 20.0)
    for cls in (Queue, Stack):
        q = cls(5)
        assert (q.samples_per_insert, q.min_size_to_sample, q.min_diff, q.max_diff) == (1.0, 1, 0.0, 5.0)


@pytest.mark.parametrize(
    "make",
    [
        lambda: MinSize(0),
        lambda: SampleToInsertRatio(0, 1, 10),
        lambda: SampleToInsertRatio(-1, 1, 10),
        lambda: SampleToInsertRatio(1, 0, 10),
        lambda: SampleToInsertRatio(1, 1, 0.5),  # band 1 < 2 * max(1, spi)
        lambda: SampleToInsertRatio(4, 1, 3.9),  # band 7.8 < 8
        lambda: SampleToInsertRatio(1, 10, (11, 20)),  # min_diff > spi * min_size: deadlock
        lambda: SampleToInsertRatio(1, 10, (5, 6)),  # band 1
        lambda: Queue(0),
        lambda: Stack(0),
    ],
)
def test_invalid_configurations_raise_at_construction(make):
    with pytest.raises(ValueError):
        make()


def test_max_diff_below_offset_warns_but_works():
    with pytest.warns(UserWarning, match="concurrently"):
        r = SampleToInsertRatio(1, 10, (0, 5))
    assert (r.min_diff, r.max_diff) == (0.0, 5.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SampleToInsertRatio(1, 10, (0, 10))  # max_diff == offset: no warning
        Queue(1)  # band [0, 1] is by design, not subject to the width check


def test_worked_example_decisions():
    """SampleToInsertRatio(2, 4, 3): inserts 1-5 admitted without samples; sampling from 4 items; 6th blocks."""
    r = SampleToInsertRatio(2, 4, 3)
    for i in range(5):
        assert r.can_insert(1), i
        assert r.can_sample(1) == (i >= 4)
        r.inserts += 1
    assert r.can_sample(1)
    assert not r.can_insert(1)
    r.samples += 1  # one sample frees room for the 6th insert
    assert r.can_insert(1)


limiters = st.one_of(
    st.builds(MinSize, st.integers(1, 5)),
    st.builds(Queue, st.integers(1, 5)),
    st.builds(Stack, st.integers(1, 5)),
    st.builds(
        lambda spi, min_size, e: SampleToInsertRatio(spi, min_size, e),
        st.sampled_from([0.25, 0.5, 1.0, 2.0, 3.0]),
        st.integers(1, 6),
        st.sampled_from([6.0, 8.0, 10.0, 25.0]),
    ),
)


@settings(max_examples=200, deadline=None)
@given(
    limiter=limiters,
    counts=st.tuples(st.integers(0, 40), st.integers(0, 80), st.integers(0, 40)),
    n=st.integers(1, 6),
)
def test_decisions_match_the_reference_formulas(limiter: RateLimiter, counts, n):
    inserts, samples, deletes = counts
    deletes = min(deletes, inserts)
    limiter.inserts, limiter.samples, limiter.deletes = inserts, samples, deletes
    cfg = (limiter.samples_per_insert, limiter.min_size_to_sample, limiter.min_diff, limiter.max_diff)
    assert limiter.can_insert(n) == ref_can_insert(inserts, samples, deletes, n, *cfg)
    assert limiter.can_sample(n) == ref_can_sample(inserts, samples, deletes, n, *cfg)


def test_state_round_trip_and_clone():
    r = SampleToInsertRatio(2, 4, 3)
    r.inserts, r.samples, r.deletes = 7, 9, 1
    back = RateLimiter.from_state(r.state())
    assert type(back) is SampleToInsertRatio
    assert back.state() == r.state()
    fresh = r.clone()
    assert (fresh.inserts, fresh.samples, fresh.deletes) == (0, 0, 0)
    assert fresh.max_diff == r.max_diff
    r.reset()
    assert (r.inserts, r.samples, r.deletes) == (0, 0, 0)
