"""The batched core: B driving environments stepped at once with torch, on CPU or GPU.

Same contract as the highway-env backend: the camera raster of the same look, scale and
ego-centring, the same sensor names, groups and normalisation (:mod:`envs.scenarios`), the same
reward terms and episode statistics (:mod:`envs.batched.contract`, the torch twins of
:mod:`envs.contract`), ``road_labels`` for free. Traffic is simulated by :mod:`envs.batched.sim`
(highway-env's IDM, MOBIL, controllers and bicycle model, vectorised) on roads read from
highway-env (:mod:`envs.batched.road`), started by the scenario's :mod:`envs.batched.scenarios`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from gymnasium import spaces

from drive_attention.envs.batched import contract
from drive_attention.envs.batched.planning import PlanningBatch
from drive_attention.envs.batched.raster_map import MapRasterizer
from drive_attention.envs.batched.render import (
    TorchRasterizer,
    lidar,
    object_ids,
    object_slots,
    objects,
)
from drive_attention.envs.batched.scenarios import BATCHED, BatchedScenario
from drive_attention.envs.batched.sim import EGO, IDM, ROUTE_HOPS, Simulator, Traffic
from drive_attention.envs.camera import road_map as camera_map
from drive_attention.envs.configuration import ConfigError, build, check, closest
from drive_attention.envs.contract import (
    DISCRETE_ACTIONS,
    LIGHT_STATES,
    REWARD_TERMS,
    action_space,
    observation_space,
    public_labels,
)
from drive_attention.envs.contract import sensor_groups as group_sensors
from drive_attention.envs.limits import check_batched_envs
from drive_attention.envs.scenarios import (
    CLOSING_SCALE,
    EDGE_SCALE,
    SPEED_SCALE,
    ScenarioConfig,
    sensor_names,
)

SEED_MAX = 2**63 - 1  # torch.Generator.manual_seed takes a signed 64-bit seed


@dataclass
class BatchedDriveConfig(ScenarioConfig):
    """The embedded backends' options (:class:`envs.scenarios.ScenarioConfig`) plus batching."""

    num_envs: int = 1  # B, environments stepped together (at most envs.limits.MAX_BATCHED_ENVS)
    device: str = "cpu"  # torch device of the simulation ("cpu", "cuda", "cuda:1")

    def __post_init__(self) -> None:
        super().__post_init__()
        check(
            self.scenario in BATCHED,
            f"scenario: {self.scenario!r} has no batched version yet; use one of "
            f"{', '.join(BATCHED)} (or the highway-env backend)",
        )
        check(self.num_envs >= 1, f"num_envs: {self.num_envs} must be at least 1")
        # before anything is allocated (a vector env's spaces are (num_envs, ...) arrays)
        check_batched_envs("num_envs", self.num_envs, self.camera_size, self.frame_stack)
        allowed = BATCHED[self.scenario].setting_names()
        for key in self.sim:
            check(
                key in allowed,
                f"sim.{key}: not supported by the batched {self.scenario}"
                f"{closest(key, allowed)}; supported: {', '.join(allowed)}",
            )
        self.check_policy_frequency()
        try:
            device = torch.device(self.device)
        except RuntimeError as err:
            raise ConfigError(f"device: {self.device!r} is not a torch device ({err})") from None
        if device.type == "cuda":
            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
            check(
                count > 0 and (device.index or 0) < count,
                f"device: {self.device!r} is not available here ({count} CUDA device(s)); use "
                "device=cpu, or cuda:0 .. cuda:N-1",
            )


@dataclass
class StepOutput:
    """One batched step; tensors on the simulation device, (B, ...) each."""

    labels: torch.Tensor  # (B, S, H, W) uint8, the stacked label maps (newest last)
    sensors: torch.Tensor  # (B, D) float32
    reward: torch.Tensor  # (B,)
    terms: torch.Tensor  # (B, len(REWARD_TERMS)) weighted terms
    terminated: torch.Tensor  # (B,) bool
    truncated: torch.Tensor  # (B,) bool
    episode: dict[str, torch.Tensor]  # EPISODE_KEYS -> (B,), meaningful where done (plus
    # SIGNAL_EPISODE_KEYS where the scenario has lights and pedestrians)
    speed: torch.Tensor  # (B,) ego speed [m/s]


