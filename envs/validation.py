"""Validation of the batched backend against highway-env (the reference backend).

- :func:`trajectory_error`: from one initial state copied out of highway-env, the position
  error of every vehicle after each policy step and the crash flags of every vehicle after each
  simulation frame (same ego actions on both sides, crashes included);
- :func:`traffic_statistics`: over many episodes of each backend, traffic speeds, headways,
  lane-change rate and the ego's collision rate, under an idle or random ego policy;
- :func:`policy_transfer`: the return of a policy (any ``obs -> action`` callable, e.g. a
  trained SB3 model's ``predict``) on both backends, and their ratio;
- :func:`paired_transfer`: the same policy from the *same* initial states on both backends, and
  on highway-env without its predictive collision rule (an ablation of that rule).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from highway_env.vehicle.objects import RoadObject

from drive_attention import envs
from drive_attention.envs.batched import BatchedDrive, BatchedDriveVecEnv
from drive_attention.envs.batched.scenarios import import_state, slot_order
from drive_attention.envs.batched.sim import EGO, IDM
from drive_attention.envs.contract import idle_action

REFERENCE_IDS: dict[str, str] = {
    name: envs.env_id(name) for name in envs.BATCHED_IDS.values() if envs.SCENARIOS[name].highway
}
"""Scenario name -> the highway-env id that the batched version is validated against (every
batched scenario but the signalised intersection, which highway-env does not have)."""
ARRIVALS_OFF = {"sim": {"spawn_probability": 0.0}}  # the intersection without new traffic
HEADWAY_RANGE = 100.0  # [m] gaps beyond this are free driving, not headways


def _policy_action(policy: str, space: gym.Space, rng: np.random.Generator) -> Any:
    if policy == "idle":
        return idle_action("discrete" if isinstance(space, gym.spaces.Discrete) else "continuous")
    if isinstance(space, gym.spaces.Discrete):
        return int(rng.integers(space.n))
    return rng.uniform(-1, 1, 2).astype(np.float32)


Frame = tuple[np.ndarray, np.ndarray]  # (N, 2) positions [m], (N,) crash flags


def _observer(snapshot: Callable[[], Frame], out: list[Frame]) -> Callable[[], None]:
    """A frame hook's callback (``on_frame``) that appends ``snapshot()`` to ``out``."""
    return lambda: out.append(snapshot())


def _reference_frame(listed: list[Any]) -> Frame:
    """Positions and crash flags of the vehicles ``listed`` at the start (one that has left the
    road keeps its last position, as its emptied batched slot does)."""
    xy = np.array([v.position for v in listed], dtype=float)
    return xy, np.array([v.crashed for v in listed], bool)


def _batched_frame(core: BatchedDrive, n: int) -> Frame:
    """Positions and crash flags of the first ``n`` slots of environment 0."""
    t = core.traffic
    xy = torch.stack([t.x[0, :n], t.y[0, :n]], -1).double().cpu().numpy()
    return xy, t.crashed[0, :n].cpu().numpy().copy()


