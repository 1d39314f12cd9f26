"""What the CARLA backend computes from simulator data, as pure functions (no carla import).

The env (``envs.carla.env``) reads the simulator and calls these; tests call them directly.

Frames: CARLA's (Unreal's) world frame is left-handed, x forward, y to the right, z up, yaw in
degrees turning x towards y (clockwise seen from above). The ego frame is the car's: x forward,
y to the right. Camera frame: x along the optical axis, y right, z up.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import cv2
import numpy as np

from drive_attention.envs.contract import CLASS_ID

# ----------------------------------------------------------------------------------------------
# Semantic tags -> road-label classes
# ----------------------------------------------------------------------------------------------

# carla.CityObjectLabel numbering since 0.9.14 (CityScapes-aligned), checked against the 0.9.16
# client's carla.CityObjectLabel; 0.9.15 uses the same table.
CARLA_TAGS: dict[str, int] = {
    "NONE": 0,
    "Roads": 1,
    "Sidewalks": 2,
    "Buildings": 3,
    "Walls": 4,
    "Fences": 5,
    "Poles": 6,
    "TrafficLight": 7,
    "TrafficSigns": 8,
    "Vegetation": 9,
    "Terrain": 10,
    "Sky": 11,
    "Pedestrians": 12,
    "Rider": 13,
    "Car": 14,
    "Truck": 15,
    "Bus": 16,
    "Train": 17,
    "Motorcycle": 18,
    "Bicycle": 19,
    "Static": 20,
    "Dynamic": 21,
    "Other": 22,
    "Water": 23,
    "RoadLines": 24,
    "Ground": 25,
    "Bridge": 26,
    "RailTrack": 27,
    "GuardRail": 28,
}

VEHICLE_TAGS: tuple[int, ...] = tuple(
    CARLA_TAGS[n] for n in ("Car", "Truck", "Bus", "Train", "Motorcycle", "Bicycle")
)
TAG_CLASS: dict[int, str] = {
    CARLA_TAGS["Roads"]: "road",
    CARLA_TAGS["RoadLines"]: "lane_marking",
    **{tag: "vehicle" for tag in VEHICLE_TAGS},
    CARLA_TAGS["Pedestrians"]: "pedestrian",
    CARLA_TAGS["Rider"]: "pedestrian",
    CARLA_TAGS["TrafficLight"]: "traffic_light",
}
"""Tags with a class of their own; every other tag (sidewalk, building, sky, ...) is off_road."""


def tag_lookup() -> np.ndarray:
    """(256,) uint8: label id (index into ROAD_CLASSES) of each semantic tag value."""
    table = np.full(256, CLASS_ID["off_road"], dtype=np.uint8)
    for tag, name in TAG_CLASS.items():
        table[tag] = CLASS_ID[name]
    return table


TAG_TO_LABEL = tag_lookup()


def labels_from_segmentation(
    bgra: np.ndarray, ego_region: np.ndarray | None = None, instance: bool = False
) -> np.ndarray:
    """Road labels (H, W) uint8 from a segmentation image (H, W, 4) BGRA.

    The semantic tag is in the red channel. Ego pixels are vehicle pixels inside ``ego_region``
    (H, W) bool, the projection of the ego's bounding box. With ``instance=True`` (an
    instance-segmentation image, whose green and blue channels hold an object code), only the
    object code that covers most of that region counts as the ego, so other vehicles seen beside
    the ego's silhouette stay ``vehicle``. Without a region the ego stays unlabelled (``vehicle``).
    """
    labels = TAG_TO_LABEL[bgra[..., 2]]  # (H, W)
    if ego_region is None:
        return labels
    candidates = (labels == CLASS_ID["vehicle"]) & ego_region  # (H, W)
    if instance and candidates.any():
        codes = bgra[..., 1].astype(np.uint32) | (bgra[..., 0].astype(np.uint32) << 8)  # (H, W)
        values, counts = np.unique(codes[candidates], return_counts=True)
        candidates &= codes == values[np.argmax(counts)]
    labels[candidates] = CLASS_ID["ego"]
    return labels


def bgra_to_rgb(raw: bytes | np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W, 3) uint8 RGB from CARLA's flat BGRA image buffer."""
    bgra = np.frombuffer(raw, dtype=np.uint8).reshape(height, width, 4)
    return np.ascontiguousarray(bgra[:, :, 2::-1])  # B, G, R -> R, G, B


