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

from drive_attention.envs.batched.road import STRIPES, LaneTable
from drive_attention.envs.batched.sim import EGO, IDM, PEDESTRIAN, Traffic
from drive_attention.envs.contract import CLASS_ID, PALETTE
from drive_attention.envs.scenarios import CLOSING_SCALE, SUBPIXEL_BITS, marking_px


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
        # [m] from the frame's top-left corner to the ego
        size = torch.tensor([width, height], device=device, dtype=torch.float32)
        centre = torch.tensor(centering, device=device, dtype=torch.float32)
        self.ego_offset = centre * size / scaling
        self.cols = torch.arange(width, device=device, dtype=torch.float32)
        self.palette = torch.as_tensor(PALETTE, device=device)
        self.dashed = road.marking_dashed.nonzero()[:, 0]  # (D,) rows of the dashed markings
        self.patch = box_patch(scaling, device)  # (P, 2)

    def origin(self, t: Traffic) -> torch.Tensor:
        """(B, 2) world position [m] of the frame's top-left pixel."""
        ego = torch.stack([t.x[:, 0], t.y[:, 0]], -1)
        return ego - self.ego_offset

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
        draw_boxes(flat, t, origin, self.patch, (h, self.width), sc, exact=True)
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


def box_patch(scaling: float, device: torch.device | str) -> torch.Tensor:
    """(P, 2) pixel offsets (dx, dy) of a square patch that holds any vehicle box at
    ``scaling`` [px/m]."""
    half = math.ceil(0.5 * math.hypot(5.0, 2.0) * scaling) + 1  # patch half size [px]
    offsets = torch.arange(-half, half + 1, device=device)
    return torch.stack(torch.meshgrid(offsets, offsets, indexing="xy"), -1).reshape(-1, 2)


def draw_boxes(
    flat: torch.Tensor,
    t: Traffic,
    origin: torch.Tensor,
    patch: torch.Tensor,
    size: tuple[int, int],
    scaling: float,
    exact: bool = False,
) -> None:
    """Fill the vehicle boxes, then the ego's, into ``flat`` (B H W + 1,) uint8: the (B, H, W)
    label maps flattened, then a sink cell (left 0).

    ``origin``: (B, 2) world position [m] of each frame's top-left pixel; ``patch``: (P, 2) from
    :func:`box_patch`; ``size``: (H, W) [px]; ``scaling`` [px/m]. Each box is tested on the patch
    of pixels around it, so the cost is (K, P) for the K vehicles that can reach their frame.
    ``exact``: False fills the box grown by half a pixel in its own frame (cv2's pixels for boxes
    along the axes); True follows cv2's ``fillPoly`` (LINE_8) pixel for pixel at any heading
    (:func:`_cv2_fill`; boxes cut by the frame border may differ by a pixel there).
    """
    (h, w), sc = size, scaling
    cx = _q((t.x - origin[:, :1]) * sc)  # (B, N) box centre [px]
    cy = _q((t.y - origin[:, 1:]) * sc)
    # only the vehicles whose patch can reach the frame: (K,) env and slot indices
    reach = (math.isqrt(patch.shape[0]) - 1) / 2 + 1.0  # [px] half the square patch, + 1
    near = (cx > -reach) & (cx < w + reach) & (cy > -reach) & (cy < h + reach)
    env, slot = (((t.kind == IDM) | (t.kind == EGO)) & near).nonzero(as_tuple=True)
    cx, cy = cx[env, slot], cy[env, slot]  # (K,)
    px = torch.round(cx)[:, None] + patch[:, 0]  # (K, P) patch pixels
    py = torch.round(cy)[:, None] + patch[:, 1]
    if exact:
        side = math.isqrt(patch.shape[0])  # the patch is side x side pixels, rows first
        cols, rows = px[:, :side].long(), py[:, ::side].long()  # (K, side) each
        inside = _cv2_fill(t, env, slot, origin, sc, cols, rows).reshape(px.shape)
    else:
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


