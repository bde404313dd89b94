"""FrameStackStorage: stacks rebuilt from deduplicated frames equal the env's stacks exactly."""

from __future__ import annotations

import collections

import pytest
import torch
from tensordict import TensorDict

from lightning_accelrl.replay.frames import FrameStackStorage, StreamIndexer
from lightning_accelrl.replay.nstep import NStepWriter
from lightning_accelrl.replay.storage import Storage


class FakeStackEnv:
    """Vectorised same-step-autoreset env with S-frame stacks of random frames and random episode lengths.

    ``padding``: "zero" (as ale_py's AtariVectorEnv) or "reset" (repeat the first frame, as gymnasium's
    FrameStackObservation). Some frames are all zero, to exercise the shared zero slot.
    """

    def __init__(
        self,
        num_envs: int,
        stack: int = 4,
        hw: tuple[int, int] = (5, 6),
        padding: str = "zero",
        seed: int = 0,
    ):
        self.b, self.s, self.hw, self.padding = num_envs, stack, hw, padding
        self.gen = torch.Generator().manual_seed(seed)
        self.stacks = torch.stack([self._first_stack() for _ in range(num_envs)])
        self.left = self._lengths(num_envs)

    def _frame(self) -> torch.Tensor:
        if torch.rand((), generator=self.gen) < 0.05:
            return torch.zeros(self.hw, dtype=torch.uint8)
        return torch.randint(1, 256, self.hw, generator=self.gen, dtype=torch.uint8)

    def _first_stack(self) -> torch.Tensor:
        f = self._frame()
        pad = torch.zeros_like(f) if self.padding == "zero" else f
        return torch.stack([pad] * (self.s - 1) + [f])

    def _lengths(self, k: int) -> torch.Tensor:
        short = torch.rand(k, generator=self.gen) < 0.3  # many 1-3 step episodes
        return torch.where(
            short,
            torch.randint(1, 4, (k,), generator=self.gen),
            torch.randint(4, 30, (k,), generator=self.gen),
        )

    def step(self) -> TensorDict:
        obs = self.stacks.clone()
        new = torch.stack([self._frame() for _ in range(self.b)])
        nxt = torch.cat([obs[:, 1:], new[:, None]], 1)
        self.left -= 1
        ended = self.left == 0
        trunc_pick = torch.rand(self.b, generator=self.gen) < 0.3
        td = TensorDict(
            {
                "observation": obs,
                "action": torch.randint(0, 6, (self.b,), generator=self.gen),
                "next": {
                    "observation": nxt,
                    "reward": torch.randn(self.b, 1, generator=self.gen),
                    "terminated": (ended & ~trunc_pick)[:, None],
                    "truncated": (ended & trunc_pick)[:, None],
                    "done": ended[:, None],
                },
            },
            batch_size=[self.b],
        )
        self.stacks = nxt.clone()
        for e in ended.nonzero().flatten().tolist():
            self.stacks[e] = self._first_stack()
        self.left[ended] = self._lengths(int(ended.sum()))
        return td


class FifoDriver:
    """Inserts into a storage through the protocol as a table with a Fifo remover would."""

    def __init__(self, storage: Storage, max_size: int) -> None:
        self.storage, self.max_size = storage, max_size
        self.free = list(range(max_size))
        self.live: collections.OrderedDict[int, TensorDict] = collections.OrderedDict()

    def insert(self, items: TensorDict) -> None:
        """Evict the oldest items to make room, then write the whole batch at once (the vectorised path)."""
        k = items.batch_size[0]
        for _ in range(max(0, len(self.live) + k - self.max_size)):
            slot, _ = self.live.popitem(last=False)
            self.storage.release(torch.tensor([slot]))
            self.free.append(slot)
        slots = [self.free.pop(0) for _ in range(k)]
        self.storage.write(torch.tensor(slots), items)
        for i, slot in enumerate(slots):
            self.live[slot] = items[i].clone()

    def check_all(self) -> None:
        slots = torch.tensor(list(self.live))
        got = self.storage.read(slots)
        want = torch.stack(list(self.live.values()))
        assert got.batch_size == want.batch_size
        for key in want.keys(True, True):
            assert torch.equal(got[key], want[key]), key


