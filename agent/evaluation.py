"""Deterministic evaluation of a policy (trained, random, idle or rule) on seeded episodes.

Episode ``i`` of an evaluation with seed ``S`` resets the env with seed ``S + i``, so every policy
meets the same traffic. The report's summary has the documented keys (``mean_return``,
``std_return``, ``success_rate``, ``collision_rate``, ``mean_speed``, ``mean_length``) plus
``episodes``, one row per episode.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from agent.attribution import Attribution
from agent.files import write_text
from agent.scene import HighwayScene, Snapshot, interpolate
from agent.video import FrameText, RayLayout, VideoWriter, render_frame, scene_scale

SUMMARY_KEYS: tuple[str, ...] = (
    "mean_return",
    "std_return",
    "success_rate",
    "collision_rate",
    "mean_speed",
    "mean_length",
)
POLICIES: tuple[str, ...] = ("trained", "random", "idle", "rule", "lookahead")
"""rule: :mod:`agent.rule_policy`; lookahead: :mod:`agent.lookahead` (plans in copies of the
simulator: a bound, not a driver)."""
TABLE_COLUMNS: tuple[str, ...] = (
    "episode",
    "seed",
    "return",
    "length",
    "success",
    "collision",
    "video",
)
"""Columns of the per-evaluation W&B table (``video`` holds the mp4 path, or None)."""


@dataclass
class AttentionView:
    """What one video frame shows of the policy's attention (last layer, heads averaged)."""

    camera: np.ndarray | None  # (gh, gw) query weights over camera patches
    sensors: np.ndarray | None  # (S,) query weights over sensor tokens
    sensor_labels: tuple[str, ...]
    camera_share: float | None  # fraction of the query's attention on the camera


class Policy(Protocol):
    """An evaluated policy: one action per observation, optionally its attention."""

    name: str

    def reset(self, seed: int) -> None: ...

    def act(self, obs: dict[str, np.ndarray]) -> Any: ...

    def attention(self, obs: dict[str, np.ndarray]) -> AttentionView | None: ...


class RandomPolicy:
    """Uniformly random actions from the action space, seeded per episode."""

    name = "random"

    def __init__(self, action_space: spaces.Space) -> None:
        self.action_space = action_space

    def reset(self, seed: int) -> None:
        self.action_space.seed(seed)

    def act(self, obs: dict[str, np.ndarray]) -> Any:
        return self.action_space.sample()

    def attention(self, obs: dict[str, np.ndarray]) -> AttentionView | None:
        return None


class IdlePolicy:
    """The env's idle action every step (keep lane and speed; no steering, no throttle)."""

    name = "idle"

    def __init__(self, idle_action: Any) -> None:
        self.idle_action = idle_action

    def reset(self, seed: int) -> None:
        pass

    def act(self, obs: dict[str, np.ndarray]) -> Any:
        return self.idle_action

    def attention(self, obs: dict[str, np.ndarray]) -> AttentionView | None:
        return None


