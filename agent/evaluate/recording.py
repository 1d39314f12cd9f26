"""Filming a recorded episode as an attention video: the decisions, the simulation frames between
them, the per-class legend and the map's faithfulness (occlusion ratio)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from stable_baselines3.common.policies import ActorCriticPolicy

from drive_attention.agent.evaluate.agreement import RelevanceJudge
from drive_attention.agent.evaluate.attribution import Attribution, SB3Probe, occlusion_test
from drive_attention.agent.evaluate.episodes import EpisodeResult, faithfulness_text, outcome
from drive_attention.agent.evaluate.mp4 import VideoWriter
from drive_attention.agent.evaluate.scene import HighwayScene, Snapshot, interpolate
from drive_attention.agent.evaluate.video import (
    FrameText,
    RayLayout,
    object_marks,
    render_frame,
    scene_scale,
)
from drive_attention.agent.policies.base import AttentionView, Policy, TrainedPolicy
from drive_attention.envs.contract import CLASS_ID


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
    state: Any = None  # a copy of the batched state, to judge relevance on (RelevanceJudge)


@dataclass
class Recording:
    """An episode's decisions, enough to film it afterwards."""

    decisions: list[Decision]
    policy_hz: float  # [Hz] decisions per second
    scene: HighwayScene | None  # draws the snapshots; None: the camera frames are shown


def map_occlusion_ratio(
    policy: Policy, decisions: list[Decision], cell_px: tuple[int, int] | None = None
) -> float | None:
    """The occlusion ratio (:func:`agent.evaluate.attribution.occlusion_test`) of the camera map
    a video shows, on that episode's decision frames; None for a policy without one."""
    shown = [d for d in decisions if d.view is not None and d.view.camera is not None]
    model = getattr(policy, "model", None)
    if not shown or model is None or not isinstance(policy, TrainedPolicy):
        return None
    if not isinstance(model.policy, ActorCriticPolicy):  # the probe reads PPO's distribution
        return None  # (SAC's actor has none here: its videos go without the verdict)

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
    judge: RelevanceJudge | None = None,
) -> Path | None:
    """Write ``recording`` as an attention video at ``path`` and fill in ``result``'s video and
    attention figures. With ``judge``, the objects relevant at each decision (those the
    teacher's decision depends on) are outlined.

    The video plays at the episode's pace: ``round(fps / policy_hz)`` frames per decision, the
    frames between two decisions interpolated from the simulation steps where the backend
    exposes them (else the decision's frame is held); the last frame is held for one decision.
    The scene is drawn at :func:`agent.evaluate.video.scene_scale` times the camera's size.
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
        for i, decision in enumerate(decisions):
            legend = _legend(decision, attribution, cell_px)
            outline = _relevant(decision, judge)
            if outline is not None:
                legend = [*legend, f"outlined: relevant ({_count(outline)})"]
            last = i == len(decisions) - 1
            crash = _ego_at(decision, rays) if last and result.collision else None
            snapshots = [decision.scene, *decision.between] if decision.scene is not None else []
            if scene is None or len(snapshots) < 2:  # a still frame, held
                still = scene.draw(snapshots[0]) if scene is not None and snapshots else None
                frame = _frame(decision, still, legend, scale, cell_px, rays, title, outline, crash)
                for _ in range(per_decision):
                    writer.append(frame)
                continue
            for j in range(per_decision):  # time j / per_decision of the way to the next one
                position = j / per_decision * (len(snapshots) - 1)
                i = int(position)
                snap = interpolate(snapshots[i], snapshots[i + 1], position - i)
                image = scene.draw(snap)
                writer.append(
                    _frame(decision, image, legend, scale, cell_px, rays, title, outline, crash)
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


def _relevant(decision: Decision, judge: RelevanceJudge | None) -> np.ndarray | None:
    """(H, W) bool camera pixels of the objects relevant at this decision, or None."""
    if judge is None or decision.state is None:
        return None
    return judge.mask(judge.now(decision.state), decision.info)


def _ego_at(decision: Decision, rays: RayLayout | None) -> tuple[float, float] | None:
    """Where the ego is in the camera frame [px]: the centre of its pixels in the road labels,
    else the camera's ego pixel, else None."""
    labels = decision.info.get("road_labels")
    if labels is not None:
        rows, cols = np.nonzero(labels == CLASS_ID["ego"])
        if len(rows):
            return float(cols.mean()), float(rows.mean())
    return tuple(rays.ego_px) if rays is not None else None


def _count(mask: np.ndarray) -> str:
    """How many separate outlined regions ``mask`` has, in words."""
    n = cv2.connectedComponents(mask.astype(np.uint8))[0] - 1
    return "none in view" if n == 0 else f"{n} in view"


def _frame(
    decision: Decision,
    scene: tuple[np.ndarray, np.ndarray] | None,
    legend: list[str],
    scale: int,
    cell_px: tuple[int, int] | None,
    rays: RayLayout | None,
    title: str,
    outline: np.ndarray | None = None,
    crash: tuple[float, float] | None = None,
) -> np.ndarray:
    d, view = decision, decision.view
    speed = float(d.info.get("speed", 0.0))
    text = FrameText(d.step, d.action, speed, d.reward, d.total, d.info.get("light_state"))
    image, labels = scene if scene is not None else (None, None)
    if view is None:
        return render_frame(
            d.camera, text, scale=scale, scene=image, title=title, relevant=outline, crash_at=crash
        )
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
        relevant=outline,
        objects=object_marks(d.info, view.sensor_labels, view.sensors),
        crash_at=crash,
    )


def video_path(video_dir: str | Path, prefix: str, episode: int) -> Path:
    """Where :func:`evaluate` writes the video of ``episode``: ``<video_dir>/<prefix>ep<k>.mp4``."""
    return Path(video_dir) / f"{prefix}ep{episode:02d}.mp4"


def video_name_pattern(prefix: str) -> re.Pattern[str]:
    """The file names :func:`video_path` gives with ``prefix``, of any episode."""
    return re.compile(re.escape(prefix) + r"ep\d{2,}\.mp4")
