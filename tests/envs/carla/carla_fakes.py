"""Fakes for the CARLA backend's tests (no CARLA server runs here).

- ``FakeServer`` and its client, world, map, blueprints, actors and sensors: an in-process stand-in
  for a CARLA server (a straight road along +x), reached through ``FakeClient``;
- smaller stand-ins for the pure-logic and runtime tests: waypoints on a graph of straight lanes,
  actors recording their destruction, a world holding settings, a traffic manager, and a TCP
  server answering with fixed bytes.

What ``FakeServer`` models, where the env depends on the server's behaviour:

- synchronous mode: ``tick()`` advances one fixed step and returns the new frame number; ticking a
  world that is not synchronous (or has no fixed step) fails the test;
- sensor data streamed on another thread (``SensorStream``), as the server streams it on its own
  sockets: ``tick()`` returns before the callbacks run. Per test (``server.stream = Stream(...)``)
  the data of each sensor can be delayed (milliseconds), held back for whole ticks, shuffled within
  a frame, preceded by a stale copy of the previous frame's data, or lost. By default a frame's
  collision events come first, then the IMU, then the cameras (the server sends events during the
  physics step and images after rendering);
- vehicles: a kinematic point mass along its heading (throttle, brake, steer, ``reverse``; speed
  < 0 rolls backwards); a vehicle with neither control nor autopilot keeps the speed a test gives
  it;
- the traffic manager: autopilot vehicles (``set_autopilot(True, port)``) keep their heading,
  speed up to ``tm.target_speed`` and brake for whatever is ahead in their path; autopilot with a
  traffic manager that is not synchronous fails the test (the server would run it on its own
  clock);
- walkers and their AI controllers: after ``start()``, ``go_to_location`` and ``set_max_speed``
  (both ignored before ``start()``, as the server's navigation ignores walkers it does not know),
  the walker walks straight to its destination and stops there; a controller started before a
  tick has passed since it was spawned (CARLA's examples tick first) leaves its walker standing;
- collisions: after each step, the collision sensor emits one ``CollisionEvent`` (``actor``,
  ``other_actor``, ``normal_impulse``) per other vehicle or walker whose bounding box (oriented,
  in the x-y plane) overlaps its parent's box; boxes that do not touch never collide;
- spawning fails (``try_spawn_actor`` returns None) where the new vehicle's or walker's box would
  overlap another's; ``get_actors()`` also lists the spectator and the traffic light;
- cameras (RGB, semantic and instance segmentation) render a fixed scene (road, a lane line, the
  ego's silhouette bottom-centre, another car top-left; the RGB's green channel follows the ego's
  x); with ``server.tag_frames`` the bottom row encodes the frame number (RGB: R, G, B = its low,
  middle, high byte; segmentation: bit i of the frame is a Car pixel at column i, else Road);
- the IMU measures the parent's acceleration along its heading and yaw rate over the last step
  (plus gravity on z);
- server loss (``alive = False``: every call raises the client's time-out error, nothing more is
  streamed), loading a world (actors gone, settings reset), settings, weather, seeds;
- every class stands in for the real client class named in its ``REAL`` (checked against the
  installed client in test_carla_fake_fidelity.py); with ``recording()`` active, what code under
  ``envs/`` touches on the fakes is recorded for that check.

Not modelled: physics beyond that kinematic step (no tyres, mass, suspension, no collision
response: boxes pass through each other and the sensor fires every tick they overlap, no slopes);
the traffic manager's routing, lane changes, junctions and traffic lights; walkers' navigation
mesh, crossings and avoidance; map topology beyond the straight road along +x (one lane, |y| <=
1.75 m; the traffic light at x = 600 m); static geometry (buildings, poles: nothing to collide with
but vehicles and walkers); images beyond the fixed scene (no weather, lighting, perspective or
noise); lane-invasion events (that sensor never fires); sensor noise, sensor_tick, the sensors' own
poses (their data carry the parent's transform); the spectator's movement; time-outs of individual
RPC calls other than through ``alive``; several clients.

Some fakes build the real ``carla`` client's classes (Transform, Location, WorldSettings), which
work without a server: they need the client installed. ``carla`` is None here when it is not;
tests using such fakes carry ``needs_carla`` (or skip their whole module).
"""

from __future__ import annotations

import contextlib
import fnmatch
import heapq
import inspect
import itertools
import math
import random
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pytest

from drive_attention.envs.carla.core import CARLA_TAGS

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
# Recording what the env uses of the fakes
# ==============================================================================================


@dataclass
class Use:
    """How code under envs/ used one member of one fake class."""

    kind: str  # "method" or "property"
    calls: set[tuple[int, tuple[str, ...]]] = field(default_factory=set)  # (n positional, keywords)
    types: set[type] = field(default_factory=set)  # of the values read or returned
    examples: dict[type, Any] = field(default_factory=dict)  # a value read, by type