class TrainedPolicy:
    """An SB3 algorithm's deterministic action, with the observation normalisation it learnt."""

    name = "trained"

    def __init__(self, model: Any, normalize_obs: Callable[[Any], Any] | None = None) -> None:
        self.model = model
        self.normalize_obs = normalize_obs
        from models import policy_extractor

        self.has_attention = bool(getattr(policy_extractor(model.policy), "has_attention", False))

    def prepare(self, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The observation as the policy sees it (normalised when training normalised it)."""
        return self.normalize_obs(obs) if self.normalize_obs is not None else obs

    def reset(self, seed: int) -> None:
        pass

    def act(self, obs: dict[str, np.ndarray]) -> Any:
        action, _ = self.model.predict(self.prepare(obs), deterministic=True)
        return action

    def attention(self, obs: dict[str, np.ndarray]) -> AttentionView | None:
        if not self.has_attention:
            return None
        from models import attention_from_policy

        maps = attention_from_policy(self.model.policy, self.prepare(obs)).to("cpu")
        has_camera = maps.grid[0] * maps.grid[1] > 0
        has_sensors = len(maps.sensor_token_names) > 0
        camera = maps.camera_map()[0].numpy() if has_camera else None  # (gh, gw)
        sensors = maps.sensor_map()[0].numpy() if has_sensors else None  # (S,)
        return AttentionView(
            camera=camera,
            sensors=sensors,
            sensor_labels=tuple(maps.sensor_token_names),
            camera_share=float(maps.camera_mass()[0]),  # the query's row sums to 1
        )


@dataclass
class EpisodeResult:
    """One evaluation episode."""

    episode: int
    seed: int
    episode_return: float
    length: int
    success: bool
    collision: bool
    off_road: bool
    mean_speed: float  # [m/s]
    distance: float  # [m]
    reward_terms: dict[str, float] = field(default_factory=dict)  # summed over the episode
    camera_attention: float | None = None  # mean share of attention on the camera
    attention_class_mass: dict[str, float] | None = None  # per road class (video episodes)
    attention_class_lift: dict[str, float] | None = None
    video: str | None = None
    # of a filmed episode's map: how much more its most-attended patches move the policy than
    # random ones (map_occlusion_ratio); None without a camera attention map
    occlusion_ratio: float | None = None
    # the signalised scenario's infractions (None where the scenario has no lights)
    red_light_runs: int | None = None  # stop lines crossed on red
    pedestrian_collision: bool | None = None  # the collision was with a pedestrian

    def row(self) -> dict[str, Any]:
        out = asdict(self)
        out["return"] = out.pop("episode_return")
        return out


@dataclass
class EvalReport:
    """All episodes of one evaluation, and their summary."""

    policy: str
    env_id: str
    seed: int
    episodes: list[EpisodeResult]

    def summary(self) -> dict[str, float]:
        returns = np.array([e.episode_return for e in self.episodes], dtype=np.float64)
        return {
            "mean_return": float(returns.mean()),
            "std_return": float(returns.std()),
            "success_rate": float(np.mean([e.success for e in self.episodes])),
            "collision_rate": float(np.mean([e.collision for e in self.episodes])),
            "mean_speed": float(np.mean([e.mean_speed for e in self.episodes])),
            "mean_length": float(np.mean([e.length for e in self.episodes])),
            **self._signal_summary(),
        }

    def _signal_summary(self) -> dict[str, float]:
        """``red_light_rate`` (share of episodes with a red light run) and
        ``pedestrian_collision_rate``, where the env reports them."""
        runs = [e.red_light_runs for e in self.episodes if e.red_light_runs is not None]
        hits = [e.pedestrian_collision for e in self.episodes if e.pedestrian_collision is not None]
        out = {}
        if runs:
            out["red_light_rate"] = float(np.mean([r > 0 for r in runs]))
        if hits:
            out["pedestrian_collision_rate"] = float(np.mean(hits))
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            **self.summary(),
            "policy": self.policy,
            "env_id": self.env_id,
            "seed": self.seed,
            "n_episodes": len(self.episodes),
            "episodes": [e.row() for e in self.episodes],
        }

    def write_json(self, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Write the report (plus ``extra`` keys) atomically; never through a symbolic link
        (:class:`agent.files.UnsafePathError`)."""
        text = json.dumps({**self.to_json(), **(extra or {})}, indent=2) + "\n"
        return write_text(path, text)


def describe_action(action: Any, action_names: dict[int, str] | None) -> str:
    """``FASTER`` for a discrete meta-action, ``steer +0.12 accel -0.30`` for a continuous one."""
    array = np.asarray(action)
    if array.size == 1 and action_names is not None:
        return action_names.get(int(array.reshape(-1)[0]), str(int(array.reshape(-1)[0])))
    if array.size == 2:
        return f"steer {float(array.reshape(-1)[0]):+.2f} accel {float(array.reshape(-1)[1]):+.2f}"
    return np.array2string(array, precision=2)


def _env_action(action: Any, action_space: spaces.Space) -> Any:
    if isinstance(action_space, spaces.Discrete):
        return int(np.asarray(action).reshape(-1)[0])
    return np.asarray(action, dtype=np.float32).reshape(action_space.shape)


@dataclass
class Decision:
    """What the video frames of one decision show (recorded while the episode runs, drawn only
    if the episode is filmed)."""

    step: int
    camera: np.ndarray  # (H, W, 3k) the observation's frame stack
    sensors: np.ndarray  # (D,) the observation's sensors
    info: dict[str, Any]  # speed, and road labels where the env gives them
    view: AttentionView | None  # the policy's attention on this observation
    action: str  # the action chosen on it ("(end)" after the last step)
    reward: float  # of the previous step
    total: float  # the return so far
    scene: Snapshot | None = None  # the simulator's state at the decision
    between: list[Snapshot] = field(default_factory=list)  # its steps until the next decision


@dataclass
class Recording:
    """An episode's decisions, enough to film it afterwards."""

    decisions: list[Decision]
    policy_hz: float  # [Hz] decisions per second
    scene: HighwayScene | None  # draws the snapshots; None: the camera frames are shown


_INFO_KEYS = ("speed", "road_labels", "lead_vehicle_mask", "light_state")


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
) -> tuple[EpisodeResult, Recording | None]:
    """Roll out one episode; with ``record``, also what :func:`film` needs (the policy's
    attention at each decision, and the simulator's state at each simulation step where the
    backend exposes it: ``scene``, made here when not given)."""
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


def outcome(result: EpisodeResult) -> str:
    """``success``, ``collision``, ``off road`` or ``no success``."""
    if result.success:
        return "success"
    if result.collision:
        return "collision"
    return "off road" if result.off_road else "no success"


