"""The scenarios, one definition each: what the task is and how it is judged, for every backend.

A scenario names its highway-env simulator and settings (both embedded backends read their road
from it), its camera framing, its speed range and duration, its route sensors and how they are
computed, where it ends and what counts as success. A backend asks its scenario instead of
branching on its name; what a backend must supply is the small :class:`EgoView` (floats for one
environment, (B,) tensors for a batch: the scenario's arithmetic works on both).

Every backend resolves its default reward weights here (:data:`REWARD_WEIGHTS`, CARLA's row
too, by :func:`reward_weights`). The embedded backends (highway-env and batched) also share their
options (:class:`ScenarioConfig`, on the options every backend shares), the sensor layout
(:func:`sensor_names`) and its normalisation, and how the camera draws a road.

Adding a scenario: an instance of :class:`Scenario` (or a subclass with new behaviour) in
:data:`SCENARIOS`; ``import envs`` then registers its ids. Its batched version is a
:class:`envs.batched.scenarios.BatchedScenario` (its initial traffic) and ``batched=True`` here.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import numpy as np

from drive_attention.envs.configuration import check, closest
from drive_attention.envs.contract import DISCRETE_ACTIONS, REWARD_TERMS
from drive_attention.envs.observation import CameraGeometry, ObservationOptions

SPEED_SCALE = 40.0  # [m/s] ego speed normalisation
CLOSING_SCALE = 30.0  # [m/s] ray closing-speed normalisation
EDGE_SCALE = 12.0  # [m] road-edge distance normalisation (and objects' lateral offset)
OBJECT_QUANTITIES: tuple[str, ...] = ("present", "x", "y", "vx", "vy")
"""One row of the radar object list (``n_objects``), in the ego's frame (x ahead, y to its
right): 1 if a vehicle fills the row (else the row is all 0), its centre's offset (x over the
ray range, y over ``Scenario.object_lateral_scale``: :data:`EDGE_SCALE` on the straight roads,
the ray range where traffic crosses), its velocity relative to the ego over
:data:`CLOSING_SCALE`. Rows hold the nearest vehicles first (centre distance, within the ray
range)."""

# ------------------------------------------------------------------ the embedded backends' camera
# How both embedded backends draw a highway-env road (highway-env's look), so their frames agree
# pixel for pixel (tests/envs/batched/test_batched.py holds them to it).
STRIPE_SPACING = 4.33  # [m] dash period
STRIPE_LENGTH = 3.0  # [m] dash length
CURVE_STEP = 1.0  # [m] sampling step along curved lanes


def lane_samples(lane: Any) -> np.ndarray:
    """Longitudinal positions [m] that trace a highway-env lane on the camera: its ends if it is
    straight, else every :data:`CURVE_STEP` metres."""
    from highway_env.road.lane import StraightLane  # only the embedded backends draw lanes

    if type(lane) is StraightLane:  # not its subclasses (highway-env's SineLane is one)
        return np.array([0.0, lane.length])
    n = max(2, int(np.ceil(lane.length / CURVE_STEP)) + 1)
    return np.linspace(0.0, lane.length, n)


MARKING_WIDTH = 0.3  # [m] lane marking width (at least one pixel)
SUBPIXEL_BITS = 4  # vertices are rounded to 1/16 px (OpenCV's fixed-point shift)


def marking_px(scaling: float) -> int:
    """Marking width [px] at ``scaling`` [px/m]."""
    return max(1, round(MARKING_WIDTH * scaling))


# ------------------------------------------------------------------ default reward weights
REWARD_WEIGHTS: dict[str, dict[str, float]] = {
    name: dict(zip(REWARD_TERMS, row, strict=True))
    for name, row in {
        # alive, progress, collision, off_road, lane_keeping, comfort, goal, red_light
        "highway": (1.0, 1.0, 3.0, 1.0, 0.05, 0.02, 1.0, 0.0),
        "merge": (0.0, 0.5, 1.0, 1.0, 0.05, 0.02, 1.0, 0.0),
        "roundabout": (0.0, 0.5, 1.0, 1.0, 0.05, 0.02, 1.0, 0.0),
        "intersection": (0.0, 0.5, 1.0, 1.0, 0.05, 0.02, 1.0, 0.0),
        "signalized": (0.0, 0.5, 1.0, 1.0, 0.05, 0.02, 1.0, 1.0),
        "carla": (0.0, 0.5, 20.0, 1.0, 0.2, 0.05, 20.0, 0.0),
    }.items()
}
"""Every scenario's default reward weights, one row per scenario (``carla``: CARLA's drive to a
random destination, :mod:`envs.carla`), in the order of :data:`envs.contract.REWARD_TERMS`;
every backend resolves them with :func:`reward_weights`.

