"""Batched camera raster for any static road (lanes in any direction: roundabout, intersection).

:class:`MapRasterizer` draws the same (B, H, W) uint8 label maps as the highway-env backend's
OpenCV camera (:mod:`envs.camera`) without tracing lanes per frame:

- once, at construction, the static road (off road, lane surfaces, markings) is drawn in the
  world frame by the backend's own code (:func:`envs.camera.draw_road`), at the
  camera's scale, once per sub-pixel phase (below);
- each frame is an axis-aligned window of one of those drawings, with the camera's viewer
  transform (pixel ``(col, row)`` is the world point ``origin + (col, row) / scaling``,
  ``origin = ego - centering * (W, H) / scaling``): gathers of cost O(B H W) whatever the number
  of lanes, on any device;
- vehicle and ego boxes go on top (:func:`envs.batched.render.draw_boxes` with cv2's own
  polygon rules, ``exact=True``: rotated boxes are the OpenCV camera's too).

Sub-pixel phases: cv2's pixels are not those of a finer drawing sampled at pixel centres (a
polygon grows by half a *camera* pixel, a one-pixel line takes one pixel per column, vertices
snap to rows), so the map is not one fine drawing but ``factor ** 2`` camera-scale drawings,
phase ``(i, j)`` shifted by ``(j, i) / factor`` px: a frame reads the phase nearest to its
origin's sub-pixel offset, so it is the OpenCV camera's frame for an origin moved by at most
``1 / (2 factor)`` px (same memory as a ``factor``-times-finer map). ``factor`` divides 16 and
the drawings' origin lies on the lattice of cv2's fixed point (1/16 px), so with 16 phases a
vertex whose world coordinates lie on that lattice (every straight lane at 1 or 2 px/m) rounds
exactly as in the camera; other vertices may move by 1/16 px, which flips a pixel now and then
(as the camera itself does for an ego moved by 1/32 px: see tests/test_batched_raster_map.py).

Memory: the drawings are stored as TILE x TILE tiles; tiles of one class (most of a roundabout's
or intersection's bounding box is off road) are one shared tile each. ``factor`` is the largest
divisor of 16 up to ``supersample`` whose tiles fit in ``max_bytes``.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from highway_env.road.lane import AbstractLane

from envs.batched.render import box_patch, draw_boxes
from envs.batched.sim import Traffic
from envs.camera import RoadGeometry, draw_road, road_geometry
from envs.contract import CLASS_ID, PALETTE
from envs.scenarios import SUBPIXEL_BITS, marking_px

SUPERSAMPLE = 16  # sub-pixel phases per axis: cv2's fixed point (1/16 px)
MAX_MAP_BYTES = 64 * 2**20  # [B] cap on the stored map (tiles and tile table)
TILE = 16  # [px] side of the map's square tiles


class MapRasterizer:
    """Label maps (B, H, W) uint8 at ``scaling`` [px/m] around slot 0 (the ego), sampled from
    a world-frame label map of the static road ``lanes`` (highway-env's ``lanes_list()``).

    ``supersample``: sub-pixel phases per axis (a divisor of 16), lowered until the map fits in
    ``max_bytes`` [B] (:attr:`factor` is the one used); a ``ValueError`` says so when even one
    phase does not fit. ``device``: where the map lives and frames are drawn.
    """

    def __init__(
        self,
        lanes: list[AbstractLane],
        height: int,
        width: int,
        scaling: float,
        centering: tuple[float, float],
        device: torch.device | str = "cpu",
        supersample: int = SUPERSAMPLE,
        max_bytes: int = MAX_MAP_BYTES,
    ) -> None:
        assert supersample in (1, 2, 4, 8, 16), (
            f"supersample={supersample}: use 1, 2, 4, 8 or 16 (phases on cv2's 1/16 px lattice)"
        )
        self.height, self.width = height, width
        self.scaling = scaling  # [px/m]
        self.centering = centering
        device = torch.device(device)

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
        table, tiles = _tiled_phases(geometry, (tiles_h, tiles_w), lo, scaling, self.factor)
        self.map_origin = torch.tensor(lo, dtype=torch.float64, device=device)  # (2,) [m]
        self.table_shape = table.shape  # (f, f, tiles_h, tiles_w)
        self.table = torch.as_tensor(table, device=device).reshape(-1)  # int32 tile ids
        self.tiles = torch.as_tensor(tiles, device=device).reshape(-1, TILE, TILE)  # uint8
        self.palette = torch.as_tensor(PALETTE, device=device)
        self.patch = box_patch(scaling, device)  # (P, 2)
        self.cols = torch.arange(width, device=device)
        self.rows = torch.arange(height, device=device)
        size = torch.tensor([width, height], device=device, dtype=torch.float32)
        centre = torch.tensor(centering, device=device, dtype=torch.float32)
        self.ego_offset = centre * size / scaling  # [m] from the top-left corner to the ego
        self.tile_cols = torch.arange(-(-width // TILE) + 1, device=device)
        self.tile_rows = torch.arange(-(-height // TILE) + 1, device=device)

    @property
    def nbytes(self) -> int:
        """[B] memory of the stored map."""
        return self.table.numel() * self.table.element_size() + self.tiles.numel()

    def origin(self, t: Traffic) -> torch.Tensor:
        """(B, 2) world position [m] of the frame's top-left pixel."""
        ego = torch.stack([t.x[:, 0], t.y[:, 0]], -1)
        return ego - self.ego_offset

    def draw(self, t: Traffic) -> torch.Tensor:
        """(B, H, W) uint8 label map of every environment."""
        h, w, f = self.height, self.width, self.factor
        _, _, tiles_h, tiles_w = self.table_shape
        origin = self.origin(t)  # (B, 2)
        # the frame's origin in 1 / f px steps (float64: the highway is 10^4 - 10^5 px long),
        # split into the nearest phase and the whole pixels of that phase's drawing
        steps = torch.round((origin.double() - self.map_origin) * (self.scaling * f)).long()
        phase, start = steps % f, torch.div(steps, f, rounding_mode="floor")  # (B, 2) (x, y)
        # the tiles under the frame, (B, TH, TW) with TH = ceil(H / TILE) + 1 (outside the
        # drawing: the uniform off-road tile), gathered into a (B, TH TILE, TW TILE) block
        first = torch.div(start, TILE, rounding_mode="floor")  # (B, 2) tile of pixel (0, 0)
        ty = first[:, 1:] + self.tile_rows  # (B, TH)
        tx = first[:, :1] + self.tile_cols  # (B, TW)
        row_ok = (ty >= 0) & (ty < tiles_h)
        col_ok = (tx >= 0) & (tx < tiles_w)
        table_row = (phase[:, 1:] * f + phase[:, :1]) * tiles_h + ty.clamp(0, tiles_h - 1)
        cell = table_row[:, :, None] * tiles_w + tx.clamp(0, tiles_w - 1)[:, None, :]
        tile = torch.where(row_ok[:, :, None] & col_ok[:, None, :], self.table[cell], 0)
        b, th, tw = tile.shape
        block = self.tiles[tile.long()]  # (B, TH, TW, TILE, TILE)
        block = block.transpose(2, 3).reshape(b, th * TILE, tw * TILE)
        # the frame: rows then columns from the block
        skip = start - first * TILE  # (B, 2) [px] of the block before the frame
        rows = (skip[:, 1:] + self.rows)[:, :, None].expand(b, h, tw * TILE)
        block = block.gather(1, rows)  # (B, H, TW TILE)
        cols = (skip[:, :1] + self.cols)[:, None, :].expand(b, h, w)
        labels = block.gather(2, cols)  # (B, H, W) uint8

        # vehicles then the ego, scattered from pixel patches
        flat = torch.cat([labels.reshape(-1), labels.new_zeros(1)])  # last cell: a sink
        draw_boxes(flat, t, origin, self.patch, (h, w), self.scaling, exact=True)
        return flat[:-1].reshape(labels.shape)

    def colorize(self, labels: torch.Tensor) -> torch.Tensor:
        """(B, H, W, 3) uint8 camera frames from label maps."""
        flat = self.palette.index_select(0, labels.reshape(-1).int())
        return flat.reshape(*labels.shape, 3)


_ONE = 1 << SUBPIXEL_BITS  # cv2's fixed-point steps per pixel (vertices are rounded to them)
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
