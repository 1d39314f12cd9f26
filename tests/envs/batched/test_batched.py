"""The batched backend keeps the contract and agrees with highway-env."""

from __future__ import annotations

import itertools

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from drive_attention import envs
from drive_attention.envs import BATCHED_IDS, ConfigError
from drive_attention.envs.batched.env import BatchedDrive, BatchedDriveVecEnv
from drive_attention.envs.batched.scenarios import export_positions, import_state, slot_order
from drive_attention.envs.batched.sim import EGO, IDM, NeighbourSearch
from drive_attention.envs.contract import CLASS_ID, PALETTE

# the scenarios with a highway-env version to compare with (the signalised one has none)
REFERENCE = {
    name: envs.env_id(name) for name in BATCHED_IDS.values() if envs.SCENARIOS[name].highway
}
SCENARIOS = list(REFERENCE)


def _reference(scenario: str, **options):
    return gym.make(REFERENCE[scenario], **options).unwrapped


def test_ids_registered_with_batched_in_the_name() -> None:
    for env_id in BATCHED_IDS:
        assert env_id in gym.registry and "Batched" in env_id


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("action", ["discrete", "continuous"])
def test_contract_matches_highway_env_backend(scenario: str, action: str) -> None:
    options = dict(action=action, camera_size=(48, 80), n_rays=8)
    env = gym.make(f"DriveAttention/Batched{scenario.title()}-v0", **options).unwrapped
    ref = _reference(scenario, **options)
    assert env.sensor_names == ref.sensor_names
    assert env.sensor_groups == ref.sensor_groups
    assert env.observation_space == ref.observation_space
    assert env.action_space == ref.action_space
    assert np.array_equal(np.asarray(env.idle_action), np.asarray(ref.idle_action))
    obs, info = env.reset(seed=1)
    for _ in range(12):
        assert env.observation_space.contains(obs)
        assert np.all(np.isfinite(obs["sensors"])) and np.abs(obs["sensors"]).max() <= 1.0
        obs, _, terminated, truncated, info = env.step(env.action_space.sample())
        assert list(info["reward_terms"]) == list(envs.REWARD_TERMS)
        if terminated or truncated:
            assert set(envs.EPISODE_KEYS) <= set(info)
            obs, info = env.reset()


def test_a_lone_ego_at_top_speed_earns_and_travels_what_it_should(lone_ego) -> None:
    """The ego alone on the highway, on its lane's centre line at 30 m/s (the top of the
    speed range, 20-30 m/s), kept there (idle): every step pays alive 0.5 + progress 2 x 1 with
    the weights below, nothing else; the last step (the 5 s episode survived) adds the goal's
    1. 5 s at 30 m/s: 150 m, a mean speed of 30 m/s."""
    env = gym.make(
        "DriveAttention/BatchedHighway-v0",
        duration=5.0,
        reward_weights={"alive": 0.5, "progress": 2.0},
    ).unwrapped
    env.reset(seed=0)
    core = env.core
    core.restart_from(import_state(lone_ego.sim, core.road, core.traffic_spec.n_slots()))
    rewards, done = [], False
    while not done:
        _, reward, terminated, truncated, info = env.step(env.idle_action)
        rewards.append(reward)
        done = terminated or truncated
        goal = {"goal": 1.0} if done else {}
        terms = {k: v for k, v in info["reward_terms"].items() if v}
        assert terms == pytest.approx({"alive": 0.5, "progress": 2.0, **goal}, abs=1e-5)
    assert rewards == pytest.approx([2.5] * 4 + [3.5], abs=1e-5)
    assert truncated and info["success"] and not info["collision"] and not info["off_road"]
    assert info["distance"] == pytest.approx(150.0, abs=1e-3)
    assert info["mean_speed"] == pytest.approx(30.0, abs=1e-4)


@pytest.mark.parametrize("env_id", list(BATCHED_IDS))
@pytest.mark.parametrize("action", ["discrete", "continuous"])
def test_env_checkers(env_id: str, action: str) -> None:
    env = gym.make(env_id, action=action)
    gym_check_env(env.unwrapped, skip_render_check=True)
    sb3_check_env(env.unwrapped, warn=False)


