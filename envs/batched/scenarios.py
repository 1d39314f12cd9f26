"""Scenarios of the batched simulator: road from highway-env, initial traffic, state import.

A :class:`BatchedScenario` is the batched part of one scenario of :mod:`envs.scenarios`: the
highway-env settings it honours, vehicle slots per environment, and its initial traffic.
:data:`BATCHED` maps scenario names to them; a scenario with ``batched=True`` must have one.

Spawning follows highway-env's ``_create_vehicles`` / ``_make_vehicles`` of each scenario with
torch random draws (same distributions, not the same random stream): for the highway,
``Vehicle.create_random`` places each new vehicle ``offset * U(0.9, 1.1)`` ahead of the last one,
which is a cumulative sum over the batch.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from highway_env.envs.intersection_env import IntersectionEnv
from highway_env.vehicle.controller import MDPVehicle
from highway_env.vehicle.objects import Obstacle

from drive_attention.envs.batched.road import LaneTable, lane_table
from drive_attention.envs.batched.sim import (
    DELTA,
    DELTA_RANGE,
    EGO,
    EMPTY,
    IDM,
    LANE_CHANGE_DELAY,
    LENGTH,
    OBSTACLE,
    REGULATION_FREQUENCY,
    WIDTH,
    DriverModel,
    Simulator,
    Traffic,
)
from drive_attention.envs.batched.streams import GeneratorDraws, StreamDraws, stream_keys
from drive_attention.envs.configuration import build, check
from drive_attention.envs.scenarios import SCENARIOS, RouteScenario, Scenario


@functools.cache
def _reference_road(name: str, settings: tuple[tuple[str, Any], ...]) -> LaneTable:
    """The lane table of highway-env's road network of scenario ``name`` (built once)."""
    spec = SCENARIOS[name]
    env = spec.simulator_class()(config={**spec.sim_config, **dict(settings), "vehicles_count": 0})
    env.reset(seed=0)
    road = lane_table(env.road.network)
    if isinstance(spec, RouteScenario):  # which lanes are the exit road of each destination
        for row, index in enumerate(road.indexes):
            for v, node in enumerate(road.nodes):
                road.exit_of[row, v] = spec.is_exit(index, node)
    return road


class BatchedScenario:
    """The batched part of a scenario: settings, slots, initial traffic."""

    @dataclass(frozen=True)
    class Settings:
        """highway-env settings the batched scenario honours (defaults: the simulator's own,
        then the scenario's)."""

        simulation_frequency: int  # [Hz]

    all_collisions: ClassVar[bool] = True  # every vehicle checks collisions (highway-env)
    regulated: ClassVar[bool] = False  # highway-env's RegulatedRoad (priorities and yielding)

    def __init__(self, spec: Scenario, sim: dict[str, Any]) -> None:
        self.spec = spec
        defaults = {**spec.simulator_class().default_config(), **spec.sim_config}
        names = self.setting_names()
        self.settings = build(
            self.Settings, {k: {**defaults, **sim}[k] for k in names}, prefix="sim."
        )

    @classmethod
    def setting_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls.Settings))

    def road(self, device: torch.device) -> LaneTable:
        items = tuple(sorted(dataclasses.asdict(self.settings).items()))
        return _reference_road(self.spec.name, items).to(device)

    def driver(self) -> DriverModel:
        """The scenario's driver parameters; the ego's target speeds are the scenario's own
        (its highway-env action settings), as the highway-env backend keeps them."""
        action = self.spec.simulator_class().default_config()["action"]
        speeds = action.get("target_speeds")
        if speeds is None:
            return DriverModel()
        return DriverModel(target_speeds=tuple(float(v) for v in speeds))

    def n_slots(self) -> int:
        """Vehicle slots per environment, ego included."""
        raise NotImplementedError

    def forget(self) -> None:
        """Drop what was drawn ahead from the random stream (on reseeding)."""

    def after_step(self, t: Traffic, sim: Simulator) -> None:
        """What the scenario's highway-env step adds after simulating a policy period (the
        intersection's departures and arrivals, drawn from each episode's own stream ``t.rng``:
        :mod:`envs.batched.streams`); nothing by default."""

    def place(self, t: Traffic, sim: Simulator, gen: torch.Generator) -> None:
        """Fill ``t`` (k environments, :meth:`n_slots` each) with the initial vehicles."""
        raise NotImplementedError

    def spawn(self, k: int, sim: Simulator, gen: torch.Generator, discrete: bool) -> Traffic:
        """Initial traffic of ``k`` new environments."""
        t = empty_traffic(k, self.n_slots(), sim.road.x0.device)
        self.place(t, sim, gen)
        return _finish(t, sim, discrete)


