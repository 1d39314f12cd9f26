"""Batched camera raster and lidar in torch, matching the highway-env backend's camera and
highway-env's lidar.

Raster: the (B, H, W) label map is drawn class by class like the highway-env backend's OpenCV
rasteriser (off road, lane surfaces, continuous and dashed markings, vehicles, ego last) with the
same viewer transform: pixel ``(col, row)`` is the world point ``origin + (col, row) / scaling``
with ``origin = ego - centering * (W, H) / scaling``. Lanes are traced as that camera traces
them (:func:`envs.contract.lane_samples`: straight lanes by their ends, the merge ramp's sine
lane every metre), so in every column a lane surface or a marking covers one interval of rows:
the intervals are scattered into a per-pixel count and summed down the columns (cost
(B, L + M, W) plus one pass over the frame).
Vehicle boxes are tested on a small pixel patch around each vehicle that can reach the frame
and scattered into the map, so the cost does not grow with the frame size times N.

The (K,) vehicles near the frame (and, in :func:`lidar`, the (V,) vehicles within range)
are picked with ``nonzero``: a host sync on a GPU, cheap beside the work it saves.

Lidar: highway-env's ``LidarObservation.trace`` semantics: per ray, the nearest exact
ray-rectangle intersection within range, or (for the ray sector holding an obstacle's centre)
the centre distance minus half the obstacle width; the closing speed is the relative velocity
projected on the ray.
"""

from __future__ import annotations

import math

import torch