def test_options_are_validated() -> None:
    with pytest.raises(ConfigError, match="not supported by the batched roundabout"):
        BatchedDrive(scenario="roundabout", sim={"lanes_count": 2})
    with pytest.raises(ConfigError, match="spawn_probability"):
        BatchedDrive(scenario="intersection", sim={"spawn_probability": 1.5})
    with pytest.raises(ConfigError, match="lanes_count"):
        BatchedDrive(sim={"lane_count": 4})
    with pytest.raises(ConfigError, match="num_envs"):
        BatchedDrive(num_envs=0)


def test_vec_env_auto_resets_with_terminal_observation() -> None:
    venv = BatchedDriveVecEnv(num_envs=6, duration=3.0, road_labels=True)
    venv.seed(0)
    obs = venv.reset()
    assert obs["camera"].shape == (6, 64, 64, 3) and obs["camera"].dtype == np.uint8
    assert obs["sensors"].dtype == np.float32
    for _ in range(3):
        obs, rewards, dones, infos = venv.step(np.full(6, venv.idle_action))
        assert rewards.shape == (6,) and dones.shape == (6,)
        for info in infos:
            assert set(info["reward_terms"]) == set(envs.REWARD_TERMS)
            assert info["road_labels"].shape == (64, 64)
    assert dones.all(), "a 3 s episode at 1 Hz ends on the third step"
    for info in infos:
        assert set(envs.EPISODE_KEYS) <= set(info)
        assert info["TimeLimit.truncated"] or info["collision"] or info["off_road"]
        assert info["terminal_observation"]["camera"].shape == (64, 64, 3)
    assert np.array_equal(venv.core.stats.steps.numpy(), np.zeros(6)), "finished envs start anew"
    # the returned observation is the new episode's first frame
    assert np.array_equal(obs["camera"], venv.core.camera(venv.core.labels).numpy())


def test_frame_stack_and_camera_size() -> None:
    venv = BatchedDriveVecEnv(num_envs=2, camera_size=(32, 48), frame_stack=3)
    obs = venv.reset()
    assert obs["camera"].shape == (2, 32, 48, 9)
    obs, *_ = venv.step(np.ones(2, np.int64))
    assert not np.array_equal(obs["camera"][..., :3], obs["camera"][..., 6:])


def test_determinism_under_seed() -> None:
    def rollout(seed: int) -> list[np.ndarray]:
        venv = BatchedDriveVecEnv(num_envs=4, action="continuous")
        venv.seed(seed)
        out = [venv.reset()["sensors"]]
        rng = np.random.default_rng(0)
        for _ in range(5):
            out.append(venv.step(rng.uniform(-1, 1, (4, 2)).astype(np.float32))[0]["sensors"])
        return out

    a, b, c = rollout(3), rollout(3), rollout(4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])


def test_the_frame_hook_delivers_every_simulation_frame() -> None:
    """As the highway-env backend's: one call per simulation frame of a step, none after
    ``on_frame(None)`` or a reset, and none registered unless asked."""
    core = BatchedDrive(num_envs=2)
    core.reset()
    assert core._on_frame is None
    seen: list[np.ndarray] = []
    core.on_frame(lambda: seen.append(core.traffic.x[:, 0].clone().numpy()))
    idle = torch.ones(2, dtype=torch.long)
    core.step(idle)
    assert len(seen) == core.frames_per_step
    assert all((b > a).all() for a, b in itertools.pairwise(seen)), "the egos drive on"
    np.testing.assert_array_equal(seen[-1], core.traffic.x[:, 0].numpy())
    core.on_frame(None)
    core.step(idle)
    core.on_frame(lambda: seen.append(np.zeros(2)))
    core.reset()
    core.step(idle)
    assert len(seen) == core.frames_per_step and core._on_frame is None


def _imported(scenario: str, seed: int, steps: int = 0, **options):
    if scenario == "intersection":  # arrivals are random draws on each side: compare without
        options.setdefault("sim", {"spawn_probability": 0.0})
    ref = _reference(scenario, **options)
    obs, info = ref.reset(seed=seed)
    for _ in range(steps):
        obs, _, _, _, info = ref.step(ref.idle_action)
    core = BatchedDrive(scenario=scenario, **options)
    n = core.traffic_spec.n_slots()
    core.restart_from(import_state(ref.sim, core.road, n, ref.destination))
    return ref, core, obs, info


