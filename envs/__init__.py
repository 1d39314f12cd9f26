"""Driving environments with the camera + sensors observation contract.

``import envs`` registers every backend's Gymnasium ids (string entry points: a backend's
simulator is imported only when one of its envs is made):

- ``DriveAttention/Highway-v0``, ``-/Merge-v0``, ``-/Roundabout-v0``, ``-/Intersection-v0``:
  the embedded highway-env backend (:mod:`envs.highway`);
- ``DriveAttention/BatchedHighway-v0``, ``-/BatchedMerge-v0``: the batched torch simulator
  (:mod:`envs.batched`), B environments per call, also as an SB3 VecEnv;
- ``DriveAttention/Carla-v0``: CARLA through its official client (:mod:`envs.carla`,
  needs ``pip install -e '.[carla]'`` and a running server).
"""

from __future__ import annotations

import os

from gymnasium.envs.registration import register, registry

from envs.configuration import ConfigError
from envs.contract import EPISODE_KEYS, REWARD_TERMS, ROAD_CLASSES, sensor_groups
from envs.scenarios import SCENARIOS

if not os.environ.get("DISPLAY"):
    # highway-env imports pygame; without a display it must render off screen ("dummy" draws
    # nothing at all).
    os.environ.setdefault("SDL_VIDEODRIVER", "offscreen")


def env_id(scenario: str, batched: bool = False) -> str:
    """The Gymnasium id of ``scenario`` on the highway-env backend, or on the batched one."""
    spec = SCENARIOS[scenario]
    if batched and not spec.batched:
        raise ValueError(f"{scenario} has no batched version")
    return f"DriveAttention/{'Batched' if batched else ''}{spec.title}-v0"


HIGHWAY_IDS: dict[str, str] = {env_id(name): name for name in SCENARIOS}
"""highway-env backend ids -> scenario names (every scenario of :mod:`envs.scenarios`)."""
BATCHED_IDS: dict[str, str] = {
    env_id(n, batched=True): n for n, s in SCENARIOS.items() if s.batched
}
"""Batched backend ids -> scenario names (the scenarios with a batched version)."""
CARLA_ID = "DriveAttention/Carla-v0"


def _register() -> None:
    for env_id, scenario in HIGHWAY_IDS.items():
        if env_id not in registry:
            register(env_id, entry_point="envs.highway:DriveEnv", kwargs={"scenario": scenario})
    for env_id, scenario in BATCHED_IDS.items():
        if env_id not in registry:
            register(
                env_id, entry_point="envs.batched:BatchedDriveEnv", kwargs={"scenario": scenario}
            )
    if CARLA_ID not in registry:
        # CARLA is not deterministic under a seed; the env truncates episodes itself
        register(CARLA_ID, entry_point="envs.carla.env:CarlaDriveEnv", nondeterministic=True)


_register()

__all__ = [
    "BATCHED_IDS",
    "CARLA_ID",
    "EPISODE_KEYS",
    "HIGHWAY_IDS",
    "REWARD_TERMS",
    "ROAD_CLASSES",
    "ConfigError",
    "env_id",
    "sensor_groups",
]
