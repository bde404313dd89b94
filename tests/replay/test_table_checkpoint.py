"""Checkpoints: a restored table behaves as the original; writes are atomic; bad files are a ValueError."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import tempfile

import pytest
import torch
from tensordict import TensorDict

from lightning_accelrl.replay import Table, TableServer, TensorStorage, rate_limiters, selectors


def make(n: int, start: int = 0) -> TensorDict:
    x = torch.arange(start, start + n, dtype=torch.float32)
    return TensorDict({"x": x, "img": {"pix": x[:, None, None].expand(n, 2, 2).to(torch.uint8)}}, [n])


def drain(t: Table, n: int) -> list[float]:
    return [t.sample(1, timeout=0)["x"].item() for _ in range(n)]


def test_round_trip_preserves_order_counts_and_limiter(tmp_path, make_items):
    t = Table(
        "heap", selectors.MaxHeap(), selectors.MinHeap(), 6, rate_limiters.SampleToInsertRatio(2, 2, 40), 3
    )
    keys = t.insert(make(8), priority=[1.0, 3.0, 3.0, 2.0, 5.0, 1.0, 4.0, 3.0], timeout=1)
    t.update_priorities(keys[[1]], [3.0])  # item 1 now the most recent of the priority-3 ties
    t.sample(2)
    t.delete(keys[[6]])
    path = t.checkpoint(tmp_path / "table.ckpt")
    r = Table.restore(path)
    assert r.name == "heap" and r.max_size == 6 and r.max_times_sampled == 3
    assert r.sampler == t.sampler and r.remover == t.remover
    assert r.info()["rate_limiter"] == t.info()["rate_limiter"]
    a, b = t.state_dict(), r.state_dict()
    for key in ("keys", "priorities", "times_sampled", "recency"):
        assert torch.equal(a[key], b[key]), key
    # Same deterministic behaviour afterwards: order (heap ties), eviction, limiter decisions, new keys.
    for table in (t, r):
        table.insert(make(2, 100), priority=[3.0, 0.5], timeout=1)
    assert t.state_dict()["keys"].tolist() == r.state_dict()["keys"].tolist()
    out_t, out_r = [], []
    for table, out in ((t, out_t), (r, out_r)):
        while True:
            try:
                batch = table.sample(1, timeout=0)
            except TimeoutError:
                break
            out.append((batch["x"].item(), batch["times_sampled"].item(), batch["table_size"].item()))
    assert out_t == out_r and out_t
    assert t.info()["rate_limiter"] == r.info()["rate_limiter"]


def test_round_trip_of_fifo_queue_and_field_check(tmp_path):
    t = Table.queue("q", 5)
    t.insert(make(4))
    drain(t, 1)
    r = Table.restore(t.checkpoint(tmp_path / "q.ckpt"))
    assert drain(r, 3) == [1.0, 2.0, 3.0]
    with pytest.raises(ValueError, match="fields"):
        r.insert(TensorDict({"x": torch.zeros(1, dtype=torch.int64)}, [1]))
    r.insert(make(1, 9))
    assert torch.equal(r.sample(1)["img", "pix"], torch.full((1, 2, 2), 9, dtype=torch.uint8))


def test_prioritized_probabilities_survive(tmp_path):
    t = Table("p", selectors.Prioritized(0.5), selectors.Fifo(), 10, rate_limiters.MinSize(1), seed=0)
    t.insert(make(3), priority=[1.0, 4.0, 0.0])
    r = Table.restore(t.checkpoint(tmp_path / "p.ckpt"), seed=1)
    batch = r.sample(500)
    assert 2.0 not in batch["x"].tolist()
    assert dict(zip(batch["x"].tolist(), batch["probability"].tolist())) == pytest.approx(
        {0.0: 1 / 3, 1.0: 2 / 3}
    )


def test_empty_table_round_trip(tmp_path):
    t = Table("e", selectors.Uniform(), selectors.Fifo(), 4, rate_limiters.MinSize(1))
    r = Table.restore(t.checkpoint(tmp_path / "e.ckpt"))
    assert len(r) == 0
    r.insert(make(2))
    assert len(r) == 2


def test_state_dict_load_into_a_matching_table():
    t = Table("a", selectors.Fifo(), selectors.Fifo(), 4, rate_limiters.MinSize(1))
    t.insert(make(3))
    u = Table("a", selectors.Fifo(), selectors.Fifo(), 4, rate_limiters.MinSize(1))
    u.load_state_dict(t.state_dict())
    assert drain(u, 1) == [0.0] and u.insert(make(1)).tolist() == [3]
    other = Table("a", selectors.Lifo(), selectors.Fifo(), 4, rate_limiters.MinSize(1))
    with pytest.raises(ValueError, match="configuration"):
        other.load_state_dict(t.state_dict())
    limited = Table("a", selectors.Fifo(), selectors.Fifo(), 4, rate_limiters.MinSize(2))
    with pytest.raises(ValueError, match="rate limiter"):
        limited.load_state_dict(t.state_dict())
    assert len(limited) == 0


def test_missing_truncated_and_corrupt_files_raise_value_error_naming_the_path(tmp_path):
    t = Table("c", selectors.Uniform(), selectors.Fifo(), 4, rate_limiters.MinSize(1))
    t.insert(make(3))
    path = tmp_path / "c.ckpt"
    t.checkpoint(path)
    data = path.read_bytes()
    with pytest.raises(ValueError, match="missing.ckpt"):
        Table.restore(tmp_path / "missing.ckpt")
    cases = {
        "truncated": data[: len(data) // 2],
        "header-only": data[:30],
        "empty": b"",
        "flipped": data[:-20] + bytes([data[-20] ^ 0xFF]) + data[-19:],
        "padded": data + b"\0",
        "foreign": b"PK" + data[2:],
    }
    for name, content in cases.items():
        bad = tmp_path / f"{name}.ckpt"
        bad.write_bytes(content)
        with pytest.raises(ValueError, match=f"{name}.ckpt"):
            Table.restore(bad)


def test_crash_mid_write_leaves_previous_checkpoint_intact(tmp_path, monkeypatch):
    t = Table("c", selectors.Fifo(), selectors.Fifo(), 4, rate_limiters.MinSize(1))
    t.insert(make(2))
    path = tmp_path / "c.ckpt"
    t.checkpoint(path)
    t.insert(make(2, 2))
    real_save = torch.save

    def crashing_save(obj, f, *args, **kwargs):
        f.write(b"partial garbage" * 100)
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crashing_save)
    with pytest.raises(OSError, match="disk full"):
        t.checkpoint(path)
    monkeypatch.setattr(torch, "save", real_save)
    assert os.listdir(tmp_path) == ["c.ckpt"]  # the temporary file is gone
    r = Table.restore(path)
    assert len(r) == 2 and drain(r, 1) == [0.0]


def test_restore_into_given_storage_and_shared(tmp_path):
    t = Table("s", selectors.Fifo(), selectors.Fifo(), 4, rate_limiters.MinSize(1))
    t.insert(make(2))
    path = t.checkpoint(tmp_path / "s.ckpt")
    r = Table.restore(path, storage=TensorStorage(8), shared=True)
    assert r.storage.capacity == 8 and r.storage.is_shared()
    assert all(buf.is_shared() for buf in r.storage._buffers)
    assert drain(r, 1) == [0.0]


def _prioritized(seed: int | None = 0) -> Table:
    return Table(
        "p", selectors.Prioritized(0.6), selectors.Uniform(), 50, rate_limiters.MinSize(1), seed=seed
    )


def _draws(t: Table, rounds: int = 20) -> list[list[int]]:
    return [t.sample(8, timeout=0)["key"].tolist() for _ in range(rounds)]


def test_restored_tables_draw_the_samples_the_original_draws_next(tmp_path):
    """Exact resume: the sampling generator's state travels with the table (state_dict, checkpoint, served)."""
    t = _prioritized()
    t.insert(make(80), priority=torch.rand(80, generator=torch.Generator().manual_seed(1)) + 0.1)
    _draws(t, 5)
    state = t.state_dict()
    path = t.checkpoint(tmp_path / "t.ckpt")
    straight = _draws(t)
    loaded = _prioritized(seed=123)  # another seed: the state's generator replaces it
    loaded.load_state_dict(state)
    assert _draws(loaded) == straight
    assert _draws(Table.restore(path)) == straight
    assert _draws(Table.from_state(state)) == straight
    assert _draws(Table.restore(path, seed=5)) != straight  # an explicit seed starts a new sequence
    restored = Table.restore(path)
    with TableServer(restored, start_method="fork") as server:
        served = server.client().state_dict()
    assert _draws(Table.from_state(served)) == straight


