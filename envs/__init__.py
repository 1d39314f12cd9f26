"""Driving environments with the camera + sensors observation contract.

``import envs`` registers every backend's Gymnasium ids (string entry points: a backend's
simulator is imported only when one of its envs is made):

- ``DriveAttention/Highway-v0``, ``-/Merge-v0``, ``-/Roundabout-v0``, ``-/Intersection-v0``:
  the embedded highway-env backend (:mod:`envs.highway`);
- ``DriveAttention/BatchedHighway-v0``, ``-/BatchedMerge-v0``, ...: the batched torch simulator
  (:mod:`envs.batched`), B environments per call: ``gymnasium.make_vec(id, num_envs=B)`` returns
  it as a ``gymnasium.vector.VectorEnv`` (the ids' ``vector_entry_point``), ``gymnasium.make``
  one env of it, and :func:`envs.batched.make_vec_env` its SB3 VecEnv;
  ``DriveAttention/BatchedSignalized-v0`` (traffic lights and pedestrians) only there;
- ``DriveAttention/Carla-v0``: CARLA through its official client (:mod:`envs.carla`,
  needs ``pip install -e '.[carla]'`` and a running server).
"""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Mapping
from typing import Any

from gymnasium.envs.registration import register, registry

from drive_attention.envs.carla.config import CarlaEnvConfig
from drive_attention.envs.configuration import ConfigError, build, closest
from drive_attention.envs.contract import EPISODE_KEYS, REWARD_TERMS, ROAD_CLASSES, sensor_groups
from drive_attention.envs.observation import CameraGeometry, ObservationOptions
from drive_attention.envs.scenarios import SCENARIOS, ScenarioConfig
from drive_attention.envs.scenarios import sensor_names as scenario_sensor_names

if not os.environ.get("DISPLAY"):
    # highway-env imports pygame; without a display it must render off screen ("dummy" draws
    # nothing at all).
    os.environ.setdefault("SDL_VIDEODRIVER", "offscreen")


def env_id(scenario: str, batched: bool = False) -> str:
    """The Gymnasium id of ``scenario`` on the highway-env backend, or on the batched one."""
    spec = SCENARIOS[scenario]
    if batched and not spec.batched:
        raise ValueError(f"{scenario} has no batched version")
    if not batched and not spec.highway:
        raise ValueError(f"{scenario} has only a batched version")
    return f"DriveAttention/{'Batched' if batched else ''}{spec.title}-v0"


HIGHWAY_IDS: dict[str, str] = {env_id(n): n for n, s in SCENARIOS.items() if s.highway}
"""highway-env backend ids -> scenario names (the scenarios it has: all but the signalised)."""
BATCHED_IDS: dict[str, str] = {
    env_id(n, batched=True): n for n, s in SCENARIOS.items() if s.batched
}
"""Batched backend ids -> scenario names (the scenarios with a batched version)."""
CARLA_ID = "DriveAttention/Carla-v0"


def _register() -> None:
    for env_id, scenario in HIGHWAY_IDS.items():
        if env_id not in registry:
            register(
                env_id,
                entry_point="drive_attention.envs.highway:DriveEnv",
                kwargs={"scenario": scenario},
            )
    for env_id, scenario in BATCHED_IDS.items():
        if env_id not in registry:
            register(
                env_id,
                entry_point="drive_attention.envs.batched:BatchedDriveEnv",
                vector_entry_point="drive_attention.envs.batched:BatchedDriveVectorEnv",
                kwargs={"scenario": scenario},
            )
    if CARLA_ID not in registry:
        # CARLA is not deterministic under a seed; the env truncates episodes itself
        register(
            CARLA_ID,
            entry_point="drive_attention.envs.carla.env:CarlaDriveEnv",
            nondeterministic=True,
        )


_register()


