"""Is the fake CARLA server (tests/envs/carla/carla_fakes.py) true to the real client where the
env uses it?

- ``USED``: what the env (envs/carla) uses of each carla class, checked against the installed
  ``carla`` client: the class and member exist, a method has a signature (parsed from its
  Boost.Python docstring, ``tick( (World)arg1 [, (float)seconds=0.0]) -> int :``), a property is
  a property;
- every fake class stands in for the real class in its ``REAL``: each of its public methods and
  properties exists there, every call its signature accepts the real one accepts too (same
  keyword names, same defaults, no extra parameters; ``argN`` parameters positional-only), and
  the fakes the env meets provide all of ``USED``, with values of the documented types;
- a recorded run of the env on the fake (traffic, walkers, streamed sensors, a collision, a server
  loss and reconnection): everything it touched on the fakes is in ``USED`` and every call it
  made binds to a real signature and returned the documented type;
- the fake's own behaviours (streaming on another thread, delays, stale and held data, losses,
  box overlaps and collision events, the traffic manager, walkers, reverse gear, spawning) on
  hand-made scenes.
"""

from __future__ import annotations

import ast
import inspect
import itertools
import math
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

carla = pytest.importorskip(
    "carla", reason="the carla client is not installed: pip install -e '.[carla]'"
)

import carla_fakes  # noqa: E402  (after the importorskip)
from carla_fakes import (  # noqa: E402
    TM_MIN_GAP,
    FakeBlueprint,
    FakeClient,
    Faked,
    FakeServer,
    FakeWaypoint,
    Stream,
    boxes_overlap,
    recording,
)

from drive_attention.envs.carla.env import CarlaDriveEnv  # noqa: E402
from drive_attention.envs.carla.runtime import CarlaServerLost  # noqa: E402

# ==============================================================================================
# What the env uses of the real client
# ==============================================================================================

METHOD = "method"
# class -> member -> METHOD, or for a property the type of its value (a carla class name in a
# string: a fake standing in for that class or a subclass)
USED: dict[str, dict[str, Any]] = {
    "Client": dict.fromkeys(
        [
            "set_timeout",
            "get_world",
            "get_server_version",
            "get_client_version",
            "get_trafficmanager",
            "load_world",
        ],
        METHOD,
    ),
    "World": {
        "id": int,
        **dict.fromkeys(
            [
                "get_settings",
                "apply_settings",
                "get_map",
                "get_blueprint_library",
                "set_weather",
                "set_pedestrians_seed",
                "try_spawn_actor",
                "spawn_actor",
                "tick",
                "get_actors",
                "get_random_location_from_navigation",
                "get_traffic_lights_from_waypoint",
            ],
            METHOD,
        ),
    },
    "Map": {"name": str, "get_spawn_points": METHOD, "get_waypoint": METHOD},
    "Waypoint": {"transform": carla.Transform, "lane_width": float, "next": METHOD},
    "TrafficManager": {"set_synchronous_mode": METHOD, "set_random_device_seed": METHOD},
    "BlueprintLibrary": {"find": METHOD, "filter": METHOD},
    "ActorBlueprint": {
        "id": str,
        "has_attribute": METHOD,
        "set_attribute": METHOD,
        "get_attribute": METHOD,
    },
    "ActorAttribute": {"as_int": METHOD, "recommended_values": list},
    "ActorList": {"filter": METHOD},
    "Actor": {
        "id": int,
        "type_id": str,
        "is_alive": bool,
        "bounding_box": carla.BoundingBox,
        "destroy": METHOD,
        "get_transform": METHOD,
        "get_velocity": METHOD,
    },
    "Vehicle": dict.fromkeys(
        ["apply_control", "set_autopilot", "is_at_traffic_light", "get_traffic_light"], METHOD
    ),
    "WalkerAIController": dict.fromkeys(
        ["start", "stop", "go_to_location", "set_max_speed"], METHOD
    ),
    "Sensor": dict.fromkeys(["listen", "is_listening", "stop"], METHOD),
    "TrafficLight": {"state": carla.TrafficLightState, "get_stop_waypoints": METHOD},
    "SensorData": {"frame": int},
    "Image": {"raw_data": bytes, "width": int, "height": int},
    "IMUMeasurement": {"accelerometer": carla.Vector3D, "gyroscope": carla.Vector3D},
    "CollisionEvent": {"other_actor": "Actor", "normal_impulse": carla.Vector3D},
}
# (class, method) that return None for "nothing there" rather than the type in their docstring
MAY_RETURN_NONE = {
    ("World", "try_spawn_actor"),
    ("Map", "get_waypoint"),
    ("Vehicle", "get_traffic_light"),
}


