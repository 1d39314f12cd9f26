"""Talking to a CARLA server safely: probing, retries, actor bookkeeping, settings, sensor queues.

No carla import here: these work on any object with the few methods they use (tests pass small
fakes, the env passes carla objects).
"""

from __future__ import annotations

import logging
import queue
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from drive_attention.envs.contract import SimulatorUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")


class CarlaConnectionError(SimulatorUnavailable):
    """No usable CARLA server at the configured address (after the configured retries)."""


class CarlaServerLost(RuntimeError):
    """The server stopped answering during an episode; the next reset() reconnects."""


def server_help(host: str, port: int) -> str:
    """How to start a server, for error messages."""
    return (
        f"Start a CARLA 0.9.15/0.9.16 server listening on {host}:{port}, e.g. "
        f"`docker run -d --rm --gpus all --net=host carlasim/carla:0.9.16 bash CarlaUE4.sh "
        f"-RenderOffScreen -nosound -carla-rpc-port={port}` or, from the packaged release, "
        f"`./CarlaUE4.sh -RenderOffScreen -nosound -carla-rpc-port={port}`; point the env at it "
        "with CARLA_HOST/CARLA_PORT or host=/port= (docs/carla.md, 'Start a server')."
    )


_LOST_PATTERN = re.compile(
    r"time-?out|timed out|connect|rpc|socket|broken pipe|end of file|eof|closed", re.IGNORECASE
)


def is_connection_error(err: BaseException) -> bool:
    """Whether an exception from the carla client means the server is gone or not answering."""
    if isinstance(err, (CarlaServerLost, CarlaConnectionError, TimeoutError, OSError)):
        return True
    return isinstance(err, RuntimeError) and bool(_LOST_PATTERN.search(str(err)))


# ----------------------------------------------------------------------------------------------
# Probe
# ----------------------------------------------------------------------------------------------

# A msgpack-rpc request [0, msgid=0, "version", [Metadata(sync)]], as libcarla sends it.
_VERSION_REQUEST = bytes([0x94, 0x00, 0x00, 0xA7]) + b"version" + bytes([0x91, 0x91, 0xC2])
_RESPONSE_PREFIX = bytes([0x94, 0x01])  # msgpack-rpc response: a 4-array starting with type 1


def probe_server(host: str, port: int, timeout_s: float) -> None:
    """Check within ``timeout_s`` that a CARLA (msgpack-rpc) server answers at host:port.

    Raises CarlaConnectionError with what to do otherwise. This runs before carla.Client is made
    because libcarla aborts the whole process when a service that is not CARLA answers (for
    example an HTTP proxy), and answers 'connection refused' only after its full timeout.
    """
    where = f"{host}:{port}"
    try:
        sock = socket.create_connection((host, port), timeout=timeout_s)
    except socket.gaierror as err:
        raise CarlaConnectionError(
            f"cannot resolve CARLA host {host!r} ({err}). {server_help(host, port)}"
        ) from None
    except ConnectionRefusedError:
        raise CarlaConnectionError(
            f"no CARLA server is listening at {where} (connection refused). "
            + server_help(host, port)
        ) from None
    except TimeoutError:
        raise CarlaConnectionError(
            f"connecting to {where} timed out after {timeout_s:g} s. " + server_help(host, port)
        ) from None
    except OSError as err:
        raise CarlaConnectionError(
            f"cannot reach {where}: {err}. " + server_help(host, port)
        ) from None
    with sock:
        deadline = time.monotonic() + timeout_s
        answer = b""
        try:
            sock.sendall(_VERSION_REQUEST)
            while len(answer) < len(_RESPONSE_PREFIX):
                sock.settimeout(max(deadline - time.monotonic(), 1e-3))
                chunk = sock.recv(64)
                if not chunk:
                    break
                answer += chunk
        except TimeoutError:
            raise CarlaConnectionError(
                f"something at {where} accepted the connection but did not answer within "
                f"{timeout_s:g} s (a CARLA server still starting or loading a map? then raise "
                "timeout_s). " + server_help(host, port)
            ) from None
        except OSError as err:
            raise CarlaConnectionError(f"{where} dropped the connection: {err}") from None
    if not answer.startswith(_RESPONSE_PREFIX):
        seen = repr(answer[:40]) if answer else "nothing (connection closed)"
        raise CarlaConnectionError(
            f"the service at {where} is not a CARLA server (it answered {seen}); set "
            "CARLA_HOST/CARLA_PORT (or host=/port=) to the server's RPC port (default 2000). "
            + server_help(host, port)
        )


