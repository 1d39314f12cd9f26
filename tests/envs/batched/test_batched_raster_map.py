"""MapRasterizer (envs/batched/raster_map.py): the batched camera for roads with lanes in any
direction gives the highway-env backend's frames (both crop envs.camera.RoadMap), the map is
within a pixel here and there of drawing every frame with OpenCV, and agrees with
TorchRasterizer on the roads that one traces."""

from __future__ import annotations

import functools

import cv2
import gymnasium as gym
import numpy as np
import pytest
import torch

from drive_attention import envs  # noqa: F401  (registers the ids)
from drive_attention.envs.batched.raster_map import MapRasterizer
from drive_attention.envs.batched.render import TorchRasterizer, box_patch, draw_boxes
from drive_attention.envs.batched.road import lane_table
from drive_attention.envs.batched.scenarios import empty_traffic, slot_order
from drive_attention.envs.batched.sim import EGO, IDM, Traffic
from drive_attention.envs.camera import Rasterizer, vehicle_corners
from drive_attention.envs.contract import CLASS_ID

STEPS = 6  # frames per seed
SEEDS = (0, 1)


def _snapshot(sim) -> np.ndarray:
    """(N, 5) x, y [m], heading [rad], length, width [m] of the ego, then of the other vehicles
    of the road (what the OpenCV camera draws; its objects are not drawn)."""
    vehicles = [v for v in slot_order(sim) if v in sim.road.vehicles]
    return np.array([[*v.position, v.heading, v.LENGTH, v.WIDTH] for v in vehicles])


def _traffic(snapshots: list[np.ndarray], device: str = "cpu") -> Traffic:
    """Traffic (B = len(snapshots)) holding each snapshot's vehicles, the ego in slot 0."""
    n = max(len(s) for s in snapshots)
    t = empty_traffic(len(snapshots), n, torch.device(device))
    for b, s in enumerate(snapshots):
        for name, column in zip(("x", "y", "heading", "length", "width"), s.T):
            getattr(t, name)[b, : len(s)] = torch.as_tensor(column, dtype=torch.float32)
        t.kind[b, 0], t.kind[b, 1 : len(s)] = EGO, IDM
    return t


@functools.cache
def _episodes(title: str, size: int, view_m: float | None):
    """The highway-env backend along idle-action episodes: its lanes, camera and frames
    (vehicle snapshot, road labels) at every step."""
    options = {"view_m": view_m} if view_m else {}
    env = gym.make(
        f"DriveAttention/{title}-v0", road_labels=True, camera_size=(size, size), **options
    )
    env = env.unwrapped
    frames = []
    for seed in SEEDS:
        _, info = env.reset(seed=seed)
        for _ in range(STEPS):
            frames.append((_snapshot(env.sim), info["road_labels"].copy()))
            _, _, terminated, truncated, info = env.step(env.idle_action)
            if terminated or truncated:
                break
    return env.sim.road.network, env.raster, frames


def _map_raster(network, camera: Rasterizer, device: str = "cpu", **kwargs) -> MapRasterizer:
    return MapRasterizer(
        network.lanes_list(),
        camera.height,
        camera.width,
        camera.scaling,
        tuple(camera.centering),
        device,
        **kwargs,
    )


