"""The batched simulator as a Gymnasium vector env (``gymnasium.make_vec``), and
``envs.sensor_names`` (an env's sensor names without making it)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode

from drive_attention import envs
from drive_attention.envs import limits
from drive_attention.envs.batched import BatchedDrive, BatchedDriveVectorEnv
from drive_attention.envs.batched.core import BatchedDriveConfig
from drive_attention.envs.batched.scenarios import import_state
from drive_attention.envs.configuration import ConfigError
from drive_attention.envs.contract import EPISODE_KEYS, REWARD_TERMS
from drive_attention.envs.limits import MAX_BATCHED_ENVS

BATCHED = "DriveAttention/BatchedHighway-v0"


def test_make_vec_returns_the_batched_simulator_with_batched_spaces() -> None:
    venv = gym.make_vec(BATCHED, num_envs=6, camera_size=(32, 48))
    assert isinstance(venv, BatchedDriveVectorEnv) and isinstance(venv, gym.vector.VectorEnv)
    assert venv.num_envs == 6 and venv.core.num_envs == 6  # one core steps all six
    assert venv.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    d = len(venv.sensor_names)
    assert venv.observation_space["camera"].shape == (6, 32, 48, 3)
    assert venv.observation_space["sensors"].shape == (6, d)
    assert venv.single_observation_space["camera"].shape == (32, 48, 3)
    assert venv.action_space.shape == (6,)  # MultiDiscrete: one meta-action per env
    obs, info = venv.reset(seed=3)
    assert obs["camera"].shape == (6, 32, 48, 3) and obs["camera"].dtype == np.uint8
    assert obs["sensors"].shape == (6, d) and obs["sensors"].dtype == np.float32
    assert venv.observation_space.contains(obs)
    assert info["speed"].shape == (6,) and info["_speed"].all()
    obs2, reward, terminated, truncated, info = venv.step(venv.action_space.sample())
    assert venv.observation_space.contains(obs2)
    assert reward.shape == terminated.shape == truncated.shape == (6,)
    assert set(info["reward_terms"]) >= set(REWARD_TERMS)
    again, _ = venv.reset(seed=3)  # one seed fixes the whole batch
    np.testing.assert_array_equal(again["sensors"], obs["sensors"])
    with pytest.raises(ConfigError, match="one random stream"):
        venv.reset(seed=[1, 2, 3, 4, 5, 6])
    venv.close()
    assert venv.closed


def test_each_env_of_the_batch_earns_what_its_own_action_and_state_give(lone_ego) -> None:
    """Three envs from one state, the ego alone on its lane's centre at 30 m/s (the top of the
    20-30 m/s speed range): idle, faster, idle. Every step pays alive 0.5 + progress 2 x 1 with
    the weights below; the env asking for faster (already at its top speed, so nothing
    changes) pays the comfort weight 0.02 for the change at its first step only, not for
    repeating it; the last step (the 5 s episode survived) adds the goal's 1. Each ends with
    150 m at 30 m/s."""
    weights = {"alive": 0.5, "progress": 2.0}
    venv = gym.make_vec(BATCHED, num_envs=3, duration=5.0, reward_weights=weights)
    venv.reset(seed=0)
    core = venv.unwrapped.core
    one = import_state(lone_ego.sim, core.road, core.traffic_spec.n_slots())
    core.restart_from(one.select(torch.zeros(3, dtype=torch.long)))
    actions = np.array([1, 3, 1])  # idle, faster, idle
    expected = [[2.5, 2.48, 2.5]] + [[2.5] * 3] * 3 + [[3.5] * 3]
    for k, want in enumerate(expected):
        _, reward, terminated, truncated, info = venv.step(actions)
        np.testing.assert_allclose(reward, want, atol=1e-5, err_msg=f"step {k + 1}")
        terms = info["final_info"]["reward_terms"] if k == 4 else info["reward_terms"]
        np.testing.assert_allclose(terms["comfort"], [0, -0.02 * (k == 0), 0], atol=1e-6)
        np.testing.assert_allclose(terms["progress"], [2.0] * 3, atol=1e-5)
    assert truncated.all() and not terminated.any()
    final = info["final_info"]
    np.testing.assert_allclose(final["distance"], [150.0] * 3, atol=1e-3)
    np.testing.assert_allclose(final["mean_speed"], [30.0] * 3, atol=1e-4)
    assert final["success"].all() and not final["collision"].any()
    venv.close()


def test_same_step_autoreset_moves_the_last_observation_into_final_obs() -> None:
    venv = gym.make_vec(BATCHED, num_envs=4, camera_size=(32, 32), duration=2)
    venv.reset(seed=0)
    idle = np.full(4, venv.unwrapped.idle_action)
    _, _, terminated, truncated, info = venv.step(idle)
    assert ("final_obs" in info) == (terminated | truncated).any()  # only when one ended
    obs, _, terminated, truncated, info = venv.step(idle)
    done = terminated | truncated
    assert done.any(), "a 2 s episode ends at the second decision"
    assert np.array_equal(info["_final_obs"], done) and np.array_equal(info["_final_info"], done)
    final = info["final_info"]
    for key in EPISODE_KEYS:
        assert np.array_equal(final[f"_{key}"], done)
    for i in np.flatnonzero(done):
        last = info["final_obs"][i]
        assert (
            last["camera"].shape == (32, 32, 3) and last["sensors"].shape == obs["sensors"][i].shape
        )
        # the returned observation is the new episode's first, not the ended one's last
        assert not np.array_equal(last["sensors"], obs["sensors"][i])
    assert all(x is None for x in info["final_obs"][~done])
    # what the core holds now is what step returned: the reset happened inside the step
    _, sensors = venv.unwrapped.core.observe()
    np.testing.assert_array_equal(sensors.numpy(), obs["sensors"])
    assert not info["_reward_terms"][done].any() and info["_reward_terms"][~done].all()
    # the restarted envs run a whole new episode: not done at their next decision
    _, _, terminated, truncated, _ = venv.step(idle)
    assert not (terminated | truncated)[done].any()
    venv.close()


def test_reset_mask_restarts_only_the_masked_envs_and_render_gives_the_frames() -> None:
    venv = gym.make_vec(BATCHED, num_envs=3, camera_size=(32, 32), render_mode="rgb_array")
    obs, _ = venv.reset(seed=1)
    frames = venv.render()
    assert len(frames) == 3
    np.testing.assert_array_equal(np.stack(frames), obs["camera"])
    stepped, *_ = venv.step(np.full(3, 3))  # faster: the state moves on
    mask = np.array([True, False, False])
    fresh, _ = venv.reset(options={"reset_mask": mask})
    np.testing.assert_array_equal(fresh["sensors"][1:], stepped["sensors"][1:])
    assert not np.array_equal(fresh["sensors"][0], stepped["sensors"][0])
    venv.close()


def test_make_vec_of_a_highway_env_id_still_gives_separate_envs() -> None:
    venv = gym.make_vec("DriveAttention/Highway-v0", num_envs=2, camera_size=(32, 32))
    assert isinstance(venv, gym.vector.SyncVectorEnv)
    obs, _ = venv.reset(seed=0)
    assert obs["camera"].shape == (2, 32, 32, 3) and obs["sensors"].shape[0] == 2
    obs, reward, *_ = venv.step(np.array([1, 1]))
    assert reward.shape == (2,)
    venv.close()


# ------------------------------------------------------------------------- sensor names


OPTIONS = [{}, {"n_rays": 4, "action": "continuous"}]


@pytest.mark.parametrize("options", OPTIONS, ids=["default", "4rays-continuous"])
@pytest.mark.parametrize("env_id", [*envs.HIGHWAY_IDS, *envs.BATCHED_IDS])
def test_sensor_names_match_the_made_env(env_id: str, options: dict) -> None:
    env = gym.make(env_id, camera_size=(16, 16), **options)
    assert envs.sensor_names(env_id, **options) == env.unwrapped.sensor_names
    env.close()


@pytest.mark.parametrize("options", [{}, {"n_rays": 4, "n_route_points": 3}])
def test_sensor_names_of_carla_match_the_env_built_without_a_server(options: dict) -> None:
    pytest.importorskip("carla", reason="the carla client is not installed")
    env = gym.make(envs.CARLA_ID, **options)  # builds its spaces; connects only at reset
    assert envs.sensor_names(envs.CARLA_ID, **options) == env.unwrapped.sensor_names
    env.close()


def test_sensor_names_make_no_simulator(monkeypatch: pytest.MonkeyPatch) -> None:
    import drive_attention.envs.batched.core
    import drive_attention.envs.highway.env

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("a simulator was constructed")

    monkeypatch.setattr(drive_attention.envs.highway.env.DriveEnv, "__init__", forbidden)
    monkeypatch.setattr(drive_attention.envs.batched.core.BatchedDrive, "__init__", forbidden)
    names = envs.sensor_names("DriveAttention/BatchedRoundabout-v0", n_rays=8)
    assert len(names) == len(set(names)) and sum(n.startswith("rays.") for n in names) == 16
    assert names[-1].startswith("route.")
    assert envs.sensor_names("DriveAttention/Highway-v0", render_mode="rgb_array")[0] == (
        "ego.speed"
    )


def test_sensor_names_refuse_bad_ids_and_options() -> None:
    with pytest.raises(ConfigError, match="Highway-v0"):
        envs.sensor_names("DriveAttention/Highwy-v0")
    with pytest.raises(ConfigError, match="n_rayz"):
        envs.sensor_names("DriveAttention/Highway-v0", n_rayz=4)
    with pytest.raises(ConfigError, match="n_rays"):
        envs.sensor_names("DriveAttention/BatchedMerge-v0", n_rays=1000)


@pytest.mark.parametrize("seed", [2**64, 2**63])
def test_a_seed_torch_cannot_take_is_refused_in_one_line(seed: int) -> None:
    single = gym.make("DriveAttention/BatchedHighway-v0")
    with pytest.raises(ConfigError, match=r"seed: \d+ is outside 0\.\.9223372036854775807"):
        single.reset(seed=seed)
    single.reset(seed=2**63 - 1)  # the largest it takes
    batch = gym.make_vec("DriveAttention/BatchedHighway-v0", num_envs=2)
    with pytest.raises(ConfigError, match="is outside"):
        batch.reset(seed=seed)


# ---------------------------------------------------------------- the batch's size, bounded
def test_make_vec_refuses_a_million_envs_before_allocating() -> None:
    """10**6 envs of 64x64 frames would allocate tens of GB (the batched observation space
    alone) before failing: refused at once, naming the key and the limit."""
    with pytest.raises(ConfigError) as refused:
        gym.make_vec(BATCHED, num_envs=10**6)
    message = str(refused.value)
    assert message.startswith("num_envs: 1000000") and f"{MAX_BATCHED_ENVS:,}" in message
    assert "\n" not in message


def test_batched_envs_are_refused_beyond_the_machines_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Under the fixed cap, a batch whose frames alone exceed the machine's memory is refused
    by the estimate (here a machine of 1 GiB), in the core and in make_vec alike."""
    monkeypatch.setattr(limits, "machine_memory", lambda: 2**30)
    with pytest.raises(ConfigError, match=r"^num_envs: .*more than this machine's 1\.0 GiB"):
        BatchedDrive(num_envs=100_000)
    with pytest.raises(ConfigError, match=r"^num_envs: .*256x256 frames"):
        gym.make_vec(BATCHED, num_envs=5_000, camera_size=(256, 256))


def test_the_gpu_benchmarks_batch_is_within_the_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    """scripts/bench_gpu.py steps 65,536 envs of 64x64 frames on one GPU (its host: 128 GiB);
    the options of that batch pass (nothing is allocated here)."""
    monkeypatch.setattr(limits, "machine_memory", lambda: 128 * 2**30)
    config = BatchedDriveConfig(num_envs=65_536, camera_size=(64, 64))
    assert config.num_envs == 65_536 <= MAX_BATCHED_ENVS
