"""The hand-written reference controller (``scripts/evaluate.py --policy rule``) on real envs."""

from __future__ import annotations

import importlib.util
import json
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from drive_attention import envs
from drive_attention.agent.evaluate.rollout import evaluate
from drive_attention.agent.policies.rule import (
    FASTER,
    IDLE,
    SLOWER,
    Caution,
    RulePolicy,
    check_has_rule,
    rule_policy,
)
from drive_attention.agent.run.config import ConfigError
from drive_attention.envs.contract import LIGHT_PALETTE
from drive_attention.envs.observation import CameraGeometry
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


# ---------------------------------------------------------------- settings and refusals
def test_caution_needs_a_headway_only_on_the_straight_roads() -> None:
    """A road-frame rule keeps a time gap to the vehicle ahead, so it needs one (> 0 s, however
    short); a curved-road rule has none and needs none."""
    with pytest.raises(ConfigError, match=r"road-frame rule needs headway > 0 s, got 0"):
        Caution(cruise=25.0, min_gap=12.0, ttc=5.0, headway=0.0)
    assert Caution(cruise=25.0, min_gap=12.0, ttc=5.0, headway=0.5).headway == 0.5
    assert not Caution(cruise=8.0, min_gap=5.0, ttc=2.5, road_frame=False).road_frame


def test_refusals_name_what_it_drives_and_what_is_missing() -> None:
    names = envs.sensor_names(HIGHWAY)
    with pytest.raises(
        ConfigError,
        match=r"no rule for the scenario 'carla'; it drives "
        r"highway, merge, roundabout, intersection, signalized \(the highway-env and batched",
    ):
        RulePolicy("carla", names, spaces.Discrete(5))
    with pytest.raises(ConfigError, match=r"use env\.kwargs\.action discrete or continuous$"):
        RulePolicy("highway", names, spaces.Discrete(3))
    lacking = [n for n in names if n not in ("ego.speed", "ego.heading_sin")]
    with pytest.raises(
        ConfigError,
        match=r"lack ego\.speed, ego\.heading_sin; the rule reads the embedded backends' ego "
        r"and ray sensors$",
    ):
        RulePolicy("highway", lacking, spaces.Discrete(5))
    with pytest.raises(ConfigError, match=r"lack rays\.\*; the rule"):
        RulePolicy("highway", [n for n in names if not n.startswith("rays.")], spaces.Discrete(5))
    with pytest.raises(
        ConfigError, match=r"\(DriveAttention/Highway-v0, DriveAttention/Merge-v0, DriveAtt"
    ):
        check_has_rule("DriveAttention/Carla-v0")


# ---------------------------------------------------------------- highway: the rays
def test_reads_each_ray_at_its_world_direction() -> None:
    """16 rays, ray ``k`` at ``k x 22.5`` degrees from +x (y to the right). At 25 m/s (the cruise
    speed: idle on a clear road) a hit brakes only where it lies ahead (x > 0) within 2.5 m of
    the ego's path: 5 m along ray 1 (22.5 deg) is 4.6 m ahead and 1.9 m to the side, in the
    lane; 2.4 m along ray 3 (67.5 deg) is 0.9 m ahead and 2.2 m to the side, in the lane; 5 m
    along ray 2 (45 deg: 3.5 m to the side) or ray 4 (90 deg: beside it) is in the next lane."""
    rule = policy()

    def act(ray: int, metres: float) -> int:
        values = {"ego__speed": 25 / 40, f"rays__{ray:02d}__distance": metres / 60}
        return rule.act({"sensors": sensors(**values)})

    assert rule.act({"sensors": sensors(ego__speed=25 / 40)}) == IDLE
    assert act(1, 5.0) == SLOWER
    assert act(3, 2.4) == SLOWER
    assert act(2, 5.0) == IDLE
    assert act(4, 5.0) == IDLE
    assert act(12, 5.0) == IDLE  # 270 deg: beside it on the left


def test_follows_at_the_headway_speed_behind_a_vehicle_ahead() -> None:
    """Highway: a vehicle 30 m ahead, not closing in: the wanted speed keeps 1.5 s behind the
    12 m gap, (30 - 12) / 1.5 = 12 m/s, so at 20 m/s it slows, at 12 m/s it holds, at 8 m/s it
    speeds up."""
    rule = policy()

    def act(speed: float) -> int:
        return rule.act({"sensors": sensors(ego__speed=speed / 40, rays__00__distance=30 / 60)})

    assert act(20.0) == SLOWER
    assert act(12.0) == IDLE
    assert act(8.0) == FASTER


