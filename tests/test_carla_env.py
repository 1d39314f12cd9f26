"""Tests of the CARLA env (envs/carla/env.py, CarlaDriveEnv) and so of the whole backend:

- its spaces, built without a server;
- what happens with no server at all (fails fast, says how to start one);
- the env glued to ``FakeServer`` (tests/carla_fakes.py), a tiny in-process stand-in for a CARLA
  server: set-up, synchronous ticking, observation, reward, episode end, actor clean-up, settings
  restore, server loss and reconnection, the gymnasium contract;
- integration tests against a real server (``@pytest.mark.carla``), skipped when none answers at
  CARLA_HOST:CARLA_PORT (default localhost:2000).

The whole module needs the carla client (skipped without it). The options, the pure logic and the
runtime are tested in test_carla_config.py, test_carla_core.py and test_carla_runtime.py.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from carla_fakes import FakeBlueprint, FakeClient, FakeServer, FakeWaypoint, free_port

import envs  # noqa: F401  (registers the ids)
from envs.carla.config import DEFAULT_REWARD_WEIGHTS, default_host, default_port
from envs.carla.runtime import CarlaConnectionError, CarlaServerLost, probe_server
from envs.configuration import ConfigError
from envs.contract import (
    CLASS_ID,
    EPISODE_KEYS,
    REWARD_TERMS,
    ROAD_CLASSES,
    ActionError,
    SimulatorUnavailable,
    sensor_groups,
)

carla = pytest.importorskip(
    "carla", reason="the carla client is not installed: pip install -e '.[carla]'"
)

ENV_ID = "DriveAttention/Carla-v0"
if ENV_ID not in gym.registry:  # until envs/__init__.py registers it
    gym.register(id=ENV_ID, entry_point="envs.carla.env:CarlaDriveEnv")

from envs.carla.env import CarlaDriveEnv  # noqa: E402  (after the importorskip)

# ==============================================================================================
# Spaces, without a server
# ==============================================================================================


def test_make_builds_spaces_without_a_server() -> None:
    env = gym.make(ENV_ID, camera_size=(32, 48), frame_stack=2, n_rays=4, n_route_points=3)
    space = env.observation_space
    assert space["camera"].shape == (32, 48, 6) and space["camera"].dtype == np.uint8
    names = env.unwrapped.sensor_names
    assert space["sensors"].shape == (len(names),) and space["sensors"].dtype == np.float32
    assert env.action_space.shape == (2,) and env.action_space.dtype == np.float32
    assert env.unwrapped.sensor_groups == sensor_groups(names)
    env.close()
    with pytest.raises(ConfigError, match="camera_sise"):
        gym.make(ENV_ID, camera_sise=(64, 64))


# ==============================================================================================
# No server: make + reset fail fast and say how to start one
# ==============================================================================================


def test_reset_without_a_server_fails_within_the_timeout_with_instructions() -> None:
    env = gym.make(ENV_ID, host="127.0.0.1", port=free_port(), timeout_s=2.0, connect_retries=1)
    start = time.monotonic()
    with pytest.raises(CarlaConnectionError) as err:
        env.reset(seed=0)
    assert time.monotonic() - start < 2.5
    text = str(err.value)
    assert "no CARLA server is listening" in text and "carlasim/carla:0.9.16" in text
    assert "CARLA_HOST" in text
    env.close()


def test_first_connection_fails_at_once_even_with_many_retries() -> None:
    """No server at all when training starts: one clear error now, not retries for minutes
    (configs/carla.yaml allows 20 retries 10 s apart, for a server coming back)."""
    env = CarlaDriveEnv(host="127.0.0.1", port=free_port(), timeout_s=2.0, connect_retries=20,
                        retry_delay_s=10.0)  # fmt: skip
    start = time.monotonic()
    with pytest.raises(SimulatorUnavailable, match="no CARLA server is listening"):
        env.reset(seed=0)
    assert time.monotonic() - start < 2.5
    env.close()


def test_reset_without_the_probe_relies_on_the_client_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(CarlaDriveEnv, "probe", staticmethod(lambda host, port, timeout: None))
    env = CarlaDriveEnv(host="127.0.0.1", port=free_port(), timeout_s=1.0, connect_retries=2,
                        retry_delay_s=0.1)  # fmt: skip
    start = time.monotonic()
    with pytest.raises(CarlaConnectionError, match=r"failed after 2 attempt.*did not answer"):
        env.reset()
    assert time.monotonic() - start < 2 * 1.0 + 0.1 + 1.5  # two timeouts and a pause
    env.close()


# ==============================================================================================
# The env on a fake server
# ==============================================================================================


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Route the env's client to a FakeServer (replaceable: state['server'] = FakeServer())."""
    state: dict[str, Any] = {"server": FakeServer(), "connects": 0}

    def factory(host: str, port: int) -> FakeClient:
        state["connects"] += 1
        return FakeClient(state["server"])

    def probe(host: str, port: int, timeout: float) -> None:
        if not state["server"].alive:
            raise CarlaConnectionError(f"no CARLA server is listening at {host}:{port}")

    monkeypatch.setattr(CarlaDriveEnv, "client_factory", staticmethod(factory))
    monkeypatch.setattr(CarlaDriveEnv, "probe", staticmethod(probe))
    return state


