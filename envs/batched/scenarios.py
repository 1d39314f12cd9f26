"""Scenarios of the batched simulator: road from highway-env, initial traffic, state import.

Spawning follows highway-env's ``_create_vehicles`` / ``_make_vehicles`` of each scenario with
torch random draws (same distributions, not the same random stream): for the highway,
``Vehicle.create_random`` places each new vehicle ``offset * U(0.9, 1.1)`` ahead of the last one,
which is a cumulative sum over the batch.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from highway_env.envs.highway_env import HighwayEnvFast
from highway_env.envs.merge_env import MergeEnv
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


@dataclass(frozen=True)
class HighwaySettings:
    """highway-env settings the batched highway honours (HighwayEnvFast's defaults)."""

    lanes_count: int = 3
    vehicles_count: int = 20
    vehicles_density: float = 1.0
    ego_spacing: float = 1.5
    simulation_frequency: int = 5  # [Hz]


SIM_KEYS: dict[str, tuple[str, ...]] = {
    "highway": (
        "lanes_count",
        "vehicles_count",
        "vehicles_density",
        "ego_spacing",
        "simulation_frequency",
    ),
    "merge": ("simulation_frequency",),
}
SIM_FREQUENCY = {"highway": 5, "merge": 10}  # [Hz] defaults, as envs.highway.SCENARIOS


@functools.cache
def _reference_road(scenario: str, lanes_count: int) -> tuple[Any, LaneTable]:
    """highway-env's road network of ``scenario`` and its lane table (built once)."""
    if scenario == "highway":
        env = HighwayEnvFast(config={"lanes_count": lanes_count, "vehicles_count": 0})
    elif scenario == "merge":
        env = MergeEnv()
    else:
        raise NotImplementedError(f"scenario {scenario!r} has no batched version yet")
    env.reset(seed=0)
    return env.road, lane_table(env.road.network)


def road_for(scenario: str, settings: dict[str, Any], device: torch.device) -> LaneTable:
    lanes = int(settings.get("lanes_count", HighwaySettings.lanes_count))
    return _reference_road(scenario, lanes)[1].to(device)


def n_slots(scenario: str, settings: dict[str, Any]) -> int:
    """Vehicle slots per environment, ego included."""
    if scenario == "highway":
        return 1 + int(settings.get("vehicles_count", HighwaySettings.vehicles_count))
    return 1 + 4 + 1  # merge: ego, three highway vehicles, the merging one, the obstacle


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


def spawn(
    scenario: str,
    k: int,
    sim: Simulator,
    settings: dict[str, Any],
    gen: torch.Generator,
    discrete: bool,
) -> Traffic:
    """Initial traffic of ``k`` new environments."""
    device = sim.road.x0.device
    n = n_slots(scenario, settings)
    t = empty_traffic(k, n, device)
    if scenario == "highway":
        cfg = HighwaySettings(
            **{key: settings[key] for key in settings if key in SIM_KEYS[scenario]}
        )
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
    elif scenario == "merge":
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
    else:
        raise NotImplementedError(f"scenario {scenario!r} has no batched version yet")
    t = _finish(t, sim, discrete)
    if scenario == "merge":
        t.target_speed[:, 4] = 30.0
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