def test_brakes_on_the_closing_speed_of_the_nearest_vehicle_ahead() -> None:
    """64 rays (5.6 deg apart): a vehicle straight ahead 40 m away (ray 0) keeps its distance; a
    nearer one 20 m away on ray 1 (2 m to the side, in the lane) closes in at 5 m/s: 4 s to
    contact, under the 5 s: brake. At 5 m/s the headway speed (20 - 12) / 1.5 = 5.3 m/s would
    otherwise hold it (idle), as it does when the nearer vehicle does not close in."""
    names = envs.sensor_names(HIGHWAY, n_rays=64)
    rule = rule_policy(HIGHWAY, {"n_rays": 64}, names, spaces.Discrete(5))
    out = np.zeros(len(names), np.float32)
    out[[i for i, n in enumerate(names) if n.endswith(".distance")]] = 1.0
    values = {
        "ego.heading_cos": 1.0,
        "ego.speed": 5 / 40,
        "rays.00.distance": 40 / 60,
        "rays.01.distance": 20 / 60,
        "rays.01.closing_speed": 5 / 30,
    }
    for key, value in values.items():
        out[names.index(key)] = value
    assert rule.act({"sensors": out}) == SLOWER
    out[names.index("rays.01.closing_speed")] = 0.0
    assert rule.act({"sensors": out}) == IDLE


def test_ray_range_scales_the_distances() -> None:
    """With ``ray_range`` 30 m a distance of 0.5 is 15 m (not 30 m as with the default 60 m):
    the headway speed is (15 - 12) / 1.5 = 2 m/s, so at 12 m/s it slows. A clear road (every
    ray at 1.0, no hit) leaves the cruise speed: at 20 m/s it speeds up."""
    names = envs.sensor_names(HIGHWAY)
    rule = rule_policy(HIGHWAY, {"ray_range": 30.0}, names, spaces.Discrete(5))
    assert rule.ray_range == 30.0
    near = sensors(ego__speed=12 / 40, rays__00__distance=0.5)
    assert rule.act({"sensors": near}) == SLOWER
    assert rule.act({"sensors": sensors(ego__speed=20 / 40)}) == FASTER


def test_highway_thresholds_are_strict() -> None:
    """Exactly at each threshold the rule does not brake. ``ray_range`` 64 m makes the distances
    exact (multiples of 1/64 of it), speeds are multiples of 40/2**n m/s. Highway: min_gap
    12 m, ttc 5 s, headway 1.5 s, tolerance 2 m/s."""
    rule = rule_policy(HIGHWAY, {"ray_range": 64.0}, envs.sensor_names(HIGHWAY), spaces.Discrete(5))

    def act(speed: float, ray: int = 0, metres: float = 64.0, closing: float = 0.0) -> int:
        values = {
            "ego__speed": speed / 40,
            f"rays__{ray:02d}__distance": metres / 64,
            f"rays__{ray:02d}__closing_speed": closing / 30,
        }
        return rule.act({"sensors": sensors(**values)})

    # exactly min_gap (12 m) ahead, standing: the headway speed is 0, it stands: idle
    assert act(0.0, metres=12.0) == IDLE
    assert act(0.0, metres=11.0) == SLOWER
    # 18.75 m ahead closing at 3.75 m/s: exactly 5 s to contact; at 5 m/s, within 2 m/s of
    # the headway speed (18.75 - 12) / 1.5 = 4.5 m/s: idle
    assert act(5.0, metres=18.75, closing=3.75) == IDLE
    assert act(5.0, metres=18.5, closing=3.75) == SLOWER
    # 24 m ahead: the headway speed is 8 m/s; at 10 m/s, exactly the tolerance above it: idle
    assert act(10.0, metres=24.0) == IDLE
    assert act(10.0, metres=23.0) == SLOWER
    # 2.5 m along ray 4 (90 deg): exactly IN_LANE to the side, in the next lane
    assert act(25.0, ray=4, metres=2.5) == IDLE
    assert act(25.0, ray=4, metres=2.25) == SLOWER