FAST = {
    "town": "Town01",
    "camera_size": (48, 64),
    "n_vehicles": 4,
    "n_pedestrians": 3,
    "warmup_steps": 3,
    "timeout_s": 1.0,
    "retry_delay_s": 0.0,
    "route_length_m": 200.0,
}


def test_env_passes_gymnasium_check_env_on_the_fake_server(fake: dict[str, Any]) -> None:
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = CarlaDriveEnv(**FAST, road_labels=True, frame_stack=2)
    check_env(env, skip_render_check=True)
    sb3_check_env(env, warn=False)
    env.close()
    assert fake["server"].actors == {}


def test_env_episode_on_the_fake_server(fake: dict[str, Any]) -> None:
    server: FakeServer = fake["server"]
    env = gym.make(ENV_ID, **{**FAST, "duration_s": 1.0}, road_labels=True)
    obs, info = env.reset(seed=3)
    assert env.observation_space.contains(obs)
    settings = server.settings
    assert settings.synchronous_mode and settings.fixed_delta_seconds == 0.05
    assert server.tm.sync == [True] and server.weather is not None
    types = sorted(a.type_id for a in server.actors.values())
    assert types.count("walker.pedestrian.0001") == 3 == types.count("controller.ai.walker")
    assert sum(t.startswith("vehicle.") for t in types) == 5  # ego + 4, all four-wheeled
    assert "vehicle.yamaha.yzf" not in types
    assert all(a.started for a in server.actors.values() if a.type_id == "controller.ai.walker")
    assert all(a.autopilot == (True, 8000) for a in server.actors.values()
               if a.attributes.get("role_name") == "autopilot")  # fmt: skip
    labels = info["road_labels"]
    assert labels.shape == (48, 64) and labels.dtype == np.uint8
    assert (labels[35, 28:36] == CLASS_ID["ego"]).all()  # the ego's silhouette
    assert not (labels[-1] == CLASS_ID["ego"]).any()  # the road behind the ego's rear
    assert labels[0, 0] == CLASS_ID["vehicle"] and labels[10, 32] == CLASS_ID["lane_marking"]

    names = env.unwrapped.sensor_names
    steps, ret, done = 0, 0.0, False
    while not done:
        obs, reward, terminated, truncated, info = env.step(np.array([0.0, 1.0], np.float32))
        assert env.observation_space.contains(obs) and np.isfinite(obs["sensors"]).all()
        assert set(info["reward_terms"]) == set(REWARD_TERMS)
        assert reward == pytest.approx(sum(info["reward_terms"].values()))
        assert info["speed"] >= 0 and info["road_labels"].shape == (48, 64)
        ret, steps, done = ret + reward, steps + 1, terminated or truncated
    assert truncated and info["termination"] == "timeout" and steps == 20
    assert set(EPISODE_KEYS) <= set(info) and isinstance(info["collision"], bool)
    assert info["distance"] > 0 and info["mean_speed"] == pytest.approx(info["distance"] / 1.0)
    sensors = dict(zip(names, obs["sensors"]))
    assert sensors["ego.speed"] > 0 and sensors["ego.accel"] == pytest.approx(0.1)
    assert sensors["route.00.x"] > 0 and abs(sensors["route.00.y"]) < 1e-3
    assert ret > 0
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(2))

    env.reset(seed=4)  # the previous episode's actors are destroyed first
    assert len(server.actors) == 5 + 6 + 5  # vehicles, walkers + controllers, sensors
    env.close()
    assert server.actors == {} and not server.settings.synchronous_mode
    assert server.settings.fixed_delta_seconds is None and server.tm.sync[-1] is False
    assert server.loaded == []  # Town01 already loaded


def test_env_loads_the_configured_town_once(fake: dict[str, Any]) -> None:
    env = CarlaDriveEnv(**{**FAST, "town": "Town03"})
    env.reset(seed=0)
    env.reset(seed=1)
    assert fake["server"].loaded == ["Town03"]
    env.close()