def with_retries(
    attempt: Callable[[], T],
    attempts: int,
    delay_s: float,
    what: str,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``attempt`` until it succeeds, at most ``attempts`` times, ``delay_s`` apart.

    Only CarlaConnectionError is retried; the last one is re-raised with the attempt count.
    """
    last: CarlaConnectionError | None = None
    for i in range(attempts):
        try:
            return attempt()
        except CarlaConnectionError as err:
            last = err
            log.warning("%s: attempt %d/%d failed: %s", what, i + 1, attempts, err)
            if i + 1 < attempts:
                sleep(delay_s)
    assert last is not None
    raise CarlaConnectionError(f"{what} failed after {attempts} attempt(s): {last}") from last


# ----------------------------------------------------------------------------------------------
# Actors
# ----------------------------------------------------------------------------------------------


def _flag(obj: Any, name: str, default: bool) -> bool:
    """A bool attribute that is a property in some carla versions and a method in others."""
    value = getattr(obj, name, default)
    return bool(value() if callable(value) else value)


def _describe(actor: Any) -> str:
    return f"{getattr(actor, 'type_id', type(actor).__name__)} {getattr(actor, 'id', '?')}"


@dataclass
class DestroyReport:
    """What ActorRegistry.destroy_all did."""

    destroyed: int = 0
    already_gone: int = 0
    abandoned: int = 0  # not attempted after repeated failures (server gone)
    failed: list[str] = field(default_factory=list)


class ActorRegistry:
    """Every actor the env spawned, destroyed in reverse spawn order (sensors before their car,
    walker controllers before their walker).

    ``forget`` drops the actors without calling the server (when it is gone) and keeps their ids
    and type ids as orphans; ``purge_orphans`` destroys those that still exist once a server
    answers again, matching the type id so that a restarted server's own actors are never hit.
    """

    def __init__(self) -> None:
        self._actors: list[Any] = []
        self.orphans: dict[int, str] = {}

    def add(self, actor: T) -> T:
        self._actors.append(actor)
        return actor

    def __len__(self) -> int:
        return len(self._actors)

    @property
    def ids(self) -> list[int]:
        return [a.id for a in self._actors]

    def destroy_all(self, give_up_after: int = 3) -> DestroyReport:
        """Stop and destroy every actor, newest first; tolerant of actors already destroyed.

        After ``give_up_after`` failures in a row (the server is not answering) the rest are
        forgotten as orphans instead of waiting a timeout for each.
        """
        report = DestroyReport()
        actors, self._actors = self._actors[::-1], []
        streak = 0
        for i, actor in enumerate(actors):
            if streak >= give_up_after:
                rest = actors[i:]
                report.abandoned = len(rest)
                self.orphans.update({a.id: str(getattr(a, "type_id", "")) for a in rest})
                break
            try:
                if not _flag(actor, "is_alive", True):
                    report.already_gone += 1
                    continue
                if _flag(actor, "is_listening", False):
                    actor.stop()
                if str(getattr(actor, "type_id", "")).startswith("controller.ai.walker"):
                    actor.stop()
                if actor.destroy() is False:
                    report.already_gone += 1
                else:
                    report.destroyed += 1
                streak = 0
            except Exception as err:  # a dead server raises RuntimeError; record and go on
                streak += 1
                report.failed.append(f"{_describe(actor)}: {err}")
                self.orphans[actor.id] = str(getattr(actor, "type_id", ""))
        if report.failed:
            log.warning("could not destroy %d actor(s): %s", len(report.failed), report.failed)
        return report

    def forget(self) -> int:
        """Drop all actors without calling the server; returns how many."""
        self.orphans.update({a.id: str(getattr(a, "type_id", "")) for a in self._actors})
        n, self._actors = len(self._actors), []
        return n

    def purge_orphans(self, world: Any) -> int:
        """Destroy orphans still alive in ``world`` (same id and type id); returns how many."""
        if not self.orphans:
            return 0
        ids, self.orphans = self.orphans, {}
        purged = 0
        for actor in world.get_actors(list(ids)):
            if actor.id in ids and str(getattr(actor, "type_id", "")) == ids[actor.id]:
                try:
                    if _flag(actor, "is_listening", False):
                        actor.stop()
                    actor.destroy()
                    purged += 1
                except Exception as err:
                    log.warning("could not destroy leftover %s: %s", _describe(actor), err)
        return purged


# ----------------------------------------------------------------------------------------------
# World settings
# ----------------------------------------------------------------------------------------------

SETTINGS_FIELDS: tuple[str, ...] = (
    "synchronous_mode",
    "no_rendering_mode",
    "fixed_delta_seconds",
    "substepping",
    "max_substep_delta_time",
    "max_substeps",
    "max_culling_distance",
    "deterministic_ragdolls",
    "tile_stream_distance",
    "actor_active_distance",
    "spectator_as_ego",
)


def copy_settings(source: Any, target: Any) -> Any:
    """Copy the fields of a carla.WorldSettings (those both objects have) into ``target``."""
    for name in SETTINGS_FIELDS:
        if hasattr(source, name) and hasattr(target, name):
            setattr(target, name, getattr(source, name))
    return target


def synchronous_settings(original: Any, fixed_delta_s: float, factory: Callable[[], Any]) -> Any:
    """A copy of ``original`` in synchronous mode with a fixed step [s]."""
    settings = copy_settings(original, factory())
    settings.synchronous_mode = True
    settings.fixed_delta_seconds = fixed_delta_s
    return settings


class SettingsGuard:
    """Saves the world's settings before the env changes them and puts them back on close.

    ``factory`` makes an empty settings object (carla.WorldSettings).
    """

    def __init__(self, factory: Callable[[], Any]) -> None:
        self.factory = factory
        self.saved: Any | None = None

    def save(self, world: Any) -> None:
        """Remember the world's settings, once per connection."""
        if self.saved is None:
            self.saved = copy_settings(world.get_settings(), self.factory())

    def apply_synchronous(self, world: Any, traffic_manager: Any, fixed_delta_s: float) -> None:
        self.save(world)
        world.apply_settings(synchronous_settings(self.saved, fixed_delta_s, self.factory))
        traffic_manager.set_synchronous_mode(True)

    def restore(self, world: Any, traffic_manager: Any | None) -> bool:
        """Apply the saved settings again; False if nothing was saved."""
        if self.saved is None:
            return False
        saved, self.saved = self.saved, None
        world.apply_settings(saved)
        if traffic_manager is not None:
            traffic_manager.set_synchronous_mode(bool(saved.synchronous_mode))
        return True

    def forget(self) -> None:
        """Drop the saved settings (their server is gone)."""
        self.saved = None


# ----------------------------------------------------------------------------------------------
# Sensor data
# ----------------------------------------------------------------------------------------------


class SensorQueue:
    """Callback target of a sensor that streams every frame; hands out one frame's data."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._queue: queue.Queue[Any] = queue.Queue()

    def __call__(self, data: Any) -> None:
        self._queue.put(data)

    def get(self, frame: int, timeout_s: float) -> Any:
        """The data of ``frame`` (older data is dropped; a newer frame is returned as is).

        Raises TimeoutError if none arrives within ``timeout_s`` [s].
        """
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            try:
                data = self._queue.get(timeout=max(remaining, 0.0)) if remaining > 0 else None
            except queue.Empty:
                data = None
            if data is None:
                raise TimeoutError(
                    f"the {self.name} sensor sent no data for frame {frame} within "
                    f"{timeout_s:g} s (server overloaded or gone?)"
                )
            if data.frame >= frame:
                return data

    def clear(self) -> None:
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return


class EventLog:
    """Callback target of an event sensor (collision, lane invasion): collects events."""

    def __init__(self) -> None:
        self._events: list[Any] = []
        self._lock = threading.Lock()

    def __call__(self, event: Any) -> None:
        with self._lock:
            self._events.append(event)

    def drain(self) -> list[Any]:
        with self._lock:
            events, self._events = self._events, []
        return events