def test_no_hit_at_the_ray_range_is_no_vehicle() -> None:
    """A ray without a hit reads its full range: no vehicle there, even where the range is short
    enough (32 m) that a vehicle there would lower the wanted speed to (32 - 12) / 1.5 = 13.3
    m/s. A real hit just inside it, at 31 m, does."""
    rule = rule_policy(HIGHWAY, {"ray_range": 32.0}, envs.sensor_names(HIGHWAY), spaces.Discrete(5))
    assert rule.act({"sensors": sensors(ego__speed=20 / 40)}) == FASTER
    assert rule.act({"sensors": sensors(ego__speed=20 / 40, rays__00__distance=31 / 32)}) == (
        SLOWER  # (31 - 12) / 1.5 = 12.7 m/s wanted, 20 m/s is more than 2 m/s above it
    )


def test_a_heading_sensor_a_rounding_step_past_one_reads_as_a_quarter_turn() -> None:
    """float32 rounding can put ``ego.heading_sin`` just past +-1; the rule clips it (no math
    domain error) and steers back at full lock: pointing 90 deg right (sin 1) it steers left
    (the pure pursuit below)."""
    names = envs.sensor_names(HIGHWAY)
    box = spaces.Box(-1.0, 1.0, (2,), np.float32)
    rule = rule_policy(HIGHWAY, {"action": "continuous"}, names, box)
    discrete = policy()
    past = float(np.nextafter(np.float32(1.0), np.float32(2.0)))
    for sign in (1.0, -1.0):
        obs = {"sensors": sensors(ego__heading_sin=sign * past, ego__heading_cos=0.0)}
        assert discrete.act(obs) == FASTER  # standing on a clear road
        # standing, the lane centre 6 m ahead lies (0, -6 sign) m off: atan(5 / 3) > pi / 4
        assert rule.act(obs)[0] == -sign


# ---------------------------------------------------------------- [steer, accel]
def continuous_rule() -> RulePolicy:
    box = spaces.Box(-1.0, 1.0, (2,), np.float32)
    return rule_policy(HIGHWAY, {"action": "continuous"}, envs.sensor_names(HIGHWAY), box)


def test_continuous_speed_control() -> None:
    """accel = gain x (wanted - speed) / 5 m/s^2, clipped to [-1, 1]: gain 0.5 /s towards the
    wanted speed, 2 /s towards a stop when braking."""
    rule = continuous_rule()

    def accel(**values: float) -> float:
        act = rule.act({"sensors": sensors(**values)})
        assert act.dtype == np.float32 and act.shape == (2,)
        return float(act[1])

    # clear road: 0.5 x (25 - 20) / 5 = 0.5; from a stop 0.5 x 25 / 5 = 2.5, clipped to 1
    assert accel(ego__speed=20 / 40) == pytest.approx(0.5, abs=1e-6)
    assert accel(ego__speed=0.0) == 1.0
    # a vehicle 11 m ahead (under min_gap) at 1.25 m/s: brake to a stop, 2 x -1.25 / 5 = -0.5
    assert accel(ego__speed=1.25 / 40, rays__00__distance=11 / 60) == pytest.approx(-0.5, abs=1e-6)
    # the same at 10 m/s: 2 x -10 / 5 = -4, clipped to -1
    assert accel(ego__speed=10 / 40, rays__00__distance=11 / 60) == -1.0


def test_continuous_steering_pursues_the_lane_centre() -> None:
    """Pure pursuit: the lane centre ``max(6 m, speed x 1 s)`` ahead along the lane, seen in the
    ego frame, gives the curvature 2 y / (x^2 + y^2); steer = atan(5 m x curvature) / (pi / 4).
    Worked by hand:

    - 1 m right of the centre (offset 0.25 lane), straight, standing: the point is (6, -1) m,
      curvature -2 / 37, steer atan(-0.2703) / 0.7854 = -0.3361 (left, back to the centre);
    - the same at 10 m/s: (10, -1) m, curvature -2 / 101, steer -0.1257;
    - 1 m right and heading 5.74 deg right (sin 0.1): the point (6 cos - 1 sin, -6 sin -
      1 cos) = (5.870, -1.595) m, curvature -0.08622, steer -0.5182;
    - centred, heading 90 deg left (sin -1): the point (0, 6) m, curvature 1/3, atan(1.667) /
      0.7854 = 1.31, clipped to 1."""
    rule = continuous_rule()

    def steer(**values: float) -> float:
        return float(rule.act({"sensors": sensors(**values)})[0])

    assert steer(ego__lateral_offset=0.25) == pytest.approx(-0.3361, abs=1e-3)
    assert steer(ego__lateral_offset=0.25, ego__speed=10 / 40) == pytest.approx(-0.1257, abs=1e-3)
    tilted = steer(ego__lateral_offset=0.25, ego__heading_sin=0.1, ego__heading_cos=0.995)
    assert tilted == pytest.approx(-0.5182, abs=1e-3)
    assert steer(ego__heading_sin=-1.0, ego__heading_cos=0.0) == 1.0
    assert steer(ego__heading_sin=1.0, ego__heading_cos=0.0) == -1.0
    assert steer() == 0.0  # centred and straight