FAITHFUL_RATIO = 2.0
"""A map whose most-attended patches change the policy at least this many times more than as
many random patches (the occlusion ratio) explains the policy; below it, videos and tables say
that the map does not."""


def faithfulness_text(ratio: float | None) -> str:
    """``map faithful (occlusion ratio 7.6)``, ``MAP NOT FAITHFUL (...)``, or ``""``."""
    if ratio is None:
        return ""
    verdict = "map faithful" if ratio >= FAITHFUL_RATIO else "MAP NOT FAITHFUL"
    return f"{verdict} (occlusion ratio {ratio:.1f})"


def video_caption(episode: EpisodeResult) -> str:
    """``episode 3 (seed 1003): collision, return 2.61`` (and the map's faithfulness)."""
    text = (
        f"episode {episode.episode} (seed {episode.seed}): {outcome(episode)}, "
        f"return {episode.episode_return:.2f}"
    )
    faithful = faithfulness_text(episode.occlusion_ratio)
    return f"{text}; {faithful}" if faithful else text


def map_occlusion_ratio(
    policy: Policy, decisions: list[Decision], cell_px: tuple[int, int] | None = None
) -> float | None:
    """The occlusion ratio (:func:`agent.attribution.occlusion_test`) of the camera map a video
    shows, on that episode's decision frames; None for a policy without one."""
    from stable_baselines3.common.policies import ActorCriticPolicy

    shown = [d for d in decisions if d.view is not None and d.view.camera is not None]
    model = getattr(policy, "model", None)
    if not shown or model is None or not isinstance(policy, TrainedPolicy):
        return None
    if not isinstance(model.policy, ActorCriticPolicy):  # the probe reads PPO's distribution
        return None  # (SAC's actor has none here: its videos go without the verdict)
    from agent.attribution import SB3Probe, occlusion_test

    batch = {
        "camera": np.stack([d.camera for d in shown]),
        "sensors": np.stack([d.sensors for d in shown]),
    }
    maps = np.stack([d.view.camera for d in shown])  # (B, gh, gw)
    test = occlusion_test(SB3Probe(model.policy), policy.prepare(batch), maps, cell=cell_px)
    return float(test["occlusion_ratio"])


def film(
    result: EpisodeResult,
    recording: Recording,
    path: Path,
    fps: int = 8,
    scale: int = 4,
    cell_px: tuple[int, int] | None = None,
    rays: RayLayout | None = None,
) -> Path | None:
    """Write ``recording`` as an attention video at ``path`` and fill in ``result``'s video and
    attention figures.

    The video plays at the episode's pace: ``round(fps / policy_hz)`` frames per decision, the
    frames between two decisions interpolated from the simulation steps where the backend
    exposes them (else the decision's frame is held); the last frame is held for one decision.
    The scene is drawn at :func:`agent.video.scene_scale` times the camera's size.
    """
    decisions = recording.decisions
    scale = scene_scale(decisions[0].camera.shape[:2], scale)
    per_decision = max(1, round(fps / recording.policy_hz))
    writer = VideoWriter(path, fps=max(1, round(per_decision * recording.policy_hz)))
    attribution = Attribution()  # of the decision frames, when the env gives road labels
    title = f"episode {result.episode}: {outcome(result)}, return {result.episode_return:.2f}"
    if result.occlusion_ratio is not None:
        title = f"{title}\n{faithfulness_text(result.occlusion_ratio)}"
    scene = recording.scene
    try:
        for decision in decisions:
            legend = _legend(decision, attribution, cell_px)
            snapshots = [decision.scene, *decision.between] if decision.scene is not None else []
            if scene is None or len(snapshots) < 2:  # a still frame, held
                still = scene.draw(snapshots[0]) if scene is not None and snapshots else None
                frame = _frame(decision, still, legend, scale, cell_px, rays, title)
                for _ in range(per_decision):
                    writer.append(frame)
                continue
            for j in range(per_decision):  # time j / per_decision of the way to the next one
                position = j / per_decision * (len(snapshots) - 1)
                i = int(position)
                snap = interpolate(snapshots[i], snapshots[i + 1], position - i)
                writer.append(
                    _frame(decision, scene.draw(snap), legend, scale, cell_px, rays, title)
                )
    finally:
        written = writer.close()
    shares = [
        d.view.camera_share
        for d in decisions[:-1]
        if d.view is not None and d.view.camera_share is not None
    ]
    result.video = str(written) if written is not None else None
    result.camera_attention = float(np.mean(shares)) if shares else None
    if attribution.frames:
        summary = attribution.summary()
        result.attention_class_mass = summary["class_mass"]
        result.attention_class_lift = summary["class_lift"]
    return written


