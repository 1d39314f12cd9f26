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

import math
from dataclasses import dataclass

import cv2
import numpy as np
from highway_env.road.lane import AbstractLane, LineType, StraightLane

from drive_attention.envs.contract import CLASS_ID, PALETTE
from drive_attention.envs.observation import CameraGeometry
from drive_attention.envs.scenarios import (
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
        # vehicles are filled on a canvas one box larger on every side, then cropped: a box cut
        # by the frame's edge gets the pixels of its whole polygon (cv2 clips a polygon to the
        # image before filling it, which moves pixels along that edge), as the batched camera
        self.pad = math.ceil(0.5 * math.hypot(5.0, 2.0) * scaling) + 2  # [px]
        self._canvas = np.zeros((height + 2 * self.pad, width + 2 * self.pad), np.uint8)
        self.geometry: RoadGeometry | None = None
        self.road_map: RoadMap | None = None  # roads not along +x: their road layer's map
        self._road_key: tuple | None = None

    @classmethod
    def for_camera(cls, geometry: CameraGeometry) -> Rasterizer:
        """The rasterizer of a top-down camera's frame, scale and ego place."""
        assert geometry.px_per_m is not None and geometry.centering is not None, (
            "a perspective camera has no top-down raster"
        )
        return cls(geometry.height, geometry.width, geometry.px_per_m, geometry.centering)

    def set_road(self, lanes: list[AbstractLane]) -> None:
        """The road of the next frames (after each reset: highway-env builds it anew), drawn
        as :func:`road_map` says; a map is made once for as long as the road stays the same."""
        self.geometry = road_geometry(lanes)
        key = tuple(
            (type(lane).__name__, *np.round(lane.position(0.0, 0.0), 9), lane.length, lane.width)
            for lane in lanes
        )
        if key != self._road_key:
            self.road_map, self._road_key = road_map(lanes, self.scaling), key

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
        if self.road_map is not None:
            labels[:] = self.road_map.crop(origin, self.height, self.width)
        else:
            draw_road(labels, self.geometry, origin, self.scaling, self.line_px, (lo, hi))
        p, canvas = self.pad, self._canvas
        canvas[p : p + self.height, p : p + self.width] = labels
        shift = p * _ONE  # the canvas's pixel (p, p) is the frame's (0, 0)
        if len(others):
            centre = others.mean(axis=1)
            inside = np.all((centre > lo) & (centre < hi), axis=1)
            if inside.any():
                boxes = self.to_pixels(others[inside], origin) + shift
                cv2.fillPoly(canvas, list(boxes), CLASS_ID["vehicle"], cv2.LINE_8, _SHIFT)
        ego_box = self.to_pixels(ego, origin) + shift
        cv2.fillPoly(canvas, [ego_box], CLASS_ID["ego"], cv2.LINE_8, _SHIFT)
        labels[:] = canvas[p : p + self.height, p : p + self.width]
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


# ------------------------------------------------------------------ roads in any direction
SUPERSAMPLE = 16  # sub-pixel phases per axis: cv2's fixed point (1/16 px)
MAX_MAP_BYTES = 64 * 2**20  # [B] cap on the stored map (tiles and tile table)
TILE = 16  # [px] side of the map's square tiles


def along_x(lanes: list[AbstractLane]) -> bool:
    """Whether every lane is a straight or sine lane along +x (highway, merge)."""
    return all(
        isinstance(lane, StraightLane) and np.allclose(lane.direction, [1.0, 0.0]) for lane in lanes
    )


def road_map(lanes: list[AbstractLane], scaling: float) -> RoadMap | None:
    """How both embedded backends draw a road's layer at ``scaling`` [px/m]: None, per frame,
    for straight lanes along +x (the highway: its frames are exact in both); else cropped from
    a :class:`RoadMap` (roundabout, intersection, and the merge's curved ramp), or per frame
    for a road along +x whose map would not fit in memory (the batched camera then traces its
    curves, to within a pixel here and there)."""
    if along_x(lanes) and all(type(lane) is StraightLane for lane in lanes):
        return None
    try:
        return RoadMap(lanes, scaling)
    except ValueError:
        if along_x(lanes):
            return None
        raise


class RoadMap:
    """A static road (off road, lane surfaces, markings) drawn once, for frames cropped from it.

    Roads with lanes in every direction (roundabout, intersection) would cost many polygons per
    frame; both embedded backends crop their frames' road layer from this map instead, so their
    cameras agree pixel for pixel (the highway-env backend with numpy, :meth:`crop`; the batched
    one with torch on any device, :class:`envs.batched.raster_map.MapRasterizer`, from the same
    arrays).

    The map is ``factor ** 2`` drawings at the camera's scale by :func:`draw_road`, drawing
    ``(i, j)`` shifted by ``(j, i) / factor`` px: a frame copies a window of the drawing nearest
    to its origin's sub-pixel offset. cv2's pixels are not those of a finer drawing sampled at
    pixel centres (a polygon grows by half a camera pixel, a one-pixel line takes one pixel per
    column), hence drawings per phase rather than one fine drawing. Against the frame cv2 would
    draw at the exact origin, a vertex may move by up to 1/16 px, which flips a pixel now and
    then (at 64 px over 64 m, 99.5% of pixels or more agree; so does cv2 with itself for an ego
    moved by 1/32 px). ``factor`` divides 16 and the drawings' origin lies on cv2's fixed-point
    lattice (1/16 px), so straight lanes on that lattice round exactly as in a cv2 frame.

    Memory: the drawings are stored as TILE x TILE tiles; tiles of one class (most of a
    roundabout's or intersection's bounding box is off road) are one shared tile each.
    ``factor`` is the largest divisor of 16 up to ``supersample`` whose tiles fit in
    ``max_bytes``; a ``ValueError`` says what to change when even one drawing does not fit.
    """

    def __init__(
        self,
        lanes: list[AbstractLane],
        scaling: float,
        supersample: int = SUPERSAMPLE,
        max_bytes: int = MAX_MAP_BYTES,
    ) -> None:
        assert supersample in (1, 2, 4, 8, 16), (
            f"supersample={supersample}: use 1, 2, 4, 8 or 16 (phases on cv2's 1/16 px lattice)"
        )
        self.scaling = scaling  # [px/m]
        geometry = road_geometry(lanes)
        points = np.concatenate(
            [*geometry.surfaces, *geometry.lines, geometry.dashes.reshape(-1, 2)]
        )
        margin = (marking_px(scaling) + 3) / scaling  # [m] room for markings, an off-road ring
        # [m] world position of pixel (0, 0) of phase (0, 0), on the lattice of cv2's fixed point
        lo = np.floor((points.min(0) - margin) * scaling * _ONE) / (scaling * _ONE)
        extent = (points.max(0) + margin - lo) * scaling  # (W, H) [px]
        tiles_w, tiles_h = np.ceil(extent / TILE).astype(int)  # tiles per phase drawing
        self.factor = _factor(
            _draw(geometry, (tiles_h * TILE, tiles_w * TILE), lo, scaling),
            supersample,
            max_bytes,
        )
        self.origin = lo  # (2,) [m]
        # (factor, factor, tiles_h, tiles_w) int32 tile ids; (T, TILE * TILE) uint8 tiles
        self.table, self.tiles = _tiled_phases(
            geometry, (tiles_h, tiles_w), lo, scaling, self.factor
        )

    @property
    def nbytes(self) -> int:
        """[B] memory of the stored map."""
        return self.table.nbytes + self.tiles.nbytes

    def locate(self, origin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The drawing (phase, (2,) x, y) and its pixel (start, (2,) x, y) at a frame's
        ``origin`` [m]: the frame's origin in 1 / factor px steps, rounded (half to even)."""
        f = self.factor
        steps = np.round((np.asarray(origin, np.float64) - self.origin) * (self.scaling * f))
        steps = steps.astype(np.int64)
        return steps % f, steps // f

    def crop(self, origin: np.ndarray, height: int, width: int) -> np.ndarray:
        """(H, W) uint8 road labels of the frame whose pixel (0, 0) is the world point
        ``origin`` [m] (off road outside the map)."""
        phase, start = self.locate(origin)
        _, _, tiles_h, tiles_w = self.table.shape
        rows = start[1] + np.arange(height)
        cols = start[0] + np.arange(width)
        tr, tc = rows // TILE, cols // TILE
        inside = ((tr >= 0) & (tr < tiles_h))[:, None] & ((tc >= 0) & (tc < tiles_w))[None, :]
        table = self.table[phase[1], phase[0]]
        tile = table[tr.clip(0, tiles_h - 1)[:, None], tc.clip(0, tiles_w - 1)[None, :]]
        tile = np.where(inside, tile, CLASS_ID["off_road"])  # tile c < 3: uniformly class c
        return self.tiles[tile, (rows % TILE)[:, None] * TILE + (cols % TILE)[None, :]]


_CLASSES = 3  # the road map's classes: off road, road, marking (tiles 0..2 are uniform ones)
assert (CLASS_ID["off_road"], CLASS_ID["road"], CLASS_ID["lane_marking"]) == (0, 1, 2)


def _draw(
    geometry: RoadGeometry, size: tuple[int, int], origin: np.ndarray, scaling: float
) -> np.ndarray:
    """(H, W) uint8 labels of the road drawn by the camera's code, pixel (0, 0) at ``origin``."""
    labels = np.full(size, CLASS_ID["off_road"], np.uint8)
    draw_road(labels, geometry, origin, scaling, marking_px(scaling))
    return labels


def _tiles(labels: np.ndarray) -> np.ndarray:
    """(H / TILE, W / TILE, TILE * TILE) view of (H, W) labels as tiles."""
    h, w = labels.shape
    return (
        labels.reshape(h // TILE, TILE, w // TILE, TILE)
        .swapaxes(1, 2)
        .reshape(h // TILE, w // TILE, TILE * TILE)
    )


def _tiled_phases(
    geometry: RoadGeometry,
    shape: tuple[int, int],
    origin: np.ndarray,
    scaling: float,
    factor: int,
) -> tuple[np.ndarray, np.ndarray]:
    """The road drawn at every sub-pixel phase (see the module docstring), stored as tiles.

    ``shape``: (tiles_h, tiles_w) per drawing; ``origin``: world position [m] of pixel (0, 0)
    of phase (0, 0). Returns the tile table (factor, factor, tiles_h, tiles_w) int32 (phase
    ``(i, j)`` is drawn ``(j, i) / factor`` px right and down) and the tiles (T, TILE * TILE)
    uint8, of which tile ``c < 3`` is uniformly class ``c`` and stands for every such tile.
    """
    tiles_h, tiles_w = shape
    table = np.empty((factor, factor, tiles_h, tiles_w), np.int32)
    store = [np.repeat(np.arange(_CLASSES, dtype=np.uint8)[:, None], TILE * TILE, 1)]
    count = _CLASSES
    for i in range(factor):
        for j in range(factor):
            phase = origin + np.array([j, i]) / (factor * scaling)  # [m]
            tiles = _tiles(_draw(geometry, (tiles_h * TILE, tiles_w * TILE), phase, scaling))
            uniform = tiles.min(-1) == tiles.max(-1)  # (tiles_h, tiles_w)
            mixed = ~uniform
            table[i, j] = np.where(uniform, tiles[..., 0], 0)
            table[i, j][mixed] = count + np.arange(mixed.sum())
            store.append(tiles[mixed])
            count += int(mixed.sum())
    return table, np.concatenate(store)


def _factor(first: np.ndarray, supersample: int, max_bytes: int) -> int:
    """The most phases per axis, up to ``supersample``, whose tiles fit in ``max_bytes``.

    ``first``: phase (0, 0), (H, W) labels; a tile can be mixed at another phase (shifted by
    less than a pixel) only if it holds a pixel whose 3 x 3 neighbourhood is mixed here.
    """
    kernel = np.ones((3, 3), np.uint8)
    edge = cv2.dilate(first, kernel) != cv2.erode(first, kernel)
    mixed = int(_tiles(edge.view(np.uint8)).max(-1).sum())  # tiles per phase, at most
    cells = edge.size // TILE**2
    for factor in (f for f in (16, 8, 4, 2, 1) if f <= supersample):
        nbytes = factor**2 * (mixed * TILE**2 + cells * 4) + _CLASSES * TILE**2
        if nbytes <= max_bytes:
            return factor
    h, w = first.shape
    raise ValueError(
        f"the road's label map ({w} x {h} px at one phase, {nbytes / 2**20:.0f} MiB in tiles) "
        f"does not fit in max_bytes={max_bytes / 2**20:.0f} MiB: lower camera_size, raise "
        "view_m, or pass a larger max_bytes"
    )