def test_the_used_table_names_real_classes_members_and_kinds() -> None:
    for cls_name, members in USED.items():
        assert hasattr(carla, cls_name), f"carla.{cls_name} is not in the client"
        for name, spec in members.items():
            assert real_kind(cls_name, name) == (METHOD if spec == METHOD else "property"), (
                f"carla.{cls_name}.{name}"
            )
            if spec == METHOD:
                assert overloads(cls_name, name), f"carla.{cls_name}.{name}: no signature parsed"
    # the examples of the issue, spelled out
    assert hasattr(carla.World, "tick") and overloads("World", "tick")[0].returns == "int"
    assert isinstance(inspect.getattr_static(carla.SensorData, "frame"), property)
    assert isinstance(inspect.getattr_static(carla.CollisionEvent, "other_actor"), property)
    assert [p.name for p in overloads("Vehicle", "apply_control")[0].params] == ["control"]
    go_to = overloads("WalkerAIController", "go_to_location")[0].params
    assert [(p.type, p.name) for p in go_to] == [("Location", "destination")]


# ==============================================================================================
# Signatures from the Boost.Python docstrings
# ==============================================================================================


@dataclass(frozen=True)
class Param:
    type: str
    name: str
    optional: bool
    default: str | None


@dataclass(frozen=True)
class Overload:
    params: tuple[Param, ...]  # without self
    returns: str


_TOKEN = re.compile(r"\[|\]|\((?P<type>[\w.]+)\)(?P<name>\w+)(?:=(?P<default>[^,\[\]\s]+))?")


def parse_signature(name: str, doc: str) -> list[Overload]:
    """The overloads in a Boost.Python docstring: ``name( (Cls)arg1 [, (T)x=1]) -> R :``."""
    found = []
    for line in doc.splitlines():
        m = re.match(rf"^\s*{re.escape(name)}\((.*)\) -> (\S+) :\s*$", line)
        if not m:
            continue
        depth, params = 0, []
        for t in _TOKEN.finditer(m.group(1)):
            if t.group(0) == "[":
                depth += 1
            elif t.group(0) == "]":
                depth -= 1
            else:
                params.append(Param(t["type"], t["name"], depth > 0, t["default"]))
        found.append(Overload(tuple(params[1:]), m.group(2)))
    return found


def overloads(cls_name: str, name: str) -> list[Overload]:
    return parse_signature(name, getattr(getattr(carla, cls_name), name).__doc__ or "")


def test_the_docstring_parser_on_a_known_signature() -> None:
    doc = "\nspawn( (W)arg1, (Bp)blueprint [, (A)attach_to=None [, (T)kind=carla.X.Y]]) -> A :\n"
    (ov,) = parse_signature("spawn", doc)
    assert ov.returns == "A" and [p.name for p in ov.params] == ["blueprint", "attach_to", "kind"]
    assert [p.optional for p in ov.params] == [False, True, True]
    assert [p.default for p in ov.params] == [None, "None", "carla.X.Y"]
    assert len(overloads("World", "get_actors")) == 2  # get_actors() and get_actors(actor_ids)


def real_kind(cls_name: str, name: str) -> str | None:
    member = inspect.getattr_static(getattr(carla, cls_name), name, None)
    if member is None:
        return None
    return "property" if isinstance(member, property) else METHOD