def run_stream(
    n: int, padding: str, steps: int, num_envs: int = 3, max_size: int = 10_000, seed: int = 0, **kw
):
    env = FakeStackEnv(num_envs, padding=padding, seed=seed)
    indexer, writer = StreamIndexer(num_envs, 4), NStepWriter(n, 0.9, num_envs)
    storage = FrameStackStorage(max_size, check_writes=True, **kw)
    driver = FifoDriver(storage, max_size)
    for t in range(steps):
        out = writer.add(indexer(env.step()))
        if out is not None:
            driver.insert(out)
        if t % 25 == 24:
            driver.check_all()
    driver.check_all()
    return storage, driver


@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("padding", ["zero", "reset"])
def test_stacks_rebuilt_exactly(n: int, padding: str) -> None:
    storage, driver = run_stream(n, padding, steps=150)
    assert isinstance(storage, Storage)
    items = len(driver.live)
    assert items > 400
    # dedup: about one frame per item plus a few per episode, far below the 2 * 4 frames per item of a naive store
    assert storage.num_frames < 1.6 * items


def test_any_insertion_order_and_random_releases() -> None:
    """Items written in shuffled batches and released at random (as a Uniform remover would) stay exact."""
    env = FakeStackEnv(3, padding="reset", seed=7)
    indexer, writer = StreamIndexer(3, 4), NStepWriter(3, 0.9, 3)
    items = [o for o in (writer.add(indexer(env.step())) for _ in range(80)) if o is not None]
    items = torch.cat(items)
    gen = torch.Generator().manual_seed(0)
    order = torch.randperm(items.batch_size[0], generator=gen)
    storage = FrameStackStorage(items.batch_size[0], check_writes=True)
    live: dict[int, int] = {}  # slot -> item index
    free = list(range(storage.capacity))
    for chunk in order.split(7):
        if live and torch.rand((), generator=gen) < 0.5:
            gone = list(live)[::3]
            storage.release(torch.tensor(gone))
            for slot in gone:
                del live[slot]
                free.append(slot)
        slots = [free.pop() for _ in range(len(chunk))]
        storage.write(torch.tensor(slots), items[chunk])
        live.update(zip(slots, chunk.tolist()))
        got = storage.read(torch.tensor(list(live)))
        want = items[torch.tensor(list(live.values()))]
        assert torch.equal(got["observation"], want["observation"])
        assert torch.equal(got["next", "observation"], want["next", "observation"])
    storage.release(torch.tensor(list(live)))
    assert storage.num_frames == 0  # every frame went back to the pool


def test_no_frame_of_a_previous_episode_in_a_reset_stack() -> None:
    env = FakeStackEnv(1, padding="zero", seed=3)
    env.left[:] = 2  # episode of 2 steps, then a new one
    indexer, writer = StreamIndexer(1, 4), NStepWriter(1, 0.9, 1)
    storage = FrameStackStorage(16)
    items = [writer.add(indexer(env.step())) for _ in range(4)]
    storage.write(torch.arange(4), torch.cat(items))
    got = storage.read(torch.arange(4))
    assert torch.equal(
        got["observation"][2, :3], torch.zeros(3, 5, 6, dtype=torch.uint8)
    )  # first stack of episode 2
    assert torch.equal(got["observation"], torch.cat(items)["observation"])
    # a numbering without the gap at the reset would reuse the old episode's frames: check_writes catches it
    bad = torch.cat(items)
    bad["step"][2:] -= 4
    bad["next", "step"][2:] -= 4
    checked = FrameStackStorage(16, check_writes=True)
    with pytest.raises(ValueError, match="numbering"):
        checked.write(torch.arange(4), bad)


@pytest.mark.parametrize("n", [1, 3])
def test_fifo_eviction_at_small_capacity(n: int) -> None:
    # 3 streams, max 40 items: the pool needs about 40 + 4 per episode + (4 + n) per stream frames
    storage, driver = run_stream(
        n, "reset", steps=200, max_size=40, frame_capacity=40 + 12 * 8 + 3 * 8, seed=1
    )
    assert len(driver.live) == 40
    assert storage.num_frames <= storage.frame_capacity