from envs.batched.road import STRIPES, LaneTable
from envs.batched.sim import EGO, IDM, Traffic
from envs.contract import CLASS_ID, PALETTE
from envs.scenarios import SUBPIXEL_BITS, marking_px


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
        self.line_px = marking_px(scaling)  # [px]
        device = road.x0.device
        self.cols = torch.arange(width, device=device, dtype=torch.float32)
        self.palette = torch.as_tensor(PALETTE, device=device)
        self.dashed = road.marking_dashed.nonzero()[:, 0]  # (D,) rows of the dashed markings
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
        road, sc, h = self.road, self.scaling, self.height
        origin = self.origin(t)
        ox, oy = origin[:, 0:1], origin[:, 1:2]  # (B, 1)
        wx = ox + self.cols / sc  # (B, W) world x of each column [m]

        # Pixel rules of cv2 with fixed-point vertices (the OpenCV camera): vertices are rounded to
        # 1/16 px; fillPoly fills pixel p when lo - 1/2 < p <= hi + 1/2 along each axis of an
        # axis-aligned polygon, a one-pixel line at y takes the row floor(y + 1/2). Each lane
        # surface and marking covers one interval of rows per column: the intervals are
        # scattered as +1 / -1 into a count per pixel and summed down the columns, so the cost
        # is (B, L + M, W) and one (B, H, W) pass, whatever the number of lanes.

        # lane surfaces: per column, the rows between the traced edges
        s = wx[:, None, :] - road.x0[:, None]  # (B, L, W) along each lane [m]
        yc = road.traced_centre(s.transpose(1, 2)).transpose(1, 2)  # (B, L, W) [m]
        left = _q((road.x0[None] - ox) * sc)[..., None]  # (B, L, 1) [px]
        right = _q((road.x0 + road.length - ox)[:, :, None] * sc)
        inside_x = (self.cols > left - 0.5) & (self.cols <= right + 0.5)  # (B, L, W)
        hw = (road.width / 2)[:, None]  # (L, 1) [m]
        top = _q((yc - hw - oy[..., None]) * sc)  # (B, L, W) [px]
        bottom = _q((yc + hw - oy[..., None]) * sc)
        surface = (torch.floor(top - 0.5) + 1, torch.floor(bottom + 0.5), inside_x)

        # markings: rows of the line, columns within its (dash) extent
        lane = road.marking_lane  # (M,)
        mx0, mx1 = road.x0[lane], road.x0[lane] + road.length[lane]
        col_px = self.cols  # (W,)
        start_px = _round(_q((mx0[None] - ox) * sc))  # (B, M)
        end_px = _round(_q((mx1[None] - ox) * sc))
        in_cols = (col_px >= start_px[..., None]) & (col_px <= end_px[..., None])  # (B, M, W)
        # dashed markings (D,): columns within a dash (k - 1, k or k + 1 after rounding)
        dashed = self.dashed
        dx0, dx1 = mx0[dashed], mx1[dashed]
        period, dash = STRIPES
        k = torch.floor(s[:, lane[dashed]] / period)  # (B, D, W) dash index along the line
        in_dash = torch.zeros_like(k, dtype=torch.bool)
        for kk in (k - 1, k, k + 1):
            a = _round(_q((dx0[:, None] + kk * period - ox[..., None]) * sc))
            b_end = torch.minimum(kk * period + dash, (dx1 - dx0)[:, None])
            b = _round(_q((dx0[:, None] + b_end - ox[..., None]) * sc))
            in_dash = in_dash | ((col_px >= a) & (col_px <= b) & (kk >= 0))
        in_cols[:, dashed] &= in_dash
        line_y = _q((yc[:, lane] + road.marking_offset[:, None] - oy[..., None]) * sc)  # [px]
        half = self.line_px / 2
        line = (torch.floor(line_y - half) + 1, torch.floor(line_y + half), in_cols)
        labels = self._fill(surface, line, h)

        # vehicles then the ego, scattered from pixel patches
        flat = torch.cat([labels.reshape(-1), labels.new_zeros(1)])  # last cell: a sink
        self._boxes(flat, t, origin)
        return flat[:-1].reshape(labels.shape)

    @staticmethod
    def _fill(surface: tuple, line: tuple, height: int) -> torch.Tensor:
        """(B, H, W) uint8 labels from per-column row intervals of surfaces and markings.

        ``surface``, ``line``: (first row, last row, valid), (B, K, W) each. An interval adds
        its weight (1 for a surface, _MARK for a marking) at its first row and takes it back
        after its last; the running sum down each column says what covers a pixel.
        """
        index, weight = [], []
        for (first, last, valid), w in ((surface, 1.0), (line, _MARK)):
            lo = first.clamp(0, height).long()
            hi = (last + 1).clamp(0, height).long()
            on = torch.where(valid & (lo < hi), w, 0.0)
            index += [lo, hi]
            weight += [on, -on]
        b, w = surface[0].shape[0], surface[0].shape[2]
        count = torch.zeros(b, height + 1, w, device=surface[0].device)  # (B, H + 1, W)
        count.scatter_add_(1, torch.cat(index, 1), torch.cat(weight, 1))
        count = count.cumsum_(1)[:, :height]  # (B, H, W) weight covering each pixel
        return (count > 0.5).view(torch.uint8) + (count > _MARK - 0.5).view(torch.uint8)

    def _boxes(self, flat: torch.Tensor, t: Traffic, origin: torch.Tensor) -> None:
        """Fill the vehicle boxes, then the ego's, into ``flat`` (B H W + 1,): a sink last."""
        h, w, sc = self.height, self.width, self.scaling
        cx = _q((t.x - origin[:, :1]) * sc)  # (B, N) box centre [px]
        cy = _q((t.y - origin[:, 1:]) * sc)
        # only the vehicles whose patch can reach the frame: (K,) env and slot indices
        reach = float(self.patch.abs().max()) + 1.0  # [px]
        near = (cx > -reach) & (cx < w + reach) & (cy > -reach) & (cy < h + reach)
        env, slot = (((t.kind == IDM) | (t.kind == EGO)) & near).nonzero(as_tuple=True)
        cx, cy = cx[env, slot], cy[env, slot]  # (K,)
        px = torch.round(cx)[:, None] + self.patch[:, 0]  # (K, P) patch pixels
        py = torch.round(cy)[:, None] + self.patch[:, 1]
        dx, dy = px - cx[:, None], py - cy[:, None]  # [px]
        heading = t.heading[env, slot]
        c, s = torch.cos(heading)[:, None], torch.sin(heading)[:, None]
        along = dx * c + dy * s
        across = -dx * s + dy * c
        hl = t.length[env, slot][:, None] * sc / 2 + 0.5  # half extents grown by cv2's half px
        hw = t.width[env, slot][:, None] * sc / 2 + 0.5
        inside = (along > -hl) & (along <= hl) & (across > -hw) & (across <= hw)
        inside = inside & (px >= 0) & (px < w) & (py >= 0) & (py < h)
        index = env[:, None] * (h * w) + py.long() * w + px.long()
        index = torch.where(inside, index, flat.numel() - 1)
        ego = (t.kind[env, slot] == EGO)[:, None]
        sink = flat.numel() - 1
        flat.index_fill_(0, torch.where(ego, sink, index).reshape(-1), CLASS_ID["vehicle"])
        flat.index_fill_(0, torch.where(ego, index, sink).reshape(-1), CLASS_ID["ego"])
        flat[-1] = 0

    def colorize(self, labels: torch.Tensor) -> torch.Tensor:
        """(B, H, W, 3) uint8 camera frames from label maps."""
        flat = self.palette.index_select(0, labels.reshape(-1).int())
        return flat.reshape(*labels.shape, 3)