@dataclass
class Judgement:
    """How K episodes stand after a step (:meth:`BatchedDrive.judge`); (K,) tensors."""

    lane: torch.Tensor  # long, the ego's lane
    s: torch.Tensor  # [m] along it
    lateral: torch.Tensor  # [m] from its centre
    collision: torch.Tensor  # bool, the ego has crashed
    off_road: torch.Tensor  # bool, off the road now
    arrived: torch.Tensor  # bool, at the goal (scenarios with one)
    timeout: torch.Tensor  # bool, the episode's time is up
    success: torch.Tensor  # bool
    terminated: torch.Tensor  # bool
    truncated: torch.Tensor  # bool


class BatchedDrive:
    """The batched core: traffic, episode bookkeeping, sensors, rewards and frames."""

    def __init__(self, **options: Any) -> None:
        self.config = build(BatchedDriveConfig, options)
        cfg = self.config
        self.device = torch.device(cfg.device)
        self.num_envs = cfg.num_envs
        self.scenario = cfg.spec
        self.traffic_spec: BatchedScenario = BATCHED[cfg.scenario](cfg.spec, cfg.sim)
        self.discrete = cfg.action == "discrete"
        self.weights = cfg.weights
        self.weight_vec = torch.tensor(
            [self.weights[k] for k in REWARD_TERMS], device=self.device, dtype=torch.float32
        )
        self.duration = cfg.episode_duration  # [s]
        self.sim_frequency = cfg.sim_frequency  # [Hz]
        self.frames_per_step = self.sim_frequency // cfg.policy_frequency
        self.road = self.traffic_spec.road(self.device)
        # traffic lights and crossings (the signalised scenario), else None
        make_signals = getattr(self.traffic_spec, "signals", None)
        self.signals = make_signals(self.road) if make_signals is not None else None
        self.sim = Simulator(
            self.road,
            all_collisions=self.traffic_spec.all_collisions,
            discrete=self.discrete,
            driver=self.traffic_spec.driver(),
            regulated=self.traffic_spec.regulated,
            signals=self.signals,
        )
        self.camera_geometry = cfg.camera_geometry  # the camera's frame, scale and ego pixel
        g = self.camera_geometry
        h, w, scaling, centering = g.height, g.width, g.px_per_m, g.centering
        road_map = camera_map(self.road.lanes, scaling)  # as the highway-env backend draws it
        if road_map is None:  # straight roads along +x, traced per frame
            self.raster = TorchRasterizer(self.road, h, w, scaling, centering)
            assert self.signals is None, "lights are drawn on map-rasterised roads only"
        else:  # drawn once into a map, cropped per frame
            self.raster = MapRasterizer(road_map, h, w, scaling, centering, self.device)
        self.scaling = scaling  # [px/m]
        self.sensor_names = sensor_names(cfg)
        self.sensor_groups = group_sensors(self.sensor_names)
        self.action_dim = len(DISCRETE_ACTIONS) if self.discrete else 2
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(int(np.random.SeedSequence().generate_state(1)[0]))
        self.traffic: Traffic | None = None
        self.name = f"the batched {cfg.scenario} ({cfg.num_envs} envs)"  # for error messages
        self._from_nodes: dict[tuple[str, ...], torch.Tensor] = {}
        self._straight = torch.tensor([0.0, 1.0, 0.0], device=self.device)  # no route's turn
        self._on_frame: Callable[[], None] | None = None  # see on_frame

    # ----------------------------------------------------------------- spaces
    def observation_space(self) -> spaces.Dict:
        cfg = self.config
        return observation_space(cfg.camera_size, cfg.frame_stack, len(self.sensor_names))

    def action_space(self) -> spaces.Space:
        return action_space(self.config.action)

    def seed(self, seed: int) -> None:
        if not 0 <= int(seed) <= SEED_MAX:
            raise ConfigError(
                f"seed: {seed} is outside 0..{SEED_MAX} (torch's generator takes a 64-bit signed "
                "seed); give a smaller one"
            )
        self.generator.manual_seed(int(seed))
        self.traffic_spec.forget()

    # ----------------------------------------------------------------- reset and step
    def _spawn(self, k: int) -> Traffic:
        return self.traffic_spec.spawn(k, self.sim, self.generator, self.discrete)

    def _start(self, traffic: Traffic) -> None:
        """Every environment starts an episode from ``traffic`` (B environments)."""
        b, dev = self.num_envs, self.device
        expected = (b, self.traffic_spec.n_slots())
        if tuple(traffic.x.shape) != expected:
            raise ValueError(
                f"traffic of {tuple(traffic.x.shape)} (envs, vehicle slots) for a core of "
                f"{expected}; import it with that many slots (import_state(..., n=...))"
            )
        self.traffic = traffic
        self._on_frame = None  # an observer asks each start anew
        self.stats = contract.EpisodeStats.zeros(1.0 / self.config.policy_frequency, b, dev)
        self.stats.start(self._ego_position(traffic))
        self.last_action = torch.zeros(b, self.action_dim, device=dev)
        self.turn = self._turn(traffic)
        labels = self._draw(traffic)
        self.labels = labels[:, None].repeat(1, self.config.frame_stack, 1, 1)

    def reset(self) -> StepOutput:
        """Start every environment anew."""
        b, dev = self.num_envs, self.device
        self._start(self._spawn(b))
        zeros = torch.zeros(b, device=dev)
        return StepOutput(
            labels=self.labels,
            sensors=self.sensors(self.traffic, self.last_action),
            reward=zeros,
            terms=torch.zeros(b, len(REWARD_TERMS), device=dev),
            terminated=zeros.bool(),
            truncated=zeros.bool(),
            episode={},
            speed=self.traffic.speed[:, 0],
        )

    def reset_envs(self, done: torch.Tensor) -> None:
        """Start the environments of the (B,) bool mask ``done`` anew, in place."""
        idx = done.nonzero()[:, 0]
        if idx.numel() == 0:
            return
        fresh = self._spawn(len(idx))
        self.traffic.assign(idx, fresh)
        self.stats.start(self._ego_position(fresh), idx)
        self.last_action[idx] = 0.0
        self.turn[idx] = self._turn(fresh)
        labels = self._draw(fresh)
        self.labels[idx] = labels[:, None].repeat(1, self.config.frame_stack, 1, 1)

    def restart_from(self, traffic: Traffic) -> None:
        """Start every environment's episode from ``traffic`` (e.g. a state imported from
        highway-env) instead of a spawned one."""
        self._start(traffic)

    def observe(self, which: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Current (labels (B, S, H, W), sensors (B, D)) of every environment.

        ``which``: a (B,) bool mask or (K,) index tensor to observe only those (K rows out).
        """
        if which is None:
            return self.labels, self.sensors(self.traffic, self.last_action)
        t = self.traffic.select(which)
        return self.labels[which], self.sensors(t, self.last_action[which], self.turn[which])

    def on_frame(self, callback: Callable[[], None] | None) -> None:
        """Call ``callback()`` after every simulation frame of the coming steps (``self.traffic``
        holds that frame's state; the last frame of a step is before the scenario's departures and
        arrivals), as the highway-env backend's ``DriveEnv.on_frame`` does: for an observer
        comparing the backends frame by frame. ``None`` stops the calls, and so do
        :meth:`reset` and :meth:`restart_from`. Without one a step costs nothing more."""
        self._on_frame = callback

    def step(self, action: torch.Tensor) -> StepOutput:
        """Advance every environment by one policy period (no automatic reset).

        ``action``: (B,) long meta-actions or (B, 2) float [steer, accel] in [-1, 1].
        """
        t, scenario = self.traffic, self.scenario
        assert t is not None, "call reset() before step()"
        action = contract.check_actions(
            torch.as_tensor(action, device=self.device), self.discrete, self.num_envs, self.name
        )
        if self.discrete:
            action_vec = torch.nn.functional.one_hot(action, self.action_dim).float()
        else:
            action_vec = action
        red_light = self.advance(t, action, self._on_frame)
        j = self.judge(t, self.stats, self.turn, red_light)
        lane, s, lat, collision, off_road = j.lane, j.s, j.lateral, j.collision, j.off_road
        forward = t.speed[:, 0] * torch.cos(t.heading[:, 0] - self.road.heading_at(lane, s))
        success = j.success

        terms = contract.reward_terms(
            forward_speed=forward,
            speed_range=scenario.speed_range,
            collision=collision,
            off_road=off_road,
            lateral=lat,
            lane_width=self.road.width[lane],
            change=contract.action_change(action_vec, self.last_action, self.discrete),
            goal=success,
            red_light=red_light,
        )
        terms = terms * self.weight_vec
        self.last_action = action_vec

        terminated, truncated = j.terminated, j.truncated
        labels = self._draw(t)
        self.labels = torch.cat([self.labels[:, 1:], labels[:, None]], 1)
        episode = self.stats.summary(success)
        if self.signals is not None:
            episode["red_light_runs"] = t.red_runs.clone()
            episode["pedestrian_collision"] = t.pedestrian_hit.clone()
        return StepOutput(
            labels=self.labels,
            sensors=self.sensors(t, self.last_action),
            reward=terms.sum(1),
            terms=terms,
            terminated=terminated,
            truncated=truncated,
            episode=episode,
            speed=t.speed[:, 0].clone(),
        )

    def advance(
        self,
        t: Traffic,
        action: torch.Tensor,
        on_frame: Callable[[], None] | None = None,
    ) -> torch.Tensor:
        """One policy period of ``t`` in place (any number of environments): the simulation
        frames under the checked ``action`` ((K,) long or (K, 2) [steer, accel]), then the
        scenario's departures and arrivals. Returns (K,) bool: a stop line crossed on red."""
        sim_action = action if self.discrete else action[:, [1, 0]]  # highway-env: [accel, steer]
        dt = 1.0 / self.sim_frequency
        runs_before = t.red_runs.clone()
        for frame in range(self.frames_per_step):
            self.sim.step(t, dt, sim_action if frame == 0 else None)
            if on_frame is not None:
                on_frame()
        self.traffic_spec.after_step(t, self.sim)
        return t.red_runs > runs_before

    def judge(
        self, t: Traffic, stats: contract.EpisodeStats, turn: torch.Tensor, red_light: torch.Tensor
    ) -> Judgement:
        """Record the step just :meth:`advance`-d in ``stats`` (in place) and say how the
        episodes of ``t`` stand: what :meth:`step` reports, and a planner's copies ask."""
        cfg, scenario = self.config, self.scenario
        s, lat = self._ego_lane_coordinates(t)
        collision = t.crashed[:, 0]
        off_road = ~self._on_road(t, s, lat)
        stats.record(self._ego_position(t), collision, off_road)
        if scenario.has_goal:
            arrived = scenario.arrived(_EgoView(self, t, turn, s))
        else:
            arrived = torch.zeros_like(collision)
        timeout = stats.steps.float() * stats.dt >= self.duration - 1e-9
        success = scenario.success(arrived, timeout, collision)
        terminated = collision | (off_road & cfg.offroad_terminal) | arrived
        if self.signals is not None:  # no success with a red light run
            success = success & (t.red_runs == 0)
            if cfg.red_light_terminal:
                terminated = terminated | red_light
        return Judgement(
            lane=t.lane[:, 0],
            s=s,
            lateral=lat,
            collision=collision,
            off_road=off_road,
            arrived=arrived,
            timeout=timeout,
            success=success,
            terminated=terminated,
            truncated=timeout & ~terminated,
        )

    def planning_batch(self, k: int) -> PlanningBatch:
        """``k`` copies of every environment as it stands (rows ``env * k + j``), to try actions
        on: :class:`envs.batched.planning.PlanningBatch`."""
        assert self.traffic is not None, "call reset() before planning_batch()"
        rows = torch.arange(self.num_envs, device=self.device).repeat_interleave(k)
        return PlanningBatch(self, rows)

    def _draw(self, t: Traffic) -> torch.Tensor:
        """(B, H, W) label maps of ``t``: the road, the lights, crossings and pedestrians where
        the scenario has them, the vehicles on top."""
        if self.signals is None:
            return self.raster.draw(t)
        signals, scaling = self.signals, self.scaling
        return self.raster.draw(t, lambda labels, origin: signals.draw(labels, origin, t, scaling))

    def road_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """``labels`` as ``info["road_labels"]`` gives them (lights of every state:
        ``traffic_light``)."""
        return public_labels(labels) if self.signals is not None else labels

    def object_ids(self, labels: torch.Tensor, which: torch.Tensor | None = None) -> dict:
        """What ties the observation to the simulator's objects (``which``: environments, all
        by default; ``labels``: their latest (B, H, W) label maps): ``object_ids`` (B, H, W)
        int16, the traffic slot drawn at each camera pixel (-1: none; see
        :func:`envs.batched.render.object_ids`), and ``object_slots`` (B, n_objects) long, the
        slot behind each ``objects.<k>`` sensor token (-1: an empty row)."""
        t = self.traffic if which is None else self.traffic.select(which)
        raster = self.raster
        ids = object_ids(t, labels, raster.origin(t), raster.patch, raster.scaling)
        cfg = self.config
        slots = object_slots(t, cfg.n_objects, cfg.ray_range)
        return {"object_ids": ids, "object_slots": slots}

    # ----------------------------------------------------------------- observation parts
    @staticmethod
    def _ego_position(t: Traffic) -> torch.Tensor:
        return torch.stack([t.x[:, 0], t.y[:, 0]], 1)  # (B, 2) [m]

    def _ego_lane_coordinates(self, t: Traffic) -> tuple[torch.Tensor, torch.Tensor]:
        return self.road.coordinates_on(t.lane[:, 0], t.x[:, 0], t.y[:, 0])

    def _turn(self, t: Traffic) -> torch.Tensor:
        """(B, 3) one-hot turn of each episode's route from the ego's first lane (straight
        without a destination), as the highway-env backend encodes it at reset."""
        dest = t.destination[:, 0]
        turn = self.road.turn_to[t.lane[:, 0], dest.clamp(min=0)]
        return torch.where((dest >= 0)[:, None], turn, self._straight)

    def _on_road(self, t: Traffic, s: torch.Tensor, lat: torch.Tensor) -> torch.Tensor:
        lane = t.lane[:, 0]
        road = self.road
        length = road.length[lane]
        return (lat.abs() <= road.width[lane] / 2) & (s >= -5.0) & (s < length + 5.0)

    def lanes_from(self, nodes: tuple[str, ...]) -> torch.Tensor:
        """(L,) bool: lanes of roads that start at one of highway-env's ``nodes``."""
        if nodes not in self._from_nodes:
            mask = [index[0] in nodes for index in self.road.indexes]
            self._from_nodes[nodes] = torch.tensor(mask, dtype=torch.bool, device=self.device)
        return self._from_nodes[nodes]

    def situation(self, which: torch.Tensor | None = None) -> dict[str, list[Any]] | None:
        """What the ego faces now, per environment (``which``: a mask or indices; all by
        default), where the scenario has lights: ``light_state`` of its incoming lane (a name
        of :data:`LIGHT_STATES`, ``"none"`` past the stop line) and ``pedestrian_ahead``
        (a pedestrian walks on a crossing on its path within 40 m). None elsewhere."""
        if self.signals is None:
            return None
        t = self.traffic if which is None else self.traffic.select(which)
        view = self.signals.ego_view(self.sim, t)
        names = [*LIGHT_STATES, "none"]  # NO_LIGHT (-1) reads the last
        return {
            "light_state": [names[i] for i in view["light_state"].tolist()],
            "pedestrian_ahead": [bool(v) for v in view["pedestrian_ahead"].tolist()],
        }

    def sensors(
        self, t: Traffic, last_action: torch.Tensor, turn: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, D) float32 sensor vectors in [-1, 1], in :attr:`sensor_names` order (``t``,
        ``last_action`` and the routes' ``turn`` of the same environments; all by default)."""
        cfg, road = self.config, self.road
        lane = t.lane[:, 0]
        s, lat = self._ego_lane_coordinates(t)
        width = road.width[lane]
        heading_error = t.heading[:, 0] - road.heading_at(lane, s)
        idx = road.lane_id[lane].float()
        count = road.edge_lanes[lane].float()
        edge_left = width / 2 + lat + width * idx
        edge_right = width / 2 - lat + width * (count - 1 - idx)
        on_road = torch.where(self._on_road(t, s, lat), 1.0, -1.0)
        ego = torch.stack(
            [
                t.speed[:, 0] / SPEED_SCALE,
                torch.sin(heading_error),
                torch.cos(heading_error),
                lat / width,
                edge_left / EDGE_SCALE,
                edge_right / EDGE_SCALE,
                on_road,
            ],
            1,
        )
        distance, rel_speed = lidar(t, cfg.n_rays, cfg.ray_range)
        hit = distance < cfg.ray_range
        closing = torch.where(hit, -rel_speed, 0.0) / CLOSING_SCALE
        rays = torch.stack([distance / cfg.ray_range, closing], 2).flatten(1)
        parts = [ego, last_action, rays]
        if cfg.n_objects:
            lateral = self.scenario.object_lateral_scale(cfg.ray_range)
            parts.append(objects(t, cfg.n_objects, cfg.ray_range, lateral).flatten(1))
        route = self.scenario.route_values(
            _EgoView(self, t, self.turn if turn is None else turn, s)
        )
        if route:
            parts.append(torch.stack(route, 1))
        return torch.cat(parts, 1).clamp(-1.0, 1.0)

    def camera(self, labels: torch.Tensor) -> torch.Tensor:
        """(B, H, W, 3 S) uint8 frames from stacked label maps (B, S, H, W)."""
        frames = self.raster.colorize(labels)  # (B, S, H, W, 3)
        return frames.permute(0, 2, 3, 1, 4).reshape(*frames.shape[0:1], *frames.shape[2:4], -1)


class _EgoView:
    """What :mod:`envs.scenarios` reads from the batched core, as (B,) tensors (its
    ``EgoView``)."""

    def __init__(self, core: BatchedDrive, t: Traffic, turn: torch.Tensor, s: torch.Tensor) -> None:
        self.core, self.t = core, t
        self.x = t.x[:, 0]
        road = core.road
        self.lane = t.lane[:, 0]
        self.s = s  # [m] along the ego's lane
        self.destination = t.destination[:, 0]
        has = self.destination >= 0
        self.on_exit_road = has & road.exit_of[self.lane, self.destination.clamp(min=0)]
        self.turn = turn.unbind(1)

    @property
    def stop_line(self) -> torch.Tensor:
        """(B,) the signalised scenario's stop-line sensor."""
        return self.core.signals.stop_sensor(self.core.sim, self.t)

    def vehicles_near(self, roads: tuple[str, ...], radius: float) -> torch.Tensor:
        t = self.t
        on = self.core.lanes_from(roads)[t.lane] & ((t.kind == EGO) | (t.kind == IDM))
        return (on & ((t.x - t.x[:, :1]).abs() < radius)).any(1).float()

    def route_ahead(self, ahead: float) -> tuple[torch.Tensor, torch.Tensor]:
        """The route's centre point ``ahead`` [m] further along, in the ego frame [m]: along
        the ego's lane, then the route's next lanes (the lane id kept where the road has it),
        held at the end of the route's last lane."""
        road, t = self.core.road, self.t
        column = torch.where(self.destination >= 0, self.destination, road.ahead_lane.shape[1] - 1)
        lane, remaining = self.lane, ahead + self.s
        for _ in range(ROUTE_HOPS):
            nxt = road.ahead_lane[lane, column]
            beyond = (remaining > road.length[lane]) & (nxt >= 0)
            remaining = torch.where(beyond, remaining - road.length[lane], remaining)
            lane = torch.where(beyond, nxt, lane)
        remaining = torch.minimum(remaining, road.length[lane])
        px, py = road.position(lane, remaining, torch.zeros_like(remaining))
        dx, dy = px - t.x[:, 0], py - t.y[:, 0]
        c, si = torch.cos(t.heading[:, 0]), torch.sin(t.heading[:, 0])
        return c * dx + si * dy, -si * dx + c * dy