def _positions(core: BatchedDrive) -> np.ndarray:
    """(M, 2) positions [m] of the vehicles in environment 0's occupied slots, in slot order."""
    t = core.traffic
    return torch.stack([t.x[0], t.y[0]], -1)[t.alive[0]].numpy()


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_raster_agrees_with_envs_raster(scenario: str) -> None:
    """The highway-env backend's frame, pixel for pixel, for the same state, along a drive
    (merge: past the ramp)."""
    ramp_seen = False
    for seed, size in [(0, (64, 64)), (1, (48, 80)), (2, (96, 96))]:
        ref, core, _, info = _imported(scenario, seed, road_labels=True, camera_size=size)
        for step in range(8):
            core.traffic = import_state(ref.sim, core.road, core.traffic_spec.n_slots())
            labels = core.raster.draw(core.traffic)[0].numpy()
            agree = (labels == info["road_labels"]).mean()
            # the same frame: the same road layer (per frame on the highway, from one RoadMap
            # elsewhere) and cv2's own fill rule for every box, cut by the frame edge or not
            assert agree == 1.0, f"{scenario} {size} step {step}: only {agree:.4f} agree"
            for name in ("road", "lane_marking", "vehicle", "ego"):
                mine = (labels == CLASS_ID[name]).any()
                assert mine == (info["road_labels"] == CLASS_ID[name]).any(), name
            ramp_seen |= 150.0 < float(ref.ego.position[0]) < 250.0  # [m] the sine lane
            _, _, terminated, truncated, info = ref.step(ref.idle_action)
            if terminated or truncated:
                break
    assert scenario != "merge" or ramp_seen, "no frame showed the merge ramp's curve"


def test_road_labels_consistent_with_frames() -> None:
    env = gym.make("DriveAttention/BatchedMerge-v0", road_labels=True).unwrapped
    obs, info = env.reset(seed=0)
    for _ in range(3):
        assert np.array_equal(PALETTE[info["road_labels"]], obs["camera"])
        obs, _, _, _, info = env.step(env.idle_action)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_sensors_agree_with_highway_env_backend(scenario: str) -> None:
    ref, core, obs, _ = _imported(scenario, seed=5, steps=2, n_objects=6)
    core.last_action[:] = torch.as_tensor(ref._last_action)
    sensors = core.sensors(core.traffic, core.last_action)[0].numpy()
    np.testing.assert_allclose(sensors, obs["sensors"], atol=2e-3)
    present = [i for i, n in enumerate(ref.sensor_names) if n.endswith(".present")]
    assert len(present) == 6 and obs["sensors"][present].sum() >= 1  # someone is near


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("action", ["discrete", "continuous"])
def test_trajectories_agree_with_highway_env(scenario: str, action: str) -> None:
    """IDM/MOBIL traffic and the ego from one initial state: position error after 3 s."""
    errors = []
    for seed in (1, 2, 3):
        ref, core, _, _ = _imported(scenario, seed, action=action)
        rng = np.random.default_rng(seed)
        for _ in range(3):
            if action == "discrete":
                a = int(rng.choice([0, 1, 2, 3]))
                act = torch.tensor([a])
            else:
                a = rng.uniform(-0.3, 0.3, 2).astype(np.float32)
                act = torch.as_tensor(a)[None]
            ref.step(a)
            core.step(act)
        if ref.ego.crashed:  # highway-env's post-crash impact push is not modelled
            continue
        errors.append(np.linalg.norm(_positions(core) - export_positions(ref.sim), axis=1).max())
    assert errors and max(errors) < 0.05, f"position errors {errors} [m]"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_same_start_episodes_match_highway_env_with_its_collision_rule(scenario: str) -> None:
    """From highway-env's initial state, a whole episode of the batched simulator lasts exactly
    as long, and earns the same return, as on highway-env with its predictive collision rule
    (modelled by the batched simulator; see paired_transfer)."""
    from drive_attention.envs.validation import paired_transfer

    def faster(obs: dict) -> np.ndarray:  # a function of the observation only (here constant)
        return np.full(len(obs["sensors"]), 3)

    out = paired_transfer(faster, scenario, episodes=4, seed=7, camera_size=(32, 32))
    same, ref = out["batched_same_start"], out["highway_env"]
    assert same["lengths"] == ref["lengths"]
    assert same["mean_return"] == pytest.approx(ref["mean_return"], abs=0.05)
    assert same["collision_rate"] == ref["collision_rate"]


