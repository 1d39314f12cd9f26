"""The embedded backend: highway-env scenarios behind the multimodal observation contract.

highway-env simulates the road and the traffic (IDM and MOBIL drivers, the ego's kinematic
bicycle model, collisions); this module replaces its observation, reward and episode logic:

- camera: an ego-centred top-down raster (:mod:`envs.highway.raster`) drawn from the road state, with
  the road-element label map for free;
- sensors: ego state, highway-env's lidar (distance and closing speed per ray) and the route;
- reward: the named terms of :data:`envs.contract.REWARD_TERMS`, weighted by config.
"""

from __future__ import annotations

import functools
import itertools
from collections import deque
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from highway_env.envs.common.observation import LidarObservation
from highway_env.envs.highway_env import HighwayEnvFast
from highway_env.envs.intersection_env import IntersectionEnv
from highway_env.envs.merge_env import MergeEnv
from highway_env.envs.roundabout_env import RoundaboutEnv
from highway_env.vehicle.behavior import IDMVehicle

from envs.configuration import ConfigError, build, check, closest
from envs.contract import EPISODE_KEYS, REWARD_TERMS, sensor_groups
from envs.highway.raster import Rasterizer, box_mask, colorize, vehicle_corners


class IntersectionIDMVehicle(IDMVehicle):
    """highway-env's IDM driver for the intersection: that scenario sets its drivers' class-wide
    gap and comfort parameters when it spawns traffic, which would change every other scenario's
    drivers in the same process if they shared the class."""


@dataclass(frozen=True)
class Scenario:
    """What differs between scenarios: the simulator class, its settings, the task."""

    sim_class: type
    sim_config: dict[str, Any]
    view_m: float  # [m] width of road seen across the frame
    centering: tuple[float, float]  # ego position in the frame, fractions of (W, H)
    speed_range: tuple[float, float]  # [m/s] mapped to progress 0..1
    duration: float  # [s] episode length
    destinations: tuple[str, ...] = ()  # route end nodes, one picked at random per episode


SCENARIOS: dict[str, Scenario] = {
    "highway": Scenario(
        HighwayEnvFast,
        {"lanes_count": 3, "vehicles_count": 20, "simulation_frequency": 5},
        view_m=64.0,
        centering=(0.3, 0.5),
        speed_range=(20.0, 30.0),
        duration=30.0,
    ),
    "merge": Scenario(
        MergeEnv,
        {"simulation_frequency": 10},
        view_m=64.0,
        centering=(0.3, 0.5),
        speed_range=(20.0, 30.0),
        duration=20.0,
    ),
    "roundabout": Scenario(
        RoundaboutEnv,
        {"simulation_frequency": 10},
        view_m=64.0,
        centering=(0.5, 0.5),
        speed_range=(4.0, 16.0),
        duration=20.0,
        destinations=("exs", "nxs", "wxs"),
    ),
    "intersection": Scenario(
        IntersectionEnv,
        {
            "simulation_frequency": 10,
            "other_vehicles_type": f"{__name__}.IntersectionIDMVehicle",
        },
        view_m=64.0,
        centering=(0.5, 0.5),
        speed_range=(4.0, 9.0),
        duration=15.0,
        destinations=("o1", "o2", "o3"),
    ),
}

DEFAULT_REWARD_WEIGHTS: dict[str, float] = {
    "progress": 0.5,
    "collision": 1.0,
    "off_road": 1.0,
    "lane_keeping": 0.05,
    "comfort": 0.02,
    "goal": 1.0,
}

SPEED_SCALE = 40.0  # [m/s] ego speed normalisation
CLOSING_SCALE = 30.0  # [m/s] ray closing-speed normalisation
EDGE_SCALE = 12.0  # [m] road-edge distance normalisation
ROUTE_AHEAD = 20.0  # [m] route look-ahead point
MERGE_END_X = 370.0  # [m] where highway-env's merge scenario ends
IDLE = 1  # highway-env's DiscreteMetaAction index of IDLE


