"""The contract every backend keeps, and the one implementation of what it names.

Every backend (see docs/observations.md) calls these instead of computing them itself, so an
episode reports the same statistics whichever backend ran it. The batched backend keeps torch
twins of the per-step parts (:mod:`envs.batched.contract`), held to these by a parity test.

- Observation: ``Dict(camera=Box(0, 255, (H, W, 3 * frame_stack), uint8),
  sensors=Box(-inf, inf, (D,), float32))``, camera channel-last (:func:`observation_space`,
  :class:`FrameStack`).
- Sensor names are ``"<group>.<element>"``; range rays are ``"rays.<k>.<quantity>"`` with a
  two-digit ray index ``k`` (``rays.03.distance``, ``rays.03.closing_speed``). Groups keep the
  order in which they first appear. Models read groups and rays from the names alone.
- Actions: highway-env's five meta-actions (:data:`DISCRETE_ACTIONS`, idle = :data:`IDLE`) or
  ``[steer, accel]`` in [-1, 1] (:func:`action_space`, :func:`idle_action`).
- Reward: a weighted sum of the named terms in :data:`REWARD_TERMS` (:func:`reward_terms`,
  :func:`weigh`); ``info["reward_terms"]`` holds each step's weighted terms.
- Episode end: ``info`` carries every key of :data:`EPISODE_KEYS` (:class:`EpisodeStats`).
- ``info["road_labels"]``: (H, W) uint8, label id = index into :data:`ROAD_CLASSES`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from gymnasium import spaces

from drive_attention.envs.configuration import ConfigError

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

LIGHT_STATES: tuple[str, ...] = ("green", "amber", "red")
"""Traffic-light states (the signalised intersection's); the camera shows each in its colour."""
LIGHT_LABELS: tuple[int, ...] = tuple(len(ROAD_CLASSES) + i for i in range(len(LIGHT_STATES)))
"""Label ids the embedded backends draw lights with inside their camera (one per state of
:data:`LIGHT_STATES`); outside, in ``info["road_labels"]``, they all read ``traffic_light``
(:func:`public_labels`)."""
LIGHT_PALETTE = np.array([(0, 230, 130), (255, 190, 0), (230, 20, 20)], dtype=np.uint8)
CAMERA_PALETTE = np.concatenate([PALETTE, LIGHT_PALETTE])
"""Camera colour of every label id the embedded backends draw: :data:`PALETTE`, then the
lights' states."""


def public_labels(labels: Any) -> Any:
    """Label maps as ``info["road_labels"]`` gives them: a light in any state is
    ``traffic_light`` (numpy arrays or torch tensors, same type out)."""
    light = CLASS_ID["traffic_light"]
    if isinstance(labels, np.ndarray):
        return np.where(labels >= len(ROAD_CLASSES), light, labels).astype(labels.dtype)
    return labels.masked_fill(labels >= len(ROAD_CLASSES), light)  # a torch tensor


REWARD_TERMS: tuple[str, ...] = (
    "alive",  # +1 on every step that ends without a collision or leaving the road
    "progress",  # forward speed mapped to [0, 1] over the scenario's speed range
    "collision",  # -1 on the step the ego collides
    "off_road",  # -1 while the ego is off the road
    "lane_keeping",  # -|lateral offset| / half lane width, in [-1, 0]
    "comfort",  # -|action change|, in [-1, 0]
    "goal",  # +1 on the step the scenario goal is reached
    "red_light",  # -1 on the step the ego crosses a stop line on red (signalised scenarios)
)

EPISODE_KEYS: tuple[str, ...] = ("collision", "off_road", "success", "distance", "mean_speed")

DISCRETE_ACTIONS: tuple[str, ...] = ("left", "idle", "right", "faster", "slower")
"""highway-env's DiscreteMetaAction order (lane left, idle, lane right, faster, slower)."""
IDLE = DISCRETE_ACTIONS.index("idle")
ActionKind = str  # "discrete" or "continuous"


def sensor_groups(names: list[str] | tuple[str, ...]) -> dict[str, list[int]]:
    """Indices of the sensor elements of each group, groups in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        groups.setdefault(name.split(".", 1)[0], []).append(i)
    return groups


# ------------------------------------------------------------------------------ spaces, render
def observation_space(
    camera_size: tuple[int, int], frame_stack: int, n_sensors: int
) -> spaces.Dict:
    """``Dict(camera=(H, W, 3 * frame_stack) uint8, sensors=(n_sensors,) float32)``."""
    h, w = camera_size
    return spaces.Dict(
        camera=spaces.Box(0, 255, (h, w, 3 * frame_stack), np.uint8),
        sensors=spaces.Box(-np.inf, np.inf, (n_sensors,), np.float32),
    )


def action_space(kind: ActionKind) -> spaces.Space:
    """Five meta-actions, or ``[steer, accel]`` in [-1, 1]."""
    if kind == "discrete":
        return spaces.Discrete(len(DISCRETE_ACTIONS))
    return spaces.Box(-1.0, 1.0, (2,), np.float32)


def simulator_seed(np_random: np.random.Generator, seed: int | None) -> int:
    """The seed for a backend's simulator: ``seed`` itself, else one drawn from the env's own
    generator, so that the seed given to ``reset`` fixes everything that follows."""
    return int(np_random.integers(2**31 - 1)) if seed is None else int(seed)


def idle_action(kind: ActionKind) -> Any:
    """The action that keeps the current lane and speed target (no steering, no throttle)."""
    return IDLE if kind == "discrete" else np.zeros(2, np.float32)


class SimulatorUnavailable(RuntimeError):
    """The simulator a backend needs cannot be reached (e.g. no CARLA server is listening); the
    message says how to start it."""


class ActionError(ValueError):
    """An action outside the env's action space: wrong shape, not a number, not finite, or not
    one of the meta-actions. Raised before anything is simulated, so the env stays usable."""


def describe_actions(kind: ActionKind) -> str:
    if kind == "discrete":
        listed = ", ".join(f"{i} {name}" for i, name in enumerate(DISCRETE_ACTIONS))
        return f"one integer meta-action ({listed})"
    return "two finite numbers [steer, accel] (clipped to [-1, 1])"


def check_action(action: Any, kind: ActionKind, env: str) -> Any:
    """``action`` as a backend applies it (a meta-action index, or ``[steer, accel]`` clipped to
    [-1, 1]), or :class:`ActionError` naming ``env`` and the action.

    Finite continuous actions outside [-1, 1] are clipped (as SB3 clips its policies'); a NaN or
    infinity, a wrong shape, a non-integer or out-of-range meta-action is refused.
    """
    try:
        a = np.asarray(action)
        numeric = a.dtype.kind in "iuf" and bool(np.isfinite(a).all())
    except (TypeError, ValueError):
        numeric = False
    if kind == "discrete":
        if numeric and a.size == 1 and float(a.reshape(())) % 1 == 0:
            index = int(a.reshape(()))
            if 0 <= index < len(DISCRETE_ACTIONS):
                return index
    elif numeric and a.size == 2:
        return np.clip(a.astype(np.float32).reshape(2), -1.0, 1.0)
    raise ActionError(
        f"{env}: action {action!r} is not {describe_actions(kind)}; nothing was simulated, the "
        "env can go on with a valid action"
    )


def action_vector(action: Any, kind: ActionKind) -> np.ndarray:
    """The action as the ``ego.last_action_*`` / ``ego.last_*`` sensors hold it: a one-hot
    (5,) for meta-actions, the clipped (2,) ``[steer, accel]`` otherwise."""
    if kind == "discrete":
        return np.eye(len(DISCRETE_ACTIONS), dtype=np.float32)[int(action)]
    return np.clip(np.asarray(action, np.float32).reshape(2), -1.0, 1.0)


RENDER_MODES: tuple[str, ...] = ("rgb_array",)


def check_render_mode(render_mode: str | None) -> str | None:
    """``render_mode`` if a backend supports it (None or "rgb_array"), else ConfigError."""
    if render_mode not in (None, *RENDER_MODES):
        raise ConfigError(f"render_mode: {render_mode!r} is not supported; use 'rgb_array'")
    return render_mode


@dataclass
class FrameStack:
    """The last ``n`` camera frames (H, W, 3) concatenated along channels, oldest first."""

    n: int
    frames: list[np.ndarray] = field(default_factory=list)

    def reset(self, frame: np.ndarray) -> np.ndarray:
        self.frames = [frame] * self.n
        return self.stacked()

    def push(self, frame: np.ndarray) -> np.ndarray:
        self.frames = [*self.frames[1:], frame] if self.frames else [frame] * self.n
        return self.stacked()

    def stacked(self) -> np.ndarray:
        if self.n == 1:
            return self.frames[-1]
        return np.concatenate(self.frames, axis=2)  # (H, W, 3 * n)

    @property
    def latest(self) -> np.ndarray:
        return self.frames[-1]


# ------------------------------------------------------------------------------ reward
def action_change(action: np.ndarray, previous: np.ndarray, kind: ActionKind) -> float:
    """What the comfort term penalises, in [0, 1]: for meta-actions, 1 when the action differs
    from the previous one and is not idle; for continuous actions, the mean |change| / 2."""
    if kind == "discrete":
        return float(not np.array_equal(action, previous) and int(np.argmax(action)) != IDLE)
    change = np.abs(np.asarray(action, float) - np.asarray(previous, float))  # in [0, 2]
    return float(min(change.mean() / 2.0, 1.0))


def reward_terms(
    *,
    forward_speed: float,  # [m/s] along the lane or route
    speed_range: tuple[float, float],  # [m/s] mapped to progress 0..1
    collision: bool,
    off_road: bool,
    lateral: float,  # [m] offset from the lane centre
    lane_width: float,  # [m]
    change: float,  # action_change(), in [0, 1]
    goal: bool,
    red_light: bool = False,  # the ego crossed a stop line on red during the step
) -> dict[str, float]:
    """Unweighted reward terms of :data:`REWARD_TERMS`, each in [-1, 1]."""
    lo, hi = speed_range
    return {
        "alive": float(not (collision or off_road)),
        "progress": float(np.clip((forward_speed - lo) / (hi - lo), 0.0, 1.0)),
        "collision": -float(bool(collision)),
        "off_road": -float(bool(off_road)),
        "lane_keeping": -float(min(abs(lateral) / max(lane_width / 2.0, 1e-3), 1.0)),
        "comfort": -float(change),
        "goal": float(bool(goal)),
        "red_light": -float(bool(red_light)),
    }


def weigh(terms: dict[str, float], weights: dict[str, float]) -> dict[str, float]:
    """Weighted terms (what ``info["reward_terms"]`` holds; the reward is their sum)."""
    return {name: float(weights.get(name, 0.0) * value) for name, value in terms.items()}


# ------------------------------------------------------------------------------ episode
@dataclass
class EpisodeStats:
    """The episode-end keys of :data:`EPISODE_KEYS`, one definition for every backend.

    - ``distance`` [m]: the ego's displacement summed over policy steps (the path length at the
      decision rate), whatever its speed sensor says;
    - ``mean_speed`` [m/s]: ``distance`` over the episode's duration (steps x ``dt``);
    - ``collision`` / ``off_road``: whether it happened at any step of the episode;
    - ``success``: given by the backend (its scenario's verdict at the last step).
    """

    dt: float  # [s] per policy step
    position: np.ndarray | None = None  # (2,) [m] at the last step
    steps: int = 0
    distance: float = 0.0  # [m]
    collision: bool = False
    off_road: bool = False

    def start(self, position: Any) -> None:
        """A new episode with the ego at ``position`` (2,) [m]."""
        self.position = np.asarray(position, float)[:2].copy()
        self.steps, self.distance = 0, 0.0
        self.collision = self.off_road = False

    def record(self, position: Any, collision: bool, off_road: bool) -> None:
        """One policy step that ended with the ego at ``position`` (2,) [m]."""
        here = np.asarray(position, float)[:2]
        if self.position is None:
            raise RuntimeError("EpisodeStats.start() must be called at the episode start")
        self.distance += math.hypot(*(here - self.position))
        self.position = here.copy()
        self.steps += 1
        self.collision |= bool(collision)
        self.off_road |= bool(off_road)

    @property
    def mean_speed(self) -> float:
        duration = self.steps * self.dt  # [s]
        return self.distance / duration if duration > 0 else 0.0

    def summary(self, success: bool) -> dict[str, Any]:
        """The :data:`EPISODE_KEYS` of the episode so far."""
        out = {
            "collision": bool(self.collision),
            "off_road": bool(self.off_road),
            "success": bool(success),
            "distance": float(self.distance),
            "mean_speed": float(self.mean_speed),
        }
        assert tuple(out) == EPISODE_KEYS
        return out
