"""Road geometry of the batched simulator: a table of lanes read from highway-env's own network.

Every lane of highway-env's scenarios is one of three kinds, and each has highway-env's local
coordinates ``(s, lateral)`` computed here exactly as its class computes them:

- ``StraightLane``: ``s`` and ``lateral`` along and across its unit direction from its start;
- ``SineLane``: a straight lane whose lateral offset ``amp * sin(puls * s + phase)`` is taken off;
- ``CircularLane`` (an arc): ``s`` is the swept angle from its start phase times the radius,
  ``lateral`` the radial offset from it, signed by its turning direction.

The table is built from the reference road network (same lane order, widths, speed limits,
priorities, line types and successors), so geometry can never drift from highway-env. It also
holds the road graph the traffic needs: the next lane at each lane end, freely (highway-env's
closest successor) or along the shortest route to a destination node, which lanes are the exit
road of a destination, and the turn a route asks for.

Roads whose lanes all run along +x (highway, merge) keep what the exact camera of
:mod:`envs.batched.render` traces; any other road is drawn from a map
(:mod:`envs.batched.raster_map`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from highway_env.road.lane import AbstractLane, CircularLane, LineType, SineLane, StraightLane
from highway_env.road.road import RoadNetwork

from drive_attention.envs.camera import along_x
from drive_attention.envs.scenarios import STRIPE_LENGTH, STRIPE_SPACING, lane_samples, turn_of

VEHICLE_LENGTH = AbstractLane.VEHICLE_LENGTH  # [m] lane end margins of highway-env
LINE, ARC = 0, 1  # lane kinds: straight or sine (a line with an offset), circular


@dataclass
class LaneTable:
    """(L,) tensors describing every lane, in highway-env's ``lanes_list()`` order."""

    kind: torch.Tensor  # long, LINE or ARC
    x0: torch.Tensor  # [m] start (LINE)
    y0: torch.Tensor  # [m]
    dx: torch.Tensor  # unit direction (LINE)
    dy: torch.Tensor
    heading0: torch.Tensor  # [rad] direction angle (LINE)
    amp: torch.Tensor  # [m] sine amplitude (0: straight)
    puls: torch.Tensor  # [rad/m]
    phase: torch.Tensor  # [rad]
    cx: torch.Tensor  # [m] centre (ARC)
    cy: torch.Tensor
    radius: torch.Tensor  # [m] (ARC; 1 for lines)
    phase0: torch.Tensor  # [rad] start phase (ARC)
    turn: torch.Tensor  # +1 clockwise (highway-env's direction), -1 counter-clockwise (ARC)
    length: torch.Tensor  # [m]
    width: torch.Tensor  # [m]
    speed_limit: torch.Tensor  # [m/s]
    priority: torch.Tensor  # long, highway-env's lane priority (the intersection's rules)
    forbidden: torch.Tensor  # bool
    edge: torch.Tensor  # long, road (from, to) id
    lane_id: torch.Tensor  # long, index of the lane on its road
    edge_lanes: torch.Tensor  # long, number of lanes on the lane's road
    left: torch.Tensor  # long, lane on the left (id - 1) or -1
    right: torch.Tensor  # long, lane on the right (id + 1) or -1
    start_node: torch.Tensor  # long, index in ``nodes`` of the road's start
    end_node: torch.Tensor  # long, index in ``nodes`` of the road's end
    # (L, V + 1) long: highway-env's next_lane at the lane end towards destination node v along
    # its shortest route (column v), or without a route (last column, the closest successor);
    # the lane itself where there is none
    next_lane: torch.Tensor
    # (L, V + 1) long: the next lane along the route as the route sensors follow it (the lane
    # id kept where the next road has it), -1 where the route ends
    ahead_lane: torch.Tensor
    exit_of: torch.Tensor  # (L, V) bool, set by a route scenario: lane on the exit road of v
    turn_to: torch.Tensor  # (L, V, 3) float, one-hot (left, straight, right) of the route
    # What the exact camera traces (roads along +x only, else empty): every lane by centre-line
    # samples (its two ends if straight, every CURVE_STEP metres along a sine lane), one flat
    # table: lane l owns samples trace_y[trace_start[l] : trace_start[l] + trace_pieces[l] + 1],
    # evenly spaced along x from x0 to x0 + length.
    trace_y: torch.Tensor  # (T,) [m] centre ordinate at the samples
    trace_start: torch.Tensor  # (L,) long
    trace_pieces: torch.Tensor  # (L,) long, straight pieces per lane
    marking_lane: torch.Tensor  # (M,) long, lane of each continuous or dashed marking
    marking_offset: torch.Tensor  # (M,) [m] lateral offset of the marking from the centre
    marking_dashed: torch.Tensor  # (M,) bool
    indexes: list[tuple[str, str, int]]  # highway-env lane indexes
    nodes: list[str]  # highway-env node names
    lanes: list[AbstractLane]  # highway-env's lanes (what the map camera draws)
    sine_index: torch.Tensor  # (S,) long, the sine lanes
    arc_index: torch.Tensor  # (A,) long, the circular lanes
    curved: bool  # any sine lane
    arcs: bool  # any circular lane
    along_x: bool  # every lane is a line along +x (highway, merge)

    def to(self, device: torch.device | str) -> LaneTable:
        out = {}
        for name, value in vars(self).items():
            out[name] = value.to(device) if isinstance(value, torch.Tensor) else value
        return LaneTable(**out)

    def __len__(self) -> int:
        return len(self.indexes)

    def node(self, name: str) -> int:
        """Index of highway-env's node ``name``."""
        return self.nodes.index(name)

    # ------------------------------------------------------------------ lane coordinates
    def _get(self, name: str, lanes: torch.Tensor | None) -> torch.Tensor:
        value = getattr(self, name)
        return value if lanes is None else value[lanes]

    def heading_at(self, lanes: torch.Tensor | None, s: torch.Tensor) -> torch.Tensor:
        """Lane heading [rad] at longitudinal ``s`` (highway-env's ``heading_at``)."""
        if self.along_x and not self.curved:
            return torch.zeros_like(s)
        if lanes is None:  # every lane: the sine and arc terms only on the lanes that have them
            # (index_select and index_copy_ on the lane dimension: the same values as indexing
            # with s[..., i], several times faster on the CPU)
            heading = self.heading0.expand_as(s).contiguous()
            if self.curved:
                i = self.sine_index
                a, w, p = self.amp[i], self.puls[i], self.phase[i]
                bend = torch.atan(a * w * torch.cos(w * s.index_select(-1, i) + p))
                heading = heading.index_copy(-1, i, heading.index_select(-1, i) + bend)
            if self.arcs:
                i = self.arc_index
                turn = self.turn[i]
                on_arc = s.index_select(-1, i)
                arc = turn * on_arc / self.radius[i] + self.phase0[i] + turn * (math.pi / 2)
                heading = heading.index_copy(-1, i, arc)
            return heading
        g = self._get
        heading = g("heading0", lanes)
        if self.curved:
            a, w, p = g("amp", lanes), g("puls", lanes), g("phase", lanes)
            heading = heading + torch.atan(a * w * torch.cos(w * s + p))
        if self.arcs:
            turn = g("turn", lanes)
            arc = turn * s / g("radius", lanes) + g("phase0", lanes) + turn * (math.pi / 2)
            heading = torch.where(g("kind", lanes) == ARC, arc, heading)
        return heading.expand_as(s) if heading.shape != s.shape else heading

    def _local(
        self, lanes: torch.Tensor | None, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        g = self._get
        rx, ry = x - g("x0", lanes), y - g("y0", lanes)
        if self.along_x:
            s, lat = rx, ry
        else:
            dx, dy = g("dx", lanes), g("dy", lanes)
            s, lat = rx * dx + ry * dy, ry * dx - rx * dy
        if lanes is None and (self.curved or self.arcs):
            return self._local_curves(x, y, s, lat)
        if self.curved:
            lat = lat - g("amp", lanes) * torch.sin(g("puls", lanes) * s + g("phase", lanes))
        if self.arcs:
            ex, ey = x - g("cx", lanes), y - g("cy", lanes)
            start, turn, radius = g("phase0", lanes), g("turn", lanes), g("radius", lanes)
            phi = start + wrap_to_pi(torch.atan2(ey, ex) - start)
            arc = g("kind", lanes) == ARC
            s = torch.where(arc, turn * (phi - start) * radius, s)
            lat = torch.where(arc, turn * (radius - torch.hypot(ex, ey)), lat)
        return s, lat

    def _local_curves(
        self, x: torch.Tensor, y: torch.Tensor, s: torch.Tensor, lat: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`_local` on every lane: the lines' ``s``, ``lat`` corrected on the sine lanes
        and replaced on the arcs, each computed on those lanes only."""
        if self.curved:
            i = self.sine_index
            wave = self.amp[i] * torch.sin(self.puls[i] * s.index_select(-1, i) + self.phase[i])
            lat = lat.index_copy(-1, i, lat.index_select(-1, i) - wave)
        if self.arcs:
            i = self.arc_index
            ex, ey = x[..., 0:1] - self.cx[i], y[..., 0:1] - self.cy[i]
            start, turn, radius = self.phase0[i], self.turn[i], self.radius[i]
            phi = start + wrap_to_pi(torch.atan2(ey, ex) - start)
            s = s.index_copy(-1, i, turn * (phi - start) * radius)
            lat = lat.index_copy(-1, i, turn * (radius - torch.hypot(ex, ey)))
        return s, lat

    def coordinates(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Local (s, lateral) [m] of points (...,) on every lane: two (..., L) tensors."""
        return self._local(None, x[..., None], y[..., None])

    def coordinates_on(
        self, lanes: torch.Tensor, x: torch.Tensor, y: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Local (s, lateral) [m] of points on the given lanes (all three the same shape)."""
        return self._local(lanes, x, y)

    def position(
        self, lanes: torch.Tensor, s: torch.Tensor, lat: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """World (x, y) [m] of local coordinates on ``lanes`` (highway-env's ``position``)."""
        g = self._get
        off = lat
        if self.curved:
            off = lat + g("amp", lanes) * torch.sin(g("puls", lanes) * s + g("phase", lanes))
        dx, dy = g("dx", lanes), g("dy", lanes)
        x = g("x0", lanes) + s * dx - off * dy
        y = g("y0", lanes) + s * dy + off * dx
        if self.arcs:
            turn, radius = g("turn", lanes), g("radius", lanes)
            phi = turn * s / radius + g("phase0", lanes)
            r = radius - lat * turn
            arc = g("kind", lanes) == ARC
            x = torch.where(arc, g("cx", lanes) + r * torch.cos(phi), x)
            y = torch.where(arc, g("cy", lanes) + r * torch.sin(phi), y)
        return x, y

    def closest(self, s: torch.Tensor, lat: torch.Tensor, heading: torch.Tensor) -> torch.Tensor:
        """highway-env's get_closest_lane_index (distance_with_heading), (...,) long.

        ``s``, ``lat``: (..., L) from :meth:`coordinates`; ``heading``: (...,) [rad].
        """
        angle = wrap_to_pi(heading[..., None] - self.heading_at(None, s)).abs()
        dist = lat.abs() + (s - self.length).clamp(min=0) + (-s).clamp(min=0) + angle
        return dist.argmin(dim=-1)

    def on_lane(self, s: torch.Tensor, lat: torch.Tensor, margin: float = 0.0) -> torch.Tensor:
        """highway-env's lane.on_lane for (..., L) coordinates on every lane."""
        return (
            (lat.abs() <= self.width / 2 + margin)
            & (s >= -VEHICLE_LENGTH)
            & (s < self.length + VEHICLE_LENGTH)
        )

    def traced_centre(self, s: torch.Tensor) -> torch.Tensor:
        """Centre ordinate [m] of every lane as envs.camera traces it (a polyline).

        ``s``: (..., L) longitudinal positions [m] on every lane; returns (..., L), linear
        between the samples and extended linearly beyond the lane ends (``along_x`` roads).
        """
        step = self.length / self.trace_pieces  # (L,) [m]
        k = torch.floor(s / step).clamp(min=0)
        k = torch.minimum(k, (self.trace_pieces - 1).float())
        u = s / step - k
        first = self.trace_start + k.long()
        ya, yb = self.trace_y[first], self.trace_y[first + 1]
        return ya + (yb - ya) * u


def wrap_to_pi(x: torch.Tensor) -> torch.Tensor:
    return torch.remainder(x + np.pi, 2 * np.pi) - np.pi


def _next_lane(network: RoadNetwork, index: tuple[str, str, int], to: str | None) -> tuple:
    """highway-env's next_lane at the end of lane ``index``, along a route whose next road
    ends at ``to`` (None: no route)."""
    lane = network.get_lane(index)
    route = [(index[1], to, None)] if to is not None else None
    return tuple(network.next_lane(index, route=route, position=lane.position(lane.length, 0.0)))


def _route_hop(network: RoadNetwork, node: str, goal: str) -> str | None:
    """The node after ``node`` on highway-env's shortest path to ``goal`` (None: there or no
    path)."""
    if node == goal:
        return None
    path = network.shortest_path(node, goal)
    return path[1] if len(path) >= 2 else None


def lane_table(network: RoadNetwork, device: torch.device | str = "cpu") -> LaneTable:
    """The lane table of a highway-env road network (straight, sine and circular lanes)."""
    lanes, indexes = [], []
    for _from, to_dict in network.graph.items():
        for _to, road_lanes in to_dict.items():
            for _id, lane in enumerate(road_lanes):
                lanes.append(lane)
                indexes.append((_from, _to, _id))
    nodes = sorted({n for index in indexes for n in index[:2]})
    rows_of = {index: i for i, index in enumerate(indexes)}
    edges: dict[tuple[str, str], int] = {}
    rows = []
    for lane, (a, b, i) in zip(lanes, indexes):
        row = dict(kind=LINE, x0=0.0, y0=0.0, dx=1.0, dy=0.0, heading0=0.0, amp=0.0, puls=0.0)
        row.update(phase=0.0, cx=0.0, cy=0.0, radius=1.0, phase0=0.0, turn=1.0)
        if isinstance(lane, CircularLane):
            row.update(kind=ARC, cx=lane.center[0], cy=lane.center[1], radius=lane.radius)
            row.update(phase0=lane.start_phase, turn=float(lane.direction))
        elif isinstance(lane, StraightLane):
            row.update(x0=lane.start[0], y0=lane.start[1], heading0=lane.heading)
            row.update(dx=lane.direction[0], dy=lane.direction[1])
            if isinstance(lane, SineLane):
                row.update(amp=lane.amplitude, puls=lane.pulsation, phase=lane.phase)
        else:
            raise NotImplementedError(
                f"lane {(a, b, i)} is a {type(lane).__name__}: the batched backend supports "
                "highway-env's straight, sine and circular lanes"
            )
        n_edge = len(network.graph[a][b])
        free = _next_lane(network, (a, b, i), None)
        routed = []
        for goal in nodes:
            hop = _route_hop(network, b, goal)
            routed.append(rows_of[_next_lane(network, (a, b, i), hop)] if hop else rows_of[free])
        ahead = []
        for goal in [*nodes, None]:
            hop = _route_hop(network, b, goal) if goal is not None else None
            if hop is None:
                ahead.append(-1)
            else:
                count = len(network.graph[b][hop])
                ahead.append(rows_of[(b, hop, min(i, count - 1))])
        rows.append(
            dict(
                **row,
                length=lane.length,
                width=lane.width,
                speed_limit=lane.speed_limit if lane.speed_limit is not None else 1e9,
                priority=lane.priority,
                forbidden=lane.forbidden,
                edge=edges.setdefault((a, b), len(edges)),
                lane_id=i,
                edge_lanes=n_edge,
                left=rows_of[(a, b, i - 1)] if i > 0 else -1,
                right=rows_of[(a, b, i + 1)] if i < n_edge - 1 else -1,
                start_node=nodes.index(a),
                end_node=nodes.index(b),
                next_lane=[*routed, rows_of[free]],
                ahead_lane=ahead,
                turn_to=[_route_turn(network, lane, b, goal) for goal in nodes],
            )
        )

    def col(key: str, dtype: torch.dtype) -> torch.Tensor:
        return torch.tensor([r[key] for r in rows], dtype=dtype, device=device)

    f, i64 = torch.float32, torch.long
    straight_x = along_x(lanes)
    trace = _trace(lanes) if straight_x else _trace([])
    return LaneTable(
        **{k: col(k, f) for k in ("x0", "y0", "dx", "dy", "heading0", "amp", "puls", "phase")},
        **{k: col(k, f) for k in ("cx", "cy", "radius", "phase0", "turn", "length", "width")},
        speed_limit=col("speed_limit", f),
        forbidden=col("forbidden", torch.bool),
        **{
            k: col(k, i64)
            for k in ("kind", "priority", "edge", "lane_id", "edge_lanes", "left", "right")
        },
        start_node=col("start_node", i64),
        end_node=col("end_node", i64),
        next_lane=col("next_lane", i64),
        ahead_lane=col("ahead_lane", i64),
        exit_of=torch.zeros(len(rows), len(nodes), dtype=torch.bool, device=device),
        turn_to=col("turn_to", f),
        **{k: v.to(device) for k, v in trace.items()},
        indexes=indexes,
        nodes=nodes,
        lanes=lanes,
        sine_index=torch.tensor(
            [k for k, row in enumerate(rows) if row["amp"] != 0], dtype=i64, device=device
        ),
        arc_index=torch.tensor(
            [k for k, row in enumerate(rows) if row["kind"] == ARC], dtype=i64, device=device
        ),
        curved=any(row["amp"] != 0 for row in rows),
        arcs=any(row["kind"] == ARC for row in rows),
        along_x=straight_x,
    )


def _route_turn(network: RoadNetwork, lane: AbstractLane, node: str, goal: str) -> tuple:
    """One-hot turn of the route from ``lane`` (ending at ``node``) to ``goal``, as the
    highway-env backend encodes it (straight where there is no route)."""
    path = network.shortest_path(node, goal) if node != goal else [node]
    if len(path) < 2:
        return (0.0, 1.0, 0.0)
    end = network.graph[path[-2]][path[-1]][0]
    return turn_of(lane.heading_at(0.0), end.heading_at(end.length))


def _trace(lanes: list[AbstractLane]) -> dict[str, torch.Tensor]:
    """What the exact camera traces of lanes along +x (see :class:`LaneTable`)."""
    trace_y, trace_start, trace_pieces, marking_rows = [], [], [], []
    for row, lane in enumerate(lanes):
        samples = lane_samples(lane)  # as the highway-env backend traces the lane
        trace_start.append(len(trace_y))
        trace_pieces.append(len(samples) - 1)
        trace_y.extend(float(lane.position(float(si), 0.0)[1]) for si in samples)
        for side, line_type in enumerate(lane.line_types):
            lateral = (side - 0.5) * lane.width
            if line_type in (LineType.CONTINUOUS, LineType.CONTINUOUS_LINE, LineType.STRIPED):
                marking_rows.append((row, lateral, line_type == LineType.STRIPED))
    f, i64 = torch.float32, torch.long
    return dict(
        trace_y=torch.tensor(trace_y, dtype=f),
        trace_start=torch.tensor(trace_start, dtype=i64),
        trace_pieces=torch.tensor(trace_pieces, dtype=i64),
        marking_lane=torch.tensor([m[0] for m in marking_rows], dtype=i64),
        marking_offset=torch.tensor([m[1] for m in marking_rows], dtype=f),
        marking_dashed=torch.tensor([m[2] for m in marking_rows], dtype=torch.bool),
    )


STRIPES = (STRIPE_SPACING, STRIPE_LENGTH)  # [m] dash period and length of the camera
