"""The scene behind an attention video: the road drawn at video size, also between decisions.

The policy sees a small camera frame (64 px by default) once per decision. The video draws the
same ego-centred view from the simulator's state at ``scale`` times the camera's resolution with
the backend's own rasterizer (:class:`envs.camera.Rasterizer`: same transform, colours and label
map, so the attention's patch grid lines up), and records the state at every simulation step
between two decisions so the video can play the episode at its real pace (the env delivers each
simulation frame through its hook, :meth:`envs.highway.env.DriveEnv.on_frame`).

Only the highway-env backend exposes its simulator (``env.unwrapped.sim``); for other backends
:meth:`HighwayScene.attach` returns None and the video shows the camera frame upsampled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from drive_attention.envs.camera import Rasterizer, colorize, vehicle_corners


@dataclass
class Snapshot:
    """Where the vehicles are at one simulation step."""

    ego_position: np.ndarray  # (2,) [m]
    ego: np.ndarray  # (4, 2) ego corners [m]
    others: dict[int, np.ndarray]  # vehicle id -> (4, 2) corners [m]


def interpolate(a: Snapshot, b: Snapshot, t: float) -> Snapshot:
    """The state a fraction ``t`` in [0, 1] of the way from ``a`` to ``b`` (vehicles in only one
    of them are shown from the nearer one)."""
    if t <= 0.0:
        return a
    if t >= 1.0:
        return b
    others = {}
    for key in a.others.keys() | b.others.keys():
        if key in a.others and key in b.others:
            others[key] = (1 - t) * a.others[key] + t * b.others[key]
        elif key in (a.others if t < 0.5 else b.others):
            others[key] = (a.others if t < 0.5 else b.others)[key]
    return Snapshot(
        (1 - t) * a.ego_position + t * b.ego_position, (1 - t) * a.ego + t * b.ego, others
    )


def _corners(vehicles: list[Any]) -> np.ndarray:
    """(N, 4, 2) corners [m] of highway-env vehicles."""
    return vehicle_corners(
        np.array([v.position for v in vehicles]).reshape(-1, 2),
        np.array([v.heading for v in vehicles]),
        np.array([v.LENGTH for v in vehicles]),
        np.array([v.WIDTH for v in vehicles]),
    )


class HighwayScene:
    """The highway-env backend's road state, drawn at ``scale`` x its camera's resolution."""

    def __init__(self, env: Any, scale: int) -> None:
        self.env = env.unwrapped
        self.scale = scale
        self.raster = Rasterizer.for_camera(self.env.camera_geometry.scaled(scale))
        self._between: list[Snapshot] = []

    @classmethod
    def attach(cls, env: Any, scale: int) -> HighwayScene | None:
        """A scene for ``env`` if its backend exposes its simulator (highway-env), else None."""
        u = env.unwrapped
        if not all(hasattr(u, n) for n in ("sim", "raster", "ego", "on_frame", "camera_geometry")):
            return None
        if not isinstance(u.raster, Rasterizer):
            return None
        return cls(env, scale)

    def start(self) -> None:
        """Call after each reset: take the episode's road, and ask the env for every simulation
        step of the coming decisions (highway-env builds a new road, and the env forgets the
        request, at each reset)."""
        self.raster.set_road(self.env.sim.road.network.lanes_list())
        self._between = []
        self.env.on_frame(self._record)

    def _record(self) -> None:
        self._between.append(self.snapshot())

    def snapshot(self) -> Snapshot:
        sim = self.env.sim
        ego = sim.vehicle
        others = [v for v in sim.road.vehicles if v is not ego]
        corners = _corners(others)
        return Snapshot(
            np.array(ego.position, float),
            _corners([ego])[0],
            {id(v): c for v, c in zip(others, corners)},
        )

    def take_between(self) -> list[Snapshot]:
        """The simulation steps recorded since the last call (the last one is the state the
        next decision sees)."""
        out, self._between = self._between, []
        return out

    def draw(self, snapshot: Snapshot) -> tuple[np.ndarray, np.ndarray]:
        """The frame ``(H * scale, W * scale, 3)`` uint8 and its label map ``(H * scale, W *
        scale)`` uint8."""
        others = np.array(list(snapshot.others.values())).reshape(-1, 4, 2)
        labels = self.raster.draw(snapshot.ego_position, others, snapshot.ego).copy()
        return colorize(labels), labels