- Where surviving is the task (highway), every step without a crash pays ``alive`` (1) and
  speed adds at most ``progress`` (1, at the top of the scenario's speed range): a crash costs
  ``collision`` (3) and forfeits the rest of the episode's pay, so the return ranks careful
  drives above most fast crashes and, among careful drives, the faster one higher.
- Where a scenario has a goal (merge, roundabout, intersection, signalized, CARLA), lasting pays
  nothing (it would pay for dawdling instead of arriving), and speed and crashes weigh less
  (arriving ends the episode, and with it the pay for speed; the goal's +1 must stay worth more
  than a few steps of speed).
- ``red_light`` only where the simulator has lights and detects running them (the signalised
  scenario; the CARLA backend does not detect red-light runs yet)."""


def reward_weights(scenario: str, given: Mapping[str, float] | None = None) -> dict[str, float]:
    """Every reward term's weight (in :data:`envs.contract.REWARD_TERMS` order): the
    scenario's row of :data:`REWARD_WEIGHTS`, with ``given`` (an options' ``reward_weights``,
    checked by :class:`envs.observation.ObservationOptions`) on top."""
    weights = {**REWARD_WEIGHTS[scenario], **(given or {})}
    return {term: float(weights[term]) for term in REWARD_TERMS}


class EgoView(Protocol):
    """What a scenario reads from a backend: floats for one env, (B,) tensors for a batch."""

    x: Any  # [m] ego abscissa in the road frame
    lane_index: Any  # highway-env lane (from, to, id) of the ego (route scenarios)
    s: Any  # [m] ego position along that lane (route scenarios)
    destination: Any  # the episode's exit node (route scenarios)
    on_exit_road: Any  # whether the ego is on the exit road of its destination (route scenarios)
    turn: Any  # one-hot (left, straight, right) of the episode's route (route scenarios)

    def vehicles_near(self, roads: tuple[str, ...], radius: float) -> Any:
        """1.0 where a vehicle on a road starting at one of ``roads`` (highway-env node names)
        is within ``radius`` [m] of the ego along x, else 0.0."""

    def route_ahead(self, ahead: float) -> tuple[Any, Any]:
        """The route's centre point ``ahead`` [m] further along, in the ego frame [m]."""


