"""Configuration of the CARLA backend (``DriveAttention/Carla-v0``); importable without carla.

Every option is a keyword argument of ``gymnasium.make("DriveAttention/Carla-v0", ...)``, checked
by :func:`envs.configuration.build` so that a typo, a wrong type or a value out of range raises
:class:`envs.configuration.ConfigError` naming the option.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Literal

from envs.configuration import ConfigError, check, closest
from envs.contract import REWARD_TERMS

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

# Weights of the reward terms of envs.contract.REWARD_TERMS (each term is in [-1, 1] per step).
DEFAULT_REWARD_WEIGHTS: dict[str, float] = {
    "alive": 0.0,  # a route to complete: pay for lasting would pay for not arriving
    "progress": 0.5,
    "collision": 20.0,
    "off_road": 1.0,
    "lane_keeping": 0.2,
    "comfort": 0.05,
    "goal": 20.0,
    "red_light": 0.0,  # the CARLA backend does not detect red-light runs yet
}


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
class CarlaEnvConfig:
    """Options of the CARLA backend; units in the comments."""

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
    # --- camera ---
    camera_size: tuple[int, int] = (64, 64)  # [px] (H, W)
    camera_fov: float = 90.0  # [deg] horizontal field of view
    camera_position: tuple[float, float, float] = (-5.5, 0.0, 2.8)  # [m] in the ego frame
    camera_pitch_deg: float = -15.0  # [deg]
    frame_stack: int = 1  # frames stacked along channels, oldest first
    road_labels: bool = False  # info["road_labels"] from a segmentation camera (costs time)
    segmentation: Literal["instance", "semantic"] = "instance"  # camera used for road labels
    # --- sensor vector ---
    n_rays: int = 16  # range rays around the car (semantic lidar), ray 0 straight ahead
    ray_range: float = 50.0  # [m]
    n_route_points: int = 8  # next route points in the ego frame
    route_point_spacing_m: float = 5.0  # [m] between those route points
    light_range: float = 50.0  # [m] look-ahead for the traffic light ahead
    speed_range: tuple[float, float] = (0.0, 12.0)  # [m/s] progress reward 0..1 over this range
    # --- task ---
    action: Literal["continuous"] = "continuous"  # [steer, accel] (as the embedded backend's)
    route_length_m: float = 300.0  # [m] route from the spawn point to a random destination
    goal_tolerance_m: float = 5.0  # [m] route completed when this close to its end
    max_route_deviation_m: float = 8.0  # [m] farther from the route ends the episode
    duration_s: float = 120.0  # [s] simulated time limit of an episode (truncation)
    stuck_steps: int = 400  # steps below stuck_speed (not at a red light) end the episode
    stuck_speed: float = 0.3  # [m/s]
    terminate_on_collision: bool = True
    terminate_off_road: bool = True
    warmup_steps: int = 10  # ticks after spawning, before the first observation
    reward_weights: dict[str, float] = field(default_factory=dict)  # partial, over defaults

    def __post_init__(self) -> None:
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
        h, w = self.camera_size
        check(h >= 8 and w >= 8, f"camera_size: {self.camera_size} is too small; use >= (8, 8)")
        check(h <= 2048 and w <= 2048, f"camera_size: {self.camera_size} is too large")
        check(0 < self.camera_fov < 180, "camera_fov: must be in (0, 180) degrees")
        check(self.frame_stack >= 1, "frame_stack: must be >= 1")
        check(0 <= self.n_rays <= 100, "n_rays: must be in [0, 100] (two-digit ray names)")
        check(self.ray_range > 0, "ray_range: must be > 0 metres")
        check(1 <= self.n_route_points <= 100, "n_route_points: must be in [1, 100]")
        check(self.route_point_spacing_m > 0, "route_point_spacing_m: must be > 0 metres")
        check(self.light_range > 0, "light_range: must be > 0 metres")
        lo, hi = self.speed_range
        check(0 <= lo < hi, f"speed_range: {self.speed_range} must satisfy 0 <= low < high [m/s]")
        check(self.route_length_m > 0, "route_length_m: must be > 0 metres")
        check(self.goal_tolerance_m > 0, "goal_tolerance_m: must be > 0 metres")
        check(self.max_route_deviation_m > 0, "max_route_deviation_m: must be > 0 metres")
        check(self.duration_s >= self.fixed_delta_s, "duration_s: must be >= fixed_delta_s")
        check(self.stuck_steps >= 1, "stuck_steps: must be >= 1")
        check(self.stuck_speed >= 0, "stuck_speed: must be >= 0 m/s")
        check(self.warmup_steps >= 1, "warmup_steps: must be >= 1")
        for key, value in self.reward_weights.items():
            if key not in REWARD_TERMS:
                raise ConfigError(
                    f"reward_weights.{key}: unknown reward term{closest(key, REWARD_TERMS)}; "
                    f"terms: {', '.join(REWARD_TERMS)}"
                )
            check(math.isfinite(value), f"reward_weights.{key}: must be a finite number")
        self.reward_weights = {**DEFAULT_REWARD_WEIGHTS, **self.reward_weights}

    @property
    def max_steps(self) -> int:
        """Steps per episode before truncation (duration_s / fixed_delta_s)."""
        return max(1, round(self.duration_s / self.fixed_delta_s))
