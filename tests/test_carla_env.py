"""Tests of the CARLA backend (envs/carla_env.py, carla_core.py, carla_runtime.py, carla_config.py).

Layers:
- pure logic (tag mapping, geometry, rays, sensor vector, route, actions, reward, bookkeeping),
  with the real ``carla`` module where its classes work without a server (Transform, Location,
  WorldSettings, CityObjectLabel, Client and its timeout);
- the env glued to ``FakeServer``, a tiny in-process stand-in for a CARLA server (a straight road
  along +x). Fakes are used only because no CARLA server runs here: they check the env's own
  flow (set-up, synchronous ticking, observation, reward, episode end, actor clean-up, settings
  restore, server loss and reconnection), not CARLA's behaviour;
- what happens with no server at all (fails fast, says how to start one);
- integration tests against a real server (``@pytest.mark.carla``), skipped when none answers at
  CARLA_HOST:CARLA_PORT (default localhost:2000).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import itertools
import math
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

import envs  # noqa: F401  (registers the ids)
from envs.carla.config import DEFAULT_REWARD_WEIGHTS, CarlaEnvConfig, default_host, default_port
from envs.carla.core import (
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
from envs.carla.runtime import (
    ActorRegistry,
    CarlaConnectionError,
    CarlaServerLost,
    EventLog,
    SensorQueue,
    SettingsGuard,
    is_connection_error,
    probe_server,
    with_retries,
)
from envs.configuration import ConfigError, build
from envs.contract import CLASS_ID, EPISODE_KEYS, REWARD_TERMS, ROAD_CLASSES, sensor_groups

carla = pytest.importorskip(
    "carla", reason="the carla client is not installed: pip install -e '.[carla]'"
)

ENV_ID = "DriveAttention/Carla-v0"
if ENV_ID not in gym.registry:  # until envs/__init__.py registers it
    gym.register(id=ENV_ID, entry_point="envs.carla.env:CarlaDriveEnv")

from envs.carla.env import CarlaDriveEnv  # noqa: E402  (after the importorskip)


def free_port() -> int:
    """A local TCP port with nothing listening on it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ==============================================================================================
# Configuration
# ==============================================================================================


