"""The signalised intersection (batched backend): lights on the camera and in the labels, traffic
that obeys them and yields to pedestrians, the ego's infractions in the episode info, and the
attribution that asks whether a policy acts on the light."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import PPO
from torch.distributions import Categorical, kl_divergence

from drive_attention import envs
from drive_attention.agent.evaluate.attention_report import _signals_section
from drive_attention.agent.evaluate.attribution import (
    SITUATIONS,
    Attribution,
    light_test,
    situations,
)
from drive_attention.agent.evaluate.episodes import EpisodeResult, EvalReport, format_table
from drive_attention.agent.policies.base import TrainedPolicy
from drive_attention.envs.batched.core import BatchedDrive
from drive_attention.envs.batched.signals import AMBER, GREEN, RED, STOP_LINE, WALK_CUTOFF
from drive_attention.envs.batched.sim import IDM, PEDESTRIAN
from drive_attention.envs.contract import (
    CLASS_ID,
    DISCRETE_ACTIONS,
    LIGHT_LABELS,
    LIGHT_PALETTE,
    PALETTE,
    public_labels,
)
from drive_attention.envs.scenarios import STOP_SCALE
from drive_attention.models import ExtractorConfig, policy_kwargs

ENV_ID = "DriveAttention/BatchedSignalized-v0"
FASTER, SLOWER = DISCRETE_ACTIONS.index("faster"), DISCRETE_ACTIONS.index("slower")
QUIET = {"spawn_probability": 0.0, "initial_vehicle_count": 1, "pedestrian_probability": 0.0}


def _core(num_envs: int, seed: int = 0, **sim) -> BatchedDrive:
    core = BatchedDrive(scenario="signalized", num_envs=num_envs, sim=sim)
    core.seed(seed)
    core.reset()
    return core


def _hold(core: BatchedDrive, state_of_arm0: int) -> None:
    """Set every env's clock so that arm 0 (the ego's) shows ``state_of_arm0`` now."""
    timing = core.signals.timing
    at = {GREEN: 0.5, AMBER: timing.green + 0.5, RED: timing.half + 0.5}[state_of_arm0]
    core.traffic.clock[:] = at
    assert (core.signals.states(core.traffic.clock)[:, 0] == state_of_arm0).all()


def test_registered_on_the_batched_backend_only() -> None:
    assert ENV_ID in envs.BATCHED_IDS
    assert all("Signalized" not in env_id for env_id in envs.HIGHWAY_IDS)
    with pytest.raises(ValueError, match="only a batched version"):
        envs.env_id("signalized")
    names = envs.sensor_names(ENV_ID)
    assert names[-1] == "route.stop_line" and not any("light" in n for n in names)
    assert envs.reward_weights(ENV_ID)["red_light"] == 1.0
    assert envs.reward_weights("DriveAttention/BatchedIntersection-v0")["red_light"] == 0.0


def test_lights_cycle_by_group_and_pedestrians_walk_beside_the_green() -> None:
    core = _core(1)
    timing = core.signals.timing
    clock = torch.arange(0.0, timing.cycle, 0.25)
    states = core.signals.states(clock)  # (T, 4)
    assert (states[:, 0] == states[:, 2]).all() and (states[:, 1] == states[:, 3]).all()
    assert not ((states[:, 0] != RED) & (states[:, 1] != RED)).any(), "never both moving"
    for state, duration in ((GREEN, timing.green), (AMBER, timing.amber)):
        assert (states[:, 0] == state).float().sum() * 0.25 == pytest.approx(duration)
    all_red = (states == RED).all(1).float().sum() * 0.25
    assert all_red == pytest.approx(2 * timing.all_red)
    walk = core.signals.walk(clock)
    assert walk.any(0).all(), "every crossing gets its turn"
    assert not (walk & ((states != RED) | (states.roll(1, dims=1) != GREEN))).any()
    # nobody starts in the last WALK_CUTOFF seconds of the green beside them
    late = (clock % timing.half) >= timing.green - WALK_CUTOFF
    assert not walk[late].any() and walk[~late].any(1).all()


@pytest.mark.parametrize("state", [GREEN, AMBER, RED])
def test_the_camera_shows_the_lights_state_and_labels_say_traffic_light(state: int) -> None:
    core = _core(2, seed=3)
    _hold(core, state)
    labels = core._draw(core.traffic)  # (B, H, W) with the lights' own ids
    frames = core.camera(labels[:, None]).numpy()  # (B, H, W, 3)
    public = core.road_labels(labels).numpy()
    for i in range(2):
        mine = labels[i].numpy() == LIGHT_LABELS[state]  # the ego's light (and the far one)
        assert mine.sum() >= 4, "the stop bar ahead is in view"
        assert (frames[i][mine] == LIGHT_PALETTE[state]).all()
        assert (public[i][mine] == CLASS_ID["traffic_light"]).all()
        assert public[i].max() < len(envs.ROAD_CLASSES)
        # the other group shows another state, in another colour
        other = np.isin(labels[i].numpy(), [x for x in LIGHT_LABELS if x != LIGHT_LABELS[state]])
        assert not (frames[i][other] == LIGHT_PALETTE[state]).all(-1).any()
    # the Gymnasium view: camera and road labels from the same drawing
    env = gym.make(ENV_ID, road_labels=True)
    obs, info = env.reset(seed=0)
    light = info["road_labels"] == CLASS_ID["traffic_light"]
    assert light.any() and info["light_state"] in ("green", "amber", "red")
    colours = {tuple(c) for c in obs["camera"][light]}
    assert colours <= {tuple(c) for c in LIGHT_PALETTE}
    rest = ~light
    assert np.array_equal(PALETTE[info["road_labels"][rest]], obs["camera"][rest])


def test_public_labels_keep_every_other_class() -> None:
    labels = np.array([[0, 1, 2, 3], [4, 5, LIGHT_LABELS[0], LIGHT_LABELS[2]]], np.uint8)
    out = public_labels(labels)
    assert out.dtype == np.uint8
    assert out.tolist() == [[0, 1, 2, 3], [4, 5, 6, 6]]
    assert public_labels(torch.as_tensor(labels)).tolist() == out.tolist()


def _past_line(core: BatchedDrive, arms: tuple[int, ...]) -> torch.Tensor:
    """(B, N) driven vehicles on an incoming lane of ``arms`` whose front is past its line."""
    t, road, sig = core.traffic, core.road, core.signals
    s, _ = road.coordinates_on(t.lane, t.x, t.y)
    arm = sig.approach_arm[t.lane]
    on = (t.kind == IDM) & torch.isin(arm, torch.tensor(arms))
    front = s + t.length / 2 - (road.length[t.lane] - STOP_LINE)
    return on & (front > 1.0)


def test_traffic_stops_at_red_and_drives_on_green() -> None:
    """Arm 0 and 2 red for 20 s: none of their vehicles passes its stop line, while the
    traffic of the green arms drives into the junction."""
    core = _core(24, seed=1, green_duration=60.0, pedestrian_probability=0.0)
    _hold(core, RED)
    before = _past_line(core, (0, 2))
    entered = torch.zeros(24, dtype=torch.bool)
    t, sig = core.traffic, core.signals
    for _ in range(20):
        core.step(torch.full((24,), SLOWER))  # the ego stays behind its line
        assert not (_past_line(core, (0, 2)) & ~before).any(), "a vehicle ran the red light"
        in_junction = (t.kind == IDM) & (sig.inner_to[t.lane] >= 0)
        entered |= (in_junction & torch.isin(sig.arm_of[t.lane], torch.tensor([1, 3]))).any(1)
        assert (sig.states(t.clock)[:, 0] == RED).all()
        # the first in each queue stands at the line; the line pushes nobody backwards
        s, _ = core.road.coordinates_on(t.lane, t.x, t.y)
        front = core.road.length[t.lane] - STOP_LINE - s - t.length / 2  # [m] to the line
        held = (t.kind == IDM) & torch.isin(sig.approach_arm[t.lane], torch.tensor([0, 2]))
        held &= (front > 0) & (front < 3.0)
        assert (t.speed[held] >= -1e-3).all() and (t.speed[held] < 2.0).all()
    assert int(entered.sum()) >= 12, "the green arms' traffic crosses the junction"


def test_pedestrians_wait_for_their_signal_walk_across_and_traffic_yields() -> None:
    """Frame by frame (a pedestrian hit is taken away on the next frame): waiting pedestrians
    stand until their walk signal, walkers move at their pace, and traffic rarely hits one."""
    core = _core(32, seed=2, pedestrian_probability=1.0, jaywalk_probability=0.0)
    t, sig = core.traffic, core.signals
    seen_walk = seen_wait = hits = 0
    stop = torch.full((32,), SLOWER)  # the ego waits before its line
    for _ in range(25):
        for frame in range(core.frames_per_step):
            was_waiting = (t.kind == PEDESTRIAN) & t.waiting
            x0, y0 = t.x.clone(), t.y.clone()
            walk = sig.walk(t.clock).gather(1, t.target_lane.clamp(0, 3))
            core.sim.step(t, 0.1, stop if frame == 0 else None)
            still = was_waiting & (t.kind == PEDESTRIAN) & t.waiting
            assert (t.x[still] == x0[still]).all() and (t.y[still] == y0[still]).all()
            assert not (was_waiting & ~t.waiting & (t.kind == PEDESTRIAN) & ~walk).any()
            seen_wait += int((still & ~walk).sum())
            walking = (t.kind == PEDESTRIAN) & ~was_waiting
            moved = torch.hypot(t.x - x0, t.y - y0)[walking]
            seen_walk += int((moved > 0).sum())
            assert (moved <= 1.8 * 0.1 + 1e-4).all()  # at most 1.8 m/s
            hits += int(((t.kind == PEDESTRIAN) & t.crashed).sum())
        core.traffic_spec.after_step(t, core.sim)
    assert seen_walk > 500 and seen_wait > 500
    # traffic yields: a few hits remain (a turning car already on the crossing when a
    # pedestrian reaches its lane; about 5 in 128 envs x 30 s)
    assert hits <= 4, f"traffic hit {hits} pedestrians"


def _drive_through(state: int, **options) -> tuple[dict, list[dict]]:
    """One quiet episode (no traffic, no pedestrians) driven at full speed, the ego's light
    held at ``state`` while it approaches; the last info and every step's reward terms."""
    env = gym.make(ENV_ID, sim={**QUIET, "green_duration": 60.0}, **options).unwrapped
    env.reset(seed=4)
    _hold(env.core, state)
    terms = []
    while True:
        _, _, terminated, truncated, info = env.step(FASTER)
        terms.append(info["reward_terms"])
        if terminated or truncated:
            return info, terms


