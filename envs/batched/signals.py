"""Traffic lights and pedestrian crossings of the signalised intersection (batched backend).

The road is highway-env's intersection: four arms, one lane in and one out on each. On every arm,
measured outwards from the junction's edge (where the incoming lane ends):

- a zebra crossing over both lanes, :data:`CROSSING` [m] out;
- a stop line across the incoming lane at :data:`STOP_LINE` [m], drawn as a bar in the colour of
  the arm's light, with the light's head beside the road (both labelled ``traffic_light``; the
  camera shows their state by colour: :data:`envs.contract.LIGHT_PALETTE`).

Lights: arms 0 and 2 (south, north) form one group, arms 1 and 3 (west, east) the other. Each
group shows green, then amber, then red while the other group has its green and amber, with an
all-red gap between the two (the scenario's settings). Every environment has its own clock,
drawn uniformly over the cycle at the episode's start.

Pedestrians (slot kind :data:`~envs.batched.sim.PEDESTRIAN`, squares of :data:`PEDESTRIAN_SIZE`)
appear at the kerb of a random crossing, wait for the walk signal (their arm's light red and the
other group's green) and walk across at their own pace. A share of them (jaywalkers) do not
wait. They are in the traffic's slots, so the lidar and the radar object list see them.

Traffic obeys: a driven vehicle before its stop line treats the line as a stopped vehicle
(highway-env's IDM) while the light is red, or amber if it can still stop comfortably; it treats
a crossing on its path the same way while a pedestrian walks on it within :data:`BLOCK_WIDTH` of
its lane (it yields). The ego is not controlled: each of its crossings of a stop line on red is
counted (``red_runs``), and touching a pedestrian is a collision (``pedestrian_hit``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch

from drive_attention.envs.batched.collision import contacts
from drive_attention.envs.batched.road import LaneTable
from drive_attention.envs.batched.sim import (
    EGO,
    EMPTY,
    IDM,
    PEDESTRIAN,
    TIME_WANTED,
    Simulator,
    Traffic,
    not_zero,
)
from drive_attention.envs.contract import CLASS_ID, LIGHT_LABELS, LIGHT_STATES
from drive_attention.envs.scenarios import STOP_SCALE

GREEN, AMBER, RED = (LIGHT_STATES.index(name) for name in ("green", "amber", "red"))
NO_LIGHT = -1  # the ego is past its stop line (or not on an incoming lane)

# geometry [m]: ``w`` outwards from the junction's edge, ``u`` across the arm from its axis
# (the incoming lane is at u in [0, 4], the outgoing one at [-4, 0])
CROSSING = (1.0, 4.0)  # w of the zebra crossing's near and far edges
STOP_LINE = 5.0  # w of the stop line
BAR_DEPTH = 1.5  # the stop bar's extent along the arm
HEAD = ((4.5, 6.5), (5.0, 7.0))  # the light head: (u range, w range)
KERB = 6.0  # |u| where pedestrians wait
ROAD_HALF = 4.0  # |u| of the road's edges
PEDESTRIAN_SIZE = 1.0  # [m] side of a pedestrian's square
WALK_SPEED = (1.0, 1.8)  # [m/s] pedestrians' pace, uniform
PAUSE_AHEAD, PAUSE_SIDE = 2.5, 3.0  # [m] a vehicle this close in front of a pedestrian
PAUSE_TIME = 1.5  # [s] ... or this close in time
WALK_CUTOFF = 4.0  # [s] pedestrians start only while this much of the green beside them is left
BLOCK_WIDTH = 3.0  # [m] a pedestrian this close (across) to a lane's centre blocks it
STOP_DECELERATION = 3.0  # [m/s2] drivers stop on amber if this suffices
STOP_MARGIN = 1.0  # [m] drivers stop this far before a line or a crossing
AHEAD = 40.0  # [m] a crossing within this path distance is "ahead" of the ego


@dataclass(frozen=True)
class Timing:
    """The lights' cycle [s]: each group's green and amber, and the all-red gap."""

    green: float
    amber: float
    all_red: float

    @property
    def half(self) -> float:
        return self.green + self.amber + self.all_red

    @property
    def cycle(self) -> float:
        return 2 * self.half


class Signals:
    """Lights, crossings and pedestrians on one road (highway-env's intersection lane table)."""

    def __init__(self, road: LaneTable, timing: Timing) -> None:
        self.road, self.timing = road, timing
        device = road.x0.device
        n = len(road)
        approach = [road.indexes.index((f"o{i}", f"ir{i}", 0)) for i in range(4)]
        exits = [road.indexes.index((f"il{i}", f"o{i}", 0)) for i in range(4)]
        axis, across, out = [], [], []
        for a, e in zip(approach, exits):
            end = torch.stack(
                [road.x0[a] + road.dx[a] * road.length[a], road.y0[a] + road.dy[a] * road.length[a]]
            )
            start = torch.stack([road.x0[e], road.y0[e]])
            side = (end - start) / torch.linalg.vector_norm(end - start)
            axis.append((end + start) / 2)
            across.append(side)  # from the outgoing lane to the incoming one
            out.append(-torch.stack([road.dx[a], road.dy[a]]))  # away from the junction
        self.axis = torch.stack(axis).to(device)  # (4, 2) [m] the junction edge on the arm's axis
        self.across = torch.stack(across).to(device)  # (4, 2)
        self.out = torch.stack(out).to(device)  # (4, 2)
        approach_arm = torch.full((n,), -1, dtype=torch.long)
        exit_arm = torch.full((n,), -1, dtype=torch.long)
        inner_to = torch.full((n,), -1, dtype=torch.long)
        inner_from = torch.full((n,), -1, dtype=torch.long)
        for row, (a, b, _) in enumerate(road.indexes):
            if a.startswith("o") and b.startswith("ir"):
                approach_arm[row] = int(b[2:])
            elif a.startswith("il") and b.startswith("o"):
                exit_arm[row] = int(a[2:])
            elif a.startswith("ir") and b.startswith("il"):
                inner_from[row], inner_to[row] = int(a[2:]), int(b[2:])
        self.approach_arm = approach_arm.to(device)  # (L,) arm of an incoming lane, else -1
        self.exit_arm = exit_arm.to(device)  # (L,) arm of an outgoing lane
        self.inner_to = inner_to.to(device)  # (L,) the arm a lane in the junction leads to
        self.arm_of = torch.where(approach_arm >= 0, approach_arm, inner_from).to(device)
        # arms 0 and 2 start the cycle green, arms 1 and 3 half a cycle later
        self.offset = torch.tensor([0.0, timing.half, 0.0, timing.half], device=device)
        self.statics = self._static_rects()  # (R, 4) world boxes of the crossings' stripes
        bar = ((0.0, ROAD_HALF), (STOP_LINE, STOP_LINE + BAR_DEPTH))
        lights = [self.box(arm, u, w) for arm in range(4) for u, w in (bar, HEAD)]
        self.light_boxes = torch.stack(lights).to(device)  # (8, 4) bar and head of each arm
        self.light_arm = torch.arange(4, device=device).repeat_interleave(2)  # (8,)
        # the arm of every node that is an exit (``o<k>``), -1 for the others
        arm_of_node = [int(n[1:]) if n[:1] == "o" and n[1:].isdigit() else -1 for n in road.nodes]
        self.node_arm = torch.tensor(arm_of_node, device=device)

    # ------------------------------------------------------------------ geometry
    def point(self, arm: Any, u: Any, w: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """World (x, y) of (u, w) on ``arm`` (tensors broadcast)."""
        x = self.axis[arm, 0] + u * self.across[arm, 0] + w * self.out[arm, 0]
        y = self.axis[arm, 1] + u * self.across[arm, 1] + w * self.out[arm, 1]
        return x, y

    def box(self, arm: int, u: tuple[float, float], w: tuple[float, float]) -> torch.Tensor:
        """(4,) world box [x0, y0, x1, y1] of a (u range, w range) rectangle on ``arm`` (the
        arms are along the axes, so the rectangle is too)."""
        xs, ys = [], []
        for uu in u:
            for ww in w:
                x, y = self.point(arm, uu, ww)
                xs.append(float(x))
                ys.append(float(y))
        return torch.tensor([min(xs), min(ys), max(xs), max(ys)])

    def _static_rects(self) -> torch.Tensor:
        stripes = []
        for arm in range(4):
            for j in range(4):  # four 1 m stripes with 1 m gaps across the 8 m road
                u0 = -ROAD_HALF + 0.5 + 2 * j
                stripes.append(self.box(arm, (u0, u0 + 1.0), CROSSING))
        return torch.stack(stripes).to(self.axis.device)

    # ------------------------------------------------------------------ lights
    def states(self, clock: torch.Tensor) -> torch.Tensor:
        """(B, 4) light state of every arm (GREEN, AMBER, RED) at the (B,) ``clock`` [s]."""
        tm = self.timing
        phase = self.phases(clock)
        return torch.where(
            phase < tm.green, GREEN, torch.where(phase < tm.green + tm.amber, AMBER, RED)
        )

    def phases(self, clock: torch.Tensor) -> torch.Tensor:
        """(B, 4) [s] every arm's time since its green began, at the (B,) ``clock``."""
        return torch.remainder(clock[:, None] - self.offset, self.timing.cycle)

    def walk(self, clock: torch.Tensor) -> torch.Tensor:
        """(B, 4) whether pedestrians may start crossing each arm at the (B,) ``clock``: its light
        red and the other group's green with :data:`WALK_CUTOFF` of it left (they walk beside
        the traffic that has green)."""
        phases = self.phases(clock)
        other = phases.roll(1, dims=1)
        return (self.states(clock) == RED) & (other < self.timing.green - WALK_CUTOFF)

    # ------------------------------------------------------------------ pedestrians
    def across_of(self, t: Traffic) -> torch.Tensor:
        """(B, N) [m] each slot's ``u`` on the crossing of its arm (``t.target_lane`` of a
        pedestrian holds its arm)."""
        arm = t.target_lane.clamp(0, 3)
        return (t.x - self.axis[arm, 0]) * self.across[arm, 0] + (
            t.y - self.axis[arm, 1]
        ) * self.across[arm, 1]

    def blocked(self, t: Traffic) -> torch.Tensor:
        """(B, 4, 2) whether a pedestrian walks on each arm's crossing near its incoming
        (index 0) and outgoing (1) lane."""
        walking = (t.kind == PEDESTRIAN) & ~t.waiting
        u = self.across_of(t)
        arm = torch.nn.functional.one_hot(t.target_lane.clamp(0, 3), 4).bool()  # (B, N, 4)
        out = []
        for centre in (ROAD_HALF / 2, -ROAD_HALF / 2):
            near = walking & ((u - centre).abs() < BLOCK_WIDTH)
            out.append((arm & near[..., None]).any(1))  # (B, 4)
        return torch.stack(out, -1)

    def spawn_pedestrians(
        self,
        t: Traffic,
        draws: Any,
        probability: float,
        jaywalk: float,
        first_slot: int,
        order: torch.Tensor,
    ) -> None:
        """In every environment, with ``probability``, a pedestrian at the kerb of a random
        crossing (random side) in a free slot from ``first_slot`` on; a jaywalker (with
        ``jaywalk``) walks at once. ``order``: (B,) road order of a vehicle appended now.
        ``draws``: one value per environment and call (:mod:`envs.batched.streams`)."""
        rand = draws.rand
        go, arm = rand() < probability, draws.randint(4)
        side = torch.where(rand() < 0.5, 1.0, -1.0)
        pace = WALK_SPEED[0] + (WALK_SPEED[1] - WALK_SPEED[0]) * rand()
        jay = rand() < jaywalk
        lane = CROSSING[0] + 0.5 + (CROSSING[1] - CROSSING[0] - 1.0) * rand()  # w, spread
        free = t.kind == EMPTY
        free[:, :first_slot] = False
        go = go & free.any(1)
        env = go.nonzero()[:, 0]
        if env.numel() == 0:
            return
        slot = free[env].int().argmax(1)
        a, sd = arm[env], side[env]
        x, y = self.point(a, sd * KERB, lane[env])
        direction = -sd[:, None] * self.across[a]  # (K, 2) towards the other kerb
        waits = ~jay[env]
        t.x[env, slot], t.y[env, slot] = x, y
        t.heading[env, slot] = torch.atan2(direction[:, 1], direction[:, 0])
        t.speed[env, slot] = torch.where(waits, 0.0, pace[env])
        t.target_speed[env, slot] = pace[env]
        t.target_lane[env, slot] = a  # a pedestrian's arm
        t.kind[env, slot] = PEDESTRIAN
        t.length[env, slot] = t.width[env, slot] = PEDESTRIAN_SIZE
        t.waiting[env, slot] = waits
        t.crashed[env, slot] = False
        t.has_impact[env, slot] = False
        # pairs of pedestrians are not checked (highway-env checks a pair when either side
        # asks): they pass each other on the crossing; vehicles check them
        t.check_collisions[env, slot] = False
        t.destination[env, slot] = -1
        t.road_order[env, slot] = order[env]

    # ------------------------------------------------------------------ traffic
    def path_stops(
        self, t: Traffic, s_all: torch.Tensor, slots: slice = slice(None)
    ) -> dict[str, torch.Tensor]:
        """Each slot's distance [m] along its path, from its centre, to the stop line it must
        keep to on red or amber (``light``) and to a crossing with a pedestrian on it
        (``crossing``), inf where none; its ``s`` [m] along its lane. (B, K) each, for the
        ``slots`` (all by default; ``s_all`` is (B, N, L) every slot's ``s`` on every lane)."""
        road = self.road
        lane, speed, half = t.lane[:, slots], t.speed[:, slots], t.length[:, slots] / 2
        s = s_all[:, slots].gather(2, lane[..., None])[..., 0]
        length = road.length[lane]
        inf = torch.full_like(s, math.inf)
        arm = self.approach_arm[lane]
        incoming = arm >= 0
        state = torch.where(incoming, self.states(t.clock).gather(1, arm.clamp(min=0)), NO_LIGHT)
        to_line = length - STOP_LINE - s
        front = to_line - half  # from the front bumper
        comfortable = front > speed**2 / (2 * STOP_DECELERATION)
        # red: every vehicle before its line; amber: those that can still stop comfortably
        keep = incoming & (((state == RED) & (front > 0)) | ((state == AMBER) & comfortable))
        light = torch.where(keep, to_line, inf)

        blocked = self.blocked(t)
        crossing = inf
        to_near = length - CROSSING[1] - s
        b_in = blocked[..., 0].gather(1, arm.clamp(min=0))
        crossing = torch.where(incoming & b_in & (to_near - half > -STOP_MARGIN), to_near, crossing)
        k = self.inner_to[lane]
        b_out = blocked[..., 1].gather(1, k.clamp(min=0))
        crossing = torch.where((k >= 0) & b_out, length - s + CROSSING[0], crossing)
        e = self.exit_arm[lane]
        b_exit = blocked[..., 1].gather(1, e.clamp(min=0))
        to_exit = CROSSING[0] - s
        crossing = torch.where(
            (e >= 0) & b_exit & (to_exit - half > -STOP_MARGIN), to_exit, crossing
        )
        return {"light": light, "crossing": crossing, "s": s}

    def stop_acceleration(
        self, sim: Simulator, t: Traffic, s_all: torch.Tensor, dt: float
    ) -> torch.Tensor:
        """(B, N) highway-env's IDM acceleration of each driven vehicle behind a stopped
        vehicle at its stop line or crossing (the nearer), inf where it has neither (the
        simulator keeps any braking from reversing a car, ``dt`` [s] being the frame)."""
        stops = self.path_stops(t, s_all)
        d = torch.minimum(stops["light"], stops["crossing"])
        p, v = sim.driver, t.speed.clamp(min=0)
        # the stopped "vehicle" is placed so that IDM's rest gap leaves STOP_MARGIN before it
        gap = (d + p.distance_wanted - t.length / 2 - STOP_MARGIN).clamp(min=0.1)
        target = torch.minimum(t.target_speed.clamp(min=0), self.road.speed_limit[t.lane])
        free = p.comfort_acc_max * (1 - torch.pow(v / not_zero(target).abs(), t.delta))
        d_star = p.distance_wanted + v * TIME_WANTED + v * v / (2 * p.sqrt_ab)
        acc = free - p.comfort_acc_max * (d_star / gap) ** 2
        return torch.where((t.kind == IDM) & torch.isfinite(d), acc, math.inf)

    def move_pedestrians(self, sim: Simulator, t: Traffic, dt: float) -> None:
        """The pedestrians' frame, after the vehicles moved and before the collision check: the
        waiting start on their walk signal, the walking go on unless a vehicle is in their way,
        those across the road leave, as do those hit earlier (taken away)."""
        ped = t.kind == PEDESTRIAN
        arm = t.target_lane.clamp(0, 3)
        blocked = self._blocked_by_vehicle(t, ped)
        start = ped & t.waiting & self.walk(t.clock).gather(1, arm) & ~blocked
        t.waiting = t.waiting & ~start
        moving = ped & ~t.waiting & ~t.crashed & ~blocked
        t.speed = torch.where(moving, t.target_speed, torch.where(ped, 0.0, t.speed))
        t.x = t.x + torch.where(moving, t.speed * torch.cos(t.heading) * dt, 0.0)
        t.y = t.y + torch.where(moving, t.speed * torch.sin(t.heading) * dt, 0.0)
        ahead = (
            torch.cos(t.heading) * self.across[arm, 0] + torch.sin(t.heading) * self.across[arm, 1]
        )
        done = moving & (self.across_of(t) * torch.sign(ahead) > KERB)
        done |= ped & t.crashed
        t.kind = torch.where(done, EMPTY, t.kind)

    def after_frame(self, sim: Simulator, t: Traffic, dt: float) -> None:
        """After the frame's collision check: the ego's pedestrian hits (that check's own
        verdict on the ego and the pedestrians alone: boxes that overlap, or would within the
        next frame) and stop lines crossed on red (the light as it was during the frame), then
        the lights' clock."""
        ego = t.kind[:, 0] == EGO
        ped = t.kind == PEDESTRIAN
        if bool(ped.any()):
            keep = ped.clone()
            keep[:, 0] = ego
            alone = dataclasses.replace(t, kind=torch.where(keep, t.kind, EMPTY))
            hit = contacts(alone, torch.zeros_like(keep), dt, ego_only=True)
            t.pedestrian_hit = t.pedestrian_hit | hit.crashed[:, 0] | hit.has_impact[:, 0]
        states = self.states(t.clock)
        behind, ego_arm = self.ego_behind_line(t)
        crossed = ego & t.behind_line & ~behind & (ego_arm >= 0)
        on_red = states.gather(1, ego_arm.clamp(min=0)[:, None])[:, 0] == RED
        t.red_runs = t.red_runs + (crossed & on_red).long()
        t.behind_line = behind & ego
        t.clock = t.clock + dt

    @staticmethod
    def _blocked_by_vehicle(t: Traffic, ped: torch.Tensor) -> torch.Tensor:
        """(B, N) pedestrians with a vehicle in their way: its centre within
        :data:`PAUSE_AHEAD` ahead of them (along their walk) and, to the side, within
        :data:`PAUSE_SIDE` (a vehicle across the crossing is long along it) plus the distance
        it closes in :data:`PAUSE_TIME`. They wait: nobody walks into a car, or in front of one
        that is about to pass."""
        vehicle = (t.kind == IDM) | (t.kind == EGO)
        dx = t.x[:, None, :] - t.x[:, :, None]  # (B, pedestrian, vehicle) [m]
        dy = t.y[:, None, :] - t.y[:, :, None]
        c, s = torch.cos(t.heading)[..., None], torch.sin(t.heading)[..., None]
        along, side = c * dx + s * dy, -s * dx + c * dy
        vx = (t.speed * torch.cos(t.heading))[:, None, :]
        vy = (t.speed * torch.sin(t.heading))[:, None, :]
        closing = (-torch.sign(side) * (-s * vx + c * vy)).clamp(min=0)  # [m/s] towards its line
        reach = PAUSE_SIDE + closing * PAUSE_TIME
        near = vehicle[:, None, :] & (along > -0.5) & (along < PAUSE_AHEAD) & (side.abs() < reach)
        return ped & near.any(-1)

    def ego_behind_line(self, t: Traffic) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,) whether the ego's front is before the stop line of its incoming lane, and the
        arm of its lane (incoming or in the junction; -1 on an outgoing lane)."""
        road = self.road
        lane = t.lane[:, 0]
        s, _ = road.coordinates_on(lane, t.x[:, 0], t.y[:, 0])
        incoming = self.approach_arm[lane] >= 0
        front = road.length[lane] - STOP_LINE - s - t.length[:, 0] / 2
        return incoming & (front > 0), self.arm_of[lane]

    def start(self, t: Traffic) -> None:
        """Episode bookkeeping once the ego is placed."""
        t.behind_line = self.ego_behind_line(t)[0] & (t.kind[:, 0] == EGO)
        t.red_runs = torch.zeros_like(t.red_runs)
        t.pedestrian_hit = torch.zeros_like(t.pedestrian_hit)

    # ------------------------------------------------------------------ what the ego sees
    def ego_view(self, sim: Simulator, t: Traffic) -> dict[str, torch.Tensor]:
        """(B,) the light state of the ego's incoming lane (NO_LIGHT past the line), the
        distance [m] from its front to the line (inf past it), and whether a pedestrian walks
        on a crossing on its path within :data:`AHEAD`."""
        road, lane = self.road, t.lane[:, 0]
        s_all, _ = sim.coordinates(t)
        stops = {k: v[:, 0] for k, v in self.path_stops(t, s_all, slice(0, 1)).items()}
        behind, arm = self.ego_behind_line(t)
        light = self.states(t.clock).gather(1, arm.clamp(min=0)[:, None])[:, 0]
        to_line = road.length[lane] - STOP_LINE - stops["s"] - t.length[:, 0] / 2
        # a crossing ahead on the ego's path: its own lane's, or, from its incoming lane, the
        # one its route leaves by (the junction between is about 20 m)
        dest_arm = self._destination_arm(t)
        further = road.length[lane] - stops["s"] + 20.0 + CROSSING[0]
        b_out = self.blocked(t)[..., 1].gather(1, dest_arm.clamp(min=0)[:, None])[:, 0]
        b_out &= (self.approach_arm[lane] >= 0) & (dest_arm >= 0)
        crossing = torch.where(b_out, torch.minimum(stops["crossing"], further), stops["crossing"])
        return {
            "light_state": torch.where(behind, light, NO_LIGHT),
            "stop_distance": torch.where(behind, to_line, math.inf),
            "pedestrian_ahead": crossing < AHEAD,
        }

    def _destination_arm(self, t: Traffic) -> torch.Tensor:
        """(B,) the arm of the ego's exit (its destination node ``o<k>``), -1 without one."""
        dest = t.destination[:, 0]
        return torch.where(dest >= 0, self.node_arm[dest.clamp(min=0)], -1)

    # ------------------------------------------------------------------ camera
    def draw(self, labels: torch.Tensor, origin: torch.Tensor, t: Traffic, scaling: float) -> None:
        """Draw the crossings, the lights (stop bars and heads, in their state's label) and the
        pedestrians into ``labels`` (B, H, W) in place, before the vehicles go on top."""
        b = labels.shape[0]
        device = labels.device
        marking = torch.full((b, len(self.statics)), CLASS_ID["lane_marking"], device=device)
        boxes = [self.statics.expand(b, -1, -1)]
        ids, show = [marking], [torch.ones_like(marking, dtype=torch.bool)]
        light_id = torch.tensor(LIGHT_LABELS, device=device)[self.states(t.clock)]  # (B, 4)
        boxes.append(self.light_boxes.expand(b, -1, -1))
        ids.append(light_id[:, self.light_arm])
        show.append(torch.ones(b, len(self.light_arm), dtype=torch.bool, device=device))
        half = t.length / 2  # pedestrians: axis-aligned squares
        boxes.append(torch.stack([t.x - half, t.y - half, t.x + half, t.y + half], -1))
        ids.append(torch.full_like(t.kind, CLASS_ID["pedestrian"]))
        show.append(t.kind == PEDESTRIAN)
        fill_boxes(
            labels, origin, torch.cat(boxes, 1), torch.cat(ids, 1), torch.cat(show, 1), scaling
        )

    def stop_sensor(self, sim: Simulator, t: Traffic) -> torch.Tensor:
        """(B,) the ``route.stop_line`` sensor: the distance from the ego's front to its stop line
        over :data:`STOP_SCALE`, 1 past it (a map gives this; the light's state it does not)."""
        to_line = self.ego_view(sim, t)["stop_distance"]
        return (to_line / STOP_SCALE).clamp(-1.0, 1.0).nan_to_num(1.0, posinf=1.0)


def fill_boxes(
    labels: torch.Tensor,
    origin: torch.Tensor,
    boxes: torch.Tensor,
    ids: torch.Tensor,
    show: torch.Tensor,
    scaling: float,
) -> None:
    """Fill world-axis-aligned boxes into label maps, later boxes on top, in place.

    ``labels``: (B, H, W) uint8; ``origin``: (B, 2) [m] world position of pixel (0, 0);
    ``boxes``: (B, R, 4) as (x0, y0, x1, y1) [m]; ``ids``: (B, R) labels; ``show``: (B, R) bool.
    A box covers the pixels whose centres it holds (pixel ``i`` is centred on ``i``, as the
    vehicles are drawn), at least the one nearest its middle.
    """
    h, w = labels.shape[1:]
    device = labels.device
    px = (boxes[..., 0::2] - origin[:, None, :1]) * scaling  # (B, R, 2) columns
    py = (boxes[..., 1::2] - origin[:, None, 1:]) * scaling  # rows
    c0, c1 = _pixel_span(px[..., 0], px[..., 1])
    r0, r1 = _pixel_span(py[..., 0], py[..., 1])
    cols = torch.arange(w, device=device)
    rows = torch.arange(h, device=device)
    in_col = (cols >= c0[..., None]) & (cols < c1[..., None])  # (B, R, W)
    in_row = (rows >= r0[..., None]) & (rows < r1[..., None])  # (B, R, H)
    visible = show & in_col.any(-1) & in_row.any(-1)  # (B, R)
    for r in visible.any(0).nonzero()[:, 0].tolist():
        mask = in_row[:, r, :, None] & in_col[:, r, None, :] & visible[:, r, None, None]
        labels.masked_fill_(mask, 0)
        labels.add_(mask.to(labels.dtype) * ids[:, r, None, None].to(labels.dtype))


def _pixel_span(lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """First and past-the-last pixel whose centre lies in [lo, hi] [px]; the pixel nearest the
    middle where none does."""
    first, last = torch.ceil(lo), torch.floor(hi)
    middle = torch.round((lo + hi) / 2)
    empty = last < first
    return torch.where(empty, middle, first), torch.where(empty, middle, last) + 1