class ApiRecorder:
    """(fake class, member name) -> Use, for every access from a module under envs/."""

    def __init__(self) -> None:
        self.uses: dict[tuple[type, str], Use] = {}
        self._lock = threading.Lock()

    def seen(self, obj: Any, name: str, value: Any) -> Any:
        kind = "method" if inspect.ismethod(value) else "property"
        with self._lock:
            use = self.uses.setdefault((type(obj), name), Use(kind))
            if kind == "property":
                use.types.add(type(value))
                use.examples.setdefault(type(value), value)
                return value

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                use.calls.add((len(args), tuple(sorted(kwargs))))
            result = value(*args, **kwargs)
            with self._lock:
                use.types.add(type(result))
            return result

        return call


RECORDER: ApiRecorder | None = None


@contextlib.contextmanager
def recording() -> Iterator[ApiRecorder]:
    """Record what code under envs/ touches on the fakes while the block runs."""
    global RECORDER
    RECORDER = ApiRecorder()
    try:
        yield RECORDER
    finally:
        RECORDER = None


class Faked:
    """Base of the fakes: ``REAL`` names the carla class a fake stands in for."""

    REAL: ClassVar[str] = ""

    def __getattribute__(self, name: str) -> Any:
        value = object.__getattribute__(self, name)
        if RECORDER is not None and not name.startswith("_"):
            if sys._getframe(1).f_globals.get("__name__", "").startswith("drive_attention.envs."):
                return RECORDER.seen(self, name, value)
        return value


# ==============================================================================================
# Route: waypoints
# ==============================================================================================


class Waypoint(Faked):
    """Fake carla.Waypoint on a graph of straight lanes (no server here)."""

    REAL = "Waypoint"

    def __init__(self, x: float, y: float, yaw: float = 0.0, branches: Any = None) -> None:
        self.transform = carla.Transform(carla.Location(x=x, y=y), carla.Rotation(yaw=yaw))
        self.lane_width = 3.5
        self._branches = branches  # callable(self, d) -> list[Waypoint]

    def next(self, distance: float) -> list[Waypoint]:
        if self._branches is not None:
            return self._branches(self, distance)
        loc = self.transform.location
        return [Waypoint(loc.x + distance, loc.y)] if loc.x + distance <= 1000 else []


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


class Actor(Faked):
    """Fake carla.Actor recording destroy order (no server here); ``is_listening``/``stop`` as on
    a carla.Sensor."""

    REAL = "Sensor"

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


class ActorList(Faked, list):
    REAL = "ActorList"

    def filter(self, wildcard_pattern: str) -> ActorList:
        return ActorList(a for a in self if fnmatch.fnmatch(a.type_id, wildcard_pattern))


class SettingsWorld(Faked):
    """Fake carla.World holding real carla.WorldSettings (no server here)."""

    REAL = "World"

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


class TrafficManager(Faked):
    REAL = "TrafficManager"

    def __init__(self) -> None:
        self.sync: list[bool] = []

    def set_synchronous_mode(self, mode_switch: bool) -> None:
        self.sync.append(mode_switch)

    def set_random_device_seed(self, value: int) -> None:
        self.seed = value


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
# Geometry: oriented boxes in the x-y plane
# ==============================================================================================


def box_corners(actor: FakeActor) -> np.ndarray:
    """(4, 2) [m] corners of an actor's bounding box in the world's x-y plane."""
    yaw = math.radians(actor.yaw)
    c, s = math.cos(yaw), math.sin(yaw)
    box = actor.bounding_box
    cx = actor.location.x + c * box.location.x - s * box.location.y
    cy = actor.location.y + s * box.location.x + c * box.location.y
    ex, ey = box.extent.x, box.extent.y
    local = np.array([[ex, ey], [ex, -ey], [-ex, -ey], [-ex, ey]])
    return np.array([cx, cy]) + local @ np.array([[c, s], [-s, c]])


def boxes_overlap(a: FakeActor, b: FakeActor, margin: float = 1e-9) -> bool:
    """Whether two actors' oriented boxes overlap (by more than ``margin`` [m]): separating axes."""
    pa, pb = box_corners(a), box_corners(b)
    for corners in (pa, pb):
        for edge in (corners[1] - corners[0], corners[2] - corners[1]):
            axis = np.array([-edge[1], edge[0]]) / np.linalg.norm(edge)
            ra, rb = pa @ axis, pb @ axis
            if ra.max() <= rb.min() + margin or rb.max() <= ra.min() + margin:
                return False
    return True


# ==============================================================================================
# Sensor streaming
# ==============================================================================================


def _match(patterns: dict[str, Any], type_id: str, default: Any) -> Any:
    for pattern, value in patterns.items():
        if fnmatch.fnmatch(type_id, pattern):
            return value
    return default