class HighwayTraffic(BatchedScenario):
    """HighwayEnvFast's ``_create_vehicles``: the ego, then vehicles ahead of it in random lanes."""

    @dataclass(frozen=True)
    class Settings:
        lanes_count: int
        vehicles_count: int
        vehicles_density: float
        ego_spacing: float
        simulation_frequency: int  # [Hz]

    all_collisions = False  # HighwayEnvFast: only the ego checks collisions

    def n_slots(self) -> int:
        return 1 + self.settings.vehicles_count

    def place(self, t: Traffic, sim: Simulator, gen: torch.Generator) -> None:
        cfg, (k, n), device = self.settings, t.x.shape, t.x.device
        lanes = cfg.lanes_count
        limit = float(sim.road.speed_limit[0])
        decay = math.exp(-5 / 40 * lanes)
        ego_offset = cfg.ego_spacing * (12 + 25.0) * decay
        ego_x = 3 * ego_offset + ego_offset * _uniform(gen, (k,), 0.9, 1.1, device)
        m = n - 1
        speed = _uniform(gen, (k, m), 0.7 * limit, 0.8 * limit, device)
        offset = (1 / cfg.vehicles_density) * (12 + speed) * decay
        x = ego_x[:, None] + torch.cumsum(offset * _uniform(gen, (k, m), 0.9, 1.1, device), 1)
        lane = torch.randint(lanes, (k, n), generator=gen, device=device)
        width = float(sim.road.width[0])
        t.x = torch.cat([ego_x[:, None], x], 1)
        t.y = lane.float() * width
        t.speed = torch.cat([torch.full((k, 1), 25.0, device=device), speed], 1)
        t.target_speed = t.speed.clone()
        t.delta[:, 1:] = _uniform(gen, (k, m), *DELTA_RANGE, device)
        t.kind[:, 0], t.kind[:, 1:] = EGO, IDM
        t.check_collisions[:, 1:] = False  # HighwayEnvFast: only the ego checks collisions


class MergeTraffic(BatchedScenario):
    """MergeEnv's ``_make_vehicles``: three highway vehicles, one on the ramp, an obstacle.

    Same draws as highway-env's (lane, position and speed offsets of the three highway cars, no
    ``randomize_behavior``), held to its distribution by
    ``tests/envs/batched/test_batched_initial_states.py``.
    """

    def n_slots(self) -> int:
        return 1 + 4 + 1  # ego, three highway vehicles, the merging one, the obstacle

    def place(self, t: Traffic, sim: Simulator, gen: torch.Generator) -> None:
        k, device = t.x.shape[0], t.x.device
        t.kind[:, 0], t.kind[:, 1:5], t.kind[:, 5] = EGO, IDM, OBSTACLE
        t.x[:, 0], t.y[:, 0], t.speed[:, 0] = 30.0, 4.0, 30.0
        base = torch.tensor([90.0, 70.0, 5.0], device=device)
        speed = torch.tensor([29.0, 31.0, 31.5], device=device)
        t.x[:, 1:4] = base + _uniform(gen, (k, 3), -5.0, 5.0, device)
        t.y[:, 1:4] = 4.0 * torch.randint(2, (k, 3), generator=gen, device=device).float()
        t.speed[:, 1:4] = speed + _uniform(gen, (k, 3), -1.0, 1.0, device)
        t.target_speed = t.speed.clone()
        t.x[:, 4], t.y[:, 4], t.speed[:, 4] = 110.0, 14.5, 20.0
        t.target_speed[:, 4] = 30.0
        t.x[:, 5], t.y[:, 5] = 310.0, 8.0
        t.length[:, 5], t.width[:, 5] = Obstacle.LENGTH, Obstacle.WIDTH