def _legend(
    decision: Decision, attribution: Attribution, cell_px: tuple[int, int] | None
) -> list[str]:
    """The per-class attention of this decision's frame (added to ``attribution``)."""
    view, info = decision.view, decision.info
    if view is None or view.camera is None or "road_labels" not in info:
        return []
    mass = attribution.add(
        view.camera, info["road_labels"], info.get("lead_vehicle_mask"), cell=cell_px
    )
    return [f"{name:12s} {m:5.1%}" for name, m in mass.items() if m >= 0.005]


def _frame(
    decision: Decision,
    scene: tuple[np.ndarray, np.ndarray] | None,
    legend: list[str],
    scale: int,
    cell_px: tuple[int, int] | None,
    rays: RayLayout | None,
    title: str,
) -> np.ndarray:
    d, view = decision, decision.view
    speed = float(d.info.get("speed", 0.0))
    text = FrameText(d.step, d.action, speed, d.reward, d.total, d.info.get("light_state"))
    image, labels = scene if scene is not None else (None, None)
    if view is None:
        return render_frame(d.camera, text, scale=scale, scene=image, title=title)
    return render_frame(
        d.camera,
        text,
        camera_attention=view.camera,
        sensor_attention=view.sensors,
        sensor_labels=view.sensor_labels,
        camera_share=view.camera_share,
        cell_px=cell_px,
        scale=scale,
        legend=legend,
        scene=image,
        scene_labels=labels,
        rays=rays,
        sensors=d.sensors,
        title=title,
    )


def video_path(video_dir: str | Path, prefix: str, episode: int) -> Path:
    """Where :func:`evaluate` writes the video of ``episode``: ``<video_dir>/<prefix>ep<k>.mp4``."""
    return Path(video_dir) / f"{prefix}ep{episode:02d}.mp4"


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
) -> EvalReport:
    """``episodes`` seeded episodes (seeds ``seed .. seed + episodes - 1``).

    With ``video_dir``, the first ``video_episodes`` successful episodes and the first
    ``video_episodes`` failed ones (when there are such) are filmed to
    ``video_dir/<prefix>ep<k>.mp4``: episodes are recorded while either outcome still lacks
    its videos, and a recording is drawn only when its outcome needs it.
    """
    results = []
    filmed = {True: 0, False: 0}  # success -> videos made
    scene = None
    rays = RayLayout.from_env(env) if video_dir is not None else None
    for k in range(episodes):
        record = video_dir is not None and min(filmed.values()) < video_episodes
        if record and scene is None:
            camera_hw = env.observation_space["camera"].shape[:2]
            scene = HighwayScene.attach(env, scene_scale(camera_hw, scale))
        result, recording = rollout(
            env, policy, k, seed + k, record, action_names, scale, scene=scene
        )
        if recording is not None and filmed[result.success] < video_episodes:
            filmed[result.success] += 1
            result.occlusion_ratio = map_occlusion_ratio(policy, recording.decisions, cell_px)
            path = video_path(video_dir, video_prefix, k)
            film(result, recording, path, fps, scale, cell_px, rays)
        results.append(result)
        if progress is not None:
            progress(result)
    return EvalReport(policy=policy.name, env_id=env_id, seed=seed, episodes=results)


def table_rows(report: EvalReport) -> list[list[Any]]:
    """One row per episode, in :data:`TABLE_COLUMNS` order (videos as ``Path``)."""
    return [
        [
            e.episode,
            e.seed,
            e.episode_return,
            e.length,
            e.success,
            e.collision,
            Path(e.video) if e.video else None,
        ]
        for e in report.episodes
    ]


def format_table(reports: Sequence[EvalReport], title: str = "Evaluation") -> str:
    """A plain-text table, one row per report, of the summary figures."""
    header = ["policy", "env", "episodes", "return", "success", "collision", "speed m/s", "length"]
    signals = any("red_light_rate" in r.summary() for r in reports)
    if signals:  # the signalised scenario's infractions
        header += ["red light", "pedestrian hit"]
    rows = []
    for report in reports:
        s = report.summary()
        rows.append(
            [
                report.policy,
                report.env_id.split("/")[-1],
                str(len(report.episodes)),
                f"{s['mean_return']:.2f} ± {s['std_return']:.2f}",
                f"{s['success_rate']:.0%}",
                f"{s['collision_rate']:.0%}",
                f"{s['mean_speed']:.1f}",
                f"{s['mean_length']:.1f}",
            ]
        )
        if signals:
            rows[-1] += [
                f"{s['red_light_rate']:.0%}" if "red_light_rate" in s else "",
                f"{s['pedestrian_collision_rate']:.0%}" if "pedestrian_collision_rate" in s else "",
            ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if i > 1 else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))
        )

    rule = "-" * len(line(header))
    return "\n".join([title, rule, line(header), rule, *(line(r) for r in rows), rule])
