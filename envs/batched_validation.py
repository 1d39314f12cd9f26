"""Validation of the batched backend against highway-env (the reference backend).

- :func:`trajectory_error`: from one initial state copied out of highway-env, the position
  error of every vehicle after each policy step (same ego actions on both sides);
- :func:`traffic_statistics`: over many episodes of each backend, traffic speeds, headways,
  lane-change rate and the ego's collision rate, under an idle or random ego policy;
- :func:`policy_transfer`: the return of a policy (any ``obs -> action`` callable, e.g. a
  trained SB3 model's ``predict``) on both backends, and their ratio.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from envs.batched import BatchedDrive, BatchedDriveVecEnv
from envs.batched_scenarios import export_positions, import_state
from envs.batched_sim import EGO, IDM

REFERENCE_IDS = {"highway": "DriveAttention/Highway-v0", "merge": "DriveAttention/Merge-v0"}
HEADWAY_RANGE = 100.0  # [m] gaps beyond this are free driving, not headways


def _policy_action(policy: str, space: gym.Space, rng: np.random.Generator) -> Any:
    if policy == "idle":
        return 1 if isinstance(space, gym.spaces.Discrete) else np.zeros(2, np.float32)
    if isinstance(space, gym.spaces.Discrete):
        return int(rng.integers(space.n))
    return rng.uniform(-1, 1, 2).astype(np.float32)


def trajectory_error(
    scenario: str = "highway",
    seeds: int = 20,
    steps: int = 5,
    action: str = "discrete",
    policy: str = "idle",
) -> dict[str, Any]:
    """Max and mean position error [m] over all vehicles after each policy step.

    Episodes where highway-env's ego crashes are left out after the crash (its impact push is
    not modelled) and counted.
    """
    import envs  # noqa: F401  (registers the reference ids)

    per_step: list[list[float]] = [[] for _ in range(steps)]
    crashed = 0
    for seed in range(seeds):
        ref = gym.make(REFERENCE_IDS[scenario], action=action).unwrapped
        ref.reset(seed=seed)
        core = BatchedDrive(scenario=scenario, action=action)
        core.reset()
        core.traffic = import_state(ref.sim, core.road)
        rng = np.random.default_rng(seed)
        for k in range(steps):
            a = _policy_action(policy, ref.action_space, rng)
            ref.step(a)
            act = torch.tensor([a]) if action == "discrete" else torch.as_tensor(a)[None]
            core.step(act)
            if ref.ego.crashed:
                crashed += 1
                break
            t = core.traffic
            mine = torch.stack([t.x[0], t.y[0]], -1).double().numpy()
            per_step[k].append(
                float(np.linalg.norm(mine - export_positions(ref.sim), axis=1).max())
            )
    dt = 1.0 / core.config.policy_frequency
    return {
        "scenario": scenario,
        "action": action,
        "policy": policy,
        "episodes": seeds,
        "episodes_with_ego_crash": crashed,
        "horizon_s": [round((k + 1) * dt, 3) for k in range(steps)],
        "max_position_error_m": [float(np.max(e)) if e else None for e in per_step],
        "mean_position_error_m": [float(np.mean(e)) if e else None for e in per_step],
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


def _headways(x: np.ndarray, lane: np.ndarray) -> list[float]:
    """Gaps [m] to the next vehicle ahead in the same lane, (N,) positions and lanes."""
    out = []
    for i in range(len(x)):
        ahead = (lane == lane[i]) & (x > x[i])
        if ahead.any():
            gap = float((x[ahead] - x[i]).min())
            if gap < HEADWAY_RANGE:
                out.append(gap)
    return out


def reference_statistics(
    scenario: str, episodes: int, policy: str, action: str, seed: int = 0
) -> dict[str, float]:
    """Traffic statistics of the highway-env backend (traffic = every vehicle but the ego)."""
    import envs  # noqa: F401

    env = gym.make(REFERENCE_IDS[scenario], action=action).unwrapped
    rng = np.random.default_rng(seed)
    speeds, headways, ends = [], [], []
    changes, vehicle_s = 0, 0.0
    dt = 1.0 / env.config.policy_frequency
    for episode in range(episodes):
        env.reset(seed=seed + episode)
        # lanes at the reset, as the batched side: changes of the first step count too
        previous = np.array([hash(v.lane_index) for v in env.sim.road.vehicles if v is not env.ego])
        done = False
        while not done:
            _, _, terminated, truncated, info = env.step(
                _policy_action(policy, env.action_space, rng)
            )
            done = terminated or truncated
            cars = [v for v in env.sim.road.vehicles if v is not env.ego]
            speeds += [float(v.speed) for v in cars]
            x = np.array([v.position[0] for v in cars])
            lane = np.array([hash(v.lane_index) for v in cars])
            headways += _headways(x, lane)
            if previous is not None and len(previous) == len(lane):
                changes += int((previous != lane).sum())
                vehicle_s += dt * len(lane)
            previous = lane
        ends.append(bool(info["collision"]))
    return _summary(speeds, headways, changes, vehicle_s, ends)


def batched_statistics(
    scenario: str, episodes: int, policy: str, action: str, seed: int = 0
) -> dict[str, float]:
    """Traffic statistics of the batched backend: ``episodes`` environments run once each."""
    core = BatchedDrive(scenario=scenario, action=action, num_envs=episodes)
    core.seed(seed)
    core.reset()
    rng = np.random.default_rng(seed)
    space = core.action_space()
    active = np.ones(episodes, bool)
    collided = np.zeros(episodes, bool)
    speeds, headways = [], []
    changes, vehicle_s = 0, 0.0
    dt = 1.0 / core.config.policy_frequency
    previous = core.traffic.lane.numpy().copy()
    while active.any():
        acts = [_policy_action(policy, space, rng) for _ in range(episodes)]
        out = core.step(torch.as_tensor(np.asarray(acts)))
        t = core.traffic
        traffic = (t.kind == IDM).numpy() & active[:, None]
        speeds += t.speed.numpy()[traffic].tolist()
        lane = t.lane.numpy()
        x = t.x.numpy()
        for b in np.flatnonzero(active):
            m = traffic[b]
            headways += _headways(x[b][m], lane[b][m])
        changes += int(((previous != lane) & traffic).sum())
        vehicle_s += dt * int(traffic.sum())
        previous = lane.copy()
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
    import envs  # noqa: F401

    ref = gym.make(REFERENCE_IDS[scenario], **options)
    ref_returns = []
    for episode in range(episodes):
        obs, _ = ref.reset(seed=seed + episode)
        total, done = 0.0, False
        while not done:
            batch = {k: v[None] for k, v in obs.items()}
            action = np.asarray(policy(batch))[0]
            obs, reward, terminated, truncated, _ = ref.step(action)
            total += reward
            done = terminated or truncated
        ref_returns.append(total)
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
