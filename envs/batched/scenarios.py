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
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from highway_env.vehicle.controller import MDPVehicle
from highway_env.vehicle.objects import Obstacle

from envs.batched.road import LaneTable, lane_table
from envs.batched.sim import (
    DELTA,
    DELTA_RANGE,
    EGO,
    EMPTY,
    IDM,
    LANE_CHANGE_DELAY,
    LENGTH,
    OBSTACLE,
    TARGET_SPEEDS,
    WIDTH,
    Simulator,
    Traffic,
)
from envs.configuration import build
from envs.scenarios import SCENARIOS, Scenario


@functools.cache
def _reference_road(name: str, settings: tuple[tuple[str, Any], ...]) -> LaneTable:
    """The lane table of highway-env's road network of scenario ``name`` (built once)."""
    spec = SCENARIOS[name]
    env = spec.simulator_class()(config={**spec.sim_config, **dict(settings), "vehicles_count": 0})
    env.reset(seed=0)
    return lane_table(env.road.network)


class BatchedScenario:
    """The batched part of a scenario: settings, slots, initial traffic."""

    @dataclass(frozen=True)
    class Settings:
        """highway-env settings the batched scenario honours (defaults: the simulator's own,
        then the scenario's)."""

        simulation_frequency: int  # [Hz]

    all_collisions: ClassVar[bool] = True  # every vehicle checks collisions (highway-env)

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

    def n_slots(self) -> int:
        """Vehicle slots per environment, ego included."""
        raise NotImplementedError

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
    """MergeEnv's ``_make_vehicles``: three highway vehicles, one on the ramp, an obstacle."""

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


BATCHED: dict[str, type[BatchedScenario]] = {"highway": HighwayTraffic, "merge": MergeTraffic}
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
        steering=z(),
        acceleration=z(),
        kind=torch.full((k, n), EMPTY, dtype=torch.long, device=device),
        length=torch.full((k, n), LENGTH, device=device),
        width=torch.full((k, n), WIDTH, device=device),
        check_collisions=torch.ones(k, n, dtype=torch.bool, device=device),
        speed_index=torch.zeros(k, dtype=torch.long, device=device),
    )


def _uniform(gen: torch.Generator, shape: tuple[int, ...], lo: float, hi: float, device) -> Any:
    return lo + (hi - lo) * torch.rand(shape, generator=gen, device=device)


def _finish(t: Traffic, sim: Simulator, discrete: bool) -> Traffic:
    """Lanes, targets and timers of freshly placed vehicles, as highway-env's constructors."""
    sim.update_lanes(t)
    t.target_lane = t.lane.clone()
    # IDMVehicle.__init__: timer = (sum(position) * pi) % LANE_CHANGE_DELAY
    t.timer = torch.remainder((t.x + t.y).double() * math.pi, LANE_CHANGE_DELAY)
    speeds = torch.tensor(TARGET_SPEEDS, device=t.x.device)
    if discrete:  # MDPVehicle: target speed snapped to the closest allowed one
        x = (t.speed[:, 0] - speeds[0]) / (speeds[-1] - speeds[0])
        t.speed_index = torch.round(x * (len(speeds) - 1)).clamp(0, len(speeds) - 1).long()
        t.target_speed[:, 0] = speeds[t.speed_index]
    else:  # a plain Vehicle has no target speed (getattr(..., 0) in IDM)
        t.target_speed[:, 0] = 0.0
    return t


def import_state(sim_env: Any, road: LaneTable, n: int | None = None) -> Traffic:
    """Traffic (B=1) copied from a highway-env environment's current state (ego first).

    Copies position, heading, speed, lanes, targets, IDM exponent, MOBIL timer, held action
    and crash flag of every vehicle and obstacle, so both simulators can run from one state.
    """
    vehicles = list(sim_env.road.vehicles) + list(sim_env.road.objects)
    assert vehicles[0] is sim_env.vehicle, "the ego must be the first vehicle of the road"
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
        action = getattr(v, "action", {"steering": 0.0, "acceleration": 0.0})
        t.steering[0, i] = float(action["steering"])
        t.acceleration[0, i] = float(action["acceleration"])
        t.length[0, i], t.width[0, i] = float(v.LENGTH), float(v.WIDTH)
        t.check_collisions[0, i] = bool(v.check_collisions)
        if i == 0:
            t.kind[0, i] = EGO
            if isinstance(v, MDPVehicle):
                t.speed_index[0] = int(v.speed_index)
        else:
            t.kind[0, i] = OBSTACLE if isinstance(v, Obstacle) else IDM
    return t


def export_positions(sim_env: Any) -> np.ndarray:
    """(N, 2) positions [m] of a highway-env road's vehicles then objects."""
    vehicles = list(sim_env.road.vehicles) + list(sim_env.road.objects)
    return np.array([v.position for v in vehicles], dtype=float)
