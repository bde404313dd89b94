"""SyncSampler: rollout layout, preallocation, bootstrap values at truncation, episode statistics."""

from __future__ import annotations

import collections
import math

import numpy as np
import pytest
import torch
from foundation_helpers import COUNTING_ID, COUNTING_TL_ID, TIME_LIMIT, counting_length

from lightning_accelrl.envs import env_seeds, make_env
from lightning_accelrl.sampling import EpisodeTracker, SyncSampler


def value_fn(obs: torch.Tensor) -> torch.Tensor:
    """A value that identifies the observation of the counting env: 10 t + L."""
    return (10.0 * obs[..., 0] + obs[..., 1]).unsqueeze(-1)


class FakeAgent:
    """Deterministic agent: action 0, value a known function of the observation; counts its calls."""

    device = torch.device("cpu")

    def __init__(self, with_value: bool = True) -> None:
        self.policy_version = 0
        self.env_steps = 0
        self.with_value = with_value
        self.act_calls = 0
        self.value_calls = 0

    def act(self, observation: torch.Tensor) -> dict[str, torch.Tensor]:
        self.act_calls += 1
        b = observation.shape[0]
        out = {
            "action": torch.zeros(b, dtype=torch.int64),
            "sample_log_prob": torch.full((b,), -0.5),
        }
        if self.with_value:
            out["state_value"] = value_fn(observation)
        return out

    def set_env_steps(self, env_steps: int, total_env_steps: int) -> None:
        self.env_steps = env_steps

    def value(self, observation: torch.Tensor) -> torch.Tensor:
        self.value_calls += 1
        return value_fn(observation)


def sampler(env_id: str = COUNTING_ID, num_envs: int = 4, steps: int = 6, **kw) -> SyncSampler:
    return SyncSampler(make_env(env_id, num_envs=num_envs, seed=0, vectorization="sync"), steps, **kw)


def test_rollout_keys_shapes_dtypes() -> None:
    T, B = 6, 4
    s = sampler(num_envs=B, steps=T, store_next_observation=True)
    td = s.collect(FakeAgent())
    assert tuple(td.batch_size) == (T, B)
    expected = {
        "observation": ((T, B, 2), torch.float32),
        "action": ((T, B), torch.int64),
        "sample_log_prob": ((T, B), torch.float32),
        "state_value": ((T, B, 1), torch.float32),
        "policy_version": ((T, B), torch.int64),
        ("next", "observation"): ((T, B, 2), torch.float32),
        ("next", "reward"): ((T, B, 1), torch.float32),
        ("next", "terminated"): ((T, B, 1), torch.bool),
        ("next", "truncated"): ((T, B, 1), torch.bool),
        ("next", "done"): ((T, B, 1), torch.bool),
        ("next", "state_value"): ((T, B, 1), torch.float32),
    }
    keys = set(td.keys(include_nested=True, leaves_only=True))
    assert keys == set(expected)
    for key, (shape, dtype) in expected.items():
        assert tuple(td[key].shape) == shape, key
        assert td[key].dtype == dtype, key
    assert s.env_steps == T * B
    s.close()


def test_optional_keys_absent() -> None:
    s = sampler()
    td = s.collect(FakeAgent(with_value=False))
    keys = set(td.keys(include_nested=True, leaves_only=True))
    assert ("next", "observation") not in keys
    assert ("next", "state_value") not in keys
    assert "state_value" not in keys
    s.close()


def test_buffers_are_preallocated_once() -> None:
    s = sampler(store_next_observation=True)
    agent = FakeAgent()
    td1 = s.collect(agent)
    ptrs = {k: td1.get(k).data_ptr() for k in td1.keys(include_nested=True, leaves_only=True)}
    first = td1.clone()
    td2 = s.collect(agent)
    assert td2 is td1
    assert {k: td2.get(k).data_ptr() for k in ptrs} == ptrs
    # the storage was overwritten with new data (the episode continued), not reallocated
    assert not torch.equal(first["observation"], td2["observation"])
    s.close()