def real_accepts(ov: Overload, npos: int, keywords: tuple[str, ...]) -> bool:
    """Whether a call with ``npos`` positional arguments and these keywords binds to ``ov``."""
    if npos > len(ov.params):
        return False
    rest = ov.params[npos:]
    named = {p.name for p in rest if not re.fullmatch(r"arg\d+", p.name)}  # argN: no keyword
    return set(keywords) <= named and all(p.optional or p.name in keywords for p in rest)


def fake_shapes(func: Any) -> list[tuple[int, tuple[str, ...]]]:
    """Every (n positional, keywords) call shape a fake method accepts."""
    sig = inspect.signature(func)
    params = list(sig.parameters.values())[1:]  # without self
    kinds = {p.kind for p in params}
    assert not kinds & {inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD}, (
        f"{func.__qualname__}: no *args"
    )
    shapes = []
    for npos in range(len(params) + 1):
        names = [p.name for p in params[npos:] if p.kind is not p.POSITIONAL_ONLY]
        for r in range(len(names) + 1):
            for keywords in itertools.combinations(names, r):
                try:
                    sig.bind(None, *range(npos), **dict.fromkeys(keywords, 0))
                except TypeError:
                    continue
                shapes.append((npos, keywords))
    return shapes


def default_value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return eval(text, {"carla": carla})  # e.g. carla.libcarla.LaneType.Driving


def check_signature(fake_cls: type, name: str, real_cls: str) -> None:
    """Every call the fake method accepts, the real one accepts; the same defaults."""
    func = getattr(fake_cls, name)
    real = overloads(real_cls, name)
    where = f"{fake_cls.__name__}.{name} vs carla.{real_cls}.{name}"
    assert real, f"{where}: the real one has no parsed signature"
    for npos, keywords in fake_shapes(func):
        assert any(real_accepts(ov, npos, keywords) for ov in real), (
            f"{where}: the fake accepts {npos} positional + {keywords}, the client does not "
            f"({[ov.params for ov in real]})"
        )
    longest = max(real, key=lambda ov: len(ov.params)).params
    fake_params = list(inspect.signature(func).parameters.values())[1:]
    for i, p in enumerate(fake_params):
        if p.default is not p.empty and i < len(longest) and longest[i].default is not None:
            assert p.default == default_value(longest[i].default), f"{where}: default of {p.name}"


# ==============================================================================================
# The fake classes against the real ones
# ==============================================================================================

FAKES = sorted(
    (
        c
        for c in vars(carla_fakes).values()
        if isinstance(c, type) and issubclass(c, Faked) and c is not Faked
    ),
    key=lambda c: c.__name__,
)


def real_of(fake_cls: type) -> type:
    return getattr(carla, fake_cls.REAL)


def public_members(fake_cls: type) -> dict[str, Any]:
    """Methods and properties the fake class itself (or a fake base) defines, not list's etc."""
    members: dict[str, Any] = {}
    for base in reversed(fake_cls.__mro__):
        if base.__module__ == carla_fakes.__name__ and base is not Faked:
            for name, value in vars(base).items():
                if not name.startswith("_") and (callable(value) or isinstance(value, property)):
                    members[name] = value
    return members


@pytest.mark.parametrize("fake_cls", [pytest.param(c, id=c.__name__) for c in FAKES])
def test_a_fake_offers_only_what_its_real_class_has_with_compatible_signatures(
    fake_cls: type,
) -> None:
    assert fake_cls.REAL and hasattr(carla, fake_cls.REAL), f"{fake_cls.__name__}.REAL"
    for name, value in public_members(fake_cls).items():
        kind = "property" if isinstance(value, property) else METHOD
        assert real_kind(fake_cls.REAL, name) == kind, (
            f"{fake_cls.__name__}.{name}: carla.{fake_cls.REAL} has no {kind} {name}"
        )
        if kind == METHOD:
            check_signature(fake_cls, name, fake_cls.REAL)


