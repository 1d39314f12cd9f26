"""One owner per observation concept: the options every backend shares (names, ranges, defaults,
old spellings, refusals), the camera geometry every backend exposes and the videos and
attribution read, and env options checked at config time without making an env."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from drive_attention import envs
from drive_attention.agent.evaluate.scene import HighwayScene
from drive_attention.agent.evaluate.video import RayLayout
from drive_attention.agent.run.build import EnvFactory
from drive_attention.agent.run.config import EnvConfig
from drive_attention.agent.run.config_files import load_config
from drive_attention.envs.batched.core import BatchedDriveConfig
from drive_attention.envs.carla.config import CarlaEnvConfig
from drive_attention.envs.configuration import ConfigError, build
from drive_attention.envs.contract import CLASS_ID
from drive_attention.envs.observation import CameraGeometry, ObservationOptions
from drive_attention.envs.scenarios import ScenarioConfig

ROOT = Path(__file__).resolve().parents[2]
HIGHWAY = "DriveAttention/Highway-v0"
BATCHED = "DriveAttention/BatchedHighway-v0"
CARLA = envs.CARLA_ID
SHARED = [f.name for f in dataclasses.fields(ObservationOptions)]
OVERRIDES = {CarlaEnvConfig: {"ray_range": 50.0, "action": "continuous"}}  # declared defaults


# ------------------------------------------------------------------ one options type
@pytest.mark.parametrize("cls", [ScenarioConfig, BatchedDriveConfig, CarlaEnvConfig])
def test_every_backend_extends_the_shared_options_with_its_defaults(cls: type) -> None:
    assert issubclass(cls, ObservationOptions)
    shared = {f.name: f for f in dataclasses.fields(ObservationOptions)}
    own = {f.name: f for f in dataclasses.fields(cls)}
    for name, f in shared.items():
        assert typing.get_type_hints(cls)[name] == typing.get_type_hints(ObservationOptions)[name]
        default = OVERRIDES.get(cls, {}).get(name, f.default)
        if f.default is not dataclasses.MISSING:
            assert own[name].default == default, name


@pytest.mark.parametrize("env_id", [HIGHWAY, BATCHED, CARLA])
@pytest.mark.parametrize(
    ("key", "value", "needle"),
    [
        ("frame_stack", 9, "frame_stack: 9 must be within 1..8"),
        ("ray_range", 1.0, "ray_range: 1.0 must be within 5..500 m"),
        ("camera_size", (4, 64), "camera_size: (4, 64) must be within 8..2048 px"),
        ("duration", -1.0, "duration: -1.0 must be a positive number of seconds"),
    ],
)
def test_shared_ranges_are_the_same_on_every_backend(
    env_id: str, key: str, value: object, needle: str
) -> None:
    with pytest.raises(ConfigError) as info:
        envs.options(env_id, {key: value})
    assert str(info.value).startswith(needle), info.value


# ------------------------------------------------------------------ old spellings
@pytest.mark.parametrize(
    ("old", "new", "value"),
    [("duration_s", "duration", 9.0), ("terminate_off_road", "offroad_terminal", False)],
)
@pytest.mark.parametrize("env_id", [HIGHWAY, CARLA])
def test_old_spelling_is_accepted_with_a_warning_naming_the_new_key(
    env_id: str, old: str, new: str, value: object
) -> None:
    with pytest.warns(FutureWarning, match=f"'{old}' is now spelled '{new}'"):
        config = envs.options(env_id, {old: value})
    assert getattr(config, new) == value
    assert getattr(envs.options(env_id, {new: value}), new) == value  # the new one, no warning


def test_old_spelling_ends_a_carla_episode_as_before() -> None:
    with pytest.warns(FutureWarning):
        old = build(CarlaEnvConfig, {"duration_s": 10.0})
    assert old.max_steps == build(CarlaEnvConfig, {"duration": 10.0}).max_steps == 200


def test_old_spelling_works_through_gymnasium_make() -> None:
    with pytest.warns(FutureWarning, match="duration"):
        env = gym.make(HIGHWAY, duration_s=3.0)
    try:
        assert env.unwrapped.duration == 3.0
    finally:
        env.close()


def test_both_spellings_at_once_are_refused() -> None:
    with pytest.raises(
        ConfigError, match=r"duration_s: the old spelling of duration.*keep duration"
    ):
        envs.options(CARLA, {"duration_s": 5.0, "duration": 6.0})


def test_old_spelling_in_an_experiment_config_is_accepted() -> None:
    with pytest.warns(FutureWarning, match="'env.kwargs.duration_s' is now spelled"):
        config = EnvConfig(id=CARLA, n_envs=1, kwargs={"duration_s": 30.0})
    assert config.kwargs == {"duration_s": 30.0}  # the config keeps what the user wrote


# ------------------------------------------------------------------ refusals with reasons
@pytest.mark.parametrize(
    ("env_id", "key", "value", "why"),
    [
        (CARLA, "n_objects", 4, "it has no radar object list"),
        (CARLA, "action", "discrete", "[steer, accel] only"),
        (CARLA, "n_rays", 120, "two digits"),
        (HIGHWAY, "camera_size", (8, 8), "5 m car covers about one pixel"),
        (BATCHED, "camera_size", (1024, 1024), "draws 16..512 px frames"),
        (HIGHWAY, "n_rays", 2, "in one sector"),
    ],
)
def test_a_backend_refuses_what_it_cannot_honour_saying_why(
    env_id: str, key: str, value: object, why: str
) -> None:
    with pytest.raises(ConfigError) as info:
        envs.options(env_id, {key: value})
    message = str(info.value)
    assert message.startswith(f"{key}: ") and "cannot honour" in message and why in message
    assert "; use " in message  # and how to fix it


def test_what_one_backend_refuses_another_may_honour() -> None:
    assert envs.options(CARLA, {"camera_size": (8, 8), "n_rays": 2}).n_rays == 2
    assert envs.options(HIGHWAY, {"n_objects": 4}).n_objects == 4


# ------------------------------------------------------------------ camera geometry
@pytest.mark.parametrize("env_id", [HIGHWAY, BATCHED, "DriveAttention/BatchedSignalized-v0"])
def test_every_embedded_env_exposes_its_camera_geometry(env_id: str) -> None:
    kwargs = {"camera_size": (48, 80), "view_m": 40.0}
    env = gym.make(env_id, road_labels=True, **kwargs)
    try:
        geometry = env.unwrapped.camera_geometry
        assert geometry == envs.camera_geometry(env_id, **kwargs)
        assert (geometry.height, geometry.width, geometry.px_per_m) == (48, 80, 2.0)
        _, info = env.reset(seed=0)
        x, y = geometry.ego_px
        assert info["road_labels"][int(y), int(x)] == CLASS_ID["ego"]  # the ego is at ego_px
    finally:
        env.close()


def test_carla_geometry_is_a_frame_without_a_top_view() -> None:
    geometry = envs.camera_geometry(CARLA, camera_size=(72, 128))
    assert (geometry.height, geometry.width, geometry.top_view, geometry.ego_px) == (
        72,
        128,
        False,
        None,
    )
    assert geometry.patch_cell(8) == (8, 8) and geometry.patch_grid(8) == (9, 16)


def test_videos_read_the_env_geometry() -> None:
    env = gym.make(HIGHWAY, camera_size=(32, 64), view_m=32.0, n_rays=8)
    try:
        env.reset(seed=0)
        geometry = env.unwrapped.camera_geometry
        layout = RayLayout.from_env(env)
        assert layout is not None
        assert (layout.px_per_m, layout.ego_px) == (geometry.px_per_m, geometry.ego_px)
        scene = HighwayScene.attach(env, 3)
        assert scene is not None
        big = geometry.scaled(3)
        raster = scene.raster
        assert (raster.height, raster.width, raster.scaling) == (big.height, big.width, 6.0)
        assert tuple(raster.centering) == big.centering == geometry.centering
    finally:
        env.close()


def test_geometry_of_a_top_down_frame() -> None:
    geometry = CameraGeometry.top_down((64, 96), 48.0, (0.25, 0.5))
    assert geometry.px_per_m == 2.0 and geometry.ego_px == (24.0, 32.0)
    assert geometry.patch_cell(16) == (16, 16) and geometry.patch_grid(16) == (4, 6)


# ------------------------------------------------------------------ env options at config time
@pytest.fixture
def no_env_is_made(monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(*args: object, **kwargs: object) -> typing.NoReturn:
        raise AssertionError("an env was made to check the config")

    monkeypatch.setattr(gym, "make", refused)
    monkeypatch.setattr(EnvFactory, "__call__", refused)


@pytest.mark.usefixtures("no_env_is_made")
@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (["env.kwargs.n_rayz=8"], "unknown option 'env.kwargs.n_rayz' (did you mean 'n_rays'?)"),
        ([f"env.id={BATCHED}", "env.kwargs.ray_rang=40"], "(did you mean 'ray_range'?)"),
        (["env.kwargs.n_objects=3"], "env.kwargs.n_objects: the CARLA backend cannot honour 3"),
        (["env.kwargs.camera_size=[4, 4]"], "env.kwargs.camera_size: (4, 4) must be within"),
        ([f"env.id={BATCHED}", "env.kwargs.sim.lanes_cont=3"], "(did you mean 'lanes_count'?)"),
    ],
)
def test_bad_env_kwargs_are_named_at_config_time(overrides: list[str], needle: str) -> None:
    name = "carla.yaml" if "n_objects" in overrides[0] else "highway_env.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(ROOT / "configs" / name, overrides)
    assert needle in str(info.value), info.value


@pytest.mark.usefixtures("no_env_is_made")
def test_good_env_kwargs_pass_without_making_an_env() -> None:
    config = load_config(ROOT / "configs" / "highway_env.yaml", ["env.kwargs.n_rays=8"])
    assert config.env.kwargs["n_rays"] == 8
    assert np.isfinite(envs.reward_weights(config.env.id, **config.env.kwargs)["collision"])


@pytest.mark.parametrize("env_id", ["DriveAttention/Highway-v0", "DriveAttention/BatchedMerge-v0"])
def test_a_huge_reward_weight_is_refused_before_it_overflows(env_id: str) -> None:
    """1e308 is finite, but the first crash makes the return infinite and the value loss NaN:
    refused where the options are checked, naming the term and the bound."""
    with pytest.raises(ConfigError, match=r"reward_weights\.collision: 1e\+308 must be .*1e\+06"):
        envs.options(env_id, {"reward_weights": {"collision": 1e308}})
    assert envs.options(env_id, {"reward_weights": {"collision": 20.0}}).reward_weights