def test_transitions_never_cross_episode_boundaries() -> None:
    T, B = 7, 4
    s = sampler(num_envs=B, steps=T, store_next_observation=True)
    agent = FakeAgent()
    lengths = torch.tensor([counting_length(x) for x in env_seeds(0, 0, B)], dtype=torch.float32)
    prev_last = None
    for _ in range(3):
        td = s.collect(agent).clone()
        obs, nxt = td["observation"], td["next", "observation"]
        torch.testing.assert_close(nxt[..., 0], obs[..., 0] + 1, rtol=0, atol=0)
        torch.testing.assert_close(nxt[..., 1], lengths.expand(T, B), rtol=0, atol=0)
        torch.testing.assert_close(td["next", "reward"].squeeze(-1), nxt[..., 0], rtol=0, atol=0)
        done = td["next", "done"].squeeze(-1)
        assert torch.equal(done, nxt[..., 0] == lengths)
        assert torch.equal(done, td["next", "terminated"].squeeze(-1))
        assert not td["next", "truncated"].any()
        # the next step acts on the reset observation where done, on s_{t+1} otherwise
        assert torch.equal(obs[1:][done[:-1]][..., 0], torch.zeros(int(done[:-1].sum())))
        assert torch.equal(obs[1:][~done[:-1]], nxt[:-1][~done[:-1]])
        # rollouts continue the episodes of the previous one
        if prev_last is not None:
            expected0 = torch.where(prev_last[0].unsqueeze(-1), torch.zeros_like(prev_last[1]), prev_last[1])
            expected0[:, 1] = lengths
            assert torch.equal(obs[0], expected0)
        prev_last = (done[-1], nxt[-1])
    s.close()


def test_next_state_value_bootstraps_truncation_with_final_observation() -> None:
    T, B = 9, 4  # lengths 2,3,4,5 and a time limit of 4: env 3 is truncated at t=4, env 2 terminates there
    s = sampler(COUNTING_TL_ID, num_envs=B, steps=T, store_next_observation=True)
    agent = FakeAgent()
    for _ in range(2):
        td = s.collect(agent).clone()
        nxt_obs = td["next", "observation"]
        next_value = td["next", "state_value"]
        done = td["next", "done"].squeeze(-1)
        truncated = td["next", "truncated"].squeeze(-1)
        terminated = td["next", "terminated"].squeeze(-1)
        assert truncated.any() and (truncated & ~terminated).any()
        # episodes of env 3 are cut at TIME_LIMIT steps
        assert nxt_obs[..., 0].max() == TIME_LIMIT
        # value of s_{t+1} where the episode goes on, and of the *final* observation where it was truncated
        keep = ~done | truncated
        torch.testing.assert_close(next_value[keep], value_fn(nxt_obs)[keep], rtol=0, atol=0)
        # the rollout's own values are those of the observations acted on
        torch.testing.assert_close(td["state_value"], value_fn(td["observation"]), rtol=0, atol=0)
        # not the value of the reset observation the env continued from
        reset_value = value_fn(torch.stack([torch.zeros(B), nxt_obs[0, :, 1]], -1))
        for t, b in truncated.nonzero().tolist():
            assert next_value[t, b] != reset_value[b]
    s.close()


def test_last_step_bootstrap_uses_current_value() -> None:
    T, B = 3, 4
    s = sampler(num_envs=B, steps=T, store_next_observation=True)
    agent = FakeAgent()
    td = s.collect(agent)
    # value() called once for the last step (no truncation in this env), act() once per step
    assert agent.act_calls == T and agent.value_calls == 1
    done_last = td["next", "done"][-1].squeeze(-1)
    torch.testing.assert_close(
        td["next", "state_value"][-1][~done_last], value_fn(td["next", "observation"][-1])[~done_last]
    )
    s.close()