def trajectory_error(
    scenario: str = "highway",
    seeds: int = 20,
    steps: int = 5,
    action: str = "discrete",
    policy: str = "idle",
) -> dict[str, Any]:
    """Position error [m] and crash-flag agreement between the backends, frame by frame.

    Per seed, highway-env's initial state is copied into the batched simulator and both run the
    same ego actions for ``steps`` policy steps, crashes included (the run goes on after any
    crash: post-crash motion, the impact push and braking, is part of what is compared). Each
    side runs its own policy step unchanged; an observer given to each env's frame hook
    (``on_frame``) records every vehicle's position and crash flag after every simulation frame,
    so crash flags are compared at simulation-frame granularity, not only where the policy acts.

    Returns, per policy step, the max and mean over episodes of the largest position error over
    vehicles (``max_position_error_m``, ``mean_position_error_m``, at ``horizon_s``); over all
    ``frames``: the largest position error (``max_position_error_any_frame_m``),
    ``crash_flag_mismatch_frames`` (frames where any vehicle's flag differs),
    ``crash_flag_mismatch_vehicle_frames`` (vehicle-frames that differ), and per episode the
    first frame where they differ (``first_crash_flag_mismatch``: ``[seed, frame]`` pairs,
    frames counted from 1); ``episodes_with_ego_crash`` (highway-env) and
    ``episodes_with_ego_crash_batched``.
    """
    # arrivals are random draws on each side, their vehicles cannot be paired: without them
    # (the intersection's spawn_probability 0), the vehicles there at the start are compared,
    # departures included
    options = ARRIVALS_OFF if envs.SCENARIOS[scenario].respawns_traffic else {}
    per_step: list[list[float]] = [[] for _ in range(steps)]
    ego_crashes = ego_crashes_batched = 0
    mismatch_frames = mismatch_vehicle_frames = frames = 0
    first_mismatch: list[list[int]] = []
    worst = 0.0  # [m] over every frame
    for seed in range(seeds):
        ref = gym.make(REFERENCE_IDS[scenario], action=action, **options).unwrapped
        ref.reset(seed=seed)
        core = BatchedDrive(scenario=scenario, action=action, **options)
        n = core.traffic_spec.n_slots()
        core.restart_from(import_state(ref.sim, core.road, n, ref.destination))
        listed = slot_order(ref.sim)
        n = len(listed)
        ref_frames: list[Frame] = []
        mine_frames: list[Frame] = []
        ref.on_frame(_observer(functools.partial(_reference_frame, listed), ref_frames))
        core.on_frame(_observer(functools.partial(_batched_frame, core, n), mine_frames))
        rng = np.random.default_rng(seed)
        for k in range(steps):
            a = _policy_action(policy, ref.action_space, rng)
            ref.step(a)
            act = torch.tensor([a]) if action == "discrete" else torch.as_tensor(a)[None]
            core.step(act)
            assert len(ref_frames) == len(mine_frames), "the backends ran different frame counts"
            per_step[k].append(
                float(np.linalg.norm(mine_frames[-1][0] - ref_frames[-1][0], axis=1).max())
            )
        for m, r in zip(mine_frames, ref_frames):
            worst = max(worst, float(np.linalg.norm(m[0] - r[0], axis=1).max()))
        differ = np.array([m[1] != r[1] for m, r in zip(mine_frames, ref_frames)])  # (F, N)
        frames += len(differ)
        mismatch_frames += int(differ.any(1).sum())
        mismatch_vehicle_frames += int(differ.sum())
        if differ.any():
            first_mismatch.append([seed, int(np.flatnonzero(differ.any(1))[0]) + 1])
        ego_crashes += bool(ref_frames[-1][1][0])
        ego_crashes_batched += bool(mine_frames[-1][1][0])
    dt = 1.0 / core.config.policy_frequency
    return {
        "scenario": scenario,
        "action": action,
        "policy": policy,
        "arrivals": "off" if options else "none in this scenario",
        "episodes": seeds,
        "frames": frames,
        "episodes_with_ego_crash": ego_crashes,
        "episodes_with_ego_crash_batched": ego_crashes_batched,
        "crash_flag_mismatch_frames": mismatch_frames,
        "crash_flag_mismatch_vehicle_frames": mismatch_vehicle_frames,
        "first_crash_flag_mismatch": first_mismatch,
        "horizon_s": [round((k + 1) * dt, 3) for k in range(steps)],
        "max_position_error_m": [float(np.max(e)) for e in per_step],
        "mean_position_error_m": [float(np.mean(e)) for e in per_step],
        "max_position_error_any_frame_m": worst,
    }


def _summary(
    speeds: list[float], headways: list[float], changes: int, vehicle_s: float, ends: list[bool]
) -> dict[str, float]:
    h = np.asarray(headways) if headways else np.zeros(1)
    return {
        "speed_mean": float(np.mean(speeds)),
        "speed_std": float(np.std(speeds)),
        "headway_mean_m": float(h.mean()),
        "headway_p10_m": float(np.percentile(h, 10)),
        "lane_changes_per_vehicle_min": 60.0 * changes / max(vehicle_s, 1e-9),
        "collision_rate": float(np.mean(ends)),
        "episodes": len(ends),
    }