def _cv2_fill(
    t: Traffic,
    env: torch.Tensor,
    slot: torch.Tensor,
    origin: torch.Tensor,
    scaling: float,
    cols: torch.Tensor,
    rows: torch.Tensor,
) -> torch.Tensor:
    """(K, R, C) bool: the pixels of columns ``cols`` (K, C) and rows ``rows`` (K, R) (long)
    that cv2's ``fillPoly`` (LINE_8, fixed point with :data:`SUBPIXEL_BITS`) fills with the box
    of vehicle ``(env, slot)`` (K,) each, drawn from its corners as the highway-env backend's
    camera draws it (:func:`envs.camera.vehicle_corners`).

    cv2 snaps each vertex to its row, fills the rows between with spans from the first pixel
    right of the left edge to the last pixel left of the right edge (edges stepped in 1/2^16 px),
    and draws the outline with integer Bresenham lines between the rounded vertices. Spans and
    outline points are found per row or per column, (K, R) or (K, C), then tested per pixel.
    """
    x, y = t.x[env, slot].double(), t.y[env, slot].double()  # (K,) [m]
    heading = t.heading[env, slot].double()
    c, s = torch.cos(heading), torch.sin(heading)
    half_l, half_w = t.length[env, slot].double() / 2, t.width[env, slot].double() / 2
    fwd = torch.stack([c * half_l, s * half_l], -1)  # (K, 2) [m]
    lat = torch.stack([-s * half_w, c * half_w], -1)
    centre = torch.stack([x, y], -1)
    corners = torch.stack(
        [centre + fwd + lat, centre + fwd - lat, centre - fwd - lat, centre - fwd + lat], 1
    )  # (K, 4, 2) [m]
    fixed = torch.round((corners - origin[env, None].double()) * (scaling * _ONE)).long()
    one = 1 << SUBPIXEL_BITS
    vx = fixed[..., 0] * (1 << (16 - SUBPIXEL_BITS))  # (K, 4) [1/2^16 px] (cv2's XY_SHIFT)
    vy = torch.div(fixed[..., 1] + one // 2, one, rounding_mode="floor")  # (K, 4) rows
    ox = torch.div(fixed[..., 0] + one // 2, one, rounding_mode="floor")  # outline columns
    far = 1 << 60
    left, right = torch.full_like(rows, far), torch.full_like(rows, -far)  # (K, R) [1/2^16 px]
    spans = torch.zeros_like(rows)  # edges crossing each row
    outline = torch.zeros(rows.shape + cols.shape[1:], dtype=torch.bool, device=rows.device)
    for a, b in ((3, 0), (0, 1), (1, 2), (2, 3)):  # edges from vertex a to b, as cv2 takes them
        # outline: cv2's LineIterator (8-connected, from the left end)
        flip = ox[:, b] < ox[:, a]
        sx = torch.where(flip, ox[:, b], ox[:, a])[:, None]  # (K, 1) start
        sy = torch.where(flip, vy[:, b], vy[:, a])[:, None]
        ex = torch.where(flip, ox[:, a], ox[:, b])[:, None]  # end
        ey = torch.where(flip, vy[:, a], vy[:, b])[:, None]
        dx, dy, up = ex - sx, (ey - sy).abs(), torch.where(ey < sy, -1, 1)  # dx >= 0
        x_major = dx >= dy
        k = cols - sx  # x-major: one pixel per column, its minor offset rounded half down
        row_on = sy + up * _ceil_div(2 * k * dy - dx, 2 * dx)  # (K, C) (far: none)
        row_on = torch.where(x_major & (k >= 0) & (k <= dx), row_on, far)
        k = (rows - sy) * up  # y-major: one pixel per row
        col_on = sx + _ceil_div(2 * k * dx - dy, 2 * dy)  # (K, R)
        col_on = torch.where(~x_major & (k >= 0) & (k <= dy), col_on, far)
        outline |= rows[:, :, None] == row_on[:, None, :]
        outline |= cols[:, None, :] == col_on[:, :, None]
        # scanline edge from its upper vertex, active on rows [top, bottom)
        down = vy[:, a] < vy[:, b]
        x0 = torch.where(down, vx[:, a], vx[:, b])[:, None]
        top = torch.where(down, vy[:, a], vy[:, b])[:, None]
        x1 = torch.where(down, vx[:, b], vx[:, a])[:, None]
        bottom = torch.where(down, vy[:, b], vy[:, a])[:, None]
        step = torch.div(x1 - x0, (bottom - top).clamp(min=1), rounding_mode="trunc")  # as C
        active = (rows >= top) & (rows < bottom)  # (K, R)
        xe = x0 + (rows - top) * step
        left = torch.where(active, torch.minimum(left, xe), left)
        right = torch.where(active, torch.maximum(right, xe), right)
        spans += active.long()
    first = _ceil_div(left, 1 << 16)[:, :, None]  # (K, R, 1) span of each row
    last = torch.div(right, 1 << 16, rounding_mode="floor")[:, :, None]
    span = (spans >= 2)[:, :, None] & (cols[:, None, :] >= first) & (cols[:, None, :] <= last)
    return outline | span


def _ceil_div(a: torch.Tensor, b: torch.Tensor | int) -> torch.Tensor:
    """Integer ceil(a / b) for b > 0 (b <= 0 reads as 1: only for empty ranges)."""
    if isinstance(b, torch.Tensor):
        b = b.clamp(min=1)
    return -torch.div(-a, b, rounding_mode="floor")


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


def _object_order(
    t: Traffic, n_objects: int, max_range: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, k) the slots of the radar list's rows (k = min(n_objects, N)), and (B, k) bool
    where a row holds an object: nearest centre first, the lower slot among equals."""
    n = t.x.shape[1]
    distance = torch.hypot(t.x - t.x[:, :1], t.y - t.y[:, :1])  # (B, N) [m]
    valid = t.alive & (distance <= max_range)
    valid[:, 0] = False
    key = torch.where(valid, distance, torch.full_like(distance, float("inf")))
    # a stable sort keeps the lower slot first among equal distances
    order = torch.sort(key, dim=1, stable=True).indices[:, : min(n_objects, n)]
    return order, torch.gather(valid, 1, order)


def object_slots(t: Traffic, n_objects: int, max_range: float) -> torch.Tensor:
    """(B, n_objects) long: the traffic slot each row of :func:`objects` describes (the
    sensor tokens ``objects.<k>``), -1 for an empty row."""
    order, present = _object_order(t, n_objects, max_range)
    slots = torch.where(present, order, -1)
    if slots.shape[1] < n_objects:
        slots = torch.cat([slots, slots.new_full((len(slots), n_objects - slots.shape[1]), -1)], 1)
    return slots


def object_ids(
    t: Traffic, labels: torch.Tensor, origin: torch.Tensor, patch: torch.Tensor, scaling: float
) -> torch.Tensor:
    """(B, H, W) int16: the traffic slot of the vehicle or pedestrian drawn at each pixel of
    the label maps ``labels`` (B, H, W) drawn from ``t``, -1 elsewhere (the road, the ego, the
    lights). Boxes are tested as :func:`draw_boxes` does without ``exact`` (vehicles) and as
    :func:`envs.batched.signals.fill_boxes` does (pedestrians), and only pixels labelled
    ``vehicle`` or ``pedestrian`` keep an id: the map never claims a pixel the frame does not
    show as an object. For attribution, not for the training loop (it syncs with the host)."""
    b, h, w = labels.shape
    sc = scaling
    ids = torch.full((b * h * w + 1,), -1, dtype=torch.int16, device=labels.device)
    cx = (t.x - origin[:, :1]) * sc  # (B, N) [px]
    cy = (t.y - origin[:, 1:]) * sc
    reach = (math.isqrt(patch.shape[0]) - 1) / 2 + 1.0
    near = (cx > -reach) & (cx < w + reach) & (cy > -reach) & (cy < h + reach)
    env, slot = (t.alive & (t.kind != EGO) & near).nonzero(as_tuple=True)
    if len(env):
        cx, cy = cx[env, slot], cy[env, slot]  # (K,)
        px = torch.round(cx)[:, None] + patch[:, 0]  # (K, P)
        py = torch.round(cy)[:, None] + patch[:, 1]
        dx, dy = px - cx[:, None], py - cy[:, None]
        heading = t.heading[env, slot]
        c, s = torch.cos(heading)[:, None], torch.sin(heading)[:, None]
        along, across = dx * c + dy * s, -dx * s + dy * c
        hl = t.length[env, slot][:, None] * sc / 2
        hw = t.width[env, slot][:, None] * sc / 2
        grow = 1.0  # [px] cv2 fills up to a pixel beyond the box at a slant
        car = (along > -hl - grow) & (along <= hl + grow) & (across > -hw - grow)
        car &= across <= hw + grow
        # a pedestrian: the pixels whose centres its axis-aligned square holds, at least the
        # one nearest its middle
        first_x, last_x = torch.ceil(cx - hl[:, 0]), torch.floor(cx + hl[:, 0])
        first_y, last_y = torch.ceil(cy - hl[:, 0]), torch.floor(cy + hl[:, 0])
        lone_x, lone_y = last_x < first_x, last_y < first_y
        mx, my = torch.round(cx), torch.round(cy)
        first_x, last_x = torch.where(lone_x, mx, first_x), torch.where(lone_x, mx, last_x)
        first_y, last_y = torch.where(lone_y, my, first_y), torch.where(lone_y, my, last_y)
        square = (px >= first_x[:, None]) & (px <= last_x[:, None])
        square &= (py >= first_y[:, None]) & (py <= last_y[:, None])
        walker = (t.kind[env, slot] == PEDESTRIAN)[:, None]
        inside = torch.where(walker, square, car) & (px >= 0) & (px < w) & (py >= 0) & (py < h)
        index = env[:, None] * (h * w) + py.long() * w + px.long()
        index = torch.where(inside, index, ids.numel() - 1)
        value = slot[:, None].expand_as(index).to(torch.int16)
        ids.index_put_((index.reshape(-1),), value.reshape(-1))
    ids = ids[:-1].reshape(b, h, w)
    shown = (labels == CLASS_ID["vehicle"]) | (labels == CLASS_ID["pedestrian"])
    return torch.where(shown, ids, torch.full_like(ids, -1))


def objects(t: Traffic, n_objects: int, max_range: float, lateral_scale: float) -> torch.Tensor:
    """(B, n_objects, 5) the radar object list (:data:`envs.scenarios.OBJECT_QUANTITIES`), as
    the highway-env backend's ``_objects``: every other vehicle or obstacle, nearest centre
    first (the lower slot among equals), within ``max_range``, ``y`` over ``lateral_scale`` [m];
    empty rows are 0."""
    b = t.x.shape[0]
    dx, dy = t.x - t.x[:, :1], t.y - t.y[:, :1]  # (B, N) [m]
    order, present = _object_order(t, n_objects, max_range)
    k = order.shape[1]

    def pick(x: torch.Tensor) -> torch.Tensor:
        return torch.gather(x, 1, order)

    c, s = torch.cos(t.heading[:, :1]), torch.sin(t.heading[:, :1])  # (B, 1) the ego's
    vx, vy = t.speed * torch.cos(t.heading), t.speed * torch.sin(t.heading)  # (B, N)
    dvx, dvy = vx - vx[:, :1], vy - vy[:, :1]
    ox, oy, ovx, ovy = pick(dx), pick(dy), pick(dvx), pick(dvy)
    rows = torch.stack(
        [
            torch.ones_like(ox),
            (c * ox + s * oy) / max_range,
            (-s * ox + c * oy) / lateral_scale,
            (c * ovx + s * ovy) / CLOSING_SCALE,
            (-s * ovx + c * ovy) / CLOSING_SCALE,
        ],
        2,
    )  # (B, k, 5)
    rows = torch.where(present[..., None], rows, torch.zeros_like(rows))
    if k < n_objects:
        rows = torch.cat([rows, rows.new_zeros(b, n_objects - k, rows.shape[2])], 1)
    return rows
