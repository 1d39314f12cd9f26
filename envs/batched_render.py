"""Batched camera raster and lidar in torch, matching :mod:`envs.raster` and highway-env's lidar.

Raster: the (B, H, W) label map is drawn class by class like :class:`envs.raster.Rasterizer`
(off road, lane surfaces, continuous and dashed markings, vehicles, ego last) with the same
viewer transform: pixel ``(col, row)`` is the world point ``origin + (col, row) / scaling`` with
``origin = ego - centering * (W, H) / scaling``. Lanes and markings are tested per pixel (they
are separable in rows and columns); vehicle boxes are tested on a small pixel patch around each
vehicle and scattered into the map, so the cost does not grow with the frame size times N.

Lidar: highway-env's ``LidarObservation.trace`` semantics: per ray, the nearest exact
ray-rectangle intersection within range, or (for the ray sector holding an obstacle's centre)
the centre distance minus half the obstacle width; the closing speed is the relative velocity
projected on the ray.
"""

from __future__ import annotations

import math

import torch

from envs.batched_road import STRIPES, LaneTable
from envs.batched_sim import EGO, IDM, Traffic
from envs.contract import CLASS_ID, PALETTE


class TorchRasterizer:
    """Label maps (B, H, W) uint8 at ``scaling`` [px/m] around slot 0 (the ego)."""

    def __init__(
        self,
        road: LaneTable,
        height: int,
        width: int,
        scaling: float,
        centering: tuple[float, float],
    ) -> None:
        self.road = road
        self.height, self.width = height, width
        self.scaling = scaling  # [px/m]
        self.centering = centering
        self.line_px = max(1, round(0.3 * scaling))  # marking width [px], as envs.raster
        device = road.x0.device
        self.cols = torch.arange(width, device=device, dtype=torch.float32)
        self.rows = torch.arange(height, device=device, dtype=torch.float32)
        self.palette = torch.as_tensor(PALETTE, device=device)
        half = math.ceil(0.5 * math.hypot(5.0, 2.0) * scaling) + 1  # patch half size [px]
        offsets = torch.arange(-half, half + 1, device=device)
        self.patch = torch.stack(torch.meshgrid(offsets, offsets, indexing="xy"), -1).reshape(-1, 2)

    def origin(self, t: Traffic) -> torch.Tensor:
        """(B, 2) world position [m] of the frame's top-left pixel."""
        size = torch.tensor([self.width, self.height], device=t.x.device, dtype=torch.float32)
        centre = torch.tensor(self.centering, device=t.x.device, dtype=torch.float32)
        ego = torch.stack([t.x[:, 0], t.y[:, 0]], -1)
        return ego - centre * size / self.scaling

    def draw(self, t: Traffic) -> torch.Tensor:
        """(B, H, W) uint8 label map of every environment."""
        road, sc = self.road, self.scaling
        origin = self.origin(t)
        ox, oy = origin[:, 0:1], origin[:, 1:2]  # (B, 1)
        wx = ox + self.cols / sc  # (B, W) world x of each column [m]

        # Pixel rules of cv2 with fixed-point vertices (envs.raster): vertices are rounded to
        # 1/16 px; fillPoly fills pixel p when lo - 1/2 < p <= hi + 1/2 along each axis of an
        # axis-aligned polygon, a one-pixel line at y takes the row floor(y + 1/2).

        # lane surfaces (traced by their end points, as envs.raster)
        x0, x1, ya, yb, hw = road.surfaces.T  # (L,)
        u = (wx[:, None, :] - x0[:, None]) / (x1 - x0)[:, None]  # (B, L, W)
        left = _q((x0[None] - ox) * sc)[..., None]  # (B, L, 1) [px]
        right = _q((x1[None] - ox) * sc)[..., None]
        inside_x = (self.cols > left - 0.5) & (self.cols <= right + 0.5)  # (B, L, W)
        yc = ya[:, None] + (yb - ya)[:, None] * u.clamp(0, 1)  # (B, L, W) [m]
        top = _q((yc - hw[:, None] - oy[..., None]) * sc)[:, :, None, :]  # (B, L, 1, W) [px]
        bottom = _q((yc + hw[:, None] - oy[..., None]) * sc)[:, :, None, :]
        rows = self.rows[:, None]  # (H, 1)
        on_lane = (rows > top - 0.5) & (rows <= bottom + 0.5)  # (B, L, H, W)
        on_road = (on_lane & inside_x[:, :, None, :]).any(1)  # (B, H, W)
        labels = torch.where(on_road, CLASS_ID["road"], CLASS_ID["off_road"]).to(torch.uint8)

        # markings: rows of the line, columns within its (dash) extent
        mx0, mx1, mya, myb, dashed = road.markings.T  # (M,)
        col_px = self.cols  # (W,)
        start_px = _round(_q((mx0[None] - ox) * sc))  # (B, M)
        end_px = _round(_q((mx1[None] - ox) * sc))
        in_cols = (col_px >= start_px[..., None]) & (col_px <= end_px[..., None])  # (B, M, W)
        s = wx[:, None, :] - mx0[:, None]  # (B, M, W) along the line [m]
        period, dash = STRIPES
        k = torch.floor(s / period)
        in_dash = torch.zeros_like(in_cols)
        for kk in (k - 1, k, k + 1):
            a = _round(_q((mx0[:, None] + kk * period - ox[..., None]) * sc))
            b_end = torch.minimum(kk * period + dash, (mx1 - mx0)[:, None])
            b = _round(_q((mx0[:, None] + b_end - ox[..., None]) * sc))
            in_dash = in_dash | ((col_px >= a) & (col_px <= b) & (kk >= 0))
        in_cols = in_cols & ((dashed[:, None] == 0) | in_dash)
        uy = (wx[:, None, :] - mx0[:, None]) / (mx1 - mx0)[:, None]
        line_y = _q((mya[:, None] + (myb - mya)[:, None] * uy - oy[..., None]) * sc)  # [px]
        d = self.rows[None, None, :, None] - line_y[:, :, None, :]  # (B, M, H, W)
        half = self.line_px / 2
        near = (d > -half) & (d <= half)
        marking = (near & in_cols[:, :, None, :]).any(1)  # (B, H, W)
        labels = torch.where(marking, CLASS_ID["lane_marking"], labels).to(torch.uint8)

        # vehicles then the ego, scattered from pixel patches
        flat = torch.cat([labels.reshape(-1), labels.new_zeros(1)])  # last cell: a sink
        self._boxes(flat, t, origin, t.kind == IDM, CLASS_ID["vehicle"])
        self._boxes(flat, t, origin, t.kind == EGO, CLASS_ID["ego"])
        return flat[:-1].reshape(labels.shape)

    def _boxes(
        self, flat: torch.Tensor, t: Traffic, origin: torch.Tensor, mask: torch.Tensor, label: int
    ) -> None:
        b = t.x.shape[0]
        h, w, sc = self.height, self.width, self.scaling
        cx = _q((t.x - origin[:, :1]) * sc)  # (B, N) box centre [px]
        cy = _q((t.y - origin[:, 1:]) * sc)
        px = torch.round(cx)[..., None] + self.patch[:, 0]  # (B, N, P) patch pixels
        py = torch.round(cy)[..., None] + self.patch[:, 1]
        dx, dy = px - cx[..., None], py - cy[..., None]  # [px]
        c, s = torch.cos(t.heading)[..., None], torch.sin(t.heading)[..., None]
        along = dx * c + dy * s
        across = -dx * s + dy * c
        hl = t.length[..., None] * sc / 2 + 0.5  # half extents grown by cv2's half pixel [px]
        hw = t.width[..., None] * sc / 2 + 0.5
        inside = (along > -hl) & (along <= hl) & (across > -hw) & (across <= hw)
        inside = inside & (px >= 0) & (px < w) & (py >= 0) & (py < h) & mask[..., None]
        env = torch.arange(b, device=t.x.device)[:, None, None]
        index = env * (h * w) + py.long() * w + px.long()
        index = torch.where(inside, index, flat.numel() - 1)
        flat.index_fill_(0, index.reshape(-1), label)
        flat[-1] = 0

    def colorize(self, labels: torch.Tensor) -> torch.Tensor:
        """(B, H, W, 3) uint8 camera frames from label maps."""
        flat = self.palette.index_select(0, labels.reshape(-1).int())
        return flat.reshape(*labels.shape, 3)