def options(
    env_id: str, given: Mapping[str, Any] | None = None, prefix: str = ""
) -> ObservationOptions:
    """The validated options object ``gymnasium.make(env_id, **given)`` would build (an embedded
    backend's, with its scenario, or CARLA's), without making the env: an unknown key, a wrong
    type, a value out of range or one the backend cannot honour raises :class:`ConfigError`
    naming the key (spelled with ``prefix``, e.g. ``env.kwargs.``); ``render_mode`` is accepted
    and ignored."""
    given = {k: v for k, v in (given or {}).items() if k != "render_mode"}
    if env_id in BATCHED_IDS:
        # the batched backend imports torch: only when its options are asked for
        from drive_attention.envs.batched.core import BatchedDriveConfig

        return build(BatchedDriveConfig, {"scenario": BATCHED_IDS[env_id], **given}, prefix)
    if env_id in HIGHWAY_IDS:
        return build(ScenarioConfig, {"scenario": HIGHWAY_IDS[env_id], **given}, prefix)
    if env_id == CARLA_ID:
        return build(CarlaEnvConfig, given, prefix)
    raise _unknown_id(env_id)


def sensor_names(env_id: str, **given: Any) -> tuple[str, ...]:
    """The sensor names ``gymnasium.make(env_id, **given).unwrapped.sensor_names`` would give,
    without making the env (no simulator, no CARLA connection): computed from the backend's
    options and the scenario definition. Invalid options raise :class:`ConfigError` as
    ``gymnasium.make`` would; ``render_mode`` is accepted and ignored."""
    config = options(env_id, given)
    if isinstance(config, CarlaEnvConfig):
        from drive_attention.envs.carla.core import (
            make_sensor_names,  # its core imports cv2: only for CARLA
        )

        return make_sensor_names(config.n_route_points, config.n_rays)
    return scenario_sensor_names(config)


def camera_geometry(env_id: str, **given: Any) -> CameraGeometry:
    """``gymnasium.make(env_id, **given).unwrapped.camera_geometry``, without making the env."""
    return options(env_id, given).camera_geometry


def reward_weights(env_id: str, **given: Any) -> dict[str, float]:
    """Every reward term's weight ``gymnasium.make(env_id, **given)`` would use: the scenario's
    defaults (:data:`envs.scenarios.REWARD_WEIGHTS`) with ``given["reward_weights"]`` on top
    (no env is made). A run records them, so that resuming it under changed defaults is
    noticed."""
    return options(env_id, given).weights


EXPORT_KEY = "drive_attention"
"""The entry of an exported SB3 zip's ``data`` JSON (``scripts/export.py``) that holds, as JSON
text, the run's config, step and normalisation statistics."""


def exported_env_options(path: str | os.PathLike) -> tuple[str, dict[str, Any]]:
    """(env id, options) of the run an SB3 zip was exported from by ``scripts/export.py``, read
    from the zip's JSON without unpickling anything."""
    try:
        with zipfile.ZipFile(path) as archive:
            data = json.loads(archive.read("data").decode())
        config = json.loads(data[EXPORT_KEY])["config"]
        return str(config["env"]["id"]), dict(config["env"].get("kwargs") or {})
    except (OSError, zipfile.BadZipFile, KeyError, TypeError, ValueError) as err:
        raise ConfigError(
            f"{path}: not a zip exported by scripts/export.py ({type(err).__name__}: {err}); "
            "make the env with gymnasium.make(<the run's env.id>, **<its env.kwargs>)"
        ) from None


def make_exported_env(path: str | os.PathLike, **overrides: Any) -> Any:
    """``gymnasium.make`` of the env an exported SB3 zip was trained on, with the run's options
    (camera size, action type, object rows, ...; ``overrides`` on top), so its observation
    space is the policy's."""
    import gymnasium

    env_id, kwargs = exported_env_options(path)
    return gymnasium.make(env_id, **{**kwargs, **overrides})


def _unknown_id(env_id: str) -> ConfigError:
    ids = [*HIGHWAY_IDS, *BATCHED_IDS, CARLA_ID]
    return ConfigError(
        f"{env_id!r} is not one of this project's env ids{closest(env_id, ids)}; ids: "
        f"{', '.join(ids)}"
    )


__all__ = [
    "BATCHED_IDS",
    "CARLA_ID",
    "EPISODE_KEYS",
    "EXPORT_KEY",
    "HIGHWAY_IDS",
    "REWARD_TERMS",
    "ROAD_CLASSES",
    "CameraGeometry",
    "ConfigError",
    "ObservationOptions",
    "camera_geometry",
    "env_id",
    "exported_env_options",
    "make_exported_env",
    "options",
    "reward_weights",
    "sensor_groups",
    "sensor_names",
]