def test_a_red_light_run_is_penalised_reported_and_no_success() -> None:
    info, terms = _drive_through(RED)
    assert info["red_light_runs"] == 1 and not info["pedestrian_collision"]
    assert not info["success"] and not info["collision"]
    assert sum(t["red_light"] for t in terms) == pytest.approx(-1.0)
    assert terms[-1]["red_light"] == -1.0, "the run ends the episode (red_light_terminal)"
    info, terms = _drive_through(RED, red_light_terminal=False)
    assert info["red_light_runs"] == 1 and not info["success"] and terms[-1]["red_light"] == 0
    green, terms = _drive_through(GREEN)
    assert green["red_light_runs"] == 0 and green["success"]
    assert all(t["red_light"] == 0 for t in terms)


def test_a_stop_line_crossed_on_the_last_amber_frame_is_no_red_light_run() -> None:
    """The light during the frame judges the crossing, as it judges the traffic."""
    for offset, runs in ((-0.05, 0), (+0.05, 1)):  # the crossing frame on amber, then on red
        core = _core(1, seed=0, **QUIET)
        t, sig, road = core.traffic, core.signals, core.road
        lane = t.lane[:1, 0]
        s = road.length[lane] - STOP_LINE - t.length[0, 0] / 2 - 0.05  # 5 cm before the line
        t.x[:1, 0], t.y[:1, 0] = road.position(lane, s, torch.zeros(1))
        t.speed[0, 0] = 9.0
        sig.start(t)
        t.clock[:] = sig.timing.green + sig.timing.amber + offset
        state = int(sig.states(t.clock)[0, 0])
        assert state == (AMBER if offset < 0 else RED)
        core.sim.step(t, 0.1)
        assert not t.behind_line[0] and int(t.red_runs[0]) == runs, state