@dataclass
class DriveEnvConfig:
    """Options of the embedded backend (``gymnasium.make(id, **options)``)."""

    scenario: Literal["highway", "merge", "roundabout", "intersection"] = "highway"
    camera_size: tuple[int, int] = (64, 64)  # (H, W) [px]
    frame_stack: int = 1  # frames stacked along the channel axis
    view_m: float | None = None  # [m] road width seen across the frame; None: scenario's
    action: Literal["discrete", "continuous"] = "discrete"
    road_labels: bool = False  # put info["road_labels"] in every step
    n_rays: int = 16  # lidar directions
    ray_range: float = 60.0  # [m]
    duration: float | None = None  # [s] episode length; None: scenario's
    policy_frequency: int | None = None  # [Hz] decisions per second; None: 1 discrete, 5 cont.
    reward_weights: dict[str, float] = field(default_factory=dict)
    offroad_terminal: bool = True  # leaving the road ends the episode
    sim: dict[str, Any] = field(default_factory=dict)  # extra highway-env settings

    def __post_init__(self) -> None:
        h, w = self.camera_size
        check(
            16 <= h <= 512 and 16 <= w <= 512,
            f"camera_size: {self.camera_size} must be within 16..512 px",
        )
        check(1 <= self.frame_stack <= 8, f"frame_stack: {self.frame_stack} must be within 1..8")
        check(
            self.view_m is None or 10.0 <= self.view_m <= 500.0, "view_m: must be within 10..500 m"
        )
        check(4 <= self.n_rays <= 128, f"n_rays: {self.n_rays} must be within 4..128")
        check(
            5.0 <= self.ray_range <= 500.0, f"ray_range: {self.ray_range} must be within 5..500 m"
        )
        check(self.duration is None or self.duration > 0, "duration: must be positive [s]")
        if self.policy_frequency is None:
            self.policy_frequency = 1 if self.action == "discrete" else 5
        check(1 <= self.policy_frequency <= 30, "policy_frequency: must be within 1..30 Hz")
        for key in self.reward_weights:
            check(
                key in REWARD_TERMS,
                f"reward_weights.{key}: unknown reward term{closest(key, REWARD_TERMS)}; "
                f"terms: {', '.join(REWARD_TERMS)}",
            )


def sensor_names(cfg: DriveEnvConfig) -> tuple[str, ...]:
    """Names of the sensor elements for a scenario and options (every embedded backend's)."""
    names = [
        "ego.speed",
        "ego.heading_sin",
        "ego.heading_cos",
        "ego.lateral_offset",
        "ego.edge_left",
        "ego.edge_right",
        "ego.on_road",
    ]
    if cfg.action == "discrete":
        names += [f"ego.last_action_{k}" for k in ("left", "idle", "right", "faster", "slower")]
    else:
        names += ["ego.last_steer", "ego.last_accel"]
    for k in range(cfg.n_rays):
        names += [f"rays.{k:02d}.distance", f"rays.{k:02d}.closing_speed"]
    if cfg.scenario in ("roundabout", "intersection"):
        names += ["route.turn_left", "route.straight", "route.turn_right"]
        names += ["route.ahead_x", "route.ahead_y"]
    elif cfg.scenario == "merge":
        names += ["route.merge_distance", "route.ramp_vehicle"]
    return tuple(names)


@functools.cache
def _simulator(sim_class: type) -> type:
    """``sim_class`` without its own reward and info, which this env replaces (highway-env's
    merge reward fails on continuous actions, and both cost time on every reset)."""

    def _info(self, obs: Any, action: Any) -> dict:
        return {}

    def _reward(self, action: Any) -> float:
        return 0.0

    return type(sim_class.__name__, (sim_class,), {"_info": _info, "_reward": _reward})