def _q(v: torch.Tensor) -> torch.Tensor:
    """Pixel coordinates rounded to cv2's 1/16 px fixed point (as envs.raster.to_pixels)."""
    return torch.round(v * 16) / 16


def _round(v: torch.Tensor) -> torch.Tensor:
    """cv2's rounding of a fixed-point coordinate to a pixel: half up."""
    return torch.floor(v + 0.5)


def lidar(t: Traffic, n_rays: int, max_range: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Distances [m] and relative speeds along the ray [m/s] around the ego, (B, n_rays) each.

    Ray ``k`` points at world angle ``k * 2 pi / n_rays``; no hit reads ``max_range``.
    """
    device = t.x.device
    angle = 2 * math.pi / n_rays
    theta = torch.arange(n_rays, device=device, dtype=torch.float32) * angle
    ray = torch.stack([torch.cos(theta), torch.sin(theta)], -1)  # (K, 2)
    ox, oy = t.x[:, :1], t.y[:, :1]  # (B, 1)
    dxc, dyc = t.x - ox, t.y - oy  # (B, N) centre offsets
    dist_c = torch.hypot(dxc, dyc)
    valid = t.alive & (dist_c <= max_range)
    valid[:, 0] = False
    c, s = torch.cos(t.heading), torch.sin(t.heading)  # (B, N)
    # ray origin and direction in each box's frame (along, across)
    ru, rv = -(dxc * c + dyc * s), -(-dxc * s + dyc * c)  # (B, N)
    du = (ray[:, 0] * c[..., None] + ray[:, 1] * s[..., None]) * max_range  # (B, N, K)
    dv = (-ray[:, 0] * s[..., None] + ray[:, 1] * c[..., None]) * max_range

    def slab(r: torch.Tensor, d: torch.Tensor, half: torch.Tensor) -> tuple:
        parallel = d.abs() < 1e-9
        safe = torch.where(parallel, 1.0, d)
        t1 = (-half[..., None] - r[..., None]) / safe
        t2 = (half[..., None] - r[..., None]) / safe
        lo, hi = torch.minimum(t1, t2), torch.maximum(t1, t2)
        inside = (r.abs() <= half)[..., None]
        inf = torch.full_like(lo, float("inf"))
        lo = torch.where(parallel, torch.where(inside, -inf, inf), lo)
        hi = torch.where(parallel, torch.where(inside, inf, -inf), hi)
        return lo, hi

    lo_u, hi_u = slab(ru, du, t.length / 2)
    lo_v, hi_v = slab(rv, dv, t.width / 2)
    enter, leave = torch.maximum(lo_u, lo_v), torch.minimum(hi_u, hi_v)
    hit = (enter <= leave) & (lo_u <= 1) & (hi_u >= 0) & (lo_v <= 1) & (hi_v >= 0)
    d_ray = torch.where(hit, enter * max_range, float("inf"))  # (B, N, K)
    sector = torch.floor((torch.atan2(dyc, dxc) + angle / 2) / angle).long() % n_rays  # (B, N)
    centre = torch.nn.functional.one_hot(sector, n_rays).bool()
    d_centre = torch.where(centre, (dist_c - t.width / 2)[..., None], float("inf"))
    d = torch.where(valid[..., None], torch.minimum(d_ray, d_centre), float("inf"))
    best, who = d.min(dim=1)  # (B, K)
    found = best <= max_range
    distance = torch.where(found, best, torch.full_like(best, max_range))
    vx = t.speed * c - t.speed[:, :1] * c[:, :1]  # (B, N) velocity relative to the ego
    vy = t.speed * s - t.speed[:, :1] * s[:, :1]
    rel = vx[..., None] * ray[:, 0] + vy[..., None] * ray[:, 1]  # (B, N, K)
    speed = torch.where(found, rel.gather(1, who[:, None])[:, 0], torch.zeros_like(best))
    return distance, speed
