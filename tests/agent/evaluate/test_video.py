"""Attention videos (agent/evaluate/video.py, scene.py): the scene at video size lined up with the
camera, a heat-map that leaves the scene visible, and the range rays drawn where the env casts
them, coloured by their sensor tokens' attention."""

from __future__ import annotations

import itertools
import math
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from drive_attention import envs  # noqa: F401  (registers the ids)
from drive_attention.agent.evaluate.mp4 import VideoWriter, read_video
from drive_attention.agent.evaluate.rollout import evaluate, rollout
from drive_attention.agent.evaluate.scene import HighwayScene, Snapshot, interpolate
from drive_attention.agent.evaluate.video import (
    MIN_SCENE_PX,
    PANEL_WIDTH,
    FrameText,
    RayLayout,
    attention_scale,
    ray_weights,
    render_frame,
    scene_scale,
)
from drive_attention.agent.policies.base import IdlePolicy
from drive_attention.envs.contract import CLASS_ID, PALETTE

ROOT = Path(__file__).resolve().parents[3]

TEXT = FrameText(0, "IDLE", 20.0, 0.0, 0.0)


@pytest.fixture(scope="module")
def highway() -> gym.Env:
    env = gym.make("DriveAttention/Highway-v0", road_labels=True)
    yield env
    env.close()