def value_matches(spec: Any, value: Any) -> bool:
    if isinstance(spec, str):  # a carla class: a fake of it (or of a subclass)
        return isinstance(value, Faked) and issubclass(real_of(type(value)), getattr(carla, spec))
    if spec is int:
        return type(value) is int
    if spec is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, spec)


@pytest.fixture
def server() -> Iterator[FakeServer]:
    threads = threading.active_count()
    yield FakeServer()
    assert FakeServer.shutdown_all() == []
    assert threading.active_count() <= threads  # every stream thread joined
    assert not [t for t in threading.enumerate() if t.name == "fake-carla-stream"]


def synchronous(world: Any) -> None:
    settings = world.get_settings()
    settings.synchronous_mode, settings.fixed_delta_seconds = True, 0.05
    world.apply_settings(settings)


def zoo(server: FakeServer) -> dict[str, Any]:
    """One instance of each fake the env meets, by class name, from a small scene."""
    client = FakeClient(server)
    world = client.get_world()
    synchronous(world)
    tm = client.get_trafficmanager(8000)
    tm.set_synchronous_mode(True)
    lib = world.get_blueprint_library()
    spawn = world.spawn_actor
    car = spawn(lib.find("vehicle.audi.tt"), at(0.0))
    other = spawn(lib.find("vehicle.tesla.model3"), at(20.0))
    walker = spawn(lib.find("walker.pedestrian.0001"), at(y=6.0))
    controller = spawn(lib.find("controller.ai.walker"), carla.Transform(), walker)
    received: dict[str, list[Any]] = {}
    sensors = {}
    for kind in ("sensor.other.collision", "sensor.other.imu", "sensor.camera.rgb"):
        sensors[kind] = sensor = spawn(lib.find(kind), carla.Transform(), car)
        sensor.listen(received.setdefault(kind, []).append)
    other.set_transform(at(4.0))  # overlapping the car
    world.tick()
    assert server.streamer.flush()
    bp = lib.find("vehicle.audi.tt")
    return {
        "FakeClient": client,
        "FakeWorld": world,
        "FakeMap": world.get_map(),
        "FakeWaypoint": world.get_map().get_waypoint(carla.Location(x=5.0)),
        "FakeTM": tm,
        "FakeLibrary": lib,
        "FakeBlueprint": bp,
        "FakeAttribute": bp.get_attribute("number_of_wheels"),
        "ActorList": world.get_actors(),
        "FakeActor": server.spectator,
        "FakeVehicle": car,
        "FakeWalker": walker,
        "FakeWalkerController": controller,
        "FakeSensor": sensors["sensor.other.imu"],
        "FakeLight": server.light,
        "FakeImage": received["sensor.camera.rgb"][0],
        "FakeIMU": received["sensor.other.imu"][0],
        "FakeCollisionEvent": received["sensor.other.collision"][0],
    }


def test_the_fakes_the_env_meets_provide_everything_it_uses(server: FakeServer) -> None:
    for fake_name, obj in zoo(server).items():
        assert type(obj).__name__ == fake_name
        for base in real_of(type(obj)).__mro__:
            for name, spec in USED.get(base.__name__, {}).items():
                where = f"{fake_name}.{name} (carla.{base.__name__})"
                assert hasattr(obj, name), f"{where} is missing"
                if spec == METHOD:
                    assert inspect.isfunction(getattr(type(obj), name, None)), f"{where}: method"
                    check_signature(type(obj), name, base.__name__)
                else:
                    value = getattr(obj, name)
                    assert not inspect.ismethod(value), f"{where}: a property, not a method"
                    assert value_matches(spec, value), f"{where}: {value!r} is not {spec}"


def returns_match(cls_name: str, name: str, returns: str, result_type: type) -> bool:
    builtin = {"int": int, "bool": bool, "float": float, "str": str, "list": list}
    if returns == "object":
        return True
    if result_type is type(None):
        return returns == "None" or (cls_name, name) in MAY_RETURN_NONE
    if returns == "int":
        return result_type is int
    if returns in builtin:
        return issubclass(result_type, builtin[returns])
    real = getattr(carla, returns)
    if issubclass(result_type, Faked):
        return issubclass(real_of(result_type), real)
    return issubclass(result_type, real)