def _headways(s: np.ndarray, lane: np.ndarray) -> list[float]:
    """Gaps [m] to the next vehicle ahead on the same lane, from (N,) positions along their
    lanes and lane ids."""
    out = []
    for i in range(len(s)):
        ahead = (lane == lane[i]) & (s > s[i])
        if ahead.any():
            gap = float((s[ahead] - s[i]).min())
            if gap < HEADWAY_RANGE:
                out.append(gap)
    return out


def reference_statistics(
    scenario: str, episodes: int, policy: str, action: str, seed: int = 0
) -> dict[str, float]:
    """Traffic statistics of the highway-env backend (traffic = every vehicle but the ego).

    A lane change is a vehicle's lane switching to another lane of the same road (passing
    from one road to the next is not one), followed vehicle by vehicle across steps.
    """
    env = gym.make(REFERENCE_IDS[scenario], action=action).unwrapped
    rng = np.random.default_rng(seed)
    speeds, headways, ends = [], [], []
    changes, vehicle_s = 0, 0.0
    dt = 1.0 / env.config.policy_frequency
    for episode in range(episodes):
        env.reset(seed=seed + episode)
        # lanes at the reset, as the batched side: changes of the first step count too
        previous = {id(v): v.lane_index for v in env.sim.road.vehicles if v is not env.ego}
        done = False
        while not done:
            _, _, terminated, truncated, info = env.step(
                _policy_action(policy, env.action_space, rng)
            )
            done = terminated or truncated
            cars = [v for v in env.sim.road.vehicles if v is not env.ego]
            speeds += [float(v.speed) for v in cars]
            s = np.array([v.lane.local_coordinates(v.position)[0] for v in cars])
            lane = np.array([hash(v.lane_index) for v in cars])
            headways += _headways(s, lane)
            for v in cars:
                before = previous.get(id(v))
                if before is not None:
                    changes += before[:2] == v.lane_index[:2] and before[2] != v.lane_index[2]
                    vehicle_s += dt
            previous = {id(v): v.lane_index for v in cars}
        ends.append(bool(info["collision"]))
    return _summary(speeds, headways, changes, vehicle_s, ends)


def batched_statistics(
    scenario: str, episodes: int, policy: str, action: str, seed: int = 0
) -> dict[str, float]:
    """Traffic statistics of the batched backend: ``episodes`` environments run once each
    (lane changes as :func:`reference_statistics` counts them; a slot that empties and fills
    again holds a new vehicle, not counted across)."""
    core = BatchedDrive(scenario=scenario, action=action, num_envs=episodes)
    core.seed(seed)
    core.reset()
    road = core.road
    rng = np.random.default_rng(seed)
    space = core.action_space()
    active = np.ones(episodes, bool)
    collided = np.zeros(episodes, bool)
    speeds, headways = [], []
    changes, vehicle_s = 0, 0.0
    dt = 1.0 / core.config.policy_frequency
    previous = core.traffic.lane.numpy().copy()
    was_traffic = (core.traffic.kind == IDM).numpy()
    edge, lane_id = road.edge.numpy(), road.lane_id.numpy()
    while active.any():
        acts = [_policy_action(policy, space, rng) for _ in range(episodes)]
        kind_before = core.traffic.kind.clone()
        out = core.step(torch.as_tensor(np.asarray(acts)))
        t = core.traffic
        traffic = (t.kind == IDM).numpy() & active[:, None]
        speeds += t.speed.numpy()[traffic].tolist()
        lane = t.lane.numpy()
        s, _ = road.coordinates_on(t.lane, t.x, t.y)
        s = s.numpy()
        for b in np.flatnonzero(active):
            m = traffic[b]
            headways += _headways(s[b][m], lane[b][m])
        # the same vehicle in the slot: traffic before and after, never emptied in between
        kept = traffic & was_traffic & (kind_before == IDM).numpy()
        same_road = edge[previous] == edge[lane]
        changes += int((kept & same_road & (lane_id[previous] != lane_id[lane])).sum())
        vehicle_s += dt * int(kept.sum())
        previous = lane.copy()
        was_traffic = traffic.copy()
        done = (out.terminated | out.truncated).numpy() & active
        collided |= done & out.episode["collision"].numpy()
        active &= ~done
    assert (core.traffic.kind[:, 0] == EGO).all()
    return _summary(speeds, headways, changes, vehicle_s, collided.tolist())


