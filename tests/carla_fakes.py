"""Fakes for the CARLA backend's tests (no CARLA server runs here).

- ``FakeServer`` and its client, world, map, blueprints, actors and sensors: a tiny in-process
  stand-in for a CARLA server (a straight road along +x), reached through ``FakeClient``. They
  check the env's own flow (set-up, synchronous ticking, observation, reward, episode end, actor
  clean-up, settings restore, server loss and reconnection), not CARLA's behaviour;
- smaller stand-ins for the pure-logic and runtime tests: waypoints on a graph of straight lanes,
  actors recording their destruction, a world holding settings, a traffic manager, and a TCP
  server answering with fixed bytes.

Some fakes build the real ``carla`` client's classes (Transform, Location, WorldSettings), which
work without a server: they need the client installed. ``carla`` is None here when it is not;
tests using such fakes carry ``needs_carla`` (or skip their whole module).
"""

from __future__ import annotations

import fnmatch
import math
import socket
import threading
from typing import Any

import numpy as np
import pytest

from envs.carla.core import CARLA_TAGS

try:
    import carla
except ImportError:  # the fakes below that build carla classes are then unusable
    carla = None

needs_carla = pytest.mark.skipif(
    carla is None, reason="the carla client is not installed: pip install -e '.[carla]'"
)


def free_port() -> int:
    """A local TCP port with nothing listening on it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ==============================================================================================
# Route: waypoints
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


def forking(wp: Waypoint, d: float) -> list[Waypoint]:
    """Straight along +x until x=20, then either keep straight or turn onto y=x-20 (+y)."""
    x, y = wp.transform.location.x, wp.transform.location.y
    if y > 0 or (x >= 20 and y >= 0 and wp.transform.rotation.yaw == 45.0):
        s = d / math.sqrt(2)
        return [Waypoint(x + s, y + s, 45.0, forking)]
    if x < 20 <= x + d:
        return [
            Waypoint(x + d, 0.0, 0.0, forking),
            Waypoint(20 + d / 1.5, d / 1.5, 45.0, forking),
        ]
    return [Waypoint(x + d, 0.0, 0.0, forking)] if x + d < 200 else []


# ==============================================================================================
# Actor bookkeeping, settings, probing
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


class ActorList(list):
    def filter(self, pattern: str) -> ActorList:
        return ActorList(a for a in self if fnmatch.fnmatch(a.type_id, pattern))


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


# ==============================================================================================
# A fake CARLA server
# ==============================================================================================


def server_gone() -> RuntimeError:
    return RuntimeError("time-out of 2000ms while waiting for the simulator, make sure ...")


class FakeServer:
    """Stand-in for a CARLA server (no server here): a straight one-lane road along +x.

    The ego moves by a point-mass model (speed < 0: backwards); other actors stand still;
    cameras deliver a fixed scene (road, a lane line, the ego's silhouette bottom-centre); the
    segmentation camera uses instance codes (ego 700, another car 9).
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
            # The brake slows towards standstill (a car rolling backwards, speed < 0, keeps its
            # direction until then); the throttle pushes forwards.
            slowed = max(abs(self.speed) - 8.0 * c.brake * dt, 0.0)
            speed = math.copysign(slowed, self.speed) + 4.0 * c.throttle * dt
            self.speed = float(np.clip(speed, -30, 30))
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
