"""The embedded backends' camera: top-down raster of a highway-env road, a label map per frame,
and the camera frame from it. The highway-env backend draws every frame with it; the batched
backend draws its roads with it once (:mod:`envs.batched.raster_map`) or matches it exactly
(:mod:`envs.batched.render`).

The label map is drawn class by class (off road, road, lane markings, vehicles, ego) into an
(H, W) uint8 array with OpenCV, and the camera frame is ``PALETTE[labels]``, so the two line up
pixel for pixel and road labels cost one array copy. The world-to-pixel transform is
highway-env's viewer transform: ``pixel = (world - origin) * scaling`` with the ego at
``centering`` of the frame (fractions of width and height).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from highway_env.road.lane import AbstractLane, LineType, StraightLane

from envs.contract import CLASS_ID, PALETTE
from envs.scenarios import (
    STRIPE_LENGTH,
    STRIPE_SPACING,
    SUBPIXEL_BITS,
    lane_samples,
    marking_px,
)

_SHIFT = SUBPIXEL_BITS  # fixed-point bits for sub-pixel polygon vertices
_ONE = 1 << _SHIFT


@dataclass
class RoadGeometry:
    """Static world-frame geometry of a road network, built once per episode."""

    surfaces: list[np.ndarray]  # per lane, (N_i, 2) polygon [m]
    lines: list[np.ndarray]  # continuous markings, (N_i, 2) polylines [m]
    dashes: np.ndarray  # (M, 2, 2) dash segments [m]
    dash_mid: np.ndarray  # (M, 2) dash mid-points [m], for culling


def _points(lane: AbstractLane, s: np.ndarray, lateral: float) -> np.ndarray:
    """(len(s), 2) world points [m] of the lane at longitudinal ``s`` and lateral offset."""
    if type(lane) is StraightLane:
        return lane.start + s[:, None] * lane.direction + lateral * lane.direction_lateral
    return np.array([lane.position(float(si), lateral) for si in s])


def road_geometry(lanes: list[AbstractLane]) -> RoadGeometry:
    """Sample every lane's surface polygon, continuous lines and dashes in world coordinates."""
    surfaces, lines, dashes = [], [], []
    for lane in lanes:
        s = lane_samples(lane)
        half = np.array([lane.width_at(float(si)) / 2 for si in s])
        left = np.array([lane.position(float(si), -h) for si, h in zip(s, half)])
        right = np.array([lane.position(float(si), h) for si, h in zip(s, half)])
        surfaces.append(np.concatenate([left, right[::-1]]))
        for side, line_type in enumerate(lane.line_types):
            lateral = (side - 0.5) * lane.width
            if line_type in (LineType.CONTINUOUS, LineType.CONTINUOUS_LINE):
                lines.append(_points(lane, s, lateral))
            elif line_type == LineType.STRIPED:
                starts = np.arange(0.0, lane.length, STRIPE_SPACING)
                ends = np.minimum(starts + STRIPE_LENGTH, lane.length)
                seg = np.stack([_points(lane, starts, lateral), _points(lane, ends, lateral)], 1)
                dashes.append(seg)
    dash_arr = np.concatenate(dashes) if dashes else np.zeros((0, 2, 2))
    return RoadGeometry(surfaces, lines, dash_arr, dash_arr.mean(axis=1))


def vehicle_corners(
    positions: np.ndarray, headings: np.ndarray, lengths: np.ndarray, widths: np.ndarray
) -> np.ndarray:
    """(N, 4, 2) world corners [m] of oriented boxes centred at ``positions`` (N, 2)."""
    c, s = np.cos(headings), np.sin(headings)
    fwd = np.stack([c, s], -1) * (lengths / 2)[:, None]  # (N, 2)
    lat = np.stack([-s, c], -1) * (widths / 2)[:, None]  # (N, 2)
    p = positions
    return np.stack([p + fwd + lat, p + fwd - lat, p - fwd - lat, p - fwd + lat], axis=1)


def to_pixels(points: np.ndarray, origin: np.ndarray, scaling: float) -> np.ndarray:
    """World points [m] (..., 2) to fixed-point pixel coordinates (..., 2) int32 at ``scaling``
    [px/m] in an image whose pixel (0, 0) is the world point ``origin`` [m]."""
    return np.round((points - origin) * (scaling * _ONE)).astype(np.int32)