# ----------------------------------------------------------------------------------------------
# Geometry
# ----------------------------------------------------------------------------------------------


def wrap_angle(angle: float | np.ndarray) -> Any:
    """Angle in [-pi, pi) [rad]."""
    return (np.asarray(angle) + np.pi) % (2 * np.pi) - np.pi


def rotation_matrix(pitch_deg: float, yaw_deg: float, roll_deg: float) -> np.ndarray:
    """(3, 3) rotation of a CARLA transform; equals ``carla.Transform.get_matrix()[:3, :3]``."""
    p, y, r = np.radians([pitch_deg, yaw_deg, roll_deg])
    cp, sp, cy, sy, cr, sr = np.cos(p), np.sin(p), np.cos(y), np.sin(y), np.cos(r), np.sin(r)
    return np.array(
        [
            [cp * cy, cy * sp * sr - sy * cr, -cy * sp * cr - sy * sr],
            [cp * sy, sy * sp * sr + cy * cr, -sy * sp * cr + cy * sr],
            [sp, -cp * sr, cp * cr],
        ]
    )


def world_to_ego(points: np.ndarray, ego_xy: Sequence[float], yaw_rad: float) -> np.ndarray:
    """(N, 2) world points [m] -> ego frame (x forward, y right) [m]."""
    d = np.asarray(points, dtype=np.float64).reshape(-1, 2) - np.asarray(ego_xy)  # (N, 2)
    c, s = math.cos(yaw_rad), math.sin(yaw_rad)
    return np.stack([d[:, 0] * c + d[:, 1] * s, -d[:, 0] * s + d[:, 1] * c], axis=1)  # (N, 2)


def lane_errors(
    ego_xy: Sequence[float], ego_yaw_rad: float, lane_xy: Sequence[float], lane_yaw_rad: float
) -> tuple[float, float]:
    """(signed offset from the lane centre [m], > 0 right of it; heading error [rad])."""
    offset = world_to_ego(np.asarray([ego_xy]), lane_xy, lane_yaw_rad)[0, 1]
    return float(offset), float(wrap_angle(ego_yaw_rad - lane_yaw_rad))


def box_corners(center: Sequence[float], extent: Sequence[float]) -> np.ndarray:
    """(8, 3) corners of a box (centre and half sizes [m]); corner i has sign bits of i."""
    signs = np.array([[1 if i & b else -1 for b in (1, 2, 4)] for i in range(8)], dtype=float)
    return np.asarray(center, dtype=float) + signs * np.asarray(extent, dtype=float)


_BOX_EDGES = [(i, i | b) for i in range(8) for b in (1, 2, 4) if not i & b]  # 12 edges


def project_box_mask(
    corners: np.ndarray,
    camera_location: Sequence[float],
    camera_rotation: Sequence[float],
    size: tuple[int, int],
    fov_deg: float,
    near: float = 0.05,
) -> np.ndarray:
    """(H, W) bool: pixels covered by a box (8, 3) seen by a pinhole camera.

    ``corners``, ``camera_location`` [m] and ``camera_rotation`` (pitch, yaw, roll) [deg] are in
    the same frame (the ego's, for the ego's box and a camera attached to it). The box is clipped
    at the camera's near plane, so a camera inside the box (a hood camera) works too.
    """
    h, w = size
    rot = rotation_matrix(*camera_rotation)  # (3, 3), columns = camera axes
    cam = (np.asarray(corners, dtype=float) - np.asarray(camera_location)) @ rot  # (8, 3)
    points = [cam[i] for i in range(8) if cam[i, 0] >= near]
    for i, j in _BOX_EDGES:
        a, b = cam[i], cam[j]
        if (a[0] >= near) != (b[0] >= near):
            t = (near - a[0]) / (b[0] - a[0])
            points.append(a + t * (b - a))
    mask = np.zeros((h, w), dtype=np.uint8)
    if len(points) < 3:
        return mask.astype(bool)
    pts = np.asarray(points)  # (M, 3)
    f = w / (2.0 * math.tan(math.radians(fov_deg) / 2.0))  # [px] focal length
    u = w / 2.0 + f * pts[:, 1] / pts[:, 0] - 0.5  # [px] column of the pixel centre
    v = h / 2.0 - f * pts[:, 2] / pts[:, 0] - 0.5  # [px] row
    uv = np.clip(np.stack([u, v], axis=1), -1e5, 1e5)  # (M, 2)
    hull = cv2.convexHull(np.round(uv).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, 1)
    return mask.astype(bool)


