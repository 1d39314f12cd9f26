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
over environments or vehicles. Leaders and followers come from one sort by x per environment
(O(B N L) after it, not (B, N, N, L)); the rules that concern few vehicles at a time (MOBIL for
those whose timer fires, the abort rule and target-lane IDM for lane changes under way, the
exact box test for pairs closer than their half diagonals) run on those (K,) vehicles only,
picked with ``nonzero`` (a host sync on a GPU).
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

from envs.batched.road import VEHICLE_LENGTH, LaneTable, wrap_to_pi
from envs.contract import DISCRETE_ACTIONS

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
        x, so ordering by ``s`` on a lane is ordering by ``x``. (Two vehicles at exactly the same
        x would both lead each other in highway-env; here the stable sort picks one.)
        """
        b, n = t.x.shape
        on = self.road.on_lane(s, lat, margin=1.0) & t.alive[..., None]  # (B, N, L)
        # sort by x once; on every lane, the next on-lane vehicle after a vehicle in that order
        # is its leader and the previous one its follower: O(B N L) after the sort
        order = torch.argsort(t.x, dim=1, stable=True)  # (B, N) slots by increasing x
        on_sorted = on.gather(1, order[..., None].expand_as(on))  # (B, N, L)
        pos = torch.arange(n, device=t.x.device)[None, :, None]  # (1, N, 1)
        ahead = torch.where(on_sorted, pos, n).flip(1).cummin(1).values.flip(1)  # first >= p
        behind = torch.where(on_sorted, pos, -1).cummax(1).values  # last <= p
        edge_hi = ahead.new_full((b, 1, on.shape[2]), n)
        edge_lo = ahead.new_full((b, 1, on.shape[2]), -1)
        nxt = torch.cat([ahead[:, 1:], edge_hi], 1)  # (B, N, L) sorted position, n: none
        prv = torch.cat([edge_lo, behind[:, :-1]], 1)  # -1: none
        slot = order[..., None].expand_as(on)
        front_s = torch.where(nxt < n, slot.gather(1, nxt.clamp(max=n - 1)), -1)
        rear_s = torch.where(prv >= 0, slot.gather(1, prv.clamp(min=0)), -1)
        # back from sorted positions to slots
        front = torch.empty_like(front_s).scatter_(1, slot, front_s)
        rear = torch.empty_like(rear_s).scatter_(1, slot, rear_s)
        return front, rear

    # ----------------------------------------------------------------- behaviour models
    def idm(
        self,
        t: Traffic,
        ego: torch.Tensor | None,
        front: torch.Tensor,
        delta: torch.Tensor,
        env: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """IDMVehicle.acceleration(ego_vehicle=ego, front_vehicle=front) with exponent ``delta``.

        ``ego``, ``front``: (B, K) slot indices (-1: none), or (K, P) slots of the environments
        ``env`` (K, 1); ``ego=None``: every slot for itself (``front`` (B, N)). Returns the
        shape of ``front`` [m/s2].
        """
        if ego is None:  # no gathers: the ego of slot i is slot i
            kind, v, h, lane, target_speed, x = (
                t.kind,
                t.speed,
                t.heading,
                t.lane,
                t.target_speed,
                t.x,
            )
            valid = (kind == EGO) | (kind == IDM)
        else:
            kind = take(t.kind, ego, env)
            valid = (ego >= 0) & ((kind == EGO) | (kind == IDM))
            v = take(t.speed, ego, env)
            h = take(t.heading, ego, env)
            lane = take(t.lane, ego, env)
            target_speed = take(t.target_speed, ego, env)
            x = take(t.x, ego, env)
        limit = self.road.speed_limit[lane]
        target = torch.minimum(target_speed.clamp(min=0), limit)
        acc = COMFORT_ACC_MAX * (1 - torch.pow(v.clamp(min=0) / not_zero(target).abs(), delta))
        has_front = front >= 0
        gap = take(t.x, front, env) - x  # lane_distance_to along x
        dv = v - take(t.speed, front, env) * torch.cos(take(t.heading, front, env) - h)
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
        f_cur = front.gather(2, t.lane[..., None])[..., 0]
        acc = self.idm(t, None, f_cur, t.delta)
        env, me = (controlled & (t.lane != tl)).nonzero(as_tuple=True)  # (K,) mid-change
        if env.numel():
            f_tgt = front[env, me, tl[env, me]][:, None]  # (K, 1)
            acc_t = self.idm(t, me[:, None], f_tgt, t.delta[env, me][:, None], env[:, None])
            acc[env, me] = torch.minimum(acc[env, me], acc_t[:, 0])
        acc = acc.clamp(-ACC_MAX, ACC_MAX)
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
        # abort when another controlled vehicle already moves into the same lane close ahead;
        # only vehicles mid-change on their road can abort: (K,) of them against all N
        controlled = ((t.kind == EGO) & self.discrete) | (t.kind == IDM)
        n = t.x.shape[1]
        env, me = (is_idm & changing & (road.edge[lane] == road.edge[target])).nonzero(
            as_tuple=True
        )
        if env.numel():
            tgt = target[env, me][:, None]  # (K, 1)
            d = t.x[env] - t.x[env, me][:, None]  # (K, N) x_j - x_i
            v = t.speed[env, me][:, None]
            dv = v - t.speed[env] * torch.cos(t.heading[env] - t.heading[env, me][:, None])
            d_star = DISTANCE_WANTED + v * TIME_WANTED + v * dv / (2 * SQRT_AB)
            other = torch.arange(n, device=t.x.device) != me[:, None]
            conflict = (target[env] == tgt) & (lane[env] != tgt) & controlled[env] & other
            conflict = conflict & t.alive[env] & (d > 0) & (d < d_star)
            abort = conflict.any(dim=1)
            target = target.clone()
            target[env, me] = torch.where(abort, lane[env, me], tgt[:, 0])

        decide = is_idm & ~changing & (t.timer > LANE_CHANGE_DELAY)
        t.timer = torch.where(decide, 0.0, t.timer)
        # MOBIL for the (K,) vehicles deciding this step, on their left and right lanes
        env, me = decide.nonzero(as_tuple=True)
        if env.numel():
            e, i = env[:, None], me[:, None]  # (K, 1)
            lane_k = lane[env, me]
            front_k, rear_k = front[env, me], rear[env, me]  # (K, L)
            old_prec = front_k.gather(1, lane_k[:, None])  # (K, 1)
            old_foll = rear_k.gather(1, lane_k[:, None])
            cands = [road.left[lane_k], road.right[lane_k]]  # (K,) each, -1: none
            # every IDM acceleration MOBIL needs, in one batched call: (ego, front) pairs
            pairs = [(i, old_prec), (old_foll, i), (old_foll, old_prec)]
            for cand in cands:
                ci = cand.clamp(min=0)[:, None]
                new_prec, new_foll = front_k.gather(1, ci), rear_k.gather(1, ci)
                pairs += [(new_foll, new_prec), (new_foll, i), (i, new_prec)]
            acc = self.idm(
                t,
                torch.cat([p[0] for p in pairs], 1),
                torch.cat([p[1] for p in pairs], 1),
                t.delta[env, me][:, None],
                e,
            ).unbind(1)  # 9 x (K,)
            self_a, old_foll_a, old_foll_pred_a = acc[:3]
            moving = t.speed[env, me].abs() >= 1
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

    # ----------------------------------------------------------------- collisions
    def collisions(self, t: Traffic) -> torch.Tensor:
        """Vehicles (B, N) whose box intersects another's (separating-axis test).

        Boxes apart by more than their half diagonals cannot touch, so the exact test runs
        only on the (K,) pairs closer than that.
        """
        n = t.x.shape[1]
        rows = n if self.all_collisions else 1  # HighwayEnvFast: the ego against the others
        diag = torch.hypot(t.length, t.width)  # (B, N) [m]
        gap = torch.hypot(t.x[:, :rows, None] - t.x[:, None], t.y[:, :rows, None] - t.y[:, None])
        reach = (diag[:, :rows, None] + diag[:, None]) / 2 + 1e-3  # (B, R, N) [m]
        near = (gap <= reach) & t.alive[:, :rows, None] & t.alive[:, None]
        near.diagonal(dim1=1, dim2=2).fill_(False)  # a box with itself
        if self.all_collisions:
            near &= t.check_collisions[:, :, None] | t.check_collisions[:, None, :]
        env, i, j = near.nonzero(as_tuple=True)  # (K,) pairs
        crashed = torch.zeros_like(t.crashed)
        if env.numel():
            hit = pairs_intersect(t, env, i, j)  # (K,)
            crashed[env[hit], i[hit]] = True
            if not self.all_collisions:  # the other vehicle of an ego collision crashes too
                crashed[env[hit], j[hit]] = True
        return crashed


def pairs_intersect(
    t: Traffic, env: torch.Tensor, i: torch.Tensor, j: torch.Tensor
) -> torch.Tensor:
    """(K,) whether the boxes of slots ``i`` and ``j`` of environments ``env`` overlap.

    Separating-axis test on the four edge normals of the two boxes; touching counts as
    intersecting, as in highway-env's ``are_polygons_intersecting``.
    """

    def box(slot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = t.heading[env, slot]
        c, s = torch.cos(h), torch.sin(h)
        hl, hw = t.length[env, slot] / 2, t.width[env, slot] / 2
        fx, fy = c * hl, s * hl  # forward half-length
        lx, ly = -s * hw, c * hw  # lateral half-width
        xs = torch.stack([fx + lx, fx - lx, -fx - lx, -fx + lx], -1) + t.x[env, slot][:, None]
        ys = torch.stack([fy + ly, fy - ly, -fy - ly, -fy + ly], -1) + t.y[env, slot][:, None]
        axes = torch.stack([torch.stack([c, s], -1), torch.stack([-s, c], -1)], 1)  # (K, 2, 2)
        return torch.stack([xs, ys], -1), axes  # (K, 4, 2) corners [m]

    def project(pts: torch.Tensor, axes: torch.Tensor) -> torch.Tensor:
        return (pts[:, None, :, :] * axes[:, :, None, :]).sum(-1)  # (K, 2 axes, 4 corners)

    pts_i, axes_i = box(i)
    pts_j, axes_j = box(j)
    separated = _separated(project(pts_i, axes_i), project(pts_j, axes_i))
    separated |= _separated(project(pts_i, axes_j), project(pts_j, axes_j))
    return ~separated


def _separated(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Whether projections a and b (..., axes, corners) are disjoint on any axis."""
    gap = torch.maximum(b.amin(-1) - a.amax(-1), a.amin(-1) - b.amax(-1))
    return (gap > 0).any(-1)
