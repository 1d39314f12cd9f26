"""The lookahead bound (`evaluate.py --policy lookahead`) and the env copies it plans in."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from test_rule_policy import evaluate_main

from drive_attention.agent.evaluate.rollout import evaluate
from drive_attention.agent.evaluate.scene import HighwayScene
from drive_attention.agent.policies.lookahead import FASTER, IDLE, SLOWER, LookaheadPolicy
from drive_attention.agent.run.config import ConfigError

INTERSECTION = "DriveAttention/Intersection-v0"


def play(env: gym.Env, actions: list[int]) -> dict:
    """Step ``env`` with ``actions`` (the last one repeats) to the episode's end; its last info."""
    k = 0
    while True:
        _, _, terminated, truncated, info = env.step(actions[min(k, len(actions) - 1)])
        k += 1
        if terminated or truncated:
            return info


def test_a_planning_copy_foresees_the_episode_and_leaves_the_original_alone() -> None:
    """What a copy's steps give is what the original then does with the same actions (the
    traffic's random draws are copied too), and stepping the copy changes nothing of the
    original: the lookahead's plans are the episode's true futures."""
    env = gym.make(INTERSECTION).unwrapped
    env.reset(seed=7)
    for _ in range(2):
        env.step(IDLE)
    position, time = np.array(env.ego.position), env._time
    plan = [SLOWER, SLOWER, IDLE, FASTER]
    twin = env.planning_copy()
    foreseen = play(twin, plan)
    assert twin.ego is not env.ego and twin.sim is not env.sim
    assert np.array_equal(env.ego.position, position) and env._time == time  # untouched
    happened = play(env, plan)
    for key in ("success", "collision", "off_road", "distance", "mean_speed"):
        assert foreseen[key] == pytest.approx(happened[key]), key
    assert twin._time == env._time


def test_a_planning_copy_of_a_filmed_episode_steps_its_own_road() -> None:
    """A video recorder asks the env for every simulation frame; a copy made while filming must
    move its own vehicles, not the filmed episode's, and never call the original's recorder."""
    env = gym.make(INTERSECTION)
    env.reset(seed=3)
    scene = HighwayScene.attach(env, scale=2)
    scene.start()
    env.step(IDLE)
    scene.take_between()
    base = env.unwrapped
    positions = np.array([v.position for v in base.sim.road.vehicles])
    twin = base.planning_copy()
    for _ in range(3):
        twin.step(FASTER)
    assert np.array_equal([v.position for v in base.sim.road.vehicles], positions)
    assert not np.allclose(twin.ego.position, base.ego.position)  # the copy did move
    assert scene.take_between() == [] and twin._on_frame is None
    env.step(IDLE)  # the filmed episode still records its own steps
    assert len(scene.take_between()) > 0
    env.close()


def test_ties_go_to_the_first_action_listed(monkeypatch: pytest.MonkeyPatch) -> None:
    """When every plan has the same outcome the planner keeps idle, the first action it tries
    (not the last, which would brake or speed up for nothing)."""
    env = gym.make("DriveAttention/Highway-v0")
    env.reset(seed=0)
    planner = LookaheadPolicy(env)
    monkeypatch.setattr(planner, "outcome", lambda first, plan: (1, 0.0))
    assert planner.first_actions[0] == IDLE and planner.act({}) == IDLE
    better = {SLOWER: (1, 1.0)}  # a strictly better outcome still wins
    monkeypatch.setattr(planner, "outcome", lambda first, plan: better.get(first, (1, 0.0)))
    assert planner.act({}) == SLOWER
    env.close()


@pytest.mark.slow  # about a minute; the batched teacher's test makes the same claim in seconds
def test_the_lookahead_arrives_where_idle_crashes() -> None:
    """On the first intersection episode where keeping the speed crashes, planning in copies
    finds a way through (the bound docs/evaluation.md quotes rests on this)."""
    env = gym.make(INTERSECTION)
    crashed = []
    for seed in range(40):
        env.reset(seed=seed)
        if play(env, [IDLE])["collision"]:
            crashed.append(seed)
            break
    assert crashed, "no idle crash in 40 intersection episodes"
    planner = LookaheadPolicy(env, horizon=15.0)
    for seed in crashed:
        (result,) = evaluate(env, planner, episodes=1, seed=seed).episodes
        assert result.success and not result.collision, seed
    env.close()


def test_lookahead_through_the_evaluate_script_and_its_refusals(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "lookahead.json"
    config = tmp_path / "short.yaml"  # 3 s episodes keep it quick
    config.write_text(f"env:\n  id: {INTERSECTION}\n  kwargs: {{duration: 3}}\n")
    code = evaluate_main(
        "--policy", "lookahead", "--config", config, "--episodes", 1, "--seed", 3, "--json", out
    )
    assert code == 0 and json.loads(out.read_text())["policy"] == "lookahead"
    out.unlink()
    for env_id, says in (
        ("DriveAttention/BatchedIntersection-v0", "cannot be copied"),
        ("DriveAttention/Carla-v0", "cannot be copied"),  # refused without asking for a server
    ):
        code = evaluate_main("--policy", "lookahead", "--env", env_id, "--json", out)
        err = capsys.readouterr().err
        assert code == 2 and says in err and "Traceback" not in err, err
    assert not out.exists()
    with pytest.raises(ConfigError, match="discrete"):
        LookaheadPolicy(gym.make("DriveAttention/Highway-v0", action="continuous"))
    with pytest.raises(ConfigError, match="horizon"):
        LookaheadPolicy(gym.make(INTERSECTION), horizon=0)