def test_hitting_a_pedestrian_is_a_collision_reported_as_such() -> None:
    core = _core(1, seed=0, **QUIET)
    _hold(core, GREEN)
    t, sig = core.traffic, core.signals
    slot = core.traffic_spec.vehicle_slots()
    x, y = sig.point(torch.tensor(0), torch.tensor(2.0), torch.tensor(10.0))  # on the ego's lane
    t.x[0, slot], t.y[0, slot], t.kind[0, slot] = x, y, PEDESTRIAN
    t.length[0, slot] = t.width[0, slot] = 1.0
    t.waiting[0, slot], t.target_lane[0, slot] = True, 0
    for _ in range(10):
        out = core.step(torch.tensor([FASTER]))
        if out.terminated[0]:
            break
    assert out.terminated[0] and out.episode["collision"][0]
    assert out.episode["pedestrian_collision"][0] and out.episode["red_light_runs"][0] == 0
    assert out.terms[0, envs.REWARD_TERMS.index("collision")] < 0
    # many drives through jaywalkers: a pedestrian hit is always a collision, and happens
    core = _core(32, seed=2, pedestrian_probability=1.0, jaywalk_probability=0.5)
    hits = 0
    for _ in range(20):
        out = core.step(torch.full((32,), FASTER))
        done = out.terminated | out.truncated
        pedestrian = done & out.episode["pedestrian_collision"]
        assert out.episode["collision"][pedestrian].all()
        hits += int(pedestrian.sum())
        core.reset_envs(done)
    assert hits >= 3