# ---------------------------------------------------------------- curved roads: rays only
ROUNDABOUT = "DriveAttention/Roundabout-v0"


def test_rays_only_yielding_thresholds() -> None:
    """Roundabout (cruise 8 m/s, tolerance 3 m/s, min_gap 5 m, ttc 2.5 s), ``ray_range`` 64 m
    for exact distances. At 5 m/s, exactly the tolerance below the cruise speed, it holds its
    speed; below that it speeds up. A vehicle closing in at 0.94 m/s (2.3 m in 2.5 s) makes it
    yield under 5 m away, not at exactly 5 m."""
    rule = rule_policy(
        ROUNDABOUT, {"ray_range": 64.0}, envs.sensor_names(ROUNDABOUT), spaces.Discrete(5)
    )

    def act(speed: float, metres: float = 64.0, closing: float = 0.0) -> int:
        values = {
            "ego__speed": speed / 40,
            "rays__06__distance": metres / 64,
            "rays__06__closing_speed": closing / 30,
        }
        return rule.act({"sensors": sensors(ROUNDABOUT, **values)})

    assert act(5.0) == IDLE
    assert act(4.375) == FASTER
    assert act(7.5, metres=5.0, closing=0.9375) == IDLE
    assert act(7.5, metres=4.75, closing=0.9375) == SLOWER
    assert act(7.5, metres=4.75, closing=0.0) == IDLE  # not closing in: no yielding


# ---------------------------------------------------------------- curved roads: object list
INTERSECTION = "DriveAttention/Intersection-v0"


def objects_rule(ray_range: float = 60.0) -> RulePolicy:
    names = envs.sensor_names(INTERSECTION, n_objects=4)
    kwargs = {"n_objects": 4, "ray_range": ray_range}
    return rule_policy(INTERSECTION, kwargs, names, spaces.Discrete(5))


def with_vehicle(
    x: float,
    y: float,
    vx: float = 0.0,
    vy: float = 0.0,
    speed: float = 0.0,
    ahead: tuple[float, float] = (1.0, 0.0),
    scale: float = 60.0,
    present: float = 1.0,
) -> dict[str, np.ndarray]:
    """An intersection observation with one tracked vehicle at (x, y) [m] moving at (vx, vy)
    [m/s] relative to the ego (ego frame, y to the right), the ego at ``speed`` and the route's
    look-ahead point at ``ahead`` (normalised); ``scale``: the ray range (x and y over it)."""
    names = envs.sensor_names(INTERSECTION, n_objects=4)
    out = np.zeros(len(names), np.float32)
    out[[i for i, k in enumerate(names) if k.endswith(".distance")]] = 1.0
    values = {
        "ego.heading_cos": 1.0,
        "ego.speed": speed / 40,
        "route.ahead_x": ahead[0],
        "route.ahead_y": ahead[1],
        "objects.00.present": present,
        "objects.00.x": x / scale,
        "objects.00.y": y / scale,
        "objects.00.vx": vx / 30,
        "objects.00.vy": vy / 30,
    }
    for key, value in values.items():
        out[names.index(key)] = value
    return {"sensors": out}


def test_object_list_goes_along_the_route_look_ahead() -> None:
    """The ego is assumed to head for the route's look-ahead point (normalised, any length): a
    point straight to its right (0, 0.5) means a right turn. Standing, it plans to go at 6 m/s,
    so a vehicle standing 12 m to its right (1 m ahead) is reached in 2 s, within the 3 s
    horizon: yield. The same vehicle 12 m to its left is not on that path: go (speed 0, 9 m/s
    wanted: faster)."""
    rule = objects_rule()
    right, left = (0.0, 0.5), (0.0, -0.5)
    assert rule.act(with_vehicle(x=1.0, y=12.0, ahead=right)) == SLOWER
    assert rule.act(with_vehicle(x=1.0, y=-12.0, ahead=right)) == FASTER
    assert rule.act(with_vehicle(x=1.0, y=-12.0, ahead=left)) == SLOWER