def draw_road(
    labels: np.ndarray,
    geometry: RoadGeometry,
    origin: np.ndarray,
    scaling: float,
    line_px: int,
    view: tuple[np.ndarray, np.ndarray] | None = None,
) -> None:
    """Fill the road surfaces, then draw the continuous and dashed markings ``line_px`` [px]
    wide, into ``labels`` (H, W) uint8 whose pixel (0, 0) is the world point ``origin`` [m].

    ``view``: (lo, hi) world box [m]; dashes with their mid-point outside are skipped (culling
    only: what lies in the image is drawn the same). None draws every dash.
    """
    g = geometry
    surfaces = [to_pixels(p, origin, scaling) for p in g.surfaces]
    cv2.fillPoly(labels, surfaces, CLASS_ID["road"], lineType=cv2.LINE_8, shift=_SHIFT)
    marking = CLASS_ID["lane_marking"]
    if g.lines:
        lines = [to_pixels(p, origin, scaling) for p in g.lines]
        cv2.polylines(labels, lines, False, marking, line_px, cv2.LINE_8, _SHIFT)
    dashes = g.dashes
    if len(dashes) and view is not None:
        lo, hi = view
        dashes = dashes[np.all((g.dash_mid > lo) & (g.dash_mid < hi), axis=1)]
    if len(dashes):
        points = to_pixels(dashes, origin, scaling)
        cv2.polylines(labels, list(points), False, marking, line_px, cv2.LINE_8, _SHIFT)


class Rasterizer:
    """Draws label maps of size ``(height, width)`` at ``scaling`` [px/m] around the ego."""

    def __init__(
        self, height: int, width: int, scaling: float, centering: tuple[float, float]
    ) -> None:
        self.height, self.width = height, width
        self.scaling = scaling  # [px/m]
        self.centering = np.asarray(centering, dtype=float)
        self.line_px = marking_px(scaling)  # [px]
        self._labels = np.zeros((height, width), np.uint8)
        self.geometry: RoadGeometry | None = None

    def set_road(self, lanes: list[AbstractLane]) -> None:
        self.geometry = road_geometry(lanes)

    def origin(self, ego_position: np.ndarray) -> np.ndarray:
        """World position [m] of the frame's top-left corner (highway-env's viewer origin)."""
        size = np.array([self.width, self.height], dtype=float)
        return np.asarray(ego_position, float) - self.centering * size / self.scaling

    def to_pixels(self, points: np.ndarray, origin: np.ndarray) -> np.ndarray:
        """World points [m] (..., 2) to fixed-point pixel coordinates (..., 2) int32."""
        return to_pixels(points, origin, self.scaling)

    def draw(
        self,
        ego_position: np.ndarray,
        others: np.ndarray,
        ego: np.ndarray,
    ) -> np.ndarray:
        """Label map (H, W) uint8 for the ego at ``ego_position``.

        ``others``: (N, 4, 2) corners [m] of the other vehicles; ``ego``: (4, 2) ego corners [m].
        The returned array is reused by the next call: copy it to keep it.
        """
        assert self.geometry is not None, "call set_road() after each reset"
        labels = self._labels
        labels.fill(CLASS_ID["off_road"])
        origin = self.origin(ego_position)
        view = np.array([self.width, self.height]) / self.scaling  # [m]
        lo, hi = origin - 5.0, origin + view + 5.0  # culling box with a margin [m]
        draw_road(labels, self.geometry, origin, self.scaling, self.line_px, (lo, hi))
        if len(others):
            centre = others.mean(axis=1)
            inside = np.all((centre > lo) & (centre < hi), axis=1)
            if inside.any():
                boxes = self.to_pixels(others[inside], origin)
                cv2.fillPoly(labels, list(boxes), CLASS_ID["vehicle"], cv2.LINE_8, _SHIFT)
        cv2.fillPoly(labels, [self.to_pixels(ego, origin)], CLASS_ID["ego"], cv2.LINE_8, _SHIFT)
        return labels


def box_mask(rasterizer: Rasterizer, ego_position: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """(H, W) bool mask of the oriented box ``corners`` (4, 2) [m] in the frame around the ego."""
    mask = np.zeros((rasterizer.height, rasterizer.width), np.uint8)
    points = rasterizer.to_pixels(corners, rasterizer.origin(ego_position))
    cv2.fillPoly(mask, [points], 1, cv2.LINE_8, _SHIFT)
    return mask.astype(bool)


def colorize(labels: np.ndarray) -> np.ndarray:
    """Camera frame (H, W, 3) uint8 from a label map (H, W)."""
    return PALETTE[labels]