def test_collision_ends_the_episode_with_a_penalty(fake: dict[str, Any]) -> None:
    server: FakeServer = fake["server"]
    env = CarlaDriveEnv(**{**FAST, "n_vehicles": 0, "n_pedestrians": 0, "n_rays": 8})
    env.reset(seed=0)
    ego = next(a for a in server.actors.values() if a.attributes.get("role_name") == "hero")
    ahead = carla.Transform(carla.Location(x=ego.location.x + 12.0))
    parked = server.spawn(FakeBlueprint("vehicle.audi.tt", role_name="parked"), ahead, None)
    assert parked is not None
    for _ in range(200):
        obs, _, terminated, truncated, info = env.step([0.0, 1.0])
        if terminated or truncated:
            break
    assert terminated and info["termination"] == "collision" and info["collision"] is True
    assert info["reward_terms"]["collision"] == -DEFAULT_REWARD_WEIGHTS["collision"]
    assert info["collided_with"] == ["vehicle.audi.tt"]
    ray_ahead = dict(zip(env.sensor_names, obs["sensors"]))["rays.00.distance"]
    assert ray_ahead < 0.1  # the ray straight ahead touches the parked car
    env.close()


def test_a_bad_action_is_refused_and_the_episode_goes_on(fake: dict[str, Any]) -> None:
    env = CarlaDriveEnv(**{**FAST, "n_vehicles": 0, "n_pedestrians": 0})
    env.reset(seed=0)
    for bad in ([np.nan, 0.0], [0.0, np.inf], [0.1, 0.2, 0.3], "fast"):
        with pytest.raises(ActionError, match="Carla-v0: action"):
            env.step(bad)
    _, reward, terminated, truncated, _ = env.step([0.0, 0.5])
    assert np.isfinite(reward) and not (terminated or truncated)
    env.close()


def test_ego_rolling_backwards_has_a_negative_speed(fake: dict[str, Any]) -> None:
    server: FakeServer = fake["server"]
    env = CarlaDriveEnv(**{**FAST, "n_vehicles": 0, "n_pedestrians": 0})
    env.reset(seed=0)
    ego = next(a for a in server.actors.values() if a.attributes.get("role_name") == "hero")
    ego.speed = -2.0  # rolling backwards: its velocity points opposite its heading
    obs, _, _, _, info = env.step([0.0, 0.0])  # coasting: it keeps rolling
    assert info["speed"] == pytest.approx(-2.0)
    assert dict(zip(env.sensor_names, obs["sensors"]))["ego.speed"] < 0
    env.close()


def test_traffic_light_ahead_on_the_fake_server(fake: dict[str, Any]) -> None:
    env = CarlaDriveEnv(**FAST)
    env.reset(seed=0)
    ego = env._episode.ego
    state, distance = env._light_ahead(ego, FakeWaypoint(570.0), np.array([570.0, 1.0]))
    assert state == "red" and distance == pytest.approx(math.hypot(30.0, 1.0))
    assert env._light_ahead(ego, FakeWaypoint(100.0), np.array([100.0, 0.0])) == (None, 50.0)
    assert env._light_ahead(ego, None, np.array([570.0, 0.0])) == (None, 50.0)
    env.close()


def test_failed_reset_destroys_what_it_spawned(fake: dict[str, Any]) -> None:
    server: FakeServer = fake["server"]
    server.fail_spawn = "sensor.other.imu"
    env = CarlaDriveEnv(**FAST)
    with pytest.raises(RuntimeError, match="Spawn failed"):
        env.reset(seed=0)
    assert server.actors == {}  # ego, traffic, walkers and the sensors spawned so far
    server.fail_spawn = None
    env.reset(seed=0)
    env.close()
    assert server.actors == {} and not server.settings.synchronous_mode


def test_server_loss_raises_a_clear_error_and_reset_reconnects(fake: dict[str, Any]) -> None:
    first: FakeServer = fake["server"]
    env = CarlaDriveEnv(**FAST, connect_retries=2)
    env.reset(seed=0)
    env.step([0.0, 0.5])
    first.alive = False  # the server crashes
    with pytest.raises(CarlaServerLost, match=r"stopped answering.*next reset\(\) reconnects"):
        env.step([0.0, 0.5])
    with pytest.raises(CarlaConnectionError, match="failed after 2 attempt"):
        env.reset()  # still down: bounded retries, then a clear error
    fake["server"] = second = FakeServer()  # restarted on the same address
    connects = fake["connects"]
    env.reset(seed=1)
    assert fake["connects"] == connects + 1 and second.settings.synchronous_mode
    env.step([0.0, 0.5])
    env.close()
    assert second.actors == {} and not second.settings.synchronous_mode