def test_config_host_and_port_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CARLA_HOST", raising=False)
    monkeypatch.delenv("CARLA_PORT", raising=False)
    assert (build(CarlaEnvConfig, {}).host, build(CarlaEnvConfig, {}).port) == ("localhost", 2000)
    monkeypatch.setenv("CARLA_HOST", "sim.example")
    monkeypatch.setenv("CARLA_PORT", "3000")
    cfg = build(CarlaEnvConfig, {})
    assert (cfg.host, cfg.port) == ("sim.example", 3000)
    assert build(CarlaEnvConfig, {"host": "h", "port": 4000}).port == 4000  # explicit wins
    monkeypatch.setenv("CARLA_PORT", "two thousand")
    with pytest.raises(ConfigError, match="CARLA_PORT"):
        build(CarlaEnvConfig, {})


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"camera_sise": (64, 64)}, "did you mean 'camera_size'"),
        ({"n_vehicles": "10"}, "n_vehicles"),
        ({"camera_size": (64,)}, "camera_size"),
        ({"camera_size": (4, 4)}, "camera_size"),
        ({"fixed_delta_s": 0.5}, "fixed_delta_s"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"port": 70000}, "port"),
        ({"weather": "ClearNon"}, "did you mean 'ClearNoon'"),
        ({"reward_weights": {"speed": 1.0}}, "reward_weights.speed"),
        ({"reward_weights": {"goal": "high"}}, "reward_weights.goal"),
        ({"on_server_loss": "ignore"}, "on_server_loss"),
        ({"speed_range": (10.0, 5.0)}, "speed_range"),
        ({"action": "discrete"}, "action"),
    ],
)
def test_config_errors_name_the_option(kwargs: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        build(CarlaEnvConfig, kwargs)


def test_config_reward_weights_are_merged_over_the_defaults() -> None:
    cfg = build(CarlaEnvConfig, {"reward_weights": {"collision": 5}, "duration_s": 10.0})
    assert set(cfg.reward_weights) == set(REWARD_TERMS) == set(DEFAULT_REWARD_WEIGHTS)
    assert cfg.reward_weights["collision"] == 5.0
    assert cfg.max_steps == 200  # 10 s / 0.05 s


def test_training_config_env_kwargs_validate() -> None:
    import yaml

    config = yaml.safe_load(open("configs/carla.yaml"))
    assert config["env"]["id"] == ENV_ID
    cfg = build(CarlaEnvConfig, config["env"]["kwargs"])
    assert cfg.camera_size == (64, 64) and cfg.on_server_loss == "truncate"


def test_make_builds_spaces_without_a_server() -> None:
    env = gym.make(ENV_ID, camera_size=(32, 48), frame_stack=2, n_rays=4, n_route_points=3)
    space = env.observation_space
    assert space["camera"].shape == (32, 48, 6) and space["camera"].dtype == np.uint8
    names = env.unwrapped.sensor_names
    assert space["sensors"].shape == (len(names),) and space["sensors"].dtype == np.float32
    assert env.action_space.shape == (2,) and env.action_space.dtype == np.float32
    assert env.unwrapped.sensor_groups == sensor_groups(names)
    env.close()
    with pytest.raises(ConfigError, match="camera_sise"):
        gym.make(ENV_ID, camera_sise=(64, 64))


# ==============================================================================================
# Tags -> road-label classes
# ==============================================================================================


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


def test_rotation_matrix_matches_carla_transform() -> None:
    rng = np.random.default_rng(0)
    for pitch, yaw, roll in rng.uniform(-180, 180, size=(5, 3)):
        tf = carla.Transform(carla.Location(), carla.Rotation(pitch=pitch, yaw=yaw, roll=roll))
        expected = np.array(tf.get_matrix())[:3, :3]
        np.testing.assert_allclose(rotation_matrix(pitch, yaw, roll), expected, atol=1e-5)


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
    # Rotated ego (heading +y): ray 0 now sees the pedestrian; a rotated box is handled too.
    dist, _ = cast_rays(
        (0.0, 0.0), math.pi / 2, (0, 0), centers, extents, np.array([0.3, 0.0]), velocities, 4, 50
    )
    assert dist[0] == pytest.approx(2.7) and dist[3] == pytest.approx(10.0, abs=0.4)
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


class Waypoint:
    """Fake carla.Waypoint on a graph of straight lanes (no server here)."""

    def __init__(self, x: float, y: float, yaw: float = 0.0, branches: Any = None) -> None:
        self.transform = carla.Transform(carla.Location(x=x, y=y), carla.Rotation(yaw=yaw))
        self.lane_width = 3.5
        self._branches = branches  # callable(self, d) -> list[Waypoint]

    def next(self, d: float) -> list[Waypoint]:
        if self._branches is not None:
            return self._branches(self, d)
        loc = self.transform.location
        return [Waypoint(loc.x + d, loc.y)] if loc.x + d <= 1000 else []


def _forking(wp: Waypoint, d: float) -> list[Waypoint]:
    """Straight along +x until x=20, then either keep straight or turn onto y=x-20 (+y)."""
    x, y = wp.transform.location.x, wp.transform.location.y
    if y > 0 or (x >= 20 and y >= 0 and wp.transform.rotation.yaw == 45.0):
        s = d / math.sqrt(2)
        return [Waypoint(x + s, y + s, 45.0, _forking)]
    if x < 20 <= x + d:
        return [
            Waypoint(x + d, 0.0, 0.0, _forking),
            Waypoint(20 + d / 1.5, d / 1.5, 45.0, _forking),
        ]
    return [Waypoint(x + d, 0.0, 0.0, _forking)] if x + d < 200 else []


def test_random_route_follows_waypoints_draws_branches_and_stops_at_dead_ends() -> None:
    routes = {}
    for seed in range(6):
        wps = random_route(Waypoint(0, 0, 0, _forking), 60.0, 2.0, np.random.default_rng(seed))
        xy = np.array([[w.transform.location.x, w.transform.location.y] for w in wps])
        steps = np.linalg.norm(np.diff(xy, axis=0), axis=1)
        assert 60.0 <= steps.sum() < 64.0 and (steps < 4.0).all()  # one longer step at the fork
        routes[seed] = xy
    assert len({r[-1, 1] > 0 for r in routes.values()}) == 2  # both branches drawn
    again = random_route(Waypoint(0, 0, 0, _forking), 60.0, 2.0, np.random.default_rng(3))
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


# ==============================================================================================
# Actor bookkeeping, settings, sensor queues, retries
# ==============================================================================================


class Actor:
    """Fake carla.Actor recording destroy order (no server here)."""

    def __init__(self, log: list[int], actor_id: int, type_id: str = "vehicle.x",
                 alive: bool = True, fail: bool = False) -> None:  # fmt: skip
        self.log, self.id, self.type_id, self._alive, self.fail = (
            log,
            actor_id,
            type_id,
            alive,
            fail,
        )
        self.listening = type_id.startswith("sensor.")
        self.stopped = False

    @property
    def is_alive(self) -> bool:
        return self._alive

    def is_listening(self) -> bool:  # a method in 0.9.16, a property before
        return self.listening

    def stop(self) -> None:
        self.stopped, self.listening = True, False

    def destroy(self) -> bool:
        if self.fail:
            raise RuntimeError("time-out of 2000ms while waiting for the simulator")
        self.log.append(self.id)
        self._alive = False
        return True


def test_registry_destroys_newest_first_and_tolerates_dead_actors() -> None:
    log: list[int] = []
    registry = ActorRegistry()
    ego = registry.add(Actor(log, 1))
    registry.add(Actor(log, 2, alive=False))  # already destroyed by someone else
    walker = registry.add(Actor(log, 3, "walker.pedestrian.0001"))
    controller = registry.add(Actor(log, 4, "controller.ai.walker"))
    camera = registry.add(Actor(log, 5, "sensor.camera.rgb"))
    assert len(registry) == 5 and registry.ids == [1, 2, 3, 4, 5]
    report = registry.destroy_all()
    assert log == [5, 4, 3, 1]  # sensor and controller before what they belong to
    assert (report.destroyed, report.already_gone, report.failed) == (4, 1, [])
    assert camera.stopped and controller.stopped and not walker.stopped and not ego.stopped
    assert len(registry) == 0 and registry.destroy_all().destroyed == 0  # idempotent


class ActorList(list):
    def filter(self, pattern: str) -> ActorList:
        return ActorList(a for a in self if fnmatch.fnmatch(a.type_id, pattern))


def test_registry_gives_up_on_a_dead_server_and_purges_orphans_later() -> None:
    log: list[int] = []
    registry = ActorRegistry()
    actors = [registry.add(Actor(log, i, fail=True)) for i in range(1, 7)]
    report = registry.destroy_all(give_up_after=2)
    assert (report.destroyed, len(report.failed), report.abandoned) == (0, 2, 4)
    assert set(registry.orphans) == {1, 2, 3, 4, 5, 6}
    registry.add(Actor(log, 7, "sensor.other.imu"))
    assert registry.forget() == 1 and 7 in registry.orphans
    for a in actors:
        a.fail = False
    # The server is back: id 2 now belongs to a traffic light of a restarted world -> untouched.
    world_actors = ActorList([actors[0], Actor(log, 2, "traffic.traffic_light"), actors[3]])

    class World:
        def get_actors(self, ids: list[int]) -> ActorList:
            return ActorList(a for a in world_actors if a.id in ids)

    assert registry.purge_orphans(World()) == 2 and sorted(log) == [1, 4]
    assert registry.orphans == {}


class SettingsWorld:
    """Fake carla.World holding real carla.WorldSettings (no server here)."""

    def __init__(self, settings: Any) -> None:
        self.settings, self.applied = settings, []

    def get_settings(self) -> Any:
        s = carla.WorldSettings()
        for name in ("synchronous_mode", "fixed_delta_seconds", "no_rendering_mode"):
            setattr(s, name, getattr(self.settings, name))
        return s

    def apply_settings(self, settings: Any) -> int:
        self.applied.append(settings)
        self.settings = settings
        return len(self.applied)


class TrafficManager:
    def __init__(self) -> None:
        self.sync: list[bool] = []

    def set_synchronous_mode(self, mode: bool) -> None:
        self.sync.append(mode)

    def set_random_device_seed(self, seed: int) -> None:
        self.seed = seed


def test_settings_guard_applies_synchronous_mode_and_restores_the_original() -> None:
    original = carla.WorldSettings(no_rendering_mode=True)
    original.fixed_delta_seconds = None  # variable time step
    world, tm = SettingsWorld(original), TrafficManager()
    guard = SettingsGuard(carla.WorldSettings)
    guard.apply_synchronous(world, tm, 0.05)
    assert world.settings.synchronous_mode and world.settings.fixed_delta_seconds == 0.05
    assert world.settings.no_rendering_mode  # other fields kept
    guard.apply_synchronous(world, tm, 0.1)  # reconnect: the first saved settings are kept
    assert guard.restore(world, tm)
    assert not world.settings.synchronous_mode and world.settings.fixed_delta_seconds is None
    assert world.settings.no_rendering_mode and tm.sync == [True, True, False]
    assert not guard.restore(world, tm)  # nothing left to restore


def test_sensor_queue_matches_frames_and_times_out() -> None:
    q = SensorQueue("rgb camera")

    class Data:
        def __init__(self, frame: int) -> None:
            self.frame = frame

    for f in (3, 4, 5):
        q(Data(f))
    assert q.get(4, 1.0).frame == 4  # frame 3 dropped
    assert q.get(4, 1.0).frame == 5  # a newer frame is returned as is
    threading.Timer(0.05, q, args=(Data(6),)).start()  # data arriving from another thread
    assert q.get(6, 1.0).frame == 6
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="rgb camera sensor sent no data for frame 7"):
        q.get(7, 0.2)
    assert time.monotonic() - start < 1.0
    log = EventLog()
    log("a")
    log("b")
    assert log.drain() == ["a", "b"] and log.drain() == []


