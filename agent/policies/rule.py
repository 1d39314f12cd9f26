"""The hand-written reference controller (``--policy rule``): a cautious driver on the sensors.

It reads the observation's sensor vector, by name (``ego.*`` and ``rays.<k>.*``; see
:func:`envs.scenarios.sensor_names`), never the simulator (the camera only on the signalised
intersection, for its lights), and chooses the same
actions a learned policy could. It keeps its lane and sets its speed from the range rays (which
highway-env and the batched simulator give in the world frame: ray ``k`` points at
``k * 360 / n_rays`` degrees from the world's x axis, whatever the ego's heading):

- **highway, merge** (straight roads along the world's x axis, so the rays are also the ego's
  frame): the vehicle ahead in the ego's lane is the nearest ray hit whose point lies within
  :data:`IN_LANE` of the ego's path ahead. Brake when it is within ``min_gap`` or would be
  reached within ``ttc`` seconds; otherwise drive at the speed that keeps ``headway`` seconds
  behind it, at most ``cruise``. (The merge needs nothing more: slowed behind the traffic, the
  rule lets the ramp vehicle in ahead: its ``route.ramp_vehicle`` sensor never came on in the
  50 episodes of seeds 1000..1049.)
- **roundabout, intersection** with the radar object list (``n_objects`` > 0, as the default
  config has it): gap acceptance. The ego is assumed to go towards the route's look-ahead point
  (``route.ahead_*``) at ``max(speed, GO_SPEED)``, every tracked vehicle to keep its velocity;
  the rule yields (brakes) to any vehicle that would then come within :data:`CONFLICT` of the
  ego within ``gap_horizon`` seconds, except vehicles behind it, and otherwise drives at
  ``gap_cruise`` (each falls back to ``ttc`` and ``cruise`` where it is 0).
- **signalised intersection**: the intersection's gap acceptance (pedestrians are in the object
  list too), and it brakes for a red light, or an amber one it can stop for, within
  :data:`STOP_REACH` of its stop line: the light's state read from the camera's pixels where the
  stop bar crosses its lane (:meth:`RulePolicy.light_ahead`), the line's distance from the
  ``route.stop_line`` sensor. The only rule that looks at the camera.
- **roundabout, intersection** with rays only (curved roads, and no sensor gives the ego's world
  heading, so the rule cannot tell ahead from behind): yield to any vehicle that closes in and
  is within ``min_gap`` or ``ttc`` seconds of contact, from any direction; otherwise drive at
  ``cruise``. A vehicle that waits behind the ego does not close in, so it does not hold it up;
  oncoming traffic in the next lane does, so at the intersection this rule mostly waits (0%
  success in 50 highway-env episodes from seed 1000, against 64% for the object-list rule).

Meta-actions (every scenario): ``slower`` to brake or when faster than the wanted speed by
``tolerance``, ``faster`` when slower than it by ``tolerance``, else ``idle``; it never changes
lanes (on the roundabout and intersection the meta-actions' lane controller follows the route by
itself). ``[steer, accel]`` (highway and merge only; refused elsewhere): pure pursuit of the lane
centre from the lateral offset and heading sensors, and a proportional speed controller towards
the same wanted speed (a stop when braking). Deterministic: the same observation always gives
the same action, and the rule keeps no state between steps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from gymnasium import spaces

from drive_attention import envs
from drive_attention.agent.policies.base import AttentionView
from drive_attention.envs.configuration import ConfigError
from drive_attention.envs.contract import DISCRETE_ACTIONS, LIGHT_PALETTE, LIGHT_STATES
from drive_attention.envs.observation import CameraGeometry
from drive_attention.envs.scenarios import (
    CLOSING_SCALE,
    OBJECT_QUANTITIES,
    SCENARIOS,
    SPEED_SCALE,
    STOP_SCALE,
    ScenarioConfig,
)

LANE_WIDTH = 4.0  # [m] highway-env's lanes (the lateral offset sensor is a fraction of it)
IN_LANE = 2.5  # [m] a ray hit this close to the ego's path ahead is in its lane
WHEELBASE = 5.0  # [m] highway-env's kinematic bicycle (vehicle length)
STEERING_RANGE = math.pi / 4  # [rad] steer = 1 (highway-env's ContinuousAction)
ACCEL_RANGE = 5.0  # [m/s^2] accel = 1
SPEED_GAIN = 0.5  # [1/s] continuous accel = gain x speed error
BRAKE_GAIN = 2.0  # [1/s] the same when braking to a stop (full braking above 2.5 m/s)
MIN_CLOSING = 0.5  # [m/s] slower closing speeds are not "closing in"
LEFT, IDLE, RIGHT, FASTER, SLOWER = (DISCRETE_ACTIONS.index(a) for a in DISCRETE_ACTIONS)


@dataclass(frozen=True)
class Caution:
    """How cautiously the rule drives one scenario."""

    cruise: float  # [m/s] speed when the way is clear
    min_gap: float  # [m] brake for a (closing) vehicle this close
    ttc: float  # [s] brake for a vehicle reached within this time (distance / closing speed)
    headway: float = 0.0  # [s] time gap kept to the vehicle ahead (road-frame scenarios)
    tolerance: float = 2.0  # [m/s] speed error before a faster / slower meta-action
    road_frame: bool = True  # straight road along x: rays read ahead of the ego's lane
    # gap acceptance on the object list (curved roads): cruise speed [m/s] and horizon [s]
    gap_cruise: float = 0.0  # 0: ``cruise``
    gap_horizon: float = 0.0  # 0: ``ttc``
    reads_lights: bool = False  # stop for red and amber lights seen on the camera

    def __post_init__(self) -> None:
        if self.road_frame and self.headway <= 0:
            raise ConfigError(f"Caution: a road-frame rule needs headway > 0 s, got {self.headway}")


CAUTION: dict[str, Caution] = {
    "highway": Caution(cruise=25.0, min_gap=12.0, ttc=5.0, headway=1.5),
    "merge": Caution(cruise=25.0, min_gap=12.0, ttc=5.0, headway=1.5),
    "roundabout": Caution(cruise=8.0, min_gap=5.0, ttc=2.5, tolerance=3.0, road_frame=False),
    "intersection": Caution(
        cruise=4.5,
        min_gap=8.0,
        ttc=5.0,
        tolerance=1.5,
        road_frame=False,
        gap_cruise=9.0,
        gap_horizon=3.0,
    ),
}
"""The rule's settings per scenario name (:data:`envs.scenarios.SCENARIOS`)."""
CAUTION["signalized"] = replace(CAUTION["intersection"], reads_lights=True)
STOP_DECELERATION = 3.0  # [m/s^2] the rule stops for an amber light if this suffices
STOP_REACH = 30.0  # [m] the rule brakes for a red light this close (two slower steps at 9 m/s)