@dataclass(frozen=True)
class Scenario:
    """A scenario on a highway-env road; subclasses add a place to reach and route sensors."""

    name: str
    sim_class: str  # highway-env simulator, "module:Class"
    sim_config: dict[str, Any]  # its settings that make the scenario (simulation_frequency too)
    view_m: float = 64.0  # [m] width of road seen across the frame
    centering: tuple[float, float] = (0.3, 0.5)  # ego position in the frame, fractions of (W, H)
    speed_range: tuple[float, float] = (20.0, 30.0)  # [m/s] mapped to progress 0..1
    duration: float = 30.0  # [s] episode length
    destinations: tuple[str, ...] = ()  # exits, one drawn per episode (route scenarios)
    respawns_traffic: bool = False  # the simulator spawns traffic every step (intersection)
    batched: bool = False  # the batched simulator has it (envs.batched.scenarios)
    highway: bool = True  # the highway-env backend has it (False: batched only)

    route_sensors: ClassVar[tuple[str, ...]] = ()  # names after "route."
    has_goal: ClassVar[bool] = False  # a place to reach (else: surviving is the task)

    @property
    def title(self) -> str:
        """The name as in the Gymnasium ids (``Highway``, ``Merge`` ...)."""
        return self.name.capitalize()

    @property
    def sim_frequency(self) -> int:
        """[Hz] simulation steps per second, unless the options override it."""
        return int(self.sim_config["simulation_frequency"])

    def simulator_class(self) -> type:
        module, name = self.sim_class.split(":")
        return getattr(importlib.import_module(module), name)

    def success(self, arrived: Any, timeout: Any, collision: Any) -> Any:
        """Whether the episode succeeded at its last step (numpy bools or torch bool tensors):
        a scenario with a goal succeeds on arrival, the others by lasting until the time limit;
        never with a collision."""
        done = arrived if self.has_goal else timeout
        return done & ~collision

    def arrived(self, ego: EgoView) -> Any:
        """Whether the ego has reached the goal (only asked when :attr:`has_goal`)."""
        raise NotImplementedError(f"{self.name} has no goal")

    def route_values(self, ego: EgoView) -> list[Any]:
        """Values of the :attr:`route_sensors`, in [-1, 1] before clipping."""
        return []

    def object_lateral_scale(self, ray_range: float) -> float:
        """[m] what the object list's lateral offset ``y`` is divided by: :data:`EDGE_SCALE` on
        the straight roads, where every lane lies within it."""
        return EDGE_SCALE


@dataclass(frozen=True)
class Highway(Scenario):
    """Drive along a multi-lane highway in traffic until the time limit."""


@dataclass(frozen=True)
class Merge(Scenario):
    """Pass the merge zone, where a vehicle joins from the ramp, without a crash."""

    end_x: float = 370.0  # [m] where the merge zone ends (highway-env's merge road)
    ramp_roads: tuple[str, ...] = ("j", "k")  # highway-env's nodes of the ramp
    ramp_radius: float = 40.0  # [m] a ramp vehicle this close along x is "alongside"
    distance_scale: float = 400.0  # [m] merge-distance normalisation

    route_sensors: ClassVar[tuple[str, ...]] = ("merge_distance", "ramp_vehicle")
    has_goal: ClassVar[bool] = True

    def arrived(self, ego: EgoView) -> Any:
        return ego.x > self.end_x

    def route_values(self, ego: EgoView) -> list[Any]:
        return [
            (self.end_x - ego.x) / self.distance_scale,
            ego.vehicles_near(self.ramp_roads, self.ramp_radius),
        ]


@dataclass(frozen=True)
class RouteScenario(Scenario):
    """Leave through one of several exits, picked at random each episode; the route sensors say
    which way to turn and where the route goes next."""

    exit_distance: float = 20.0  # [m] along the exit road that counts as arrived
    exit_prefix: str = ""  # the exit road's start node begins with this
    ahead: float = 20.0  # [m] route look-ahead point

    route_sensors: ClassVar[tuple[str, ...]] = (
        "turn_left",
        "straight",
        "turn_right",
        "ahead_x",
        "ahead_y",
    )
    has_goal: ClassVar[bool] = True

    def is_exit(self, lane_index: tuple[str, str, int], destination: str) -> bool:
        """Whether the lane ``(from, to, id)`` is on the exit road of ``destination``: the road
        from a node named ``exit_prefix...`` to it, or, without a prefix, the road from it."""
        if self.exit_prefix:
            return lane_index[0].startswith(self.exit_prefix) and lane_index[1] == destination
        return lane_index[0] == destination

    def arrived_at(self, lane_index: tuple[str, str, int], s: float, destination: str) -> bool:
        """On the exit road of ``destination``, ``exit_distance`` [m] out (``s`` along it): what
        :meth:`arrived` asks of a backend's view."""
        return self.is_exit(lane_index, destination) and s >= self.exit_distance

    def arrived(self, ego: EgoView) -> Any:
        return ego.on_exit_road & (ego.s >= self.exit_distance)

    def route_values(self, ego: EgoView) -> list[Any]:
        ahead_x, ahead_y = ego.route_ahead(self.ahead)
        return [*ego.turn, ahead_x / self.ahead, ahead_y / self.ahead]

    def object_lateral_scale(self, ray_range: float) -> float:
        """The ray range, as for ``x``: crossing traffic comes from the side, and over
        :data:`EDGE_SCALE` every vehicle further than 12 m to the side would read the same."""
        return ray_range


