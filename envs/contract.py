"""The contract every backend keeps (see the README, "Environments").

- Observation: ``Dict(camera=Box(0, 255, (H, W, 3 * frame_stack), uint8),
  sensors=Box(-inf, inf, (D,), float32))``, camera channel-last.
- Sensor names are ``"<group>.<element>"``; range rays are ``"rays.<k>.<quantity>"`` with a
  two-digit ray index ``k`` (``rays.03.distance``, ``rays.03.closing_speed``). Groups keep the
  order in which they first appear. Models read groups and rays from the names alone.
- Reward: a weighted sum of the named terms in :data:`REWARD_TERMS`; ``info["reward_terms"]``
  holds each step's weighted terms.
- Episode end: ``info`` carries every key of :data:`EPISODE_KEYS`.
- ``info["road_labels"]``: (H, W) uint8, label id = index into :data:`ROAD_CLASSES`.
"""

from __future__ import annotations

import numpy as np

ROAD_CLASSES: tuple[str, ...] = (
    "off_road",
    "road",
    "lane_marking",
    "vehicle",
    "ego",
    "pedestrian",
    "traffic_light",
)
"""Road-element classes shared by all backends; the index is the label id."""

CLASS_ID: dict[str, int] = {name: i for i, name in enumerate(ROAD_CLASSES)}

# Colours of the embedded backends' camera, one RGB row per class (highway-env's palette for
# road, markings and vehicles; a darker ground off the road so road edges are visible).
PALETTE = np.array(
    [
        (40, 40, 40),  # off_road
        (100, 100, 100),  # road (highway-env grey)
        (255, 255, 255),  # lane_marking (white)
        (100, 200, 255),  # vehicle (highway-env IDM blue)
        (50, 200, 0),  # ego (highway-env ego green)
        (200, 0, 150),  # pedestrian
        (255, 100, 100),  # traffic_light
    ],
    dtype=np.uint8,
)

REWARD_TERMS: tuple[str, ...] = (
    "progress",  # forward speed mapped to [0, 1] over the scenario's speed range
    "collision",  # -1 on the step the ego collides
    "off_road",  # -1 while the ego is off the road
    "lane_keeping",  # -|lateral offset| / half lane width, in [-1, 0]
    "comfort",  # -|action change|, in [-1, 0]
    "goal",  # +1 on the step the scenario goal is reached
)

EPISODE_KEYS: tuple[str, ...] = ("collision", "off_road", "success", "distance", "mean_speed")


def sensor_groups(names: list[str] | tuple[str, ...]) -> dict[str, list[int]]:
    """Indices of the sensor elements of each group, groups in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        groups.setdefault(name.split(".", 1)[0], []).append(i)
    return groups
