"""Batched traffic simulation in torch: B environments of N vehicles stepped at once.

The behaviour models and their parameter values are highway-env's, read from its classes:

- traffic: :class:`highway_env.vehicle.behavior.IDMVehicle` (IDM longitudinal control, MOBIL
  lane changes with its timer, abort rule and thresholds, the cascaded lane-keeping steering
  controller of ``ControlledVehicle``);
- ego under meta-actions: ``MDPVehicle`` (discrete target speeds, target-lane changes, the same
  speed and steering controllers); under continuous actions: ``ContinuousAction``'s mapping
  (acceleration and steering ranges) held for the policy period;
- every vehicle: ``Vehicle.step``'s kinematic bicycle model with its action clipping; the lane
  is the closest one by highway-env's distance-with-heading; collisions are the separating-axis
  test of ``utils.are_polygons_intersecting`` between oriented boxes.

State is a set of (B, N) tensors (:class:`Traffic`); slot 0 is the ego. Nothing in a step loops
over environments or vehicles.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from highway_env.envs.common.action import ContinuousAction
from highway_env.vehicle.behavior import IDMVehicle
from highway_env.vehicle.controller import ControlledVehicle, MDPVehicle
from highway_env.vehicle.kinematics import Vehicle

from envs.batched_road import VEHICLE_LENGTH, LaneTable, wrap_to_pi

# Vehicle kinds (slot types).
EGO, IDM, OBSTACLE, EMPTY = 0, 1, 2, 3

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

# Meta-actions (highway-env's DiscreteMetaAction.ACTIONS_ALL)
LANE_LEFT, IDLE, LANE_RIGHT, FASTER, SLOWER = range(5)


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
    steering: torch.Tensor  # [rad] held action
    acceleration: torch.Tensor  # [m/s2] held action
    kind: torch.Tensor  # long: EGO, IDM, OBSTACLE or EMPTY
    length: torch.Tensor  # [m]
    width: torch.Tensor  # [m]
    check_collisions: torch.Tensor  # bool
    speed_index: torch.Tensor  # (B,) long, the ego's MDPVehicle speed index

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


def not_zero(x: torch.Tensor, eps: float = 1e-2) -> torch.Tensor:
    """highway-env's utils.not_zero."""
    return torch.where(x.abs() > eps, x, torch.where(x >= 0, eps, -eps))


