"""Atari game scores: the learner sees clipped rewards, ``episode_score_mean`` reports the unclipped game score."""

from __future__ import annotations

import torch

from lightning_accelrl import ExperienceDataModule
from lightning_accelrl.data.needs import ExperienceNeeds
from lightning_accelrl.data.rollouts import RolloutSource
from lightning_accelrl.data.source import SourceContext
from lightning_accelrl.data.statistics import LagMeter, reduced_statistics
from lightning_accelrl.envs import make_env
from lightning_accelrl.sampling import SyncSampler
from lightning_accelrl.sampling.alternating import AlternatingSampler

# Space Invaders: a random agent scores 5-30 points per alien, so clipped returns and scores differ; episodes are
# cut at 400 frames (100 agent steps) so that several end within a short test.
GAME = "ALE/SpaceInvaders-v5"
KW = {"max_num_frames_per_episode": 400}


class ObservationAgent:
    """Actions a function of the observation: the same play however the envs are grouped."""

    device = torch.device("cpu")
    policy_version = 0

    def set_env_steps(self, env_steps: int, total_env_steps: int) -> None:
        pass

    def act(self, obs: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"action": (obs.reshape(obs.shape[0], -1).sum(-1, dtype=torch.int64) // 7) % 6}


class RandomAgent:
    device = torch.device("cpu")
    policy_version = 0

    def set_env_steps(self, env_steps: int, total_env_steps: int) -> None:
        pass

    def __init__(self, num_actions: int, seed: int = 0) -> None:
        self.num_actions, self.gen = num_actions, torch.Generator().manual_seed(seed)

    def act(self, obs: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"action": torch.randint(0, self.num_actions, (obs.shape[0],), generator=self.gen)}


def _episode_score_sums(num_actions: int, steps: int) -> list[float]:
    """The same envs and actions stepped by hand: per-episode sums of the game reward, in the order episodes end."""
    env, agent = make_env(GAME, num_envs=4, seed=3, env_kwargs=KW), RandomAgent(num_actions)
    obs, running, done_sums = env.reset(), torch.zeros(4, dtype=torch.float64), []
    for _ in range(steps):
        env.step_async(agent.act(obs)["action"])
        step = env.step_wait_arrays()
        running += torch.from_numpy(step.score_reward).double()
        for i in step.terminated.nonzero()[0].tolist() + step.truncated.nonzero()[0].tolist():
            done_sums.append((i, float(running[i])))
            running[i] = 0.0
        obs = step.observation
    env.close()
    return [score for _, score in done_sums]


def test_sampler_episode_scores_are_the_unclipped_returns() -> None:
    env = make_env(GAME, num_envs=4, seed=3, env_kwargs=KW)
    sampler = SyncSampler(env, 32)
    agent = RandomAgent(env.spec.num_actions)
    for _ in range(8):  # 256 steps per env: two 100-step episodes each
        sampler.collect(agent)
    tr = sampler.tracker
    assert tr.episodes >= 8 and len(tr.recent_scores) == len(tr.recent_returns) == tr.episodes
    assert list(tr.recent_scores) == _episode_score_sums(
        env.spec.num_actions, 8 * 32
    )  # an independent replay
    assert all(r <= s for r, s in zip(tr.recent_returns, tr.recent_scores, strict=True))
    assert sum(tr.recent_scores) > sum(tr.recent_returns)  # clipping changed something: the test can tell
    sampler.close()


def test_alternating_sampler_scores_equal_sync() -> None:
    sync = SyncSampler(make_env(GAME, num_envs=4, seed=1, env_kwargs=KW), 16)
    alt = AlternatingSampler(make_env(GAME, num_envs=4, seed=1, env_kwargs=KW), 16)
    for _ in range(8):  # same seeds, same actions: same episodes
        sync.collect(ObservationAgent())
        alt.collect(ObservationAgent())
    assert sync.tracker.episodes == alt.tracker.episodes > 0
    assert list(sync.tracker.recent_scores) == list(alt.tracker.recent_scores)
    assert len(alt.tracker.recent_scores) == alt.tracker.episodes
    sync.close()
    alt.close()


def _rollout_statistics(env_id: str, env_kwargs: dict | None, num_actions: int):
    """Five rollouts of a random agent through the sync rollout source; its statistics and episodes."""
    dm = ExperienceDataModule(env=env_id, num_envs=4, rollout_steps=32, seed=0, env_kwargs=env_kwargs)
    ctx = SourceContext(dm.env_factory(), dm.env_spec, ExperienceNeeds(), 4, 32, total_env_steps=5 * 4 * 32)
    source, agent = RolloutSource(ctx), RandomAgent(num_actions)
    while source.next_batch(agent) is not None:
        pass
    source.close()
    return reduced_statistics(source, 1.0, LagMeter()), source.tracker


def test_statistics_report_episode_score_mean_only_for_games() -> None:
    stats, tr = _rollout_statistics(GAME, KW, 6)
    assert stats["episode_score_mean"] == sum(tr.recent_scores) / len(tr.recent_scores)
    assert stats["episode_score_mean"] > stats["episode_return_mean"]
    stats, _ = _rollout_statistics("CartPole-v1", None, 2)
    assert "episode_return_mean" in stats
    assert "episode_score_mean" not in stats  # no game score where rewards are not clipped