def test_with_retries_is_bounded_and_only_retries_connection_errors() -> None:
    calls, sleeps = [], []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise CarlaConnectionError("refused")
        return "ok"

    assert with_retries(flaky, 3, 2.0, "connect", sleep=sleeps.append) == "ok"
    assert sleeps == [2.0, 2.0]
    calls.clear()
    with pytest.raises(CarlaConnectionError, match="failed after 2 attempt"):
        with_retries(lambda: flaky() and flaky(), 2, 0.0, "connect", sleep=sleeps.append)
    with pytest.raises(ValueError):
        with_retries(lambda: (_ for _ in ()).throw(ValueError("bug")), 3, 0.0, "x")


def test_connection_error_classification() -> None:
    assert is_connection_error(RuntimeError("time-out of 2000ms while waiting for the simulator"))
    assert is_connection_error(TimeoutError("no data"))
    assert is_connection_error(CarlaServerLost("gone"))
    assert not is_connection_error(RuntimeError("Spawn failed because of collision"))
    assert not is_connection_error(ValueError("bug"))


# ==============================================================================================
# Probing an address, and the real client's timeout
# ==============================================================================================


class TinyServer:
    """A TCP server answering every connection with ``reply`` (None: accept and stay silent)."""

    def __init__(self, reply: bytes | None) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.reply = reply
        self.requests: list[bytes] = []
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            try:
                conn.settimeout(1.0)
                self.requests.append(conn.recv(256))
                if self.reply is not None:
                    conn.sendall(self.reply)
            except OSError:
                pass

    def close(self) -> None:
        for c in self.conns:
            c.close()
        self.sock.close()


@pytest.fixture
def tiny_server(request: pytest.FixtureRequest) -> Iterator[TinyServer]:
    server = TinyServer(request.param)
    yield server
    server.close()


def test_probe_refused_port_fails_at_once_with_how_to_start_a_server() -> None:
    start = time.monotonic()
    with pytest.raises(CarlaConnectionError, match="connection refused") as err:
        probe_server("127.0.0.1", free_port(), 2.0)
    assert time.monotonic() - start < 1.0
    assert "CarlaUE4.sh -RenderOffScreen" in str(err.value) and "docker run" in str(err.value)
    with pytest.raises(CarlaConnectionError, match="cannot resolve"):
        probe_server("no-such-host.invalid", 2000, 2.0)


@pytest.mark.parametrize("tiny_server", [b"HTTP/1.1 400 Bad Request\r\n\r\n"], indirect=True)
def test_probe_rejects_a_service_that_is_not_carla(tiny_server: TinyServer) -> None:
    # libcarla would abort the whole process on such an answer; the probe stops before that.
    with pytest.raises(CarlaConnectionError, match=r"not a CARLA server.*HTTP/1\.1 400"):
        probe_server("127.0.0.1", tiny_server.port, 2.0)


@pytest.mark.parametrize("tiny_server", [None], indirect=True)
def test_probe_of_a_silent_service_times_out(tiny_server: TinyServer) -> None:
    start = time.monotonic()
    with pytest.raises(CarlaConnectionError, match=r"did not answer within 0\.5 s"):
        probe_server("127.0.0.1", tiny_server.port, 0.5)
    assert 0.4 < time.monotonic() - start < 1.5