def owner(fake_cls: type, name: str) -> str | None:
    """The real class (the fake's or a base) whose USED entry lists ``name``."""
    return next(
        (b.__name__ for b in real_of(fake_cls).__mro__ if name in USED.get(b.__name__, {})), None
    )


def test_everything_the_env_touches_on_the_fake_is_checked_against_the_client(
    monkeypatch: pytest.MonkeyPatch, server: FakeServer
) -> None:
    """Run the env through its paths on the fake, recording what code under envs/ uses."""
    monkeypatch.setattr(
        CarlaDriveEnv, "client_factory", staticmethod(lambda h, p: FakeClient(server))
    )
    monkeypatch.setattr(CarlaDriveEnv, "probe", staticmethod(lambda host, port, timeout: None))
    server.stream = Stream(delay_ms={"sensor.camera.*": 1.0}, stale=True, shuffle=True)
    config = {
        "town": "Town03",
        "camera_size": (48, 64),
        "n_vehicles": 3,
        "n_pedestrians": 2,
        "warmup_steps": 2,
        "timeout_s": 1.0,
        "retry_delay_s": 0.0,
        "n_rays": 8,
        "route_length_m": 200.0,
        "road_labels": True,
    }
    with recording() as recorder:
        env = CarlaDriveEnv(**config)
        env.reset(seed=0)
        for _ in range(3):
            env.step([0.1, 0.5])
        ego = server.ego()
        state_ahead = env._light_ahead(ego, FakeWaypoint(570.0), np.array([570.0, 0.0]))
        assert state_ahead[0] == "red"
        car = server.spawn(FakeBlueprint("vehicle.audi.tt", role_name="x"), at(-900.0), None)
        car.set_transform(carla.Transform(carla.Location(x=ego.location.x + 4.0)))
        assert env.step([0.0, 0.0])[4]["collided_with"] == ["vehicle.audi.tt"]
        env.reset(seed=1)  # the previous episode's actors destroyed
        server.alive = False
        with pytest.raises(CarlaServerLost):
            env.step([0.0, 0.0])
        server.alive = True  # back: the next reset purges the leftovers
        env.reset(seed=2)
        env.step([0.0, 0.0])
        env.close()
    assert list(server.actors) == [car.id]  # the test's car; the env destroyed all of its own
    problems = []
    for (fake_cls, name), use in sorted(recorder.uses.items(), key=lambda kv: str(kv[0])):
        cls_name = owner(fake_cls, name)
        where = f"{fake_cls.__name__}.{name} (carla.{fake_cls.REAL})"
        if cls_name is None:
            problems.append(f"{where}: used by the env but not in USED; check it on the client")
            continue
        spec = USED[cls_name][name]
        if (spec == METHOD) != (use.kind == METHOD):
            problems.append(f"{where}: used as a {use.kind}")
            continue
        if use.kind == METHOD:
            real = overloads(cls_name, name)
            for npos, keywords in use.calls:
                fits = [ov for ov in real if real_accepts(ov, npos, keywords)]
                if not fits:
                    problems.append(f"{where}: called with {npos} positional + {keywords}")
                for t in use.types:
                    if not any(returns_match(cls_name, name, ov.returns, t) for ov in fits):
                        problems.append(f"{where}: returned a {t.__name__}")
        else:
            for t, value in use.examples.items():
                if not value_matches(spec, value):
                    problems.append(f"{where}: read a {t.__name__}, documented {spec}")
    assert problems == []
    used = {owner(c, n) + "." + n for c, n in recorder.uses}
    assert {
        "World.tick",
        "SensorData.frame",
        "CollisionEvent.other_actor",
        "Vehicle.apply_control",
        "WalkerAIController.go_to_location",
        "Sensor.listen",
        "Actor.destroy",
        "World.get_actors",
    } <= used


# ==============================================================================================
# The fake's behaviours on hand-made scenes
# ==============================================================================================


