"""Batched traffic simulation in torch: B environments of N vehicles stepped at once.

The behaviour models and their parameter values are highway-env's, read from its classes:

- traffic: :class:`highway_env.vehicle.behavior.IDMVehicle` (IDM longitudinal control, MOBIL
  lane changes with its timer, abort rule and thresholds, the cascaded lane-keeping steering
  controller of ``ControlledVehicle``);
- ego under meta-actions: ``MDPVehicle`` (discrete target speeds, target-lane changes, the same
  speed and steering controllers); under continuous actions: ``ContinuousAction``'s mapping
  (acceleration and steering ranges) held for the policy period;
- every vehicle: ``Vehicle.step``'s kinematic bicycle model with its action clipping; the lane
  is the closest one by highway-env's distance-with-heading; routes to destination nodes
  (``follow_road`` along the road's route table); collisions and impacts are ``Road.step``'s
  (:mod:`envs.batched.collision`);
- the intersection: ``RegulatedRoad``'s priorities and yielding
  (:meth:`Simulator.enforce_road_rules`).

State is a set of (B, N) tensors (:class:`Traffic`); slot 0 is the ego. Nothing in a step loops
over environments or vehicles. Leaders and followers come from :class:`NeighbourSearch`; the
rules that concern few vehicles at a time (MOBIL for those whose timer fires, the abort rule and
target-lane IDM for lane changes under way, the exact box tests, the rules' pairs) run on those
(K,) vehicles only, picked with ``nonzero`` (a host sync on a GPU).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from highway_env.envs.common.action import ContinuousAction
from highway_env.road.regulation import RegulatedRoad
from highway_env.vehicle.behavior import IDMVehicle
from highway_env.vehicle.controller import ControlledVehicle, MDPVehicle
from highway_env.vehicle.kinematics import Vehicle

from drive_attention.envs.batched.collision import Contacts, contacts
from drive_attention.envs.batched.road import VEHICLE_LENGTH, LaneTable, wrap_to_pi
from drive_attention.envs.contract import DISCRETE_ACTIONS

# Slot kinds: the ego, driven traffic, obstacles, free slots, pedestrians (the signalised
# intersection's, moved by :mod:`envs.batched.signals`)
EGO, IDM, OBSTACLE, EMPTY, PEDESTRIAN = 0, 1, 2, 3, 4

# IDM / MOBIL parameters (highway_env.vehicle.behavior.IDMVehicle)
ACC_MAX = IDMVehicle.ACC_MAX  # [m/s2]
COMFORT_ACC_MAX = IDMVehicle.COMFORT_ACC_MAX  # [m/s2]
COMFORT_ACC_MIN = IDMVehicle.COMFORT_ACC_MIN  # [m/s2]
DISTANCE_WANTED = IDMVehicle.DISTANCE_WANTED  # [m]
TIME_WANTED = IDMVehicle.TIME_WANTED  # [s]
DELTA = IDMVehicle.DELTA  # []
DELTA_RANGE = tuple(IDMVehicle.DELTA_RANGE)  # []
POLITENESS = IDMVehicle.POLITENESS  # []
LANE_CHANGE_MIN_ACC_GAIN = IDMVehicle.LANE_CHANGE_MIN_ACC_GAIN  # [m/s2]
LANE_CHANGE_MAX_BRAKING_IMPOSED = IDMVehicle.LANE_CHANGE_MAX_BRAKING_IMPOSED  # [m/s2]
LANE_CHANGE_DELAY = IDMVehicle.LANE_CHANGE_DELAY  # [s]
# Controllers (ControlledVehicle, MDPVehicle)
TAU_PURSUIT = ControlledVehicle.TAU_PURSUIT  # [s]
KP_A = ControlledVehicle.KP_A  # [1/s]
KP_HEADING = ControlledVehicle.KP_HEADING  # [1/s]
KP_LATERAL = ControlledVehicle.KP_LATERAL  # [1/s]
MAX_STEERING_ANGLE = ControlledVehicle.MAX_STEERING_ANGLE  # [rad]
TARGET_SPEEDS = tuple(float(v) for v in MDPVehicle.DEFAULT_TARGET_SPEEDS)  # [m/s]
# Kinematics (Vehicle)
LENGTH, WIDTH = Vehicle.LENGTH, Vehicle.WIDTH  # [m]
MAX_SPEED, MIN_SPEED = Vehicle.MAX_SPEED, Vehicle.MIN_SPEED  # [m/s]
ACCELERATION_RANGE = tuple(ContinuousAction.ACCELERATION_RANGE)  # [m/s2]
STEERING_RANGE = tuple(ContinuousAction.STEERING_RANGE)  # [rad]
VEHICLE_HALF = VEHICLE_LENGTH / 2  # [m] lane.after_end margin
SQRT_AB = math.sqrt(-COMFORT_ACC_MAX * COMFORT_ACC_MIN)  # [m/s2]

# Meta-actions, in the contract's order (highway-env's DiscreteMetaAction.ACTIONS_ALL)
LANE_LEFT, IDLE, LANE_RIGHT, FASTER, SLOWER = (
    DISCRETE_ACTIONS.index(name) for name in ("left", "idle", "right", "faster", "slower")
)


@dataclass
class Traffic:
    """State of B environments with N vehicle slots each; every tensor is (B, N) unless noted."""

    x: torch.Tensor  # [m]
    y: torch.Tensor  # [m]
    heading: torch.Tensor  # [rad]
    speed: torch.Tensor  # [m/s]
    lane: torch.Tensor  # long, closest lane (row of the LaneTable)
    target_lane: torch.Tensor  # long
    target_speed: torch.Tensor  # [m/s] (0 for a continuous-action ego, as highway-env's getattr)
    delta: torch.Tensor  # IDM exponent
    timer: torch.Tensor  # [s] MOBIL decision timer (float64)
    crashed: torch.Tensor  # bool
    impact: torch.Tensor  # (B, N, 2) [m] push from the last collision check (Vehicle.impact)
    has_impact: torch.Tensor  # bool, where ``impact`` is pending (highway-env: not None)
    road_order: torch.Tensor  # long, rank in highway-env's road.vehicles then road.objects
    steering: torch.Tensor  # [rad] held action
    acceleration: torch.Tensor  # [m/s2] held action
    kind: torch.Tensor  # long: EGO, IDM, OBSTACLE or EMPTY
    length: torch.Tensor  # [m]
    width: torch.Tensor  # [m]
    check_collisions: torch.Tensor  # bool
    speed_index: torch.Tensor  # (B,) long, the ego's MDPVehicle speed index
    destination: torch.Tensor  # long, node (LaneTable.nodes) the route leads to, -1: no route
    route_lock: torch.Tensor  # bool, still on the route's first lane: MOBIL keeps its lane
    yielding: torch.Tensor  # bool, stopped by the intersection's priority rules
    road_steps: torch.Tensor  # (B,) long, simulation frames so far (the rules' clock)
    # the signalised intersection (envs.batched.signals); unused elsewhere
    clock: torch.Tensor  # (B,) [s] time within the traffic lights' cycle
    waiting: torch.Tensor  # bool, a pedestrian waiting at the kerb for the walk signal
    behind_line: torch.Tensor  # (B,) bool, the ego is before its stop line (last frame)
    red_runs: torch.Tensor  # (B,) long, stop lines the ego crossed on red this episode
    pedestrian_hit: torch.Tensor  # (B,) bool, the ego has hit a pedestrian this episode
    rng: torch.Tensor  # (B,) int64, the episode's own random stream (envs.batched.streams)

    def select(self, index: torch.Tensor) -> Traffic:
        """The environments ``index`` (a (K,) long tensor or a (B,) bool mask)."""
        return Traffic(**{f.name: getattr(self, f.name)[index] for f in dataclasses.fields(self)})

    def assign(self, index: torch.Tensor, other: Traffic) -> None:
        """Overwrite environments ``index`` with ``other`` in place."""
        for f in dataclasses.fields(self):
            getattr(self, f.name)[index] = getattr(other, f.name)

    def clone(self) -> Traffic:
        return Traffic(**{f.name: getattr(self, f.name).clone() for f in dataclasses.fields(self)})

    @property
    def alive(self) -> torch.Tensor:
        return self.kind != EMPTY


def clip_action(
    speed: torch.Tensor, steering: torch.Tensor, acceleration: torch.Tensor, crashed: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Vehicle.clip_actions: a crashed vehicle brakes to a stop with its wheels straight, and
    the speed is held within MIN_SPEED..MAX_SPEED. Returns (steering, acceleration)."""
    steer = torch.where(crashed, 0.0, steering)
    acc = torch.where(crashed, -speed, acceleration)
    acc = torch.where(speed > MAX_SPEED, torch.minimum(acc, MAX_SPEED - speed), acc)
    acc = torch.where(speed < MIN_SPEED, torch.maximum(acc, MIN_SPEED - speed), acc)
    return steer, acc