@pytest.mark.parametrize("env_id", [COUNTING_ID, COUNTING_TL_ID])
def test_episode_statistics_are_exact(env_id: str) -> None:
    T, B, rollouts = 5, 4, 4
    s = sampler(env_id, num_envs=B, steps=T, episode_window=1000)
    agent = FakeAgent()
    for _ in range(rollouts):
        s.collect(agent)
    n = T * rollouts
    expected = collections.Counter()
    for x in env_seeds(0, 0, B):
        length = counting_length(x)
        if env_id == COUNTING_TL_ID:
            length = min(length, TIME_LIMIT)
        expected[(length * (length + 1) / 2, length)] += n // length
    tr = s.tracker
    assert tr.episodes == sum(expected.values())
    got = collections.Counter(zip(tr.recent_returns, tr.recent_lengths, strict=True))
    assert got == expected
    ret_sum, count = tr.return_sum_count()
    assert count == tr.episodes
    assert ret_sum == pytest.approx(sum(r * c for (r, _), c in expected.items()))
    s.close()


def test_episode_window_bounds_the_mean() -> None:
    tr = EpisodeTracker(2, window=3)
    done = torch.tensor([True, True])
    for r in (1.0, 2.0, 3.0):
        tr.update(torch.tensor([r, 10 * r]), done)
    assert list(tr.recent_returns) == [20.0, 3.0, 30.0]
    assert tr.episodes == 6
    assert tr.return_sum_count() == (53.0, 3)


def test_tracker_hands_episodes_on_with_scores() -> None:
    """``last``/``add``: what sampler processes send the learner; a score travels only where there is one."""
    src = EpisodeTracker(2, window=10)
    src.update_rollout(np.array([[1.0, 2.0], [1.0, 2.0]]), np.array([[False, True], [True, False]]))
    first = src.last(5)  # two episodes so far, without scores
    assert [e[:2] for e in first] == [(2.0, 1.0), (2.0, 2.0)] and all(math.isnan(e[2]) for e in first)
    src.update_rollout(
        np.array([[1.0, 1.0]]), np.array([[True, True]]), scores=np.array([[4.0, 7.0]], dtype=np.float32)
    )
    assert src.last(2) == [(1.0, 1.0, 4.0), (3.0, 2.0, 7.0)]
    dst = EpisodeTracker(1, window=10)
    for episode in src.last(4):
        dst.add(*episode)
    assert list(dst.recent_returns) == [2.0, 2.0, 1.0, 3.0] and list(dst.recent_scores) == [4.0, 7.0]
    assert dst.episodes == 4
    again = EpisodeTracker(1, window=10)
    again.load_state_dict(dst.state_dict())
    assert list(again.recent_scores) == [4.0, 7.0]


def test_tracker_state_dict_round_trip() -> None:
    tr = EpisodeTracker(2, window=10)
    tr.update(torch.tensor([1.0, 2.0]), torch.tensor([False, True]))
    tr.update(torch.tensor([1.0, 2.0]), torch.tensor([True, False]))
    other = EpisodeTracker(2, window=10)
    other.load_state_dict(tr.state_dict())
    assert list(other.recent_returns) == list(tr.recent_returns) == [2.0, 2.0]
    assert list(other.recent_lengths) == [1, 2]
    assert other.episodes == 2


def test_policy_version_is_recorded() -> None:
    s = sampler()
    agent = FakeAgent()
    agent.policy_version = 7
    assert (s.collect(agent)["policy_version"] == 7).all()
    agent.policy_version = 8
    assert (s.collect(agent)["policy_version"] == 8).all()
    s.close()


def test_agent_contract() -> None:
    """The agent protocol declares everything samplers call: act, value (actor-critics), version, env steps."""
    from lightning_accelrl import DQN, PPO
    from lightning_accelrl.sampling.agent import Agent, ValueAgent

    assert isinstance(FakeAgent(), ValueAgent)
    assert isinstance(DQN(), Agent) and not isinstance(DQN(), ValueAgent)  # no state values to bootstrap
    assert isinstance(PPO(), ValueAgent)

    class NoEnvSteps:  # what a sampler process would need to drive its schedules is missing
        device = torch.device("cpu")
        policy_version = 0

        def act(self, observation: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"action": torch.zeros(observation.shape[0], dtype=torch.int64)}

    assert not isinstance(NoEnvSteps(), Agent)