def test_object_list_without_a_look_ahead_point_goes_straight_on() -> None:
    """No look-ahead point (0, 0): the ego is assumed to go straight ahead, 6 m/s x 3 s = 18 m
    within the horizon. A vehicle standing 12 m ahead is reached (yield); one 24 m ahead is
    still 6 m off after 3 s, beyond the 4 m conflict distance (go)."""
    rule = objects_rule()
    assert rule.act(with_vehicle(x=12.0, y=0.0, ahead=(0.0, 0.0))) == SLOWER
    assert rule.act(with_vehicle(x=24.0, y=0.0, ahead=(0.0, 0.0))) == FASTER
    assert rule.act(with_vehicle(x=24.0, y=0.0)) == FASTER  # the same with the route ahead


def test_object_list_cruises_at_the_gap_cruise_speed() -> None:
    """Intersection with the object list, nothing tracked: the wanted speed is ``gap_cruise``
    9 m/s (not the rays-only 4.5 m/s); tolerance 1.5 m/s. At 5 m/s: faster. At 7.5 m/s, exactly
    the tolerance below: idle."""
    rule = objects_rule()
    assert rule.act(with_vehicle(x=10.0, y=0.0, speed=5.0, present=0.0)) == FASTER
    assert rule.act(with_vehicle(x=10.0, y=0.0, speed=7.5, present=0.0)) == IDLE


def test_object_list_velocities_are_relative_to_the_ego() -> None:
    """The tracked velocities are relative: a vehicle 10 m ahead with relative velocity 0 drives
    at the ego's 8 m/s and the gap stays 10 m (no yield; idle at 8 m/s against 9 wanted). It
    raises no floating-point warning for the zero relative motion either."""
    rule = objects_rule()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert rule.act(with_vehicle(x=10.0, y=0.0, speed=8.0)) == IDLE


def test_object_list_conflict_is_judged_from_now_on() -> None:
    """At 10 m/s (plans 10 m/s, idle against 9 wanted), a vehicle ahead pulling away at a
    relative 3.75 m/s: 3 m ahead it is already in the ego's way (yield); 6 m ahead it is not,
    and never will be (it was closer only in the past). A vehicle 5 m ahead closing in slowly
    (0.47 m/s) comes within 4 m in the 3 s horizon (5 - 1.4 = 3.6 m): yield."""
    rule = objects_rule()
    assert rule.act(with_vehicle(x=3.0, y=0.0, vx=3.75, speed=10.0)) == SLOWER
    assert rule.act(with_vehicle(x=6.0, y=0.0, vx=3.75, speed=10.0)) == IDLE
    assert rule.act(with_vehicle(x=5.0, y=0.0, vx=-0.46875, speed=10.0)) == SLOWER


def test_object_list_thresholds_are_strict() -> None:
    """``ray_range`` 64 m (the lateral scale too) for exact positions. Exactly CONFLICT (4 m)
    away is not in the way; exactly BEHIND (2 m behind) is left to the vehicle behind."""
    rule = objects_rule(64.0)
    # 4 m ahead, pulling away: the closest is now, exactly 4 m (idle at 10 m/s)
    assert rule.act(with_vehicle(x=4.0, y=0.0, vx=3.75, speed=10.0, scale=64.0)) == IDLE
    assert rule.act(with_vehicle(x=3.75, y=0.0, vx=3.75, speed=10.0, scale=64.0)) == SLOWER
    # catching up fast from exactly 2 m behind: not the ego's to avoid (faster from a stop)
    assert rule.act(with_vehicle(x=-2.0, y=0.0, vx=15.0, scale=64.0)) == FASTER
    assert rule.act(with_vehicle(x=-1.75, y=0.0, vx=15.0, scale=64.0)) == SLOWER


# ---------------------------------------------------------------- signalised: the light
def signal_act(rule: RulePolicy, camera: np.ndarray, line: float, speed: float = 5.0) -> int:
    """The signalised rule at ``speed`` [m/s], nothing in range (idle at 5 m/s against 4.5
    wanted), the stop line ``line`` [m] ahead (``route.stop_line`` = line / 50; 1 past it)."""
    values = {"ego__speed": speed / 40, "route__stop_line": line / 50}
    return rule.act({"sensors": sensors(SIGNALIZED, **values), "camera": camera})