@pytest.mark.parametrize("tiny_server", [bytes([0x94, 0x01, 0x00, 0xC0, 0xC0])], indirect=True)
def test_probe_accepts_a_msgpack_rpc_answer_and_sends_what_libcarla_sends(
    tiny_server: TinyServer,
) -> None:
    probe_server("127.0.0.1", tiny_server.port, 2.0)
    # libcarla 0.9.16's get_server_version() request, recorded from the real client:
    # [0, msgid, "version", [[False]]] (msgid 0 here, 1 in libcarla's first call).
    assert tiny_server.requests[0] == bytes.fromhex("940000a776657273696f6e9191c2")


def test_real_carla_client_times_out_within_its_timeout() -> None:
    """Measured here: carla.Client(...) returns at once; get_world() on a port with no server
    raises RuntimeError('time-out of 2000ms while waiting for the simulator, ...') after the
    timeout (2.0 s) and does not hang."""
    client = carla.Client("127.0.0.1", free_port())
    client.set_timeout(1.0)
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="time-out of 1000ms"):
        client.get_world()
    assert 0.8 < time.monotonic() - start < 3.0


# ==============================================================================================
# No server: make + reset fail fast and say how to start one
# ==============================================================================================


def test_reset_without_a_server_fails_within_the_timeout_with_instructions() -> None:
    env = gym.make(ENV_ID, host="127.0.0.1", port=free_port(), timeout_s=2.0, connect_retries=1)
    start = time.monotonic()
    with pytest.raises(CarlaConnectionError) as err:
        env.reset(seed=0)
    assert time.monotonic() - start < 2.5
    text = str(err.value)
    assert "no CARLA server is listening" in text and "carlasim/carla:0.9.16" in text
    assert "CARLA_HOST" in text
    env.close()


def test_reset_without_the_probe_relies_on_the_client_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(CarlaDriveEnv, "probe", staticmethod(lambda host, port, timeout: None))
    env = CarlaDriveEnv(host="127.0.0.1", port=free_port(), timeout_s=1.0, connect_retries=2,
                        retry_delay_s=0.1)  # fmt: skip
    start = time.monotonic()
    with pytest.raises(CarlaConnectionError, match=r"failed after 2 attempt.*did not answer"):
        env.reset()
    assert time.monotonic() - start < 2 * 1.0 + 0.1 + 1.5  # two timeouts and a pause
    env.close()


# ==============================================================================================
# The env on a fake server
# ==============================================================================================


def server_gone() -> RuntimeError:
    return RuntimeError("time-out of 2000ms while waiting for the simulator, make sure ...")


class FakeServer:
    """Stand-in for a CARLA server (no server here): a straight one-lane road along +x.

    The ego moves by a point-mass model; other actors stand still; cameras deliver a fixed scene
    (road, a lane line, the ego's silhouette bottom-centre); the segmentation camera uses
    instance codes (ego 700, another car 9).
    """

    worlds = 0

    def __init__(self, h: int = 48, w: int = 64) -> None:
        FakeServer.worlds += 1
        self.world_id = FakeServer.worlds
        self.alive = True
        self.frame = 100
        self.next_id = 1000
        self.actors: dict[int, FakeActor] = {}
        self.settings = carla.WorldSettings()  # asynchronous, variable step
        self.applied: list[Any] = []
        self.map_name = "Carla/Maps/Town01"
        self.loaded: list[str] = []
        self.tm = FakeTM(self)
        self.weather = None
        self.h, self.w = h, w
        self.rng = np.random.default_rng(0)
        self.fail_spawn: str | None = None  # a type id whose spawn raises

    def check(self) -> None:
        if not self.alive:
            raise server_gone()

    # world-level calls, reached through FakeWorld
    def spawn(self, bp: FakeBlueprint, tf: Any, parent: FakeActor | None) -> FakeActor | None:
        self.check()
        if self.fail_spawn and fnmatch.fnmatch(bp.id, self.fail_spawn):
            raise RuntimeError(f"Spawn failed: blueprint {bp.id} broke")
        if parent is None and bp.id.startswith("vehicle."):
            for a in self.actors.values():
                if a.type_id.startswith("vehicle.") and a.location.distance(tf.location) < 4.0:
                    return None  # spawn point occupied
        self.next_id += 1
        actor = FakeActor(self, self.next_id, bp.id, dict(bp.attributes), tf, parent)
        self.actors[actor.id] = actor
        return actor

    def tick(self) -> int:
        self.check()
        if not self.settings.synchronous_mode:
            raise AssertionError("the env ticked a world that is not in synchronous mode")
        dt = self.settings.fixed_delta_seconds
        self.frame += 1
        for a in list(self.actors.values()):
            if a.attributes.get("role_name") == "hero":
                a.move(dt)
        for a in list(self.actors.values()):
            if a.callback is not None:
                a.deliver(self.frame)
        return self.frame


class FakeTM:
    def __init__(self, server: FakeServer) -> None:
        self.server, self.sync = server, []

    def set_synchronous_mode(self, mode: bool) -> None:
        self.server.check()
        self.sync.append(mode)

    def set_random_device_seed(self, seed: int) -> None:
        self.server.check()


class FakeAttribute:
    def __init__(self, value: str, recommended: list[str] | None = None) -> None:
        self.value, self.recommended_values = value, recommended or []

    def as_int(self) -> int:
        return int(self.value)


class FakeBlueprint:
    def __init__(self, bp_id: str, **attributes: str) -> None:
        self.id, self.attributes = bp_id, dict(attributes)

    def has_attribute(self, name: str) -> bool:
        return name in self.attributes

    def set_attribute(self, name: str, value: str) -> None:
        assert name in self.attributes, f"{self.id} has no attribute {name}"
        self.attributes[name] = value

    def get_attribute(self, name: str) -> FakeAttribute:
        return FakeAttribute(self.attributes[name], ["1,2,3", "4,5,6"])