@dataclass
class Stream:
    """How ``FakeServer`` streams sensor data to the callbacks (per test: server.stream = ...).

    Patterns are matched against the sensors' type ids (fnmatch, first match wins).
    """

    threaded: bool = True  # False: callbacks run inside tick(), in order, without delays
    delay_ms: dict[str, float] = field(default_factory=dict)  # [ms] after the tick, per sensor
    hold_ticks: dict[str, int] = field(default_factory=dict)  # sent with the frame N ticks later
    shuffle: bool = False  # a frame's measurements (not its events) in a random order
    stale: bool = False  # each frame's data preceded by the previous frame's, sent again
    lose: Callable[[str, int], bool] | None = None  # (type id, frame) -> never sent
    seed: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)


class SensorStream:
    """Delivers (sensor, data) items on one worker thread, each at its due time."""

    def __init__(self, server: FakeServer) -> None:
        self.server = server
        self.log: list[tuple[str, int]] = []  # (sensor type id, data frame) in delivery order
        self.errors: list[BaseException] = []  # raised by callbacks
        self._cv = threading.Condition()
        self._heap: list[tuple[float, int, Any, Any]] = []
        self._seq = itertools.count()
        self._busy = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self._held: dict[int, list[tuple[Any, Any]]] = {}  # frame -> items to send first
        self._last: dict[int, Any] = {}  # sensor id -> its latest measurement

    def send(self, frame: int, events: list[tuple[Any, Any]], measurements: list[tuple[Any, Any]],
             cfg: Stream) -> None:  # fmt: skip
        """Queue one frame's data (events first), as ``cfg`` says."""
        if cfg.shuffle:
            cfg.rng.shuffle(measurements)
        batch = self._held.pop(frame, [])
        if cfg.stale:
            batch += [(s, self._last[s.id]) for s, _ in measurements if s.id in self._last]
        for sensor, data in [*events, *measurements]:
            if cfg.lose is not None and cfg.lose(sensor.type_id, frame):
                continue
            later = _match(cfg.hold_ticks, sensor.type_id, 0)
            if later > 0:
                self._held.setdefault(frame + later, []).append((sensor, data))
            else:
                batch.append((sensor, data))
        for sensor, data in measurements:
            self._last[sensor.id] = data
        if not cfg.threaded:
            for sensor, data in batch:
                self._deliver(sensor, data)
            return
        now = time.monotonic()
        with self._cv:
            if self._closed:
                return
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="fake-carla-stream")
                self._thread.start()
            for sensor, data in batch:
                due = now + _match(cfg.delay_ms, sensor.type_id, 0.0) / 1000.0
                heapq.heappush(self._heap, (due, next(self._seq), sensor, data))
            self._cv.notify_all()

    def _deliver(self, sensor: Any, data: Any) -> None:
        callback = sensor._callback
        if callback is None or not self.server.alive or sensor.id not in self.server.actors:
            return  # stopped, destroyed, or the server is gone: nothing more arrives
        self.log.append((sensor.type_id, data.frame))
        try:
            callback(data)
        except Exception as err:  # the client would print it and go on
            self.errors.append(err)

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._closed:
                    if self._heap:
                        wait = self._heap[0][0] - time.monotonic()
                        if wait <= 0:
                            break
                        self._cv.wait(wait)
                    else:
                        self._cv.wait()
                if self._closed:
                    return
                _, _, sensor, data = heapq.heappop(self._heap)
                self._busy = True
            try:
                self._deliver(sensor, data)
            finally:
                with self._cv:
                    self._busy = False
                    self._cv.notify_all()

    def flush(self, timeout_s: float = 2.0) -> bool:
        """Wait until everything queued so far was delivered; False on time-out."""
        with self._cv:
            return self._cv.wait_for(lambda: not self._heap and not self._busy, timeout_s)

    def close(self) -> None:
        """Stop the worker (what is still queued is dropped) and join it."""
        with self._cv:
            self._closed = True
            self._heap.clear()
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            assert not self._thread.is_alive(), "the fake server's stream thread did not stop"


# ==============================================================================================
# A fake CARLA server
# ==============================================================================================


def server_gone() -> RuntimeError:
    return RuntimeError("time-out of 2000ms while waiting for the simulator, make sure ...")


TM_ACCEL = 3.0  # [m/s^2] autopilot speeding up
TM_BRAKE = 8.0  # [m/s^2] autopilot and brake pedal at 1
TM_HEADWAY = 1.5  # [s] autopilot's time gap to what is ahead
TM_MIN_GAP = 2.0  # [m]
THROTTLE_ACCEL = 4.0  # [m/s^2] at throttle 1
WALKER_SPEED = 1.4  # [m/s] before set_max_speed