def test_reads_the_light_only_in_the_ego_column_and_within_reach() -> None:
    """64 px camera (1.33 px/m, the ego's centre at row 42, column 32). The bar is looked for in
    columns 30-34 (the ego's +-2), in the rows up to (line + 4 m) above the ego's: a one pixel
    wide red bar 8 m ahead stops it in any of those columns, not in column 29 or 35. With the
    line 3 m ahead a bar on row 31 (11 px = 8.3 m ahead, beyond 7 m) is not the ego's light;
    on row 33 it is. With the line 28 m ahead (within the 30 m reach) the band runs up to the
    frame's top row (42 px = 31.5 m ahead), and a bar there stops it."""
    rule = policy(SIGNALIZED)
    for column in range(29, 36):
        camera = _camera_with_stop_bar(None, slice(0, 0))
        camera[26:28, column] = (230, 20, 20)
        expected = SLOWER if 30 <= column <= 34 else IDLE
        assert signal_act(rule, camera, 8.0) == expected, column
    for row, expected in ((31, IDLE), (33, SLOWER)):
        assert signal_act(rule, _camera_with_stop_bar("red", slice(row, row + 1)), 3.0) == expected
    assert signal_act(rule, _camera_with_stop_bar("red", slice(0, 1)), 28.0) == SLOWER


def test_reads_the_newest_of_the_stacked_frames() -> None:
    """With ``frame_stack`` 2 the camera holds two frames along the channels, oldest first: the
    light is read from the newest one only."""
    rule = policy(SIGNALIZED)
    red, clear = _camera_with_stop_bar("red", slice(26, 28)), _camera_with_stop_bar(None, slice(0))
    assert signal_act(rule, np.concatenate([red, clear], -1), 8.0) == IDLE
    assert signal_act(rule, np.concatenate([clear, red], -1), 8.0) == SLOWER


def test_does_not_stop_for_a_light_once_past_its_line() -> None:
    """``route.stop_line`` 1: past the line. A red bar in view ahead is then not the ego's to
    stop for (idle at 5 m/s)."""
    rule = policy(SIGNALIZED)
    camera = _camera_with_stop_bar("red", slice(33, 35))
    values = {"ego__speed": 5 / 40, "route__stop_line": 1.0}
    assert rule.act({"sensors": sensors(SIGNALIZED, **values), "camera": camera}) == IDLE
    assert signal_act(rule, camera, 3.0) == SLOWER  # the same bar before the line


def test_reads_the_light_with_the_env_camera_geometry() -> None:
    """``rule_policy`` passes the env's camera: at 32 x 32 px (0.67 px/m, the ego at row 21,
    column 16) a red bar 3.75 m ahead (rows 18-19, columns 14-18) stops it; with the default
    64 px geometry it would look below the frame."""
    kwargs = {"camera_size": (32, 32)}
    rule = rule_policy(SIGNALIZED, kwargs, envs.sensor_names(SIGNALIZED), spaces.Discrete(5))
    assert rule.scenario == "signalized"
    assert rule.ego_pixel == (21, 16) and rule.scaling == pytest.approx(2 / 3)
    camera = np.full((32, 32, 3), 100, np.uint8)
    camera[18:20, 14:19] = (230, 20, 20)
    assert signal_act(rule, camera, 3.0) == SLOWER
    camera[18:20, 14:19] = (0, 230, 130)  # green
    assert signal_act(rule, camera, 3.0) == IDLE


def test_reads_the_light_with_the_ego_at_the_frame_edge() -> None:
    """A camera with the ego's centre on column 0: the band is columns 0-2 (clipped at the
    edge), so a bar in column 0 is its light."""
    geometry = CameraGeometry(64, 64, 4 / 3, (0.0, 0.65))
    names = envs.sensor_names(SIGNALIZED)
    rule = RulePolicy("signalized", names, spaces.Discrete(5), camera=geometry)
    camera = _camera_with_stop_bar(None, slice(0))
    camera[26:28, 0] = (230, 20, 20)
    assert signal_act(rule, camera, 8.0) == SLOWER
    camera[26:28, 0] = (0, 230, 130)
    camera[26:28, 3] = (230, 20, 20)  # beyond +-2 columns
    assert signal_act(rule, camera, 8.0) == IDLE