class RouteTraffic(BatchedScenario):
    """What the route scenarios share: lanes by highway-env index, destinations."""

    def _lane(self, road: LaneTable, index: tuple[str, str, int], k: int) -> torch.Tensor:
        return torch.full((k,), road.indexes.index(index), dtype=torch.long, device=road.x0.device)

    def _put(
        self,
        t: Traffic,
        sim: Simulator,
        slot: int,
        lane: torch.Tensor,
        s: torch.Tensor,
        speed: torch.Tensor,
        heading_s: torch.Tensor | None = None,
    ) -> None:
        """make_on_lane: the vehicles of ``slot`` on ``lane`` at ``s`` ((k,) each), heading as
        the lane at ``heading_s`` (default ``s``)."""
        road = sim.road
        t.x[:, slot], t.y[:, slot] = road.position(lane, s, torch.zeros_like(s))
        t.heading[:, slot] = road.heading_at(lane, s if heading_s is None else heading_s)
        t.speed[:, slot] = speed
        t.target_speed[:, slot] = speed

    def _drivers(self, t: Traffic, slots: slice, gen: torch.Generator) -> None:
        """IDM vehicles of ``slots`` with randomize_behavior's exponent, on their routes."""
        t.kind[:, slots] = IDM
        t.delta[:, slots] = _uniform(gen, t.delta[:, slots].shape, *DELTA_RANGE, t.x.device)
        t.route_lock[:, slots] = True

    def _destinations(self, road: LaneTable, names, shape, gen: torch.Generator) -> torch.Tensor:
        """Nodes drawn uniformly from ``names``: a (shape) long tensor."""
        nodes = torch.tensor([road.node(n) for n in names], device=road.x0.device)
        pick = torch.randint(len(names), shape, generator=gen, device=road.x0.device)
        return nodes[pick]


class RoundaboutTraffic(RouteTraffic):
    """RoundaboutEnv's ``_make_vehicles``: the ego on the south entry, a vehicle on the ring's
    inner lane, two on its outer lane and one entering from the east, each to a random exit;
    the ego's exit is the scenario's (one of its destinations)."""

    EXITS = ("exr", "sxr", "nxr")  # the other vehicles' destinations in RoundaboutEnv

    def n_slots(self) -> int:
        return 5

    def place(self, t: Traffic, sim: Simulator, gen: torch.Generator) -> None:
        road, (k, _), device = sim.road, t.x.shape, t.x.device

        def normal(sd: float) -> torch.Tensor:
            return sd * torch.randn(k, generator=gen, device=device)

        ego = self._lane(road, ("ser", "ses", 0), k)
        full = torch.full((k,), 1.0, device=device)
        self._put(t, sim, 0, ego, 125.0 * full, 8.0 * full, heading_s=140.0 * full)
        t.kind[:, 0] = EGO
        t.destination[:, 0] = self._destinations(road, self.spec.destinations, (k,), gen)
        ring_in, ring_out = (
            self._lane(road, ("we", "sx", 1), k),
            self._lane(road, ("we", "sx", 0), k),
        )
        self._put(t, sim, 1, ring_in, 5.0 + normal(2.0), 16.0 + normal(2.0))
        self._put(t, sim, 2, ring_out, 20.0 + normal(2.0), 16.0 + normal(2.0))
        self._put(t, sim, 3, ring_out, -20.0 + normal(2.0), 16.0 + normal(2.0))
        entry = self._lane(road, ("eer", "ees", 0), k)
        self._put(t, sim, 4, entry, 50.0 + normal(2.0), 16.0 + normal(2.0))
        self._drivers(t, slice(1, 5), gen)
        t.destination[:, 1:] = self._destinations(road, self.EXITS, (k, 4), gen)