def ego_region_mask(
    box_center: Sequence[float],
    box_extent: Sequence[float],
    camera_location: Sequence[float],
    camera_rotation: Sequence[float],
    size: tuple[int, int],
    fov_deg: float,
) -> np.ndarray | None:
    """(H, W) bool: where the ego can appear in a camera attached to it (ego frame, [m], [deg]).

    None when the camera sits inside the ego's bounding box (a hood or cockpit camera): the box
    then covers the whole view, so it cannot tell the ego from the cars ahead.
    """
    inside = np.all(
        np.abs(np.asarray(camera_location, float) - np.asarray(box_center, float))
        <= np.asarray(box_extent, float)
    )
    if inside:
        return None
    corners = box_corners(box_center, box_extent)
    return project_box_mask(corners, camera_location, camera_rotation, size, fov_deg)


# ----------------------------------------------------------------------------------------------
# Range rays, cast against the bounding boxes of the other road users
# ----------------------------------------------------------------------------------------------


def ray_directions(yaw_rad: float, n_rays: int) -> np.ndarray:
    """(n_rays, 2) unit world directions; ray k at 2*pi*k/n_rays from the heading, turning right."""
    angles = yaw_rad + 2.0 * np.pi * np.arange(n_rays) / max(n_rays, 1)
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