class FakeServer:
    """Stand-in for a CARLA server (no server here): a straight one-lane road along +x.

    See the module docstring for what it models. Test handles: ``actors`` (id -> actor),
    ``spawn(blueprint, transform, parent)``, ``stream`` (a Stream), ``tag_frames``, ``on_tick``
    (called as on_tick(server, frame) at the start of each tick), ``alive``, ``fail_spawn``.
    Servers are registered in ``FakeServer.instances``; ``shutdown_all()`` stops their threads.
    """

    worlds = 0
    instances: ClassVar[list[FakeServer]] = []

    def __init__(self, stream: Stream | None = None) -> None:
        FakeServer.worlds += 1
        FakeServer.instances.append(self)
        self.world_id = FakeServer.worlds
        self.alive = True
        self.frame = 100
        self.elapsed = 0.0  # [s] simulated
        self.next_id = 1000
        self.actors: dict[int, FakeActor] = {}
        self.settings = carla.WorldSettings()  # asynchronous, variable step
        self.applied: list[Any] = []
        self.map_name = "Carla/Maps/Town01"
        self.loaded: list[str] = []
        self.tm = FakeTM(self)
        self.weather = None
        self.rng = np.random.default_rng(0)
        self.fail_spawn: str | None = None  # a type id whose spawn raises
        self.stream = stream or Stream()
        self.streamer = SensorStream(self)
        self.tag_frames = False
        self.on_tick: Callable[[FakeServer, int], None] | None = None
        self.spectator = FakeActor(self, 1, "spectator", {}, carla.Transform(), None)
        self.light = FakeLight(self)

    @classmethod
    def shutdown_all(cls) -> list[BaseException]:
        """Stop every server's stream thread; returns the errors their callbacks raised."""
        errors = []
        for server in cls.instances:
            server.streamer.close()
            errors += server.streamer.errors
        cls.instances.clear()
        return errors

    def check(self) -> None:
        if not self.alive:
            raise server_gone()

    def ego(self) -> FakeVehicle:
        return next(a for a in self.movers() if a.attributes.get("role_name") == "hero")

    def movers(self) -> list[FakeActor]:
        return [a for a in self.actors.values() if isinstance(a, (FakeVehicle, FakeWalker))]

    # world-level calls, reached through FakeWorld
    def spawn(self, bp: FakeBlueprint, tf: Any, parent: FakeActor | None) -> FakeActor | None:
        self.check()
        if self.fail_spawn and fnmatch.fnmatch(bp.id, self.fail_spawn):
            raise RuntimeError(f"Spawn failed: blueprint {bp.id} broke")
        kind = next((c for p, c in ACTOR_CLASSES if bp.id.startswith(p)), FakeActor)
        if kind is FakeWalkerController and not isinstance(parent, FakeWalker):
            raise RuntimeError("Spawn failed: controller.ai.walker must be attached to a walker")
        actor = kind(self, self.next_id + 1, bp.id, dict(bp._values), tf, parent)
        if parent is None and isinstance(actor, (FakeVehicle, FakeWalker)):
            if any(boxes_overlap(actor, other) for other in self.movers()):
                return None  # spawn point occupied
        self.next_id += 1
        self.actors[actor.id] = actor
        return actor

    def tick(self) -> int:
        self.check()
        if not self.settings.synchronous_mode:
            raise AssertionError("the env ticked a world that is not in synchronous mode")
        dt = self.settings.fixed_delta_seconds
        if not dt:
            raise AssertionError("synchronous mode without fixed_delta_seconds")
        frame = self.frame + 1
        if self.on_tick is not None:
            self.on_tick(self, frame)
        movers = self.movers()
        if any(isinstance(a, FakeVehicle) and a._on_autopilot() for a in movers):
            if not (self.tm.sync and self.tm.sync[-1]):
                raise AssertionError("autopilot vehicles with a traffic manager not synchronous")
        plans = [(a, a._plan(dt)) for a in movers]  # all decide from the state before the step
        for actor, (speed, yaw) in plans:
            actor._advance(dt, speed, yaw)
        self.frame, self.elapsed = frame, self.elapsed + dt
        events, measurements = self._measure(frame, dt)
        self.streamer.send(frame, events, measurements, self.stream)
        return frame

    def _measure(self, frame: int, dt: float) -> tuple[list[Any], list[Any]]:
        """(sensor, data) of this frame: the events, then the IMU, then the cameras."""
        events, imus, cameras = [], [], []
        movers = self.movers()
        for sensor in [a for a in self.actors.values() if isinstance(a, FakeSensor)]:
            if sensor._callback is None:
                continue
            parent, kind = sensor.parent, sensor.type_id
            stamp = (frame, self.elapsed, parent.get_transform())
            if kind == "sensor.other.collision":
                for other in movers:
                    if other is not parent and boxes_overlap(parent, other):
                        events.append((sensor, FakeCollisionEvent(*stamp, parent, other)))
            elif kind == "sensor.other.imu":
                accel = (parent.speed - parent._previous[0]) / dt  # [m/s^2] along its heading
                yaw_rate = math.radians(parent.yaw - parent._previous[1]) / dt  # [rad/s]
                imus.append((sensor, FakeIMU(*stamp, accel, yaw_rate, math.radians(parent.yaw))))
            elif kind.startswith("sensor.camera."):
                cameras.append((sensor, self._render(sensor, stamp)))
        return events, imus + cameras

    def _render(self, sensor: FakeSensor, stamp: tuple[int, float, Any]) -> FakeImage:
        kind, frame = sensor.type_id, stamp[0]
        h, w = int(sensor.attributes["image_size_y"]), int(sensor.attributes["image_size_x"])
        bgra = np.zeros((h, w, 4), np.uint8)
        bgra[..., 2] = CARLA_TAGS["Roads"]
        bgra[:, w // 2, 2] = CARLA_TAGS["RoadLines"]
        ego = (slice(int(0.65 * h), int(0.82 * h)), slice(w // 2 - 8, w // 2 + 8))
        bgra[(*ego, 2)] = CARLA_TAGS["Car"]  # the ego's rear, where the chase camera sees it
        bgra[(*ego, 1)], bgra[(*ego, 0)] = 700 & 0xFF, 700 >> 8
        bgra[:4, :4, 2], bgra[:4, :4, 1] = CARLA_TAGS["Car"], 9  # another car
        if kind == "sensor.camera.rgb":
            bgra[..., 1] = int(10 * sensor.parent.location.x) % 256  # the view changes
            if self.tag_frames:
                bgra[-1, :, 2], bgra[-1, :, 1], bgra[-1, :, 0] = frame_bytes(frame)
        elif self.tag_frames:
            bits = np.array([(frame >> i) & 1 for i in range(16)], bool)
            bgra[-1, :16, 2] = np.where(bits, CARLA_TAGS["Car"], CARLA_TAGS["Roads"])
            bgra[-1, :16, 1] = np.where(bits, 9, 0)
        fov = float(sensor.attributes["fov"])
        return FakeImage(*stamp, bgra.tobytes(), w, h, fov)


def frame_bytes(frame: int) -> tuple[int, int, int]:
    """The low, middle and high byte of a frame number (the RGB frame tag's R, G, B)."""
    return frame & 0xFF, (frame >> 8) & 0xFF, (frame >> 16) & 0xFF


class FakeTM(Faked):
    REAL = "TrafficManager"

    def __init__(self, server: FakeServer) -> None:
        self.server, self.sync = server, []
        self.port: int | None = None
        self.target_speed = 6.0  # [m/s] (the server's default: 30% below a 30 km/h limit)

    def set_synchronous_mode(self, mode_switch: bool) -> None:
        self.server.check()
        self.sync.append(mode_switch)

    def set_random_device_seed(self, value: int) -> None:
        self.server.check()


class FakeAttribute(Faked):
    REAL = "ActorAttribute"

    def __init__(self, value: str, recommended: list[str] | None = None) -> None:
        self._value, self.recommended_values = value, recommended or []

    def as_int(self) -> int:
        return int(self._value)


class FakeBlueprint(Faked):
    REAL = "ActorBlueprint"

    def __init__(self, bp_id: str, **attributes: str) -> None:
        self.id, self._values = bp_id, dict(attributes)

    def has_attribute(self, name: str, /) -> bool:
        return name in self._values

    def set_attribute(self, name: str, value: str, /) -> None:
        assert name in self._values, f"{self.id} has no attribute {name}"
        assert isinstance(value, str), f"{self.id}.{name}: the client takes str, got {value!r}"
        self._values[name] = value

    def get_attribute(self, name: str, /) -> FakeAttribute:
        if name not in self._values:
            raise IndexError(f"{self.id} has no attribute {name}")
        return FakeAttribute(self._values[name], ["1,2,3", "4,5,6"])


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


class FakeLibrary(Faked):
    REAL = "BlueprintLibrary"

    def __init__(self, bps: list[FakeBlueprint] | None = None) -> None:
        self._bps = blueprint_library() if bps is None else bps

    def __iter__(self) -> Iterator[FakeBlueprint]:
        return iter(self._bps)

    def __len__(self) -> int:
        return len(self._bps)

    def __getitem__(self, i: int) -> FakeBlueprint:
        return self._bps[i]

    def find(self, id: str) -> FakeBlueprint:  # ``id``: the client's parameter name
        for bp in self._bps:
            if bp.id == id:
                return FakeBlueprint(bp.id, **bp._values)
        raise IndexError(f"blueprint {id!r} not found")

    def filter(self, wildcard_pattern: str) -> FakeLibrary:
        return FakeLibrary(
            [
                FakeBlueprint(b.id, **b._values)
                for b in self._bps
                if fnmatch.fnmatch(b.id, wildcard_pattern)
            ]
        )


# ----------------------------------------------------------------------------------------------
# Sensor data
# ----------------------------------------------------------------------------------------------


class FakeSensorData(Faked):
    REAL = "SensorData"

    def __init__(self, frame: int, timestamp: float, transform: Any) -> None:
        self.frame, self.timestamp, self.transform = frame, timestamp, transform


class FakeImage(FakeSensorData):
    REAL = "Image"

    def __init__(self, frame: int, timestamp: float, transform: Any, raw_data: bytes,
                 width: int, height: int, fov: float) -> None:  # fmt: skip
        super().__init__(frame, timestamp, transform)
        self.raw_data, self.width, self.height, self.fov = raw_data, width, height, fov


class FakeIMU(FakeSensorData):
    REAL = "IMUMeasurement"

    def __init__(self, frame: int, timestamp: float, transform: Any, accel: float,
                 yaw_rate: float, compass: float) -> None:  # fmt: skip
        super().__init__(frame, timestamp, transform)
        self.accelerometer = carla.Vector3D(accel, 0.0, 9.81)  # [m/s^2]
        self.gyroscope = carla.Vector3D(0.0, 0.0, yaw_rate)  # [rad/s]
        self.compass = compass  # [rad]


class FakeCollisionEvent(FakeSensorData):
    REAL = "CollisionEvent"

    def __init__(self, frame: int, timestamp: float, transform: Any, actor: FakeActor,
                 other_actor: FakeActor) -> None:  # fmt: skip
        super().__init__(frame, timestamp, transform)
        self.actor, self.other_actor = actor, other_actor
        # [N s] pushing ``actor`` away from ``other_actor``; the magnitude is not physical
        dx, dy = (
            actor.location.x - other_actor.location.x,
            actor.location.y - other_actor.location.y,
        )
        norm = math.hypot(dx, dy) or 1.0
        relative = abs(actor.speed - other_actor.speed) + 1.0
        self.normal_impulse = carla.Vector3D(1e3 * relative * dx / norm, 1e3 * relative * dy / norm)


# ----------------------------------------------------------------------------------------------
# Actors
# ----------------------------------------------------------------------------------------------


class FakeActor(Faked):
    """Any actor; test handles: ``location``, ``yaw`` [deg], ``speed`` [m/s] along its heading."""

    REAL = "Actor"

    def __init__(self, server: FakeServer, actor_id: int, type_id: str, attributes: dict[str, str],
                 tf: Any, parent: FakeActor | None) -> None:  # fmt: skip
        self.server, self.id, self.type_id, self.attributes = server, actor_id, type_id, attributes
        self.parent = parent
        self.location = carla.Location(x=tf.location.x, y=tf.location.y, z=tf.location.z)
        self.yaw = tf.rotation.yaw  # [deg]
        self.speed = 0.0  # [m/s]
        self._previous = (0.0, self.yaw)  # speed and yaw before the last step
        self._spawned_at = server.frame
        self.bounding_box = carla.BoundingBox()

    @property
    def is_alive(self) -> bool:
        return self.id in self.server.actors

    def destroy(self) -> bool:
        self.server.check()
        return self.server.actors.pop(self.id, None) is not None

    def get_transform(self) -> Any:
        self.server.check()
        src = self.parent or self
        loc = src.location
        return carla.Transform(carla.Location(loc.x, loc.y, loc.z), carla.Rotation(yaw=src.yaw))

    def set_transform(self, transform: Any) -> None:
        self.server.check()
        loc = transform.location
        self.location = carla.Location(x=loc.x, y=loc.y, z=loc.z)
        self.yaw = transform.rotation.yaw

    def get_velocity(self) -> Any:
        self.server.check()
        yaw = math.radians(self.yaw)
        return carla.Vector3D(self.speed * math.cos(yaw), self.speed * math.sin(yaw), 0.0)

    def _plan(self, dt: float) -> tuple[float, float]:
        """(speed, yaw) over the next step, decided from the world as it is."""
        return self.speed, self.yaw

    def _advance(self, dt: float, speed: float, yaw: float) -> None:
        self._previous = (self.speed, self.yaw)
        self.speed, self.yaw = speed, yaw
        rad = math.radians(yaw)
        self.location = carla.Location(
            x=self.location.x + speed * math.cos(rad) * dt,
            y=self.location.y + speed * math.sin(rad) * dt,
            z=self.location.z,
        )


class FakeVehicle(FakeActor):
    REAL = "Vehicle"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.bounding_box = carla.BoundingBox(
            carla.Location(z=0.75), carla.Vector3D(2.4, 1.0, 0.75)
        )
        self.control: Any = None
        self.autopilot: tuple[bool, int] | None = None

    def apply_control(self, control: Any) -> None:
        self.server.check()
        self.control = control

    def set_autopilot(self, enabled: bool = True, tm_port: int = 8000) -> None:
        self.server.check()
        self.autopilot = (enabled, tm_port)

    def is_at_traffic_light(self) -> bool:
        self.server.check()
        return False

    def get_traffic_light(self) -> None:
        self.server.check()
        return None

    def _on_autopilot(self) -> bool:
        return self.autopilot is not None and self.autopilot[0]

    def _free_distance_ahead(self) -> float:
        """[m] from its front to the nearest vehicle or walker in its path (inf if none)."""
        yaw = math.radians(self.yaw)
        forward, left = (
            np.array([math.cos(yaw), math.sin(yaw)]),
            np.array([-math.sin(yaw), math.cos(yaw)]),
        )
        here, ext = np.array([self.location.x, self.location.y]), self.bounding_box.extent
        best = math.inf
        for other in self.server.movers():
            if other is self:
                continue
            rel = box_corners(other) - here
            along, across = rel @ forward, rel @ left
            if across.max() < -ext.y or across.min() > ext.y or along.max() <= 0:
                continue
            best = min(best, max(along.min() - ext.x, 0.0))
        return best

    def _plan(self, dt: float) -> tuple[float, float]:
        speed, yaw = self.speed, self.yaw
        if self._on_autopilot():
            if self._free_distance_ahead() < max(TM_MIN_GAP, TM_HEADWAY * speed):
                return max(speed - TM_BRAKE * dt, 0.0), yaw
            target = self.server.tm.target_speed
            if speed < target:
                return min(speed + TM_ACCEL * dt, target), yaw
            return max(speed - TM_BRAKE * dt, target), yaw
        c = self.control
        if c is None:
            return speed, yaw
        # The brake slows towards standstill (a car rolling backwards keeps its direction until
        # then); the throttle pushes forwards, or backwards in reverse.
        brake = 1.0 if c.hand_brake else c.brake
        slowed = max(abs(speed) - TM_BRAKE * brake * dt, 0.0)
        push = THROTTLE_ACCEL * c.throttle * dt * (-1.0 if c.reverse else 1.0)
        speed = float(np.clip(math.copysign(slowed, speed) + push, -30.0, 30.0))
        return speed, yaw + math.degrees(c.steer * speed * dt * 0.2)


class FakeWalker(FakeActor):
    REAL = "Walker"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.bounding_box = carla.BoundingBox(carla.Location(z=0.9), carla.Vector3D(0.3, 0.3, 0.9))
        self._controller: FakeWalkerController | None = None

    def _plan(self, dt: float) -> tuple[float, float]:
        ctrl = self._controller
        if ctrl is None or not ctrl._walking or ctrl.destination is None:
            return 0.0, self.yaw
        dx, dy = ctrl.destination.x - self.location.x, ctrl.destination.y - self.location.y
        remaining = math.hypot(dx, dy)
        if remaining < 1e-3:
            return 0.0, self.yaw
        return min(ctrl.max_speed, remaining / dt), math.degrees(math.atan2(dy, dx))


class FakeWalkerController(FakeActor):
    REAL = "WalkerAIController"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.started = False
        self._walking = False  # started after a tick since spawning
        self.destination: Any = None
        self.max_speed = WALKER_SPEED
        self.parent._controller = self

    def start(self) -> None:
        self.server.check()
        self.started = True
        # the client adds the walker to the crowd where it last saw it: nowhere before a tick
        self._walking = self.server.frame > self._spawned_at

    def stop(self) -> None:
        self.server.check()
        self.started = self._walking = False

    def go_to_location(self, destination: Any) -> None:
        self.server.check()
        if self.started:
            self.destination = carla.Location(destination.x, destination.y, destination.z)

    def set_max_speed(self, speed: float) -> None:
        self.server.check()
        if self.started:
            self.max_speed = float(speed)


class FakeSensor(FakeActor):
    REAL = "Sensor"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._callback: Any = None

    def listen(self, callback: Any) -> None:
        self.server.check()
        self._callback = callback

    def is_listening(self) -> bool:
        return self._callback is not None

    def stop(self) -> None:
        self.server.check()
        self._callback = None

    def destroy(self) -> bool:
        if self._callback is not None:  # stricter than the server: the env stops sensors first
            raise AssertionError(f"{self.type_id} destroyed while still listening")
        return super().destroy()


ACTOR_CLASSES: tuple[tuple[str, type[FakeActor]], ...] = (
    ("vehicle.", FakeVehicle),
    ("walker.", FakeWalker),
    ("controller.ai.walker", FakeWalkerController),
    ("sensor.", FakeSensor),
)


class FakeWaypoint(Faked):
    REAL = "Waypoint"

    def __init__(self, x: float, y: float = 0.0) -> None:
        self.transform = carla.Transform(carla.Location(x=x, y=y), carla.Rotation(yaw=0.0))
        self.lane_width = 3.5

    def next(self, distance: float) -> list[FakeWaypoint]:
        x = self.transform.location.x + distance
        return [FakeWaypoint(x)] if x < 5000 else []


class FakeLight(FakeActor):
    """The one traffic light, red, beside the road at x = 605 m (stop line at 600 m)."""

    REAL = "TrafficLight"

    def __init__(self, server: FakeServer) -> None:
        tf = carla.Transform(carla.Location(x=605.0, y=3.0))
        super().__init__(server, 7, "traffic.traffic_light", {}, tf, None)
        self.state = carla.TrafficLightState.Red

    def get_stop_waypoints(self) -> list[FakeWaypoint]:
        self.server.check()
        return [FakeWaypoint(600.0)]


DRIVING = carla.LaneType.Driving if carla else None


class FakeMap(Faked):
    REAL = "Map"

    def __init__(self, server: FakeServer) -> None:
        self.server, self.name = server, server.map_name

    def get_spawn_points(self) -> list[Any]:
        self.server.check()
        return [carla.Transform(carla.Location(x=40.0 * i, y=0.0, z=0.3)) for i in range(12)]

    def get_waypoint(self, location: Any, project_to_road: bool = True,
                     lane_type: Any = DRIVING) -> Any:  # fmt: skip
        self.server.check()
        if not project_to_road and abs(location.y) > 1.75:
            return None
        return FakeWaypoint(location.x)


class FakeWorld(Faked):
    REAL = "World"

    def __init__(self, server: FakeServer) -> None:
        self.server, self.id = server, server.world_id

    def get_settings(self) -> Any:
        self.server.check()
        s = carla.WorldSettings()
        for name in ("synchronous_mode", "fixed_delta_seconds", "no_rendering_mode"):
            setattr(s, name, getattr(self.server.settings, name))
        return s

    def apply_settings(self, settings: Any, seconds: float = 0.0) -> int:
        self.server.check()
        self.server.settings = settings
        self.server.applied.append(settings)
        return self.server.frame

    def get_map(self) -> FakeMap:
        self.server.check()
        return FakeMap(self.server)

    def get_blueprint_library(self) -> FakeLibrary:
        self.server.check()
        return FakeLibrary()

    def set_weather(self, weather: Any, /) -> None:
        self.server.check()
        self.server.weather = weather

    def set_pedestrians_seed(self, seed: int) -> None:
        self.server.check()
        self.server.rng = np.random.default_rng(seed)

    def try_spawn_actor(self, blueprint: FakeBlueprint, transform: Any,
                        attach_to: Any = None) -> Any:  # fmt: skip
        return self.server.spawn(blueprint, transform, attach_to)

    def spawn_actor(self, blueprint: FakeBlueprint, transform: Any, attach_to: Any = None) -> Any:
        actor = self.server.spawn(blueprint, transform, attach_to)
        if actor is None:
            raise RuntimeError("Spawn failed because of collision at spawn position")
        return actor

    def tick(self, seconds: float = 0.0) -> int:
        return self.server.tick()

    def get_actors(self, actor_ids: list[int] | None = None) -> ActorList:
        self.server.check()
        found = [self.server.spectator, self.server.light, *self.server.actors.values()]
        return ActorList(a for a in found if actor_ids is None or a.id in actor_ids)

    def get_random_location_from_navigation(self) -> Any:
        self.server.check()
        return carla.Location(x=float(self.server.rng.uniform(0, 400)), y=6.0, z=0.2)

    def get_traffic_lights_from_waypoint(self, waypoint: Any, distance: float) -> list[FakeLight]:
        self.server.check()
        x = waypoint.transform.location.x
        return [self.server.light] if 0 <= 600 - x <= distance else []


class FakeClient(Faked):
    REAL = "Client"

    def __init__(self, server: FakeServer) -> None:
        self.server = server

    def set_timeout(self, seconds: float) -> None:
        self.timeout = seconds

    def get_world(self) -> FakeWorld:
        self.server.check()
        return FakeWorld(self.server)

    def get_server_version(self) -> str:
        self.server.check()
        return "0.9.16"

    def get_client_version(self) -> str:
        return "0.9.16"

    def get_trafficmanager(self, port: int = 8000) -> FakeTM:
        self.server.check()
        self.server.tm.port = port
        return self.server.tm

    def load_world(self, map_name: str, reset_settings: bool = True) -> FakeWorld:
        self.server.check()
        assert not self.server.settings.synchronous_mode, "load_world in synchronous mode"
        FakeServer.worlds += 1
        self.server.world_id = FakeServer.worlds
        self.server.map_name = f"Carla/Maps/{map_name}"
        self.server.loaded.append(map_name)
        self.server.actors.clear()
        if reset_settings:
            self.server.settings = carla.WorldSettings()
        return FakeWorld(self.server)