def test_pool_exhaustion_raises_and_changes_nothing() -> None:
    env = FakeStackEnv(2, padding="reset", seed=2)
    env.left[:] = 100
    indexer, writer = StreamIndexer(2, 4), NStepWriter(1, 0.9, 2)
    storage = FrameStackStorage(64, frame_capacity=12)
    first = writer.add(indexer(env.step()))
    storage.write(torch.tensor([0, 1]), first)  # 2 * (4 + 1) frames
    second = writer.add(indexer(env.step()))
    storage.write(torch.tensor([2, 3]), second)  # 1 new frame each: the pool is full
    assert storage.num_frames == 12
    third = writer.add(indexer(env.step()))
    with pytest.raises(RuntimeError, match="frame_capacity"):
        storage.write(torch.tensor([4, 5]), third)
    assert storage.num_frames == 12 and not storage._live[4:6].any()
    got = storage.read(torch.tensor([0, 1, 2, 3]))
    assert torch.equal(got["observation"], torch.cat([first, second])["observation"])
    storage.release(torch.tensor([0, 1]))  # frees the two oldest frames of each stream
    storage.write(torch.tensor([4, 5]), third)
    assert torch.equal(
        storage.read(torch.tensor([4, 5]))["next", "observation"], third["next", "observation"]
    )


def test_overwritten_frame_is_detected_on_read() -> None:
    storage, driver = run_stream(1, "zero", steps=20, num_envs=2)
    slots = torch.tensor(list(driver.live))
    frame = int(storage._index[int(slots[-1]), -1])  # newest next-obs frame of the latest item
    storage._frame_key[frame] += 1  # as if another writer had reused the slot
    with pytest.raises(RuntimeError, match="overwritten"):
        storage.read(slots)


def test_release_clear_state_dict_roundtrip() -> None:
    storage, driver = run_stream(3, "zero", steps=60, max_size=50, frame_capacity=200)
    slots = torch.tensor(list(driver.live))
    before = storage.read(slots)
    state = storage.state_dict()
    restored = FrameStackStorage(50, frame_capacity=200)
    restored.load_state_dict(state)
    after = restored.read(slots)
    for key in before.keys(True, True):
        assert torch.equal(before[key], after[key]), key
    assert restored.num_frames == storage.num_frames  # compacted: only frames that live items use
    # keeps working after the restore, with the same slot numbers
    restored.release(slots[:10])
    storage.release(slots[:10])
    assert restored.num_frames == storage.num_frames
    storage.clear()
    assert storage.num_frames == 0 and storage.state_dict()["slots"].numel() == 0
    with pytest.raises(KeyError):
        storage.read(slots[10:11])


def test_missing_keys_and_bad_shapes_raise() -> None:
    storage = FrameStackStorage(8)
    item = TensorDict(
        {
            "observation": torch.zeros(1, 4, 3, 3, dtype=torch.uint8),
            "next": {"observation": torch.zeros(1, 4, 3, 3, dtype=torch.uint8)},
        },
        batch_size=[1],
    )
    with pytest.raises(KeyError, match="StreamIndexer"):
        storage.write(torch.tensor([0]), item)


def test_bytes_per_item_atari_layout() -> None:
    """84x84x4 uint8 stacks and the NStepWriter item fields at 1M capacity (the frame pool is not touched)."""
    b = 1
    item = TensorDict(
        {
            "observation": torch.zeros(b, 4, 84, 84, dtype=torch.uint8),
            "action": torch.zeros(b, dtype=torch.int64),
            "stream": torch.zeros(b, dtype=torch.int64),
            "step": torch.full((b,), 3, dtype=torch.int64),
            "bootstrap_discount": torch.zeros(b),
            "next": {
                "observation": torch.zeros(b, 4, 84, 84, dtype=torch.uint8),
                "reward": torch.zeros(b),
                "terminated": torch.zeros(b, dtype=torch.bool),
                "truncated": torch.zeros(b, dtype=torch.bool),
                "done": torch.zeros(b, dtype=torch.bool),
                "step": torch.full((b,), 4, dtype=torch.int64),
            },
        },
        batch_size=[b],
    )
    storage = FrameStackStorage(1_000_000, example=item)
    per_item = storage.bytes_per_item()
    print(f"FrameStackStorage bytes per item at 1M, 84x84x4: {per_item:.1f}")
    assert 84 * 84 < per_item <= 7300, per_item


