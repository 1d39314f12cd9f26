"""Deterministic evaluation of a policy (trained, random, idle, rule, lookahead) on seeded episodes.

Episode ``i`` of an evaluation with seed ``S`` resets the env with seed ``S + i``, so every policy
meets the same traffic. The report (:class:`agent.evaluate.episodes.EvalReport`) has one row per
episode and the documented summary keys; filmed episodes go through
:mod:`agent.evaluate.recording`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from drive_attention.agent.evaluate.agreement import RelevanceJudge
from drive_attention.agent.evaluate.episodes import EpisodeResult, EvalReport, describe_action
from drive_attention.agent.evaluate.recording import (
    Decision,
    Recording,
    film,
    map_occlusion_ratio,
    video_path,
)
from drive_attention.agent.evaluate.scene import HighwayScene
from drive_attention.agent.evaluate.video import RayLayout, scene_scale
from drive_attention.agent.policies.base import Policy


def _env_action(action: Any, action_space: spaces.Space) -> Any:
    if isinstance(action_space, spaces.Discrete):
        return int(np.asarray(action).reshape(-1)[0])
    return np.asarray(action, dtype=np.float32).reshape(action_space.shape)


_INFO_KEYS = (
    "speed",
    "road_labels",
    "lead_vehicle_mask",
    "light_state",
    "object_ids",
    "object_slots",
)


def policy_frequency(env: gym.Env) -> float:
    """[Hz] the env's decisions per second (1 when it does not say)."""
    cfg = getattr(env.unwrapped, "config", None)
    return float(getattr(cfg, "policy_frequency", None) or 1.0)


def run_episode(
    env: gym.Env,
    policy: Policy,
    episode: int,
    seed: int,
    video_path: Path | None = None,
    action_names: dict[int, str] | None = None,
    fps: int = 8,
    scale: int = 4,
    cell_px: tuple[int, int] | None = None,
) -> EpisodeResult:
    """Roll out one episode; with ``video_path``, film it as an attention video."""
    record = video_path is not None
    result, recording = rollout(env, policy, episode, seed, record, action_names, scale)
    if recording is not None:
        film(result, recording, Path(video_path), fps, scale, cell_px, RayLayout.from_env(env))
    return result


def rollout(
    env: gym.Env,
    policy: Policy,
    episode: int,
    seed: int,
    record: bool = False,
    action_names: dict[int, str] | None = None,
    scale: int = 4,
    scene: HighwayScene | None = None,
    judge: RelevanceJudge | None = None,
) -> tuple[EpisodeResult, Recording | None]:
    """Roll out one episode; with ``record``, also what :func:`film` needs (the policy's
    attention at each decision, and the simulator's state at each simulation step where the
    backend exposes it: ``scene``, made here when not given; with ``judge``, a copy of the
    batched state at each decision, for the video to outline what is relevant)."""
    policy.reset(seed)
    obs, info = env.reset(seed=seed)
    decisions: list[Decision] | None = [] if record else None
    if record:
        camera_hw = obs["camera"].shape[:2]
        scene = scene or HighwayScene.attach(env, scene_scale(camera_hw, scale))
        if scene is not None:
            scene.start()
    total, length, terms = 0.0, 0, {}
    speeds: list[float] = []
    reward = 0.0
    while True:
        action = _env_action(policy.act(obs), env.action_space)
        if decisions is not None:  # the frame the action was chosen on, and its attention
            decisions.append(
                _decision(
                    obs,
                    info,
                    policy,
                    length,
                    describe_action(action, action_names),
                    reward,
                    total,
                    scene,
                )
            )
            if judge is not None:
                decisions[-1].state = judge.snapshot()
        obs, reward, terminated, truncated, info = env.step(action)
        if decisions is not None and scene is not None:
            decisions[-1].between = scene.take_between()
        total += float(reward)
        length += 1
        speeds.append(float(info.get("speed", 0.0)))
        for name, value in info.get("reward_terms", {}).items():
            terms[name] = terms.get(name, 0.0) + float(value)
        if terminated or truncated:
            break
    recording = None
    if decisions is not None:  # the last frame, after the final step
        decisions.append(_decision(obs, info, policy, length, "(end)", reward, total, scene))
        recording = Recording(decisions, policy_frequency(env), scene)
    result = EpisodeResult(
        episode=episode,
        seed=seed,
        episode_return=total,
        length=length,
        success=bool(info.get("success", False)),
        collision=bool(info.get("collision", False)),
        off_road=bool(info.get("off_road", False)),
        mean_speed=float(info.get("mean_speed", np.mean(speeds) if speeds else 0.0)),
        distance=float(info.get("distance", 0.0)),
        reward_terms=terms,
        red_light_runs=int(info["red_light_runs"]) if "red_light_runs" in info else None,
        pedestrian_collision=(
            bool(info["pedestrian_collision"]) if "pedestrian_collision" in info else None
        ),
    )
    return result, recording


def _decision(
    obs: dict[str, np.ndarray],
    info: dict[str, Any],
    policy: Policy,
    step: int,
    action: str,
    reward: float,
    total: float,
    scene: HighwayScene | None,
) -> Decision:
    return Decision(
        step=step,
        camera=np.array(obs["camera"]),
        sensors=np.array(obs["sensors"]),
        info={k: info[k] for k in _INFO_KEYS if k in info},
        view=policy.attention(obs),
        action=action,
        reward=float(reward),
        total=total,
        scene=scene.snapshot() if scene is not None else None,
    )


def evaluate(
    env: gym.Env,
    policy: Policy,
    episodes: int,
    seed: int,
    env_id: str = "",
    video_dir: Path | None = None,
    video_episodes: int = 1,
    video_prefix: str = "",
    action_names: dict[int, str] | None = None,
    fps: int = 8,
    scale: int = 4,
    cell_px: tuple[int, int] | None = None,
    progress: Callable[[EpisodeResult], None] | None = None,
    relevance: bool = False,
) -> EvalReport:
    """``episodes`` seeded episodes (seeds ``seed .. seed + episodes - 1``).

    With ``video_dir``, the first ``video_episodes`` successful episodes and the first
    ``video_episodes`` failed ones (when there are such) are filmed to
    ``video_dir/<prefix>ep<k>.mp4``: episodes are recorded while either outcome still lacks
    its videos, and a recording is drawn only when its outcome needs it. With ``relevance``
    (batched envs with meta-actions), the videos outline the objects the teacher's decision
    depends on (:mod:`agent.evaluate.agreement`), computed for the filmed episodes only.
    """
    results = []
    filmed = {True: 0, False: 0}  # success -> videos made
    scene = None
    rays = RayLayout.from_env(env) if video_dir is not None else None
    judge = RelevanceJudge.attach(env) if relevance and video_dir is not None else None
    for k in range(episodes):
        record = video_dir is not None and min(filmed.values()) < video_episodes
        if record and scene is None:
            camera_hw = env.observation_space["camera"].shape[:2]
            scene = HighwayScene.attach(env, scene_scale(camera_hw, scale))
        result, recording = rollout(
            env, policy, k, seed + k, record, action_names, scale, scene=scene, judge=judge
        )
        if recording is not None and filmed[result.success] < video_episodes:
            filmed[result.success] += 1
            result.occlusion_ratio = map_occlusion_ratio(policy, recording.decisions, cell_px)
            path = video_path(video_dir, video_prefix, k)
            film(result, recording, path, fps, scale, cell_px, rays, judge)
        results.append(result)
        if progress is not None:
            progress(result)
    return EvalReport(policy=policy.name, env_id=env_id, seed=seed, episodes=results)