def test_collision_and_off_road_detected() -> None:
    core = BatchedDrive(num_envs=2, action="continuous")
    core.reset()
    t = core.traffic
    # env 0: put vehicle 1 right on the ego; env 1: steer hard off the road
    t.x[0, 1], t.y[0, 1] = t.x[0, 0] + 3.0, t.y[0, 0] + 0.5
    t.speed[0, 1] = 0.0
    out = core.step(torch.tensor([[0.0, 0.0], [0.0, 0.0]]))
    assert bool(out.terminated[0]) and bool(out.episode["collision"][0])
    assert out.terms[0, envs.REWARD_TERMS.index("collision")] < 0
    assert out.terms[0, envs.REWARD_TERMS.index("alive")] == 0
    for _ in range(6):
        out = core.step(torch.tensor([[1.0, 1.0], [1.0, 1.0]]))
        if bool(out.episode["off_road"][1]):
            break
    assert bool(out.episode["off_road"][1]) and bool(out.terminated[1])
    assert (core.traffic.kind[:, 0] == EGO).all() and (core.traffic.kind[:, 1:] == IDM).all()


def test_traffic_statistics_resemble_highway_env() -> None:
    """Spawned traffic: same speed range, lane spread and spacing as create_random."""
    core = BatchedDrive(num_envs=64)
    core.reset()
    t = core.traffic
    speed = t.speed[:, 1:]
    assert speed.min() >= 21.0 and speed.max() <= 24.0
    gaps = (t.x[:, 2:] - t.x[:, 1:-1]).flatten()
    expected = (12 + 22.5) * np.exp(-15 / 40)  # [m] mean create_random offset
    assert abs(float(gaps.mean()) - expected) < 1.0
    assert set(t.lane.flatten().tolist()) == {0, 1, 2}


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_neighbour_search_matches_highway_env(scenario: str) -> None:
    """Leader and follower of every vehicle on every lane, as highway-env's
    Road.neighbour_vehicles finds them, from states imported along highway-env episodes."""
    for seed in range(2):
        ref = gym.make(REFERENCE[scenario]).unwrapped
        ref.reset(seed=seed)
        core = BatchedDrive(scenario=scenario)
        for step in range(4):
            t = import_state(ref.sim, core.road, core.traffic_spec.n_slots())
            vehicles = slot_order(ref.sim)
            slot_of = {id(v): i for i, v in enumerate(vehicles)}
            s, lat = core.road.coordinates(t.x, t.y)
            on = core.road.on_lane(s, lat, margin=1.0) & t.alive[..., None]
            lanes = len(core.road)
            slots = [i for i, v in enumerate(vehicles) if v in ref.sim.road.vehicles]
            env = torch.zeros(len(slots) * lanes, dtype=torch.long)
            slot = torch.tensor(slots).repeat_interleave(lanes)
            lane = torch.arange(lanes).repeat(len(slots))
            expected = []
            for i in slots:
                for index in core.road.indexes:
                    pair = ref.sim.road.neighbour_vehicles(vehicles[i], index)
                    expected.append([-1 if v is None else slot_of[id(v)] for v in pair])
            # query by query, and (roads along +x) from one sort by x
            for by_x in {False, core.road.along_x}:
                front, rear = NeighbourSearch(t, s, on, by_x=by_x)(env, slot, lane)
                found = torch.stack([front, rear], 1)
                assert torch.equal(found, torch.tensor(expected)), (step, by_x)
            _, _, terminated, truncated, _ = ref.step(1)
            if terminated or truncated:
                break
