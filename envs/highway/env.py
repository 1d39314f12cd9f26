"""The embedded backend: highway-env scenarios behind the multimodal observation contract.

highway-env simulates the road and the traffic (IDM and MOBIL drivers, the ego's kinematic
bicycle model, collisions); this module replaces its observation, reward and episode logic:

- camera: an ego-centred top-down raster (:mod:`envs.camera`) drawn from the road state,
  with the road-element label map for free;
- sensors: ego state, highway-env's lidar (distance and closing speed per ray) and the route
  sensors of the scenario (:mod:`envs.scenarios`);
- reward and episode statistics: :mod:`envs.contract`, weighted by config.
"""

from __future__ import annotations

import copy
import functools
import itertools
from collections.abc import Callable
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from highway_env.envs.common.observation import LidarObservation

from drive_attention.envs.camera import Rasterizer, box_mask, colorize, vehicle_corners
from drive_attention.envs.configuration import ConfigError, build, closest
from drive_attention.envs.contract import (
    EPISODE_KEYS,
    RENDER_MODES,
    EpisodeStats,
    FrameStack,
    action_change,
    action_space,
    action_vector,
    check_action,
    check_render_mode,
    idle_action,
    observation_space,
    reward_terms,
    sensor_groups,
    simulator_seed,
    weigh,
)
from drive_attention.envs.scenarios import (
    CLOSING_SCALE,
    EDGE_SCALE,
    OBJECT_QUANTITIES,
    SPEED_SCALE,
    ScenarioConfig,
    sensor_names,
    turn_of,
)


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

    metadata: ClassVar[dict[str, Any]] = {"render_modes": list(RENDER_MODES), "render_fps": 5}

    def __init__(self, render_mode: str | None = None, **options: Any) -> None:
        self.config = build(ScenarioConfig, options)
        cfg = self.config
        self.render_mode = check_render_mode(render_mode)
        self.scenario = cfg.spec
        self.weights = cfg.weights
        self.duration = cfg.episode_duration  # [s]

        self.sim = _simulator(self.scenario.simulator_class())(config=self._sim_config())
        self.lidar = LidarObservation(self.sim, cells=cfg.n_rays, maximum_range=cfg.ray_range)

        self.camera_geometry = cfg.camera_geometry  # the camera's frame, scale and ego pixel
        self.raster = Rasterizer.for_camera(self.camera_geometry)

        self.sensor_names = sensor_names(cfg)
        self.sensor_groups = sensor_groups(self.sensor_names)
        self.observation_space = observation_space(
            cfg.camera_size, cfg.frame_stack, len(self.sensor_names)
        )
        self.action_space = action_space(cfg.action)
        self.idle_action: Any = idle_action(cfg.action)
        self._frames = FrameStack(cfg.frame_stack)
        self._stats = EpisodeStats(dt=1.0 / cfg.policy_frequency)
        self._last_labels: np.ndarray | None = None
        self._planning = False  # a planning copy: steps skip the camera and the sensors
        self._on_frame: Callable[[], None] | None = None  # see on_frame

    # ----------------------------------------------------------------- configuration
    def _sim_config(self) -> dict[str, Any]:
        cfg, scenario = self.config, self.scenario
        allowed = scenario.simulator_class().default_config()
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
        cfg.check_policy_frequency()
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
        self._on_frame = None  # a recorder asks each episode anew
        self.sim.reset(seed=simulator_seed(self.np_random, seed))
        self.ego = self.sim.vehicle
        self._plan_route()
        self.raster.set_road(self.sim.road.network.lanes_list())
        self._last_action = np.zeros_like(action_vector(self.idle_action, self.config.action))
        self._time = 0.0  # [s]
        self._stats.start(self.ego.position)
        self._frames.reset(self._render_camera())
        info = {"speed": float(self.ego.speed)}
        if self.config.road_labels:
            info.update(self._label_info())
        return self._observation(), info

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        cfg, scenario = self.config, self.scenario
        action = check_action(action, cfg.action, self.spec.id if self.spec else cfg.scenario)
        action_vec = action_vector(action, cfg.action)
        if cfg.action == "discrete":
            sim_action: Any = action
        else:
            sim_action = action_vec[[1, 0]]  # highway-env's order is [accel, steer]
        self._advance(sim_action)
        self.ego = self.sim.vehicle
        self._time += 1.0 / cfg.policy_frequency  # [s]

        collision = bool(self.ego.crashed)
        off_road = not self.ego.on_road
        self._stats.record(self.ego.position, collision, off_road)
        arrived = bool(scenario.has_goal and scenario.arrived(self._view()))
        timeout = self._time >= self.duration - 1e-9
        success = bool(scenario.success(np.bool_(arrived), np.bool_(timeout), np.bool_(collision)))

        lane = self.ego.lane
        _, lateral = lane.local_coordinates(self.ego.position)
        terms = reward_terms(
            forward_speed=self._forward_speed(),
            speed_range=scenario.speed_range,
            collision=collision,
            off_road=off_road,
            lateral=lateral,
            lane_width=lane.width_at(0),
            change=action_change(action_vec, self._last_action, cfg.action),
            goal=success,
        )
        weighted = weigh(terms, self.weights)
        reward = float(sum(weighted.values()))
        self._last_action = action_vec

        terminated = collision or (off_road and cfg.offroad_terminal) or arrived
        truncated = timeout and not terminated
        info: dict[str, Any] = {"reward_terms": weighted, "speed": float(self.ego.speed)}
        if self._planning:  # what a plan's outcome needs, without the observation
            info.update(self._stats.summary(success), arrived=arrived)
            return None, reward, terminated, truncated, info  # type: ignore[return-value]
        self._frames.push(self._render_camera())
        if cfg.road_labels:
            info.update(self._label_info())
        if terminated or truncated:
            info.update(self._stats.summary(success))
            assert all(k in info for k in EPISODE_KEYS)
        return self._observation(), reward, terminated, truncated, info

    def render(self) -> np.ndarray | None:
        if self.render_mode == "rgb_array":
            return self._frames.latest.copy()
        return None

    def close(self) -> None:
        self.sim.close()

    def planning_copy(self) -> DriveEnv:
        """A copy of the episode as it stands, to try actions on (a lookahead planner's): the
        simulator, its random state and the episode's statistics are copied, and the copy's steps
        return no observation (``None``: neither camera nor sensors are computed) and every
        step's ``info`` holds the episode statistics so far and ``arrived``. The original is
        untouched by the copy's steps; only ``step`` is meant for the copy (its camera, lidar and
        rasteriser are still the original's)."""
        twin = copy.copy(self)
        twin.sim = copy.deepcopy(self.sim)  # highway-env's deepcopy leaves its viewer out
        twin._on_frame = None  # the original's recorder films the original only
        twin.ego = twin.sim.vehicle
        twin._stats = copy.deepcopy(self._stats)
        twin._last_action = np.array(self._last_action)
        twin._planning = True
        return twin

    # ----------------------------------------------------------------- internals
    def on_frame(self, callback: Callable[[], None] | None) -> None:
        """Call ``callback()`` after every simulation frame of this episode's coming steps: the
        ``simulation_frequency / policy_frequency`` frames of each step, each call once the road
        has moved (``self.sim`` holds that frame's state; the last frame of a step is the state
        the next decision sees, before the intersection's arrivals are spawned). For a recorder
        that films the episode between decisions (:class:`agent.evaluate.scene.HighwayScene`).

        ``None`` stops the calls, and so does the next :meth:`reset` (a recorder asks each
        episode anew); a :meth:`planning_copy` never calls it. Without one a step costs nothing
        more."""
        self._on_frame = callback

    def _advance(self, sim_action: Any) -> None:
        """highway-env's step without its observation, reward and info (computed here): its
        frame loop (``AbstractEnv._simulate``, less the viewer's automatic rendering of
        intermediate frames, as this env never opens highway-env's viewer) runs here, so that
        :meth:`on_frame` sees every frame."""
        sim = self.sim
        sim.time += 1 / sim.config["policy_frequency"]
        frames = int(sim.config["simulation_frequency"] // sim.config["policy_frequency"])
        for _ in range(frames):
            if sim.steps % frames == 0 and not sim.config["manual_control"]:
                sim.action_type.act(sim_action)  # the action holds for the whole step
            sim.road.act()
            sim.road.step(1 / sim.config["simulation_frequency"])  # [s]
            sim.steps += 1
            if self._on_frame is not None:
                self._on_frame()
        if self.scenario.respawns_traffic:  # what IntersectionEnv.step adds to the base step
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
        return {"camera": self._frames.stacked(), "sensors": self._sensors()}

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
        if cfg.n_objects:
            values += list(self._objects().ravel())
        if self.scenario.route_sensors:
            values += self.scenario.route_values(self._view())
        return np.clip(np.asarray(values, np.float32), -1.0, 1.0)

    def _objects(self) -> np.ndarray:
        """(n_objects, 5) the radar object list (:data:`envs.scenarios.OBJECT_QUANTITIES`): what
        the lidar sees (vehicles and solid objects), nearest centre first, within range."""
        ego, cfg = self.ego, self.config
        others = [
            o for o in self.sim.road.vehicles + self.sim.road.objects if o is not ego and o.solid
        ]
        rows = np.zeros((cfg.n_objects, len(OBJECT_QUANTITIES)))
        if not others:
            return rows
        offset = np.array([o.position for o in others], float) - ego.position  # (M, 2) [m]
        distance = np.hypot(offset[:, 0], offset[:, 1])
        order = [i for i in np.argsort(distance, kind="stable") if distance[i] <= cfg.ray_range]
        order = order[: cfg.n_objects]
        c, s = np.cos(ego.heading), np.sin(ego.heading)
        lateral = self.scenario.object_lateral_scale(cfg.ray_range)  # [m]
        for row, i in enumerate(order):
            dx, dy = offset[i]
            dvx, dvy = np.asarray(others[i].velocity, float) - ego.velocity
            rows[row] = (
                1.0,
                (c * dx + s * dy) / cfg.ray_range,
                (-s * dx + c * dy) / lateral,
                (c * dvx + s * dvy) / CLOSING_SCALE,
                (-s * dvx + c * dvy) / CLOSING_SCALE,
            )
        return rows

    def _view(self) -> _EgoView:
        return _EgoView(self)

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
        end_lane = network.graph[self._route[-1][0]][self._route[-1][1]][0]
        self._turn = turn_of(self.ego.lane.heading_at(0.0), end_lane.heading_at(end_lane.length))

    @property
    def destination(self) -> str | None:
        """The episode's exit node (route scenarios; None otherwise)."""
        return self._destination

    def _route_ahead(self, ahead: float) -> tuple[float, float]:
        """The route's centre point ``ahead`` [m] further along, in the ego frame [m]."""
        ego = self.ego
        network = self.sim.road.network
        edges = self._route
        here = ego.lane_index[:2]
        if here in edges:
            edges = edges[edges.index(here) :]
        else:  # off the planned route (e.g. the ring lane beside the entry): route from here
            path = network.shortest_path(here[1], self._destination) if self._destination else []
            edges = [here, *itertools.pairwise(path)]
        s, _ = ego.lane.local_coordinates(ego.position)
        remaining = ahead + s
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
        return c * d[0] + si * d[1], -si * d[0] + c * d[1]

    def _vehicles_near(self, roads: tuple[str, ...], radius: float) -> float:
        """1.0 if a vehicle on a road from one of ``roads`` is within ``radius`` [m] along x."""
        x = self.ego.position[0]
        near = any(
            v.lane_index[0] in roads and abs(v.position[0] - x) < radius
            for v in self.sim.road.vehicles
        )
        return float(near)


class _EgoView:
    """What :mod:`envs.scenarios` reads from :class:`DriveEnv` (its ``EgoView``)."""

    def __init__(self, env: DriveEnv) -> None:
        ego = env.ego
        self.x = float(ego.position[0])
        self.lane_index = ego.lane_index
        self.s = float(ego.lane.local_coordinates(ego.position)[0])  # [m] along the lane
        self.destination = env._destination
        self.on_exit_road = env._destination is not None and env.scenario.is_exit(
            ego.lane_index, env._destination
        )
        self.turn = env._turn
        self.vehicles_near = env._vehicles_near
        self.route_ahead = env._route_ahead