def turn_of(start_heading: float, end_heading: float) -> tuple[float, float, float]:
    """One-hot (left, straight, right) of a route's heading change [rad] (screen coordinates: y
    points down, so a positive change turns right)."""
    change = (end_heading - start_heading + np.pi) % (2 * np.pi) - np.pi
    if change > np.pi / 4:
        return (0.0, 0.0, 1.0)
    if change < -np.pi / 4:
        return (1.0, 0.0, 0.0)
    return (0.0, 1.0, 0.0)


STOP_SCALE = 50.0  # [m] the ``route.stop_line`` sensor's normalisation


@dataclass(frozen=True)
class SignalScenario(RouteScenario):
    """The intersection with traffic lights and pedestrian crossings (batched backend only:
    :mod:`envs.batched.signals`). Leave through the drawn exit without a collision and without
    crossing a stop line on red. ``route.stop_line`` is the distance to the ego's stop line
    (what a map gives); the light's state is not a sensor: the camera shows it."""

    route_sensors: ClassVar[tuple[str, ...]] = (*RouteScenario.route_sensors, "stop_line")

    def route_values(self, ego: EgoView) -> list[Any]:
        return [*super().route_values(ego), ego.stop_line]


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Highway(
            "highway",
            "highway_env.envs.highway_env:HighwayEnvFast",
            {"lanes_count": 3, "vehicles_count": 20, "simulation_frequency": 5},
            duration=30.0,
            batched=True,
        ),
        Merge(
            "merge",
            "highway_env.envs.merge_env:MergeEnv",
            {"simulation_frequency": 10},
            duration=20.0,
            batched=True,
        ),
        RouteScenario(
            "roundabout",
            "highway_env.envs.roundabout_env:RoundaboutEnv",
            {"simulation_frequency": 10},
            centering=(0.5, 0.5),
            speed_range=(4.0, 16.0),
            duration=20.0,
            destinations=("exs", "nxs", "wxs"),
            exit_distance=20.0,
            batched=True,
        ),
        RouteScenario(
            "intersection",
            "highway_env.envs.intersection_env:IntersectionEnv",
            {
                "simulation_frequency": 10,
                # a driver class of its own: IntersectionEnv rewrites its drivers' class-wide
                # gap and comfort parameters, which would change every other scenario's traffic
                # in the same process if they shared the class (see __getattr__ below)
                "other_vehicles_type": f"{__name__}.IntersectionIDMVehicle",
            },
            centering=(0.5, 0.5),
            speed_range=(4.0, 9.0),
            duration=15.0,
            destinations=("o1", "o2", "o3"),
            exit_distance=25.0,
            exit_prefix="il",
            respawns_traffic=True,
            batched=True,
        ),
        SignalScenario(
            "signalized",
            "highway_env.envs.intersection_env:IntersectionEnv",
            {
                "simulation_frequency": 10,
                "other_vehicles_type": f"{__name__}.IntersectionIDMVehicle",
                # the lights' cycle [s] and the pedestrians (envs.batched.signals)
                "green_duration": 8.0,
                "amber_duration": 3.0,
                "all_red_duration": 1.0,
                "pedestrian_probability": 0.4,  # of a new pedestrian after each policy step
                "jaywalk_probability": 0.1,  # of a pedestrian not waiting for the walk signal
            },
            view_m=48.0,  # pedestrians (1 m) and lights need more pixels than cars
            centering=(0.5, 0.65),  # more road ahead of the ego (it starts heading up)
            speed_range=(4.0, 9.0),
            duration=30.0,  # a red light can hold the ego for 15 s
            destinations=("o1", "o2", "o3"),
            exit_distance=25.0,
            exit_prefix="il",
            respawns_traffic=True,
            batched=True,
            highway=False,
        ),
    )
}
"""Every scenario by name; ``import envs`` registers ``DriveAttention/<Title>-v0`` for each and
``DriveAttention/Batched<Title>-v0`` for those with ``batched=True``."""
assert set(SCENARIOS) <= set(REWARD_WEIGHTS), "every scenario needs a row in REWARD_WEIGHTS"


