"""AtariEnv (ale_py's C++ vector env): layout, protocol defaults, seeding, same-step autoreset, async batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lightning_accelrl.envs import make_env, probe_spec
from lightning_accelrl.envs.atari import AtariEnv, ale_game, atari_spec
from lightning_accelrl.errors import ConfigError

pytest.importorskip("ale_py")

# a truncation every ~15-25 agent steps (frames counted after the no-op starts vary per env)
SHORT = {"max_num_frames_per_episode": 100}


def test_layout_dtypes_and_spec() -> None:
    with AtariEnv("ALE/Pong-v5", num_envs=3, seed=1) as env:
        obs = env.reset()
        assert obs.shape == (3, 4, 84, 84) and obs.dtype == torch.uint8
        assert env.spec == atari_spec("ALE/Pong-v5") == probe_spec("ALE/Pong-v5")
        assert env.spec.num_actions == 6 and env.spec.discrete
        for actions in (
            torch.zeros(3, dtype=torch.int32),
            np.array([1, 2, 3]),
            torch.tensor([5, 0, 1]).float(),
        ):
            step = env.step(actions)
        assert step.next_observation.shape == (3, 4, 84, 84) and step.observation.dtype == torch.uint8
        assert step.reward.dtype == torch.float32 and step.reward.shape == (3,)
        assert step.terminated.dtype == torch.bool and step.truncated.dtype == torch.bool
        frames = env.render()
        assert len(frames) == 3 and frames[0].shape == (84, 84, 3) and frames[0].dtype == np.uint8


def test_full_action_space_and_names() -> None:
    assert atari_spec("Breakout", {"full_action_space": True}).num_actions == 18
    assert atari_spec("Breakout").num_actions == 4
    assert [ale_game(x) for x in ("ALE/Pong-v5", "Pong", "PongNoFrameskip-v4", "ALE/MsPacman-v5")] == [
        "pong",
        "pong",
        "pong",
        "ms_pacman",
    ]


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown Atari game.*pong"):
        make_env("ALE/Pongg-v5", 2)
    with pytest.raises(ConfigError, match="sticky_actions"):
        make_env("ALE/Pong-v5", 2, env_kwargs={"sticky_actions": 0.25})
    with pytest.raises(ConfigError, match="repeat_action_probability"):
        make_env("ALE/Pong-v5", 2, env_kwargs={"repeat_action_probability": 2.0})


def test_v5_protocol_defaults_sticky_actions() -> None:
    env = make_env("ALE/Pong-v5", 2)
    assert isinstance(env, AtariEnv)
    p = env.protocol
    assert p["repeat_action_probability"] == 0.25  # v5, not AtariVectorEnv's 0.0
    assert (p["frameskip"], p["noop_max"], p["full_action_space"]) == (4, 30, False)
    assert p["reward_clipping"] and not p["episodic_life"]
    env.close()


def _play(env: AtariEnv, steps: int) -> torch.Tensor:
    """Frames seen under a fixed, varied action sequence."""
    frames = [env.reset().clone()]
    for t in range(steps):
        frames.append(env.step(torch.full((env.num_envs,), t % env.spec.num_actions)).observation.clone())
    return torch.stack(frames)


def test_seeding_and_sticky_actions_change_trajectories() -> None:
    a = _play(AtariEnv("Breakout", 2, seed=7), 60)
    b = _play(AtariEnv("Breakout", 2, seed=7), 60)
    assert torch.equal(a, b)  # seeded: reproducible, sticky actions included
    assert AtariEnv("Breakout", 4, seed=7, rank=1).seeds == [11, 12, 13, 14]  # seed + rank * num_envs + i
    c = _play(AtariEnv("Breakout", 2, seed=7, repeat_action_probability=0.0), 60)
    assert not torch.equal(a, c)  # sticky actions are on by default


def _check_episode_boundaries(env: AtariEnv, steps: int, actions: int) -> int:
    """Same-step contract on every step; returns how many episode ends were seen."""
    obs = env.reset().clone()
    assert (obs[:, :3] == 0).all() and (obs[:, 3] > 0).any(dim=(-1, -2)).all()  # first stack: zero padding
    ends = 0
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        step = env.step(torch.randint(0, actions, (env.num_envs,), generator=gen))
        done = step.terminated | step.truncated
        # s' continues s (the stack shifts by one frame), also on done rows: next_observation is the true final
        assert torch.equal(step.next_observation[:, :3], obs[:, 1:])
        assert torch.equal(step.next_observation[~done], step.observation[~done])
        for i in done.nonzero().flatten().tolist():
            ends += 1
            assert not torch.equal(step.next_observation[i], step.observation[i])
            assert (
                step.observation[i, :3] == 0
            ).all()  # the new episode's first stack: no frame of the old one
            assert (step.observation[i, 3] > 0).any()
        obs = step.observation.clone()
    return ends


def test_same_step_autoreset_at_truncations() -> None:
    with AtariEnv("ALE/Pong-v5", 3, seed=0, **SHORT) as env:
        assert _check_episode_boundaries(env, 60, 6) >= 3


def test_same_step_autoreset_at_terminations_episodic_life() -> None:
    # ALE's episodic_life ends the episode (terminated) at each life loss
    with AtariEnv("Breakout", 2, seed=0, episodic_life=True) as env:
        assert _check_episode_boundaries(env, 120, 4) >= 2


def test_async_batches_send_recv() -> None:
    with AtariEnv("Pong", 4, seed=0, batch_size=2, **SHORT) as env:
        with pytest.raises(RuntimeError, match="async"):
            env.reset()
        obs, ids = env.async_reset()
        assert obs.shape == (2, 4, 84, 84) and ids.shape == (2,)
        with pytest.raises(ValueError, match="last received batch"):
            env.send(torch.zeros(2, dtype=torch.long), (ids + 1) % 4)
        last = {}
        seen = set()
        for _ in range(400):  # which envs come back first depends on thread scheduling: stop once all have
            if seen == {0, 1, 2, 3} and len(last) == 4:
                break
            env.send(torch.zeros(2, dtype=torch.long), ids)
            step, ids = env.recv()
            assert step.observation.shape == (2, 4, 84, 84)
            for row, i in enumerate(ids.tolist()):
                seen.add(i)
                if i in last:  # stepped rows continue their own env's stack (resets come first, unpaired)
                    assert torch.equal(step.next_observation[row, :3], last[i][1:])
                last[i] = step.observation[row].clone()
        assert seen == {0, 1, 2, 3}


def test_split_keeps_seeds() -> None:
    env = AtariEnv("Pong", 4, seed=3)
    groups = env.split(2)
    assert [g.seeds for g in groups] == [[3, 4], [5, 6]]
    assert all(g.protocol == env.protocol for g in groups)
    for g in groups:
        g.close()


def test_gymnasium_alternative_same_layout() -> None:
    pytest.importorskip("cv2")
    env = make_env("ALE/Pong-v5", 2, seed=0, vectorization="sync", env_kwargs=SHORT)
    try:
        assert env.spec == atari_spec("ALE/Pong-v5")
        obs = env.reset()
        assert obs.shape == (2, 4, 84, 84) and obs.dtype == torch.uint8
        assert (obs[:, :3] == 0).all()  # zero padding, as ALE's C++ stack
        step = env.step(torch.zeros(2, dtype=torch.long))
        assert torch.equal(step.next_observation[:, :3], obs[:, 1:])
    finally:
        env.close()


def test_rewards_clipped_for_learning_raw_scores_kept() -> None:
    def run(clip: bool) -> tuple[list[float], list[float]]:
        returns: list[float] = []
        scores: list[float] = []
        with AtariEnv("Breakout", 2, seed=5, reward_clipping=clip, repeat_action_probability=0.0) as env:
            env.reset()
            acc, score = np.zeros(2), np.zeros(2)
            gen = torch.Generator().manual_seed(1)
            for _ in range(400):
                env.step_async(torch.randint(0, 4, (2,), generator=gen))
                step = env.step_wait_arrays()  # the learner's reward and, beside it, the game's own
                assert np.abs(step.reward).max() <= (1 if clip else 7)
                acc += step.reward
                score += step.score_reward
                for i in (step.terminated | step.truncated).nonzero()[0].tolist():
                    returns.append(float(acc[i]))
                    scores.append(float(score[i]))
                    acc[i] = score[i] = 0
            return returns, scores

    clipped, scores = run(True)
    raw, raw_scores = run(False)
    assert scores == raw_scores == raw and len(scores) >= 2  # same play; scores are the unclipped returns
    assert all(c <= s for c, s in zip(clipped, scores, strict=True))
