"""NStepWriter: n-step returns, discounts and key copying, by hand and against a naive reference."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tensordict import TensorDict

from lightning_accelrl.replay.nstep import NStepWriter


def make_step(t: int, rewards, terminated=None, truncated=None, reward_dim: bool = False) -> TensorDict:
    """A vectorised step at time t; observation encodes (t, env) so copies can be traced."""
    b = len(rewards)
    env = torch.arange(b)
    term = (
        torch.zeros(b, dtype=torch.bool)
        if terminated is None
        else torch.as_tensor(terminated, dtype=torch.bool)
    )
    trunc = (
        torch.zeros(b, dtype=torch.bool)
        if truncated is None
        else torch.as_tensor(truncated, dtype=torch.bool)
    )
    rew = torch.as_tensor(rewards, dtype=torch.float32)
    shape = (b, 1) if reward_dim else (b,)
    return TensorDict(
        {
            "observation": torch.stack([torch.full((b,), float(t)), env.float()], -1),
            "action": env * 100 + t,
            "mask": torch.ones(b, 3, dtype=torch.bool),
            "next": {
                "observation": torch.stack([torch.full((b,), t + 1.0), env.float()], -1),
                "reward": rew.reshape(shape),
                "terminated": term.reshape(shape),
                "truncated": trunc.reshape(shape),
                "done": (term | trunc).reshape(shape),
            },
        },
        batch_size=[b],
    )


def rows(out: TensorDict | None) -> list[tuple]:
    """(start t, env, end t + 1, return, discount) of each emitted item."""
    if out is None:
        return []
    return [
        (
            int(out["observation"][i, 0]),
            int(out["observation"][i, 1]),
            int(out["next", "observation"][i, 0]),
            round(float(out["next", "reward"].reshape(-1)[i]), 5),
            round(float(out["bootstrap_discount"].reshape(-1)[i]), 5),
        )
        for i in range(out.batch_size[0])
    ]


@pytest.mark.parametrize("reward_dim", [False, True])
def test_hand_computed_n3(reward_dim: bool) -> None:
    w = NStepWriter(n=3, gamma=0.5, num_envs=2)
    # env 0: rewards 1, 2, 3, 4 no end. env 1: 1, 2 terminated at t=1; new episode 3, 4 truncated at t=3.
    seq = [
        ([1, 1], [0, 0], [0, 0]),
        ([2, 2], [0, 1], [0, 0]),
        ([3, 3], [0, 0], [0, 0]),
        ([4, 4], [0, 0], [0, 1]),
    ]
    got = []
    for t, (r, te, tr) in enumerate(seq):
        out = w.add(make_step(t, r, te, tr, reward_dim))
        if out is not None:
            assert out["next", "reward"].shape[1:] == ((1,) if reward_dim else ())
            assert out["bootstrap_discount"].shape == out["next", "reward"].shape
        got.append(rows(out))
    assert got[0] == []
    assert got[1] == [(0, 1, 2, 2.0, 0.0), (1, 1, 2, 2.0, 0.0)]  # termination: no bootstrap
    assert got[2] == [(0, 0, 3, 2.75, 0.125)]
    # truncation flushes env 1's starts 2 and 3 with gamma^m; env 0's start 1 is a full 3-step item.
    assert got[3] == [(1, 0, 4, 4.5, 0.125), (2, 1, 4, 5.0, 0.25), (3, 1, 4, 4.0, 0.5)]
    assert w.num_pending == 2  # env 0: starts 2, 3
    assert rows(w.flush()) == [(2, 0, 4, 3 + 0.5 * 4, 0.25), (3, 0, 4, 4.0, 0.5)]
    assert w.num_pending == 0 and w.flush() is None


def test_truncation_ends_the_return_when_it_does_not_bootstrap() -> None:
    """The hand-computed n=3 sequence without bootstrapping at truncation: env 1's items that end at its time limit
    (t=3) keep their returns and lose their discount; everything else is as before."""
    w = NStepWriter(n=3, gamma=0.5, num_envs=2, bootstrap_truncated=False)
    seq = [
        ([1, 1], [0, 0], [0, 0]),
        ([2, 2], [0, 1], [0, 0]),
        ([3, 3], [0, 0], [0, 0]),
        ([4, 4], [0, 0], [0, 1]),
    ]
    got = [rows(w.add(make_step(t, r, te, tr))) for t, (r, te, tr) in enumerate(seq)]
    assert got[1] == [(0, 1, 2, 2.0, 0.0), (1, 1, 2, 2.0, 0.0)]
    assert got[2] == [(0, 0, 3, 2.75, 0.125)]
    assert got[3] == [(1, 0, 4, 4.5, 0.125), (2, 1, 4, 5.0, 0.0), (3, 1, 4, 4.0, 0.0)]
    # a flush cuts an episode that did not end: it still bootstraps
    assert rows(w.flush()) == [(2, 0, 4, 3 + 0.5 * 4, 0.25), (3, 0, 4, 4.0, 0.5)]
    one = NStepWriter(n=1, gamma=0.9, num_envs=3, bootstrap_truncated=False)
    out = one.add(make_step(5, [1.0, -2.0, 0.5], terminated=[0, 1, 0], truncated=[0, 0, 1]))
    assert out["bootstrap_discount"].tolist() == pytest.approx([0.9, 0.0, 0.0])
    assert out["next", "terminated"].tolist() == [False, True, False]  # the flags are the env's, untouched


def test_n1_is_plain_transitions() -> None:
    gamma = 0.9
    w = NStepWriter(n=1, gamma=gamma, num_envs=3)
    step = make_step(5, [1.0, -2.0, 0.5], terminated=[0, 1, 0], truncated=[0, 0, 1])
    out = w.add(step)
    assert out is not None and out.batch_size == torch.Size([3])
    for key in [
        "observation",
        "action",
        "mask",
        ("next", "observation"),
        ("next", "reward"),
        ("next", "terminated"),
    ]:
        assert torch.equal(out[key], step[key]), key
    assert torch.allclose(out["bootstrap_discount"], gamma * (1 - step["next", "terminated"].float()))
    assert w.num_pending == 0


def test_copies_start_root_keys_and_end_next_keys() -> None:
    w = NStepWriter(n=2, gamma=1.0, num_envs=1)
    s0 = make_step(0, [1.0])
    s0["step"] = torch.tensor([10])
    s0["next", "step"] = torch.tensor([11])
    s1 = make_step(1, [1.0])
    s1["step"] = torch.tensor([11])
    s1["next", "step"] = torch.tensor([12])
    assert w.add(s0) is None
    out = w.add(s1)
    assert int(out["step"]) == 10 and int(out["next", "step"]) == 12
    assert int(out["action"]) == 0 and out["mask"].shape == (1, 3)
    assert float(out["next", "reward"]) == 2.0 and float(out["bootstrap_discount"]) == 1.0


def test_one_step_episodes_and_subset_env_ids() -> None:
    w = NStepWriter(n=3, gamma=0.5, num_envs=2)
    assert rows(w.add(make_step(0, [7.0]), env_ids=torch.tensor([1]))) == []
    out = w.add(make_step(1, [1.0], terminated=[1]), env_ids=torch.tensor([0]))
    assert rows(out) == [(1, 0, 2, 1.0, 0.0)]  # one-step episode emits at once
    out = w.add(make_step(2, [1.0], truncated=[1]), env_ids=torch.tensor([1]))
    assert [r[3:] for r in rows(out)] == [(7.5, 0.25), (1.0, 0.5)]


def test_state_dict_roundtrip() -> None:
    gen = torch.Generator().manual_seed(0)
    a = NStepWriter(n=3, gamma=0.9, num_envs=2)
    for t in range(4):
        a.add(make_step(t, torch.rand(2, generator=gen).tolist()))
    b = NStepWriter(n=3, gamma=0.9, num_envs=2)
    b.load_state_dict(a.state_dict())
    for t in range(4, 9):
        step = make_step(t, torch.rand(2, generator=gen).tolist(), terminated=[t == 6, 0])
        assert rows(a.add(step.clone())) == rows(b.add(step.clone()))
    assert rows(a.flush()) == rows(b.flush())
    with pytest.raises(ValueError):
        NStepWriter(n=2, gamma=0.9, num_envs=2).load_state_dict(a.state_dict())


def naive(
    n: int, gamma: float, steps: list[TensorDict], bootstrap_truncated: bool = True
) -> list[list[tuple]]:
    """Per env, per start: sum the rewards up to n steps or the episode's end; the last list is the flush.
    Without ``bootstrap_truncated`` a truncated end has discount 0, as a terminated one."""
    b = steps[0].batch_size[0]
    pending: list[list[int]] = [[] for _ in range(b)]
    outs = []
    for t, step in enumerate(steps):
        rew = step["next", "reward"].reshape(b)
        term = step["next", "terminated"].reshape(b)
        end = term | step["next", "truncated"].reshape(b)
        stops = term if bootstrap_truncated else end
        emitted = []
        for e in range(b):
            pending[e].append(t)
            starts = list(pending[e]) if end[e] else (pending[e][:1] if len(pending[e]) == n else [])
            for s in starts:
                m = t - s + 1
                ret = sum(gamma**k * float(steps[s + k]["next", "reward"].reshape(b)[e]) for k in range(m))
                disc = 0.0 if stops[e] else gamma**m
                emitted.append((s, e, t + 1, round(ret, 5), round(disc, 5)))
            pending[e] = [] if end[e] else pending[e][len(starts) :]
        del rew
        outs.append(sorted(emitted))
    last = len(steps) - 1
    flushed = []
    for e in range(b):
        for s in pending[e]:
            m = last - s + 1
            ret = sum(gamma**k * float(steps[s + k]["next", "reward"].reshape(b)[e]) for k in range(m))
            flushed.append((s, e, last + 1, round(ret, 5), round(gamma**m, 5)))
    outs.append(sorted(flushed))
    return outs


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 4),
    b=st.integers(1, 3),
    gamma=st.sampled_from([0.0, 0.5, 0.99, 1.0]),
    reward_dim=st.booleans(),
    bootstrap_truncated=st.booleans(),
    data=st.lists(
        st.lists(st.tuples(st.integers(-3, 3), st.integers(0, 5), st.integers(0, 5)), min_size=3, max_size=3),
        min_size=1,
        max_size=14,
    ),
)
def test_matches_naive_reference(
    n: int, b: int, gamma: float, reward_dim: bool, bootstrap_truncated: bool, data
) -> None:
    steps = [
        make_step(
            t,
            [float(r[0]) for r in row[:b]],
            terminated=[r[1] == 0 for r in row[:b]],  # ~1/6 of steps terminate, ~1/6 truncate
            truncated=[r[2] == 0 for r in row[:b]],
            reward_dim=reward_dim,
        )
        for t, row in enumerate(data)
    ]
    w = NStepWriter(n=n, gamma=gamma, num_envs=b, bootstrap_truncated=bootstrap_truncated)
    got = [rows(w.add(s)) for s in steps]
    got.append(rows(w.flush()))
    assert got == naive(n, gamma, steps, bootstrap_truncated)
    assert w.num_pending == 0