@dataclass
class Reading:
    """The sensors the rule uses, in physical units."""

    speed: float  # [m/s]
    heading: float  # [rad] relative to the lane, positive turning right (y down)
    lateral: float  # [m] from the lane centre, positive to the right
    distance: np.ndarray  # (n_rays,) [m] to the nearest vehicle per world direction
    closing: np.ndarray  # (n_rays,) [m/s] how fast it closes in (0 without a hit)
    angle: np.ndarray  # (n_rays,) [rad] world direction of each ray
    objects: np.ndarray | None = None  # (M, [x, y, vx, vy]) [m, m/s] the tracked vehicles
    route: np.ndarray | None = None  # (2,) unit vector to the route ahead, ego frame


CONFLICT = 4.0  # [m] centres this close at the same moment: in each other's way (5 m cars;
# chosen with ttc on highway-env's intersection, seeds 1000..1029: 4.0-5.0 m x 2-3 s)
BEHIND = -2.0  # [m] vehicles further behind than this are theirs to avoid, not the ego's
GO_SPEED = 6.0  # [m/s] the least speed the ego is assumed to go at when it goes


def predicted_conflict(
    objects: np.ndarray, path: np.ndarray, speed: float, horizon: float
) -> np.ndarray:
    """Which tracked vehicles come within :data:`CONFLICT` of the ego within ``horizon`` seconds
    if the ego goes along ``path`` (a unit vector in its frame, towards the route ahead) at
    ``max(speed, GO_SPEED)`` and every vehicle keeps its velocity: the exact closest approach
    of the two straight-line motions within the horizon.

    ``objects``: (K, [x, y, vx, vy]) positions [m] and velocities relative to the ego [m/s] in
    the ego's frame. Vehicles behind the ego (x below :data:`BEHIND`) are left out: braking does
    not help against them."""
    x, y, vx, vy = objects.T
    ego_vx, ego_vy = path * max(speed, GO_SPEED)  # the ego's planned velocity
    rx, ry = vx + speed - ego_vx, vy - ego_vy  # theirs over the ground minus the ego's plan
    rel2 = rx * rx + ry * ry
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(rel2 > 1e-9, -(x * rx + y * ry) / rel2, 0.0)
    t = np.clip(t, 0.0, horizon)  # [s] when they are closest within the horizon
    gap = np.hypot(x + rx * t, y + ry * t)  # [m]
    return (gap < CONFLICT) & (x > BEHIND)