_ONE = float(1 << SUBPIXEL_BITS)
_MARK = 1024.0  # weight of a marking in TorchRasterizer._fill (more than any lane count)
# _fill's labels are the covering count's classes: 0 nothing, 1 a surface, 2 a marking
assert (CLASS_ID["off_road"], CLASS_ID["road"], CLASS_ID["lane_marking"]) == (0, 1, 2)


def _q(v: torch.Tensor) -> torch.Tensor:
    """Pixel coordinates rounded to cv2's fixed point (1/16 px, as the OpenCV camera rounds)."""
    return torch.round(v * _ONE) / _ONE


def _round(v: torch.Tensor) -> torch.Tensor:
    """cv2's rounding of a fixed-point coordinate to a pixel: half up."""
    return torch.floor(v + 0.5)


def lidar(t: Traffic, n_rays: int, max_range: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Distances [m] and relative speeds along the ray [m/s] around the ego, (B, n_rays) each.

    Ray ``k`` points at world angle ``k * 2 pi / n_rays``; no hit reads ``max_range``.
    """
    device = t.x.device
    b, n = t.x.shape
    angle = 2 * math.pi / n_rays
    theta = torch.arange(n_rays, device=device, dtype=torch.float32) * angle
    ray = torch.stack([torch.cos(theta), torch.sin(theta)], -1)  # (K, 2)
    ox, oy = t.x[:, :1], t.y[:, :1]  # (B, 1)
    dist_all = torch.hypot(t.x - ox, t.y - oy)  # (B, N)
    valid = t.alive & (dist_all <= max_range)
    valid[:, 0] = False
    # only the (V,) vehicles within range can be seen
    env, slot = valid.nonzero(as_tuple=True)
    dxc, dyc = t.x[env, slot] - ox[env, 0], t.y[env, slot] - oy[env, 0]  # (V,) centre offsets
    dist_c = dist_all[env, slot]
    heading, speed_v = t.heading[env, slot], t.speed[env, slot]
    length, width = t.length[env, slot], t.width[env, slot]
    c, s = torch.cos(heading), torch.sin(heading)  # (V,)
    # ray origin and direction in each box's frame (along, across)
    ru, rv = -(dxc * c + dyc * s), -(-dxc * s + dyc * c)  # (V,)
    du = (ray[:, 0] * c[..., None] + ray[:, 1] * s[..., None]) * max_range  # (V, K)
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

    lo_u, hi_u = slab(ru, du, length / 2)
    lo_v, hi_v = slab(rv, dv, width / 2)
    enter, leave = torch.maximum(lo_u, lo_v), torch.minimum(hi_u, hi_v)
    hit = (enter <= leave) & (lo_u <= 1) & (hi_u >= 0) & (lo_v <= 1) & (hi_v >= 0)
    d_ray = torch.where(hit, enter * max_range, float("inf"))  # (V, K)
    sector = torch.floor((torch.atan2(dyc, dxc) + angle / 2) / angle).long() % n_rays  # (V,)
    centre = torch.nn.functional.one_hot(sector, n_rays).bool()
    d_centre = torch.where(centre, (dist_c - width / 2)[..., None], float("inf"))
    d = torch.minimum(d_ray, d_centre)  # (V, K)
    # per environment and ray: the nearest vehicle (the lowest slot among equals)
    rows = env[:, None].expand_as(d)
    inf = torch.full((b, n_rays), float("inf"), device=device)
    best = inf.scatter_reduce(0, rows, d, "amin")  # (B, K)
    win = (d == best[env]) & (d <= max_range)
    who = torch.full((b, n_rays), n, device=device, dtype=torch.long)
    who = who.scatter_reduce(0, rows, torch.where(win, slot[:, None], n), "amin")
    win = win & (slot[:, None] == who[env])
    found = best <= max_range
    distance = torch.where(found, best, torch.full_like(best, max_range))
    ego_c, ego_s = torch.cos(t.heading[env, 0]), torch.sin(t.heading[env, 0])
    ego_v = t.speed[env, 0]
    vx = speed_v * c - ego_v * ego_c  # (V,) velocity relative to the ego
    vy = speed_v * s - ego_v * ego_s
    rel = vx[..., None] * ray[:, 0] + vy[..., None] * ray[:, 1]  # (V, K)
    speed = torch.zeros_like(best).scatter_add_(0, rows, torch.where(win, rel, 0.0))
    return distance, speed