class IntersectionTraffic(RouteTraffic):
    """IntersectionEnv: a regulated road with lane priorities; traffic spawned on the four
    approaches, run for 3 s before the ego arrives, then cleared when it leaves and spawned anew
    after every policy step (``_make_vehicles``, ``_spawn_vehicle``, ``_clear_vehicles``).

    Traffic lives in a fixed number of slots: a spawn that finds none free is dropped (highway-env
    has no limit; :meth:`n_slots` leaves room for what its spawn rate keeps on the road).
    """

    @dataclass(frozen=True)
    class Settings:
        simulation_frequency: int  # [Hz]
        spawn_probability: float  # of a new vehicle after each policy step
        initial_vehicle_count: int  # spawn attempts before the warm-up, plus one

    regulated = True
    # at the defaults: never full while an episode runs (tests/envs/batched/test_batched_routes.py)
    SLOTS = 16
    WARM_UP = 3  # [s] simulated before the ego is placed
    # _make_vehicles spawns the initial traffic at _spawn_vehicle's own default probability,
    # whatever the spawn_probability setting (which only the arrivals after each step follow)
    INITIAL_PROBABILITY = float(
        inspect.signature(IntersectionEnv._spawn_vehicle).parameters["spawn_probability"].default
    )
    CLEAR_GAP = 15.0  # [m] a new vehicle needs this much room from every other
    EGO_CLEARANCE = 20.0  # [m] vehicles this close to the ego are removed at the start

    def driver(self) -> DriverModel:
        # _make_vehicles sets these class attributes of its drivers: low jam distance, strong
        # comfortable acceleration and braking
        speeds = super().driver().target_speeds
        return DriverModel(
            comfort_acc_max=6.0, comfort_acc_min=-3.0, distance_wanted=7.0, target_speeds=speeds
        )

    def n_slots(self) -> int:
        """:data:`SLOTS` at the default settings, more for more initial traffic or arrivals."""
        extra_initial = max(0, self.settings.initial_vehicle_count - 10)
        extra_arrivals = math.ceil(20 * max(0.0, self.settings.spawn_probability - 0.6))
        return self.SLOTS + extra_initial + extra_arrivals

    POOL = 256  # initial states made at once, at most (their 3 s warm-up is one batched run)

    def __init__(self, spec: Scenario, sim: dict[str, Any]) -> None:
        super().__init__(spec, sim)
        check(
            self.settings.simulation_frequency >= REGULATION_FREQUENCY,
            f"sim.simulation_frequency: {self.settings.simulation_frequency} Hz is below the "
            f"intersection's rules, enforced {REGULATION_FREQUENCY} times a second; use at "
            f"least {REGULATION_FREQUENCY} Hz",
        )
        self.pool: Traffic | None = None
        self._lane_tables: dict[torch.device, dict[str, torch.Tensor]] = {}

    def forget(self) -> None:
        self.pool = None

    def spawn(self, k: int, sim: Simulator, gen: torch.Generator, discrete: bool) -> Traffic:
        """``k`` initial states, taken from a pool made up to :data:`POOL` at a time (16 per
        environment asked for, so a single env does not warm up 256 starts to use one)."""
        if self.pool is None or len(self.pool.x) < k:
            fresh = self._make(max(k, min(self.POOL, 16 * k)), sim, gen, discrete)
            self.pool = fresh if self.pool is None else _concat(self.pool, fresh)
        pool = self.pool
        out = pool.select(torch.arange(k, device=pool.x.device))
        self.pool = pool.select(torch.arange(k, len(pool.x), device=pool.x.device))
        return out

    def _make(self, k: int, sim: Simulator, gen: torch.Generator, discrete: bool) -> Traffic:
        road, device = sim.road, sim.road.x0.device
        t = empty_traffic(k, self.n_slots(), device)
        count = self.settings.initial_vehicle_count
        draws = GeneratorDraws(gen, k, device)
        for s0 in np.linspace(0, 80, count)[:-1]:
            self.spawn_vehicles(t, sim, draws, float(s0), self.INITIAL_PROBABILITY)
        self.before_warm_up(t, sim, gen)
        dt = 1.0 / self.settings.simulation_frequency
        for _ in range(self.WARM_UP * self.settings.simulation_frequency):
            sim.step(t, dt)
        self.spawn_vehicles(t, sim, draws, 60.0, 1.0, True, position_sd=0.1, speed_sd=0.0)
        ego = self._lane(road, ("o0", "ir0", 0), k)
        s = 60.0 + 5.0 * (1.0 + torch.randn(k, generator=gen, device=device))
        limit = road.speed_limit[ego]
        self._put(t, sim, 0, ego, s, limit, heading_s=torch.full_like(s, 60.0))
        t.kind[:, 0] = EGO
        t.road_order[:, 0] = _next_order(t)  # appended to road.vehicles after the traffic
        t.destination[:, 0] = self._destinations(road, self.spec.destinations, (k,), gen)
        close = torch.hypot(t.x - t.x[:, :1], t.y - t.y[:, :1]) < self.EGO_CLEARANCE
        close[:, 0] = False
        t.kind = torch.where(close, EMPTY, t.kind)
        # the ego's own lane bookkeeping (the traffic has been driving)
        sim.update_lanes(t)
        t.target_lane[:, 0] = t.lane[:, 0]
        t.timer[:, 0] = 0.0
        _ego_speed_index(t, sim, discrete)
        t.rng = stream_keys(gen, k, device)  # what each episode draws while it runs
        return t

    def before_warm_up(self, t: Traffic, sim: Simulator, gen: torch.Generator) -> None:
        """What a variant of the scenario adds to the initial traffic before its warm-up
        (nothing here)."""

    def vehicle_slots(self) -> int:
        """Slots ``0 .. vehicle_slots() - 1`` hold vehicles (all of them here)."""
        return self.n_slots()

    def _lanes(self, road: LaneTable) -> dict[str, torch.Tensor]:
        """Lane tables of the arrivals and departures (made once per device)."""
        device = road.x0.device
        if device not in self._lane_tables:
            indexes = road.indexes
            tables = {
                # _clear_vehicles: on a road from an inner "il" node to an outer "o" node
                "exit": [("il" in a) and ("o" in b) for a, b, _ in indexes],
                "approach": [indexes.index((f"o{i}", f"ir{i}", 0)) for i in range(4)],
                "destination": [road.node(f"o{i}") for i in range(4)],
            }
            self._lane_tables[device] = {
                k: torch.tensor(v, device=device) for k, v in tables.items()
            }
        return self._lane_tables[device]

    def after_step(self, t: Traffic, sim: Simulator) -> None:
        road = sim.road
        s, _ = road.coordinates_on(t.lane, t.x, t.y)
        exit_lane = self._lanes(road)["exit"][t.lane]
        leaving = exit_lane & (s >= road.length[t.lane] - 4 * t.length)
        t.kind = torch.where(leaving & (t.kind == IDM), EMPTY, t.kind)
        self.spawn_vehicles(t, sim, StreamDraws(t), 0.0)

    def spawn_vehicles(
        self,
        t: Traffic,
        sim: Simulator,
        draws: GeneratorDraws | StreamDraws,
        longitudinal: float,
        probability: float | None = None,
        go_straight: bool = False,
        position_sd: float = 1.0,
        speed_sd: float = 1.0,
    ) -> None:
        """_spawn_vehicle in every environment: with some probability a vehicle on a random
        approach, to a random other exit (or straight on), unless another is within 15 m
        (``draws``: one value per environment and call, :mod:`envs.batched.streams`)."""
        road, device = sim.road, t.x.device
        p = self.settings.spawn_probability if probability is None else probability
        go = draws.rand() <= p
        start = draws.randint(4)
        if go_straight:
            end = (start + 2) % 4
        else:  # another approach, uniformly
            end = (start + 1 + draws.randint(3)) % 4
        s = longitudinal + 5.0 + position_sd * draws.randn()
        speed = 8.0 + speed_sd * draws.randn()
        tables = self._lanes(road)
        approach, exits = tables["approach"], tables["destination"]
        lane = approach[start]
        x, y = road.position(lane, s, torch.zeros_like(s))
        crowded = (
            (torch.hypot(t.x - x[:, None], t.y - y[:, None]) < self.CLEAR_GAP) & t.alive
        ).any(1)
        free = t.kind == EMPTY
        free[:, 0] = False  # the ego's slot
        free[:, self.vehicle_slots() :] = False  # slots kept for pedestrians, if any
        go = go & ~crowded & free.any(1)
        env = go.nonzero()[:, 0]
        if env.numel() == 0:
            draws.skip()  # the exponents' draw: an episode's stream moves the same either way
            return
        slot = free[env].int().argmax(1)
        fresh = empty_traffic(len(env), 1, device)
        fresh.x[:, 0], fresh.y[:, 0] = x[env], y[env]
        fresh.heading[:, 0] = road.heading_at(lane[env], s[env])
        fresh.speed[:, 0] = speed[env]
        fresh.target_speed[:, 0] = speed[env]
        fresh.kind[:, 0] = IDM
        lo, hi = DELTA_RANGE
        fresh.delta[:, 0] = lo + (hi - lo) * draws.rand_rows(env)
        fresh.destination[:, 0] = exits[end[env]]
        fresh.route_lock[:, 0] = True
        fresh.road_order[:, 0] = _next_order(t)[env]  # appended to road.vehicles
        sim.update_lanes(fresh)
        fresh.target_lane = fresh.lane.clone()
        fresh.timer = _timer(fresh)
        for f in dataclasses.fields(Traffic):
            value = getattr(fresh, f.name)
            if value.dim() == 2:
                getattr(t, f.name)[env, slot] = value[:, 0]


