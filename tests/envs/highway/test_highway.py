"""The embedded highway-env backend keeps the observation contract."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from drive_attention import envs
from drive_attention.envs import ROAD_CLASSES, ConfigError
from drive_attention.envs.contract import CLASS_ID

IDS = list(envs.HIGHWAY_IDS)


def test_ids_registered_once_and_named() -> None:
    import importlib

    importlib.reload(envs)  # registering twice must not fail or warn
    for word in ("Highway", "Merge", "Roundabout", "Intersection"):
        assert any(word in env_id for env_id in gym.registry), word
    assert "DriveAttention/Carla-v0" in gym.registry
    assert ROAD_CLASSES[:5] == ("off_road", "road", "lane_marking", "vehicle", "ego")


@pytest.mark.parametrize("env_id", IDS)
@pytest.mark.parametrize("action", ["discrete", "continuous"])
def test_env_checkers(env_id: str, action: str) -> None:
    env = gym.make(env_id, action=action)
    gym_check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(env.unwrapped, warn=False)
    env.close()


@pytest.mark.parametrize("env_id", IDS)
def test_observations_inside_space_and_sensors_named(env_id: str) -> None:
    env = gym.make(env_id, camera_size=(48, 80))
    space = env.observation_space
    assert space["camera"].shape == (48, 80, 3) and space["camera"].dtype == np.uint8
    names = env.unwrapped.sensor_names
    assert len(names) == space["sensors"].shape[0] == len(set(names))
    assert all("." in n for n in names)
    groups = env.unwrapped.sensor_groups
    assert {"ego", "rays"} <= set(groups)
    assert sorted(i for idx in groups.values() for i in idx) == list(range(len(names)))
    obs, info = env.reset(seed=3)
    episode_ends = 0
    for _ in range(40):
        assert space.contains(obs), "observation outside the observation space"
        assert np.all(np.isfinite(obs["sensors"])) and np.abs(obs["sensors"]).max() <= 1.0
        obs, _, terminated, truncated, info = env.step(env.action_space.sample())
        assert set(info["reward_terms"]) == set(envs.REWARD_TERMS)
        if terminated or truncated:
            episode_ends += 1
            assert set(envs.EPISODE_KEYS) <= set(info)
            obs, info = env.reset()
    env.close()


@pytest.mark.parametrize("env_id", IDS)
def test_same_seed_same_first_observation(env_id: str) -> None:
    a, b = gym.make(env_id), gym.make(env_id)
    obs_a, _ = a.reset(seed=11)
    obs_b, _ = b.reset(seed=11)
    np.testing.assert_array_equal(obs_a["camera"], obs_b["camera"])
    np.testing.assert_array_equal(obs_a["sensors"], obs_b["sensors"])
    for _ in range(3):
        step_a = a.step(1)
        step_b = b.step(1)
        np.testing.assert_array_equal(step_a[0]["camera"], step_b[0]["camera"])
    obs_c, _ = b.reset(seed=12)
    assert not np.array_equal(obs_a["sensors"], obs_c["sensors"]) or not np.array_equal(
        obs_a["camera"], obs_c["camera"]
    )


@pytest.mark.parametrize("env_id", IDS)
def test_frames_show_road_and_vehicles(env_id: str) -> None:
    env = gym.make(env_id, road_labels=True)
    obs, info = env.reset(seed=5)
    frame, labels = obs["camera"], info["road_labels"]
    assert frame.std() > 10, "blank camera frame"
    present = set(np.unique(labels).tolist())
    assert {CLASS_ID["road"], CLASS_ID["ego"], CLASS_ID["lane_marking"]} <= present
    # the ego sits where the scenario centres the camera
    ys, xs = np.nonzero(labels == CLASS_ID["ego"])
    cx, cy = env.unwrapped.scenario.centering
    assert abs(xs.mean() - cx * frame.shape[1]) < 3 and abs(ys.mean() - cy * frame.shape[0]) < 3


@pytest.mark.parametrize("env_id", IDS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_label_map_lines_up_with_frame(env_id: str, seed: int) -> None:
    env = gym.make(env_id, road_labels=True, camera_size=(64, 96))
    obs, info = env.reset(seed=seed)
    for _ in range(3):  # a few steps in, so that vehicles have moved
        obs, _, terminated, truncated, info = env.step(env.unwrapped.idle_action)
        if terminated or truncated:
            break
    frame, labels = obs["camera"], info["road_labels"]
    assert labels.shape == frame.shape[:2] and labels.dtype == np.uint8
    assert labels.max() < len(ROAD_CLASSES)
    # each class is drawn in one colour: pixels of different classes never share a colour
    colours = {}
    for cls in np.unique(labels):
        pixels = frame[labels == cls]
        assert (pixels == pixels[0]).all(), f"class {ROAD_CLASSES[cls]} has mixed colours"
        colours[int(cls)] = tuple(pixels[0])
    assert len(set(colours.values())) == len(colours)
    vehicles = labels == CLASS_ID["vehicle"]
    road = labels == CLASS_ID["road"]
    if vehicles.any():
        assert (
            np.abs(frame[vehicles].astype(int).mean(0) - frame[road].astype(int).mean(0)).sum() > 50
        )


def test_vehicle_labels_follow_the_simulator() -> None:
    """Every other vehicle inside the view has labelled pixels at its simulated position."""
    env = gym.make("DriveAttention/Highway-v0", road_labels=True, camera_size=(64, 64))
    _, info = env.reset(seed=4)
    sim, raster = env.unwrapped.sim, env.unwrapped.raster
    origin = raster.origin(sim.vehicle.position)
    seen = 0
    for vehicle in sim.road.vehicles:
        if vehicle is sim.vehicle:
            continue
        x, y = ((vehicle.position - origin) * raster.scaling).astype(int)
        if 2 <= x < 62 and 2 <= y < 62:
            seen += 1
            assert info["road_labels"][y, x] == CLASS_ID["vehicle"], (x, y)
    assert seen > 0


def test_frame_stack_and_continuous_actions() -> None:
    env = gym.make("DriveAttention/Highway-v0", frame_stack=3, action="continuous")
    obs, _ = env.reset(seed=0)
    assert obs["camera"].shape == (64, 64, 9)
    np.testing.assert_array_equal(obs["camera"][..., :3], obs["camera"][..., 6:])
    obs, *_ = env.step(np.array([0.0, 1.0], np.float32))
    assert not np.array_equal(obs["camera"][..., :3], obs["camera"][..., 6:])
    names = env.unwrapped.sensor_names
    assert obs["sensors"][names.index("ego.last_accel")] == 1.0


@pytest.mark.parametrize("env_id", ["DriveAttention/Highway-v0", "DriveAttention/Intersection-v0"])
def test_the_frame_hook_delivers_every_simulation_frame(env_id: str) -> None:
    """``on_frame`` calls its recorder once per simulation frame, after the road moved, the last
    call seeing the state the step returns; ``None`` and the next reset stop it, and an env
    nobody films holds no recorder."""
    env = gym.make(env_id).unwrapped
    env.reset(seed=2)
    assert env._on_frame is None, "an unfilmed env registers nothing"
    sim = env.sim
    frames = sim.config["simulation_frequency"] // sim.config["policy_frequency"]
    seen: list[tuple[int, np.ndarray]] = []
    env.on_frame(lambda: seen.append((sim.steps, np.array(sim.vehicle.position))))
    start = sim.steps
    env.step(env.idle_action)
    assert [k for k, _ in seen] == list(range(start + 1, start + frames + 1))
    positions = [p for _, p in seen]
    assert all(not np.array_equal(a, b) for a, b in itertools.pairwise(positions))
    np.testing.assert_array_equal(positions[-1], env.ego.position)
    env.step(env.idle_action)
    assert len(seen) == 2 * frames
    env.on_frame(None)
    env.step(env.idle_action)
    assert len(seen) == 2 * frames
    env.on_frame(lambda: seen.append((sim.steps, np.zeros(2))))
    env.reset(seed=3)  # a recorder asks each episode anew
    env.step(env.idle_action)
    assert len(seen) == 2 * frames and env._on_frame is None


@pytest.mark.parametrize("env_id", ["DriveAttention/Merge-v0", "DriveAttention/Intersection-v0"])
def test_the_frame_loop_is_highway_envs_own(env_id: str) -> None:
    """The env runs highway-env's frame loop itself (so that ``on_frame`` sees every frame): the
    traffic must move exactly as highway-env's own ``_simulate`` moves it, frame for frame, so a
    highway-env release that changes its loop shows here."""
    ours = gym.make(env_id, action="continuous").unwrapped
    theirs = gym.make(env_id, action="continuous").unwrapped
    ours.reset(seed=5)
    theirs.reset(seed=5)
    sim = theirs.sim
    rng = np.random.default_rng(0)
    for _ in range(12):
        action = rng.uniform(-1, 1, size=2).astype(np.float32)
        ours._advance(action)
        sim.time += 1 / sim.config["policy_frequency"]
        sim._simulate(action)  # highway-env's step loop, as the env ran it before the hook
        if theirs.scenario.respawns_traffic:
            sim._clear_vehicles()
            sim._spawn_vehicle(spawn_probability=sim.config["spawn_probability"])
        assert ours.sim.steps == sim.steps
        mine = [(*v.position, v.heading, v.speed) for v in ours.sim.road.vehicles]
        assert mine == [(*v.position, v.heading, v.speed) for v in sim.road.vehicles]


def test_route_sensors_tell_the_turn() -> None:
    env = gym.make("DriveAttention/Intersection-v0")
    names = env.unwrapped.sensor_names
    turns = set()
    for seed in range(12):
        obs, _ = env.reset(seed=seed)
        onehot = obs["sensors"][
            [names.index(f"route.{k}") for k in ("turn_left", "straight", "turn_right")]
        ]
        assert onehot.sum() == 1.0
        turns.add(int(onehot.argmax()))
    assert turns == {0, 1, 2}


def test_collision_ends_episode_with_penalty() -> None:
    env = gym.make("DriveAttention/Highway-v0", sim={"vehicles_density": 3.0})
    env.reset(seed=0)
    for _ in range(60):  # full speed in one lane: highway traffic is slower, a crash follows
        _, _, terminated, truncated, info = env.step(3)
        if terminated or truncated:
            break
    assert terminated and info["collision"] and not info["success"]
    assert info["reward_terms"]["collision"] < 0


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"camera_szie": (64, 64)}, ["camera_szie", "did you mean 'camera_size'"]),
        ({"camera_size": (8, 8)}, ["camera_size", "16..512"]),
        ({"camera_size": "big"}, ["camera_size", "list"]),
        ({"action": "continous"}, ["action", "did you mean 'continuous'"]),
        ({"frame_stack": 1.5}, ["frame_stack", "integer"]),
        ({"reward_weights": {"colision": 1.0}}, ["colision", "did you mean 'collision'"]),
        ({"sim": {"lanes_cont": 4}}, ["lanes_cont", "did you mean 'lanes_count'"]),
        ({"scenario": "merg"}, ["scenario", "did you mean 'merge'"]),
        ({"policy_frequency": 3}, ["policy_frequency", "divide"]),
    ],
)
def test_bad_config_names_the_key(options: dict, words: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        gym.make("DriveAttention/Highway-v0", **options)
    for word in words:
        assert word in str(err.value)


def test_lead_vehicle_mask_covers_a_vehicle_ahead() -> None:
    env = gym.make("DriveAttention/Highway-v0", road_labels=True, sim={"vehicles_density": 2.0})
    found = 0
    for seed in range(5):
        _, info = env.reset(seed=seed)
        mask, labels = info["lead_vehicle_mask"], info["road_labels"]
        if not mask.any():
            continue
        found += 1
        assert (labels[mask] == CLASS_ID["vehicle"]).mean() > 0.8
        ego_x = np.nonzero(labels == CLASS_ID["ego"])[1].mean()
        assert np.nonzero(mask)[1].mean() > ego_x, "the lead vehicle is ahead (to the right)"
    assert found > 0


def test_merge_ramp_is_drawn_curved() -> None:
    """highway-env's sine lane (a StraightLane subclass) is traced along its curve."""
    from highway_env.road.lane import SineLane

    from drive_attention.envs.camera import road_geometry

    env = gym.make("DriveAttention/Merge-v0")
    env.reset(seed=0)
    lanes = env.unwrapped.sim.road.network.lanes_list()
    sine = [lane for lane in lanes if isinstance(lane, SineLane)]
    assert sine
    surface = road_geometry(sine).surfaces[0]  # left edge forward, right edge back
    left = surface[: len(surface) // 2]
    assert len(left) > 10
    expected = np.array(
        [sine[0].position(s, -sine[0].width / 2) for s in np.linspace(0, sine[0].length, len(left))]
    )
    np.testing.assert_allclose(left, expected, atol=1e-6)


def test_intersection_leaves_other_scenarios_drivers_alone() -> None:
    """highway-env's intersection rewrites its driver class's parameters when spawning traffic;
    the highway scenario in the same process must keep IDM's own values."""
    from highway_env.vehicle.behavior import IDMVehicle

    before = (IDMVehicle.DISTANCE_WANTED, IDMVehicle.COMFORT_ACC_MAX, IDMVehicle.COMFORT_ACC_MIN)
    env = gym.make("DriveAttention/Intersection-v0")
    env.reset(seed=0)
    env.step(env.unwrapped.idle_action)
    assert (
        IDMVehicle.DISTANCE_WANTED,
        IDMVehicle.COMFORT_ACC_MAX,
        IDMVehicle.COMFORT_ACC_MIN,
    ) == before
    assert any(
        type(v).__name__ == "IntersectionIDMVehicle" for v in env.unwrapped.sim.road.vehicles
    )


def test_episode_distance_is_the_distance_travelled() -> None:
    env = gym.make("DriveAttention/Highway-v0")
    env.reset(seed=2)
    start = env.unwrapped.ego.position.copy()
    steps = 0
    while True:
        _, _, terminated, truncated, info = env.step(env.unwrapped.idle_action)
        steps += 1
        if terminated or truncated:
            break
    travelled = env.unwrapped.ego.position - start
    assert info["distance"] == pytest.approx(np.linalg.norm(travelled), rel=0.01)
    # the average speed over the episode: distance over duration (1 decision per second)
    duration = steps / env.unwrapped.config.policy_frequency  # [s]
    assert info["mean_speed"] == pytest.approx(info["distance"] / duration)


def test_an_ego_alone_at_a_steady_speed_earns_and_travels_what_it_should() -> None:
    """The highway emptied but for the ego, set on its lane's centre line at 22 m/s and kept
    there (idle): every step pays alive 0.5 + progress 2 x (22 - 20) / (30 - 20) = 0.9 with the
    weights below, nothing else; the last step (the 5 s episode survived) adds the goal's 1.
    5 s at 22 m/s: 110 m, a mean speed of 22 m/s."""
    weights = {"alive": 0.5, "progress": 2.0}
    env = gym.make("DriveAttention/Highway-v0", duration=5.0, reward_weights=weights)
    env.reset(seed=0)
    ego = env.unwrapped.ego
    env.unwrapped.sim.road.vehicles = [ego]
    s, _ = ego.lane.local_coordinates(ego.position)
    ego.position, ego.heading = ego.lane.position(s, 0.0), ego.lane.heading_at(s)
    ego.speed = ego.target_speed = 22.0  # [m/s]
    rewards, done = [], False
    while not done:
        _, reward, terminated, truncated, info = env.step(env.unwrapped.idle_action)
        rewards.append(reward)
        terms = {k: v for k, v in info["reward_terms"].items() if v}
        done = terminated or truncated
        goal = {"goal": 1.0} if done else {}
        assert terms == pytest.approx({"alive": 0.5, "progress": 0.4, **goal})
    assert rewards == pytest.approx([0.9] * 4 + [1.9])
    assert truncated and info["success"] and not info["collision"] and not info["off_road"]
    assert info["distance"] == pytest.approx(110.0) and info["mean_speed"] == pytest.approx(22.0)
    env.close()


def test_benchmark_env_script_measures_every_scenario(tmp_path) -> None:
    """``scripts/benchmark_env.py`` runs each highway-env id beside stock highway-env (a few
    steps here; the figures themselves come from a full run)."""
    out = tmp_path / "env.json"
    script = Path(__file__).resolve().parents[3] / "scripts" / "benchmark_env.py"
    cmd = [sys.executable, str(script), "--steps", "3", "--rounds", "1", "--json", str(out)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    rows = json.loads(out.read_text())["scenarios"]
    assert set(rows) == set(envs.HIGHWAY_IDS)
    for row in rows.values():
        assert row["steps_per_s"] > 0 and row["stock_steps_per_s"] > 0
        assert row["ratio"] == pytest.approx(
            row["steps_per_s"] / row["stock_steps_per_s"], rel=0.01
        )


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"view_m": 10**400}, ["view_m", "too large"]),
        ({"sim": {"vehicles_count": -1}}, ["sim.vehicles_count", "0..200"]),
        ({"sim": {"vehicles_count": 10**30}}, ["sim.vehicles_count", "0..200"]),
        ({"sim": {"simulation_frequency": 0}}, ["sim.simulation_frequency", "1..100"]),
        ({"sim": {"lanes_count": 2.5}}, ["sim.lanes_count", "integer"]),
        ({"sim": {"vehicles_density": -1.0}}, ["sim.vehicles_density", "positive"]),
        ({"sim": {"observation": {"type": "Kinematics"}}}, ["sim.observation", "camera_size"]),
        ({"sim": {"action": {"type": "ContinuousAction"}}}, ["sim.action", "option action"]),
    ],
)
@pytest.mark.parametrize(
    "env_id", ["DriveAttention/Highway-v0", "DriveAttention/BatchedHighway-v0"]
)
def test_simulator_settings_are_checked_before_anything_is_built(
    env_id: str, options: dict, words: list[str]
) -> None:
    with pytest.raises(ConfigError) as err:
        gym.make(env_id, **options)
    for word in words:
        assert word in str(err.value)


def test_a_cuda_device_that_is_not_there_is_one_line() -> None:
    import torch

    missing = f"cuda:{torch.cuda.device_count() + 3}"
    with pytest.raises(ConfigError, match="is not available here"):
        gym.make("DriveAttention/BatchedHighway-v0", device=missing)