def _iou(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    out = {}
    for name in ("off_road", "road", "lane_marking", "vehicle", "ego"):
        x, y = a == CLASS_ID[name], b == CLASS_ID[name]
        if (x | y).any():
            out[name] = float((x & y).sum() / (x | y).sum())
    return out


@pytest.mark.parametrize("title", ["Roundabout", "Intersection", "Merge"])
@pytest.mark.parametrize(("size", "view_m"), [(64, None), (128, None), (64, 48.0)])
def test_is_the_highway_env_cameras_frame(title: str, size: int, view_m: float | None) -> None:
    """The highway-env backend's frames, pixel for pixel, for the same vehicles along drives:
    both crop the road from the same RoadMap, and fill boxes by cv2's rule."""
    network, camera, frames = _episodes(title, size, view_m)
    assert camera.road_map is not None
    raster = _map_raster(network, camera)
    labels = raster.draw(_traffic([s for s, _ in frames])).numpy()  # (B, H, W)
    reference = np.stack([r for _, r in frames])
    for step, (mine, ref) in enumerate(zip(labels, reference)):
        assert (mine == ref).all(), f"{title} {size} px view {view_m} frame {step}"


@pytest.mark.parametrize("title", ["Roundabout", "Intersection"])
@pytest.mark.parametrize(("size", "view_m"), [(64, None), (128, None), (64, 48.0)])
def test_map_frames_agree_with_drawing_every_frame(
    title: str, size: int, view_m: float | None
) -> None:
    """The map's road layer against cv2 drawing the lanes for each frame at the exact origin
    (what the highway-env camera did before the map): within a pixel here and there."""
    network, camera, frames = _episodes(title, size, view_m)
    per_frame = Rasterizer(camera.height, camera.width, camera.scaling, tuple(camera.centering))
    per_frame.set_road(network.lanes_list())
    per_frame.road_map = None  # draw every frame
    for step, (snapshot, labels) in enumerate(frames):
        corners = vehicle_corners(snapshot[:, :2], snapshot[:, 2], snapshot[:, 3], snapshot[:, 4])
        drawn = per_frame.draw(snapshot[0, :2], corners[1:], corners[0]).copy()
        agree = (drawn == labels).mean()
        assert agree >= 0.99, f"{title} {size} px view {view_m} frame {step}: {agree:.4f}"
        for name in ("road", "lane_marking", "vehicle", "ego"):
            present = (drawn == CLASS_ID[name]).any()
            assert present == (labels == CLASS_ID[name]).any(), f"frame {step}: {name}"
        iou = _iou(drawn, labels)
        assert min(iou.values()) > 0.9, iou


@pytest.mark.parametrize("title", ["Highway", "Merge"])
@pytest.mark.parametrize(("size", "view_m"), [(64, None), (128, None), (96, 40.0)])
def test_agrees_with_torch_rasterizer(title: str, size: int, view_m: float | None) -> None:
    """On the roads TorchRasterizer traces exactly (lanes along +x), both agree."""
    network, camera, frames = _episodes(title, size, view_m)
    exact = TorchRasterizer(
        lane_table(network), size, size, camera.scaling, tuple(camera.centering)
    )
    t = _traffic([s for s, _ in frames])
    mine, theirs = _map_raster(network, camera).draw(t), exact.draw(t)
    agree = (mine == theirs).float().mean((1, 2))  # (B,)
    assert agree.min() >= 0.99, agree


def test_environments_are_independent() -> None:
    """B environments drawn together = each drawn alone."""
    network, camera, frames = _episodes("Roundabout", 64, None)
    raster = _map_raster(network, camera)
    t = _traffic([s for s, _ in frames[::2]])
    together = raster.draw(t)
    for b in range(t.x.shape[0]):
        alone = raster.draw(t.select(torch.tensor([b])))
        assert torch.equal(alone[0], together[b]), b
    assert not torch.equal(together[0], together[1])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    network, camera, frames = _episodes("Intersection", 64, None)
    snapshots = [s for s, _ in frames]
    cpu = _map_raster(network, camera).draw(_traffic(snapshots))
    cuda = _map_raster(network, camera, "cuda").draw(_traffic(snapshots, "cuda"))
    assert cuda.is_cuda
    assert torch.equal(cuda.cpu(), cpu)


def test_memory_cap_lowers_the_phases_then_refuses() -> None:
    network, camera, _ = _episodes("Roundabout", 64, None)
    full = _map_raster(network, camera)
    assert full.factor == 16 and full.nbytes <= 64 * 2**20
    capped = _map_raster(network, camera, max_bytes=full.nbytes // 3)
    assert capped.factor < full.factor and capped.nbytes <= full.nbytes // 3
    with pytest.raises(ValueError, match="max_bytes"):
        _map_raster(network, camera, max_bytes=1000)


def test_outside_the_map_is_off_road() -> None:
    network, camera, frames = _episodes("Intersection", 64, None)
    snapshot = frames[0][0][:1].copy()  # the ego alone
    snapshot[0, :2] = (5000.0, -5000.0)  # [m] far from the road
    labels = _map_raster(network, camera).draw(_traffic([snapshot]))[0]
    assert set(labels.unique().tolist()) == {CLASS_ID["off_road"], CLASS_ID["ego"]}


@pytest.mark.parametrize("scaling", [1.0, 2.0, 4.3])
def test_exact_boxes_are_opencv_boxes(scaling: float) -> None:
    """draw_boxes(exact=True) fills cv2.fillPoly's pixels at any heading (inside the frame)."""
    size = 64
    rng = np.random.default_rng(0)
    camera = Rasterizer(size, size, scaling, (0.5, 0.5))
    patch = box_patch(scaling, "cpu")
    checked = 0
    for _ in range(200):
        position = rng.uniform(0, size / scaling, 2)  # [m], the frame's origin at 0
        heading = rng.choice([0.0, np.pi / 2, np.pi / 4, rng.uniform(-np.pi, np.pi)])
        corners = vehicle_corners(
            position[None], np.array([heading]), np.array([5.0]), np.array([2.0])
        )[0]
        if not ((corners * scaling > 1).all() and (corners * scaling < size - 2).all()):
            continue  # cv2 clips boxes cut by the frame border its own way
        reference = np.zeros((size, size), np.uint8)
        cv2.fillPoly(reference, [camera.to_pixels(corners, np.zeros(2))], 1, cv2.LINE_8, 4)
        t = _traffic([np.array([[*position, heading, 5.0, 2.0]])])
        t.kind[:] = IDM
        flat = torch.zeros(size * size + 1, dtype=torch.uint8)
        draw_boxes(flat, t, torch.zeros(1, 2), patch, (size, size), scaling, exact=True)
        mine = flat[:-1].reshape(size, size).numpy() == CLASS_ID["vehicle"]
        np.testing.assert_array_equal(mine, reference.astype(bool))
        checked += 1
    assert checked > 50