def test_scene_is_the_camera_view_drawn_at_video_size(highway: gym.Env) -> None:
    """The scene is at least 256 px and shows what the 64 px camera shows: its label map,
    sampled at the camera's pixel centres, agrees with the camera's (so the attention's patch
    grid lines up with the road under it)."""
    obs, info = highway.reset(seed=3)
    scale = scene_scale(obs["camera"].shape[:2], 1)
    assert scale == 4 and 64 * scale >= MIN_SCENE_PX
    scene = HighwayScene.attach(highway, scale)
    scene.start()
    image, labels = scene.draw(scene.snapshot())
    assert image.shape == (256, 256, 3) and labels.shape == (256, 256)
    np.testing.assert_array_equal(image, PALETTE[labels])
    centres = labels[scale // 2 :: scale, scale // 2 :: scale]  # (64, 64)
    # markings are at least a pixel wide, so wider at 64 px: compare them as road
    marking, road = CLASS_ID["lane_marking"], CLASS_ID["road"]
    same = np.where(centres == marking, road, centres) == np.where(
        info["road_labels"] == marking, road, info["road_labels"]
    )
    assert same.mean() > 0.97
    for name in ("vehicle", "ego", "lane_marking"):  # every road element is there
        assert (labels == CLASS_ID[name]).any(), name


def test_scene_records_every_simulation_step(highway: gym.Env) -> None:
    """Between two 1 Hz decisions the highway simulates 5 steps; each is recorded, the last
    being the state the next decision sees, and interpolation runs between them: half-way,
    every vehicle (the highway keeps them all from one step to the next) is drawn half-way
    between its two places. (Vehicles that appear or leave: the test below.)"""
    highway.reset(seed=4)
    scene = HighwayScene.attach(highway, 4)
    scene.start()
    before = scene.snapshot()
    highway.step(1)
    between = scene.take_between()
    assert len(between) == 5 and scene.take_between() == []
    np.testing.assert_allclose(between[-1].ego_position, scene.snapshot().ego_position)
    xs = [before.ego_position[0]] + [s.ego_position[0] for s in between]
    assert all(b > a for a, b in itertools.pairwise(xs)), "the ego drives on, step by step"
    a, b = between[0], between[1]
    half = interpolate(a, b, 0.5)
    np.testing.assert_allclose(half.ego_position, (a.ego_position + b.ego_position) / 2)
    assert set(half.others) == set(a.others) == set(b.others) != set()
    assert all(not np.allclose(a.others[k], b.others[k]) for k in a.others), "traffic moves"
    for key, corners in half.others.items():
        np.testing.assert_allclose(corners, (a.others[key] + b.others[key]) / 2, err_msg=str(key))


def test_only_filmed_episodes_ask_the_env_for_frames(monkeypatch: pytest.MonkeyPatch) -> None:
    """The recorder asks the env for its frames through the env's hook, episode by episode: an
    evaluation without videos registers nothing, a filmed episode gets every simulation step,
    and an unfilmed one after it (the scene kept for the next film) takes no snapshot."""
    env = gym.make("DriveAttention/Highway-v0", duration=3.0)
    base = env.unwrapped
    policy = IdlePolicy(base.idle_action)
    asked = []
    register = base.on_frame
    monkeypatch.setattr(base, "on_frame", lambda callback: (asked.append(1), register(callback)))
    evaluate(env, policy, episodes=2, seed=0)
    assert asked == [] and base._on_frame is None
    scene = HighwayScene.attach(env, 4)
    _, recording = rollout(env, policy, 0, 0, record=True, scene=scene)
    *steps, end = recording.decisions
    assert len(asked) == 1 and [len(d.between) for d in steps] == [5] * 3 and end.between == []
    snapshots = []
    monkeypatch.setattr(scene, "snapshot", lambda: snapshots.append(1))
    rollout(env, policy, 1, 1, record=False, scene=scene)
    assert snapshots == [] and len(asked) == 1 and base._on_frame is None
    env.close()


def test_interpolation_keeps_vehicles_that_appear_or_leave() -> None:
    box = np.zeros((4, 2))
    a = Snapshot(np.zeros(2), box, {1: box, 2: box + 1})
    b = Snapshot(np.ones(2), box + 2, {1: box + 4, 3: box})
    early, late = interpolate(a, b, 0.25), interpolate(a, b, 0.75)
    assert set(early.others) == {1, 2} and set(late.others) == {1, 3}
    np.testing.assert_allclose(early.others[1], box + 1)
    assert interpolate(a, b, 0.0) is a and interpolate(a, b, 1.0) is b


def test_heatmap_leaves_the_scene_visible() -> None:
    """An even spread of attention draws nothing; a patch at 8x (the top of the colour scale)
    is tinted, less on vehicles than on the road, and patches below even stay untouched."""
    camera = np.full((64, 64, 3), PALETTE[CLASS_ID["road"]], np.uint8)
    labels = np.full((256, 256), CLASS_ID["road"], np.uint8)
    labels[40:56, 40:56] = CLASS_ID["vehicle"]  # inside patch (1, 1) at scale 4
    scene = PALETTE[labels]
    plain = render_frame(camera, TEXT, scale=4, scene=scene, scene_labels=labels)
    even = render_frame(camera, TEXT, np.full((8, 8), 1 / 64), scale=4, scene=scene)
    np.testing.assert_array_equal(even[:256, :256], plain[:256, :256])
    focused = np.full((8, 8), 0.5 / 63)
    focused[1, 1] = 0.5  # 32x an even spread (64 tokens): the top of the scale
    assert attention_scale(focused, 64)[1, 1] == 1.0 and attention_scale(focused, 64)[5, 5] == 0
    shown = render_frame(camera, TEXT, focused, scale=4, scene=scene, scene_labels=labels)
    diff = np.abs(shown[:256, :256].astype(int) - plain[:256, :256].astype(int)).sum(-1)
    # the same pixels when they are road: tinted about three times as much
    road_labels = np.full_like(labels, CLASS_ID["road"])
    as_road = render_frame(camera, TEXT, focused, scale=4, scene=scene, scene_labels=road_labels)
    road_diff = np.abs(as_road[:256, :256].astype(int) - plain[:256, :256].astype(int)).sum(-1)
    vehicle, road = diff[44:52, 44:52].mean(), road_diff[44:52, 44:52].mean()
    assert diff[34:38, 34:62].mean() > 60  # patch (1, 1) off the vehicle: clearly tinted
    assert 0 < vehicle < 0.5 * road
    assert diff[160:256, 160:256].max() == 0  # far from it: untouched


@pytest.mark.parametrize(
    ("camera_hw", "grid", "hot", "box", "cold"),
    [
        # square grid, square frame: 16x16 camera px per patch, 64x64 at scale 4; patch (0, 2)
        # is the top row, third column; the transposed place (2, 0) is the left, lower down
        ((64, 64), (4, 4), (0, 2), (0, 64, 128, 192), (128, 192, 0, 64)),
        # 4 rows x 2 columns on a square frame: 16 x 32 camera px patches, 64 x 128 at scale 4;
        # patch (0, 1) is the top right; the map read as 2 x 4 would heat the lower left
        ((64, 64), (4, 2), (0, 1), (0, 64, 128, 256), (128, 256, 0, 64)),
        # 2 rows x 4 columns on a wide 32 x 64 frame: 16 x 16 camera px patches; (0, 2) is the
        # top row, third column; the bottom-left patch (1, 0) stays untouched
        ((32, 64), (2, 4), (0, 2), (0, 64, 128, 192), (64, 128, 0, 64)),
    ],
)
def test_the_heatmap_heats_an_off_diagonal_patch_in_its_own_row_and_column(
    camera_hw: tuple[int, int],
    grid: tuple[int, int],
    hot: tuple[int, int],
    box: tuple[int, int, int, int],
    cold: tuple[int, int, int, int],
) -> None:
    """Nearly all attention on one patch off the diagonal (the top of the colour scale), the
    rest far below an even spread (no tint). In the rendered frame the tint sits on that
    patch's video pixels (``box``: rows r0..r1, columns c0..c1): its centre strongly tinted,
    the tint's centre of mass inside the box, and the place a transposed map would heat
    (``cold``) at most faintly touched by the smooth upsampling."""
    camera = np.full((*camera_hw, 3), 100, np.uint8)
    n = grid[0] * grid[1]
    attention = np.full(grid, 1e-4)
    attention[hot] = 1.0 - (n - 1) * 1e-4
    plain = render_frame(camera, TEXT, scale=4)
    shown = render_frame(camera, TEXT, attention, scale=4)
    height, width = camera_hw[0] * 4, camera_hw[1] * 4
    diff = np.abs(shown[:height, :width].astype(int) - plain[:height, :width].astype(int)).sum(-1)
    r0, r1, c0, c1 = box
    assert diff[(r0 + r1) // 2, (c0 + c1) // 2] > 200
    rows, cols = np.indices(diff.shape)
    centre = (float((rows * diff).sum() / diff.sum()), float((cols * diff).sum() / diff.sum()))
    assert r0 <= centre[0] < r1 and c0 <= centre[1] < c1, centre
    r0, r1, c0, c1 = cold
    assert diff[r0:r1, c0:c1].max() < 10


def test_rays_are_drawn_where_the_env_casts_them(highway: gym.Env) -> None:
    """Ray k points at world angle 2 pi k / n from the ego; the attended ray's token colours it
    (bright) and the others stay dim; a sector token ``rays.04-05`` colours both its rays."""
    highway.reset(seed=0)
    layout = RayLayout.from_env(highway)
    assert layout.rays == tuple(range(16)) and layout.range_m == 60.0
    assert layout.px_per_m == pytest.approx(1.0) and layout.ego_px == (0.3 * 64, 0.5 * 64)
    labels = ("ego", *(f"rays.{k:02d}-{k + 1:02d}" for k in range(0, 16, 2)))
    weights = np.full(len(labels), 0.002)
    weights[3] = 0.5  # rays.04-05: ray 4 points straight down (90 degrees)
    np.testing.assert_array_equal(
        ray_weights(layout, weights, labels)[[3, 4, 5, 6]], weights[[0, 3, 3, 0]]
    )
    sensors = np.zeros(len(highway.unwrapped.sensor_names), np.float32)
    sensors[list(layout.distance_index)] = 1.0  # nothing within range
    camera = np.full((64, 64, 3), 60, np.uint8)
    plain = render_frame(camera, TEXT, scale=4)
    shown = render_frame(
        camera, TEXT, np.full((8, 8), 0.5 / 64), weights, labels, 0.5, scale=4,
        rays=layout, sensors=sensors,
    )  # fmt: skip
    ego = np.array(layout.ego_px) * 4

    def change(angle: float, distance: float) -> float:
        x, y = (ego + distance * np.array([math.cos(angle), math.sin(angle)])).round().astype(int)
        return float(np.abs(shown[y, x].astype(int) - plain[y, x].astype(int)).sum())

    down = change(math.pi / 2, 60)  # ray 4
    up = change(3 * math.pi / 2, 60)  # ray 12, its token at an even spread
    between = change(math.pi / 2 + math.pi / 16, 60)  # between rays 4 and 5: no ray there
    assert down > 3 * up > 0 and between < down / 4
    assert shown.shape[1] == 256 + PANEL_WIDTH
    # the non-ray token is listed in the panel, the rays are not
    panel = shown[:, 256:]
    assert np.abs(panel.astype(int) - plain[:, 256:].astype(int)).sum() > 0


def test_without_a_layout_every_token_gets_a_bar() -> None:
    """An env that does not say where its rays are (CARLA's are relative to the heading): the
    rays are listed as bars, the scene untouched by them."""
    camera = np.full((64, 64, 3), 60, np.uint8)
    labels = ("ego", "rays.00", "rays.01")
    with_bars = render_frame(camera, TEXT, None, np.array([0.2, 0.5, 0.3]), labels, scale=4)
    plain = render_frame(camera, TEXT, scale=4)
    np.testing.assert_array_equal(with_bars[:256, :256], plain[:256, :256])
    assert (with_bars[:, 256:] != plain[:, 256:]).any()


def test_the_panel_names_the_egos_light_where_the_env_has_one() -> None:
    camera = np.zeros((32, 32, 3), np.uint8)
    plain = render_frame(camera, TEXT, scale=4)
    lit = render_frame(camera, FrameText(0, "SLOWER", 8.0, 0.0, 0.0, "red"), scale=4)
    same_action = render_frame(camera, FrameText(0, "SLOWER", 8.0, 0.0, 0.0), scale=4)
    assert plain.shape == lit.shape
    assert not np.array_equal(lit, same_action), "the light's line is printed"


def _file_size_limit(limit: int) -> Callable[[], None]:
    def apply() -> None:  # in the child: writes past ``limit`` bytes fail, as on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    return apply


def test_a_video_cut_off_by_a_full_disk_is_refused_in_one_line(tmp_path: Path) -> None:
    """A write cut short (here a file size limit: the output stops at 12 kB) leaves no
    unplayable mp4 under the video's name, and the script says so in one line."""
    out = tmp_path / "eval.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "evaluate.py"), "--policy", "idle", "--env",
         "DriveAttention/Highway-v0", "--episodes", "1", "--video", "--json", str(out)],
        cwd=ROOT, env={**os.environ, "WANDB_MODE": "disabled"}, capture_output=True, text=True,
        timeout=240, preexec_fn=_file_size_limit(12_000),
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("error: cannot write the video") and "cut off" in line, line
    assert not list(tmp_path.rglob("*.mp4")), sorted(tmp_path.rglob("*"))
    assert not list(tmp_path.rglob(".*.tmp-*")), sorted(tmp_path.rglob("*"))


def test_a_whole_video_is_put_in_place(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    with VideoWriter(path) as writer:
        for value in range(0, 250, 25):
            writer.append(np.full((64, 96, 3), value, np.uint8))
    frames = read_video(path)
    assert frames.shape[0] == 10 and frames.shape[1:3] == (64, 96)
    assert abs(int(frames[-1].mean()) - 225) < 8 and [p.name for p in tmp_path.iterdir()] == [
        path.name
    ]