class SignalizedTraffic(IntersectionTraffic):
    """The intersection's traffic with traffic lights and pedestrians
    (:mod:`envs.batched.signals`): the lights' clock drawn over the cycle, pedestrians in slots
    of their own, spawned before the warm-up and after every policy step."""

    @dataclass(frozen=True)
    class Settings:
        simulation_frequency: int  # [Hz]
        spawn_probability: float  # of a new vehicle after each policy step
        initial_vehicle_count: int  # spawn attempts before the warm-up, plus one
        green_duration: float  # [s] each group's green
        amber_duration: float  # [s] each group's amber
        all_red_duration: float  # [s] both groups red, between them
        pedestrian_probability: float  # of a new pedestrian after each policy step
        jaywalk_probability: float  # of a pedestrian who does not wait for the walk signal

    PEDESTRIAN_SLOTS = 6
    INITIAL_PEDESTRIANS = 3  # spawn attempts before the warm-up

    def __init__(self, spec: Scenario, sim: dict[str, Any]) -> None:
        super().__init__(spec, sim)
        self._signals: dict[torch.device, Any] = {}

    def signals(self, road: LaneTable) -> Any:
        """The :class:`envs.batched.signals.Signals` of ``road`` (one per device)."""
        from drive_attention.envs.batched.signals import Signals, Timing

        device = road.x0.device
        if device not in self._signals:
            cfg = self.settings
            timing = Timing(cfg.green_duration, cfg.amber_duration, cfg.all_red_duration)
            self._signals[device] = Signals(road, timing)
        return self._signals[device]

    def n_slots(self) -> int:
        return super().n_slots() + self.PEDESTRIAN_SLOTS

    def vehicle_slots(self) -> int:
        return super().n_slots()

    def _spawn_pedestrians(
        self, t: Traffic, sim: Simulator, draws: GeneratorDraws | StreamDraws
    ) -> None:
        cfg = self.settings
        sim.signals.spawn_pedestrians(
            t,
            draws,
            cfg.pedestrian_probability,
            cfg.jaywalk_probability,
            self.vehicle_slots(),
            _next_order(t),
        )

    def before_warm_up(self, t: Traffic, sim: Simulator, gen: torch.Generator) -> None:
        k, device = t.x.shape[0], t.x.device
        cycle = sim.signals.timing.cycle
        t.clock = cycle * torch.rand(k, generator=gen, device=device)
        draws = GeneratorDraws(gen, k, device)
        for _ in range(self.INITIAL_PEDESTRIANS):
            self._spawn_pedestrians(t, sim, draws)
        sim.update_lanes(t)

    def _make(self, k: int, sim: Simulator, gen: torch.Generator, discrete: bool) -> Traffic:
        t = super()._make(k, sim, gen, discrete)
        sim.signals.start(t)
        return t

    def after_step(self, t: Traffic, sim: Simulator) -> None:
        super().after_step(t, sim)
        self._spawn_pedestrians(t, sim, StreamDraws(t))


