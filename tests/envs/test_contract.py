"""The contract's one implementation (envs.contract), its torch twins (envs.batched.contract), the
scenario definitions (envs.scenarios), and what every backend reports through them."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from drive_attention import envs
from drive_attention.envs import ConfigError
from drive_attention.envs.batched import BatchedDrive, BatchedDriveVecEnv
from drive_attention.envs.batched import contract as twin
from drive_attention.envs.batched.scenarios import import_state
from drive_attention.envs.contract import (
    EPISODE_KEYS,
    IDLE,
    REWARD_TERMS,
    ActionError,
    EpisodeStats,
    FrameStack,
    action_change,
    action_vector,
    check_render_mode,
    reward_terms,
    weigh,
)
from drive_attention.envs.scenarios import SCENARIOS, ScenarioConfig, sensor_names, turn_of


# ----------------------------------------------------------------------------- numpy contract
def test_reward_terms_and_weights() -> None:
    calm = dict(speed_range=(0.0, 10.0), lane_width=4.0, change=0.0, goal=False)
    terms = reward_terms(forward_speed=5.0, collision=False, off_road=False, lateral=1.0, **calm)
    assert tuple(terms) == REWARD_TERMS
    assert terms == {"alive": 1.0, "progress": 0.5, "collision": 0.0, "off_road": 0.0,
                     "lane_keeping": -0.5, "comfort": -0.0, "goal": 0.0,
                     "red_light": 0.0}  # fmt: skip
    worst = reward_terms(forward_speed=-3.0, collision=True, off_road=True, lateral=-9.0,
                         **{**calm, "change": 1.0, "goal": True, "red_light": True})  # fmt: skip
    assert worst == {"alive": 0.0, "progress": 0.0, "collision": -1.0, "off_road": -1.0,
                     "lane_keeping": -1.0, "comfort": -1.0, "goal": 1.0,
                     "red_light": -1.0}  # fmt: skip
    weights = {"collision": 20.0, "goal": 3.0}
    weighted = weigh(worst, weights)
    assert weighted["collision"] == -20.0 and weighted["goal"] == 3.0 and weighted["progress"] == 0


def test_action_change() -> None:
    left, idle, faster = (action_vector(a, "discrete") for a in (0, IDLE, 3))
    assert action_change(left, idle, "discrete") == 1.0
    assert action_change(idle, left, "discrete") == 0.0  # going back to idle is free
    assert action_change(faster, faster, "discrete") == 0.0
    a, b = np.array([1.0, -1.0]), np.array([-1.0, 1.0])
    assert action_change(a, b, "continuous") == 1.0
    assert action_change(a, a * 0.5, "continuous") == pytest.approx(0.25)
    assert np.array_equal(action_vector([3.0, -0.5], "continuous"), [1.0, -0.5])


def test_episode_stats_are_displacement_and_average_speed() -> None:
    stats = EpisodeStats(dt=0.5)
    stats.start([0.0, 0.0])
    for position, off_road in (([3.0, 4.0], False), ([3.0, 4.0], True), ([6.0, 8.0], False)):
        stats.record(position, collision=False, off_road=off_road)
    summary = stats.summary(success=True)
    assert tuple(summary) == EPISODE_KEYS
    # 5 m, then standing, then 5 m: 10 m in 1.5 s; off road at some step counts
    assert summary == {"collision": False, "off_road": True, "success": True, "distance": 10.0,
                       "mean_speed": pytest.approx(10.0 / 1.5)}  # fmt: skip
    stats.start([6.0, 8.0])
    fresh = stats.summary(success=False)
    assert fresh["distance"] == 0.0 and fresh["mean_speed"] == 0.0
    assert not fresh["off_road"], "a new episode forgets the last one"
    with pytest.raises(RuntimeError, match="start"):
        EpisodeStats(dt=0.1).record([0.0, 0.0], False, False)


def test_frame_stack() -> None:
    frames = FrameStack(3)
    a, b = np.zeros((2, 2, 3), np.uint8), np.ones((2, 2, 3), np.uint8)
    assert frames.reset(a).shape == (2, 2, 9)
    out = frames.push(b)
    assert out[..., :6].max() == 0 and out[..., 6:].min() == 1  # oldest first
    single = FrameStack(1)
    assert single.reset(a).shape == (2, 2, 3) and single.push(b) is b


def test_every_backend_refuses_a_bad_render_mode_the_same_way() -> None:
    from drive_attention.envs.batched import BatchedDriveEnv
    from drive_attention.envs.highway import DriveEnv

    backends: list[type] = [DriveEnv, BatchedDriveEnv]
    try:
        from drive_attention.envs.carla.env import CarlaDriveEnv
    except ImportError:  # the carla client is an optional extra
        pass
    else:
        backends.append(CarlaDriveEnv)
    for backend in backends:
        with pytest.raises(ConfigError, match="render_mode: 'ansi' is not supported"):
            backend(render_mode="ansi")
    assert check_render_mode("rgb_array") == "rgb_array" and check_render_mode(None) is None


# ----------------------------------------------------------------------------- torch twins
def test_torch_twins_match_the_numpy_contract() -> None:
    rng = np.random.default_rng(0)
    b = 64
    for discrete in (True, False):
        kind = "discrete" if discrete else "continuous"
        if discrete:
            acts, prev = rng.integers(0, 5, b), rng.integers(0, 5, b)
            acts[:8] = prev[:8]  # some repeats
            a = np.stack([action_vector(x, kind) for x in acts])
            p = np.stack([action_vector(x, kind) for x in prev])
        else:
            a, p = rng.uniform(-1, 1, (b, 2)), rng.uniform(-1, 1, (b, 2))
        mine = twin.action_change(torch.tensor(a), torch.tensor(p), discrete).numpy()
        ref = [action_change(a[i], p[i], kind) for i in range(b)]
        np.testing.assert_allclose(mine, ref, atol=1e-6)

    fields = dict(
        forward_speed=rng.uniform(-5, 40, b),
        collision=rng.random(b) < 0.3,
        off_road=rng.random(b) < 0.3,
        lateral=rng.uniform(-4, 4, b),
        lane_width=rng.uniform(3, 5, b),
        change=rng.uniform(0, 1, b),
        goal=rng.random(b) < 0.3,
        red_light=rng.random(b) < 0.3,
    )
    out = twin.reward_terms(
        speed_range=(20.0, 30.0), **{k: torch.tensor(v) for k, v in fields.items()}
    ).numpy()
    for i in range(b):
        ref = reward_terms(speed_range=(20.0, 30.0), **{k: v[i] for k, v in fields.items()})
        np.testing.assert_allclose(out[i], [ref[name] for name in REWARD_TERMS], atol=1e-6)


def test_torch_episode_stats_match_the_numpy_ones() -> None:
    rng = np.random.default_rng(1)
    b, steps = 5, 7
    paths = rng.normal(size=(steps + 1, b, 2)).cumsum(0) * 10.0
    crashes, offs = rng.random((steps, b)) < 0.1, rng.random((steps, b)) < 0.1
    batch = twin.EpisodeStats.zeros(0.2, b, torch.device("cpu"))
    batch.start(torch.tensor(paths[0], dtype=torch.float32))
    singles = [EpisodeStats(dt=0.2) for _ in range(b)]
    for i, s in enumerate(singles):
        s.start(paths[0, i])
    for k in range(steps):
        batch.record(
            torch.tensor(paths[k + 1], dtype=torch.float32),
            torch.tensor(crashes[k]),
            torch.tensor(offs[k]),
        )
        for i, s in enumerate(singles):
            s.record(paths[k + 1, i], crashes[k, i], offs[k, i])
    summary = batch.summary(torch.zeros(b, dtype=torch.bool))
    for i, s in enumerate(singles):
        ref = s.summary(success=False)
        for key in EPISODE_KEYS:
            assert float(summary[key][i]) == pytest.approx(float(ref[key]), rel=1e-5), key


# ----------------------------------------------------------------------------- across backends
@pytest.mark.parametrize("scenario", ["highway", "merge"])
def test_both_embedded_backends_report_the_same_episode_from_the_same_state(
    scenario: str,
) -> None:
    """highway-env and the batched simulator, started from one state and driven with the same
    actions, end their episodes with the same distance and mean speed."""
    ref_id = envs.env_id(scenario)
    ref = gym.make(ref_id, duration=6.0).unwrapped
    ref.reset(seed=3)
    core = BatchedDrive(scenario=scenario, duration=6.0)
    core.restart_from(import_state(ref.sim, core.road, core.traffic_spec.n_slots()))
    actions = [3, 1, 4, 1, 1, 3]  # faster, idle, slower, idle, idle, faster
    for a in actions:
        _, _, terminated, truncated, info = ref.step(a)
        out = core.step(torch.tensor([a]))
        done = bool(out.terminated[0] or out.truncated[0])
        assert done == (terminated or truncated)
        if done:
            break
    assert done, "the episode ends on both backends"
    assert info["distance"] > 50.0
    for key in ("distance", "mean_speed"):
        assert float(out.episode[key][0]) == pytest.approx(info[key], rel=1e-4), key
    for key in ("collision", "off_road", "success"):
        assert bool(out.episode[key][0]) == info[key], key


# ----------------------------------------------------------------------------- scenarios
def test_ids_come_from_the_scenario_definitions() -> None:
    assert set(envs.HIGHWAY_IDS.values()) == {n for n, s in SCENARIOS.items() if s.highway}
    assert set(envs.BATCHED_IDS.values()) == {n for n, s in SCENARIOS.items() if s.batched}
    for env_id in [*envs.HIGHWAY_IDS, *envs.BATCHED_IDS]:
        assert env_id in gym.registry


def test_scenarios_judge_success_and_arrival() -> None:
    yes, no = np.bool_(True), np.bool_(False)
    highway, merge = SCENARIOS["highway"], SCENARIOS["merge"]
    assert highway.success(no, yes, no) and not highway.success(no, yes, yes)
    assert not highway.success(yes, no, no), "the highway has no place to arrive at"
    assert merge.success(yes, no, no) and not merge.success(no, yes, no)
    batch = merge.success(torch.tensor([True, True, False]), torch.tensor([False] * 3),
                          torch.tensor([False, True, False]))  # fmt: skip
    assert batch.tolist() == [True, False, False]

    class Ego:
        x = merge.end_x + 1.0

    assert merge.arrived(Ego())
    intersection, roundabout = SCENARIOS["intersection"], SCENARIOS["roundabout"]
    assert intersection.arrived_at(("il2", "o2", 0), 30.0, "o2")
    assert not intersection.arrived_at(("il2", "o2", 0), 10.0, "o2")  # not far enough out
    assert not intersection.arrived_at(("ir2", "il2", 0), 30.0, "o2")  # not on the exit
    assert roundabout.arrived_at(("nxs", "nxr", 0), 25.0, "nxs")
    assert not roundabout.arrived_at(("nxr", "nxs", 0), 25.0, "nxs")  # towards it, not out
    assert turn_of(0.0, np.pi / 2) == (0.0, 0.0, 1.0)
    assert turn_of(0.0, -np.pi / 2) == (1.0, 0.0, 0.0)
    assert turn_of(0.1, 0.0) == (0.0, 1.0, 0.0)


def test_sensor_layout_follows_the_scenario() -> None:
    for name, spec in SCENARIOS.items():
        names = sensor_names(ScenarioConfig(scenario=name))
        assert [n for n in names if n.startswith("route.")] == [
            f"route.{r}" for r in spec.route_sensors
        ]
        env = gym.make(envs.env_id(name, batched=not spec.highway))
        assert env.unwrapped.sensor_names == names
        obs, _ = env.reset(seed=0)
        assert obs["sensors"].shape == (len(names),)
        env.close()


# ----------------------------------------------------------------------------- bad actions
BAD_DISCRETE = [5, -1, 1.5, float("nan"), "left", [1, 2], None]
BAD_CONTINUOUS = [[float("nan"), 0.0], [0.0, float("inf")], [0.1, 0.2, 0.3], "fast", None]


@pytest.mark.parametrize("env_id", ["DriveAttention/Highway-v0", "DriveAttention/BatchedMerge-v0"])
@pytest.mark.parametrize("kind", ["discrete", "continuous"])
def test_a_bad_action_is_refused_and_the_env_goes_on(env_id: str, kind: str) -> None:
    env = gym.make(env_id, action=kind)
    env.reset(seed=0)
    for bad in BAD_DISCRETE if kind == "discrete" else BAD_CONTINUOUS:
        with pytest.raises(ActionError, match=r"nothing was simulated|no env was stepped"):
            env.step(bad)
    obs, reward, *_ = env.step(env.unwrapped.idle_action)  # still usable
    assert np.isfinite(reward) and np.isfinite(obs["sensors"]).all()
    if kind == "continuous":  # finite values beyond the range are clipped, as SB3 clips
        _, _, _, _, info = env.step(np.array([0.0, 5.0]))
        assert np.isfinite(info["speed"])
    env.close()


def test_a_bad_row_stops_no_env_and_leaves_every_state_as_it_was() -> None:
    venv = BatchedDriveVecEnv(num_envs=4, action="continuous")
    venv.seed(0)
    venv.reset()
    traffic = venv.core.traffic
    x_before = traffic.x.clone()
    actions = np.zeros((4, 2), np.float32)
    actions[2, 0] = np.nan
    with pytest.raises(ActionError, match=r"env\(s\) 2:"):
        venv.step(actions)
    assert torch.equal(venv.core.traffic.x, x_before), "no env moved"
    with pytest.raises(ActionError, match="shape"):
        venv.step(np.zeros((3, 2), np.float32))
    actions[2, 0] = 0.0
    _, rewards, _, _ = venv.step(actions)
    assert np.isfinite(rewards).all()
    assert (venv.core.traffic.x[:, 0] > x_before[:, 0]).all(), "every env drives on"

    discrete = BatchedDriveVecEnv(num_envs=3)
    discrete.reset()
    with pytest.raises(ActionError, match=r"env\(s\) 1:"):
        discrete.step(np.array([1, 7, 1]))
    discrete.step(np.array([1, 3, 1]))


def test_alive_pays_only_where_surviving_is_the_task() -> None:
    from drive_attention.envs.scenarios import SCENARIOS, ScenarioConfig

    for name, spec in SCENARIOS.items():
        weights = ScenarioConfig(scenario=name).weights
        assert weights["alive"] == (0.0 if spec.has_goal else 1.0), name
        assert weights["progress"] == (0.5 if spec.has_goal else 1.0), name
        assert weights["collision"] == (1.0 if spec.has_goal else 3.0), name
    assert ScenarioConfig(scenario="merge", reward_weights={"alive": 0.3}).weights["alive"] == 0.3