def at(x: float = 0.0, y: float = 0.0, yaw: float = 0.0) -> Any:
    return carla.Transform(carla.Location(x=x, y=y), carla.Rotation(yaw=yaw))


def scene(server: FakeServer) -> tuple[Any, Any, Any]:
    """A synchronous world, its blueprint library and a car at the origin heading +x."""
    world = FakeClient(server).get_world()
    synchronous(world)
    server.tm.set_synchronous_mode(True)
    lib = world.get_blueprint_library()
    car = world.spawn_actor(lib.find("vehicle.audi.tt"), carla.Transform(carla.Location()))
    return world, lib, car


def test_callbacks_run_on_another_thread_after_tick_returned(server: FakeServer) -> None:
    world, lib, car = scene(server)
    imu = world.spawn_actor(lib.find("sensor.other.imu"), carla.Transform(), car)
    entered, gate, seen = threading.Event(), threading.Event(), []

    def callback(data: Any) -> None:
        seen.append((threading.get_ident(), data.frame))
        entered.set()
        gate.wait(5.0)  # held until the test thread, back from tick(), lets it go

    imu.listen(callback)
    frame = world.tick()
    assert entered.wait(5.0)  # tick() returned while the callback had not finished
    gate.set()
    assert server.streamer.flush()
    assert seen == [(seen[0][0], frame)] and seen[0][0] != threading.get_ident()
    imu.stop()


def test_the_stream_delays_holds_repeats_and_loses_data_as_configured(server: FakeServer) -> None:
    world, lib, car = scene(server)
    for kind in ("sensor.camera.rgb", "sensor.other.imu", "sensor.other.collision"):
        world.spawn_actor(lib.find(kind), carla.Transform(), car).listen(lambda data: None)
    other = world.spawn_actor(lib.find("vehicle.tesla.model3"), at(20.0))
    other.set_transform(at(4.0))  # overlapping: an event a frame
    f1 = server.frame + 1
    server.stream = Stream(
        delay_ms={"sensor.camera.rgb": 5.0},
        stale=True,
        hold_ticks={"sensor.other.collision": 1},
        lose=lambda kind, frame: (kind, frame) == ("sensor.other.imu", f1 + 1),
    )
    logs = []
    for _ in range(2):
        world.tick()
        assert server.streamer.flush()
        logs.append(list(server.streamer.log))
        server.streamer.log.clear()
    rgb, imu, hit = "sensor.camera.rgb", "sensor.other.imu", "sensor.other.collision"
    assert logs[0] == [(imu, f1), (rgb, f1)]  # the IMU first, the delayed image after; event held
    # the held event of f1, stale copies of f1 (the image still 5 ms late), f2's IMU lost
    assert logs[1] == [(hit, f1), (imu, f1), (rgb, f1), (rgb, f1 + 1)]


def test_shuffled_measurements_still_come_after_the_frames_events(server: FakeServer) -> None:
    world, lib, car = scene(server)
    kinds = ["sensor.camera.rgb", "sensor.camera.instance_segmentation", "sensor.other.imu"]
    for kind in [*kinds, "sensor.other.collision"]:
        world.spawn_actor(lib.find(kind), carla.Transform(), car).listen(lambda data: None)
    other = world.spawn_actor(lib.find("vehicle.tesla.model3"), at(20.0))
    other.set_transform(at(4.0))
    server.stream = Stream(shuffle=True, seed=3)
    orders = set()
    for _ in range(6):
        frame = world.tick()
        assert server.streamer.flush()
        log = list(server.streamer.log)
        server.streamer.log.clear()
        assert log[0] == ("sensor.other.collision", frame)
        assert sorted(log[1:]) == sorted((k, frame) for k in kinds)
        orders.add(tuple(k for k, _ in log[1:]))
    assert len(orders) > 1  # the order did change