def blueprint_library() -> list[FakeBlueprint]:
    cam = {"image_size_x": "800", "image_size_y": "600", "fov": "90", "role_name": "front"}
    return [
        FakeBlueprint("vehicle.tesla.model3", number_of_wheels="4", role_name="", color=""),
        FakeBlueprint("vehicle.audi.tt", number_of_wheels="4", role_name="", color=""),
        FakeBlueprint("vehicle.yamaha.yzf", number_of_wheels="2", role_name=""),
        FakeBlueprint("walker.pedestrian.0001", is_invincible="true", role_name=""),
        FakeBlueprint("controller.ai.walker"),
        FakeBlueprint("sensor.camera.rgb", **cam),
        FakeBlueprint("sensor.camera.instance_segmentation", **cam),
        FakeBlueprint("sensor.camera.semantic_segmentation", **cam),
        FakeBlueprint("sensor.other.collision"),
        FakeBlueprint("sensor.other.lane_invasion"),
        FakeBlueprint("sensor.other.imu"),
    ]


class FakeLibrary:
    def __init__(self) -> None:
        self.bps = blueprint_library()

    def find(self, bp_id: str) -> FakeBlueprint:
        for bp in self.bps:
            if bp.id == bp_id:
                return FakeBlueprint(bp.id, **bp.attributes)
        raise IndexError(f"blueprint {bp_id!r} not found")

    def filter(self, pattern: str) -> list[FakeBlueprint]:
        return [
            FakeBlueprint(b.id, **b.attributes) for b in self.bps if fnmatch.fnmatch(b.id, pattern)
        ]


class FakeData:
    def __init__(self, frame: int, **fields: Any) -> None:
        self.frame = frame
        self.__dict__.update(fields)


