"""The headline numbers (success, collision, speed, length, return) computed from episodes whose
outcome is written down in advance, so every summary value is known without the code under test."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from agent.evaluation import SUMMARY_KEYS, evaluate

# seed -> (length, reward per step, collision, off_road, success, distance [m], duration [s])
SCRIPTS: dict[int, tuple[int, float, bool, bool, bool, float, float]] = {
    100: (3, 0.5, True, False, False, 60.0, 3.0),  # crashes at step 3
    101: (5, 1.0, False, False, True, 125.0, 5.0),  # arrives
    102: (2, -1.0, False, True, False, 20.0, 2.0),  # leaves the road
    103: (4, 0.25, True, False, False, 48.0, 4.0),  # crashes at step 4
}


class ScriptedEnv(gym.Env):
    """Plays back the episode :data:`SCRIPTS` names for its reset seed, whatever the actions."""

    observation_space = spaces.Dict(
        camera=spaces.Box(0, 255, (8, 8, 3), np.uint8),
        sensors=spaces.Box(-np.inf, np.inf, (2,), np.float32),
    )
    action_space = spaces.Discrete(5)

    def reset(self, *, seed: int | None = None, options: Any = None) -> tuple[dict, dict]:
        super().reset(seed=seed)
        self.script, self.t = SCRIPTS[int(seed)], 0
        return self._obs(), {"speed": 0.0}

    def _obs(self) -> dict[str, np.ndarray]:
        return {
            "camera": np.zeros((8, 8, 3), np.uint8),
            "sensors": np.array([self.t, 0.0], np.float32),
        }

    def step(self, action: Any) -> tuple[dict, float, bool, bool, dict]:
        length, reward, collision, off_road, success, distance, duration = self.script
        self.t += 1
        info: dict[str, Any] = {"speed": 99.0, "reward_terms": {"progress": reward}}
        done = self.t == length
        if done:
            info.update(
                collision=collision,
                off_road=off_road,
                success=success,
                distance=distance,
                mean_speed=distance / duration,
            )
        return self._obs(), reward, done, False, info

    def render(self) -> None:
        return None


class Idle:
    name = "idle"

    def reset(self, seed: int) -> None:
        pass

    def act(self, obs: dict[str, np.ndarray]) -> int:
        return 1

    def attention(self, obs: dict[str, np.ndarray]) -> None:
        return None


def test_every_summary_figure_from_scripted_episodes() -> None:
    report = evaluate(ScriptedEnv(), Idle(), episodes=4, seed=100)
    summary = report.summary()
    assert set(SUMMARY_KEYS) <= set(summary) | {"episodes"}
    returns = [3 * 0.5, 5 * 1.0, 2 * -1.0, 4 * 0.25]  # 1.5, 5.0, -2.0, 1.0
    assert summary["mean_return"] == pytest.approx(np.mean(returns))  # 1.375
    assert summary["std_return"] == pytest.approx(np.std(returns))
    assert summary["success_rate"] == pytest.approx(1 / 4)
    assert summary["collision_rate"] == pytest.approx(2 / 4)
    assert summary["mean_speed"] == pytest.approx(np.mean([20.0, 25.0, 10.0, 12.0]))  # 16.75
    assert summary["mean_length"] == pytest.approx(np.mean([3, 5, 2, 4]))  # 3.5
    rows = [e.row() for e in report.episodes]
    assert [r["seed"] for r in rows] == [100, 101, 102, 103]
    assert [r["off_road"] for r in rows] == [False, False, True, False]
    assert [r["distance"] for r in rows] == [60.0, 125.0, 20.0, 48.0]
    assert [r["reward_terms"]["progress"] for r in rows] == pytest.approx(returns)


def test_summary_of_a_subset_of_episodes() -> None:
    """Seeds run consecutively from the given one: two episodes from 102 are 102 and 103."""
    summary = evaluate(ScriptedEnv(), Idle(), episodes=2, seed=102).summary()
    assert summary["collision_rate"] == pytest.approx(0.5)  # off road in the other one
    assert summary["success_rate"] == 0.0
    assert summary["mean_return"] == pytest.approx((-2.0 + 1.0) / 2)
    assert summary["mean_length"] == pytest.approx(3.0)