BATCHED: dict[str, type[BatchedScenario]] = {
    "highway": HighwayTraffic,
    "merge": MergeTraffic,
    "roundabout": RoundaboutTraffic,
    "intersection": IntersectionTraffic,
    "signalized": SignalizedTraffic,
}
"""The batched part of each scenario that has one (``batched=True`` in :mod:`envs.scenarios`)."""
assert set(BATCHED) == {name for name, spec in SCENARIOS.items() if spec.batched}


def empty_traffic(k: int, n: int, device: torch.device) -> Traffic:
    def z(dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return torch.zeros(k, n, dtype=dtype, device=device)

    return Traffic(
        x=z(),
        y=z(),
        heading=z(),
        speed=z(),
        lane=z(torch.long),
        target_lane=z(torch.long),
        target_speed=z(),
        delta=torch.full((k, n), DELTA, device=device),
        timer=z(torch.float64),  # float64 as highway-env, so `timer > 1` flips on the same step
        crashed=z(torch.bool),
        impact=torch.zeros(k, n, 2, device=device),
        has_impact=z(torch.bool),
        road_order=torch.arange(n, device=device).expand(k, n).clone(),
        steering=z(),
        acceleration=z(),
        kind=torch.full((k, n), EMPTY, dtype=torch.long, device=device),
        length=torch.full((k, n), LENGTH, device=device),
        width=torch.full((k, n), WIDTH, device=device),
        check_collisions=torch.ones(k, n, dtype=torch.bool, device=device),
        speed_index=torch.zeros(k, dtype=torch.long, device=device),
        destination=torch.full((k, n), -1, dtype=torch.long, device=device),
        route_lock=z(torch.bool),
        yielding=z(torch.bool),
        road_steps=torch.zeros(k, dtype=torch.long, device=device),
        clock=torch.zeros(k, device=device),
        waiting=z(torch.bool),
        behind_line=torch.zeros(k, dtype=torch.bool, device=device),
        red_runs=torch.zeros(k, dtype=torch.long, device=device),
        pedestrian_hit=torch.zeros(k, dtype=torch.bool, device=device),
        rng=torch.zeros(k, dtype=torch.long, device=device),
    )


def _next_order(t: Traffic) -> torch.Tensor:
    """(B,) the rank in highway-env's vehicle list of a vehicle appended now."""
    alive = t.alive.clone()
    alive[:, 0] |= t.kind[:, 0] == EGO
    return torch.where(alive, t.road_order, -1).amax(1) + 1


def _concat(a: Traffic, b: Traffic) -> Traffic:
    """The environments of ``a`` then those of ``b``."""
    return Traffic(
        **{
            f.name: torch.cat([getattr(a, f.name), getattr(b, f.name)])
            for f in dataclasses.fields(a)
        }
    )


def _uniform(gen: torch.Generator, shape: tuple[int, ...], lo: float, hi: float, device) -> Any:
    return lo + (hi - lo) * torch.rand(shape, generator=gen, device=device)


def _finish(t: Traffic, sim: Simulator, discrete: bool) -> Traffic:
    """Lanes, targets and timers of freshly placed vehicles, as highway-env's constructors."""
    sim.update_lanes(t)
    t.target_lane = t.lane.clone()
    t.timer = _timer(t)
    _ego_speed_index(t, sim, discrete)
    return t


def _timer(t: Traffic) -> torch.Tensor:
    """IDMVehicle.__init__'s MOBIL timer: (sum(position) * pi) % LANE_CHANGE_DELAY."""
    return torch.remainder((t.x + t.y).double() * math.pi, LANE_CHANGE_DELAY)


def _ego_speed_index(t: Traffic, sim: Simulator, discrete: bool) -> None:
    """The ego's target speed as its class sets it from its initial speed."""
    speeds = torch.tensor(sim.driver.target_speeds, device=t.x.device)
    if discrete:  # MDPVehicle: target speed snapped to the closest allowed one
        x = (t.speed[:, 0] - speeds[0]) / (speeds[-1] - speeds[0])
        t.speed_index = torch.round(x * (len(speeds) - 1)).clamp(0, len(speeds) - 1).long()
        t.target_speed[:, 0] = speeds[t.speed_index]
    else:  # a plain Vehicle has no target speed (getattr(..., 0) in IDM)
        t.target_speed[:, 0] = 0.0


def slot_order(sim_env: Any) -> list[Any]:
    """A highway-env environment's vehicles then objects, the ego first: the slots of
    :func:`import_state` (the ego goes into slot 0 wherever it is in highway-env's list)."""
    ego = sim_env.vehicle
    return [ego] + [v for v in sim_env.road.vehicles if v is not ego] + list(sim_env.road.objects)


def import_state(
    sim_env: Any, road: LaneTable, n: int | None = None, destination: str | None = None
) -> Traffic:
    """Traffic (B=1) copied from a highway-env environment's current state (ego first).

    Copies position, heading, speed, lanes, targets, IDM exponent, MOBIL timer, held action,
    crash flag, pending impact, rank in the road's collision order, route (its destination,
    whether it is still on its first lane), yielding state and the road's rule clock of every
    vehicle and obstacle, so both simulators can run from one state. The ego goes into slot 0
    wherever it is in highway-env's list. ``destination``: the ego's exit node where its
    vehicle has no route to read it from (a continuous-action ego is a plain ``Vehicle``; the
    highway-env backend's ``DriveEnv.destination``).
    """
    vehicles = slot_order(sim_env)
    # Road.step's collision order: road.vehicles then road.objects, whatever the slots
    listed = list(sim_env.road.vehicles) + list(sim_env.road.objects)
    order = {id(v): k for k, v in enumerate(listed)}
    n = n or len(vehicles)
    assert len(vehicles) <= n, f"{len(vehicles)} vehicles do not fit into {n} slots"
    t = empty_traffic(1, n, road.x0.device)
    rows = {index: i for i, index in enumerate(road.indexes)}
    for i, v in enumerate(vehicles):
        t.x[0, i], t.y[0, i] = float(v.position[0]), float(v.position[1])
        t.heading[0, i], t.speed[0, i] = float(v.heading), float(v.speed)
        t.lane[0, i] = rows[tuple(v.lane_index)]
        t.target_lane[0, i] = rows[tuple(getattr(v, "target_lane_index", v.lane_index))]
        t.target_speed[0, i] = float(getattr(v, "target_speed", 0.0))
        t.delta[0, i] = float(getattr(v, "DELTA", DELTA))
        t.timer[0, i] = float(getattr(v, "timer", 0.0) or 0.0)
        t.crashed[0, i] = bool(getattr(v, "crashed", False))
        # Vehicle.impact: None, or the push of the last collision check (an obstacle's zeros
        # are never applied: obstacles do not step)
        impact = getattr(v, "impact", None)
        if impact is not None and not isinstance(v, Obstacle):
            t.impact[0, i] = torch.as_tensor(np.asarray(impact, dtype=np.float64))
            t.has_impact[0, i] = True
        t.road_order[0, i] = order[id(v)]
        action = getattr(v, "action", {"steering": 0.0, "acceleration": 0.0})
        t.steering[0, i] = float(action["steering"])
        t.acceleration[0, i] = float(action["acceleration"])
        t.length[0, i], t.width[0, i] = float(v.LENGTH), float(v.WIDTH)
        t.check_collisions[0, i] = bool(v.check_collisions)
        route = getattr(v, "route", None)
        if route:
            t.destination[0, i] = road.node(route[-1][1])
            t.route_lock[0, i] = route[0][2] is not None
        t.yielding[0, i] = bool(getattr(v, "is_yielding", False))
        if i == 0 and not route and destination is not None:
            t.destination[0, 0] = road.node(destination)
        if i == 0:
            t.kind[0, i] = EGO
            if isinstance(v, MDPVehicle):
                t.speed_index[0] = int(v.speed_index)
        else:
            t.kind[0, i] = OBSTACLE if isinstance(v, Obstacle) else IDM
    t.road_steps[0] = int(getattr(sim_env.road, "steps", 0))
    return t


def export_positions(sim_env: Any) -> np.ndarray:
    """(N, 2) positions [m] of a highway-env road's vehicles then objects, the ego first (the
    slot order of :func:`import_state`)."""
    vehicles = slot_order(sim_env)
    return np.array([v.position for v in vehicles], dtype=float)