def take(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``values`` (B, N) gathered at ``index`` (B, ...) with -1 read as slot 0."""
    b = values.shape[0]
    flat = index.clamp(min=0).reshape(b, -1)
    return values.gather(1, flat).reshape(index.shape)


class Simulator:
    """Steps :class:`Traffic` with highway-env's models on one road (a :class:`LaneTable`)."""

    def __init__(self, road: LaneTable, all_collisions: bool, discrete: bool) -> None:
        self.road = road
        self.all_collisions = all_collisions  # False: HighwayEnvFast, only the ego checks
        self.discrete = discrete  # ego under meta-actions (MDPVehicle) or continuous (Vehicle)

    # ----------------------------------------------------------------- lane bookkeeping
    def update_lanes(self, t: Traffic) -> None:
        s, lat = self.road.coordinates(t.x, t.y)  # (B, N, L)
        t.lane = torch.where(t.alive, self.road.closest(s, lat, t.heading), t.lane)

    def neighbours(
        self, t: Traffic, s: torch.Tensor, lat: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """highway-env's Road.neighbour_vehicles for every vehicle and every lane.

        ``s``, ``lat``: (B, N, L) coordinates of every vehicle on every lane. Returns the
        preceding and following vehicles, (B, N, L) long with -1 for none. All lanes run along
        x, so ordering by ``s`` on a lane is ordering by ``x``.
        """
        n = t.x.shape[1]
        on = self.road.on_lane(s, lat, margin=1.0) & t.alive[..., None]  # (B, N_j, L)
        dx = t.x[:, None, :] - t.x[:, :, None]  # (B, N_i, N_j): x_j - x_i
        eye = torch.eye(n, dtype=torch.bool, device=t.x.device)
        cand = on[:, None, :, :] & ~eye[None, :, :, None]  # (B, N_i, N_j, L)
        d = dx[..., None]  # (B, N_i, N_j, 1)
        inf = torch.tensor(float("inf"), device=t.x.device)
        ahead = torch.where(cand & (d >= 0), d, inf)  # (B, N_i, N_j, L)
        behind = torch.where(cand & (d < 0), -d, inf)
        front_gap, front = ahead.min(dim=2)  # (B, N_i, L)
        rear_gap, rear = behind.min(dim=2)
        front = torch.where(torch.isinf(front_gap), -1, front)
        rear = torch.where(torch.isinf(rear_gap), -1, rear)
        return front, rear

    # ----------------------------------------------------------------- behaviour models
    def idm(
        self, t: Traffic, ego: torch.Tensor, front: torch.Tensor, delta: torch.Tensor
    ) -> torch.Tensor:
        """IDMVehicle.acceleration(ego_vehicle=ego, front_vehicle=front) with exponent ``delta``.

        ``ego``, ``front``: (B, K) slot indices (-1: none). Returns (B, K) [m/s2].
        """
        kind = take(t.kind, ego)
        valid = (ego >= 0) & ((kind == EGO) | (kind == IDM))
        v = take(t.speed, ego)
        h = take(t.heading, ego)
        limit = self.road.speed_limit[take(t.lane, ego)]
        target = torch.minimum(take(t.target_speed, ego).clamp(min=0), limit)
        acc = COMFORT_ACC_MAX * (1 - torch.pow(v.clamp(min=0) / not_zero(target).abs(), delta))
        has_front = front >= 0
        gap = take(t.x, front) - take(t.x, ego)  # lane_distance_to on lanes along x
        dv = v - take(t.speed, front) * torch.cos(take(t.heading, front) - h)
        d_star = DISTANCE_WANTED + v * TIME_WANTED + v * dv / (2 * SQRT_AB)
        acc = acc - torch.where(has_front, COMFORT_ACC_MAX * (d_star / not_zero(gap)) ** 2, 0.0)
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
        steer = torch.atan(2 * torch.tan(slip))
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

    def ego_meta_action(
        self, t: Traffic, action: torch.Tensor, s_all: torch.Tensor, lat_all: torch.Tensor
    ) -> None:
        """MDPVehicle.act(meta-action) on slot 0: new target speed or target lane. (B,) long."""
        speeds = torch.tensor(TARGET_SPEEDS, device=t.x.device)
        v = t.speed[:, 0]
        x = (v - speeds[0]) / (speeds[-1] - speeds[0])
        current = torch.round(x * (len(speeds) - 1)).clamp(0, len(speeds) - 1).long()
        idx = torch.where(action == FASTER, current + 1, t.speed_index)
        idx = torch.where(action == SLOWER, current - 1, idx).clamp(0, len(speeds) - 1)
        t.speed_index = idx
        t.target_speed[:, 0] = speeds[idx]
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
        s_all, lat_all = road.coordinates(t.x, t.y)  # (B, N, L)
        is_idm = (t.kind == IDM) & ~t.crashed
        discrete = self.discrete
        ego_mdp = (t.kind == EGO) & discrete

        # follow_road: at the end of the target lane, switch to the next one
        tl = t.target_lane
        s_t = s_all.gather(2, tl[..., None])[..., 0]
        after = s_t > road.length[tl] - VEHICLE_HALF
        t.target_lane = torch.where((is_idm | ego_mdp) & after, road.next_lane[tl], tl)

        if ego_action is not None:
            if discrete:
                self.ego_meta_action(t, ego_action, s_all, lat_all)
            else:
                a = ego_action.clamp(-1, 1)
                lo, hi = ACCELERATION_RANGE
                t.acceleration[:, 0] = lo + (a[:, 0] + 1) * (hi - lo) / 2
                lo, hi = STEERING_RANGE
                t.steering[:, 0] = lo + (a[:, 1] + 1) * (hi - lo) / 2

        front, rear = self.neighbours(t, s_all, lat_all)  # (B, N, L)
        self.change_lane_policy(t, is_idm, front, rear, s_all, lat_all)

        # lateral control towards the target lane (IDM and meta-action ego)
        tl = t.target_lane
        s_t = s_all.gather(2, tl[..., None])[..., 0]
        lat_t = lat_all.gather(2, tl[..., None])[..., 0]
        steer = self.steering_control(t, tl, s_t, lat_t)
        controlled = is_idm | ego_mdp
        t.steering = torch.where(controlled, steer, t.steering)

        # longitudinal: IDM on the current lane, and on the target lane while changing
        slots = torch.arange(t.x.shape[1], device=t.x.device).expand_as(t.lane)
        f_cur = front.gather(2, t.lane[..., None])[..., 0]
        f_tgt = front.gather(2, tl[..., None])[..., 0]
        both = self.idm(t, slots.repeat(1, 2), torch.cat([f_cur, f_tgt], 1), t.delta.repeat(1, 2))
        acc, acc_t = both.split(t.x.shape[1], dim=1)
        acc = torch.where(t.lane != tl, torch.minimum(acc, acc_t), acc).clamp(-ACC_MAX, ACC_MAX)
        acc = torch.where(ego_mdp, KP_A * (t.target_speed - t.speed), acc)
        t.acceleration = torch.where(controlled, acc, t.acceleration)

        # Vehicle.step for every moving vehicle
        moving = (t.kind == EGO) | (t.kind == IDM)
        t.timer = torch.where(t.kind == IDM, t.timer + dt, t.timer)
        steer = torch.where(t.crashed, 0.0, t.steering)
        acc = torch.where(t.crashed, -t.speed, t.acceleration)
        acc = torch.where(t.speed > MAX_SPEED, torch.minimum(acc, MAX_SPEED - t.speed), acc)
        acc = torch.where(t.speed < MIN_SPEED, torch.maximum(acc, MIN_SPEED - t.speed), acc)
        t.steering, t.acceleration = steer, acc
        beta = torch.atan(0.5 * torch.tan(steer))
        x = t.x + t.speed * torch.cos(t.heading + beta) * dt
        y = t.y + t.speed * torch.sin(t.heading + beta) * dt
        heading = t.heading + t.speed * torch.sin(beta) / (t.length / 2) * dt
        speed = t.speed + acc * dt
        t.x = torch.where(moving, x, t.x)
        t.y = torch.where(moving, y, t.y)
        t.heading = torch.where(moving, heading, t.heading)
        t.speed = torch.where(moving, speed, t.speed)
        self.update_lanes(t)
        t.crashed = t.crashed | self.collisions(t)

    def change_lane_policy(
        self,
        t: Traffic,
        is_idm: torch.Tensor,
        front: torch.Tensor,
        rear: torch.Tensor,
        s_all: torch.Tensor,
        lat_all: torch.Tensor,
    ) -> None:
        """IDMVehicle.change_lane_policy (abort rule, timer, MOBIL) for all IDM vehicles."""
        road = self.road
        lane, target = t.lane, t.target_lane
        changing = lane != target
        # abort when another controlled vehicle already moves into the same lane close ahead
        controlled = ((t.kind == EGO) & self.discrete) | (t.kind == IDM)
        same_target = target[:, None, :] == target[:, :, None]  # (B, N_i, N_j)
        other_not_there = lane[:, None, :] != target[:, :, None]
        d = t.x[:, None, :] - t.x[:, :, None]  # x_j - x_i
        v = t.speed[:, :, None]
        dv = v - t.speed[:, None, :] * torch.cos(t.heading[:, None, :] - t.heading[:, :, None])
        d_star = DISTANCE_WANTED + v * TIME_WANTED + v * dv / (2 * SQRT_AB)
        n = t.x.shape[1]
        eye = torch.eye(n, dtype=torch.bool, device=t.x.device)
        conflict = same_target & other_not_there & controlled[:, None, :] & ~eye
        conflict = conflict & t.alive[:, None, :] & (d > 0) & (d < d_star)
        same_road = road.edge[lane] == road.edge[target]
        abort = is_idm & changing & same_road & conflict.any(dim=2)
        target = torch.where(abort, lane, target)

        decide = is_idm & ~changing & (t.timer > LANE_CHANGE_DELAY)
        t.timer = torch.where(decide, 0.0, t.timer)
        slots = torch.arange(n, device=t.x.device).expand_as(lane)
        old_prec = front.gather(2, lane[..., None])[..., 0]
        old_foll = rear.gather(2, lane[..., None])[..., 0]
        cands = [road.left[lane], road.right[lane]]
        news = []
        for cand in cands:
            ci = cand.clamp(min=0)[..., None]
            news.append((front.gather(2, ci)[..., 0], rear.gather(2, ci)[..., 0]))
        # every IDM acceleration MOBIL needs, in one batched call: (ego, front) pairs
        pairs = [(slots, old_prec), (old_foll, slots), (old_foll, old_prec)]
        for new_prec, new_foll in news:
            pairs += [(new_foll, new_prec), (new_foll, slots), (slots, new_prec)]
        acc = self.idm(
            t,
            torch.cat([p[0] for p in pairs], 1),
            torch.cat([p[1] for p in pairs], 1),
            t.delta.repeat(1, len(pairs)),
        ).split(n, dim=1)
        self_a, old_foll_a, old_foll_pred_a = acc[:3]
        for side, cand in enumerate(cands):  # right last: it wins when both pass
            new_foll_a, new_foll_pred_a, self_pred_a = acc[3 + 3 * side : 6 + 3 * side]
            ok = decide & self.reachable(cand, s_all, lat_all) & (t.speed.abs() >= 1)
            jerk = (
                self_pred_a
                - self_a
                + POLITENESS * (new_foll_pred_a - new_foll_a + old_foll_pred_a - old_foll_a)
            )
            ok = ok & (new_foll_pred_a >= -LANE_CHANGE_MAX_BRAKING_IMPOSED)
            ok = ok & (jerk >= LANE_CHANGE_MIN_ACC_GAIN)
            target = torch.where(ok, cand, target)
        t.target_lane = target

    # ----------------------------------------------------------------- collisions
    def collisions(self, t: Traffic) -> torch.Tensor:
        """Vehicles (B, N) whose box intersects another's (separating-axis test)."""
        if self.all_collisions:
            hit = boxes_intersect(t, t.x.shape[1])  # (B, N, N)
            eye = torch.eye(t.x.shape[1], dtype=torch.bool, device=t.x.device)
            pair = t.check_collisions[:, :, None] | t.check_collisions[:, None, :]
            hit = hit & ~eye & pair & t.alive[:, :, None] & t.alive[:, None, :]
            return hit.any(dim=2)
        hit = boxes_intersect(t, 1)[:, 0] & t.alive  # (B, N): ego against every vehicle
        hit[:, 0] = False
        crashed = hit.clone()
        crashed[:, 0] = hit.any(dim=1)
        return crashed


def corners(t: Traffic) -> torch.Tensor:
    """(B, N, 4, 2) corners [m] of every vehicle box."""
    c, s = torch.cos(t.heading), torch.sin(t.heading)
    hl, hw = t.length / 2, t.width / 2
    fx, fy = c * hl, s * hl  # forward half-length
    lx, ly = -s * hw, c * hw  # lateral half-width
    xs = torch.stack([fx + lx, fx - lx, -fx - lx, -fx + lx], -1) + t.x[..., None]
    ys = torch.stack([fy + ly, fy - ly, -fy - ly, -fy + ly], -1) + t.y[..., None]
    return torch.stack([xs, ys], -1)


def boxes_intersect(t: Traffic, rows: int) -> torch.Tensor:
    """(B, rows, N): whether box i (one of the first ``rows``) and box j overlap.

    Separating-axis test on the four edge normals of the two boxes; touching counts as
    intersecting, as in highway-env's ``are_polygons_intersecting``.
    """
    pts = corners(t)  # (B, N, 4, 2)
    c, s = torch.cos(t.heading), torch.sin(t.heading)
    axes = torch.stack([torch.stack([c, s], -1), torch.stack([-s, c], -1)], -2)  # (B, N, 2, 2)
    pts_i, axes_i = pts[:, :rows], axes[:, :rows]
    # on the axes of box i: (B, R, N, 2, 4) for the corners of j, (B, R, 1, 2, 4) for i's own
    p_j = torch.einsum("bjkd,biad->bijak", pts, axes_i)
    p_i = torch.einsum("bikd,biad->biak", pts_i, axes_i)[:, :, None]
    # on the axes of box j
    q_j = torch.einsum("bjkd,bjad->bjak", pts, axes)[:, None]
    q_i = torch.einsum("bikd,bjad->bijak", pts_i, axes)
    separated = _separated(p_i, p_j) | _separated(q_i, q_j)
    return ~separated


def _separated(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Whether projections a and b (..., axes, corners) are disjoint on any axis."""
    gap = torch.maximum(b.amin(-1) - a.amax(-1), a.amin(-1) - b.amax(-1))
    return (gap > 0).any(-1)