class DriveEnv(gym.Env):
    """A highway-env scenario with the camera + sensors observation of drive-attention."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 5}

    def __init__(self, render_mode: str | None = None, **options: Any) -> None:
        self.config = build(DriveEnvConfig, options)
        cfg = self.config
        if render_mode not in (None, "rgb_array"):
            raise ConfigError(f"render_mode: {render_mode!r} is not supported; use 'rgb_array'")
        self.render_mode = render_mode
        self.scenario = SCENARIOS[cfg.scenario]
        self.weights = {**DEFAULT_REWARD_WEIGHTS, **cfg.reward_weights}
        self.duration = cfg.duration or self.scenario.duration

        sim_config = self._sim_config()
        self.sim = _simulator(self.scenario.sim_class)(config=sim_config)
        self.lidar = LidarObservation(self.sim, cells=cfg.n_rays, maximum_range=cfg.ray_range)

        h, w = cfg.camera_size
        view_m = cfg.view_m or self.scenario.view_m
        self.raster = Rasterizer(h, w, scaling=w / view_m, centering=self.scenario.centering)

        self.sensor_names = sensor_names(cfg)
        self.sensor_groups = sensor_groups(self.sensor_names)
        self.observation_space = spaces.Dict(
            camera=spaces.Box(0, 255, (h, w, 3 * cfg.frame_stack), np.uint8),
            sensors=spaces.Box(-np.inf, np.inf, (len(self.sensor_names),), np.float32),
        )
        if cfg.action == "discrete":
            self.action_space = spaces.Discrete(5)
            self.idle_action: Any = IDLE
        else:
            self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
            self.idle_action = np.zeros(2, np.float32)
        self._frames: deque[np.ndarray] = deque(maxlen=cfg.frame_stack)
        self._last_labels: np.ndarray | None = None

    # ----------------------------------------------------------------- configuration
    def _sim_config(self) -> dict[str, Any]:
        cfg, scenario = self.config, self.scenario
        allowed = scenario.sim_class.default_config()
        for key in cfg.sim:
            if key not in allowed:
                raise ConfigError(
                    f"sim.{key}: not a highway-env setting of {cfg.scenario}"
                    f"{closest(key, list(allowed))}"
                )
        # keep the scenario's own action settings (e.g. its target speeds) but its type
        action = dict(allowed["action"], lateral=True, longitudinal=True)
        action["type"] = "DiscreteMetaAction" if cfg.action == "discrete" else "ContinuousAction"
        if cfg.action == "continuous":
            action.pop("target_speeds", None)
        sim_freq = cfg.sim.get("simulation_frequency", scenario.sim_config["simulation_frequency"])
        if sim_freq % cfg.policy_frequency:
            raise ConfigError(
                f"policy_frequency: {cfg.policy_frequency} Hz must divide the simulation "
                f"frequency {sim_freq} Hz (set sim.simulation_frequency or policy_frequency)"
            )
        return {
            **scenario.sim_config,
            "action": action,
            "policy_frequency": cfg.policy_frequency,
            "duration": 1e9,  # episode end is decided here, not by highway-env
            "offscreen_rendering": True,
            **cfg.sim,
        }

    # ----------------------------------------------------------------- gymnasium API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        if seed is None:  # draw the simulator's seed from ours, so one seed fixes everything
            seed = int(self.np_random.integers(2**31 - 1))
        self.sim.reset(seed=seed)
        self.ego = self.sim.vehicle
        self._plan_route()
        self.raster.set_road(self.sim.road.network.lanes_list())
        self._last_action = np.zeros(5 if self.config.action == "discrete" else 2, np.float32)
        self._time = 0.0  # [s]
        self._distance = 0.0  # [m]
        self._speed_sum = 0.0  # [m/s]
        self._steps = 0
        self._frames.clear()
        frame = self._render_camera()
        for _ in range(self.config.frame_stack):
            self._frames.append(frame)
        info = {"speed": float(self.ego.speed)}
        if self.config.road_labels:
            info.update(self._label_info())
        return self._observation(), info

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        cfg = self.config
        if cfg.action == "discrete":
            action = int(action)
            sim_action: Any = action
            action_vec = np.eye(5, dtype=np.float32)[action]
        else:
            action_vec = np.clip(np.asarray(action, np.float32).reshape(2), -1.0, 1.0)
            sim_action = action_vec[[1, 0]]  # highway-env's order is [accel, steer]
        previous = self.ego.position.copy()
        self._advance(sim_action)
        self.ego = self.sim.vehicle
        dt = 1.0 / cfg.policy_frequency  # [s]
        self._time += dt
        self._steps += 1

        forward_speed = self._forward_speed()
        self._distance += float(np.linalg.norm(self.ego.position - previous))  # [m] travelled
        self._speed_sum += float(self.ego.speed)
        collision = bool(self.ego.crashed)
        off_road = not self.ego.on_road
        arrived = self._arrived()
        timeout = self._time >= self.duration - 1e-9
        # highway: surviving the whole episode is the goal; the others have a place to reach
        success = (arrived or (timeout and cfg.scenario == "highway")) and not collision

        lo, hi = self.scenario.speed_range
        if self.config.action == "discrete":
            change = float(not np.array_equal(action_vec, self._last_action) and action != IDLE)
        else:
            change = float(np.abs(action_vec - self._last_action).mean() / 2.0)
        lane = self.ego.lane
        _, lateral = lane.local_coordinates(self.ego.position)
        terms = {
            "progress": float(np.clip((forward_speed - lo) / (hi - lo), 0.0, 1.0)),
            "collision": -float(collision),
            "off_road": -float(off_road),
            "lane_keeping": -float(min(1.0, abs(lateral) / (lane.width_at(0) / 2))),
            "comfort": -change,
            "goal": float(success),
        }
        weighted = {k: self.weights[k] * v for k, v in terms.items()}
        reward = float(sum(weighted.values()))
        self._last_action = action_vec

        terminated = collision or (off_road and cfg.offroad_terminal) or arrived
        truncated = timeout and not terminated
        frame = self._render_camera()
        self._frames.append(frame)
        info: dict[str, Any] = {"reward_terms": weighted, "speed": float(self.ego.speed)}
        if cfg.road_labels:
            info.update(self._label_info())
        if terminated or truncated:
            info.update(
                collision=collision,
                off_road=off_road,
                success=bool(success),
                distance=self._distance,
                mean_speed=self._speed_sum / self._steps,
            )
            assert all(k in info for k in EPISODE_KEYS)
        return self._observation(), reward, terminated, truncated, info

    def render(self) -> np.ndarray | None:
        if self.render_mode == "rgb_array":
            return self._frames[-1].copy()
        return None

    def close(self) -> None:
        self.sim.close()

    # ----------------------------------------------------------------- internals
    def _advance(self, sim_action: Any) -> None:
        """highway-env's step without its observation, reward and info (computed here)."""
        sim = self.sim
        sim.time += 1 / sim.config["policy_frequency"]
        sim._simulate(sim_action)
        if isinstance(sim, IntersectionEnv):  # what IntersectionEnv.step adds to the base step
            sim._clear_vehicles()
            sim._spawn_vehicle(spawn_probability=sim.config["spawn_probability"])

    def _render_camera(self) -> np.ndarray:
        vehicles = [v for v in self.sim.road.vehicles if v is not self.ego]
        if vehicles:
            others = vehicle_corners(
                np.array([v.position for v in vehicles]),
                np.array([v.heading for v in vehicles]),
                np.array([v.LENGTH for v in vehicles]),
                np.array([v.WIDTH for v in vehicles]),
            )
        else:
            others = np.zeros((0, 4, 2))
        ego = vehicle_corners(
            self.ego.position[None],
            np.array([self.ego.heading]),
            np.array([self.ego.LENGTH]),
            np.array([self.ego.WIDTH]),
        )[0]
        labels = self.raster.draw(self.ego.position, others, ego)
        self._last_labels = labels
        return colorize(labels)

    def _label_info(self) -> dict[str, np.ndarray]:
        """Road labels of the last frame, and the mask of the vehicle ahead in the ego's lane
        (all False when there is none)."""
        front, _ = self.sim.road.neighbour_vehicles(self.ego, self.ego.lane_index)
        if front is None:
            lead = np.zeros(self._last_labels.shape, bool)
        else:
            corners = vehicle_corners(
                front.position[None],
                np.array([front.heading]),
                np.array([front.LENGTH]),
                np.array([front.WIDTH]),
            )[0]
            lead = box_mask(self.raster, self.ego.position, corners)
        return {"road_labels": self._last_labels.copy(), "lead_vehicle_mask": lead}

    def _observation(self) -> dict[str, np.ndarray]:
        if self.config.frame_stack == 1:
            camera = self._frames[-1]
        else:
            camera = np.concatenate(list(self._frames), axis=-1)
        return {"camera": camera, "sensors": self._sensors()}

    def _forward_speed(self) -> float:
        """Speed along the lane direction [m/s]."""
        lane = self.ego.lane
        s, _ = lane.local_coordinates(self.ego.position)
        return float(self.ego.speed * np.cos(self.ego.heading - lane.heading_at(s)))

    def _sensors(self) -> np.ndarray:
        ego, cfg = self.ego, self.config
        lane = ego.lane
        s, lateral = lane.local_coordinates(ego.position)
        width = lane.width_at(s)
        heading_error = ego.heading - lane.heading_at(s)
        side_lanes = self.sim.road.network.all_side_lanes(ego.lane_index)
        idx = ego.lane_index[2]
        # distances [m] to the left and right edges of the carriageway
        edge_left = width / 2 + lateral + width * idx
        edge_right = width / 2 - lateral + width * (len(side_lanes) - 1 - idx)
        values = [
            ego.speed / SPEED_SCALE,
            np.sin(heading_error),
            np.cos(heading_error),
            lateral / width,
            edge_left / EDGE_SCALE,
            edge_right / EDGE_SCALE,
            1.0 if ego.on_road else -1.0,
            *self._last_action,
        ]
        rays = self.lidar.trace(ego.position, ego.velocity)  # (n_rays, 2): [m], [m/s]
        hit = rays[:, 0] < cfg.ray_range
        closing = np.where(hit, -rays[:, 1], 0.0) / CLOSING_SCALE  # no hit: nothing closes in
        ray_values = np.stack([rays[:, 0] / cfg.ray_range, closing], axis=1)
        values += list(ray_values.ravel())
        if cfg.scenario in ("roundabout", "intersection"):
            values += [*self._turn, *self._route_ahead()]
        elif cfg.scenario == "merge":
            values += self._merge_sensors()
        return np.clip(np.asarray(values, np.float32), -1.0, 1.0)

    def _plan_route(self) -> None:
        """Pick the scenario's destination, plan the route to it (for the ego's own lane
        controller too, under meta-actions) and encode the turn it asks for."""
        self._turn = (0.0, 1.0, 0.0)
        self._route: list[tuple[str, str]] = []
        self._destination: str | None = None
        if not self.scenario.destinations:
            return
        self._destination = str(self.np_random.choice(self.scenario.destinations))
        if hasattr(self.ego, "plan_route_to"):
            self.ego.plan_route_to(self._destination)
        network = self.sim.road.network
        start, first = self.ego.lane_index[:2]
        path = network.shortest_path(first, self._destination)
        self._route = [(start, first), *itertools.pairwise(path)]
        if len(self._route) < 2:
            return
        start_heading = self.ego.lane.heading_at(0.0)
        end_lane = network.graph[self._route[-1][0]][self._route[-1][1]][0]
        turn = (end_lane.heading_at(end_lane.length) - start_heading + np.pi) % (2 * np.pi) - np.pi
        # screen coordinates: y points down, so a positive heading change turns right
        if turn > np.pi / 4:
            self._turn = (0.0, 0.0, 1.0)
        elif turn < -np.pi / 4:
            self._turn = (1.0, 0.0, 0.0)

    def _route_ahead(self) -> list[float]:
        """Route point ROUTE_AHEAD metres ahead, in the ego frame, scaled to [-1, 1]."""
        ego = self.ego
        network = self.sim.road.network
        edges = self._route
        here = ego.lane_index[:2]
        edges = edges[edges.index(here) :] if here in edges else [here, *edges]
        s, _ = ego.lane.local_coordinates(ego.position)
        remaining = ROUTE_AHEAD + s
        point = ego.position
        for a, b in edges:
            lanes = network.graph[a][b]
            lane = lanes[min(ego.lane_index[2], len(lanes) - 1)]
            if remaining <= lane.length:
                point = lane.position(remaining, 0.0)
                break
            remaining -= lane.length
            point = lane.position(lane.length, 0.0)
        d = point - ego.position
        c, si = np.cos(ego.heading), np.sin(ego.heading)
        return [(c * d[0] + si * d[1]) / ROUTE_AHEAD, (-si * d[0] + c * d[1]) / ROUTE_AHEAD]

    def _merge_sensors(self) -> list[float]:
        """Distance to the end of the merge zone and whether a ramp vehicle is alongside."""
        ramp = [v for v in self.sim.road.vehicles if v.lane_index[0] in ("j", "k")]
        near = any(abs(v.position[0] - self.ego.position[0]) < 40.0 for v in ramp)
        return [(MERGE_END_X - self.ego.position[0]) / 400.0, float(near)]

    def _arrived(self) -> bool:
        """Whether the ego has reached the scenario's goal (not used by highway)."""
        scenario = self.config.scenario
        lane = self.ego.lane_index
        s, _ = self.ego.lane.local_coordinates(self.ego.position)  # [m] along the lane
        if scenario == "intersection":  # on the exit road of the destination, 25 m out
            return lane[0].startswith("il") and lane[1] == self._destination and s >= 25.0
        if scenario == "roundabout":  # on the destination's exit road, 20 m out
            return lane[0] == self._destination and s > 20.0
        if scenario == "merge":  # past the end of the merge zone
            return bool(self.ego.position[0] > MERGE_END_X)
        return False
