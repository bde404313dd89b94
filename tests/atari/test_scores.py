"""Atari game scores: the learner sees clipped rewards, ``episode_score_mean`` reports the unclipped game score."""

from __future__ import annotations

import torch

from lightning_accelrl import ExperienceDataModule
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

    def act(self, obs: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"action": (obs.reshape(obs.shape[0], -1).sum(-1, dtype=torch.int64) // 7) % 6}


class RandomAgent:
    device = torch.device("cpu")

    def __init__(self, num_actions: int, seed: int = 0) -> None:
        self.num_actions, self.gen = num_actions, torch.Generator().manual_seed(seed)

    def act(self, obs: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"action": torch.randint(0, self.num_actions, (obs.shape[0],), generator=self.gen)}


def test_sampler_episode_scores_are_the_unclipped_returns() -> None:
    env = make_env(GAME, num_envs=4, seed=3, env_kwargs=KW)
    sampler = SyncSampler(env, 32)
    agent = RandomAgent(env.spec.num_actions)
    for _ in range(8):  # 256 steps per env: two 100-step episodes each
        sampler.collect(agent)
    tr = sampler.tracker
    assert tr.episodes >= 8 and len(tr.recent_scores) == len(tr.recent_returns) == tr.episodes
    assert list(tr.recent_scores) == list(env.recent_scores)[-tr.episodes :]  # the env's own per-episode sums
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


def test_datamodule_reports_episode_score_mean_only_for_games() -> None:
    dm = ExperienceDataModule(
        env=GAME, num_envs=4, rollout_steps=32, total_env_steps=1024, seed=0, env_kwargs=KW
    )
    sampler = SyncSampler(make_env(GAME, num_envs=4, seed=0, env_kwargs=KW), 32)
    for _ in range(5):
        sampler.collect(RandomAgent(6))
    dm.tracker = sampler.tracker
    stats = dm.statistics()
    tr = sampler.tracker
    assert stats["episode_score_mean"] == sum(tr.recent_scores) / len(tr.recent_scores)
    assert stats["episode_score_mean"] > stats["episode_return_mean"]
    sampler.close()
    cartpole = SyncSampler(make_env("CartPole-v1", num_envs=4, seed=0), 64)
    cartpole.collect(RandomAgent(2))
    dm.tracker = cartpole.tracker
    assert "episode_score_mean" not in dm.statistics()  # no game score where rewards are not clipped
    cartpole.close()