def test_a_dead_server_streams_nothing_more(server: FakeServer) -> None:
    world, lib, car = scene(server)
    entered, gate, got = threading.Event(), threading.Event(), []

    def first(data: Any) -> None:  # the IMU's data come before the image's
        entered.set()
        gate.wait(5.0)

    world.spawn_actor(lib.find("sensor.other.imu"), carla.Transform(), car).listen(first)
    world.spawn_actor(lib.find("sensor.camera.rgb"), carla.Transform(), car).listen(got.append)
    world.tick()
    assert entered.wait(5.0)
    server.alive = False  # dies while the frame is being streamed
    gate.set()
    assert server.streamer.flush() and got == []


def _box(server: FakeServer, type_id: str, x: float, y: float = 0.0, yaw: float = 0.0) -> Any:
    actor = server.spawn(
        FakeBlueprint(type_id, role_name=""),
        carla.Transform(carla.Location(x=-1e4 - len(server.actors) * 10.0)),
        None,
    )
    actor.set_transform(carla.Transform(carla.Location(x=x, y=y), carla.Rotation(yaw=yaw)))
    return actor


@pytest.mark.parametrize(
    ("x", "y", "yaw", "overlap"),
    [
        # car half extents 2.4 m x 1.0 m; worked out on paper
        (5.3, 0.0, 0.0, False),  # 0.5 m behind each other
        (4.7, 0.0, 0.0, True),  # 0.1 m into each other
        (0.0, 2.5, 0.0, False),  # side by side, 0.5 m apart
        (3.9, 0.0, 90.0, False),  # crosswise ahead, 0.5 m apart (overlapping if yaw ignored)
        (3.3, 0.0, 90.0, True),  # crosswise, 0.1 m in
        # 45 deg at (4.6, 0): the corner nearest is 3.4 / sqrt(2) = 2.404 m before its centre
        (4.6, 0.0, 45.0, True),
        (4.9, 0.0, 45.0, False),
    ],
)
def test_boxes_overlap_with_their_yaw(
    server: FakeServer, x: float, y: float, yaw: float, overlap: bool
) -> None:
    a = _box(server, "vehicle.audi.tt", 0.0)
    b = _box(server, "vehicle.audi.tt", x, y, yaw)
    assert boxes_overlap(a, b) == overlap == boxes_overlap(b, a)


def test_collision_events_name_each_overlapping_actor_once_per_frame(server: FakeServer) -> None:
    world, lib, car = scene(server)
    events: list[Any] = []
    world.spawn_actor(lib.find("sensor.other.collision"), carla.Transform(), car).listen(
        events.append
    )
    ahead = _box(server, "vehicle.tesla.model3", 4.7)  # 0.1 m in
    walker = _box(server, "walker.pedestrian.0001", 0.0, 1.2)  # 0.1 m in, beside
    _box(server, "vehicle.tesla.model3", -5.3)  # 0.5 m behind: no contact
    frame = world.tick()
    assert server.streamer.flush()
    assert sorted((e.other_actor.id, e.frame) for e in events) == sorted(
        [(ahead.id, frame), (walker.id, frame)]
    )
    for e in events:
        assert e.actor is car and isinstance(e.normal_impulse, carla.Vector3D)
    front = next(e for e in events if e.other_actor is ahead)
    assert front.normal_impulse.x < 0 and abs(front.normal_impulse.y) < 1e-6  # pushed back
    ahead.set_transform(at(5.3))
    walker.set_transform(at(y=1.8))
    events.clear()
    world.tick()
    assert server.streamer.flush() and events == []  # near misses


def test_the_traffic_manager_drives_at_its_speed_and_stops_behind_an_obstacle(
    server: FakeServer,
) -> None:
    world, _, car = scene(server)  # the car at x = 0 stands still
    follower = _box(server, "vehicle.tesla.model3", -40.0)
    follower.set_autopilot(True, 8000)
    speeds = []
    for _ in range(300):
        world.tick()
        speeds.append(follower.speed)
        assert not boxes_overlap(follower, car)
    assert max(speeds) == pytest.approx(server.tm.target_speed)  # 6 m/s, reached at 3 m/s^2
    assert speeds[1] - speeds[0] == pytest.approx(3.0 * 0.05)
    gap = (car.location.x - 2.4) - (follower.location.x + 2.4)
    assert follower.speed == 0.0 and TM_MIN_GAP - 0.5 <= gap <= TM_MIN_GAP + 0.5
    server.tm.set_synchronous_mode(False)
    with pytest.raises(AssertionError, match="traffic manager not synchronous"):
        world.tick()


