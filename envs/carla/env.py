"""CARLA backend: ``DriveAttention/Carla-v0``, driving a route through a town on a CARLA server.

The env connects to a running CARLA 0.9.15/0.9.16 server (host, port and timeout from the config;
CARLA_HOST/CARLA_PORT honoured), runs it in synchronous mode with a fixed step, spawns the ego,
background traffic (traffic manager, synchronous) and pedestrians, and drives a route from the
spawn point to a random destination. See envs.contract for the observation/reward/info contract
and envs.carla.config.CarlaEnvConfig for the options.

Robustness: every spawned actor is destroyed on reset and close (also after errors); a server
that stops answering raises CarlaServerLost from step (or ends the episode with
``on_server_loss="truncate"``) and CarlaConnectionError/CarlaServerLost from reset; the next
reset reconnects with bounded retries. close() restores the world settings found on connecting.

The camera is RGB; road labels come from a segmentation camera with the same pose and
intrinsics. Range rays are cast (analytically) against the bounding boxes of the other vehicles
and pedestrians, from the ego's centre; they do not see buildings or poles.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

try:
    import carla
except ImportError as _err:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "The CARLA backend (DriveAttention/Carla-v0) needs the CARLA client package: "
        "pip install -e '.[carla]'  (it pins carla==0.9.16, which also talks to 0.9.15 servers)"
    ) from _err

from drive_attention.envs.carla.config import WEATHER_PRESETS, CarlaEnvConfig
from drive_attention.envs.carla.core import (
    LIGHT_STATES,
    Readings,
    RouteTracker,
    SensorScales,
    StuckDetector,
    action_to_control,
    assemble_sensors,
    bgra_to_rgb,
    cast_rays,
    ego_region_mask,
    labels_from_segmentation,
    lane_errors,
    make_sensor_names,
    random_route,
    waypoint_xy,
    world_to_ego,
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
    server_help,
    with_retries,
)
from drive_attention.envs.configuration import build
from drive_attention.envs.contract import (
    REWARD_TERMS,
    EpisodeStats,
    FrameStack,
    action_change,
    action_space,
    check_action,
    check_render_mode,
    observation_space,
    reward_terms,
    sensor_groups,
    weigh,
)

log = logging.getLogger(__name__)

ROUTE_STEP_M = 2.0  # [m] spacing of the route polyline
SPAWN_ATTEMPTS = 30  # spawn points tried for the ego
RED_LIGHT_WAIT_M = 15.0  # [m] closer than this to a red light's stop line counts as waiting
_LIGHT_NAMES = {
    carla.TrafficLightState.Red: "red",
    carla.TrafficLightState.Yellow: "yellow",
    carla.TrafficLightState.Green: "green",
}
assert set(_LIGHT_NAMES.values()) == set(LIGHT_STATES)


@dataclass
class _Episode:
    """Everything that lives for one episode."""

    ego: Any
    route: RouteTracker
    rgb: SensorQueue
    imu: SensorQueue
    segmentation: SensorQueue | None
    collisions: EventLog
    invasions: EventLog
    ego_region: np.ndarray | None  # (H, W) bool, the ego's box projected into the camera
    frames: FrameStack
    stats: EpisodeStats
    stuck: StuckDetector
    previous_action: np.ndarray
    last_obs: dict[str, np.ndarray] | None = None
    last_rgb: np.ndarray | None = None
    steps: int = 0
    start_frame: int = -1  # events of this frame or earlier (spawning, warm-up) are not the agent's
    done: bool = False


@dataclass
class _Frame:
    """What the env read from the server for one frame."""

    rgb: np.ndarray  # (H, W, 3) uint8
    labels: np.ndarray | None  # (H, W) uint8
    position: np.ndarray  # (2,) [m] ego position (world frame)
    readings: Readings
    speed: float  # [m/s] forward
    speed_along_route: float  # [m/s]
    off_road: bool
    route_distance: float  # [m] from the route
    collided_with: list[str]
    lane_invasion: bool
    waiting_at_red: bool


class CarlaDriveEnv(gym.Env):
    """Route driving in CARLA with a camera + sensor-vector observation (see module docstring)."""

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 20}

    # Seams for tests without a server: how a client is made and how the address is probed.
    client_factory: Any = staticmethod(carla.Client)
    probe: Any = staticmethod(probe_server)

    def __init__(self, render_mode: str | None = None, **kwargs: Any) -> None:
        self.config: CarlaEnvConfig = build(CarlaEnvConfig, kwargs)
        self.render_mode = check_render_mode(render_mode)
        c = self.config
        self.sensor_names: tuple[str, ...] = make_sensor_names(c.n_route_points, c.n_rays)
        self.sensor_groups: dict[str, list[int]] = sensor_groups(self.sensor_names)
        self.camera_geometry = c.camera_geometry  # frame size (a perspective view)
        self.observation_space = observation_space(
            c.camera_size, c.frame_stack, len(self.sensor_names)
        )
        self.action_space = action_space("continuous")
        self.metadata = {**self.metadata, "render_fps": round(1.0 / c.fixed_delta_s)}
        self._scales = SensorScales(
            speed=c.speed_range[1],
            route=c.n_route_points * c.route_point_spacing_m,
            light=c.light_range,
            ray=c.ray_range,
        )
        self._client: Any = None
        self._connected_once = False  # a server answered this env once (then retries apply)
        self._world: Any = None
        self._map: Any = None
        self._tm: Any = None
        self._blueprints: Any = None
        self._settings = SettingsGuard(carla.WorldSettings)
        self._actors = ActorRegistry()
        self._episode: _Episode | None = None
        self._stop_lines: dict[int, np.ndarray] = {}  # traffic-light id -> (K, 2) [m]

    def check_available(self) -> None:
        """Raise CarlaConnectionError (a SimulatorUnavailable) with how to start a server when
        nothing listens at the configured address; cheap, connects nothing."""
        self.probe(self.config.host, self.config.port, self.config.timeout_s)

    @property
    def address(self) -> str:
        return f"{self.config.host}:{self.config.port}"

    # ------------------------------------------------------------------------------------------
    # Gymnasium API
    # ------------------------------------------------------------------------------------------

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        super().reset(seed=seed)
        self._episode = None
        if self._world is not None and self._same_world():
            self._actors.destroy_all()
        else:
            self._drop_connection()
        try:
            if self._world is None:
                self._connect()
            return self._start_episode()
        except CarlaConnectionError:
            self._drop_connection()
            raise
        except Exception as err:
            if is_connection_error(err):
                self._drop_connection()
                raise CarlaServerLost(
                    f"the CARLA server at {self.address} stopped answering during reset(): "
                    f"{err}. Call reset() again to reconnect (up to {self.config.connect_retries}"
                    f" attempts); if it keeps failing, restart the server. "
                    + server_help(self.config.host, self.config.port)
                ) from err
            self._actors.destroy_all()
            raise

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        ep = self._episode
        if ep is None or ep.done:
            raise RuntimeError("call reset() before step() (and after an episode ended)")
        act = check_action(action, "continuous", "DriveAttention/Carla-v0").astype(np.float64)
        control = action_to_control(act)
        try:
            ep.ego.apply_control(
                carla.VehicleControl(
                    throttle=control.throttle, steer=control.steer, brake=control.brake
                )
            )
            frame = self._world.tick(self.config.timeout_s)
            observed = self._read_frame(ep, frame)
        except (RuntimeError, OSError) as err:
            return self._lost_during_step(ep, err)
        return self._transition(ep, observed, act)

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array" or self._episode is None:
            return None
        return None if self._episode.last_rgb is None else self._episode.last_rgb.copy()

    def close(self) -> None:
        self._episode = None
        if self._world is None:
            return
        try:
            if self._same_world():
                self._actors.destroy_all()
                self._settings.restore(self._world, self._tm)
            else:
                log.warning("CARLA at %s is gone; nothing to clean up there", self.address)
                self._settings.forget()
        except Exception as err:  # close must not raise on a dying server
            log.warning("cleaning up CARLA at %s failed: %s", self.address, err)
        finally:
            self._drop_connection()
        super().close()

    # ------------------------------------------------------------------------------------------
    # Connection
    # ------------------------------------------------------------------------------------------

    def _attempt_connection(self) -> tuple[Any, Any]:
        c = self.config
        self.probe(c.host, c.port, c.timeout_s)
        try:
            client = self.client_factory(c.host, c.port)
            client.set_timeout(c.timeout_s)
            world = client.get_world()
        except RuntimeError as err:
            raise CarlaConnectionError(
                f"the CARLA server at {self.address} did not answer within {c.timeout_s:g} s: "
                f"{err}. " + server_help(c.host, c.port)
            ) from None
        return client, world

    def _connect(self) -> None:
        c = self.config
        if not self._connected_once:
            # nothing listening at all on the first connection: say so now; the retries are for
            # a server that is coming back during training
            self.probe(c.host, c.port, c.timeout_s)
        client, world = with_retries(
            self._attempt_connection,
            c.connect_retries,
            c.retry_delay_s,
            f"connecting to CARLA at {self.address}",
        )
        server, mine = client.get_server_version(), client.get_client_version()
        if server.split("-")[0] != mine.split("-")[0]:
            log.warning("CARLA server %s, client %s: versions differ", server, mine)
        self._client, self._world = client, world
        self._connected_once = True
        purged = self._actors.purge_orphans(world)
        if purged:
            log.info("destroyed %d actor(s) left over from a lost connection", purged)
        self._settings.save(world)
        if c.town and world.get_map().name.split("/")[-1] != c.town.split("/")[-1]:
            if world.get_settings().synchronous_mode:  # loading a map waits for ticks otherwise
                world.apply_settings(self._asynchronous(world.get_settings()))
            client.set_timeout(c.load_timeout_s)
            try:
                world = client.load_world(c.town)
            except RuntimeError as err:
                raise CarlaConnectionError(
                    f"loading town {c.town!r} on {self.address} failed: {err}; check the name "
                    f"against client.get_available_maps() or raise load_timeout_s"
                ) from None
            finally:
                client.set_timeout(c.timeout_s)
            self._world = world
        self._map = world.get_map()
        self._tm = client.get_trafficmanager(c.tm_port)
        self._settings.apply_synchronous(world, self._tm, c.fixed_delta_s)
        self._blueprints = world.get_blueprint_library()
        self._stop_lines = {}

    @staticmethod
    def _asynchronous(settings: Any) -> Any:
        settings.synchronous_mode = False
        settings.fixed_delta_seconds = None
        return settings

    def _same_world(self) -> bool:
        """Whether the server still answers with the world this env set up (not restarted)."""
        try:
            return self._client.get_world().id == self._world.id
        except Exception:
            return False

    def _drop_connection(self) -> None:
        """Forget the server (actors become orphans to destroy if it comes back)."""
        self._actors.forget()
        self._client = self._world = self._map = self._tm = self._blueprints = None
        self._episode = None

    def _lost_during_step(
        self, ep: _Episode, err: BaseException
    ) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        c = self.config
        self._drop_connection()
        message = (
            f"the CARLA server at {self.address} stopped answering at step {ep.steps} of the "
            f"episode: {err}. The next reset() reconnects (up to {c.connect_retries} attempts, "
            f"{c.retry_delay_s:g} s apart); restart the server if it crashed. "
            + server_help(c.host, c.port)
        )
        if c.on_server_loss == "raise" or ep.last_obs is None:
            raise CarlaServerLost(message) from err
        log.error("%s", message)
        info: dict[str, Any] = {
            "speed": 0.0,
            "reward_terms": dict.fromkeys(REWARD_TERMS, 0.0),
            "server_lost": True,
            "error": str(err),
            "termination": "server_lost",
            **ep.stats.summary(success=False),
        }
        return {k: v.copy() for k, v in ep.last_obs.items()}, 0.0, False, True, info

    # ------------------------------------------------------------------------------------------
    # Episode set-up
    # ------------------------------------------------------------------------------------------

    def _start_episode(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        c, world, rng = self.config, self._world, self.np_random
        seed = int(rng.integers(2**31 - 1))
        self._tm.set_random_device_seed(seed)
        world.set_pedestrians_seed(seed)
        world.set_weather(self._weather(rng))
        ego, spawn, route = self._spawn_ego(rng)
        self._spawn_traffic(rng, spawn)
        controllers = self._spawn_pedestrians(rng)
        ep = self._attach_sensors(ego, route)
        ego.apply_control(carla.VehicleControl(throttle=0.0, brake=1.0))
        frame = world.tick(c.timeout_s)
        for controller in controllers:  # walker controllers start after their first tick
            controller.start()
            destination = world.get_random_location_from_navigation()
            if destination is not None:
                controller.go_to_location(destination)
            controller.set_max_speed(float(1.0 + 0.5 * rng.random()))  # [m/s]
        for _ in range(c.warmup_steps - 1):
            frame = world.tick(c.timeout_s)
        ep.start_frame = frame  # events up to here, even if they arrive later, are not the agent's
        observed = self._read_frame(ep, frame)
        self._episode = ep
        ep.stats.start(observed.position)
        obs = {
            "camera": ep.frames.reset(observed.rgb),
            "sensors": assemble_sensors(observed.readings, self._scales),
        }
        ep.last_obs, ep.last_rgb = obs, observed.rgb
        info: dict[str, Any] = {
            "speed": observed.speed,
            "route_length": ep.route.length,
            "town": self._map.name.split("/")[-1],
        }
        if observed.labels is not None:
            info["road_labels"] = observed.labels
        return obs, info

    def _weather(self, rng: np.random.Generator) -> Any:
        name = self.config.weather
        if name == "random":
            name = WEATHER_PRESETS[int(rng.integers(len(WEATHER_PRESETS)))]
        preset = getattr(carla.WeatherParameters, name, None)
        if preset is None:
            raise ValueError(f"weather: this carla client has no preset {name!r}")
        return preset

    def _blueprint(self, pattern: str) -> Any:
        try:
            return self._blueprints.find(pattern)
        except (IndexError, RuntimeError):
            vehicles = ", ".join(sorted(bp.id for bp in self._blueprints.filter("vehicle.*")))
            raise ValueError(
                f"no blueprint {pattern!r} on this server (its vehicles, for ego_blueprint: "
                f"{vehicles})"
            ) from None

    def _spawn_ego(self, rng: np.random.Generator) -> tuple[Any, Any, RouteTracker]:
        c = self.config
        blueprint = self._blueprint(c.ego_blueprint)
        if blueprint.has_attribute("role_name"):
            blueprint.set_attribute("role_name", "hero")
        points = list(self._map.get_spawn_points())
        if not points:
            raise ValueError(f"town {self._map.name} has no spawn points")
        for i in rng.permutation(len(points))[:SPAWN_ATTEMPTS]:
            spawn = points[int(i)]
            start = self._map.get_waypoint(spawn.location)
            if start is None:
                continue
            waypoints = random_route(start, c.route_length_m, ROUTE_STEP_M, rng)
            xy = np.array([waypoint_xy(w) for w in waypoints])  # (N, 2) [m]
            if len(xy) < 2 or np.linalg.norm(np.diff(xy, axis=0), axis=1).sum() < (
                0.5 * c.route_length_m
            ):
                continue  # dead end close by
            ego = self._world.try_spawn_actor(blueprint, spawn)
            if ego is None:
                continue  # spawn point occupied
            self._actors.add(ego)
            return ego, spawn, RouteTracker(xy)
        raise RuntimeError(
            f"could not spawn the ego ({c.ego_blueprint}) with a {c.route_length_m:g} m route at "
            f"any of {SPAWN_ATTEMPTS} spawn points of {self._map.name}; lower route_length_m or "
            "n_vehicles, or restart the server if other clients filled the map"
        )

    def _spawn_traffic(self, rng: np.random.Generator, ego_spawn: Any) -> None:
        c = self.config
        blueprints = [
            bp
            for bp in self._blueprints.filter("vehicle.*")
            if not bp.has_attribute("number_of_wheels")
            or int(bp.get_attribute("number_of_wheels").as_int()) == 4
        ]
        if c.n_vehicles == 0 or not blueprints:
            return
        points = [
            p
            for p in self._map.get_spawn_points()
            if p.location.distance(ego_spawn.location) > 10.0  # [m] keep the ego's start free
        ]
        spawned = 0
        for i in rng.permutation(len(points)):
            if spawned >= c.n_vehicles:
                break
            bp = blueprints[int(rng.integers(len(blueprints)))]
            if bp.has_attribute("color"):
                colors = bp.get_attribute("color").recommended_values
                if colors:
                    bp.set_attribute("color", colors[int(rng.integers(len(colors)))])
            if bp.has_attribute("role_name"):
                bp.set_attribute("role_name", "autopilot")
            vehicle = self._world.try_spawn_actor(bp, points[int(i)])
            if vehicle is None:
                continue
            self._actors.add(vehicle)
            vehicle.set_autopilot(True, c.tm_port)
            spawned += 1
        if spawned < c.n_vehicles:
            log.info("spawned %d of %d background vehicles", spawned, c.n_vehicles)

    def _spawn_pedestrians(self, rng: np.random.Generator) -> list[Any]:
        c = self.config
        blueprints = list(self._blueprints.filter("walker.pedestrian.*"))
        if c.n_pedestrians == 0 or not blueprints:
            return []
        controller_bp = self._blueprint("controller.ai.walker")
        controllers = []
        for _ in range(3 * c.n_pedestrians):
            if len(controllers) >= c.n_pedestrians:
                break
            location = self._world.get_random_location_from_navigation()
            if location is None:
                continue
            bp = blueprints[int(rng.integers(len(blueprints)))]
            if bp.has_attribute("is_invincible"):
                bp.set_attribute("is_invincible", "false")
            walker = self._world.try_spawn_actor(bp, carla.Transform(location))
            if walker is None:
                continue
            self._actors.add(walker)
            controller = self._world.spawn_actor(controller_bp, carla.Transform(), walker)
            controllers.append(self._actors.add(controller))
        if len(controllers) < c.n_pedestrians:
            log.info("spawned %d of %d pedestrians", len(controllers), c.n_pedestrians)
        return controllers

    def _attach_sensors(self, ego: Any, route: RouteTracker) -> _Episode:
        c = self.config
        h, w = c.camera_size
        pose = carla.Transform(
            carla.Location(*c.camera_position), carla.Rotation(pitch=c.camera_pitch_deg)
        )

        def spawn(type_id: str, transform: Any, callback: Any, **attributes: Any) -> None:
            bp = self._blueprint(type_id)
            for key, value in attributes.items():
                bp.set_attribute(key, str(value))
            sensor = self._actors.add(self._world.spawn_actor(bp, transform, ego))
            sensor.listen(callback)

        camera = {"image_size_x": w, "image_size_y": h, "fov": c.camera_fov}
        rgb, imu = SensorQueue("rgb camera"), SensorQueue("imu")
        spawn("sensor.camera.rgb", pose, rgb, **camera)
        segmentation, ego_region = None, None
        if c.road_labels:
            segmentation = SensorQueue("segmentation camera")
            kind = "instance" if c.segmentation == "instance" else "semantic"
            spawn(f"sensor.camera.{kind}_segmentation", pose, segmentation, **camera)
            box = ego.bounding_box
            ego_region = ego_region_mask(
                (box.location.x, box.location.y, box.location.z),
                (box.extent.x, box.extent.y, box.extent.z),
                c.camera_position,
                (c.camera_pitch_deg, 0.0, 0.0),
                (h, w),
                c.camera_fov,
            )
            if ego_region is None:
                log.info("the camera is inside the ego's box: the ego stays unlabelled")
        collisions, invasions = EventLog(), EventLog()
        spawn("sensor.other.collision", carla.Transform(), collisions)
        spawn("sensor.other.lane_invasion", carla.Transform(), invasions)
        spawn("sensor.other.imu", carla.Transform(), imu)
        return _Episode(
            ego=ego,
            route=route,
            rgb=rgb,
            imu=imu,
            segmentation=segmentation,
            collisions=collisions,
            invasions=invasions,
            ego_region=ego_region,
            frames=FrameStack(c.frame_stack),
            stats=EpisodeStats(dt=c.fixed_delta_s),
            stuck=StuckDetector(c.stuck_steps, c.stuck_speed),
            previous_action=np.zeros(2),
        )

    # ------------------------------------------------------------------------------------------
    # Reading a frame
    # ------------------------------------------------------------------------------------------

    def _read_frame(self, ep: _Episode, frame: int) -> _Frame:
        c = self.config
        h, w = c.camera_size
        image = ep.rgb.get(frame, c.timeout_s)
        rgb = bgra_to_rgb(image.raw_data, h, w)
        labels = None
        if ep.segmentation is not None:
            seg = ep.segmentation.get(frame, c.timeout_s)
            bgra = np.frombuffer(seg.raw_data, dtype=np.uint8).reshape(h, w, 4)
            labels = labels_from_segmentation(bgra, ep.ego_region, c.segmentation == "instance")
        imu = ep.imu.get(frame, c.timeout_s)
        mine = [e for e in ep.collisions.drain() if e.frame > ep.start_frame]
        collided_with = [str(e.other_actor.type_id) for e in mine]
        lane_invasion = any(e.frame > ep.start_frame for e in ep.invasions.drain())

        transform = ep.ego.get_transform()
        location, yaw = transform.location, math.radians(transform.rotation.yaw)
        xy = np.array([location.x, location.y])  # [m]
        velocity = ep.ego.get_velocity()  # [m/s] world frame
        v_xy = np.array([velocity.x, velocity.y])
        forward = np.array([math.cos(yaw), math.sin(yaw)])
        speed = float(v_xy @ forward)

        lane = self._map.get_waypoint(location)  # nearest driving lane's centre
        if lane is not None:
            lane_tf, lane_width = lane.transform, float(lane.lane_width)
            offset, heading_error = lane_errors(
                xy,
                yaw,
                (lane_tf.location.x, lane_tf.location.y),
                math.radians(lane_tf.rotation.yaw),
            )
        else:  # no driving lane anywhere near (should not happen on a town map)
            lane_width, offset, heading_error = 3.5, 0.0, 0.0
        on_road = self._map.get_waypoint(
            location, project_to_road=False, lane_type=carla.LaneType.Driving
        )
        route_distance = ep.route.update(xy)
        route_points = world_to_ego(
            ep.route.lookahead(c.n_route_points, c.route_point_spacing_m), xy, yaw
        )
        light_state, light_distance = self._light_ahead(ep.ego, lane, xy)  # lane may be None
        ray_distance, ray_closing = self._rays(ep.ego, xy, yaw, v_xy)
        readings = Readings(
            speed=speed,
            accel=float(imu.accelerometer.x),
            yaw_rate=float(imu.gyroscope.z),
            lane_offset=offset,
            lane_width=lane_width,
            heading_error=heading_error,
            route_points=route_points,
            light_state=light_state,
            light_distance=light_distance,
            ray_distance=ray_distance,
            ray_closing_speed=ray_closing,
        )
        return _Frame(
            rgb=rgb,
            labels=labels,
            position=xy,
            readings=readings,
            speed=speed,
            speed_along_route=float(v_xy @ ep.route.direction()),
            off_road=on_road is None,
            route_distance=route_distance,
            collided_with=collided_with,
            lane_invasion=lane_invasion,
            waiting_at_red=light_state == "red" and light_distance < RED_LIGHT_WAIT_M,
        )

    def _light_ahead(self, ego: Any, lane: Any, xy: np.ndarray) -> tuple[str | None, float]:
        """State of the traffic light that governs the ego's lane ahead and its distance [m]."""
        c = self.config
        candidates = [ego.get_traffic_light()] if ego.is_at_traffic_light() else []
        if lane is not None and not any(candidates):
            candidates = list(self._world.get_traffic_lights_from_waypoint(lane, c.light_range))
        best, best_distance = None, math.inf
        for light in candidates:
            if light is None:
                continue
            stops = self._stop_lines.get(light.id)
            if stops is None:
                waypoints = light.get_stop_waypoints()
                stops = np.array([waypoint_xy(wp) for wp in waypoints]).reshape(-1, 2)
                self._stop_lines[light.id] = stops
            if len(stops) == 0:
                loc = light.get_transform().location
                stops = np.array([[loc.x, loc.y]])
            distance = float(np.min(np.linalg.norm(stops - xy, axis=1)))  # [m]
            if distance < best_distance:
                best, best_distance = light, distance
        if best is None:
            return None, c.light_range
        return _LIGHT_NAMES.get(best.state), min(best_distance, c.light_range)

    def _rays(
        self, ego: Any, xy: np.ndarray, yaw: float, v_xy: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Range rays against the other vehicles' and pedestrians' boxes."""
        c = self.config
        if c.n_rays == 0:
            return np.zeros(0), np.zeros(0)
        centers, extents, yaws, velocities = [], [], [], []
        actors = self._world.get_actors()
        for actor in [*actors.filter("vehicle.*"), *actors.filter("walker.pedestrian.*")]:
            if actor.id == ego.id:
                continue
            tf = actor.get_transform()
            box = actor.bounding_box
            a_yaw = math.radians(tf.rotation.yaw)
            cos, sin = math.cos(a_yaw), math.sin(a_yaw)
            cx = tf.location.x + cos * box.location.x - sin * box.location.y  # [m] box centre
            cy = tf.location.y + sin * box.location.x + cos * box.location.y
            if math.hypot(cx - xy[0], cy - xy[1]) > c.ray_range + 10.0:
                continue
            vel = actor.get_velocity()
            centers.append((cx, cy))
            extents.append((box.extent.x, box.extent.y))
            yaws.append(a_yaw)
            velocities.append((vel.x, vel.y))
        return cast_rays(
            xy,
            yaw,
            v_xy,
            np.array(centers).reshape(-1, 2),
            np.array(extents).reshape(-1, 2),
            np.array(yaws).reshape(-1),
            np.array(velocities).reshape(-1, 2),
            c.n_rays,
            c.ray_range,
        )

    # ------------------------------------------------------------------------------------------
    # Reward and episode end
    # ------------------------------------------------------------------------------------------

    def _transition(
        self, ep: _Episode, f: _Frame, action: np.ndarray
    ) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        c = self.config
        ep.steps += 1
        collided = bool(f.collided_with)
        reached = ep.route.done(c.goal_tolerance_m)
        terms = reward_terms(
            forward_speed=f.speed_along_route,
            speed_range=c.speed_range,
            collision=collided,
            off_road=f.off_road,
            lateral=f.readings.lane_offset,
            lane_width=f.readings.lane_width,
            change=action_change(action, ep.previous_action, "continuous"),
            goal=reached,
        )
        weighted = weigh(terms, c.weights)
        ep.previous_action = action
        ep.stats.record(f.position, collided, f.off_road)
        stuck = ep.stuck.update(f.speed, f.waiting_at_red)

        reason = None
        if reached:
            reason = "success"
        elif collided and c.terminate_on_collision:
            reason = "collision"
        elif f.off_road and c.offroad_terminal:
            reason = "off_road"
        elif f.route_distance > c.max_route_deviation_m:
            reason = "off_route"
        terminated = reason is not None
        if not terminated and ep.steps >= c.max_steps:
            reason = "timeout"
        elif not terminated and stuck:
            reason = "stuck"
        truncated = not terminated and reason is not None

        obs = {
            "camera": ep.frames.push(f.rgb),
            "sensors": assemble_sensors(f.readings, self._scales),
        }
        ep.last_obs, ep.last_rgb = obs, f.rgb
        info: dict[str, Any] = {
            "speed": f.speed,
            "reward_terms": weighted,
            "route_progress": ep.route.progress / max(ep.route.length, 1e-6),
            "route_distance": f.route_distance,
            "lane_invasion": f.lane_invasion,
            "collided_with": f.collided_with,
        }
        if f.labels is not None:
            info["road_labels"] = f.labels
        if terminated or truncated:
            ep.done = True
            info.update(ep.stats.summary(success=reached))
            info["termination"] = reason
        return obs, float(sum(weighted.values())), terminated, truncated, info
