"""The default reward weights of every registered id, pinned: one table resolves them for every
backend (envs/scenarios.py), and changing a default must be a deliberate edit here too."""

from __future__ import annotations

import pytest

from drive_attention import envs
from drive_attention.envs.configuration import ConfigError
from drive_attention.envs.contract import REWARD_TERMS

SURVIVE = {  # highway: surviving is the task
    "alive": 1.0,
    "progress": 1.0,
    "collision": 3.0,
    "off_road": 1.0,
    "lane_keeping": 0.05,
    "comfort": 0.02,
    "goal": 1.0,
    "red_light": 0.0,
}
GOAL = {**SURVIVE, "alive": 0.0, "progress": 0.5, "collision": 1.0}  # a place to reach
PINNED: dict[str, dict[str, float]] = {
    "DriveAttention/Highway-v0": SURVIVE,
    "DriveAttention/Merge-v0": GOAL,
    "DriveAttention/Roundabout-v0": GOAL,
    "DriveAttention/Intersection-v0": GOAL,
    "DriveAttention/BatchedHighway-v0": SURVIVE,
    "DriveAttention/BatchedMerge-v0": GOAL,
    "DriveAttention/BatchedRoundabout-v0": GOAL,
    "DriveAttention/BatchedIntersection-v0": GOAL,
    "DriveAttention/BatchedSignalized-v0": {**GOAL, "red_light": 1.0},
    "DriveAttention/Carla-v0": {
        "alive": 0.0,
        "progress": 0.5,
        "collision": 20.0,
        "off_road": 1.0,
        "lane_keeping": 0.2,
        "comfort": 0.05,
        "goal": 20.0,
        "red_light": 0.0,
    },
}


def test_every_registered_id_is_pinned() -> None:
    assert set(PINNED) == {*envs.HIGHWAY_IDS, *envs.BATCHED_IDS, envs.CARLA_ID}


@pytest.mark.parametrize("env_id", sorted(PINNED))
def test_default_weights_are_pinned(env_id: str) -> None:
    weights = envs.reward_weights(env_id)
    assert list(weights) == list(REWARD_TERMS)
    assert weights == PINNED[env_id]


@pytest.mark.parametrize("env_id", sorted(PINNED))
def test_given_weights_override_only_their_terms(env_id: str) -> None:
    weights = envs.reward_weights(env_id, reward_weights={"collision": 7.5})
    assert weights == {**PINNED[env_id], "collision": 7.5}


@pytest.mark.parametrize("env_id", ["DriveAttention/Merge-v0", "DriveAttention/Carla-v0"])
def test_an_unknown_term_is_named_with_the_closest(env_id: str) -> None:
    with pytest.raises(ConfigError, match=r"reward_weights.colision.*did you mean 'collision'"):
        envs.reward_weights(env_id, reward_weights={"colision": 1.0})
