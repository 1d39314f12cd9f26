"""Tests of the CARLA backend's pure logic (envs/carla/core.py): tag mapping, geometry, rays,
sensor vector, route, actions, stuck detection.

They run without the carla client, except those marked ``needs_carla``, which compare with the
client's classes (Transform, Location, CityObjectLabel; these work without a server).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pytest
from carla_fakes import Waypoint, carla, forking, needs_carla

from drive_attention.envs.carla.core import (
    CARLA_TAGS,
    LIGHT_STATES,
    Readings,
    RouteTracker,
    SensorScales,
    StuckDetector,
    action_to_control,
    assemble_sensors,
    bgra_to_rgb,
    box_corners,
    cast_rays,
    ego_region_mask,
    labels_from_segmentation,
    lane_errors,
    make_sensor_names,
    project_box_mask,
    random_route,
    rotation_matrix,
    world_to_ego,
)
from drive_attention.envs.contract import CLASS_ID, ROAD_CLASSES, sensor_groups

# ==============================================================================================
# Tags -> road-label classes
# ==============================================================================================


@needs_carla
def test_tag_table_matches_the_installed_carla_client() -> None:
    names = {str(k): int(v) for k, v in carla.CityObjectLabel.names.items() if str(k) != "Any"}
    assert names == CARLA_TAGS


@pytest.mark.parametrize(
    ("tag", "cls"),
    [
        ("Roads", "road"),
        ("RoadLines", "lane_marking"),
        ("Car", "vehicle"),
        ("Truck", "vehicle"),
        ("Bus", "vehicle"),
        ("Motorcycle", "vehicle"),
        ("Bicycle", "vehicle"),
        ("Pedestrians", "pedestrian"),
        ("Rider", "pedestrian"),
        ("TrafficLight", "traffic_light"),
        ("Sidewalks", "off_road"),
        ("Buildings", "off_road"),
        ("Sky", "off_road"),
        ("NONE", "off_road"),
    ],
)
def test_tag_to_class(tag: str, cls: str) -> None:
    bgra = np.zeros((1, 1, 4), np.uint8)
    bgra[0, 0, 2] = CARLA_TAGS[tag]
    assert labels_from_segmentation(bgra)[0, 0] == CLASS_ID[cls]


def _segmentation(tags: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """BGRA image: tag in red, object code in green (low byte) and blue (high byte)."""
    bgra = np.zeros((*tags.shape, 4), np.uint8)
    bgra[..., 2] = tags
    bgra[..., 1] = codes & 0xFF
    bgra[..., 0] = codes >> 8
    return bgra


def test_ego_pixels_are_the_dominant_vehicle_instance_in_the_ego_region() -> None:
    tags = np.full((4, 6), CARLA_TAGS["Roads"])
    codes = np.zeros((4, 6), np.int64)
    tags[2:, 1:5] = CARLA_TAGS["Car"]  # the ego, seen from behind
    codes[2:, 1:5] = 700  # > 255: uses the blue byte too
    tags[2:, 5] = CARLA_TAGS["Car"]  # another car beside the ego's silhouette
    codes[2:, 5] = 9
    tags[0, 0] = CARLA_TAGS["RoadLines"]
    region = np.zeros((4, 6), bool)
    region[1:, 1:] = True  # projected ego box (covers the other car's pixels too)
    bgra = _segmentation(tags, codes)

    labels = labels_from_segmentation(bgra, region, instance=True)
    assert labels.dtype == np.uint8 and labels.shape == (4, 6)
    assert (labels[2:, 1:5] == CLASS_ID["ego"]).all()
    assert (labels[2:, 5] == CLASS_ID["vehicle"]).all()
    assert labels[0, 0] == CLASS_ID["lane_marking"] and labels[0, 1] == CLASS_ID["road"]
    # Semantic camera (no instance codes): every vehicle pixel in the region is ego.
    semantic = labels_from_segmentation(bgra, region, instance=False)
    assert (semantic[2:, 1:6] == CLASS_ID["ego"]).all()
    # No region: the ego stays a vehicle.
    assert not (labels_from_segmentation(bgra) == CLASS_ID["ego"]).any()
    assert labels.max() < len(ROAD_CLASSES)


def test_bgra_to_rgb() -> None:
    bgra = np.array([[[1, 2, 3, 255], [4, 5, 6, 255]]], np.uint8)
    rgb = bgra_to_rgb(bgra.tobytes(), 1, 2)
    assert rgb.tolist() == [[[3, 2, 1], [6, 5, 4]]] and rgb.flags["C_CONTIGUOUS"]


# ==============================================================================================
# Geometry
# ==============================================================================================


@needs_carla
def test_rotation_matrix_matches_carla_transform() -> None:
    rng = np.random.default_rng(0)
    for pitch, yaw, roll in rng.uniform(-180, 180, size=(5, 3)):
        tf = carla.Transform(carla.Location(), carla.Rotation(pitch=pitch, yaw=yaw, roll=roll))
        expected = np.array(tf.get_matrix())[:3, :3]
        np.testing.assert_allclose(rotation_matrix(pitch, yaw, roll), expected, atol=1e-5)


@needs_carla
def test_world_to_ego_matches_carla_inverse_transform() -> None:
    ego = carla.Transform(carla.Location(x=10.0, y=-4.0), carla.Rotation(yaw=35.0))
    points = np.array([[12.0, -1.0], [0.0, 0.0], [10.0, -4.0]])
    ours = world_to_ego(points, (10.0, -4.0), math.radians(35.0))
    for p, q in zip(points, ours):
        local = ego.inverse_transform(carla.Location(x=p[0], y=p[1]))
        np.testing.assert_allclose(q, [local.x, local.y], atol=1e-4)


def test_lane_errors_signs() -> None:
    # Lane along +x at y=0; a car 0.5 m to the right (y > 0 in CARLA) heading 10 deg right.
    offset, heading = lane_errors((3.0, 0.5), math.radians(10), (3.0, 0.0), 0.0)
    assert offset == pytest.approx(0.5) and heading == pytest.approx(math.radians(10))
    # A lane heading 175 deg (towards -x): its right side is -y; angles wrap across +-180 deg.
    offset, heading = lane_errors((0.0, -1.0), math.radians(-175), (0.0, 0.0), math.radians(175))
    assert offset == pytest.approx(math.cos(math.radians(5))) and heading == pytest.approx(
        math.radians(10)
    )


def test_ego_box_projection_for_chase_hood_and_front_cameras() -> None:
    center, extent = (0.0, 0.0, 0.75), (2.4, 1.0, 0.75)  # a car, origin at ground level
    chase = ego_region_mask(center, extent, (-5.5, 0.0, 2.8), (-15.0, 0.0, 0.0), (64, 64), 90.0)
    assert chase is not None and 0.05 < chase.mean() < 0.6
    rows, cols = np.nonzero(chase)
    assert rows.max() >= 40 and abs(cols.mean() - 31.5) < 2  # bottom centre, symmetric
    assert not chase[-1].any()  # the road between the camera and the car's rear
    # A camera inside the box (hood camera) cannot tell the ego from cars ahead: no region.
    assert ego_region_mask(center, extent, (0.5, 0.0, 1.4), (0, 0, 0), (64, 64), 90.0) is None
    # Clipping at the near plane: a camera just behind the bumper sees the box's rear face fill
    # its view without blowing up.
    close = project_box_mask(box_corners(center, extent), (-2.5, 0, 0.75), (0, 0, 0), (8, 8), 90)
    assert close.all()
    ahead = ego_region_mask(center, extent, (10.0, 0.0, 1.0), (0, 0, 0), (64, 64), 90.0)
    assert ahead is not None and not ahead.any()  # a camera ahead looking forward


# ==============================================================================================
# Range rays
# ==============================================================================================


def test_rays_hit_boxes_with_distance_and_closing_speed() -> None:
    # Ego at the origin heading +x at 10 m/s; a car 12 m ahead (half length 2) doing 4 m/s,
    # a pedestrian 3 m to the right standing still.
    centers = np.array([[12.0, 0.0], [0.0, 3.0]])
    extents = np.array([[2.0, 1.0], [0.3, 0.3]])
    velocities = np.array([[4.0, 0.0], [0.0, 0.0]])
    dist, closing = cast_rays(
        (0.0, 0.0), 0.0, (10.0, 0.0), centers, extents, np.zeros(2), velocities, 4, 50.0
    )
    # ray 0 ahead, 1 right (+y), 2 behind, 3 left
    np.testing.assert_allclose(dist, [10.0, 2.7, 50.0, 50.0], atol=1e-9)
    np.testing.assert_allclose(closing, [6.0, 0.0, 0.0, 0.0], atol=1e-9)
    # Rotated ego (heading +y): ray 0 now sees the pedestrian; a rotated box is handled too: ray
    # 3 (along +x) meets the car, yawed 0.3 rad, on its rear face, 2 / cos(0.3) m before its
    # centre (10.0 m away if the yaw were ignored).
    dist, _ = cast_rays(
        (0.0, 0.0), math.pi / 2, (0, 0), centers, extents, np.array([0.3, 0.0]), velocities, 4, 50
    )
    assert dist[0] == pytest.approx(2.7) and dist[3] == pytest.approx(12.0 - 2.0 / math.cos(0.3))
    # Inside a box -> 0; nothing around -> range; out of range -> range.
    assert (
        cast_rays((12, 0), 0, (0, 0), centers, extents, np.zeros(2), velocities, 2, 50)[0][0] == 0
    )
    empty = cast_rays((0, 0), 0, (0, 0), np.zeros((0, 2)), np.zeros((0, 2)), [], [], 3, 30.0)
    np.testing.assert_array_equal(empty[0], [30.0] * 3)
    far = cast_rays((0, 0), 0, (0, 0), centers * 10, extents, np.zeros(2), velocities, 1, 50.0)
    assert far[0][0] == 50.0 and far[1][0] == 0.0


# ==============================================================================================
# Sensor vector
# ==============================================================================================


def test_sensor_names_follow_the_contract() -> None:
    names = make_sensor_names(n_route_points=3, n_rays=2)
    assert names[:5] == ("ego.speed", "ego.accel", "ego.yaw_rate", "lane.offset",
                         "lane.heading_error")  # fmt: skip
    assert "route.02.y" in names and "light.red" in names and names[-1] == "rays.01.closing_speed"
    assert len(set(names)) == len(names) == 5 + 6 + 4 + 4
    groups = sensor_groups(names)
    assert list(groups) == ["ego", "lane", "route", "light", "rays"]
    assert [names[i] for i in groups["rays"]] == [
        "rays.00.distance", "rays.00.closing_speed", "rays.01.distance", "rays.01.closing_speed"
    ]  # fmt: skip


def _readings(**overrides: Any) -> Readings:
    values: dict[str, Any] = {
        "speed": 6.0,
        "accel": -5.0,
        "yaw_rate": 0.25,
        "lane_offset": 0.875,
        "lane_width": 3.5,
        "heading_error": math.pi / 4,
        "route_points": np.array([[5.0, 0.0], [10.0, 20.0]]),
        "light_state": "red",
        "light_distance": 12.5,
        "ray_distance": np.array([25.0, 50.0]),
        "ray_closing_speed": np.array([3.0, -30.0]),
    }
    return Readings(**{**values, **overrides})


def test_sensor_vector_assembly_scales_orders_and_clips() -> None:
    names = make_sensor_names(2, 2)
    scales = SensorScales(speed=12.0, route=10.0, light=50.0, ray=50.0)
    vec = assemble_sensors(_readings(), scales)
    assert vec.dtype == np.float32 and vec.shape == (len(names),)
    got = dict(zip(names, vec.tolist()))
    expected = {
        "ego.speed": 0.5,
        "ego.accel": -0.5,
        "ego.yaw_rate": 0.25,
        "lane.offset": 0.25,
        "lane.heading_error": 0.25,
        "route.00.x": 0.5,
        "route.00.y": 0.0,
        "route.01.x": 1.0,
        "route.01.y": 1.0,  # 20 m / 10 m, clipped
        "light.red": 1.0,
        "light.yellow": 0.0,
        "light.green": 0.0,
        "light.distance": 0.25,
        "rays.00.distance": 0.5,
        "rays.00.closing_speed": 0.25,
        "rays.01.distance": 1.0,
        "rays.01.closing_speed": -1.0,
    }
    assert got == pytest.approx(expected)
    none = dict(zip(names, assemble_sensors(_readings(light_state=None), scales).tolist()))
    assert [none[f"light.{s}"] for s in LIGHT_STATES] == [0, 0, 0] and none["light.distance"] == 1
    wild = assemble_sensors(_readings(speed=1e9, accel=np.nan, heading_error=7.0), scales)
    assert np.isfinite(wild).all() and np.abs(wild).max() <= 1.5


# ==============================================================================================
# Route
# ==============================================================================================


@needs_carla
def test_random_route_follows_waypoints_draws_branches_and_stops_at_dead_ends() -> None:
    routes = {}
    for seed in range(6):
        wps = random_route(Waypoint(0, 0, 0, forking), 60.0, 2.0, np.random.default_rng(seed))
        xy = np.array([[w.transform.location.x, w.transform.location.y] for w in wps])
        steps = np.linalg.norm(np.diff(xy, axis=0), axis=1)
        assert 60.0 <= steps.sum() < 64.0 and (steps < 4.0).all()  # one longer step at the fork
        routes[seed] = xy
    assert len({r[-1, 1] > 0 for r in routes.values()}) == 2  # both branches drawn
    again = random_route(Waypoint(0, 0, 0, forking), 60.0, 2.0, np.random.default_rng(3))
    np.testing.assert_allclose([[w.transform.location.x, w.transform.location.y] for w in again],
                               routes[3])  # fmt: skip
    short = random_route(Waypoint(990, 0), 100.0, 2.0, np.random.default_rng(0))
    assert len(short) == 6  # 990..1000, then a dead end


def test_route_tracker_progress_distance_lookahead_and_goal() -> None:
    route = RouteTracker(np.array([[0, 0], [10, 0], [10, 10], [10, 10]]))  # repeated point ok
    assert route.length == pytest.approx(20.0)
    assert route.update((4.0, 1.0)) == pytest.approx(1.0) and route.progress == pytest.approx(4)
    np.testing.assert_allclose(route.direction(), [1.0, 0.0])
    np.testing.assert_allclose(route.lookahead(3, 5.0), [[9, 0], [10, 4], [10, 9]])
    assert route.update((11.0, 6.0)) == pytest.approx(1.0) and route.progress == pytest.approx(16)
    np.testing.assert_allclose(route.direction(), [0.0, 1.0])
    route.update((3.0, 0.0))  # driving back does not undo progress
    assert route.progress == pytest.approx(16) and not route.done(3.0)
    route.update((10.0, 18.0))
    assert route.done(3.0) and route.remaining == pytest.approx(0.0)
    np.testing.assert_allclose(route.lookahead(2, 5.0), [[10, 10], [10, 10]])  # clamped
    with pytest.raises(ValueError, match="two distinct points"):
        RouteTracker(np.array([[1, 1], [1, 1]]))


def test_route_tracker_does_not_jump_to_a_later_pass_nearby() -> None:
    # A U-shaped route whose way back passes 2 m from the start.
    pts = np.array([[0, 0], [50, 0], [50, 2], [0, 2]], dtype=float)
    dense = np.concatenate([np.linspace(a, b, 26)[:-1] for a, b in itertools.pairwise(pts)])
    route = RouteTracker(dense)
    route.update((1.0, 1.2))  # nearer to the way back, but that is far ahead along the route
    assert route.progress < 5.0


# ==============================================================================================
# Actions, reward, episode bookkeeping
# ==============================================================================================


def test_action_mapping() -> None:
    c = action_to_control(np.array([0.5, 0.8], np.float32))
    assert (c.steer, c.throttle, c.brake) == pytest.approx((0.5, 0.8, 0.0))
    c = action_to_control([-2.0, -0.3])
    assert (c.steer, c.throttle, c.brake) == pytest.approx((-1.0, 0.0, 0.3))
    c = action_to_control([0.0, 0.0])
    assert (c.throttle, c.brake) == (0.0, 0.0)
    for bad in ([0.0], [0.0, np.nan], [[1, 2], [3, 4]]):
        with pytest.raises(ValueError, match="steer, accel"):
            action_to_control(bad)


def test_stuck_detector() -> None:
    stuck = StuckDetector(steps=3, speed=0.5)
    assert [stuck.update(0.0, False) for _ in range(2)] == [False, False]
    assert not stuck.update(0.0, True)  # waiting at a red light resets
    assert [stuck.update(0.1, False) for _ in range(3)] == [False, False, True]
    assert not stuck.update(2.0, False)
