"""Road geometry of the batched simulator: a table of lanes read from highway-env's own network.

The highway and merge scenarios only have lanes that run along +x: straight lanes and
highway-env's sine lane. Each lane ``l`` is ``y = y0 + amp * sin(puls * s + phase)`` with
``s = x - x0`` for ``0 <= s <= length``, so a lane's local coordinates are
``(s, lateral) = (x - x0, y - y_centre(s))`` exactly as highway-env's ``StraightLane`` and
``SineLane`` compute them. The table is built from the reference road network (same lane order,
widths, speed limits, line types and successors), so geometry can never drift from highway-env.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from highway_env.road.lane import AbstractLane, LineType, SineLane, StraightLane
from highway_env.road.road import RoadNetwork

from envs.scenarios import STRIPE_LENGTH, STRIPE_SPACING, lane_samples

VEHICLE_LENGTH = AbstractLane.VEHICLE_LENGTH  # [m] lane end margins of highway-env


@dataclass
class LaneTable:
    """(L,) tensors describing every lane, in highway-env's ``lanes_list()`` order."""

    x0: torch.Tensor  # [m] start abscissa
    length: torch.Tensor  # [m]
    y0: torch.Tensor  # [m] ordinate of the centre line (before the sine term)
    amp: torch.Tensor  # [m] sine amplitude (0: straight)
    puls: torch.Tensor  # [rad/m]
    phase: torch.Tensor  # [rad]
    width: torch.Tensor  # [m]
    speed_limit: torch.Tensor  # [m/s]
    forbidden: torch.Tensor  # bool
    edge: torch.Tensor  # long, road (from, to) id
    lane_id: torch.Tensor  # long, index of the lane on its road
    edge_lanes: torch.Tensor  # long, number of lanes on the lane's road
    left: torch.Tensor  # long, lane on the left (id - 1) or -1
    right: torch.Tensor  # long, lane on the right (id + 1) or -1
    next_lane: torch.Tensor  # long, highway-env's next_lane() at the lane end (itself if none)
    # What the camera draws: every lane traced by centre-line samples (its two ends if straight,
    # every CURVE_STEP metres along a sine lane), one flat table: lane l owns samples
    # trace_y[trace_start[l] : trace_start[l] + trace_pieces[l] + 1], evenly spaced along x from
    # x0 to x0 + length (a lane along +x puts its point at s exactly at x = x0 + s).
    trace_y: torch.Tensor  # (T,) [m] centre ordinate at the samples
    trace_start: torch.Tensor  # (L,) long
    trace_pieces: torch.Tensor  # (L,) long, straight pieces per lane
    marking_lane: torch.Tensor  # (M,) long, lane of each continuous or dashed marking
    marking_offset: torch.Tensor  # (M,) [m] lateral offset of the marking from the centre
    marking_dashed: torch.Tensor  # (M,) bool
    indexes: list[tuple[str, str, int]]  # highway-env lane indexes
    curved: bool  # any sine lane (False: centres are y0 and headings 0, computed as such)

    def to(self, device: torch.device | str) -> LaneTable:
        out = {}
        for name, value in vars(self).items():
            out[name] = value.to(device) if isinstance(value, torch.Tensor) else value
        return LaneTable(**out)

    def __len__(self) -> int:
        return len(self.indexes)

    # ------------------------------------------------------------------ lane coordinates
    def centre(self, lanes: torch.Tensor | None, s: torch.Tensor) -> torch.Tensor:
        """Centre-line ordinate [m] of ``lanes`` (or every lane, broadcast on the last axis)."""
        if not self.curved:
            return (self.y0 if lanes is None else self.y0[lanes]).expand_as(s)
        if lanes is None:
            return self.y0 + self.amp * torch.sin(self.puls * s + self.phase)
        return self.y0[lanes] + self.amp[lanes] * torch.sin(
            self.puls[lanes] * s + self.phase[lanes]
        )

    def heading_at(self, lanes: torch.Tensor | None, s: torch.Tensor) -> torch.Tensor:
        """Lane heading [rad] at longitudinal ``s`` (highway-env's SineLane.heading_at)."""
        if not self.curved:
            return torch.zeros_like(s)
        if lanes is None:
            return torch.atan(self.amp * self.puls * torch.cos(self.puls * s + self.phase))
        a, w, p = self.amp[lanes], self.puls[lanes], self.phase[lanes]
        return torch.atan(a * w * torch.cos(w * s + p))

    def coordinates(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Local (s, lateral) [m] of points (...,) on every lane: two (..., L) tensors."""
        s = x[..., None] - self.x0
        return s, y[..., None] - self.centre(None, s)

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
        """Centre ordinate [m] of every lane as envs.highway.raster traces it (a polyline).

        ``s``: (..., L) longitudinal positions [m] on every lane; returns (..., L), linear
        between the samples and extended linearly beyond the lane ends.
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


def lane_table(network: RoadNetwork, device: torch.device | str = "cpu") -> LaneTable:
    """The lane table of a highway-env network whose lanes all run along +x."""
    lanes, indexes = [], []
    for _from, to_dict in network.graph.items():
        for _to, road_lanes in to_dict.items():
            for _id, lane in enumerate(road_lanes):
                lanes.append(lane)
                indexes.append((_from, _to, _id))
    edges: dict[tuple[str, str], int] = {}
    rows = []
    trace_y, trace_start, trace_pieces = [], [], []
    marking_rows = []
    for lane, (a, b, i) in zip(lanes, indexes):
        if not isinstance(lane, StraightLane) or not np.allclose(lane.direction, [1.0, 0.0]):
            raise NotImplementedError(
                f"lane {(a, b, i)} of type {type(lane).__name__} does not run along +x: the "
                "batched backend supports straight and sine lanes along x (highway, merge)"
            )
        sine = isinstance(lane, SineLane)
        amp, puls, phase = (lane.amplitude, lane.pulsation, lane.phase) if sine else (0, 0, 0)
        n_edge = len(network.graph[a][b])
        nxt = network.next_lane(
            (a, b, i), position=lane.position(lane.length, 0.0), np_random=np.random
        )
        rows.append(
            dict(
                x0=lane.start[0],
                length=lane.length,
                y0=lane.start[1],
                amp=amp,
                puls=puls,
                phase=phase,
                width=lane.width,
                speed_limit=lane.speed_limit if lane.speed_limit is not None else 1e9,
                forbidden=lane.forbidden,
                edge=edges.setdefault((a, b), len(edges)),
                lane_id=i,
                edge_lanes=n_edge,
                left=indexes.index((a, b, i - 1)) if i > 0 else -1,
                right=indexes.index((a, b, i + 1)) if i < n_edge - 1 else -1,
                next_lane=indexes.index(tuple(nxt)),
            )
        )
        samples = lane_samples(lane)  # as the highway-env backend traces the lane
        trace_start.append(len(trace_y))
        trace_pieces.append(len(samples) - 1)
        trace_y.extend(float(lane.position(float(si), 0.0)[1]) for si in samples)
        lane_row = len(rows) - 1
        for side, line_type in enumerate(lane.line_types):
            lateral = (side - 0.5) * lane.width
            if line_type in (LineType.CONTINUOUS, LineType.CONTINUOUS_LINE, LineType.STRIPED):
                marking_rows.append((lane_row, lateral, line_type == LineType.STRIPED))

    def col(key: str, dtype: torch.dtype) -> torch.Tensor:
        return torch.tensor([r[key] for r in rows], dtype=dtype, device=device)

    f, i64 = torch.float32, torch.long
    return LaneTable(
        x0=col("x0", f),
        length=col("length", f),
        y0=col("y0", f),
        amp=col("amp", f),
        puls=col("puls", f),
        phase=col("phase", f),
        width=col("width", f),
        speed_limit=col("speed_limit", f),
        forbidden=col("forbidden", torch.bool),
        edge=col("edge", i64),
        lane_id=col("lane_id", i64),
        edge_lanes=col("edge_lanes", i64),
        left=col("left", i64),
        right=col("right", i64),
        next_lane=col("next_lane", i64),
        trace_y=torch.tensor(trace_y, dtype=f, device=device),
        trace_start=torch.tensor(trace_start, dtype=i64, device=device),
        trace_pieces=torch.tensor(trace_pieces, dtype=i64, device=device),
        marking_lane=torch.tensor([m[0] for m in marking_rows], dtype=i64, device=device),
        marking_offset=torch.tensor([m[1] for m in marking_rows], dtype=f, device=device),
        marking_dashed=torch.tensor([m[2] for m in marking_rows], dtype=torch.bool, device=device),
        indexes=indexes,
        curved=any(row["amp"] != 0 for row in rows),
    )


STRIPES = (STRIPE_SPACING, STRIPE_LENGTH)  # [m] dash period and length of the camera