@pytest.mark.parametrize(
    "sampler", [selectors.Uniform(), selectors.Prioritized(0.6)], ids=["uniform", "zero-prio"]
)
def test_restored_tables_draw_the_same_after_evictions_reordered_the_members(sampler):
    """Uniform draws (and prioritized ones with all weights zero) index a member array that evictions reorder:
    the state keeps that order, and a FIFO remover still evicts in insertion order after the restore."""
    t = Table("u", sampler, selectors.Fifo(), 20, rate_limiters.MinSize(1), seed=3)
    t.insert(make(35), priority=0.0)  # 15 evictions and deletions shuffle the members
    t.delete(torch.tensor([21, 25, 30]))
    state = t.state_dict()
    straight = [t.sample(4, timeout=0)["x"].tolist() for _ in range(5)]
    t.insert(make(5, start=100), priority=0.0)
    evicted_next = t.sample(20, timeout=0)["x"].tolist()
    loaded = Table("u", sampler, selectors.Fifo(), 20, rate_limiters.MinSize(1), seed=9)
    loaded.load_state_dict(state)
    assert [loaded.sample(4, timeout=0)["x"].tolist() for _ in range(5)] == straight
    loaded.insert(make(5, start=100), priority=0.0)  # evicts the five oldest, as the original did
    assert loaded.sample(20, timeout=0)["x"].tolist() == evicted_next