class RulePolicy:
    """The cautious hand-written controller of one scenario (see the module docstring)."""

    name = "rule"

    def __init__(
        self,
        scenario: str,
        sensor_names: Sequence[str],
        action_space: spaces.Space,
        ray_range: float = ScenarioConfig.ray_range,
        camera: CameraGeometry | None = None,
    ) -> None:
        """``camera``: the env's camera geometry, for a rule that reads lights (default: the
        scenario's with the default options)."""
        if scenario not in CAUTION:
            raise ConfigError(
                f"--policy rule: no rule for the scenario {scenario!r}; it drives "
                f"{', '.join(CAUTION)} (the highway-env and batched ids)"
            )
        if isinstance(action_space, spaces.Discrete) and action_space.n == len(DISCRETE_ACTIONS):
            self.discrete = True
        elif isinstance(action_space, spaces.Box) and action_space.shape == (2,):
            if not CAUTION[scenario].road_frame:
                raise ConfigError(
                    f"--policy rule: on {scenario} the rule drives only the meta-actions (it "
                    "steers [steer, accel] on the straight roads, highway and merge); set "
                    "env.kwargs.action=discrete"
                )
            self.discrete = False
        else:
            raise ConfigError(
                f"--policy rule: the action space {action_space} is neither the "
                f"{len(DISCRETE_ACTIONS)} meta-actions nor [steer, accel]; use env.kwargs.action "
                "discrete or continuous"
            )
        self.scenario = scenario
        self.caution = CAUTION[scenario]
        camera = camera or ScenarioConfig(scenario=scenario).camera_geometry
        ego_x, ego_y = camera.ego_px
        self.ego_pixel = (round(ego_y), round(ego_x))  # row, col
        self.scaling = camera.px_per_m  # [px/m]
        self.ray_range = float(ray_range)  # [m]
        self.lateral_scale = SCENARIOS[scenario].object_lateral_scale(self.ray_range)  # [m]
        names = list(sensor_names)
        wanted = ["ego.speed", "ego.heading_sin", "ego.lateral_offset"]
        missing = [n for n in wanted if n not in names]
        self.rays = [i for i, n in enumerate(names) if n.startswith("rays.")]
        if missing or not self.rays:
            raise ConfigError(
                f"--policy rule: the env's sensors lack {', '.join(missing) or 'rays.*'}; the "
                "rule reads the embedded backends' ego and ray sensors"
            )
        self.index = {n: i for i, n in enumerate(names)}
        n_rays = len(self.rays) // 2
        self.angles = np.arange(n_rays) * (2 * math.pi / n_rays)  # (n_rays,) highway-env lidar
        # the radar object list (n_objects > 0): (K, [present, x, y, vx, vy]) indices
        k_max = sum(1 for n in names if n.startswith("objects.") and n.endswith(".present"))
        self.objects = np.array(
            [[self.index[f"objects.{k:02d}.{q}"] for q in OBJECT_QUANTITIES] for k in range(k_max)],
            dtype=np.int64,
        ).reshape(k_max, len(OBJECT_QUANTITIES))

    def reset(self, seed: int) -> None:
        pass  # no state, no randomness

    def attention(self, obs: dict[str, np.ndarray]) -> AttentionView | None:
        return None

    # ------------------------------------------------------------------ reading the sensors
    def read(self, sensors: np.ndarray) -> Reading:
        """The sensor vector (D,) in physical units."""
        s, i = np.asarray(sensors, np.float64), self.index
        rays = s[self.rays].reshape(-1, 2)  # (n_rays, [distance, closing]) normalised
        return Reading(
            speed=s[i["ego.speed"]] * SPEED_SCALE,
            heading=math.asin(float(np.clip(s[i["ego.heading_sin"]], -1, 1))),
            lateral=s[i["ego.lateral_offset"]] * LANE_WIDTH,
            distance=rays[:, 0] * self.ray_range,
            closing=rays[:, 1] * CLOSING_SCALE,
            angle=self.angles,
            objects=self.tracked(s) if len(self.objects) else None,
            route=self.route_direction(s),
        )

    def tracked(self, s: np.ndarray) -> np.ndarray:
        """(M, [x, y, vx, vy]) the object list's filled rows in metres and m/s (ego frame)."""
        present, x, y, vx, vy = s[self.objects].T
        rows = np.stack([x * self.ray_range, y * self.lateral_scale, vx, vy], -1)
        rows[:, 2:] *= CLOSING_SCALE
        return rows[present > 0.5]

    def route_direction(self, s: np.ndarray) -> np.ndarray | None:
        """Unit vector (ego frame) towards the route's look-ahead point, where the env has it."""
        if "route.ahead_x" not in self.index:
            return None
        ahead = np.array([s[self.index["route.ahead_x"]], s[self.index["route.ahead_y"]]])
        norm = float(np.linalg.norm(ahead))
        return ahead / norm if norm > 1e-6 else None

    # ------------------------------------------------------------------ deciding
    def wanted_speed(self, r: Reading) -> tuple[float, bool]:
        """The speed [m/s] the rule wants now, and whether it must brake."""
        c = self.caution
        if not c.road_frame and r.objects is not None:
            # yield to the tracked vehicles whose path crosses the ego's within the horizon
            path = np.array([1.0, 0.0]) if r.route is None else r.route
            conflict = predicted_conflict(r.objects, path, r.speed, c.gap_horizon or c.ttc)
            return c.gap_cruise or c.cruise, bool(np.any(conflict))
        if not c.road_frame:  # yield to whatever closes in, from any direction
            closing = r.closing > MIN_CLOSING
            soon = r.distance < np.maximum(c.min_gap, c.ttc * r.closing)
            return c.cruise, bool(np.any(closing & soon))
        # the vehicle ahead in the ego's lane: ray hits ahead, within IN_LANE of its path
        x, y = r.distance * np.cos(r.angle), r.distance * np.sin(r.angle)
        ahead = (x > 0) & (np.abs(y) < IN_LANE) & (r.distance < self.ray_range)
        gap = float(r.distance[ahead].min()) if ahead.any() else math.inf  # [m]
        closing = float(r.closing[ahead][np.argmin(r.distance[ahead])]) if ahead.any() else 0.0
        brake = gap < c.min_gap or (closing > MIN_CLOSING and gap < c.ttc * closing)
        return min(c.cruise, (gap - c.min_gap) / c.headway), brake

    def light_ahead(self, camera: np.ndarray, stop_distance: float) -> str | None:
        """The state of the ego's light as its camera shows it, where the stop bar lies across
        its lane ahead: ``"red"``, ``"amber"``, ``"green"`` or None (not in view).

        The camera is world-aligned and the ego's incoming lane runs up the frame (the
        signalised scenario starts it on its southern arm), so the bar is in the ego's column
        of pixels (+-2), within ``stop_distance`` + 4 m above its row."""
        frame = np.asarray(camera)[..., -3:]  # the newest frame
        row, col = self.ego_pixel
        reach = math.ceil((stop_distance + 4.0) * self.scaling)
        band = frame[max(0, row - reach) : row, max(0, col - 2) : col + 3]
        for state in ("red", "amber", "green"):
            if (band == LIGHT_PALETTE[LIGHT_STATES.index(state)]).all(-1).any():
                return state
        return None

    def stop_for_light(self, obs: dict[str, np.ndarray], r: Reading) -> bool:
        """Whether a red light (or an amber one it can stop for) holds the ego before its line
        (the ``route.stop_line`` sensor: metres to it, 1 past it)."""
        line = float(obs["sensors"][self.index["route.stop_line"]])
        if line >= 1.0:  # past the stop line
            return False
        distance = line * STOP_SCALE
        state = self.light_ahead(obs["camera"], distance)
        stoppable = distance > r.speed**2 / (2 * STOP_DECELERATION)
        return distance < STOP_REACH and (state == "red" or (state == "amber" and stoppable))

    def act(self, obs: dict[str, np.ndarray]) -> Any:
        r = self.read(obs["sensors"])
        target, brake = self.wanted_speed(r)
        if self.caution.reads_lights and self.stop_for_light(obs, r):
            brake = True
        if self.discrete:
            if brake or r.speed > target + self.caution.tolerance:
                return SLOWER
            return FASTER if r.speed < target - self.caution.tolerance else IDLE
        gain, target = (BRAKE_GAIN, 0.0) if brake else (SPEED_GAIN, target)
        accel = float(np.clip(gain * (target - r.speed) / ACCEL_RANGE, -1.0, 1.0))  # 1: 5 m/s^2
        return np.array([self.steer(r), accel], np.float32)

    def steer(self, r: Reading) -> float:
        """[-1, 1] pure pursuit of the lane centre ``max(6 m, 1 s)`` ahead."""
        cos, sin = math.cos(r.heading), math.sin(r.heading)
        look = max(6.0, r.speed)  # [m]
        # the lane centre ahead in the ego frame (the lane runs along x, the ego is at lateral)
        x, y = cos * look - sin * r.lateral, -sin * look - cos * r.lateral
        curvature = 2.0 * y / (x * x + y * y)  # [1/m]
        return float(np.clip(math.atan(WHEELBASE * curvature) / STEERING_RANGE, -1.0, 1.0))