def traffic_statistics(
    scenario: str = "highway", episodes: int = 50, policy: str = "idle", action: str = "discrete"
) -> dict[str, Any]:
    """Side by side: highway-env backend vs batched backend."""
    return {
        "scenario": scenario,
        "policy": policy,
        "action": action,
        "highway_env": reference_statistics(scenario, episodes, policy, action),
        "batched": batched_statistics(scenario, episodes, policy, action),
    }


def policy_transfer(
    policy: Callable[[dict[str, np.ndarray]], np.ndarray],
    scenario: str = "highway",
    episodes: int = 20,
    seed: int = 0,
    **options: Any,
) -> dict[str, float]:
    """Mean return of ``policy`` (batched obs dict -> (B,) or (B, 2) actions) on both backends.

    ``ratio`` = return on highway-env / return on the batched backend: how much of the return
    earned on the batched backend survives on the reference. A trained SB3 model plugs in as
    ``lambda obs: model.predict(obs, deterministic=True)[0]``.
    """
    ref = gym.make(REFERENCE_IDS[scenario], **options)
    ref_returns = [_run_gym(ref, policy, seed + episode)[0] for episode in range(episodes)]
    venv = BatchedDriveVecEnv(num_envs=episodes, scenario=scenario, **options)
    venv.seed(seed)
    obs = venv.reset()
    returns = np.zeros(episodes)
    finished = np.zeros(episodes, bool)
    while not finished.all():
        obs, rewards, dones, _ = venv.step(np.asarray(policy(obs)))
        returns += np.where(finished, 0.0, rewards)
        finished |= dones
    batched = float(returns.mean())
    reference = float(np.mean(ref_returns))
    return {
        "batched_return": batched,
        "highway_env_return": reference,
        "ratio": reference / batched if batched else float("nan"),
        "episodes": episodes,
    }


def _run_gym(env: gym.Env, policy: Callable, seed: int) -> tuple[float, int, bool]:
    """(return, length, collision) of one seeded episode of a single env; ``policy`` takes and
    gives batches of one."""
    obs, _ = env.reset(seed=seed)
    total, length = 0.0, 0
    while True:
        action = np.asarray(policy({k: v[None] for k, v in obs.items()}))[0]
        obs, reward, terminated, truncated, info = env.step(action)
        total, length = total + float(reward), length + 1
        if terminated or truncated:
            return total, length, bool(info["collision"])


def _run_batched_from(
    core: BatchedDrive, traffic: Any, policy: Callable
) -> tuple[float, int, bool]:
    """One episode of ``core`` (B=1) started from ``traffic``."""
    core.restart_from(traffic)
    labels, sensors = core.observe()
    obs = {"camera": core.camera(labels).numpy(), "sensors": sensors.numpy()}
    total, length = 0.0, 0
    while True:
        out = core.step(torch.as_tensor(np.asarray(policy(obs))))
        total, length = total + float(out.reward[0]), length + 1
        obs = {"camera": core.camera(out.labels).numpy(), "sensors": out.sensors.numpy()}
        if bool(out.terminated[0] or out.truncated[0]):
            return total, length, bool(out.episode["collision"][0])


