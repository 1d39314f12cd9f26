"""The hand-written reference controller (``scripts/evaluate.py --policy rule``) on real envs."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from drive_attention import envs
from drive_attention.agent.evaluate.rollout import evaluate
from drive_attention.agent.policies.rule import FASTER, IDLE, SLOWER, RulePolicy, rule_policy
from drive_attention.agent.run.config import ConfigError
from drive_attention.envs.contract import LIGHT_PALETTE
from drive_attention.envs.scenarios import ScenarioConfig

ROOT = Path(__file__).resolve().parents[3]
HIGHWAY = "DriveAttention/Highway-v0"
SHORT = {"duration": 10}  # [s] short episodes keep the test quick


def evaluate_main(*argv: object) -> int:
    """``scripts/evaluate.py`` in this process (its ``main``), as a user would call it."""
    spec = importlib.util.spec_from_file_location(
        "evaluate_script", ROOT / "scripts" / "evaluate.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main([str(a) for a in argv])


def sensors(env_id: str = HIGHWAY, **values: float) -> np.ndarray:
    """A sensor vector of ``env_id`` with no vehicle in range and ``values`` (by name) set."""
    names = envs.sensor_names(env_id)
    out = np.zeros(len(names), np.float32)
    out[[i for i, n in enumerate(names) if n.endswith(".distance")]] = 1.0  # no hit
    out[names.index("ego.heading_cos")] = 1.0
    for name, value in values.items():
        out[names.index(name.replace("__", "."))] = value
    return out


def policy(env_id: str = HIGHWAY) -> RulePolicy:
    return rule_policy(env_id, {}, envs.sensor_names(env_id), spaces.Discrete(5))


def test_rule_beats_random_through_evaluate_script(tmp_path: Path) -> None:
    """Same seeded highway episodes: the rule crashes less often than random, and drives."""
    rows = {}
    for name in ("rule", "random"):
        out = tmp_path / f"{name}.json"
        config = tmp_path / "short.yaml"
        config.write_text(f"env:\n  id: {HIGHWAY}\n  kwargs: {json.dumps(SHORT)}\n")
        code = evaluate_main(
            "--policy", name, "--config", config, "--episodes", 10, "--seed", 1000, "--json", out
        )
        assert code == 0
        rows[name] = json.loads(out.read_text())
    rule = rows["rule"]
    assert rule["policy"] == "rule" and len(rule["episodes"]) == 10
    crashes = {k: sum(e["collision"] for e in v["episodes"]) for k, v in rows.items()}
    assert crashes["rule"] <= 1 and crashes["random"] >= 4, crashes  # measured: 0 and 7
    assert rule["mean_speed"] >= 19.0, rule["mean_speed"]  # it drives, at traffic speed


def test_rule_with_only_env_id(tmp_path: Path) -> None:
    """``--policy rule --env ID --json OUT`` needs no run and no config."""
    out = tmp_path / "rule.json"
    code = evaluate_main(
        "--policy", "rule", "--env", HIGHWAY, "--episodes", 1, "--seed", 3, "--json", out
    )
    assert code == 0 and json.loads(out.read_text())["policy"] == "rule"


def test_rule_refuses_other_envs_before_making_them(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "rule.json"
    for env_id, says in (
        ("DriveAttention/Carla-v0", "has no rule"),  # refused without asking for a server
        ("evilmod:Env-v0", "evilmod"),  # refused before anything is imported
    ):
        code = evaluate_main("--policy", "rule", "--env", env_id, "--episodes", 1, "--json", out)
        err = capsys.readouterr().err
        assert code == 2 and says in err and "Traceback" not in err, err
    assert not out.exists()


def test_rule_is_deterministic() -> None:
    env = gym.make("DriveAttention/Roundabout-v0", **SHORT)
    try:
        rule = rule_policy(
            "DriveAttention/Roundabout-v0", {}, env.unwrapped.sensor_names, env.action_space
        )
        first, second = (evaluate(env, rule, 2, 40).episodes for _ in range(2))
    finally:
        env.close()
    assert [e.row() for e in first] == [e.row() for e in second]


def test_brakes_for_a_closing_vehicle_ahead_and_speeds_up_on_a_clear_road() -> None:
    rule = policy()
    clear = sensors(ego__speed=20 / 40)
    assert rule.act({"sensors": clear}) == FASTER
    # ray 0 points along the road (+x): a vehicle 15 m ahead closing at 5 m/s
    ahead = sensors(ego__speed=25 / 40, rays__00__distance=15 / 60, rays__00__closing_speed=5 / 30)
    assert rule.act({"sensors": ahead}) == SLOWER
    # the same vehicle behind (ray 8 points back) does not make it brake
    behind = sensors(ego__speed=25 / 40, rays__08__distance=15 / 60, rays__08__closing_speed=5 / 30)
    assert rule.act({"sensors": behind}) == IDLE


def test_yields_to_a_crossing_vehicle_at_the_intersection() -> None:
    env_id = "DriveAttention/Intersection-v0"
    rule = policy(env_id)
    clear = sensors(env_id, ego__speed=0.0)
    assert rule.act({"sensors": clear}) == FASTER
    # 20 m to the side, closing at 8 m/s: 2.5 s to contact
    crossing = sensors(
        env_id, ego__speed=0.0, rays__04__distance=20 / 60, rays__04__closing_speed=8 / 30
    )
    assert rule.act({"sensors": crossing}) == SLOWER
    # a vehicle standing 4 m behind does not hold it up
    waiting = sensors(env_id, ego__speed=0.0, rays__12__distance=4 / 60)
    assert rule.act({"sensors": waiting}) == FASTER


def test_with_the_object_list_yields_only_to_vehicles_whose_path_crosses_its_own() -> None:
    """At the intersection with ``n_objects``: a vehicle coming from the side towards the ego's
    path holds it up; the same vehicle passing in the next lane, or one behind, does not."""
    env_id, n = "DriveAttention/Intersection-v0", 4
    names = envs.sensor_names(env_id, n_objects=n)
    rule = rule_policy(env_id, {"n_objects": n}, names, spaces.Discrete(5))
    lateral = envs.SCENARIOS["intersection"].object_lateral_scale(60.0)  # [m] the ray range

    def with_vehicle(x: float, y: float, vx: float, vy: float, speed: float = 0.0) -> np.ndarray:
        out = np.zeros(len(names), np.float32)
        out[[i for i, k in enumerate(names) if k.endswith(".distance")]] = 1.0
        values = {
            "ego.heading_cos": 1.0,
            "ego.speed": speed / 40,
            "route.straight": 1.0,
            "route.ahead_x": 1.0,  # the route runs straight ahead
            "objects.00.present": 1.0,
            "objects.00.x": x / 60,
            "objects.00.y": y / lateral,
            "objects.00.vx": vx / 30,
            "objects.00.vy": vy / 30,
        }
        for key, value in values.items():
            out[names.index(key)] = value
        return out

    # 16 m to the left (y < 0) and 12 m ahead, crossing at 8 m/s: it reaches the ego's path
    # after 2 s, when the ego (going at 6 m/s) is there too: they meet within the 3 s horizon
    crossing = with_vehicle(x=12.0, y=-16.0, vx=0.0, vy=8.0)
    assert rule.act({"sensors": crossing}) == SLOWER
    # over EDGE_SCALE the same vehicle 16 m to the side would have read as 12 m: the lateral
    # scale of the route scenarios is the ray range, so it reads as 16 m
    assert lateral == 60.0
    oncoming = with_vehicle(x=25.0, y=-4.5, vx=-8.0, vy=0.0)  # in the next lane, passing by
    assert rule.act({"sensors": oncoming}) == FASTER
    behind = with_vehicle(x=-8.0, y=0.0, vx=3.0, vy=0.0)  # catching up from behind
    assert rule.act({"sensors": behind}) == FASTER
    # a vehicle standing in the ego's path, 15 m ahead, while the ego drives at 6 m/s
    standing = with_vehicle(x=15.0, y=0.0, vx=-6.0, vy=0.0, speed=6.0)
    assert rule.act({"sensors": standing}) == SLOWER


def test_object_list_reads_crossing_traffic_beyond_the_road_edge_scale() -> None:
    """On the intersection the object list's ``y`` is the simulator's lateral offset over the ray
    range, not clipped at 12 m: crossing traffic further to the side still reads where it is
    (the batched backend is held to the same values by the parity test in
    tests/envs/batched/test_batched.py)."""
    from drive_attention.envs.scenarios import EDGE_SCALE

    assert envs.SCENARIOS["highway"].object_lateral_scale(60.0) == EDGE_SCALE
    env = gym.make("DriveAttention/Intersection-v0", n_objects=1, camera_size=(32, 32))
    try:
        names = list(env.unwrapped.sensor_names)
        y_at, present_at = names.index("objects.00.y"), names.index("objects.00.present")
        far = 0
        for seed in range(4):
            obs, _ = env.reset(seed=seed)
            for _ in range(5):
                ego = env.unwrapped.ego
                others = [v for v in env.unwrapped.sim.road.vehicles if v is not ego]
                offsets = np.array([v.position for v in others]) - ego.position
                dist = np.hypot(offsets[:, 0], offsets[:, 1])
                if obs["sensors"][present_at] > 0.5 and dist.min() <= 60.0:
                    dx, dy = offsets[np.argmin(dist)]
                    c, s = np.cos(ego.heading), np.sin(ego.heading)
                    true_y = -s * dx + c * dy  # [m] to the ego's right
                    assert obs["sensors"][y_at] * 60.0 == pytest.approx(true_y, abs=0.05)
                    far += abs(true_y) > EDGE_SCALE + 1.0
                obs, *_ = env.step(1)
        assert far, "no nearest vehicle more than 13 m to the side: the check saw no crossing"
    finally:
        env.close()


ALL_IDS = [*envs.HIGHWAY_IDS, *envs.BATCHED_IDS]
STRAIGHT_IDS = [i for i in ALL_IDS if "Highway" in i or "Merge" in i]


@pytest.mark.parametrize(
    ("env_id", "action"),
    [(i, "discrete") for i in ALL_IDS] + [(i, "continuous") for i in STRAIGHT_IDS],
)
def test_drives_every_scenario_id(env_id: str, action: str) -> None:
    """A few decisions of the rule on every id: actions in the action space, and at no step a
    collision, leaving the road or a red light run (read from each step's reward terms: the
    episode's outcome keys come only at its end, which these few steps do not reach)."""
    kwargs = {"action": action, "camera_size": (16, 16)}
    env = gym.make(env_id, **kwargs)
    try:
        rule = rule_policy(env_id, kwargs, env.unwrapped.sensor_names, env.action_space)
        obs, _ = env.reset(seed=0)
        for _ in range(3):
            act = rule.act(obs)
            assert env.action_space.contains(np.asarray(act, dtype=env.action_space.dtype))
            obs, _, terminated, truncated, info = env.step(act)
            penalties = {k: info["reward_terms"][k] for k in ("collision", "off_road", "red_light")}
            assert penalties == {"collision": 0, "off_road": 0, "red_light": 0}, penalties
            if terminated or truncated:
                break
    finally:
        env.close()


def test_continuous_steers_back_to_a_lane_centre() -> None:
    """[steer, accel]: pushed off the lane centre, the rule steers back onto one and stays on."""
    env = gym.make(HIGHWAY, action="continuous", camera_size=(16, 16), **SHORT)
    names = env.unwrapped.sensor_names
    lateral, heading = names.index("ego.lateral_offset"), names.index("ego.heading_sin")
    try:
        rule = rule_policy(HIGHWAY, {}, names, env.action_space)
        obs, _ = env.reset(seed=1000)
        for _ in range(3):  # 0.6 s steering right
            obs, *_ = env.step(np.array([0.1, 0.0], np.float32))
        assert abs(obs["sensors"][lateral]) > 0.3  # off centre by 30% of a lane width
        for _ in range(20):  # 4 s of the rule
            obs, _, terminated, truncated, info = env.step(rule.act(obs))
            assert not terminated and not truncated, info
    finally:
        env.close()
    assert abs(obs["sensors"][lateral]) < 0.02 and abs(obs["sensors"][heading]) < 0.01
    assert obs["sensors"][names.index("ego.speed")] * 40 > 10.0  # [m/s] still driving


def test_refuses_what_it_cannot_drive() -> None:
    names = envs.sensor_names(HIGHWAY)
    with pytest.raises(ConfigError, match="neither the 5 meta-actions nor"):
        RulePolicy("highway", names, spaces.MultiDiscrete([3, 3]))
    continuous = spaces.Box(-1.0, 1.0, (2,), np.float32)
    with pytest.raises(ConfigError, match=r"set env\.kwargs\.action=discrete"):
        rule_policy("DriveAttention/Roundabout-v0", {}, names, continuous)
    with pytest.raises(ConfigError, match="Carla-v0 has no rule"):
        rule_policy("DriveAttention/Carla-v0", {}, names, spaces.Discrete(5))
    with pytest.raises(ConfigError, match=r"lack ego\.speed"):
        RulePolicy("highway", [n for n in names if n != "ego.speed"], spaces.Discrete(5))


def test_brakes_on_the_closing_speed_of_the_vehicle_ahead_not_on_its_own_speed() -> None:
    """Highway (min_gap 12 m, ttc 5 s, headway 1.5 s, tolerance 2 m/s, cruise 25 m/s). The
    time-to-contact test divides the gap by how fast the vehicle ahead closes in, not by the
    ego's own speed; the two cases below differ between those readings."""
    rule = policy()
    # at 20 m/s, a vehicle 50 m ahead at 19 m/s (closing at 1 m/s): 50 s to contact, so no
    # braking; the headway speed (50 - 12) / 1.5 = 25.3 m/s caps at 25, 5 m/s above: faster.
    # (On its own speed, 50 m < 5 s x 20 m/s would brake.)
    follow = sensors(ego__speed=20 / 40, rays__00__distance=50 / 60, rays__00__closing_speed=1 / 30)
    assert rule.act({"sensors": follow}) == FASTER
    # at 3 m/s, a vehicle 16 m ahead coming the other way at 3 m/s (closing at 6 m/s): 2.7 s
    # to contact, under 5 s: brake. (On its own speed, 16 m > 5 s x 3 m/s, no braking, and
    # 3 m/s is within 2 m/s of the headway speed (16 - 12) / 1.5 = 2.7 m/s: idle.)
    oncoming = sensors(
        ego__speed=3 / 40, rays__00__distance=16 / 60, rays__00__closing_speed=6 / 30
    )
    assert rule.act({"sensors": oncoming}) == SLOWER


SIGNALIZED = "DriveAttention/BatchedSignalized-v0"


def _camera_with_stop_bar(state: str | None, rows: slice) -> np.ndarray:
    """A 64 px road frame of the signalised intersection's camera (1.33 px/m, the ego's centre
    at column 32, row 41.6) with the stop bar across the ego's lane (columns 30-34) on
    ``rows``, in the colour of the light ``state`` (no bar with None)."""
    camera = np.zeros((64, 64, 3), np.uint8)
    camera[...] = (100, 100, 100)  # road grey
    colours = {"green": (0, 230, 130), "amber": (255, 190, 0), "red": (230, 20, 20)}
    if state is not None:
        camera[rows, 30:35] = colours[state]
    return camera


def test_stops_for_an_amber_light_only_when_it_can_still_stop() -> None:
    """The signalised rule (intersection caution: cruise 4.5 m/s, tolerance 1.5 m/s) at 5 m/s,
    nothing in range. Stopping from 5 m/s at 3 m/s^2 takes 25 / 6 = 4.2 m. The stop line 8 m
    ahead of its front (the bar 10.5-12 m ahead of its centre, rows 26-27): it can stop, so it
    brakes for amber. The line 3 m ahead (the bar 5.5-7 m ahead, rows 33-34): it cannot, so it
    goes on at its speed (idle), while a red light there still makes it brake. Green, or no bar
    in view: idle."""
    camera = ScenarioConfig(scenario="signalized").camera_geometry
    assert (camera.px_per_m, camera.ego_px) == (4 / 3, (32.0, 41.6))  # as drawn above
    assert [tuple(c) for c in LIGHT_PALETTE] == [(0, 230, 130), (255, 190, 0), (230, 20, 20)]
    assert envs.options(SIGNALIZED, {}).n_objects == 0  # the rays-only yielding rule
    rule = policy(SIGNALIZED)

    def act(state: str | None, line: float, rows: slice) -> int:
        values = {"ego__speed": 5 / 40, "route__stop_line": line / 50}
        return rule.act(
            {"sensors": sensors(SIGNALIZED, **values), "camera": _camera_with_stop_bar(state, rows)}
        )

    far, near = slice(26, 28), slice(33, 35)
    assert act("amber", 8.0, far) == SLOWER
    assert act("amber", 3.0, near) == IDLE
    assert act("red", 3.0, near) == SLOWER
    assert act("red", 8.0, far) == SLOWER
    assert act("green", 8.0, far) == IDLE
    assert act(None, 8.0, far) == IDLE