def has_rule(env_id: str) -> bool:
    """Whether the rule drives ``env_id`` (the highway-env and batched ids)."""
    return env_id in envs.HIGHWAY_IDS or env_id in envs.BATCHED_IDS


def check_has_rule(env_id: str) -> None:
    """:class:`ConfigError` unless the rule drives ``env_id`` (asked before the env is made)."""
    if not has_rule(env_id):
        raise ConfigError(
            f"--policy rule: {env_id} has no rule; it drives the highway-env and batched ids "
            f"({', '.join([*envs.HIGHWAY_IDS, *envs.BATCHED_IDS])})"
        )


def rule_policy(
    env_id: str, env_kwargs: dict[str, Any], sensor_names: Sequence[str], action_space: spaces.Space
) -> RulePolicy:
    """The rule for ``env_id`` (a highway-env or batched id) made with ``env_kwargs``."""
    check_has_rule(env_id)
    scenario = envs.HIGHWAY_IDS.get(env_id) or envs.BATCHED_IDS[env_id]
    options = envs.options(env_id, env_kwargs)
    return RulePolicy(
        scenario,
        sensor_names,
        action_space,
        ray_range=options.ray_range,
        camera=options.camera_geometry,
    )


__all__ = [
    "CAUTION",
    "Caution",
    "Reading",
    "RulePolicy",
    "check_has_rule",
    "has_rule",
    "rule_policy",
]