def paired_transfer(
    policy: Callable[[dict[str, np.ndarray]], np.ndarray],
    scenario: str = "highway",
    episodes: int = 20,
    seed: int = 0,
    **options: Any,
) -> dict[str, Any]:
    """Where a policy's return differs between the backends, episode by episode.

    Per seed: ``batched`` (the batched backend's own initial state), ``batched_same_start``
    (highway-env's initial state copied in), ``highway_env``, and ``highway_env_overlap_only``
    (an ablation: highway-env with its predictive collision test off, so a crash only when the
    boxes overlap and no impact push). Both simulators have the predictive test (boxes that
    *would* touch within the next simulation frame get an impact, and crash at the next frame),
    so ``batched_same_start`` should follow ``highway_env`` episode by episode (in the
    intersection only until a new vehicle arrives: arrivals are random draws on each side, unless
    ``sim={"spawn_probability": 0}`` is passed): ``return_ratio_same_start`` is highway-env's
    mean return over the batched one from the same starts, ``crashes_on_one_backend`` the
    episodes that crash on one backend only, ``same_length``
    counts the episodes that last exactly as long on both, ``predictive_only_crashes`` those that
    crash on highway-env but not from the same start on the batched simulator (the name is from
    when the batched simulator lacked the test), ``batched_only_crashes`` the reverse, and
    ``same_length_overlap_only`` the episodes as long on the batched simulator as on the
    ablation.
    """
    batched_id = envs.env_id(scenario, batched=True)
    ref = gym.make(REFERENCE_IDS[scenario], **options)
    own = gym.make(batched_id, **options)
    core = BatchedDrive(scenario=scenario, **options)
    original = RoadObject._is_colliding

    def overlap_only(self: Any, other: Any, dt: float) -> tuple[bool, bool, Any]:
        intersecting, _, transition = original(self, other, dt)
        return intersecting, False, transition

    rows: dict[str, list[tuple[float, int, bool]]] = {
        "batched": [],
        "batched_same_start": [],
        "highway_env": [],
        "highway_env_overlap_only": [],
    }
    try:
        for s in range(seed, seed + episodes):
            rows["batched"].append(_run_gym(own, policy, s))
            ref.reset(seed=s)
            start = import_state(
                ref.unwrapped.sim, core.road, core.traffic_spec.n_slots(), ref.unwrapped.destination
            )
            rows["batched_same_start"].append(_run_batched_from(core, start, policy))
            rows["highway_env"].append(_run_gym(ref, policy, s))
            RoadObject._is_colliding = overlap_only
            try:
                rows["highway_env_overlap_only"].append(_run_gym(ref, policy, s))
            finally:
                RoadObject._is_colliding = original
    finally:
        ref.close()
        own.close()
    out: dict[str, Any] = {"scenario": scenario, "episodes": episodes, "seed": seed}
    for name, runs in rows.items():
        a = np.array(runs, dtype=np.float64)
        out[name] = {
            "mean_return": float(a[:, 0].mean()),
            "stderr_return": float(a[:, 0].std(ddof=1) / np.sqrt(len(a))) if len(a) > 1 else 0.0,
            "collision_rate": float(a[:, 2].mean()),
            "mean_length": float(a[:, 1].mean()),
            "lengths": [int(v) for v in a[:, 1]],
        }
    same, ref_c = np.array(rows["batched_same_start"]), np.array(rows["highway_env"])
    out["predictive_only_crashes"] = int(((ref_c[:, 2] == 1) & (same[:, 2] == 0)).sum())
    out["batched_only_crashes"] = int(((ref_c[:, 2] == 0) & (same[:, 2] == 1)).sum())
    # the transfer figures: highway-env's return over the batched return from the same starts,
    # and the episodes that crash on one backend only
    out["return_ratio_same_start"] = out["highway_env"]["mean_return"] / (
        out["batched_same_start"]["mean_return"] or float("nan")
    )
    out["crashes_on_one_backend"] = out["predictive_only_crashes"] + out["batched_only_crashes"]
    out["same_length"] = int(
        sum(
            a == b
            for a, b in zip(out["batched_same_start"]["lengths"], out["highway_env"]["lengths"])
        )
    )
    out["same_length_overlap_only"] = int(
        sum(
            a == b
            for a, b in zip(
                out["batched_same_start"]["lengths"], out["highway_env_overlap_only"]["lengths"]
            )
        )
    )
    return out
