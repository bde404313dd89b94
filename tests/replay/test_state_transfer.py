"""Table states through shared memory (how a served table's state reaches its owner): every tensor layout survives,
and a reference outside the buffer is refused."""

from __future__ import annotations

import pytest
import torch

from lightning_accelrl.replay.serving import wire
from lightning_accelrl.replay.serving.buffers import export_state, import_state


def _round_trip(state):
    tree, storage = export_state(state)
    tree = wire.decode(wire.encode_payload(tree))  # as it travels
    return import_state(tree, int(storage._share_fd_cpu_()[0]), storage.nbytes())


def test_any_tensor_layout_round_trips():
    state = {
        "expanded": torch.tensor(3.0).expand(1),  # a size-1 dim with stride 0
        "scalar": torch.tensor(2, dtype=torch.int64),
        "empty": torch.zeros(0, 3),
        "strided": torch.arange(10)[::3],
        "nested": [{"t": torch.ones(2, 3, dtype=torch.bool).t()}, "x", 1, 2.5, None, True],
        "big_int_as_text": str(2**100),
    }
    out = _round_trip(state)
    for key in ("expanded", "scalar", "empty", "strided"):
        assert torch.equal(out[key], state[key]) and out[key].dtype == state[key].dtype, key
    assert torch.equal(out["nested"][0]["t"], state["nested"][0]["t"])
    assert out["nested"][1:] == ["x", 1, 2.5, None, True] and out["big_int_as_text"] == str(2**100)


def test_a_reference_outside_the_buffer_is_refused():
    tree, storage = export_state({"t": torch.zeros(4)})
    bad = {"t": wire.TensorRef(1 << 20, 4, "float32", (4,))}
    with pytest.raises(wire.ProtocolError, match="outside"):
        import_state(bad, int(storage._share_fd_cpu_()[0]), storage.nbytes())
    with pytest.raises(wire.ProtocolError, match="announced"):
        import_state(tree, int(storage._share_fd_cpu_()[0]), storage.nbytes() * 1000)
