"""AlternatingSampler: the SyncSampler's layout and results, with two env groups overlapping step and inference."""

from __future__ import annotations

import pytest
import torch
from foundation_helpers import COUNTING_ID, COUNTING_TL_ID

from lightning_accelrl.envs import BatchedEnv, make_env
from lightning_accelrl.errors import ConfigError
from lightning_accelrl.sampling.alternating import AlternatingSampler
from lightning_accelrl.sampling.sync import SyncSampler


class ScriptedAgent:
    """Deterministic: the action, log-prob and value are functions of the observation."""

    device = torch.device("cpu")
    policy_version = 2

    def __init__(self, num_actions: int) -> None:
        self.num_actions = num_actions
        self.act_batches: list[int] = []

    def _flat(self, obs: torch.Tensor) -> torch.Tensor:
        return obs.float().reshape(obs.shape[0], -1)

    def act(self, obs: torch.Tensor) -> dict[str, torch.Tensor]:
        self.act_batches.append(obs.shape[0])
        o = self._flat(obs)
        return {
            "action": o.sum(-1).long() % self.num_actions,
            "sample_log_prob": -o.mean(-1),
            "state_value": self.value(obs),
        }

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        o = self._flat(obs)
        return 10.0 * o[:, :1] + o[:, 1:2]


def _compare(make, num_actions: int, steps: int, rollouts: int = 3) -> tuple[SyncSampler, AlternatingSampler]:
    sync = SyncSampler(make(), steps, store_next_observation=True)
    alt = AlternatingSampler(make(), steps, store_next_observation=True)
    agent = ScriptedAgent(num_actions)
    for _ in range(rollouts):
        a, b = sync.collect(agent), alt.collect(ScriptedAgent(num_actions))
        assert a.batch_size == b.batch_size
        assert set(a.keys(True, True)) == set(b.keys(True, True))
        for key in a.keys(True, True):
            assert torch.equal(a[key], b[key]), key
    assert list(sync.tracker.recent_returns) == list(alt.tracker.recent_returns)
    assert list(sync.tracker.recent_lengths) == list(alt.tracker.recent_lengths)
    assert sync.tracker.episodes == alt.tracker.episodes > 0
    assert alt.env_steps == sync.env_steps == rollouts * steps * alt.num_envs
    return sync, alt


def test_same_rollouts_as_sync_counting_env_with_truncations() -> None:
    make = lambda: make_env(COUNTING_TL_ID, num_envs=6, seed=0, vectorization="sync")  # noqa: E731
    sync, alt = _compare(make, 2, steps=7)
    last = alt.collect(ScriptedAgent(2))
    assert last["next", "truncated"].any()  # the bootstrap values at truncations were compared above
    sync.close()
    alt.close()


def test_same_rollouts_as_sync_atari() -> None:
    kw = {"max_num_frames_per_episode": 100}
    make = lambda: make_env("ALE/Breakout-v5", num_envs=4, seed=1, env_kwargs=kw)  # noqa: E731
    sync, alt = _compare(make, 4, steps=16, rollouts=2)
    sync.close()
    alt.close()


def test_one_forward_per_group_and_step() -> None:
    alt = AlternatingSampler(make_env(COUNTING_ID, num_envs=4, seed=0, vectorization="sync"), 5)
    agent = ScriptedAgent(2)
    td = alt.collect(agent)
    assert agent.act_batches == [2] * 10  # two half-batch forwards per step, none extra
    assert td["policy_version"].eq(2).all()
    assert alt.num_envs == 4 and alt.env.spec.observation_shape == (2,)
    alt.close()


def test_refuses_odd_or_unsplittable_envs() -> None:
    with pytest.raises(ConfigError, match="divisible"):
        AlternatingSampler(make_env(COUNTING_ID, num_envs=3, seed=0, vectorization="sync"), 4)

    class Opaque(BatchedEnv):  # a back-end with neither split() nor env functions
        num_envs = 2
        spec = None

        def reset(self):  # pragma: no cover - never called
            raise AssertionError

        def step(self, actions):  # pragma: no cover
            raise AssertionError

    with pytest.raises(ConfigError, match="cannot split"):
        AlternatingSampler(Opaque(), 4)
