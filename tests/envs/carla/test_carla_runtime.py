"""Tests of the CARLA backend's runtime (envs/carla/runtime.py): actor bookkeeping, settings,
sensor queues, retries, probing an address.

They run without the carla client, except those marked ``needs_carla`` (real WorldSettings, the
real client's timeout).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from carla_fakes import (
    Actor,
    ActorList,
    SettingsWorld,
    TinyServer,
    TrafficManager,
    carla,
    free_port,
    needs_carla,
)

from drive_attention.envs.carla.runtime import (
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

# ==============================================================================================
# Actor bookkeeping, settings, sensor queues, retries
# ==============================================================================================


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


@needs_carla
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
    # data arriving from another thread, 0.05 s later (the time-out only guards against a hang:
    # on a busy machine the thread may start late)
    threading.Timer(0.05, q, args=(Data(6),)).start()
    assert q.get(6, 30.0).frame == 6
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="rgb camera sensor sent no data for frame 7"):
        q.get(7, 0.2)
    assert 0.2 <= time.monotonic() - start < 10 * 0.2  # its whole time-out; no hang
    log = EventLog()
    log("a")
    log("b")
    assert log.drain() == ["a", "b"] and log.drain() == []


def test_sensor_queue_waits_its_time_out_once_on_a_fake_clock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What a queue that never receives its frame waits, on a clock that moves only by the
    waits the queue asks for: the whole time-out, once (and stale data does not restart it)."""
    import queue as queues
    from types import SimpleNamespace

    import drive_attention.envs.carla.runtime as runtime

    clock = SimpleNamespace(now=100.0)
    waits: list[float] = []
    arriving = [SimpleNamespace(frame=6)]  # a stale frame arrives after 0.05 s, then nothing

    class Inbox:
        def get(self, timeout: float) -> object:
            waits.append(timeout)
            if arriving:
                clock.now += 0.05
                return arriving.pop()
            clock.now += timeout
            raise queues.Empty

    monkeypatch.setattr(runtime, "time", SimpleNamespace(monotonic=lambda: clock.now))
    q = SensorQueue("imu")
    q._queue = Inbox()
    with pytest.raises(TimeoutError, match=r"imu sensor sent no data for frame 7 within 0\.2 s"):
        q.get(7, 0.2)
    assert waits == pytest.approx([0.2, 0.15]) and clock.now == pytest.approx(100.2)


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


@pytest.fixture
def tiny_server(request: pytest.FixtureRequest) -> Iterator[TinyServer]:
    server = TinyServer(request.param)
    yield server
    server.close()


def test_probe_refused_port_fails_at_once_with_how_to_start_a_server() -> None:
    start = time.monotonic()
    with pytest.raises(CarlaConnectionError, match="connection refused") as err:
        probe_server("127.0.0.1", free_port(), 30.0)
    assert time.monotonic() - start < 10.0  # at once (milliseconds), not the 30 s time-out
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
    assert 0.4 < time.monotonic() - start < 5 * 0.5  # its time-out; no hang


@pytest.mark.parametrize("tiny_server", [bytes([0x94, 0x01, 0x00, 0xC0, 0xC0])], indirect=True)
def test_probe_accepts_a_msgpack_rpc_answer_and_sends_what_libcarla_sends(
    tiny_server: TinyServer,
) -> None:
    probe_server("127.0.0.1", tiny_server.port, 2.0)
    # libcarla 0.9.16's get_server_version() request, recorded from the real client:
    # [0, msgid, "version", [[False]]] (msgid 0 here, 1 in libcarla's first call).
    assert tiny_server.requests[0] == bytes.fromhex("940000a776657273696f6e9191c2")


@needs_carla
def test_real_carla_client_times_out_within_its_timeout() -> None:
    """Measured here: carla.Client(...) returns at once; get_world() on a port with no server
    raises RuntimeError('time-out of 2000ms while waiting for the simulator, ...') after the
    timeout (2.0 s) and does not hang."""
    client = carla.Client("127.0.0.1", free_port())
    client.set_timeout(1.0)
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="time-out of 1000ms"):
        client.get_world()
    assert 0.8 < time.monotonic() - start < 5 * 1.0  # its time-out; no hang