def test_walkers_walk_to_their_destination_once_started_after_a_tick(server: FakeServer) -> None:
    world, lib, _ = scene(server)
    early = world.spawn_actor(lib.find("walker.pedestrian.0001"), at(y=6.0))
    early_ai = world.spawn_actor(lib.find("controller.ai.walker"), carla.Transform(), early)
    early_ai.start()  # no tick since it was spawned
    early_ai.go_to_location(carla.Location(x=10.0, y=6.0))
    walker = world.spawn_actor(lib.find("walker.pedestrian.0001"), at(20.0, 6.0))
    ai = world.spawn_actor(lib.find("controller.ai.walker"), carla.Transform(), walker)
    ai.go_to_location(carla.Location(x=30.0, y=6.0))  # before start(): ignored
    world.tick()
    ai.start()
    assert ai.destination is None
    ai.go_to_location(carla.Location(x=21.0, y=6.0))
    ai.set_max_speed(1.5)
    world.tick()
    assert walker.location.x == pytest.approx(20.0 + 1.5 * 0.05)
    v = walker.get_velocity()
    assert (v.x, v.y) == pytest.approx((1.5, 0.0))
    for _ in range(30):
        world.tick()
    assert walker.location.x == pytest.approx(21.0, abs=1e-4) and walker.speed == 0.0  # arrived
    assert early.location.x == 0.0 and early.location.y == 6.0  # started too early: stays


def test_reverse_gear_and_braking_while_rolling_backwards(server: FakeServer) -> None:
    world, _, car = scene(server)
    car.apply_control(carla.VehicleControl(throttle=1.0, reverse=True))
    world.tick()
    assert car.speed == pytest.approx(-4.0 * 0.05)
    assert car.get_velocity().x == pytest.approx(-0.2) and car.location.x < 0
    car.speed = -2.0
    car.apply_control(carla.VehicleControl(brake=1.0))
    world.tick()
    assert car.speed == pytest.approx(-2.0 + 8.0 * 0.05)
    for _ in range(10):
        world.tick()
    assert car.speed == 0.0  # stops, does not drive off forwards


def test_spawning_fails_where_boxes_would_overlap(server: FakeServer) -> None:
    world, lib, _ = scene(server)  # a car at the origin
    bp = lib.find("vehicle.tesla.model3")
    assert world.try_spawn_actor(bp, at(4.7)) is None
    assert world.try_spawn_actor(bp, at(5.3)) is not None
    with pytest.raises(RuntimeError, match="Spawn failed"):
        world.spawn_actor(bp, at(1.0))
    with pytest.raises(RuntimeError, match="attached to a walker"):
        world.spawn_actor(lib.find("controller.ai.walker"), carla.Transform())


def test_the_imu_measures_this_steps_acceleration_and_yaw_rate(server: FakeServer) -> None:
    world, lib, car = scene(server)
    got: list[Any] = []
    world.spawn_actor(lib.find("sensor.other.imu"), carla.Transform(), car).listen(got.append)
    car.apply_control(carla.VehicleControl(throttle=0.5, steer=0.5))
    world.tick()
    world.tick()
    assert server.streamer.flush()
    # 2 m/s^2; yaw change = steer * speed * dt * 0.2 [rad] with the speed after the step
    assert [g.accelerometer.x for g in got] == pytest.approx([2.0, 2.0])
    assert got[1].gyroscope.z == pytest.approx(0.5 * 0.2 * 0.2, rel=1e-4)
    assert got[1].accelerometer.z == pytest.approx(9.81) and not math.isnan(got[1].compass)
