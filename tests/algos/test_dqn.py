"""DQN family: each option acts (double-Q, dueling, n-step, prioritized, target updates, ε), C51's projection,
and the replay-mode data module (limiter-driven stepping, no deadlock, ratio held)."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from foundation_helpers import COUNTING_ID, COUNTING_TL_ID, TIME_LIMIT, trainer_kwargs
from tensordict import TensorDict

from lightning_accelrl import DQN, CategoricalDQN, ExperienceDataModule
from lightning_accelrl.algos.c51 import project_distribution
from lightning_accelrl.algos.dqn import linear_schedule
from lightning_accelrl.data.replay import replay_limiter
from lightning_accelrl.envs.base import EnvSpec
from lightning_accelrl.errors import ConfigError
from lightning_accelrl.nets.q import QNetwork

SPEC = EnvSpec((2,), torch.float32, discrete=True, num_actions=2)


class Fixed(torch.nn.Module):
    """A 'network' returning fixed values for every observation."""

    def __init__(self, values: list[float]) -> None:
        super().__init__()
        self.values = torch.tensor(values)  # per observation: [A] or [A, atoms]

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.values.expand(obs.shape[0], *self.values.shape)


def crafted_batch(n: int = 1) -> TensorDict:
    return TensorDict(
        {
            "observation": torch.zeros(n, 2),
            "action": torch.zeros(n, dtype=torch.int64),
            "bootstrap_discount": torch.full((n, 1), 0.5),
            "next": {"observation": torch.ones(n, 2), "reward": torch.ones(n, 1)},
        },
        [n],
    )


def test_double_q_target_differs_from_plain_q_target() -> None:
    plain, double = DQN(env_spec=SPEC.to_dict()), DQN(double_q=True, env_spec=SPEC.to_dict())
    for m in (plain, double):
        m.configure_model()
        m.q, m.q_target = Fixed([1.0, 0.0]), Fixed([0.0, 5.0])  # online prefers action 0, target action 1
    batch = crafted_batch()
    assert plain.target_values(batch).item() == pytest.approx(1 + 0.5 * 5.0)  # max of the target net
    assert double.target_values(batch).item() == pytest.approx(1 + 0.5 * 0.0)  # target net at online argmax


def test_bootstrap_discount_zero_at_termination_gives_reward_only() -> None:
    m = DQN(env_spec=SPEC.to_dict())
    m.configure_model()
    m.q = m.q_target = Fixed([3.0, 7.0])
    batch = crafted_batch(2)
    batch["bootstrap_discount"][1] = 0.0
    assert m.target_values(batch).tolist() == pytest.approx([1 + 0.5 * 7.0, 1.0])


def test_dueling_head_is_value_plus_centred_advantage() -> None:
    torch.manual_seed(0)
    net = QNetwork(SPEC, "mlp", (8,), dueling=True)
    obs = torch.randn(5, 2)
    q = net(obs)
    x = net.features(obs)
    value, adv = net.value_stream(x), net.advantage(x)
    assert torch.allclose(q, value + adv - adv.mean(-1, keepdim=True), atol=1e-6)
    assert torch.allclose(q.mean(-1, keepdim=True), value, atol=1e-6)  # the value stream is the mean Q
    plain = QNetwork(SPEC, "mlp", (8,), dueling=False)
    assert plain.value_stream is None and plain(obs).shape == (5, 2)


def test_distributional_head_shape() -> None:
    net = QNetwork(SPEC, "mlp", (8,), dueling=True, num_atoms=11)
    assert net(torch.randn(3, 2)).shape == (3, 2, 11)


def test_epsilon_schedule_and_greedy_policy() -> None:
    assert linear_schedule(1.0, 0.1, 0.5, 0.0) == 1.0
    assert linear_schedule(1.0, 0.1, 0.5, 0.25) == pytest.approx(0.55)
    assert linear_schedule(1.0, 0.1, 0.5, 0.9) == pytest.approx(0.1)
    m = DQN(exploration_initial=1.0, exploration_final=0.0, exploration_fraction=0.5, env_spec=SPEC.to_dict())
    m.configure_model()
    m.q = Fixed([0.0, 1.0])
    torch.manual_seed(0)
    actions = m.act(torch.zeros(4000, 2))["action"]  # progress 0: epsilon 1 -> uniform
    assert 0.45 < actions.float().mean().item() < 0.55
    assert m.policy(torch.zeros(10, 2)).eq(1).all()


def test_hard_and_polyak_target_updates() -> None:
    hard = DQN(target_update_period=3, env_spec=SPEC.to_dict())
    soft = DQN(target_tau=0.5, env_spec=SPEC.to_dict())
    for m in (hard, soft):
        m.configure_model()
        with torch.no_grad():
            for p in m.q.parameters():
                p.add_(1.0)
    before = [p.clone() for p in hard.q_target.parameters()]
    for hard.updates in (1, 2):
        hard.update_target(32)
    assert all(torch.equal(a, b) for a, b in zip(before, hard.q_target.parameters(), strict=True))
    hard.updates = 3
    hard.update_target(32)
    assert all(
        torch.equal(a, b) for a, b in zip(hard.q.parameters(), hard.q_target.parameters(), strict=True)
    )
    old = [p.clone() for p in soft.q_target.parameters()]
    for _ in range(2):  # the second average starts from the first's result
        soft.update_target(32)
    for o, t, q in zip(old, soft.q_target.parameters(), soft.q.parameters(), strict=True):
        assert torch.allclose(t, 0.25 * o + 0.75 * q)
        # averaged in place outside autograd: the target stays a constant leaf, no graph chained across updates
        assert t.is_leaf and not t.requires_grad and t.grad_fn is None


def test_importance_weights_follow_probabilities() -> None:
    m = DQN(prioritized=True, importance_beta_initial=0.5, importance_beta_final=0.5, env_spec=SPEC.to_dict())
    m.configure_model()
    batch = TensorDict(
        {"probability": torch.tensor([0.5, 0.25, 0.25]), "table_size": torch.tensor([4, 4, 4])}, [3]
    )
    w = m.importance_weights(batch)
    expected = torch.tensor([2.0, 1.0, 1.0]) ** -0.5
    assert torch.allclose(w, expected / expected.max())
    assert torch.equal(DQN(env_spec=SPEC.to_dict()).importance_weights(batch), torch.ones(3))


def test_c51_projection_matches_hand_computation() -> None:
    support = torch.tensor([0.0, 1.0, 2.0])
    probs = torch.tensor([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]])
    reward = torch.tensor([0.5, 5.0])
    discount = torch.tensor([0.5, 0.0])
    out = project_distribution(probs, reward, discount, support)
    # row 0: atoms move to 0.5, 1.0, 1.5 -> 0.2 split (0.1, 0.1); 0.3 on 1; 0.5 split (0.25 on 1, 0.25 on 2)
    assert torch.allclose(out[0], torch.tensor([0.1, 0.65, 0.25]))
    # row 1: terminal, reward 5 is clipped to v_max = 2
    assert torch.allclose(out[1], torch.tensor([0.0, 0.0, 1.0]))
    assert torch.allclose(out.sum(-1), torch.ones(2))


def test_c51_q_values_are_expectations_over_the_support() -> None:
    m = CategoricalDQN(num_atoms=3, v_min=0.0, v_max=2.0, env_spec=SPEC.to_dict())
    m.configure_model()
    m.q = Fixed([[0.0, 0.0, 0.0], [0.0, 0.0, 100.0]])
    assert torch.allclose(m.q_values(torch.zeros(1, 2)), torch.tensor([[1.0, 2.0]]))


def test_replay_limiter_band_is_wide_enough_or_rejected() -> None:
    lim = replay_limiter(4.0, 100, 64, None)
    assert lim.max_diff - lim.min_diff >= 64 + 4.0
    with pytest.raises(ConfigError, match="replay_error_buffer"):
        replay_limiter(4.0, 100, 64, 10.0)
    # a training batch of K updates samples K·B at once: the band must hold that sample
    assert replay_limiter(4.0, 100, 3 * 64, 100.0).max_diff >= replay_limiter(4.0, 100, 64, 100.0).max_diff
    with pytest.raises(ConfigError, match="updates_per_batch"):
        replay_limiter(4.0, 100, 3 * 64, 50.0)


def fit_replay(model, **data) -> ExperienceDataModule:
    L.seed_everything(0, verbose=False)
    dm = ExperienceDataModule(**{"env": "CartPole-v1", "updates_per_epoch": 10_000, **data})
    L.Trainer(**trainer_kwargs()).fit(model, datamodule=dm)
    return dm


@pytest.mark.parametrize(
    ("ratio", "batch", "envs"), [(0.25, 64, 1), (1.0, 256, 3), (8.0, 32, 8), (32.0, 64, 16), (3.0, 500, 2)]
)
def test_replay_mode_never_deadlocks_and_holds_the_ratio(ratio: float, batch: int, envs: int) -> None:
    dm = fit_replay(
        DQN(hidden=(16,)),
        num_envs=envs,
        total_env_steps=1200,
        batch_size=batch,
        replay_ratio=ratio,
        learning_starts=200,
    )
    info = dm.source.table.info()
    assert dm.env_steps >= 1200 and dm.env_steps < 1200 + envs
    achieved = info["samples"] / info["inserts"]
    lim = dm.source.table.rate_limiter
    # the limiter's band: I*spi - S stays within [min_diff - batch, max_diff]
    assert lim.min_diff - batch <= info["inserts"] * ratio - info["samples"] <= lim.max_diff
    assert dm.updates_done == info["samples"] // batch
    if ratio * 1000 >= 10 * batch:
        assert achieved == pytest.approx(ratio * (1 - 200 / info["inserts"]), rel=0.35)


def test_prioritized_updates_reach_the_table_and_n_step_is_passed_through() -> None:
    model = DQN(hidden=(16,), prioritized=True, n_step=3, gamma=0.9)
    dm = fit_replay(
        model, num_envs=2, total_env_steps=600, batch_size=16, replay_ratio=2.0, learning_starts=100
    )
    assert dm.source.producer.writer.n == 3 and dm.source.producer.writer.gamma == 0.9
    table = dm.source.table
    assert type(table.sampler).__name__ == "Prioritized"
    state = table.state_dict()
    sampled = state["times_sampled"] > 0
    assert sampled.any() and (~sampled).any()
    # Never sampled: each kept the largest priority given before its insert (PER's p_max, 1 at the start), so
    # in insert order they never decrease and none passes the table's running largest.
    fresh = state["priorities"][~sampled][state["keys"][~sampled].argsort()]
    assert (fresh >= 1.0).all() and (fresh.diff() >= 0).all()
    assert state["top_priority"] >= state["priorities"].max().item()
    assert (state["priorities"][sampled] != 1.0).all()  # |TD error| + eps after their first sample


def test_n_step_transitions_in_the_table_match_a_hand_computation() -> None:
    model = DQN(hidden=(8,), n_step=2, gamma=0.5)
    dm = fit_replay(
        model,
        env=COUNTING_ID,
        num_envs=1,
        total_env_steps=60,
        batch_size=4,
        replay_ratio=0.5,
        learning_starts=8,
    )
    batch = dm.source.table.storage.read(torch.arange(dm.source.table.size))
    assert len(batch) >= 30
    for i in range(len(batch)):
        t = float(batch["observation"][i, 0])
        length = float(batch["observation"][i, 1])
        m = min(2.0, length - t)  # steps until the episode ends or n
        rewards = [t + 1 + k for k in range(int(m))]  # reward of step t is t + 1
        expected = sum(r * 0.5**k for k, r in enumerate(rewards))
        assert float(batch["next", "reward"][i]) == pytest.approx(expected)
        assert float(batch["next", "observation"][i, 0]) == t + m
        terminal = t + m == length
        assert float(batch["bootstrap_discount"][i]) == pytest.approx(0.0 if terminal else 0.5**m)


@pytest.mark.parametrize("bootstrap_truncated", [True, False])
def test_time_limit_ends_bootstrap_unless_the_algorithm_says_otherwise(bootstrap_truncated: bool) -> None:
    """Episodes of lengths 2..6 under a time limit of 4: the items that end at the limit bootstrap with γ^m by
    default and carry discount 0 with ``bootstrap_truncated=False``; real ends carry 0 either way."""
    model = DQN(hidden=(8,), n_step=2, gamma=0.5, bootstrap_truncated=bootstrap_truncated)
    assert model.experience_needs().bootstrap_truncated is bootstrap_truncated
    dm = fit_replay(
        model, env=COUNTING_TL_ID, num_envs=5, total_env_steps=200, batch_size=4, replay_ratio=0.5,
        learning_starts=20,
    )  # fmt: skip
    batch = dm.source.table.storage.read(torch.arange(dm.source.table.size))
    cut = 0
    for i in range(len(batch)):
        t, length = (float(v) for v in batch["observation"][i])
        end = min(t + 2, length, TIME_LIMIT)
        terminal, truncated = end == length, end == TIME_LIMIT  # Gymnasium: both at a length-4 episode's end
        cut += truncated and not terminal
        stops = terminal or (truncated and not bootstrap_truncated)
        assert float(batch["bootstrap_discount"][i]) == pytest.approx(0.0 if stops else 0.5 ** (end - t))
        assert bool(batch["next", "truncated"][i]) is truncated  # the env's flags are stored as they were
    assert cut > 0


@pytest.mark.parametrize("prioritized", [False, True])
def test_updates_per_batch_gives_each_update_its_own_share_of_one_sample(
    prioritized: bool, monkeypatch
) -> None:
    """K = 3: one table sample of 3·B items per training batch, split into 3 updates of B in order; the
    replay ratio and the update count are those of one update per batch."""
    calls: list[torch.Tensor] = []
    batches: list[torch.Tensor] = []
    update, next_batch = DQN.update, ExperienceDataModule.next_batch

    def recording_update(self, batch):
        calls.append(batch["key"].clone())
        return update(self, batch)

    def recording_batch(self):
        batch = next_batch(self)
        if batch is not None:
            batches.append(batch["key"].clone())
        return batch

    monkeypatch.setattr(DQN, "update", recording_update)
    monkeypatch.setattr(ExperienceDataModule, "next_batch", recording_batch)
    model = DQN(hidden=(16,), updates_per_batch=3, prioritized=prioritized)
    dm = fit_replay(
        model, num_envs=4, total_env_steps=1_200, batch_size=8, replay_ratio=4.0, learning_starts=100
    )
    assert len(calls) == model.updates == dm.updates_done == 3 * len(batches) and model.updates > 30
    assert all(keys.shape == (3, 8) for keys in batches)
    assert torch.equal(torch.stack(calls), torch.cat(batches))  # update k of a batch gets row k of its sample
    info = dm.source.table.info()
    assert info["samples"] == 8 * model.updates
    assert abs(info["samples"] / info["inserts"] - 4.0) < 0.5  # the limiter still holds the ratio


def test_replay_mode_budget_and_config_errors() -> None:
    with pytest.raises(ConfigError, match="replay_ratio"):
        ExperienceDataModule("CartPole-v1", replay_ratio=0)
    with pytest.raises(ConfigError, match="replay_capacity"):
        fit_replay(DQN(hidden=(8,)), total_env_steps=100, replay_capacity=50, learning_starts=100)
    with pytest.raises(ConfigError, match="n_step"):
        DQN(n_step=0)
    assert math.isclose(linear_schedule(0.4, 1.0, 1.0, 0.5), 0.7)


def test_replay_runs_are_reproducible_from_the_seed() -> None:
    params = []
    for _ in range(2):
        model = DQN(hidden=(16,))
        fit_replay(
            model, num_envs=4, total_env_steps=1500, batch_size=32, replay_ratio=4.0, learning_starts=200
        )
        params.append(torch.cat([p.flatten() for p in model.q.parameters()]))
    assert torch.equal(
        params[0], params[1]
    )  # env seeds, ε-greedy draws and replay sampling all follow the seed
