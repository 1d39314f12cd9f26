"""Batched camera raster for any static road (lanes in any direction: roundabout, intersection).

:class:`MapRasterizer` draws (B, H, W) uint8 label maps on any device: the road layer is cropped
from the :class:`envs.camera.RoadMap` of the road, the same map and the same lookup as the
highway-env backend's camera for such roads, so both backends' frames agree pixel for pixel
(the ego's position aside, float32 here); the vehicle and ego boxes go on top
(:func:`envs.batched.render.draw_boxes` with cv2's own polygon rules, ``exact=True``). Each
frame is gathers of cost O(B H W), whatever the number of lanes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from highway_env.road.lane import AbstractLane

from drive_attention.envs.batched.render import box_patch, draw_boxes
from drive_attention.envs.batched.sim import Traffic
from drive_attention.envs.camera import MAX_MAP_BYTES, SUPERSAMPLE, TILE, RoadMap
from drive_attention.envs.contract import CAMERA_PALETTE


class MapRasterizer:
    """Label maps (B, H, W) uint8 at ``scaling`` [px/m] around slot 0 (the ego), the road
    cropped from ``road``: a :class:`envs.camera.RoadMap` at that scale, or the lanes to make
    one of (highway-env's ``lanes_list()``).

    ``supersample``: sub-pixel phases per axis (a divisor of 16), lowered until the map fits in
    ``max_bytes`` [B] (:attr:`factor` is the one used); a ``ValueError`` says so when even one
    phase does not fit. ``device``: where the map lives and frames are drawn.
    """

    def __init__(
        self,
        road: RoadMap | list[AbstractLane],
        height: int,
        width: int,
        scaling: float,
        centering: tuple[float, float],
        device: torch.device | str = "cpu",
        supersample: int = SUPERSAMPLE,
        max_bytes: int = MAX_MAP_BYTES,
    ) -> None:
        self.height, self.width = height, width
        self.scaling = scaling  # [px/m]
        self.centering = centering
        device = torch.device(device)

        if not isinstance(road, RoadMap):  # lanes: their map
            road = RoadMap(road, scaling, supersample, max_bytes)
        assert road.scaling == scaling, "the map is drawn at another scale than the camera's"
        self.factor = road.factor
        self.map_origin = torch.tensor(road.origin, dtype=torch.float64, device=device)  # [m]
        self.table_shape = road.table.shape  # (f, f, tiles_h, tiles_w)
        self.table = torch.as_tensor(road.table, device=device).reshape(-1)  # int32 tile ids
        self.tiles = torch.as_tensor(road.tiles, device=device).reshape(-1, TILE, TILE)
        self.palette = torch.as_tensor(CAMERA_PALETTE, device=device)
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

    def draw(self, t: Traffic, overlay: Callable[..., None] | None = None) -> torch.Tensor:
        """(B, H, W) uint8 label map of every environment; ``overlay(labels, origin)`` draws
        into the road layer before the vehicles go on top (the lights and pedestrians)."""
        h, w, f = self.height, self.width, self.factor
        _, _, tiles_h, tiles_w = self.table_shape
        origin = self.origin(t)  # (B, 2)
        # the frame's origin in 1 / f px steps (float64: the highway is 10^4 - 10^5 px long),
        # split into the nearest phase and the whole pixels of that phase's drawing (as
        # RoadMap.locate)
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
        if overlay is not None:
            overlay(labels, origin)

        # vehicles then the ego, scattered from pixel patches
        flat = torch.cat([labels.reshape(-1), labels.new_zeros(1)])  # last cell: a sink
        draw_boxes(flat, t, origin, self.patch, (h, w), self.scaling, exact=True)
        return flat[:-1].reshape(labels.shape)

    def colorize(self, labels: torch.Tensor) -> torch.Tensor:
        """(B, H, W, 3) uint8 camera frames from label maps."""
        flat = self.palette.index_select(0, labels.reshape(-1).int())
        return flat.reshape(*labels.shape, 3)