def __getattr__(name: str) -> Any:
    """``IntersectionIDMVehicle``, made on first use so that importing this module does not
    import highway-env (highway-env finds it by its dotted path)."""
    if name == "IntersectionIDMVehicle":
        from highway_env.vehicle.behavior import IDMVehicle

        cls = type(name, (IDMVehicle,), {"__module__": __name__})
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ------------------------------------------------------------------ the embedded backends' options
SIM_INTEGERS: dict[str, tuple[int, int]] = {  # highway-env settings and their sensible range
    "lanes_count": (1, 10),
    "vehicles_count": (0, 200),
    "simulation_frequency": (1, 100),  # [Hz]
    "initial_vehicle_count": (1, 50),
}
SIM_POSITIVE: tuple[str, ...] = (
    "vehicles_density",
    "ego_spacing",
    "green_duration",
    "amber_duration",
    "all_red_duration",
)
SIM_FRACTIONS: tuple[str, ...] = (  # within 0..1
    "spawn_probability",
    "pedestrian_probability",
    "jaywalk_probability",
)
SIM_OWNED: dict[str, str] = {  # highway-env settings this env decides, and the option instead
    "observation": "camera_size, n_rays, ray_range",
    "action": "action",
    "policy_frequency": "policy_frequency",
    "duration": "duration",
}


def check_sim(sim: dict[str, Any]) -> None:
    """Range checks of the highway-env settings passed through ``sim`` (both backends)."""
    for key, instead in SIM_OWNED.items():
        check(key not in sim, f"sim.{key}: set by this env; use the option {instead} instead")
    for key, (lo, hi) in SIM_INTEGERS.items():
        if key in sim:
            value = sim[key]
            check(
                isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi,
                f"sim.{key}: {value!r} must be an integer within {lo}..{hi}",
            )
    for key in SIM_FRACTIONS:
        if key in sim:
            value = sim[key]
            check(
                isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1,
                f"sim.{key}: {value!r} must be a number within 0..1",
            )
    for key in SIM_POSITIVE:
        if key in sim:
            value = sim[key]
            check(
                isinstance(value, (int, float))
                and not isinstance(value, bool)
                and math.isfinite(value)
                and value > 0,
                f"sim.{key}: {value!r} must be a positive number",
            )


EMBEDDED_CAMERA_PX = (16, 512)  # [px] the frame sizes the embedded top-down raster draws
EMBEDDED_MIN_RAYS = 4  # lidar sectors, at least