def test_transient_loss_purges_leftover_actors_on_reconnect(fake: dict[str, Any]) -> None:
    server: FakeServer = fake["server"]
    env = CarlaDriveEnv(**FAST)
    env.reset(seed=0)
    spawned = set(server.actors)
    server.alive = False
    with pytest.raises(CarlaServerLost):
        env.step([0.0, 0.0])
    server.alive = True  # it was only a hiccup: the old actors are still in the world
    env.reset(seed=1)
    assert not spawned & set(server.actors)
    env.close()
    assert server.actors == {}


def test_truncate_mode_ends_the_episode_on_server_loss(fake: dict[str, Any]) -> None:
    env = CarlaDriveEnv(**FAST, on_server_loss="truncate")
    obs0, _ = env.reset(seed=0)
    fake["server"].alive = False
    obs, reward, terminated, truncated, info = env.step([0.0, 0.0])
    assert (reward, terminated, truncated) == (0.0, False, True)
    assert info["server_lost"] and info["termination"] == "server_lost"
    assert set(EPISODE_KEYS) <= set(info) and set(info["reward_terms"]) == set(REWARD_TERMS)
    assert obs["camera"].shape == obs0["camera"].shape
    fake["server"] = FakeServer()
    env.reset(seed=1)  # a training loop carries on with the restarted server
    env.close()


def test_server_restart_between_episodes_is_detected(fake: dict[str, Any]) -> None:
    env = CarlaDriveEnv(**FAST)
    env.reset(seed=0)
    fake["server"].alive = False
    fake["server"] = new = FakeServer()  # restarted while nobody was stepping
    env.reset(seed=1)
    assert new.settings.synchronous_mode and len(new.actors) > 0
    env.close()
    assert new.actors == {}


def test_close_on_a_dead_server_does_not_raise_or_hang(fake: dict[str, Any]) -> None:
    env = CarlaDriveEnv(**FAST)
    env.reset(seed=0)
    fake["server"].alive = False
    start = time.monotonic()
    env.close()
    env.close()
    assert time.monotonic() - start < 1.0


# ==============================================================================================
# Integration: a real CARLA server
# ==============================================================================================


@pytest.fixture(scope="module")
def live() -> dict[str, Any]:
    host, port = default_host(), default_port()
    try:
        probe_server(host, port, 2.0)
    except CarlaConnectionError:
        pytest.skip(
            f"no CARLA server answers at {host}:{port} (start one: README, 'CARLA backend')"
        )
    return {"host": host, "port": port}


LIVE = {"camera_size": (64, 64), "n_vehicles": 10, "n_pedestrians": 5, "timeout_s": 20.0,
        "town": None, "route_length_m": 150.0}  # fmt: skip


@pytest.mark.carla
def test_live_steps_and_cleanup(live: dict[str, Any]) -> None:
    client = carla.Client(live["host"], live["port"])
    client.set_timeout(20.0)
    before = client.get_world().get_settings()
    env = gym.make(ENV_ID, **LIVE, road_labels=True, n_rays=8)
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs) and info["road_labels"].shape == (64, 64)
    world = client.get_world()
    assert world.get_settings().synchronous_mode
    ours = env.unwrapped._actors.ids
    for _ in range(30):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        assert env.observation_space.contains(obs) and np.isfinite(obs["sensors"]).all()
        assert set(info["reward_terms"]) == set(REWARD_TERMS) and np.isfinite(reward)
        assert info["road_labels"].max() < len(ROAD_CLASSES)
        if terminated or truncated:
            assert set(EPISODE_KEYS) <= set(info)
            env.reset()
    env.close()
    after = client.get_world()
    assert after.get_settings().synchronous_mode == before.synchronous_mode
    assert after.get_settings().fixed_delta_seconds == before.fixed_delta_seconds
    assert len(after.get_actors(ours)) == 0


@pytest.mark.carla
def test_live_episodes_end_with_the_episode_keys(live: dict[str, Any]) -> None:
    env = gym.make(ENV_ID, **{**LIVE, "duration_s": 2.0})
    for episode in range(2):
        env.reset(seed=episode)
        done, steps = False, 0
        while not done:
            _, _, terminated, truncated, info = env.step(np.array([0.0, 0.5], np.float32))
            done, steps = terminated or truncated, steps + 1
        assert set(EPISODE_KEYS) <= set(info) and steps <= 40
        assert isinstance(info["success"], bool) and info["distance"] >= 0
    env.close()


@pytest.mark.carla
def test_live_check_env(live: dict[str, Any]) -> None:
    from gymnasium.utils.env_checker import check_env

    env = CarlaDriveEnv(**LIVE)
    env.spec = dataclasses.replace(gym.spec(ENV_ID), nondeterministic=True)  # CARLA is not
    try:
        check_env(env, skip_render_check=True)
    finally:
        env.close()
