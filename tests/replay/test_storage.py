"""TensorStorage and the Storage protocol the table relies on."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict

from lightning_accelrl.replay import Storage, Table, TensorStorage, rate_limiters, selectors
from lightning_accelrl.replay.storage import copy_rows_


def items(n: int, start: int = 0) -> TensorDict:
    x = torch.arange(start, start + n)
    return TensorDict(
        {"obs": x[:, None].expand(n, 4).to(torch.uint8), "a": {"b": x.float(), "c": {"d": x.double()}}}, [n]
    )


def test_tensor_storage_implements_the_protocol():
    assert isinstance(TensorStorage(3), Storage)


def test_write_read_nested_fields_and_fresh_copies():
    s = TensorStorage(5)
    s.write(torch.tensor([3, 1]), items(2, 10))
    assert s.fields == {
        ("obs",): (torch.uint8, torch.Size([4])),
        ("a", "b"): (torch.float32, torch.Size([])),
        ("a", "c", "d"): (torch.float64, torch.Size([])),
    }
    out = s.read(torch.tensor([1, 3, 1]))
    assert out.batch_size == torch.Size([3])
    assert out["a", "c", "d"].tolist() == [11.0, 10.0, 11.0]
    assert out["obs"][:, 0].tolist() == [11, 10, 11]
    s.write(torch.tensor([1]), items(1, 99))
    assert out["a", "b"].tolist() == [11.0, 10.0, 11.0]  # read returned copies


def test_mismatched_writes_raise_clear_errors():
    s = TensorStorage(4)
    s.write(torch.tensor([0]), items(1))
    with pytest.raises(ValueError, match="missing field"):
        s.write(torch.tensor([1]), items(1).exclude(("a", "b")))
    with pytest.raises(ValueError, match="dtype"):
        s.write(torch.tensor([1]), items(1).set("obs", torch.zeros(1, 4)))
    with pytest.raises(ValueError, match="shape"):
        s.write(torch.tensor([1]), items(1).set("obs", torch.zeros(1, 5, dtype=torch.uint8)))


def test_preallocation_from_example_and_shared_memory():
    s = TensorStorage(6, example=items(1)[0])
    assert s.allocated and s.nbytes() == 6 * (4 + 4 + 8)
    s.share_memory_()
    assert s.is_shared() and all(b.is_shared() for b in s._buffers)
    lazy = TensorStorage(6).share_memory_()
    lazy.write(torch.tensor([0, 1]), items(2))
    assert all(b.is_shared() for b in lazy._buffers)


def test_state_dict_round_trip():
    s = TensorStorage(4)
    s.write(torch.tensor([2, 0]), items(2, 5))
    t = TensorStorage(4)
    t.load_state_dict(s.state_dict())
    assert torch.equal(t.read(torch.tensor([0, 2]))["a", "b"], torch.tensor([6.0, 5.0]))


class RecordingStorage(TensorStorage):
    """Logs the protocol calls the table makes."""

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity)
        self.log: list[tuple[str, list[int]]] = []

    def write(self, slots, items, leaves=None, signature=None):
        self.log.append(("write", slots.tolist()))
        super().write(slots, items, leaves, signature)

    def write_item(self, slot, item, leaves, signature=None):
        self.log.append(("write", [slot]))
        super().write_item(slot, item, leaves, signature)

    def read(self, slots, out=None):
        self.log.append(("read", slots.tolist()))
        return super().read(slots, out)

    def release(self, slots):
        self.log.append(("release", [int(s) for s in slots]))

    def clear(self):
        self.log.append(("clear", []))


def test_table_calls_the_protocol_in_order():
    store = RecordingStorage(3)
    t = Table("t", selectors.Fifo(), selectors.Fifo(), 3, rate_limiters.MinSize(1), 2, storage=store)
    t.insert(items(2))
    t.insert(items(2, 2))  # one eviction (item 0, slot 0) before one write of items 2 and 3
    t.sample(2)  # item 1 twice: reaches max_times_sampled, released after the read
    t.delete([2])  # item 2 went to the freed slot 0
    t.reset()
    assert store.log == [
        ("write", [0, 1]),
        ("release", [0]),
        ("write", [0, 2]),
        ("read", [1, 1]),
        ("release", [1]),
        ("release", [0]),
        ("clear", []),
    ]


def test_item_evicted_within_its_own_insert_call_is_never_written():
    store = RecordingStorage(2)
    t = Table("t", selectors.Fifo(), selectors.MinHeap(), 2, rate_limiters.MinSize(1), storage=store)
    t.insert(items(2), priority=[5.0, 6.0])
    t.insert(items(2, 2), priority=[1.0, 7.0])  # item 2 (priority 1) evicts itself; item 3 evicts item 0
    assert store.log == [("write", [0, 1]), ("release", [0]), ("write", [0])]
    assert t.sample(1)["obs"][0, 0].item() == 1


def test_storage_smaller_than_table_is_rejected():
    with pytest.raises(ValueError, match="capacity"):
        Table("t", selectors.Fifo(), selectors.Fifo(), 5, rate_limiters.MinSize(1), storage=TensorStorage(4))


def _child_reads(buffer: torch.Tensor, conn) -> None:
    conn.recv()  # wait until the parent has inserted
    conn.send(buffer[:3].tolist())


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork")
def test_shared_storage_is_read_by_a_forked_process_without_copies():
    import multiprocessing as mp

    example = TensorDict({"x": torch.zeros(4)}, [])
    t = Table(
        "t",
        selectors.Fifo(),
        selectors.Fifo(),
        8,
        rate_limiters.MinSize(1),
        storage=TensorStorage(8, example),
    )
    t.share_memory_()
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_child_reads, args=(t.storage._buffers[0], child))
    proc.start()
    t.insert(TensorDict({"x": torch.arange(12.0).reshape(3, 4)}, [3]))  # written after the fork
    parent.send(None)
    assert parent.poll(20)
    assert parent.recv() == torch.arange(12.0).reshape(3, 4).tolist()
    proc.join(10)
    assert proc.exitcode == 0


@pytest.mark.parametrize(
    ("dtype", "row"),
    [
        (torch.uint8, (4, 84, 84)),  # frame stacks: copied as int64 words
        (torch.bool, (16,)),
        (torch.float32, (6,)),
        (torch.int16, (3, 4)),
        (torch.uint8, (3, 5)),  # 15-byte rows: the element-wise fallback
        (torch.int64, (2,)),  # already 8-byte elements
        (torch.float32, ()),  # one number per row
    ],
)
def test_copy_rows_writes_what_index_copy_writes(dtype: torch.dtype, row: tuple[int, ...]) -> None:
    gen = torch.Generator().manual_seed(0)
    dst = (torch.rand((20, *row), generator=gen) * 100).to(dtype)
    src = (torch.rand((5, *row), generator=gen) * 100).to(dtype)
    index = torch.tensor([7, 0, 19, 3, 12])
    expected = dst.clone().index_copy_(0, index, src)
    assert copy_rows_(dst, index, src) is dst and torch.equal(dst, expected)
    if dst.dim() >= 2:
        n = dst[0].numel()
        flat = torch.zeros(21 * n + 1, dtype=dtype)
        # a view one row in (aligned) and a view one element in (misaligned: the element-wise path)
        for view in (flat[n : 21 * n].view(20, *row), flat[1 : 20 * n + 1].view(20, *row)):
            expected = view.clone().index_copy_(0, index, src)
            assert torch.equal(copy_rows_(view, index, src), expected)
        strided = torch.stack([src, src], 1)[:, 0]  # rows two apart: a non-contiguous source
        assert not strided.is_contiguous()
        assert torch.equal(
            copy_rows_(dst.clone(), index, strided), dst.clone().index_copy_(0, index, strided)
        )