@dataclass
class ScenarioConfig(ObservationOptions):
    """Options of the embedded backends (``gymnasium.make(id, **options)``): the shared
    :class:`envs.observation.ObservationOptions` and the scenario's own."""

    scenario: str = "highway"  # a name in SCENARIOS
    view_m: float | None = None  # [m] road width seen across the frame; None: scenario's
    policy_frequency: int | None = None  # [Hz] decisions per second; None: 1 discrete, 5 cont.
    red_light_terminal: bool = True  # crossing a stop line on red ends it (lights only)
    sim: dict[str, Any] = field(default_factory=dict)  # extra simulator settings

    BACKEND: ClassVar[str] = "the embedded backends (highway-env and batched)"

    def __post_init__(self) -> None:
        hint = closest(self.scenario, list(SCENARIOS))
        check(
            self.scenario in SCENARIOS,
            f"scenario: {self.scenario!r} is not a scenario{hint}; use one of "
            f"{', '.join(SCENARIOS)}",
        )
        super().__post_init__()
        check(
            self.view_m is None or 10.0 <= self.view_m <= 500.0, "view_m: must be within 10..500 m"
        )
        if self.policy_frequency is None:
            self.policy_frequency = 1 if self.action == "discrete" else 5
        check(1 <= self.policy_frequency <= 30, "policy_frequency: must be within 1..30 Hz")
        check_sim(self.sim)

    def refuse(self) -> None:
        lo, hi = EMBEDDED_CAMERA_PX
        if not all(lo <= side <= hi for side in self.camera_size):
            raise self.refusal(
                "camera_size",
                self.camera_size,
                f"their top-down raster draws {lo}..{hi} px frames (below {lo} px a 5 m car "
                "covers about one pixel of the default 64 m view)",
                f"use a camera_size within {lo}..{hi} px",
            )
        if self.n_rays < EMBEDDED_MIN_RAYS:
            raise self.refusal(
                "n_rays",
                self.n_rays,
                "their lidar splits the full circle into n_rays sectors, and fewer than "
                f"{EMBEDDED_MIN_RAYS} put the vehicles ahead and beside the ego in one sector",
                f"use n_rays >= {EMBEDDED_MIN_RAYS}",
            )

    # what the options resolve to for their scenario
    @property
    def spec(self) -> Scenario:
        return SCENARIOS[self.scenario]

    @property
    def episode_duration(self) -> float:
        """[s] the episode's time limit."""
        return self.duration or self.spec.duration

    @property
    def view(self) -> float:
        """[m] road width seen across the frame."""
        return self.view_m or self.spec.view_m

    @property
    def sim_frequency(self) -> int:
        """[Hz] simulation steps per second."""
        return int(self.sim.get("simulation_frequency", self.spec.sim_frequency))

    @property
    def weights(self) -> dict[str, float]:
        """Reward weights: the scenario's defaults (:data:`REWARD_WEIGHTS`) overridden by
        ``reward_weights``."""
        return reward_weights(self.scenario, self.reward_weights)

    @property
    def camera_geometry(self) -> CameraGeometry:
        """The camera's frame, scale and ego pixel (both embedded backends draw with it)."""
        return CameraGeometry.top_down(self.camera_size, self.view, self.spec.centering)

    def check_policy_frequency(self) -> None:
        """The decision rate must divide the simulation rate (whole frames per decision)."""
        check(
            self.sim_frequency % self.policy_frequency == 0,
            f"policy_frequency: {self.policy_frequency} Hz must divide the simulation "
            f"frequency {self.sim_frequency} Hz (set sim.simulation_frequency or "
            "policy_frequency)",
        )


def sensor_names(cfg: ScenarioConfig) -> tuple[str, ...]:
    """Names of the sensor elements for a scenario and options (every embedded backend's)."""
    names = [
        "ego.speed",
        "ego.heading_sin",
        "ego.heading_cos",
        "ego.lateral_offset",
        "ego.edge_left",
        "ego.edge_right",
        "ego.on_road",
    ]
    if cfg.action == "discrete":
        names += [f"ego.last_action_{k}" for k in DISCRETE_ACTIONS]
    else:
        names += ["ego.last_steer", "ego.last_accel"]
    for k in range(cfg.n_rays):
        names += [f"rays.{k:02d}.distance", f"rays.{k:02d}.closing_speed"]
    for k in range(cfg.n_objects):
        names += [f"objects.{k:02d}.{q}" for q in OBJECT_QUANTITIES]
    names += [f"route.{name}" for name in cfg.spec.route_sensors]
    return tuple(names)