def test_situations_come_from_the_info_and_what_is_in_view() -> None:
    labels = np.zeros((8, 8), np.uint8)
    assert situations({"light_state": "red", "pedestrian_ahead": True}, labels) == []
    labels[1, 1] = CLASS_ID["traffic_light"]
    assert situations({"light_state": "red"}, labels) == ["light_red"]
    assert situations({"light_state": "none"}, labels) == []
    labels[2, 2] = CLASS_ID["pedestrian"]
    got = situations({"light_state": "green", "pedestrian_ahead": False}, labels)
    assert got == ["light_green", "pedestrian_elsewhere"] and set(got) <= set(SITUATIONS)
    assert situations({"light_state": "amber", "pedestrian_ahead": True}, labels)[1] == (
        "pedestrian_ahead"
    )


class _ColourProbe:
    """A policy that brakes when its newest frame shows the red light's colour anywhere."""

    def outputs(self, obs):
        red = (obs["camera"][..., -3:] == LIGHT_PALETTE[RED]).all(-1).any((1, 2))
        p_slow = torch.as_tensor(np.where(red, 0.9, 0.1), dtype=torch.float32)
        probs = torch.full((len(red), len(DISCRETE_ACTIONS)), 0.0)
        probs[:, SLOWER] = p_slow
        probs[:, FASTER] = 1 - p_slow
        return Categorical(probs=probs), torch.zeros(len(red))


def test_light_test_finds_a_policy_that_acts_on_the_light() -> None:
    rng = np.random.default_rng(0)
    b, h, w = 6, 32, 32
    labels = np.full((b, h, w), CLASS_ID["road"], np.uint8)
    camera = np.tile(PALETTE[CLASS_ID["road"]], (b, h, w, 1)).astype(np.uint8)
    for i in range(b):
        r, c = rng.integers(0, h - 3), rng.integers(0, w - 4)
        labels[i, r : r + 2, c : c + 4] = CLASS_ID["traffic_light"]
        camera[i, r : r + 2, c : c + 4] = LIGHT_PALETTE[RED]
    obs = {"camera": camera, "sensors": np.zeros((b, 3), np.float32)}
    out = light_test(_ColourProbe(), obs, labels, LIGHT_PALETTE[GREEN], seed=0, stop_action=SLOWER)
    assert out["frames"] == b and out["light_pixels"] == 8
    assert out["as_is"]["stop_probability"] == pytest.approx(0.9)
    for name in ("blanked", "swapped"):
        assert out[name]["stop_probability"] == pytest.approx(0.1)
        assert out[name]["action_changed"] == 1.0 and out[name]["kl"] > 0.5
    assert out["control"]["action_changed"] == 0.0 and out["control"]["kl"] == pytest.approx(0.0)
    assert out["control_blocks"] == 1.0  # every frame had road for a block


def test_light_test_control_blanks_road_like_the_light() -> None:
    """The control blanks as many pixels, of road (where the stop bar lies), never the light."""
    labels = np.full((2, 16, 16), CLASS_ID["off_road"], np.uint8)
    labels[:, :, 6:10] = CLASS_ID["road"]  # a vertical road
    labels[:, 3:5, 6:10] = CLASS_ID["traffic_light"]  # its stop bar: 8 pixels
    camera = PALETTE[labels]
    seen = {}

    class Probe:
        def outputs(self, obs):
            seen.setdefault("cameras", []).append(obs["camera"].copy())
            return Categorical(probs=torch.full((2, 5), 0.2)), torch.zeros(2)

    obs = {"camera": camera, "sensors": np.zeros((2, 1), np.float32)}
    out = light_test(Probe(), obs, labels, LIGHT_PALETTE[GREEN], seed=1)
    control = seen["cameras"][-1]
    changed = (control != camera).any(-1)
    assert changed.sum(axis=(1, 2)).tolist() == [9, 9]  # a 3 x 3 block (8 pixels, rounded)
    assert (labels[changed] == CLASS_ID["road"]).all() and out["control_blocks"] == 1.0