def bicycle(
    x: torch.Tensor,
    y: torch.Tensor,
    heading: torch.Tensor,
    speed: torch.Tensor,
    steering: torch.Tensor,
    acceleration: torch.Tensor,
    length: torch.Tensor,
    dt: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Vehicle.step's kinematic bicycle model over ``dt`` [s]: the new (x, y, heading, speed)."""
    beta = torch.atan(0.5 * torch.tan(steering))
    return (
        x + speed * torch.cos(heading + beta) * dt,
        y + speed * torch.sin(heading + beta) * dt,
        heading + speed * torch.sin(beta) / (length / 2) * dt,
        speed + acceleration * dt,
    )


def not_zero(x: torch.Tensor, eps: float = 1e-2) -> torch.Tensor:
    """highway-env's utils.not_zero."""
    return torch.where(x.abs() > eps, x, torch.where(x >= 0, eps, -eps))


def take(
    values: torch.Tensor, index: torch.Tensor, env: torch.Tensor | None = None
) -> torch.Tensor:
    """``values`` (B, N) gathered at ``index`` (B, ...) with -1 read as slot 0.

    With ``env`` (K, 1), ``index`` is (K, P): slots of environments ``env``, (K, P) out.
    """
    if env is not None:
        return values[env, index.clamp(min=0)]
    b = values.shape[0]
    flat = index.clamp(min=0).reshape(b, -1)
    return values.gather(1, flat).reshape(index.shape)


@dataclass(frozen=True)
class DriverModel:
    """What differs between scenarios' drivers: highway-env's IDMVehicle class attributes (the
    intersection changes three of them) and the ego's MDPVehicle target speeds."""

    comfort_acc_max: float = COMFORT_ACC_MAX  # [m/s2]
    comfort_acc_min: float = COMFORT_ACC_MIN  # [m/s2]
    distance_wanted: float = DISTANCE_WANTED  # [m]
    target_speeds: tuple[float, ...] = TARGET_SPEEDS  # [m/s]

    @property
    def sqrt_ab(self) -> float:
        return math.sqrt(-self.comfort_acc_max * self.comfort_acc_min)


# RegulatedRoad (the intersection): rules enforced REGULATION_FREQUENCY times per second; a
# conflict is two boxes (grown to 1.5 length, 0.9 width) that would meet within the horizon
# at each vehicle's current action
REGULATION_FREQUENCY = RegulatedRoad.REGULATION_FREQUENCY  # [Hz]
CONFLICT_TIMES = tuple(float(x) for x in np.arange(0.25, 3, 0.25))  # [s] is_conflict_possible
ROUTE_HOPS = 4  # lanes a look-ahead along a route may cross (it is shorter than any four)


def lane_s(
    s_all: torch.Tensor, who: torch.Tensor, lanes: torch.Tensor, env: torch.Tensor | None = None
) -> torch.Tensor:
    """``s`` [m] of slots ``who`` on ``lanes`` from every vehicle's (B, N, L) coordinates.

    ``who``, ``lanes``: (B, K) (-1 read as slot 0), or (K, P) of the environments ``env`` (K, 1).
    """
    who = who.clamp(min=0)
    if env is None:
        env = torch.arange(s_all.shape[0], device=s_all.device)[:, None]
    return s_all[env, who, lanes]


class NeighbourSearch:
    """highway-env's Road.neighbour_vehicles(vehicle, lane_index) during one frame: the
    preceding and following vehicle of a vehicle looked up on any lane (it need not be on it).

    ``s_all``: (B, N, L) every vehicle's ``s`` on every lane; ``on_all``: (B, N, L) who is on
    which lane (``on_lane`` with a 1 m margin, alive vehicles only). The leader is the on-lane
    vehicle with the smallest ``s_j >= s_i``, the follower the one with the largest
    ``s_j < s_i`` (between vehicles at exactly the same ``s`` highway-env takes its list's
    last; here one of them). Two ways, same answers:

    - ``by_x=True`` (roads along +x: the order by ``s`` on every lane is the order by x):
      every vehicle on every lane from one sort by x, O(B N L) after it, looked up after;
    - ``by_x=False``: query by query, O(Q N) each (measured faster than sorting on every lane
      for the few vehicles of the other scenarios).
    """

    def __init__(self, t: Traffic, s_all: torch.Tensor, on_all: torch.Tensor, by_x: bool) -> None:
        self.s_all, self.on_all = s_all, on_all
        self.front = self.rear = None
        if by_x:
            self.front, self.rear = self._table(t)

    def __call__(
        self, env: torch.Tensor, slot: torch.Tensor, lane: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Leader and follower, (Q,) slots or -1, of vehicles ``slot`` of environments ``env``
        on ``lane`` ((Q,) each)."""
        if self.front is not None:
            return self.front[env, slot, lane], self.rear[env, slot, lane]
        s_all, n = self.s_all, self.s_all.shape[1]
        s_lane = s_all[env, :, lane]  # (Q, N) every vehicle along the lane
        mask = self.on_all[env, :, lane] & (torch.arange(n, device=slot.device) != slot[:, None])
        gap = s_lane - s_lane.gather(1, slot[:, None])  # (Q, N)
        return _closest(gap, mask, 1)

    def leaders(self, lanes: torch.Tensor) -> torch.Tensor:
        """Every vehicle's leader on ``lanes`` (B, N): (B, N) slots, -1 for none."""
        if self.front is not None:
            return self.front.gather(2, lanes[..., None])[..., 0]
        b, n = lanes.shape
        env = torch.arange(b, device=lanes.device).repeat_interleave(n)
        slot = torch.arange(n, device=lanes.device).repeat(b)
        return self(env, slot, lanes.reshape(-1))[0].reshape(b, n)

    def _table(self, t: Traffic) -> tuple[torch.Tensor, torch.Tensor]:
        on = self.on_all
        b, n, lanes = on.shape
        # on every lane, the next on-lane vehicle after a vehicle in the order by x is its
        # leader and the previous one its follower
        order = torch.argsort(t.x, dim=1, stable=True)[..., None].expand_as(on)
        on_sorted = on.gather(1, order)
        pos = torch.arange(n, device=on.device)[None, :, None]  # (1, N, 1)
        ahead = torch.where(on_sorted, pos, n).flip(1).cummin(1).values.flip(1)  # first >= p
        behind = torch.where(on_sorted, pos, -1).cummax(1).values  # last <= p
        nxt = torch.cat([ahead[:, 1:], ahead.new_full((b, 1, lanes), n)], 1)  # n: none
        prv = torch.cat([behind.new_full((b, 1, lanes), -1), behind[:, :-1]], 1)  # -1: none
        front_s = torch.where(nxt < n, order.gather(1, nxt.clamp(max=n - 1)), -1)
        rear_s = torch.where(prv >= 0, order.gather(1, prv.clamp(min=0)), -1)
        # back from sorted positions to slots
        front = torch.empty_like(front_s).scatter_(1, order, front_s)
        rear = torch.empty_like(rear_s).scatter_(1, order, rear_s)
        return front, rear


def _closest(gap: torch.Tensor, mask: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices along ``dim`` of the smallest ``gap >= 0`` and the largest ``gap < 0`` among
    ``mask``, -1 where there is none."""
    inf = float("inf")
    best, front = torch.where(mask & (gap >= 0), gap, inf).min(dim)
    worst, rear = torch.where(mask & (gap < 0), gap, -inf).max(dim)
    return torch.where(best < inf, front, -1), torch.where(worst > -inf, rear, -1)


class Simulator:
    """Steps :class:`Traffic` with highway-env's models on one road (a :class:`LaneTable`)."""

    def __init__(
        self,
        road: LaneTable,
        all_collisions: bool,
        discrete: bool,
        driver: DriverModel | None = None,
        regulated: bool = False,
        signals: Any = None,
    ) -> None:
        self.road = road
        # traffic lights and crossings (envs.batched.signals.Signals), or None
        self.signals = signals
        self.all_collisions = all_collisions  # False: HighwayEnvFast, only the ego checks
        self.discrete = discrete  # ego under meta-actions (MDPVehicle) or continuous (Vehicle)
        self.driver = driver or DriverModel()
        self.regulated = regulated  # highway-env's RegulatedRoad (the intersection's rules)
        self.lane_changes = bool((road.edge_lanes > 1).any())  # some road has two lanes or more
        self._coordinates: tuple | None = None  # (key, value) of coordinates()
        device = road.x0.device  # constants made once, not sent to the device every frame
        self.target_speeds = torch.tensor(self.driver.target_speeds, device=device)
        self.conflict_times = torch.tensor(CONFLICT_TIMES, device=device)

    # ----------------------------------------------------------------- lane bookkeeping
    def coordinates(self, t: Traffic) -> tuple[torch.Tensor, torch.Tensor]:
        """Every vehicle's (s, lateral) on every lane, (B, N, L) each: kept from the last call
        while the positions are the same tensors, unchanged (the lane update at the end of a
        frame and the next frame's start ask for the same)."""
        if t.x.is_inference():  # no version counter to tell an in-place change: no cache
            return self.road.coordinates(t.x, t.y)
        key = (t.x, t.y, t.x._version, t.y._version)
        cached = self._coordinates
        if cached is not None and all(a is b for a, b in zip(key[:2], cached[0][:2])):
            if key[2:] == cached[0][2:]:
                return cached[1]
        value = self.road.coordinates(t.x, t.y)
        self._coordinates = (key, value)
        return value

    def update_lanes(self, t: Traffic) -> None:
        s, lat = self.coordinates(t)  # (B, N, L)
        t.lane = torch.where(t.alive, self.road.closest(s, lat, t.heading), t.lane)

    # ----------------------------------------------------------------- behaviour models
    def idm(
        self,
        t: Traffic,
        ego: torch.Tensor | None,
        front: torch.Tensor,
        delta: torch.Tensor,
        s_all: torch.Tensor,
        env: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """IDMVehicle.acceleration(ego_vehicle=ego, front_vehicle=front) with exponent ``delta``.

        ``ego``, ``front``: (B, K) slot indices (-1: none), or (K, P) slots of the environments
        ``env`` (K, 1); ``ego=None``: every slot for itself (``front`` (B, N)). ``s_all``:
        (B, N, L) every vehicle's ``s`` on every lane (the gap is highway-env's
        ``lane_distance_to``, along the ego's lane). Returns the shape of ``front`` [m/s2].
        """
        p = self.driver
        if ego is None:  # no gathers: the ego of slot i is slot i
            kind, v, h, lane, target_speed = t.kind, t.speed, t.heading, t.lane, t.target_speed
            valid = (kind == EGO) | (kind == IDM)
            s_ego = s_all.gather(2, lane[..., None])[..., 0]
            s_front = lane_s(s_all, front, lane)
        else:
            kind = take(t.kind, ego, env)
            valid = (ego >= 0) & ((kind == EGO) | (kind == IDM))
            v = take(t.speed, ego, env)
            h = take(t.heading, ego, env)
            lane = take(t.lane, ego, env)
            target_speed = take(t.target_speed, ego, env)
            s_ego = lane_s(s_all, ego, lane, env)
            s_front = lane_s(s_all, front, lane, env)
        limit = self.road.speed_limit[lane]
        target = torch.minimum(target_speed.clamp(min=0), limit)
        acc = p.comfort_acc_max * (1 - torch.pow(v.clamp(min=0) / not_zero(target).abs(), delta))
        has_front = front >= 0
        gap = s_front - s_ego  # lane_distance_to, along the ego's lane
        dv = v - take(t.speed, front, env) * torch.cos(take(t.heading, front, env) - h)
        d_star = p.distance_wanted + v * TIME_WANTED + v * dv / (2 * p.sqrt_ab)
        acc = acc - torch.where(has_front, p.comfort_acc_max * (d_star / not_zero(gap)) ** 2, 0.0)
        return torch.where(valid, acc, 0.0)

    def steering_control(
        self, t: Traffic, lanes: torch.Tensor, s: torch.Tensor, lat: torch.Tensor
    ) -> torch.Tensor:
        """ControlledVehicle.steering_control towards ``lanes`` (B, N); s, lat on those lanes."""
        future = self.road.heading_at(lanes, s + t.speed * TAU_PURSUIT)
        lateral_speed = -KP_LATERAL * lat
        heading_cmd = torch.asin((lateral_speed / not_zero(t.speed)).clamp(-1, 1))
        heading_ref = future + heading_cmd.clamp(-math.pi / 4, math.pi / 4)
        rate = KP_HEADING * wrap_to_pi(heading_ref - t.heading)
        slip = torch.asin((t.length / 2 / not_zero(t.speed) * rate).clamp(-1, 1))
        # float32's asin(-1) lies just beyond -pi/2, where tan changes sign: keep the slip
        # within +-1.5 rad (whatever it is beyond that, the steering saturates at its limit)
        steer = torch.atan(2 * torch.tan(slip.clamp(-1.5, 1.5)))
        return steer.clamp(-MAX_STEERING_ANGLE, MAX_STEERING_ANGLE)

    def reachable(
        self, lanes: torch.Tensor, s_all: torch.Tensor, lat_all: torch.Tensor
    ) -> torch.Tensor:
        """lane.is_reachable_from(position) for (B, N) lanes (-1: False)."""
        li = lanes.clamp(min=0)
        s = s_all.gather(2, li[..., None])[..., 0]
        lat = lat_all.gather(2, li[..., None])[..., 0]
        road = self.road
        ok = (lat.abs() <= 2 * road.width[li]) & (s >= 0) & (s < road.length[li] + 5.0)
        return ok & ~road.forbidden[li] & (lanes >= 0)

    def meta_speed_index(self, t: Traffic, action: torch.Tensor) -> torch.Tensor:
        """(B,) the ego's speed index after the meta-actions ``action`` (B,) long (MDPVehicle:
        faster and slower step from the index of its current speed, the others keep it)."""
        speeds = self.target_speeds
        x = (t.speed[:, 0] - speeds[0]) / (speeds[-1] - speeds[0])
        current = torch.round(x * (len(speeds) - 1)).clamp(0, len(speeds) - 1).long()
        idx = torch.where(action == FASTER, current + 1, t.speed_index)
        return torch.where(action == SLOWER, current - 1, idx).clamp(0, len(speeds) - 1)

    def ego_meta_action(
        self, t: Traffic, action: torch.Tensor, s_all: torch.Tensor, lat_all: torch.Tensor
    ) -> None:
        """MDPVehicle.act(meta-action) on slot 0: new target speed or target lane. (B,) long."""
        idx = self.meta_speed_index(t, action)
        t.speed_index = idx
        t.target_speed[:, 0] = self.target_speeds[idx]
        tl = t.target_lane[:, 0]
        left = torch.where(self.road.left[tl] >= 0, self.road.left[tl], tl)
        right = torch.where(self.road.right[tl] >= 0, self.road.right[tl], tl)
        cand = torch.where(action == LANE_LEFT, left, torch.where(action == LANE_RIGHT, right, tl))
        ok = self.reachable(cand[:, None], s_all[:, :1], lat_all[:, :1])[:, 0]
        t.target_lane[:, 0] = torch.where(ok, cand, tl)

    # ----------------------------------------------------------------- one simulation step
    def step(
        self,
        t: Traffic,
        dt: float,
        ego_action: torch.Tensor | None = None,
    ) -> None:
        """road.act() then road.step(dt), in place; ``ego_action`` on the policy's first frame.

        ``ego_action``: (B,) long meta-actions, or (B, 2) float [accel, steer] in [-1, 1].
        """
        road = self.road
        s_all, lat_all = self.coordinates(t)  # (B, N, L)
        is_idm = (t.kind == IDM) & ~t.crashed
        discrete = self.discrete
        ego_mdp = (t.kind == EGO) & discrete

        # follow_road: at the end of the target lane, switch to the next one (along the route
        # to the destination, or highway-env's closest successor without one)
        tl = t.target_lane
        s_t = s_all.gather(2, tl[..., None])[..., 0]
        switch = (is_idm | ego_mdp) & (s_t > road.length[tl] - VEHICLE_HALF)
        column = torch.where(t.destination >= 0, t.destination, road.next_lane.shape[1] - 1)
        t.target_lane = torch.where(switch, road.next_lane[tl, column], tl)
        t.route_lock = t.route_lock & ~switch  # the route's first lane is done

        if ego_action is not None:
            if discrete:
                self.ego_meta_action(t, ego_action, s_all, lat_all)
            else:
                a = ego_action.clamp(-1, 1)
                lo, hi = ACCELERATION_RANGE
                t.acceleration[:, 0] = lo + (a[:, 0] + 1) * (hi - lo) / 2
                lo, hi = STEERING_RANGE
                t.steering[:, 0] = lo + (a[:, 1] + 1) * (hi - lo) / 2

        on_all = road.on_lane(s_all, lat_all, margin=1.0) & t.alive[..., None]  # (B, N, L)
        # on a road along +x one sort by x answers for every lane, where MOBIL's side lanes are
        # asked about too; elsewhere (few vehicles) query by query is cheaper
        near = NeighbourSearch(t, s_all, on_all, by_x=road.along_x)
        if self.lane_changes:
            self.change_lane_policy(t, is_idm, s_all, lat_all, near)
        else:  # one lane per road: MOBIL has nowhere to go, only its timer runs
            decide = is_idm & (t.lane == t.target_lane) & (t.timer > LANE_CHANGE_DELAY)
            t.timer = torch.where(decide, 0.0, t.timer)

        # lateral control towards the target lane (IDM and meta-action ego)
        tl = t.target_lane
        s_t = s_all.gather(2, tl[..., None])[..., 0]
        lat_t = lat_all.gather(2, tl[..., None])[..., 0]
        steer = self.steering_control(t, tl, s_t, lat_t)
        controlled = is_idm | ego_mdp
        t.steering = torch.where(controlled, steer, t.steering)

        # longitudinal: IDM on the current lane, and on the target lane while changing
        f_cur = near.leaders(t.lane)  # (B, N)
        acc = self.idm(t, None, f_cur, t.delta, s_all)
        env, me = (controlled & (t.lane != tl)).nonzero(as_tuple=True)  # (K,) mid-change
        if env.numel():
            f_tgt = near(env, me, tl[env, me])[0][:, None]  # (K, 1)
            acc_t = self.idm(t, me[:, None], f_tgt, t.delta[env, me][:, None], s_all, env[:, None])
            acc[env, me] = torch.minimum(acc[env, me], acc_t[:, 0])
        if self.signals is not None:  # stop lines on red, crossings with pedestrians on them
            acc = torch.minimum(acc, self.signals.stop_acceleration(self, t, s_all, dt))
            # queues at red lights: IDM's braking stops a car, it does not reverse it (the
            # other scenarios keep highway-env's IDM, which can)
            acc = torch.maximum(acc, -t.speed.clamp(min=0) / dt)
        acc = acc.clamp(-ACC_MAX, ACC_MAX)
        acc = torch.where(ego_mdp, KP_A * (t.target_speed - t.speed), acc)
        t.acceleration = torch.where(controlled, acc, t.acceleration)

        if self.regulated:  # RegulatedRoad.step: its rules, then the vehicles step
            t.road_steps = t.road_steps + 1
            self.enforce_road_rules(t, dt)

        # Vehicle.step for every moving vehicle
        moving = (t.kind == EGO) | (t.kind == IDM)
        t.timer = torch.where(t.kind == IDM, t.timer + dt, t.timer)
        t.steering, t.acceleration = clip_action(t.speed, t.steering, t.acceleration, t.crashed)
        x, y, heading, speed = bicycle(
            t.x, t.y, t.heading, t.speed, t.steering, t.acceleration, t.length, dt
        )
        # the impact of the last frame's collision check: pushed, then crashed (the action
        # above was clipped before, so heading and speed change as without it this frame)
        push = t.has_impact & moving  # only vehicles ever get one
        x = x + torch.where(push, t.impact[..., 0], 0.0)
        y = y + torch.where(push, t.impact[..., 1], 0.0)
        t.x = torch.where(moving, x, t.x)
        t.y = torch.where(moving, y, t.y)
        t.heading = torch.where(moving, heading, t.heading)
        t.speed = torch.where(moving, speed, t.speed)
        t.crashed = t.crashed | push
        if self.signals is not None:  # pedestrians walk (before the collision check)
            self.signals.move_pedestrians(self, t, dt)
        self.update_lanes(t)
        # Road.step: every pair once all have moved; impacts wait for the next frame
        hits = self.collisions(t, dt)
        t.crashed = t.crashed | hits.crashed
        t.impact, t.has_impact = hits.impact, hits.has_impact
        if self.signals is not None:  # the ego's infractions, the lights' clock
            self.signals.after_frame(self, t, dt)

    def change_lane_policy(
        self,
        t: Traffic,
        is_idm: torch.Tensor,
        s_all: torch.Tensor,
        lat_all: torch.Tensor,
        near: NeighbourSearch,
    ) -> None:
        """IDMVehicle.change_lane_policy (abort rule, timer, MOBIL) for all IDM vehicles."""
        road = self.road
        lane, target = t.lane, t.target_lane
        changing = lane != target
        # abort when another controlled vehicle already moves into the same lane close ahead;
        # only vehicles mid-change on their road can abort: (K,) of them against all N
        controlled = ((t.kind == EGO) & self.discrete) | (t.kind == IDM)
        n = t.x.shape[1]
        env, me = (is_idm & changing & (road.edge[lane] == road.edge[target])).nonzero(
            as_tuple=True
        )
        p = self.driver
        if env.numel():
            tgt = target[env, me][:, None]  # (K, 1)
            s_k = s_all[env].gather(2, lane[env, me][:, None, None].expand(-1, n, 1))[..., 0]
            d = s_k - s_k.gather(1, me[:, None])  # (K, N) lane_distance_to(j), along my lane
            v = t.speed[env, me][:, None]
            dv = v - t.speed[env] * torch.cos(t.heading[env] - t.heading[env, me][:, None])
            d_star = p.distance_wanted + v * TIME_WANTED + v * dv / (2 * p.sqrt_ab)
            other = torch.arange(n, device=t.x.device) != me[:, None]
            conflict = (target[env] == tgt) & (lane[env] != tgt) & controlled[env] & other
            conflict = conflict & t.alive[env] & (d > 0) & (d < d_star)
            abort = conflict.any(dim=1)
            target = target.clone()
            target[env, me] = torch.where(abort, lane[env, me], tgt[:, 0])

        # (a vehicle on its route's first lane keeps it: MOBIL's "wrong direction" test refuses
        # every side lane while the route names that lane)
        decide = is_idm & ~changing & (t.timer > LANE_CHANGE_DELAY)
        t.timer = torch.where(decide, 0.0, t.timer)
        # MOBIL for the (K,) vehicles deciding this step, on their left and right lanes
        env, me = decide.nonzero(as_tuple=True)
        if env.numel():
            e, i = env[:, None], me[:, None]  # (K, 1)
            lane_k = lane[env, me]
            old_prec, old_foll = (v[:, None] for v in near(env, me, lane_k))  # (K, 1) each
            cands = [road.left[lane_k], road.right[lane_k]]  # (K,) each, -1: none
            # every IDM acceleration MOBIL needs, in one batched call: (ego, front) pairs
            pairs = [(i, old_prec), (old_foll, i), (old_foll, old_prec)]
            for cand in cands:
                ci = cand.clamp(min=0)[:, None]
                new_prec, new_foll = (v[:, None] for v in near(env, me, ci[:, 0]))
                pairs += [(new_foll, new_prec), (new_foll, i), (i, new_prec)]
            acc = self.idm(
                t,
                torch.cat([pair[0] for pair in pairs], 1),
                torch.cat([pair[1] for pair in pairs], 1),
                t.delta[env, me][:, None],
                s_all,
                e,
            ).unbind(1)  # 9 x (K,)
            self_a, old_foll_a, old_foll_pred_a = acc[:3]
            moving = (t.speed[env, me].abs() >= 1) & ~t.route_lock[env, me]
            s_k, lat_k = s_all[env, me][:, None], lat_all[env, me][:, None]  # (K, 1, L)
            new_target = target[env, me]
            for side, cand in enumerate(cands):  # right last: it wins when both pass
                new_foll_a, new_foll_pred_a, self_pred_a = acc[3 + 3 * side : 6 + 3 * side]
                ok = moving & self.reachable(cand[:, None], s_k, lat_k)[:, 0]
                jerk = (
                    self_pred_a
                    - self_a
                    + POLITENESS * (new_foll_pred_a - new_foll_a + old_foll_pred_a - old_foll_a)
                )
                ok = ok & (new_foll_pred_a >= -LANE_CHANGE_MAX_BRAKING_IMPOSED)
                ok = ok & (jerk >= LANE_CHANGE_MIN_ACC_GAIN)
                new_target = torch.where(ok, cand, new_target)
            target = target.clone()
            target[env, me] = new_target
        t.target_lane = target

    # ----------------------------------------------------------------- the intersection's rules
    def enforce_road_rules(self, t: Traffic, dt: float) -> None:
        """RegulatedRoad.enforce_road_rules, every 1 / REGULATION_FREQUENCY seconds.

        Vehicles that yielded since the last time drive on at their lane's speed limit
        (YIELD_DURATION is 0); then every pair of vehicles whose predicted boxes would meet
        within 3 s makes one of them yield (target speed 0): the one on the lower-priority lane,
        or on equal priority the one behind. Only driven traffic yields, never the ego.
        """
        period = max(1, int(1 / dt / REGULATION_FREQUENCY))
        due = (t.road_steps % period) == 0  # (B,)
        if not bool(due.any()):
            return
        road = self.road
        unfreeze = t.yielding & due[:, None]
        t.target_speed = torch.where(unfreeze, road.speed_limit[t.lane], t.target_speed)
        t.yielding = t.yielding & ~unfreeze
        driven = (t.kind == IDM) | (t.kind == EGO)  # road.vehicles, not its objects
        n = t.x.shape[1]
        pair = driven[:, :, None] & driven[:, None, :] & due[:, None, None]
        pair &= torch.ones(n, n, dtype=torch.bool, device=t.x.device).triu(1)  # i < j
        env, i, j = pair.nonzero(as_tuple=True)  # (P,) pairs of vehicles on the road
        if env.numel() == 0:
            return
        x, y, h = self.predict_constant_action(t)  # (B, N, T)
        # the spherical pre-check with v1.LENGTH, then the boxes at the (K,) close times
        gap = torch.hypot(x[env, j] - x[env, i], y[env, j] - y[env, i])  # (P, T)
        pk, k = (gap <= t.length[env, i][:, None]).nonzero(as_tuple=True)
        grow = (1.5, 0.9)  # is_conflict_possible's boxes: 1.5 lengths, 0.9 widths

        def box(slot: torch.Tensor) -> tuple[torch.Tensor, ...]:
            e = env[pk]
            return (
                x[e, slot, k],
                y[e, slot, k],
                grow[0] * t.length[e, slot],
                grow[1] * t.width[e, slot],
                h[e, slot, k],
            )

        a, c = box(i[pk]), box(j[pk])
        hit = _corner_inside(a, c) | _corner_inside(c, a)  # (K,)
        conflict = torch.zeros_like(env, dtype=torch.bool)
        conflict[pk[hit]] = True  # (P,)
        # respect_priorities: lower lane priority yields; equal: the one behind
        prio_i, prio_j = road.priority[t.lane[env, i]], road.priority[t.lane[env, j]]
        dx, dy = t.x[env, j] - t.x[env, i], t.y[env, j] - t.y[env, i]
        hi, hj = t.heading[env, i], t.heading[env, j]
        ahead_of_i = torch.cos(hi) * dx + torch.sin(hi) * dy  # v_i.front_distance_to(v_j)
        ahead_of_j = -(torch.cos(hj) * dx + torch.sin(hj) * dy)  # v_j.front_distance_to(v_i)
        # on a tie highway-env's v2 (the later of the pair in road.vehicles) yields
        i_first = t.road_order[env, i] < t.road_order[env, j]
        behind = torch.where(i_first, ahead_of_i > ahead_of_j, ahead_of_i >= ahead_of_j)
        i_yields = (prio_i < prio_j) | ((prio_i == prio_j) & behind)
        stop = torch.zeros_like(t.yielding)
        stop[env[conflict & i_yields], i[conflict & i_yields]] = True
        stop[env[conflict & ~i_yields], j[conflict & ~i_yields]] = True
        stop &= t.kind == IDM
        t.target_speed = torch.where(stop, 0.0, t.target_speed)
        t.yielding = t.yielding | stop

    def predict_constant_action(
        self, t: Traffic
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every vehicle's predict_trajectory_constant_speed at CONFLICT_TIMES: (B, N, T) x, y,
        heading.

        Driven traffic and a meta-action ego (ControlledVehicle's): at constant speed on the
        centre line along the route, from the road of the target lane (the route's head) with
        ``s`` measured on the current lane, as highway-env does; without a route, on the
        current lane. A continuous-action ego (Vehicle's): the bicycle model at its held
        steering and no acceleration, with Vehicle.step's clipping.
        """
        road = self.road
        times = self.conflict_times
        s0, _ = road.coordinates_on(t.lane, t.x, t.y)  # (B, N)
        s = s0[..., None] + t.speed[..., None] * times  # (B, N, T)
        routed = t.destination >= 0
        lane = torch.where(routed, t.target_lane, t.lane)[..., None].expand_as(s)
        free = road.ahead_lane.shape[1] - 1
        column = torch.where(routed, t.destination, free)[..., None].expand_as(s)
        for _ in range(ROUTE_HOPS):
            nxt = road.ahead_lane[lane, column]
            beyond = (s > road.length[lane]) & (nxt >= 0)
            s = torch.where(beyond, s - road.length[lane], s)
            lane = torch.where(beyond, nxt, lane)
        x, y = road.position(lane, s, torch.zeros_like(s))
        h = road.heading_at(lane, s)
        if not self.discrete:
            ex, ey, eh = self._predict_bicycle(t)
            ego = (t.kind == EGO)[..., None]
            x, y, h = torch.where(ego, ex, x), torch.where(ego, ey, y), torch.where(ego, eh, h)
        return x, y, h

    def _predict_bicycle(self, t: Traffic) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Vehicle.predict_trajectory_constant_speed (constant steering, no acceleration)."""
        x, y, h, v = t.x, t.y, t.heading, t.speed
        none = torch.zeros_like(v)
        xs, ys, hs = [], [], []
        last = 0.0
        for time in CONFLICT_TIMES:
            dt, last = time - last, time
            steer, acc = clip_action(v, t.steering, none, t.crashed)
            x, y, h, v = bicycle(x, y, h, v, steer, acc, t.length, dt)
            xs.append(x)
            ys.append(y)
            hs.append(h)
        return torch.stack(xs, -1), torch.stack(ys, -1), torch.stack(hs, -1)

    # ----------------------------------------------------------------- collisions
    def collisions(self, t: Traffic, dt: float) -> Contacts:
        """highway-env's collision pass of ``Road.step`` after a frame of ``dt`` [s]
        (:func:`envs.batched.collision.contacts`): which boxes overlap now, and the impacts of
        the pairs that would overlap within the next frame.
        """
        return contacts(t, t.kind == OBSTACLE, dt, ego_only=not self.all_collisions)


def _corner_inside(a: tuple[torch.Tensor, ...], b: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """highway-env's has_corner_inside(a, b) for (K,) pairs of boxes (x, y, length, width,
    heading): a corner, an edge midpoint or the centre of box a inside box b (edges included).
    As highway-env's point_in_rotated_rectangle, the offset to b's centre is turned by +b's
    heading (not -): the test is reproduced as it is, not as it is meant."""
    ax, ay, al, aw, ah = a
    bx, by, bl, bw, bh = b
    u = torch.tensor([-1, -1, 1, 1, 0, -1, 1, 0, 0], device=ax.device, dtype=ax.dtype)
    v = torch.tensor([-1, 1, 1, -1, 0, 0, 0, -1, 1], device=ax.device, dtype=ax.dtype)
    lu, lv = u * (al / 2)[:, None], v * (aw / 2)[:, None]  # (K, 9) in a's frame
    c, s = torch.cos(ah)[:, None], torch.sin(ah)[:, None]
    px, py = ax[:, None] + c * lu - s * lv, ay[:, None] + s * lu + c * lv
    dx, dy = px - bx[:, None], py - by[:, None]
    c, s = torch.cos(bh)[:, None], torch.sin(bh)[:, None]
    ru, rv = c * dx - s * dy, s * dx + c * dy
    inside = (ru.abs() <= (bl / 2)[:, None]) & (rv.abs() <= (bw / 2)[:, None])
    return inside.any(1)
