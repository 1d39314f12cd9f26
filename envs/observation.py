"""The observation concepts every backend shares, each defined once.

- :class:`ObservationOptions`: the options every backend takes (``gymnasium.make(id, **options)``)
  with the same names, ranges and defaults. Each backend's options class extends it
  (:class:`envs.scenarios.ScenarioConfig` for the embedded backends,
  :class:`envs.carla.config.CarlaEnvConfig`); a backend that defaults an option otherwise
  redeclares that field's default (its declared override), and one that cannot honour a value
  refuses it in :meth:`ObservationOptions.refuse`, saying why.
- :class:`CameraGeometry`: where the world lies in a backend's camera frame and how a model's
  patch grid tiles it; every backend exposes it as ``env.unwrapped.camera_geometry``, and the
  attribution and the videos read it instead of re-deriving scale, ego pixel or patch size.

Importable without any simulator (CARLA's options import it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from drive_attention.envs.configuration import ConfigError, check, closest
from drive_attention.envs.contract import REWARD_TERMS

CAMERA_PX = (8, 2048)  # [px] the frame's height and width, each
MAX_FRAME_STACK = 8  # frames stacked along the channel axis, at most
MAX_RAYS = 128  # range rays, at most
RAY_RANGE_M = (5.0, 500.0)  # [m]
MAX_OBJECTS = 32  # rows of the radar object list, at most
MAX_REWARD_WEIGHT = 1e6  # |weight| of one reward term, at most


@dataclass
class ObservationOptions:
    """What the agent observes and how an episode is judged, on every backend.

    Old spellings (:attr:`ALIASES`) are still accepted by :func:`envs.configuration.build`, with
    a warning naming the new key.
    """

    camera_size: tuple[int, int] = (64, 64)  # (H, W) [px]
    frame_stack: int = 1  # frames stacked along the channel axis, oldest first
    road_labels: bool = False  # put info["road_labels"] in every step (costs time)
    n_rays: int = 16  # range rays around the ego
    ray_range: float = 60.0  # [m] a ray's reach: a distance of 1.0 in the sensors
    n_objects: int = 0  # radar object list: the nearest vehicles within ray_range, one row each
    duration: float | None = None  # [s] episode length; None: the backend's (the scenario's)
    action: Literal["discrete", "continuous"] = "discrete"  # meta-actions or [steer, accel]
    offroad_terminal: bool = True  # leaving the road ends the episode
    reward_weights: dict[str, float] = field(default_factory=dict)  # over the defaults

    ALIASES: ClassVar[dict[str, str]] = {
        "duration_s": "duration",  # CARLA's spelling until the options were shared
        "terminate_off_road": "offroad_terminal",  # likewise
    }
    BACKEND: ClassVar[str] = "this backend"  # in refusals: "<BACKEND> cannot ..."

    def __post_init__(self) -> None:
        h, w = self.camera_size
        lo, hi = CAMERA_PX
        check(
            lo <= h <= hi and lo <= w <= hi,
            f"camera_size: {self.camera_size} must be within {lo}..{hi} px (H, W)",
        )
        check(
            1 <= self.frame_stack <= MAX_FRAME_STACK,
            f"frame_stack: {self.frame_stack} must be within 1..{MAX_FRAME_STACK}",
        )
        check(0 <= self.n_rays <= MAX_RAYS, f"n_rays: {self.n_rays} must be within 0..{MAX_RAYS}")
        lo_m, hi_m = RAY_RANGE_M
        check(
            lo_m <= self.ray_range <= hi_m,
            f"ray_range: {self.ray_range} must be within {lo_m:g}..{hi_m:g} m",
        )
        check(
            0 <= self.n_objects <= MAX_OBJECTS,
            f"n_objects: {self.n_objects} must be within 0..{MAX_OBJECTS}",
        )
        check(
            self.duration is None or self.duration > 0,
            f"duration: {self.duration} must be a positive number of seconds (or null: the "
            "default)",
        )
        for key, weight in self.reward_weights.items():
            check(
                key in REWARD_TERMS,
                f"reward_weights.{key}: unknown reward term{closest(key, REWARD_TERMS)}; "
                f"terms: {', '.join(REWARD_TERMS)}",
            )
            check(
                isinstance(weight, (int, float)) and abs(weight) <= MAX_REWARD_WEIGHT,
                f"reward_weights.{key}: {weight!r} must be a number within "
                f"±{MAX_REWARD_WEIGHT:g} (the defaults are 0 to 20; a larger one overflows "
                "returns and value estimates)",
            )
        self.refuse()

    def refuse(self) -> None:
        """Raise :class:`ConfigError` for a value in range that this backend cannot honour,
        saying why (:meth:`refusal` words it); the shared options refuse nothing more."""

    @classmethod
    def refusal(cls, key: str, value: object, why: str, fix: str) -> ConfigError:
        """``<key>: <BACKEND> cannot honour <value>: <why>; <fix>``."""
        return ConfigError(f"{key}: {cls.BACKEND} cannot honour {value!r}: {why}; {fix}")


@dataclass(frozen=True)
class CameraGeometry:
    """A backend's camera frame: its size, and for a top-down camera its scale and the ego's place.

    The top-down cameras (the embedded backends) are world-aligned: a world point ``p`` [m]
    lies at pixel ``(p - ego) * px_per_m + ego_px`` (x right, y down). A perspective camera
    (CARLA's chase camera) has no single scale: ``px_per_m`` and ``centering`` are None.
    """

    height: int  # [px]
    width: int  # [px]
    px_per_m: float | None = None  # [px/m] top-down only
    centering: tuple[float, float] | None = None  # the ego's place, fractions of (W, H)

    @classmethod
    def top_down(
        cls, camera_size: tuple[int, int], view_m: float, centering: tuple[float, float]
    ) -> CameraGeometry:
        """A top-down frame of ``camera_size`` (H, W) [px] seeing ``view_m`` [m] across."""
        height, width = camera_size
        return cls(int(height), int(width), width / view_m, tuple(centering))

    @property
    def top_view(self) -> bool:
        """Whether the frame is a world-aligned top-down view (scale and ego pixel known)."""
        return self.px_per_m is not None and self.centering is not None

    @property
    def ego_px(self) -> tuple[float, float] | None:
        """(x, y) [px] the ego's centre in the frame (top-down), else None."""
        if self.centering is None:
            return None
        return (self.centering[0] * self.width, self.centering[1] * self.height)

    def scaled(self, factor: int) -> CameraGeometry:
        """The same view drawn ``factor`` times larger (an attention video's scene)."""
        px_per_m = None if self.px_per_m is None else self.px_per_m * factor
        return CameraGeometry(self.height * factor, self.width * factor, px_per_m, self.centering)

    def patch_cell(self, patch: int) -> tuple[int, int]:
        """(ph, pw) [px] of one attention patch of a model whose camera stem takes ``patch``
        pixels per token (``models.config.ModelConfig.patch``)."""
        return (patch, patch)

    def patch_grid(self, patch: int) -> tuple[int, int]:
        """(gh, gw) patches of that model over this frame (pixels past the last whole patch
        are in none)."""
        ph, pw = self.patch_cell(patch)
        return (self.height // ph, self.width // pw)