def test_study_aggregates_the_signal_figures_over_seeds() -> None:
    from drive_attention.agent.benchmark.report import _signals_markdown
    from drive_attention.agent.benchmark.stats import _signals, interval

    def run(mass: float, changed: float) -> dict:
        test = {
            "frames": 10,
            "shown_as": "green",
            "as_is": {"stop_probability": 0.8},
            "blanked": {"stop_probability": 0.3, "action_changed": changed, "kl": 1.0},
            "swapped": {"stop_probability": 0.1, "action_changed": changed, "kl": 2.0},
            "control": {"stop_probability": 0.8, "action_changed": 0.0, "kl": 0.0},
        }
        return {
            "situations": {
                "light_red": {
                    "frames": 10,
                    "traffic_light_mass": mass,
                    "traffic_light_share": 0.01,
                    "traffic_light_lift": mass / 0.01,
                }
            },
            "light_test": {"red": test},
        }

    signals = _signals([run(0.05, 0.5), run(0.07, 0.7)])
    red = signals["situations"]["light_red"]
    assert red["frames"] == 20 and red["traffic_light_mass"]["mean"] == pytest.approx(0.06)
    assert red["traffic_light_lift"]["n"] == 2
    test = signals["light_test"]["red"]
    assert test["swapped"]["action_changed"]["mean"] == pytest.approx(0.6)
    assert test["runs"] == 2 and test["frames"] == 20
    cell = {"red_light_rate": interval([0.1, 0.3]), "pedestrian_collision_rate": interval([0, 0])}
    arms = {"attention": {"reference": cell, "signals": signals}}
    refs = {"idle": {"reference": {"red_light_rate": 0.5, "pedestrian_collision_rate": 0.2}}}
    text = "\n".join(_signals_markdown("signalized", arms, refs))
    assert "| attention | 20% ± " in text and "| idle policy | 50% | 20% |" in text
    assert "approaching, light red" in text and "shown green" in text
    assert _signals_markdown("highway", {"attention": {"reference": {}}}, {}) == []


# ----------------------------------------------------------------------------- numbers users read
def _episode(k: int, runs: int, length: int, pedestrian: bool = False) -> EpisodeResult:
    return EpisodeResult(
        episode=k,
        seed=1000 + k,
        episode_return=float(length),
        length=length,
        success=runs == 0 and not pedestrian,
        collision=pedestrian,
        off_road=False,
        mean_speed=6.0,
        distance=6.0 * length,
        red_light_runs=runs,
        pedestrian_collision=pedestrian,
    )


def test_a_red_light_rate_is_the_share_of_episodes_that_ran_a_red_light() -> None:
    """Five episodes of 120 steps in all: one ran two red lights, one ran one, three none. Two
    episodes of five ran a red light: 40% (not 3 runs / 5 episodes = 60%, nor 3 runs / 120
    steps = 2.5%); one of five hit a pedestrian: 20%."""
    episodes = [
        _episode(0, runs=0, length=40),
        _episode(1, runs=2, length=25),
        _episode(2, runs=1, length=10),
        _episode(3, runs=0, length=40),
        _episode(4, runs=0, length=5, pedestrian=True),
    ]
    report = EvalReport("rule", ENV_ID, 1000, episodes)
    summary = report.summary()
    assert summary["red_light_rate"] == 2 / 5
    assert summary["pedestrian_collision_rate"] == 1 / 5
    assert report.to_json()["red_light_rate"] == 2 / 5
    # the printed table: the last two columns are "red light" and "pedestrian hit"
    lines = format_table([report]).splitlines()
    header = next(line for line in lines if line.startswith("policy"))
    assert header.split()[-4:] == ["red", "light", "pedestrian", "hit"]
    row = next(line for line in lines if line.startswith("rule"))
    assert row.split()[-2:] == ["40%", "20%"]