def test_sampler_with_cartpole_and_torch_agent() -> None:
    """A real env and an nn.Module agent: actions come from the agent, transitions are consistent."""
    from lightning_accelrl.nets import ActionDist, ActorCriticMLP

    env = make_env("CartPole-v1", num_envs=3, seed=1)
    net = ActorCriticMLP(env.spec)

    class NetAgent:
        device = torch.device("cpu")
        policy_version = 0

        def act(self, obs):
            params, value = net(obs)
            a = ActionDist(params).sample()
            return {"action": a, "state_value": value}

        def value(self, obs):
            return net.value(obs)

    s = SyncSampler(env, 50, store_next_observation=True)
    td = s.collect(NetAgent())
    assert not td.requires_grad if hasattr(td, "requires_grad") else True
    assert not td["state_value"].requires_grad
    assert set(td["action"].unique().tolist()) == {0, 1}
    done = td["next", "done"].squeeze(-1)
    assert torch.equal(td["observation"][1:][~done[:-1]], td["next", "observation"][:-1][~done[:-1]])
    assert (td["next", "reward"] == 1).all()
    s.close()


def reference_collect(env, agent, steps: int, observation: torch.Tensor) -> tuple[dict, list, torch.Tensor]:
    """The plain, slow definition of a rollout (one synchronous ``env.step`` per step, per-step torch ops):
    the fast path of :class:`SyncSampler` must produce exactly this."""
    rows, returns = collections.defaultdict(list), []
    for _ in range(steps):
        out = agent.act(observation)
        step = env.step(out["action"])
        done = step.terminated | step.truncated
        rows["observation"].append(observation.clone())
        for key, value in out.items():
            rows[key].append(value.clone())
        rows["next", "observation"].append(step.next_observation.clone())
        rows["next", "reward"].append(step.reward.unsqueeze(-1))
        rows["next", "terminated"].append(step.terminated.unsqueeze(-1))
        rows["next", "truncated"].append(step.truncated.unsqueeze(-1))
        rows["next", "done"].append(done.unsqueeze(-1))
        # s_{t+1}'s value: the final observation's where the episode ended (only truncation keeps it)
        rows["next", "state_value"].append(agent.value(step.next_observation))
        returns.append((step.reward.clone(), done.clone()))
        observation = step.observation.clone()
    td = {k: torch.stack(v) for k, v in rows.items()}
    td["policy_version"] = torch.full(td["action"].shape, agent.policy_version)
    return td, returns, observation


@pytest.mark.parametrize(
    ("env_id", "num_envs", "steps"), [(COUNTING_TL_ID, 4, 9), ("CartPole-v1", 16, 40), (COUNTING_ID, 3, 1)]
)
def test_rollouts_equal_the_reference_definition(env_id: str, num_envs: int, steps: int) -> None:
    """The fast path (numpy views, staged flags, overlapped copies, per-rollout statistics) changes nothing."""
    fast = sampler(env_id, num_envs=num_envs, steps=steps, store_next_observation=True, episode_window=10_000)
    ref_env = make_env(env_id, num_envs=num_envs, seed=0, vectorization="sync")
    ref_tracker = EpisodeTracker(num_envs, 10_000)
    agent = FakeAgent()
    agent.policy_version = 3
    observation = ref_env.reset().clone()
    for _ in range(4):
        td = fast.collect(agent)
        ref, steps_done, observation = reference_collect(ref_env, agent, steps, observation)
        keys = set(td.keys(include_nested=True, leaves_only=True))
        assert keys == set(ref)
        for key in keys:
            # ("next", "state_value") at a termination is not used by any estimator; compare it where it is
            keep = (
                ~(ref["next", "terminated"] & ~ref["next", "truncated"])
                if key == ("next", "state_value")
                else ...
            )
            assert td[key].dtype == ref[key].dtype, key
            assert torch.equal(td[key][keep], ref[key][keep]), key
        for reward, done in steps_done:
            ref_tracker.update(reward, done)
    assert fast.tracker.episodes == ref_tracker.episodes > 0
    assert list(fast.tracker.recent_returns) == list(ref_tracker.recent_returns)
    assert list(fast.tracker.recent_lengths) == list(ref_tracker.recent_lengths)
    assert fast.tracker.returns.tolist() == ref_tracker.returns.tolist()
    assert fast.tracker.lengths.tolist() == ref_tracker.lengths.tolist()
    fast.close()
    ref_env.close()