def cast_rays(
    origin: Sequence[float],
    yaw_rad: float,
    velocity: Sequence[float],
    centers: np.ndarray,
    extents: np.ndarray,
    yaws: np.ndarray,
    velocities: np.ndarray,
    n_rays: int,
    ray_range: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Distances and closing speeds of ``n_rays`` rays from ``origin`` against oriented boxes.

    origin (2,) [m], velocity (2,) [m/s] of the ego; boxes: centers (M, 2) [m], half extents
    (M, 2) [m], yaws (M,) [rad], velocities (M, 2) [m/s], all in the world's x-y plane.
    Returns distance (n_rays,) [m] to the nearest box (ray_range if none within range; 0 if the
    origin is inside a box) and closing speed (n_rays,) [m/s], the rate at which that box
    approaches along the ray (0 where nothing is hit).
    """
    dirs = ray_directions(yaw_rad, n_rays)  # (n, 2)
    distance = np.full(n_rays, float(ray_range))
    closing = np.zeros(n_rays)
    centers = np.asarray(centers, dtype=np.float64).reshape(-1, 2)
    if n_rays == 0 or len(centers) == 0:
        return distance, closing
    c, s = np.cos(yaws), np.sin(yaws)  # (M,)
    rel = np.asarray(origin, dtype=np.float64) - centers  # (M, 2) origin from each box centre
    o_x, o_y = rel[:, 0] * c + rel[:, 1] * s, -rel[:, 0] * s + rel[:, 1] * c  # (M,) box frame
    d_x = dirs[:, :1] * c + dirs[:, 1:] * s  # (n, M) ray direction in each box frame
    d_y = -dirs[:, :1] * s + dirs[:, 1:] * c  # (n, M)
    e = np.asarray(extents, dtype=np.float64).reshape(-1, 2)

    def slab(o: np.ndarray, d: np.ndarray, half: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        d = np.where(np.abs(d) < 1e-12, 1e-12, d)
        t1, t2 = (-half - o) / d, (half - o) / d  # (n, M)
        return np.minimum(t1, t2), np.maximum(t1, t2)

    lo_x, hi_x = slab(o_x, d_x, e[:, 0])
    lo_y, hi_y = slab(o_y, d_y, e[:, 1])
    t_in, t_out = np.maximum(lo_x, lo_y), np.minimum(hi_x, hi_y)  # (n, M)
    hit = t_out >= np.maximum(t_in, 0.0)
    t = np.where(hit, np.maximum(t_in, 0.0), np.inf)  # (n, M) [m]
    nearest = np.argmin(t, axis=1)  # (n,)
    t_near = t[np.arange(n_rays), nearest]  # (n,)
    seen = t_near < ray_range
    relative = np.asarray(velocity, dtype=np.float64) - np.asarray(velocities)[nearest]  # (n, 2)
    distance = np.where(seen, t_near, float(ray_range))
    closing = np.where(seen, np.einsum("nd,nd->n", relative, dirs), 0.0)
    return distance, closing


# ----------------------------------------------------------------------------------------------
# Sensor vector
# ----------------------------------------------------------------------------------------------

LIGHT_STATES: tuple[str, ...] = ("red", "yellow", "green")


def make_sensor_names(n_route_points: int, n_rays: int) -> tuple[str, ...]:
    """Names of the sensor elements, in vector order (see envs.contract)."""
    names = ["ego.speed", "ego.accel", "ego.yaw_rate", "lane.offset", "lane.heading_error"]
    for k in range(n_route_points):
        names += [f"route.{k:02d}.x", f"route.{k:02d}.y"]
    names += [f"light.{s}" for s in LIGHT_STATES] + ["light.distance"]
    for k in range(n_rays):
        names += [f"rays.{k:02d}.distance", f"rays.{k:02d}.closing_speed"]
    return tuple(names)


@dataclass(frozen=True)
class SensorScales:
    """Physical value that maps to 1.0 in the sensor vector."""

    speed: float  # [m/s] (top of the config's speed_range)
    route: float  # [m] (n_route_points * route_point_spacing_m)
    light: float  # [m] (light_range)
    ray: float  # [m] (ray_range)
    accel: float = 10.0  # [m/s^2]
    yaw_rate: float = 1.0  # [rad/s]


@dataclass
class Readings:
    """Physical sensor readings of one step (SI units, ego frame)."""

    speed: float  # [m/s] forward (negative when reversing)
    accel: float  # [m/s^2] longitudinal (IMU)
    yaw_rate: float  # [rad/s] (IMU gyroscope z, in CARLA's frame)
    lane_offset: float  # [m] from the lane centre, > 0 right of it
    lane_width: float  # [m]
    heading_error: float  # [rad] ego yaw - lane yaw
    route_points: np.ndarray  # (n_route_points, 2) [m] next route points in the ego frame
    light_state: str | None  # "red" | "yellow" | "green" | None (no light ahead)
    light_distance: float  # [m] to the stop line of that light
    ray_distance: np.ndarray  # (n_rays,) [m]
    ray_closing_speed: np.ndarray  # (n_rays,) [m/s]


def assemble_sensors(r: Readings, scales: SensorScales) -> np.ndarray:
    """(D,) float32 sensor vector in the order of make_sensor_names, values in about [-1, 1]."""
    parts = [
        [
            np.clip(r.speed / scales.speed, -1.0, 1.5),
            np.clip(r.accel / scales.accel, -1.0, 1.0),
            np.clip(r.yaw_rate / scales.yaw_rate, -1.0, 1.0),
            np.clip(r.lane_offset / max(r.lane_width, 1e-3), -1.0, 1.0),
            wrap_angle(r.heading_error) / np.pi,
        ],
        np.clip(np.asarray(r.route_points, dtype=np.float64) / scales.route, -1.0, 1.0).ravel(),
        [float(r.light_state == s) for s in LIGHT_STATES],
        [np.clip(r.light_distance / scales.light, 0.0, 1.0) if r.light_state else 1.0],
    ]
    rays = np.stack(
        [
            np.clip(np.asarray(r.ray_distance) / scales.ray, 0.0, 1.0),
            np.clip(np.asarray(r.ray_closing_speed) / scales.speed, -1.0, 1.0),
        ],
        axis=1,
    )  # (n_rays, 2): distance, closing_speed per ray
    vector = np.concatenate(
        [np.asarray(p, dtype=np.float64).ravel() for p in parts] + [rays.ravel()]
    )
    return np.nan_to_num(vector, nan=0.0, posinf=1.0, neginf=-1.0).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Actions, stuck detection
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Control:
    """Vehicle control in CARLA's ranges."""

    throttle: float  # [0, 1]
    steer: float  # [-1, 1], > 0 right
    brake: float  # [0, 1]


def action_to_control(action: Any) -> Control:
    """[steer, accel] in [-1, 1] -> Control; accel > 0 is throttle, < 0 is brake."""
    a = np.asarray(action, dtype=np.float64).reshape(-1)
    if a.shape != (2,) or not np.all(np.isfinite(a)):
        raise ValueError(f"action must be 2 finite numbers [steer, accel], got {action!r}")
    steer, accel = np.clip(a, -1.0, 1.0)
    return Control(
        throttle=float(max(accel, 0.0)), steer=float(steer), brake=float(max(-accel, 0.0))
    )


@dataclass
class StuckDetector:
    """True once the car has been slower than ``speed`` for ``steps`` steps in a row.

    Steps spent waiting at a red light do not count.
    """

    steps: int
    speed: float  # [m/s]
    count: int = 0

    def update(self, speed: float, waiting_at_red: bool) -> bool:
        self.count = 0 if (abs(speed) >= self.speed or waiting_at_red) else self.count + 1
        return self.count >= self.steps


# ----------------------------------------------------------------------------------------------
# Route
# ----------------------------------------------------------------------------------------------


class WaypointLike(Protocol):
    """The part of carla.Waypoint a route needs."""

    transform: Any  # .location.x, .location.y [m]

    def next(self, distance: float) -> list[Any]: ...


def waypoint_xy(waypoint: Any) -> tuple[float, float]:
    loc = waypoint.transform.location
    return float(loc.x), float(loc.y)


def random_route(
    start: WaypointLike, length_m: float, spacing_m: float, rng: np.random.Generator
) -> list[Any]:
    """Waypoints from ``start`` along the lanes for about ``length_m`` [m].

    At each fork (junction) one branch is drawn from ``rng``; the destination is where the walk
    ends. Stops early at a dead end.
    """
    route = [start]
    travelled = 0.0  # [m]
    while travelled < length_m and len(route) < 100_000:
        options = route[-1].next(spacing_m)
        if not options:
            break
        nxt = options[int(rng.integers(len(options)))]
        (x0, y0), (x1, y1) = waypoint_xy(route[-1]), waypoint_xy(nxt)
        step = math.hypot(x1 - x0, y1 - y0)
        if step < 1e-6:
            break
        route.append(nxt)
        travelled += step
    return route


class RouteTracker:
    """Progress of the car along a polyline route (N, 2) [m].

    Progress only moves forward, searching a window of segments ahead of the current one, so a
    route that passes near itself does not make progress jump.
    """

    def __init__(self, points: np.ndarray, window: int = 12) -> None:
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        keep = np.ones(len(pts), dtype=bool)
        keep[1:] = np.linalg.norm(np.diff(pts, axis=0), axis=1) > 1e-6  # drop repeated points
        self.points = pts[keep]  # (N, 2)
        if len(self.points) < 2:
            raise ValueError("a route needs at least two distinct points")
        seg = np.diff(self.points, axis=0)  # (N-1, 2)
        self.seg_len = np.linalg.norm(seg, axis=1)  # (N-1,) [m]
        self.seg_dir = seg / self.seg_len[:, None]  # (N-1, 2) unit
        self.cum = np.concatenate([[0.0], np.cumsum(self.seg_len)])  # (N,) [m] arc length
        self.window = window
        self.index = 0  # current segment
        self.progress = 0.0  # [m] along the route

    @property
    def length(self) -> float:
        return float(self.cum[-1])

    @property
    def remaining(self) -> float:
        return self.length - self.progress

    def update(self, xy: Sequence[float]) -> float:
        """Advance to the car's position; returns its distance to the route [m]."""
        lo = max(self.index - 1, 0)
        hi = min(self.index + self.window, len(self.seg_len))
        rel = np.asarray(xy, dtype=np.float64) - self.points[lo:hi]  # (K, 2)
        t = np.clip(np.einsum("kd,kd->k", rel, self.seg_dir[lo:hi]), 0.0, self.seg_len[lo:hi])
        foot = self.points[lo:hi] + t[:, None] * self.seg_dir[lo:hi]  # (K, 2)
        dist = np.linalg.norm(np.asarray(xy) - foot, axis=1)  # (K,)
        k = int(np.argmin(dist))
        s = float(self.cum[lo + k] + t[k])
        if s >= self.progress:
            self.index, self.progress = lo + k, s
        return float(dist[k])

    def point_at(self, s: float | np.ndarray) -> np.ndarray:
        """Points (…, 2) at arc lengths ``s`` [m], clamped to the route."""
        s = np.clip(np.asarray(s, dtype=np.float64), 0.0, self.length)
        return np.stack(
            [np.interp(s, self.cum, self.points[:, 0]), np.interp(s, self.cum, self.points[:, 1])],
            axis=-1,
        )

    def lookahead(self, n: int, spacing: float) -> np.ndarray:
        """(n, 2) world points [m] at spacing, 2*spacing, ... ahead of the progress point."""
        return self.point_at(self.progress + spacing * np.arange(1, n + 1))

    def direction(self) -> np.ndarray:
        """(2,) unit direction of the route at the progress point."""
        return self.seg_dir[min(self.index, len(self.seg_dir) - 1)]

    def done(self, tolerance: float) -> bool:
        return self.remaining <= tolerance