def test_the_light_test_shows_a_red_light_green_and_a_green_light_red() -> None:
    """``evaluate.py --attention``'s light test on constructed frames: a 16 x 32 pixel light,
    red on two frames, green on two others, the rest road. A real (untrained) attention policy,
    its action head scaled up so that the light's colour moves its action distribution. The
    red frames shown green must give the policy exactly what the green frames give it, and the
    other way round: its ``slower`` probability on the hand-painted frame of the other colour,
    and the KL to it."""
    env = gym.make(ENV_ID)
    names = env.unwrapped.sensor_names
    obs, _ = env.reset(seed=0)
    model = PPO(
        "MultiInputPolicy",
        env,
        n_steps=16,
        batch_size=16,
        policy_kwargs=policy_kwargs(ExtractorConfig(), names),
        device="cpu",
        seed=0,
    )
    env.close()
    with torch.no_grad():
        model.policy.action_net.weight.mul_(100.0)
    labels = np.full((64, 64), CLASS_ID["road"], np.uint8)
    labels[8:24, 16:48] = CLASS_ID["traffic_light"]

    def frames(rgb: tuple[int, int, int]) -> list[dict[str, np.ndarray]]:
        camera = np.zeros((64, 64, 3), np.uint8)
        camera[...] = (100, 100, 100)  # highway-env's road grey
        camera[8:24, 16:48] = rgb  # the light, painted by hand
        return [{"camera": camera.copy(), "sensors": obs["sensors"].copy()} for _ in range(2)]

    red, green = (230, 20, 20), (0, 230, 130)  # the camera's red and green lights
    assert LIGHT_PALETTE[RED].tolist() == list(red)
    assert LIGHT_PALETTE[GREEN].tolist() == list(green)

    def policy_on(batch: list[dict[str, np.ndarray]]) -> Categorical:
        stacked = {k: np.stack([o[k] for o in batch]) for k in batch[0]}
        with torch.no_grad():
            tensors, _ = model.policy.obs_to_tensor(stacked)
            return model.policy.get_distribution(tensors).distribution

    shown = {"red": policy_on(frames(red)), "green": policy_on(frames(green))}
    p_slower = {k: float(d.probs[:, SLOWER].mean()) for k, d in shown.items()}
    assert abs(p_slower["red"] - p_slower["green"]) > 0.02, "the colour moves the policy"

    by_situation = {name: Attribution() for name in SITUATIONS}
    by_situation["light_red"].add(np.ones((8, 8)), labels)  # a frame seen with the light red
    light_frames = {
        "red": [(o, labels) for o in frames(red)],
        "green": [(o, labels) for o in frames(green)],
    }
    out = _signals_section(
        TrainedPolicy(model), by_situation, light_frames, 8, 0, lambda line: None
    )
    tests = out["light_test"]
    for state, other in (("red", "green"), ("green", "red")):
        test = tests[state]
        assert test["shown_as"] == other and test["frames"] == 2
        assert test["light_pixels"] == 16 * 32
        assert test["as_is"]["stop_probability"] == pytest.approx(p_slower[state], rel=1e-5)
        swapped = test["swapped"]
        assert swapped["stop_probability"] == pytest.approx(p_slower[other], rel=1e-5)
        kl = float(kl_divergence(shown[state], shown[other]).mean())
        assert kl > 1e-3 and swapped["kl"] == pytest.approx(kl, rel=1e-4)


def test_the_stop_line_sensor_reads_the_distance_from_the_egos_front() -> None:
    """The ego placed by hand on its incoming lane of the south arm. highway-env's intersection
    (4 m lanes, the junction's edge 11 m from its centre, 100 m approaches): that lane runs up
    the frame along x = 2 m, from y = 111 m to the junction's edge at y = 11 m; the stop line is
    5 m out from the edge, at y = 16 m. The ego (5 m long, heading up) with its centre at
    y = 16 + d + 2.5 has its front d metres before the line: the sensor reads d / 50, and 1
    past the line or beyond 50 m."""
    assert STOP_LINE == 5.0 and STOP_SCALE == 50.0  # the documented constants used below
    env = gym.make(ENV_ID, sim=QUIET)
    env.reset(seed=0)
    core = env.unwrapped.core
    t = core.traffic
    assert core.road.indexes[int(t.lane[0, 0])] == ("o0", "ir0", 0), "the ego starts south"
    assert float(t.length[0, 0]) == 5.0
    at = env.unwrapped.sensor_names.index("route.stop_line")
    for before, expected in (
        (0.5, 0.01),
        (12.0, 0.24),
        (37.5, 0.75),
        (60.0, 1.0),  # beyond the sensor's range
        (-1.0, 1.0),  # the front 1 m past the line
    ):
        t.x[0, 0], t.y[0, 0] = 2.0, 16.0 + before + 2.5
        t.heading[0, 0] = -math.pi / 2
        _, sensors = core.observe()
        assert float(sensors[0, at]) == pytest.approx(expected, abs=1e-5), before
    env.close()