def test_share_memory() -> None:
    storage, driver = run_stream(1, "zero", steps=10, num_envs=2)
    storage.share_memory_()
    assert storage._frames.is_shared() and storage._index.is_shared() and storage.is_shared()
    driver.check_all()


def test_through_table_uniform_sampler_fifo_remover(tmp_path) -> None:
    from lightning_accelrl.replay import Table, rate_limiters, selectors

    env = FakeStackEnv(4, padding="zero", seed=5)
    indexer, writer = StreamIndexer(4, 4), NStepWriter(3, 0.99, 4)
    storage = FrameStackStorage(64, frame_capacity=64 + 20 * 8 + 4 * 8)
    table = Table(
        "frames", selectors.Uniform(), selectors.Fifo(), 64, rate_limiters.MinSize(1), storage=storage, seed=0
    )
    originals: dict[int, TensorDict] = {}
    for _ in range(120):
        out = writer.add(indexer(env.step()))
        if out is not None:
            keys = table.insert(out)
            for i, key in enumerate(keys.tolist()):
                originals[key] = out[i].clone()
    assert len(table) == 64
    batch = table.sample(256)
    want = torch.stack([originals[k] for k in batch["key"].tolist()])
    for key in want.keys(True, True):
        assert torch.equal(batch[key], want[key]), key
    # a checkpoint restores the frames through FrameStackStorage.from_state_dict
    path = table.checkpoint(tmp_path / "table.pt")
    restored = Table.restore(path)
    assert isinstance(restored.storage, FrameStackStorage)
    again = restored.sample(64)
    want = torch.stack([originals[k] for k in again["key"].tolist()])
    assert torch.equal(again["observation"], want["observation"])
    assert torch.equal(again["next", "observation"], want["next", "observation"])


def test_ale_atari_vector_env_smoke() -> None:
    """Real Pong stacks from ale_py's C++ vector env (zero padding at reset), truncated every 60 steps."""
    np = pytest.importorskip("numpy")
    vector_env = pytest.importorskip("ale_py.vector_env")
    env = vector_env.AtariVectorEnv(
        "pong",
        num_envs=2,
        autoreset_mode="SameStep",
        max_num_frames_per_episode=240,
        repeat_action_probability=0.0,
    )
    try:
        obs, _ = env.reset(seed=0)
        indexer, writer = StreamIndexer(2, 4), NStepWriter(3, 0.99, 2)
        storage = FrameStackStorage(500, check_writes=True)
        driver = FifoDriver(storage, 500)
        rng = np.random.default_rng(0)
        ends = 0
        for _ in range(200):
            action = rng.integers(0, 6, size=2)
            nxt, reward, term, trunc, info = env.step(action)
            done = term | trunc
            final = np.where(done[:, None, None, None], info["final_obs"], nxt) if done.any() else nxt
            step = TensorDict(
                {
                    "observation": torch.from_numpy(obs.copy()),
                    "action": torch.from_numpy(action),
                    "next": {
                        "observation": torch.from_numpy(final.copy()),
                        "reward": torch.from_numpy(reward.astype(np.float32)),
                        "terminated": torch.from_numpy(term),
                        "truncated": torch.from_numpy(trunc),
                        "done": torch.from_numpy(done),
                    },
                },
                batch_size=[2],
            )
            ends += int(done.sum())
            out = writer.add(indexer(step))
            if out is not None:
                driver.insert(out)
            obs = nxt
    finally:
        env.close()
    assert ends >= 4
    driver.check_all()
    assert storage.num_frames < 1.2 * len(driver.live)