@pytest.mark.parametrize("exact", [True, False])
def test_tracker_rollout_update_equals_step_updates(exact: bool) -> None:
    """Per-rollout statistics (cumulative sums) = per-step ones: exactly for rewards whose sums are exact in
    float64 (integers, clipped, eighths), to rounding for arbitrary floats."""
    rng = torch.Generator().manual_seed(0)
    rewards = torch.randn(70, 5, generator=rng)
    if exact:
        rewards = (rewards * 8).round() / 8
    dones = torch.rand(70, 5, generator=rng) < 0.15
    scores = rewards * 3 + 1  # a second reward stream (Atari's raw game reward), summed the same way
    one, many = EpisodeTracker(5, 1000), EpisodeTracker(5, 1000)
    for t in range(70):
        one.update(rewards[t], dones[t], scores[t])
    for lo, hi in ((0, 20), (20, 21), (21, 70)):  # a one-step rollout in the middle
        many.update_rollout(rewards[lo:hi].numpy(), dones[lo:hi].numpy(), scores[lo:hi].numpy())
    assert one.episodes == many.episodes == len(many.recent_scores) > 10
    # the score of each episode is its own sum of the score stream (checked against a direct per-env loop)
    expected, running = [], [0.0] * 5
    for t in range(70):
        for b in range(5):
            running[b] += float(scores[t, b])
            if dones[t, b]:
                expected.append(running[b])
                running[b] = 0.0
    assert list(many.recent_scores) == pytest.approx(expected, rel=1e-9, abs=1e-9)
    assert list(many.recent_scores) == pytest.approx(list(one.recent_scores), rel=1e-12, abs=1e-12)
    assert list(one.recent_lengths) == list(many.recent_lengths)
    assert one.lengths.tolist() == many.lengths.tolist()
    if exact:
        assert list(one.recent_returns) == list(many.recent_returns)
        assert one.returns.tolist() == many.returns.tolist()
    else:
        assert list(many.recent_returns) == pytest.approx(list(one.recent_returns), rel=1e-12, abs=1e-12)
        assert many.returns.tolist() == pytest.approx(one.returns.tolist(), rel=1e-12, abs=1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_rollouts_with_agent_on_cuda_equal_cpu() -> None:
    """Buffer on the GPU (flags staged on the host, rows copied on the device): the same rollout as on the CPU."""

    class CudaAgent(FakeAgent):
        device = torch.device("cuda")

        def act(self, observation: torch.Tensor) -> dict[str, torch.Tensor]:
            assert observation.is_cuda
            return {k: v.to(observation.device) for k, v in super().act(observation.cpu()).items()}

        def value(self, observation: torch.Tensor) -> torch.Tensor:
            return super().value(observation.cpu()).to(observation.device)

    cpu = sampler(COUNTING_TL_ID, num_envs=4, steps=9, store_next_observation=True)
    gpu = sampler(COUNTING_TL_ID, num_envs=4, steps=9, store_next_observation=True)
    for _ in range(3):
        a, b = cpu.collect(FakeAgent()), gpu.collect(CudaAgent())
        assert b.device.type == "cuda"
        for key in a.keys(include_nested=True, leaves_only=True):
            assert torch.equal(a[key], b[key].cpu()), key
    assert list(cpu.tracker.recent_returns) == list(gpu.tracker.recent_returns)
    cpu.close()
    gpu.close()
