"""Configuration of the CARLA backend (``DriveAttention/Carla-v0``); importable without carla.

Every option is a keyword argument of ``gymnasium.make("DriveAttention/Carla-v0", ...)``, checked
by :func:`envs.configuration.build` so that a typo, a wrong type or a value out of range raises
:class:`envs.configuration.ConfigError` naming the option. The options every backend shares
(camera size, frame stack, rays, duration, ...) come from
:class:`envs.observation.ObservationOptions`, with the same names, ranges and defaults except
where :class:`CarlaEnvConfig` declares its own default.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from drive_attention.envs.configuration import ConfigError, check, closest
from drive_attention.envs.observation import CameraGeometry, ObservationOptions
from drive_attention.envs.scenarios import reward_weights

REWARD_SCENARIO = "carla"  # this backend's row of envs.scenarios.REWARD_WEIGHTS
MAX_RAYS = 100  # its sensor names number the rays with two digits

DEFAULT_HOST = "localhost"
DEFAULT_PORT = 2000

# Weather presets of carla.WeatherParameters (0.9.15 and 0.9.16); "random" draws one per episode.
WEATHER_PRESETS: tuple[str, ...] = (
    "ClearNoon",
    "CloudyNoon",
    "WetNoon",
    "WetCloudyNoon",
    "SoftRainNoon",
    "MidRainyNoon",
    "HardRainNoon",
    "ClearSunset",
    "CloudySunset",
    "WetSunset",
    "WetCloudySunset",
    "SoftRainSunset",
    "MidRainSunset",
    "HardRainSunset",
    "ClearNight",
    "CloudyNight",
    "WetNight",
    "WetCloudyNight",
    "SoftRainNight",
    "MidRainyNight",
    "HardRainNight",
)

ROUTE_DURATION = 120.0  # [s] an episode's default time limit (the option ``duration``)


def default_host() -> str:
    """CARLA_HOST, else localhost."""
    return os.environ.get("CARLA_HOST", "") or DEFAULT_HOST


def default_port() -> int:
    """CARLA_PORT, else 2000."""
    text = os.environ.get("CARLA_PORT", "")
    if not text:
        return DEFAULT_PORT
    try:
        return int(text)
    except ValueError:
        raise ConfigError(
            f"port: the environment variable CARLA_PORT={text!r} is not an integer; "
            "set it to the server's RPC port (e.g. export CARLA_PORT=2000) or pass port=..."
        ) from None


@dataclass
class CarlaEnvConfig(ObservationOptions):
    """Options of the CARLA backend: the shared :class:`envs.observation.ObservationOptions`
    and its own; units in the comments."""

    # --- shared options whose default differs here (the declared overrides) ---
    ray_range: float = 50.0  # [m] the semantic lidar's reach
    action: Literal["discrete", "continuous"] = "continuous"  # [steer, accel]; the only kind
    # --- server ---
    host: str = field(default_factory=default_host)  # CARLA_HOST or localhost
    port: int = field(default_factory=default_port)  # RPC port; CARLA_PORT or 2000
    tm_port: int = 8000  # traffic-manager port (one per server and client)
    timeout_s: float = 10.0  # [s] per RPC call, tick, sensor frame and connection attempt
    load_timeout_s: float = 120.0  # [s] allowed for loading a town
    connect_retries: int = 3  # connection attempts per reset before giving up
    retry_delay_s: float = 5.0  # [s] pause between connection attempts
    on_server_loss: Literal["raise", "truncate"] = "raise"  # what step() does when the server dies
    # --- world ---
    town: str | None = "Town10HD_Opt"  # map to load (None: keep the loaded one)
    weather: str = "ClearNoon"  # a WEATHER_PRESETS name, or "random" (one per episode)
    fixed_delta_s: float = 0.05  # [s] simulated time per step (synchronous mode)
    n_vehicles: int = 20  # background vehicles driven by the traffic manager
    n_pedestrians: int = 10  # pedestrians driven by AI walker controllers
    ego_blueprint: str = "vehicle.tesla.model3"
    # --- camera (camera_size, frame_stack, road_labels: shared) ---
    camera_fov: float = 90.0  # [deg] horizontal field of view
    camera_position: tuple[float, float, float] = (-5.5, 0.0, 2.8)  # [m] in the ego frame
    camera_pitch_deg: float = -15.0  # [deg]
    segmentation: Literal["instance", "semantic"] = "instance"  # camera used for road labels
    # --- sensor vector (n_rays, ray_range: shared; ray 0 straight ahead) ---
    n_route_points: int = 8  # next route points in the ego frame
    route_point_spacing_m: float = 5.0  # [m] between those route points
    light_range: float = 50.0  # [m] look-ahead for the traffic light ahead
    speed_range: tuple[float, float] = (0.0, 12.0)  # [m/s] progress reward 0..1 over this range
    # --- task (duration, offroad_terminal, reward_weights: shared) ---
    route_length_m: float = 300.0  # [m] route from the spawn point to a random destination
    goal_tolerance_m: float = 5.0  # [m] route completed when this close to its end
    max_route_deviation_m: float = 8.0  # [m] farther from the route ends the episode
    stuck_steps: int = 400  # steps below stuck_speed (not at a red light) end the episode
    stuck_speed: float = 0.3  # [m/s]
    terminate_on_collision: bool = True
    warmup_steps: int = 10  # ticks after spawning, before the first observation

    BACKEND: ClassVar[str] = "the CARLA backend"

    def __post_init__(self) -> None:
        super().__post_init__()
        check(bool(self.host), "host: must not be empty (or unset CARLA_HOST)")
        check(1 <= self.port <= 65535, f"port: {self.port} is not a TCP port (1..65535)")
        check(1 <= self.tm_port <= 65535, f"tm_port: {self.tm_port} is not a TCP port")
        check(self.tm_port not in (self.port, self.port + 1), "tm_port: clashes with port/port+1")
        check(self.timeout_s > 0, "timeout_s: must be > 0 seconds")
        check(self.load_timeout_s >= self.timeout_s, "load_timeout_s: must be >= timeout_s")
        check(self.connect_retries >= 1, "connect_retries: must be >= 1")
        check(self.retry_delay_s >= 0, "retry_delay_s: must be >= 0 seconds")
        check(self.town is None or bool(self.town), "town: use a map name such as 'Town03'")
        if self.weather != "random" and self.weather not in WEATHER_PRESETS:
            raise ConfigError(
                f"weather: {self.weather!r} is not a preset"
                f"{closest(self.weather, WEATHER_PRESETS)}; use 'random' or one of "
                + ", ".join(WEATHER_PRESETS)
            )
        # CARLA's physics substepping covers at most max_substeps (10) x 0.01 s per tick.
        check(
            0 < self.fixed_delta_s <= 0.1,
            "fixed_delta_s: must be in (0, 0.1] seconds (CARLA's physics substepping limit)",
        )
        check(self.n_vehicles >= 0, "n_vehicles: must be >= 0")
        check(self.n_pedestrians >= 0, "n_pedestrians: must be >= 0")
        check(bool(self.ego_blueprint), "ego_blueprint: use e.g. 'vehicle.tesla.model3'")
        check(0 < self.camera_fov < 180, "camera_fov: must be in (0, 180) degrees")
        check(1 <= self.n_route_points <= 100, "n_route_points: must be in [1, 100]")
        check(self.route_point_spacing_m > 0, "route_point_spacing_m: must be > 0 metres")
        check(self.light_range > 0, "light_range: must be > 0 metres")
        lo, hi = self.speed_range
        check(0 <= lo < hi, f"speed_range: {self.speed_range} must satisfy 0 <= low < high [m/s]")
        check(self.route_length_m > 0, "route_length_m: must be > 0 metres")
        check(self.goal_tolerance_m > 0, "goal_tolerance_m: must be > 0 metres")
        check(self.max_route_deviation_m > 0, "max_route_deviation_m: must be > 0 metres")
        check(
            self.episode_duration >= self.fixed_delta_s,
            f"duration: {self.episode_duration} s is shorter than one step (fixed_delta_s "
            f"{self.fixed_delta_s} s); raise it",
        )
        check(self.stuck_steps >= 1, "stuck_steps: must be >= 1")
        check(self.stuck_speed >= 0, "stuck_speed: must be >= 0 m/s")
        check(self.warmup_steps >= 1, "warmup_steps: must be >= 1")

    def refuse(self) -> None:
        if self.action != "continuous":
            raise self.refusal(
                "action",
                self.action,
                "it drives the car with [steer, accel] only (no meta-actions)",
                "use action: continuous",
            )
        if self.n_rays > MAX_RAYS:
            raise self.refusal(
                "n_rays",
                self.n_rays,
                "its sensor names number the rays with two digits",
                f"use n_rays <= {MAX_RAYS}",
            )
        if self.n_objects:
            raise self.refusal(
                "n_objects",
                self.n_objects,
                "it has no radar object list (the rays see the vehicles around)",
                "use n_objects: 0",
            )

    @property
    def episode_duration(self) -> float:
        """[s] the episode's simulated time limit."""
        return ROUTE_DURATION if self.duration is None else self.duration

    @property
    def weights(self) -> dict[str, float]:
        """Reward weights: CARLA's defaults (``envs.scenarios.REWARD_WEIGHTS``) overridden by
        ``reward_weights``."""
        return reward_weights(REWARD_SCENARIO, self.reward_weights)

    @property
    def camera_geometry(self) -> CameraGeometry:
        """The chase camera's frame (a perspective view: no single scale or ego pixel)."""
        height, width = self.camera_size
        return CameraGeometry(height, width)

    @property
    def max_steps(self) -> int:
        """Steps per episode before truncation (duration / fixed_delta_s)."""
        return max(1, round(self.episode_duration / self.fixed_delta_s))