def test_served_state_dict_equals_the_table_state_and_leaves_no_file(tmp_path):
    t = Table("q", selectors.Fifo(), selectors.Fifo(), 20, rate_limiters.MinSize(1))
    t.insert(make(12))
    t.sample(3)

    def ours() -> set[
        str
    ]:  # what a table copy or snapshot could leave (the machine is shared: others write too)
        tmp = {f for f in os.listdir(tempfile.gettempdir()) if f.startswith("accelrl-table")}
        return tmp | {f for f in os.listdir("/dev/shm") if f.startswith("torch_")}

    before = ours()
    with TableServer(t, start_method="spawn") as server:  # the table travels by shared memory, not a file
        served = server.client().state_dict()
        assert ours() - before == set()
    direct = t.state_dict()
    assert served.keys() == direct.keys()
    for key, value in direct.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(served[key], value), key
    assert served["config"] == direct["config"] and served["rng"] == direct["rng"]
    Table.from_state(served)  # and it loads


def test_restore_refuses_storage_classes_it_does_not_know(tmp_path):
    t = Table("q", selectors.Fifo(), selectors.Fifo(), 4, rate_limiters.MinSize(1))
    t.insert(make(2))
    state = t.state_dict()
    for name in ("os:_exit", "posix:system", "lightning_accelrl.replay.table:Table", None):
        with pytest.raises(ValueError, match="not one of"):
            Table.from_state({**state, "storage_class": name})
    with pytest.raises(ValueError, match="unknown dtype"):
        Table.from_state({**state, "fields": [[["x"], "__class__", []]]})


def test_served_checkpoint_is_written_beside_its_destination_and_sweeps_a_dead_writers_temp_file(tmp_path):
    t = Table("q", selectors.Fifo(), selectors.Fifo(), 20, rate_limiters.MinSize(1))
    t.insert(make(5))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer runs
    host = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:64]  # as atomic_write names its temp files
    stale = tmp_path / f".t.ckpt.{dead.pid}@{host}.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    with TableServer(t, start_method="fork") as server:
        path = server.client().checkpoint(tmp_path / "t.ckpt")
    assert sorted(os.listdir(tmp_path)) == ["t.ckpt"]
    assert Table.restore(path).size == 5
