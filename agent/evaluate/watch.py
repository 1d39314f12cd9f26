"""Watch a trained agent drive (``scripts/watch.py``): the shipped default agent unless a run is
given, a few seeded episodes filmed as attention videos and, where a display exists, played in a
window as each episode ends.

The shipped agent (:data:`PRETRAINED`) is ``make train``'s default run kept in the package: its
resolved config, final checkpoint (safetensors) and final evaluation, in the layout of a run
folder, so ``evaluate.py --run`` reads it too.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import cv2

from drive_attention.agent.evaluate.agreement import RelevanceJudge
from drive_attention.agent.evaluate.episodes import EpisodeResult, video_caption
from drive_attention.agent.evaluate.mp4 import read_video
from drive_attention.agent.evaluate.recording import film, map_occlusion_ratio
from drive_attention.agent.evaluate.rollout import rollout
from drive_attention.agent.evaluate.video import RayLayout
from drive_attention.agent.run.build import make_env
from drive_attention.agent.run.config import ConfigError
from drive_attention.agent.run.files import check_writable
from drive_attention.agent.run.limits import check_episodes
from drive_attention.agent.run.loading import load_agent
from drive_attention.envs import camera_geometry

PRETRAINED = Path(__file__).resolve().parents[1] / "pretrained" / "default"


def has_display() -> bool:
    """Whether a window can be opened (an X11 or Wayland display is named)."""
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def play(path: Path, fps: int, title: str = "drive-attention") -> bool:
    """Show an mp4 in an OpenCV window at ``fps``; False where no window opens (a headless
    OpenCV build), True when played or closed with q / Esc."""
    try:
        for frame in read_video(path):
            cv2.imshow(title, cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
            if cv2.waitKey(max(1, round(1000 / fps))) & 0xFF in (ord("q"), 27):
                break
        cv2.destroyWindow(title)
    except cv2.error:  # opencv-python-headless: no GUI
        return False
    return True


def watch(
    run: Path | None = None,
    episodes: int = 3,
    seed: int = 0,
    env_id: str | None = None,
    out_dir: Path = Path("runs/watch"),
    window: bool | None = None,
    relevance: bool = False,
    device: str = "cpu",
    say: Callable[[str], None] = print,
) -> list[EpisodeResult]:
    """Film ``episodes`` seeded episodes (seeds ``seed..``) of the agent of ``run`` (default
    :data:`PRETRAINED`) into ``out_dir``; ``window`` (default: where a display exists) plays
    each one; ``relevance`` outlines the objects the teacher's decision depends on (batched
    scenarios; about half a second per decision). Returns the episodes, each with its video."""
    if episodes < 1:
        raise ConfigError(f"--episodes: must be at least 1, got {episodes}")
    check_episodes("--episodes", episodes)
    source = Path(run) if run is not None else PRETRAINED
    if not (source / "config.yaml").is_file():
        raise ConfigError(f"{source}: not a run folder (no config.yaml); give --run runs/<name>")
    agent = load_agent(source, env_id=env_id, device=device)
    config = agent.config
    check_writable(out_dir)
    kwargs = {**config.env.kwargs, "road_labels": True}  # the videos' attention legend
    cell = camera_geometry(config.env.id, **config.env.kwargs).patch_cell(config.model.patch)
    # talk-ready whatever the run was trained with: a 512 px scene at 15 frames a second
    fps, scale = max(config.logging.video_fps, 15), max(config.logging.video_scale, 8)
    show = has_display() if window is None else window
    env = make_env(config.env.id, kwargs)
    results = []
    try:
        judge = RelevanceJudge.attach(env) if relevance else None
        if relevance and judge is None:
            say(f"note: no relevance on {config.env.id} (batched scenarios with meta-actions only)")
        rays = RayLayout.from_env(env)
        name = source.name if run is not None else "pretrained"
        for k in range(episodes):
            result, recording = rollout(
                env, agent.policy, k, seed + k, True, agent.spec.action_names, scale, judge=judge
            )
            path = out_dir / f"{name}_{config.env.id.split('/')[-1]}_seed{seed + k}.mp4"
            result.occlusion_ratio = map_occlusion_ratio(agent.policy, recording.decisions, cell)
            film(result, recording, path, fps, scale, cell, rays, judge)
            say(f"{path}  ({video_caption(result)})")
            results.append(result)
            if show and not play(path, fps):
                say("no window (OpenCV without a GUI): the videos are the files above")
                show = False
    finally:
        env.close()
    return results