class FakeActor:
    def __init__(self, server: FakeServer, actor_id: int, type_id: str, attributes: dict[str, str],
                 tf: Any, parent: FakeActor | None) -> None:  # fmt: skip
        self.server, self.id, self.type_id, self.attributes = server, actor_id, type_id, attributes
        self.parent = parent
        self.location = carla.Location(x=tf.location.x, y=tf.location.y, z=tf.location.z)
        self.yaw = tf.rotation.yaw  # [deg]
        self.speed = 0.0  # [m/s]
        self.control: Any = None
        self.callback: Any = None
        self.autopilot: tuple[bool, int] | None = None
        self.started = False
        self.bounding_box = (
            carla.BoundingBox(carla.Location(z=0.75), carla.Vector3D(2.4, 1.0, 0.75))
            if type_id.startswith("vehicle.")
            else carla.BoundingBox(carla.Location(z=0.9), carla.Vector3D(0.3, 0.3, 0.9))
        )

    @property
    def is_alive(self) -> bool:
        return self.id in self.server.actors

    def destroy(self) -> bool:
        self.server.check()
        if self.callback is not None:
            raise AssertionError(f"{self.type_id} destroyed while still listening")
        return self.server.actors.pop(self.id, None) is not None

    def get_transform(self) -> Any:
        self.server.check()
        src = self.parent or self
        return carla.Transform(carla.Location(src.location), carla.Rotation(yaw=src.yaw))

    def get_velocity(self) -> Any:
        yaw = math.radians(self.yaw)
        return carla.Vector3D(self.speed * math.cos(yaw), self.speed * math.sin(yaw), 0.0)

    def apply_control(self, control: Any) -> None:
        self.server.check()
        self.control = control

    def set_autopilot(self, enabled: bool, port: int) -> None:
        self.server.check()
        self.autopilot = (enabled, port)

    def is_at_traffic_light(self) -> bool:
        return False

    def get_traffic_light(self) -> None:
        return None

    def listen(self, callback: Any) -> None:
        self.callback = callback

    def is_listening(self) -> bool:
        return self.callback is not None

    def stop(self) -> None:
        self.server.check()
        self.callback = None
        self.started = False

    def start(self) -> None:
        self.started = True

    def go_to_location(self, location: Any) -> None:
        self.destination = location

    def set_max_speed(self, speed: float) -> None:
        self.max_speed = speed

    def move(self, dt: float) -> None:
        c = self.control
        if c is not None:
            self.speed = float(np.clip(self.speed + (4.0 * c.throttle - 8.0 * c.brake) * dt, 0, 30))
            self.yaw += math.degrees(c.steer * self.speed * dt * 0.2)
        yaw = math.radians(self.yaw)
        self.location = carla.Location(
            x=self.location.x + self.speed * math.cos(yaw) * dt,
            y=self.location.y + self.speed * math.sin(yaw) * dt,
            z=self.location.z,
        )

    def deliver(self, frame: int) -> None:
        s, kind = self.server, self.type_id
        if kind.startswith("sensor.camera."):
            h, w = int(self.attributes["image_size_y"]), int(self.attributes["image_size_x"])
            bgra = np.zeros((h, w, 4), np.uint8)
            bgra[..., 2] = CARLA_TAGS["Roads"]
            bgra[:, w // 2, 2] = CARLA_TAGS["RoadLines"]
            ego = (slice(int(0.65 * h), int(0.82 * h)), slice(w // 2 - 8, w // 2 + 8))
            bgra[(*ego, 2)] = CARLA_TAGS["Car"]  # the ego's rear, where the chase camera sees it
            bgra[(*ego, 1)], bgra[(*ego, 0)] = 700 & 0xFF, 700 >> 8
            bgra[:4, :4, 2], bgra[:4, :4, 1] = CARLA_TAGS["Car"], 9  # another car
            if kind == "sensor.camera.rgb":
                bgra[..., 1] = int(10 * self.parent.location.x) % 256  # the view changes
            self.callback(FakeData(frame, raw_data=bgra.tobytes(), width=w, height=h))
        elif kind == "sensor.other.imu":
            accel = carla.Vector3D(1.0, 0.0, 9.81)
            self.callback(FakeData(frame, accelerometer=accel, gyroscope=carla.Vector3D()))
        elif kind == "sensor.other.collision":
            ego = self.parent
            for other in s.actors.values():
                if other is not ego and other.type_id.startswith("vehicle.") and \
                        other.location.distance(ego.location) < 4.5:  # fmt: skip
                    self.callback(FakeData(frame, other_actor=other, normal_impulse=None))


class FakeWaypoint:
    def __init__(self, x: float, y: float = 0.0) -> None:
        self.transform = carla.Transform(carla.Location(x=x, y=y), carla.Rotation(yaw=0.0))
        self.lane_width = 3.5

    def next(self, d: float) -> list[FakeWaypoint]:
        x = self.transform.location.x + d
        return [FakeWaypoint(x)] if x < 5000 else []


class FakeLight:
    def __init__(self, server: FakeServer) -> None:
        self.id, self.state, self.server = 7, carla.TrafficLightState.Red, server

    def get_stop_waypoints(self) -> list[FakeWaypoint]:
        return [FakeWaypoint(600.0)]

    def get_transform(self) -> Any:
        return carla.Transform(carla.Location(x=605.0, y=3.0))


class FakeMap:
    def __init__(self, server: FakeServer) -> None:
        self.server, self.name = server, server.map_name

    def get_spawn_points(self) -> list[Any]:
        return [carla.Transform(carla.Location(x=40.0 * i, y=0.0, z=0.3)) for i in range(12)]

    def get_waypoint(self, location: Any, project_to_road: bool = True, lane_type: Any = None):
        if not project_to_road and abs(location.y) > 1.75:
            return None
        return FakeWaypoint(location.x)


class FakeWorld:
    def __init__(self, server: FakeServer) -> None:
        self.server, self.id = server, server.world_id

    def get_settings(self) -> Any:
        self.server.check()
        s = carla.WorldSettings()
        for name in ("synchronous_mode", "fixed_delta_seconds", "no_rendering_mode"):
            setattr(s, name, getattr(self.server.settings, name))
        return s

    def apply_settings(self, settings: Any) -> int:
        self.server.check()
        self.server.settings = settings
        self.server.applied.append(settings)
        return self.server.frame

    def get_map(self) -> FakeMap:
        self.server.check()
        return FakeMap(self.server)

    def get_blueprint_library(self) -> FakeLibrary:
        return FakeLibrary()

    def set_weather(self, weather: Any) -> None:
        self.server.check()
        self.server.weather = weather

    def set_pedestrians_seed(self, seed: int) -> None:
        self.server.rng = np.random.default_rng(seed)

    def try_spawn_actor(self, bp: FakeBlueprint, tf: Any, attach_to: Any = None) -> Any:
        return self.server.spawn(bp, tf, attach_to)

    def spawn_actor(self, bp: FakeBlueprint, tf: Any, attach_to: Any = None) -> Any:
        actor = self.server.spawn(bp, tf, attach_to)
        if actor is None:
            raise RuntimeError("Spawn failed because of collision at spawn position")
        return actor

    def tick(self, seconds: float = 10.0) -> int:
        return self.server.tick()

    def get_actors(self, ids: list[int] | None = None) -> ActorList:
        self.server.check()
        found = self.server.actors.values()
        return ActorList(a for a in found if ids is None or a.id in ids)

    def get_random_location_from_navigation(self) -> Any:
        return carla.Location(x=float(self.server.rng.uniform(0, 400)), y=6.0, z=0.2)

    def get_traffic_lights_from_waypoint(self, wp: Any, distance: float) -> list[FakeLight]:
        x = wp.transform.location.x
        return [FakeLight(self.server)] if 0 <= 600 - x <= distance else []


class FakeClient:
    def __init__(self, server: FakeServer) -> None:
        self.server = server

    def set_timeout(self, seconds: float) -> None:
        self.timeout = seconds

    def get_world(self) -> FakeWorld:
        self.server.check()
        return FakeWorld(self.server)

    def get_server_version(self) -> str:
        return "0.9.16"

    def get_client_version(self) -> str:
        return "0.9.16"

    def get_trafficmanager(self, port: int) -> FakeTM:
        self.server.check()
        return self.server.tm

    def load_world(self, name: str) -> FakeWorld:
        self.server.check()
        assert not self.server.settings.synchronous_mode, "load_world in synchronous mode"
        FakeServer.worlds += 1
        self.server.world_id = FakeServer.worlds
        self.server.map_name = f"Carla/Maps/{name}"
        self.server.loaded.append(name)
        self.server.actors.clear()
        self.server.settings = carla.WorldSettings()
        return FakeWorld(self.server)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Route the env's client to a FakeServer (replaceable: state['server'] = FakeServer())."""
    state: dict[str, Any] = {"server": FakeServer(), "connects": 0}

    def factory(host: str, port: int) -> FakeClient:
        state["connects"] += 1
        return FakeClient(state["server"])

    def probe(host: str, port: int, timeout: float) -> None:
        if not state["server"].alive:
            raise CarlaConnectionError(f"no CARLA server is listening at {host}:{port}")

    monkeypatch.setattr(CarlaDriveEnv, "client_factory", staticmethod(factory))
    monkeypatch.setattr(CarlaDriveEnv, "probe", staticmethod(probe))
    return state


FAST = {
    "town": "Town01",
    "camera_size": (48, 64),
    "n_vehicles": 4,
    "n_pedestrians": 3,
    "warmup_steps": 3,
    "timeout_s": 1.0,
    "retry_delay_s": 0.0,
    "route_length_m": 200.0,
}


def test_env_passes_gymnasium_check_env_on_the_fake_server(fake: dict[str, Any]) -> None:
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = CarlaDriveEnv(**FAST, road_labels=True, frame_stack=2)
    check_env(env, skip_render_check=True)
    sb3_check_env(env, warn=False)
    env.close()
    assert fake["server"].actors == {}


def test_env_episode_on_the_fake_server(fake: dict[str, Any]) -> None:
    server: FakeServer = fake["server"]
    env = gym.make(ENV_ID, **{**FAST, "duration_s": 1.0}, road_labels=True)
    obs, info = env.reset(seed=3)
    assert env.observation_space.contains(obs)
    settings = server.settings
    assert settings.synchronous_mode and settings.fixed_delta_seconds == 0.05
    assert server.tm.sync == [True] and server.weather is not None
    types = sorted(a.type_id for a in server.actors.values())
    assert types.count("walker.pedestrian.0001") == 3 == types.count("controller.ai.walker")
    assert sum(t.startswith("vehicle.") for t in types) == 5  # ego + 4, all four-wheeled
    assert "vehicle.yamaha.yzf" not in types
    assert all(a.started for a in server.actors.values() if a.type_id == "controller.ai.walker")
    assert all(a.autopilot == (True, 8000) for a in server.actors.values()
               if a.attributes.get("role_name") == "autopilot")  # fmt: skip
    labels = info["road_labels"]
    assert labels.shape == (48, 64) and labels.dtype == np.uint8
    assert (labels[35, 28:36] == CLASS_ID["ego"]).all()  # the ego's silhouette
    assert not (labels[-1] == CLASS_ID["ego"]).any()  # the road behind the ego's rear
    assert labels[0, 0] == CLASS_ID["vehicle"] and labels[10, 32] == CLASS_ID["lane_marking"]

    names = env.unwrapped.sensor_names
    steps, ret, done = 0, 0.0, False
    while not done:
        obs, reward, terminated, truncated, info = env.step(np.array([0.0, 1.0], np.float32))
        assert env.observation_space.contains(obs) and np.isfinite(obs["sensors"]).all()
        assert set(info["reward_terms"]) == set(REWARD_TERMS)
        assert reward == pytest.approx(sum(info["reward_terms"].values()))
        assert info["speed"] >= 0 and info["road_labels"].shape == (48, 64)
        ret, steps, done = ret + reward, steps + 1, terminated or truncated
    assert truncated and info["termination"] == "timeout" and steps == 20
    assert set(EPISODE_KEYS) <= set(info) and isinstance(info["collision"], bool)
    assert info["distance"] > 0 and info["mean_speed"] == pytest.approx(info["distance"] / 1.0)
    sensors = dict(zip(names, obs["sensors"]))
    assert sensors["ego.speed"] > 0 and sensors["ego.accel"] == pytest.approx(0.1)
    assert sensors["route.00.x"] > 0 and abs(sensors["route.00.y"]) < 1e-3
    assert ret > 0
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(2))

    env.reset(seed=4)  # the previous episode's actors are destroyed first
    assert len(server.actors) == 5 + 6 + 5  # vehicles, walkers + controllers, sensors
    env.close()
    assert server.actors == {} and not server.settings.synchronous_mode
    assert server.settings.fixed_delta_seconds is None and server.tm.sync[-1] is False
    assert server.loaded == []  # Town01 already loaded


def test_env_loads_the_configured_town_once(fake: dict[str, Any]) -> None:
    env = CarlaDriveEnv(**{**FAST, "town": "Town03"})
    env.reset(seed=0)
    env.reset(seed=1)
    assert fake["server"].loaded == ["Town03"]
    env.close()


def test_collision_ends_the_episode_with_a_penalty(fake: dict[str, Any]) -> None:
    server: FakeServer = fake["server"]
    env = CarlaDriveEnv(**{**FAST, "n_vehicles": 0, "n_pedestrians": 0, "n_rays": 8})
    env.reset(seed=0)
    ego = next(a for a in server.actors.values() if a.attributes.get("role_name") == "hero")
    ahead = carla.Transform(carla.Location(x=ego.location.x + 12.0))
    parked = server.spawn(FakeBlueprint("vehicle.audi.tt", role_name="parked"), ahead, None)
    assert parked is not None
    for _ in range(200):
        obs, _, terminated, truncated, info = env.step([0.0, 1.0])
        if terminated or truncated:
            break
    assert terminated and info["termination"] == "collision" and info["collision"] is True
    assert info["reward_terms"]["collision"] == -DEFAULT_REWARD_WEIGHTS["collision"]
    assert info["collided_with"] == ["vehicle.audi.tt"]
    ray_ahead = dict(zip(env.sensor_names, obs["sensors"]))["rays.00.distance"]
    assert ray_ahead < 0.1  # the ray straight ahead touches the parked car
    env.close()


def test_traffic_light_ahead_on_the_fake_server(fake: dict[str, Any]) -> None:
    env = CarlaDriveEnv(**FAST)
    env.reset(seed=0)
    ego = env._episode.ego
    state, distance = env._light_ahead(ego, FakeWaypoint(570.0), np.array([570.0, 1.0]))
    assert state == "red" and distance == pytest.approx(math.hypot(30.0, 1.0))
    assert env._light_ahead(ego, FakeWaypoint(100.0), np.array([100.0, 0.0])) == (None, 50.0)
    assert env._light_ahead(ego, None, np.array([570.0, 0.0])) == (None, 50.0)
    env.close()


def test_failed_reset_destroys_what_it_spawned(fake: dict[str, Any]) -> None:
    server: FakeServer = fake["server"]
    server.fail_spawn = "sensor.other.imu"
    env = CarlaDriveEnv(**FAST)
    with pytest.raises(RuntimeError, match="Spawn failed"):
        env.reset(seed=0)
    assert server.actors == {}  # ego, traffic, walkers and the sensors spawned so far
    server.fail_spawn = None
    env.reset(seed=0)
    env.close()
    assert server.actors == {} and not server.settings.synchronous_mode


def test_server_loss_raises_a_clear_error_and_reset_reconnects(fake: dict[str, Any]) -> None:
    first: FakeServer = fake["server"]
    env = CarlaDriveEnv(**FAST, connect_retries=2)
    env.reset(seed=0)
    env.step([0.0, 0.5])
    first.alive = False  # the server crashes
    with pytest.raises(CarlaServerLost, match=r"stopped answering.*next reset\(\) reconnects"):
        env.step([0.0, 0.5])
    with pytest.raises(CarlaConnectionError, match="failed after 2 attempt"):
        env.reset()  # still down: bounded retries, then a clear error
    fake["server"] = second = FakeServer()  # restarted on the same address
    connects = fake["connects"]
    env.reset(seed=1)
    assert fake["connects"] == connects + 1 and second.settings.synchronous_mode
    env.step([0.0, 0.5])
    env.close()
    assert second.actors == {} and not second.settings.synchronous_mode


def test_transient_loss_purges_leftover_actors_on_reconnect(fake: dict[str, Any]) -> None:
    server: FakeServer = fake["server"]
    env = CarlaDriveEnv(**FAST)
    env.reset(seed=0)
    spawned = set(server.actors)
    server.alive = False
    with pytest.raises(CarlaServerLost):
        env.step([0.0, 0.0])
    server.alive = True  # it was only a hiccup: the old actors are still in the world
    env.reset(seed=1)
    assert not spawned & set(server.actors)
    env.close()
    assert server.actors == {}


def test_truncate_mode_ends_the_episode_on_server_loss(fake: dict[str, Any]) -> None:
    env = CarlaDriveEnv(**FAST, on_server_loss="truncate")
    obs0, _ = env.reset(seed=0)
    fake["server"].alive = False
    obs, reward, terminated, truncated, info = env.step([0.0, 0.0])
    assert (reward, terminated, truncated) == (0.0, False, True)
    assert info["server_lost"] and info["termination"] == "server_lost"
    assert set(EPISODE_KEYS) <= set(info) and set(info["reward_terms"]) == set(REWARD_TERMS)
    assert obs["camera"].shape == obs0["camera"].shape
    fake["server"] = FakeServer()
    env.reset(seed=1)  # a training loop carries on with the restarted server
    env.close()


def test_server_restart_between_episodes_is_detected(fake: dict[str, Any]) -> None:
    env = CarlaDriveEnv(**FAST)
    env.reset(seed=0)
    fake["server"].alive = False
    fake["server"] = new = FakeServer()  # restarted while nobody was stepping
    env.reset(seed=1)
    assert new.settings.synchronous_mode and len(new.actors) > 0
    env.close()
    assert new.actors == {}


def test_close_on_a_dead_server_does_not_raise_or_hang(fake: dict[str, Any]) -> None:
    env = CarlaDriveEnv(**FAST)
    env.reset(seed=0)
    fake["server"].alive = False
    start = time.monotonic()
    env.close()
    env.close()
    assert time.monotonic() - start < 1.0


# ==============================================================================================
# Imports
# ==============================================================================================


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_import_envs_does_not_import_carla() -> None:
    done = _python(
        "import sys, envs, envs.carla.config, envs.carla.core, envs.carla.runtime\n"
        "assert 'carla' not in sys.modules, 'importing envs imported carla'"
    )
    assert done.returncode == 0, done.stderr


def test_missing_carla_package_says_how_to_install_it() -> None:
    done = _python(
        "import sys; sys.modules['carla'] = None\n"
        "import gymnasium as gym, envs\n"
        f"if {ENV_ID!r} not in gym.registry:\n"
        f"    gym.register(id={ENV_ID!r}, entry_point='envs.carla.env:CarlaDriveEnv')\n"
        f"gym.make({ENV_ID!r})"
    )
    assert done.returncode != 0 and "pip install -e '.[carla]'" in done.stderr


# ==============================================================================================
# Integration: a real CARLA server
# ==============================================================================================


@pytest.fixture(scope="module")
def live() -> dict[str, Any]:
    host, port = default_host(), default_port()
    try:
        probe_server(host, port, 2.0)
    except CarlaConnectionError:
        pytest.skip(
            f"no CARLA server answers at {host}:{port} (start one: README, 'CARLA backend')"
        )
    return {"host": host, "port": port}


LIVE = {"camera_size": (64, 64), "n_vehicles": 10, "n_pedestrians": 5, "timeout_s": 20.0,
        "town": None, "route_length_m": 150.0}  # fmt: skip


@pytest.mark.carla
def test_live_steps_and_cleanup(live: dict[str, Any]) -> None:
    client = carla.Client(live["host"], live["port"])
    client.set_timeout(20.0)
    before = client.get_world().get_settings()
    env = gym.make(ENV_ID, **LIVE, road_labels=True, n_rays=8)
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs) and info["road_labels"].shape == (64, 64)
    world = client.get_world()
    assert world.get_settings().synchronous_mode
    ours = env.unwrapped._actors.ids
    for _ in range(30):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert env.observation_space.contains(obs) and np.isfinite(obs["sensors"]).all()
        assert set(info["reward_terms"]) == set(REWARD_TERMS) and np.isfinite(reward)
        assert info["road_labels"].max() < len(ROAD_CLASSES)
        if terminated or truncated:
            assert set(EPISODE_KEYS) <= set(info)
            env.reset()
    env.close()
    after = client.get_world()
    assert after.get_settings().synchronous_mode == before.synchronous_mode
    assert after.get_settings().fixed_delta_seconds == before.fixed_delta_seconds
    assert len(after.get_actors(ours)) == 0


@pytest.mark.carla
def test_live_episodes_end_with_the_episode_keys(live: dict[str, Any]) -> None:
    env = gym.make(ENV_ID, **{**LIVE, "duration_s": 2.0})
    for episode in range(2):
        env.reset(seed=episode)
        done, steps = False, 0
        while not done:
            _, _, terminated, truncated, info = env.step(np.array([0.0, 0.5], np.float32))
            done, steps = terminated or truncated, steps + 1
        assert set(EPISODE_KEYS) <= set(info) and steps <= 40
        assert isinstance(info["success"], bool) and info["distance"] >= 0
    env.close()


@pytest.mark.carla
def test_live_check_env(live: dict[str, Any]) -> None:
    from gymnasium.utils.env_checker import check_env

    env = CarlaDriveEnv(**LIVE)
    env.spec = dataclasses.replace(gym.spec(ENV_ID), nondeterministic=True)  # CARLA is not
    try:
        check_env(env, skip_render_check=True)
    finally:
        env.close()
