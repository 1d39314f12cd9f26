"""Attention videos: the scene under a heat-map of the policy's camera attention, the range rays
drawn in it coloured by their sensor tokens' attention, and a panel with the other sensor tokens,
the action, speed, reward and return.

Frame layout (``scale`` = video pixels per camera pixel, at least :data:`MIN_SCENE_PX` across)::

    +-----------------------------+---------------------------+
    | scene (H*scale x W*scale)   | episode 3: success, +9.1  |
    | + camera attention, smooth, | camera 63% | sensors 37%  |
    |   transparent where low     | [colour bar low -> high]  |
    | + range rays from the ego,  | ego ■ 21%  route ■ 3%     |
    |   colour and width by their | rays 13% (in the scene)   |
    |   token's attention         | step, action, speed,      |
    |                             | reward, return, classes   |
    +-----------------------------+---------------------------+

Colours come from one perceptual colour map (:data:`COLORMAP`, inferno) for both modalities.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from drive_attention.agent.evaluate.colours import LIFT_MAX, TEXT, attention_scale, colour
from drive_attention.agent.evaluate.colours import put_text as _text
from drive_attention.agent.evaluate.marks import (
    CRASH_COLOUR,
    OBJECT_TOKEN,
    RELEVANT_COLOUR,
    ObjectMark,
    draw_crash,
    draw_object_marks,
    object_marks,
    outline_pixels,
)
from drive_attention.envs.contract import CLASS_ID

__all__ = [  # the drawing parts live in colours and marks; the renderer gives them all
    "CRASH_COLOUR", "LIFT_MAX", "RELEVANT_COLOUR", "FrameText", "ObjectMark", "RayLayout",
    "attention_scale", "colour", "draw_crash", "draw_object_marks", "object_marks",
    "outline_pixels", "render_frame", "scene_scale",
]  # fmt: skip

MIN_SCENE_PX = 256  # [px] the scene is drawn at least this large (its shorter side)
PANEL_WIDTH = 256  # [px] width of the text panel
ALPHA_MAX = 0.6  # heat-map opacity at the top of the colour scale (0 at its bottom)
KEEP_VISIBLE = 0.35  # the heat-map's opacity is scaled by this on vehicles, ego and markings
_DIM = (150, 150, 150)
_BAR = (255, 170, 60)
_BACKGROUND = (24, 24, 28)
_SHARP = [CLASS_ID[name] for name in ("vehicle", "ego", "lane_marking")]
_RAY_TOKEN = re.compile(r"^rays\.(\d+)(?:-(\d+))?$")
_RAY_DISTANCE = re.compile(r"^rays\.(\d+)\.distance$")


def scene_scale(camera_hw: tuple[int, int], scale: int = 1) -> int:
    """Video pixels per camera pixel: ``scale``, raised until the scene is
    :data:`MIN_SCENE_PX` across."""
    return max(int(scale), math.ceil(MIN_SCENE_PX / max(1, min(camera_hw))))


@dataclass
class FrameText:
    """What the panel prints under the attention legend of one video frame."""

    step: int
    action: str
    speed: float  # [m/s]
    reward: float
    episode_return: float
    light: str | None = None  # the ego's traffic light where the env has lights


@dataclass
class RayLayout:
    """Where the env's range rays lie in its camera frame, to draw them in the scene.

    Ray ``k`` leaves the ego at world angle ``2 pi k / n`` (highway-env's lidar and the batched
    simulator's); the embedded camera is world-aligned (x right, y down in the image), so it
    points along ``(cos, sin)`` in pixels too.
    """

    rays: tuple[int, ...]  # ray ids, in sensor order
    angles: np.ndarray  # (n,) [rad] image direction of each ray
    distance_index: tuple[int, ...]  # index of ``rays.<k>.distance`` in the sensor vector
    range_m: float  # [m] what a distance of 1.0 means
    px_per_m: float  # [px/m] camera pixels per metre
    ego_px: tuple[float, float]  # (x, y) [px] the ego in the camera frame

    @classmethod
    def from_env(cls, env: Any) -> RayLayout | None:
        """The layout of an embedded backend's env (highway-env or batched), else None (the
        rays are then listed in the panel instead)."""
        u = getattr(env, "unwrapped", env)
        cfg = getattr(u, "config", None)
        names = list(getattr(u, "sensor_names", ()))
        camera = getattr(u, "camera_geometry", None)  # envs.observation.CameraGeometry
        try:
            n_rays, range_m = int(cfg.n_rays), float(cfg.ray_range)
        except (AttributeError, TypeError, ValueError):
            return None
        if camera is None or not camera.top_view:  # a perspective camera: no ray in the frame
            return None
        found = [(int(m.group(1)), i) for i, n in enumerate(names) if (m := _RAY_DISTANCE.match(n))]
        if not found or n_rays < 1:
            return None
        rays = tuple(k for k, _ in found)
        return cls(
            rays=rays,
            angles=2 * np.pi * np.array(rays, np.float64) / n_rays,
            distance_index=tuple(i for _, i in found),
            range_m=range_m,
            px_per_m=camera.px_per_m,
            ego_px=camera.ego_px,
        )


def ray_weights(
    layout: RayLayout, sensor_attention: np.ndarray, sensor_labels: Sequence[str]
) -> np.ndarray:
    """(n,) the attention of the token that holds each ray (``rays.03`` or ``rays.02-03``)."""
    by_ray: dict[int, float] = {}
    for label, weight in zip(sensor_labels, sensor_attention):
        match = _RAY_TOKEN.match(label)
        if match:
            first = int(match.group(1))
            last = int(match.group(2)) if match.group(2) else first
            for k in range(first, last + 1):
                by_ray[k] = float(weight)
    return np.array([by_ray.get(k, 0.0) for k in layout.rays])


def draw_rays(
    image: np.ndarray,
    layout: RayLayout,
    sensors: np.ndarray,
    weights: np.ndarray,
    scale: int,
    labels: np.ndarray | None = None,
) -> None:
    """Draw each ray from the ego to its hit (or, fainter, to its range), in place: colour and
    width grow with ``weights`` (n,) in [0, 1]; a dot marks a hit. Vehicles and the ego
    (``labels``, road-class ids at display size) stay uncovered."""
    ego = np.array(layout.ego_px) * scale
    shift = 4  # fixed-point bits for sub-pixel line ends
    fractions = np.clip(sensors[list(layout.distance_index)], 0.0, 1.0)  # (n,) of the range
    hits = fractions < 0.999
    base = image.astype(np.float32)
    for hit, alpha in ((False, 0.2), (True, 0.9)):  # rays that see nothing: faint and thin
        layer = np.round(base).astype(np.uint8)
        for j in np.argsort(weights):  # the most attended on top
            if hits[j] != hit:
                continue
            w = float(np.clip(weights[j], 0.0, 1.0))
            length = fractions[j] * layout.range_m * layout.px_per_m * scale  # [px]
            direction = np.array([math.cos(layout.angles[j]), math.sin(layout.angles[j])])
            end = ego + direction * length
            rgb = tuple(int(c) for c in colour(0.2 + 0.8 * w))
            start_fp = tuple(int(v) for v in np.round(ego * (1 << shift)))
            end_fp = tuple(int(v) for v in np.round(end * (1 << shift)))
            width = 1 + round(2 * w) if hit else 1
            cv2.line(layer, start_fp, end_fp, rgb, width, cv2.LINE_AA, shift)
            if hit:
                centre = tuple(int(v) for v in np.round(end))
                cv2.circle(layer, centre, 2 + round(2 * w), rgb, -1, cv2.LINE_AA)
        base = base * (1 - alpha) + layer.astype(np.float32) * alpha  # unchanged off the rays
    out = np.round(base).astype(np.uint8)
    if labels is not None:  # vehicles and the ego stay visible
        keep = np.isin(labels, _SHARP[:2])
        out[keep] = image[keep]
    image[:] = out


def heatmap_overlay(
    frame: np.ndarray,
    values: np.ndarray,
    cell_px: tuple[int, int],
    alpha: float = ALPHA_MAX,
    labels: np.ndarray | None = None,
) -> np.ndarray:
    """Blend a smooth :data:`COLORMAP` heat-map of ``values`` over ``frame``.

    ``frame`` is ``(H, W, 3)`` uint8 at display size; ``values`` is ``(gh, gw)`` in [0, 1] over
    the patch grid (:func:`attention_scale`); ``cell_px`` is the display size ``(ph, pw)`` of
    one patch. The grid covers the top-left ``(gh * ph, gw * pw)`` pixels (the camera stem
    drops any remainder), so the map is upsampled (bicubic) to exactly that area. Opacity is
    ``alpha`` times the value, 0 at the bottom of the scale, so the scene stays visible; on
    vehicles, the ego and lane markings (``labels``, ``(H, W)`` road-class ids at display size)
    it is scaled by :data:`KEEP_VISIBLE`. Where the value passes 0.5 the region is outlined.
    """
    gh, gw = values.shape
    ph, pw = cell_px
    height, width = min(gh * ph, frame.shape[0]), min(gw * pw, frame.shape[1])
    weights = np.clip(values.astype(np.float32), 0.0, 1.0)  # (gh, gw)
    up = cv2.resize(weights, (gw * pw, gh * ph), interpolation=cv2.INTER_CUBIC)
    up = np.clip(up[:height, :width], 0.0, 1.0)  # (h, w)
    colours = colour(up).astype(np.float32)  # (h, w, 3)
    opacity = alpha * up  # (h, w)
    if labels is not None:
        sharp = np.isin(labels[:height, :width], _SHARP)
        opacity = np.where(sharp, opacity * KEEP_VISIBLE, opacity)
    out = frame.copy()
    region = out[:height, :width].astype(np.float32)
    blended = region * (1 - opacity[..., None]) + colours * opacity[..., None]
    out[:height, :width] = np.round(blended).astype(np.uint8)
    mask = (up >= 0.5).astype(np.uint8)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    edge = tuple(int(c) for c in colour(0.9))
    cv2.drawContours(out[:height, :width], contours, -1, edge, 1, cv2.LINE_AA)
    return out


def _short(name: str) -> str:
    """A token's name in a chip's room: ``objects.02`` -> ``obj 02``, others cut to 8."""
    match = OBJECT_TOKEN.match(name)
    return f"obj {match.group(1)}" if match else name[:8]


def render_frame(
    camera: np.ndarray,
    text: FrameText,
    camera_attention: np.ndarray | None = None,
    sensor_attention: np.ndarray | None = None,
    sensor_labels: Sequence[str] = (),
    camera_share: float | None = None,
    cell_px: tuple[int, int] | None = None,
    scale: int = 4,
    legend: Sequence[str] = (),
    *,
    scene: np.ndarray | None = None,
    scene_labels: np.ndarray | None = None,
    rays: RayLayout | None = None,
    sensors: np.ndarray | None = None,
    title: str = "",
    relevant: np.ndarray | None = None,
    objects: Sequence[ObjectMark] = (),
    crash_at: tuple[float, float] | None = None,
) -> np.ndarray:
    """One video frame, ``(H', W', 3)`` uint8 with both sides multiples of 16.

    ``camera`` is the observation's ``(H, W, 3 * k)`` frame stack (the newest frame is drawn,
    upsampled ``scale`` times, unless ``scene``, ``(H * scale, W * scale, 3)``, gives the view
    drawn at that size, with ``scene_labels`` its road classes); ``camera_attention`` is
    ``(gh, gw)``; ``sensor_attention`` is ``(S,)`` with one label per token; ``camera_share``
    is the fraction of attention on camera patches; ``cell_px`` is one patch in camera pixels
    (default ``(H // gh, W // gw)``). With ``rays`` and the observation's ``sensors`` the ray
    tokens are drawn in the scene and the other tokens listed compactly; without, every token
    gets a bar. ``title`` heads the panel (one line per ``\n``); ``legend`` lines (the
    attention mass per road class) end it. ``relevant``: (H, W) bool camera pixels to outline
    (the objects the teacher's decision depends on), drawn over the attention in
    :data:`RELEVANT_COLOUR` so a viewer sees whether the heat lands on them. ``objects``: the
    object tokens drawn on their objects (:func:`object_marks`; drawn in the camera's view
    only); ``crash_at``: where the ego crashed (camera px), marked.
    """
    frame = np.ascontiguousarray(camera[..., -3:])  # (H, W, 3) newest frame
    h, w = frame.shape[:2]
    if scene is not None and scene.shape[:2] == (h * scale, w * scale):
        view = scene
    else:  # smooth, so the 64 px frame does not show as blocks
        view = cv2.resize(frame, (w * scale, h * scale), interpolation=cv2.INTER_LINEAR)
        scene_labels = None
    tokens = list(zip(sensor_labels, [] if sensor_attention is None else sensor_attention))
    top = max((float(weight) for _, weight in tokens), default=0.0)
    n_tokens = len(tokens) + (camera_attention.size if camera_attention is not None else 0)
    if camera_attention is not None:
        gh, gw = camera_attention.shape
        cell = cell_px or (h // gh, w // gw)
        values = attention_scale(camera_attention, n_tokens)
        view = heatmap_overlay(
            view, values, (cell[0] * scale, cell[1] * scale), labels=scene_labels
        )
    if relevant is not None and relevant.shape == (h, w) and relevant.any():
        view = outline_pixels(view, relevant, scale)
    camera_view = view.shape[:2] == (h * scale, w * scale) and scene is None
    if (objects and camera_view) or crash_at is not None:
        view = np.ascontiguousarray(view).copy()
        if objects and camera_view:
            draw_object_marks(view, objects, scale, n_tokens)
        if crash_at is not None:
            draw_crash(view, crash_at, scale)
    in_scene = rays is not None and sensors is not None and bool(tokens)
    if in_scene:
        view = view.copy()
        weights = ray_weights(rays, np.asarray(sensor_attention), sensor_labels)
        draw_rays(view, rays, sensors, attention_scale(weights, n_tokens), scale, scene_labels)
        listed = [(name, weight) for name, weight in tokens if not _RAY_TOKEN.match(name)]
        ray_share = sum(float(weight) for name, weight in tokens if _RAY_TOKEN.match(name))
    else:
        listed, ray_share = tokens, 0.0

    # the panel's size follows the scene's: text about 10 px beside a 256 px scene, 15 px beside
    # a 512 px one (talk-ready)
    u = 1.5 if view.shape[0] >= 384 else 1.0

    def p(value: float) -> int:
        return round(value * u)

    panel = p(PANEL_WIDTH)
    row = p(14)  # [px] per listed token
    chips = -(-len(listed) // 2) if in_scene else len(listed)
    titles = title.split("\n") if title else []
    needed = p(60) + p(18) * len(titles) + chips * row + p(20) * in_scene + p(6 * 16) + p(8)
    needed += (len(legend) + 1) * p(14) * bool(legend)
    height = _round_up(max(view.shape[0], needed), 16)
    width = _round_up(view.shape[1], 16) + panel
    out = np.empty((height, width, 3), np.uint8)
    out[:] = _BACKGROUND
    out[: view.shape[0], : view.shape[1]] = view
    x0 = _round_up(view.shape[1], 16) + p(8)

    y = p(16)
    for line in titles:  # a warning line (e.g. "MAP NOT FAITHFUL ...") in red
        warning = line.isupper() or line.startswith("MAP NOT")
        _text(out, line[:38], x0, y, 0.42 * u, colour=(255, 90, 90) if warning else TEXT)
        y += p(18)
    if camera_share is not None:
        share = f"camera {camera_share:4.0%} | sensors {1 - camera_share:4.0%}"
        _text(out, share, x0, y, 0.4 * u)
    elif camera_attention is None and sensor_attention is None:
        _text(out, "no attention maps for this policy", x0, y, 0.4 * u, colour=_DIM)
    y += p(8)
    if camera_attention is not None or tokens:  # the colour bar both modalities use
        bar = colour(np.linspace(0.0, 1.0, panel - p(100)))[None].repeat(p(8), axis=0)
        out[y : y + bar.shape[0], x0 + p(30) : x0 + p(30) + bar.shape[1]] = bar
        _text(out, "even", x0, y + p(8), 0.3 * u, _DIM)
        _text(out, f"{LIFT_MAX:.0f}x", x0 + p(34) + bar.shape[1], y + p(8), 0.33 * u, _DIM)
        y += p(12)
    y += p(8)
    if in_scene:
        for i, (name, weight) in enumerate(listed):  # two compact chips per line
            x = x0 + (i % 2) * p(118)
            yy = y + (i // 2) * row + row
            rgb = tuple(int(c) for c in colour(attention_scale(float(weight), n_tokens)))
            cv2.rectangle(out, (x, yy - p(10)), (x + p(9), yy - p(1)), rgb, -1)
            _text(out, f"{_short(name)} {float(weight):.0%}", x + p(13), yy - p(2), 0.35 * u)
        y += chips * row + p(16)
        _text(out, f"rays {ray_share:.0%}, drawn in the scene", x0, y, 0.35 * u, _DIM)
        y += p(4)
    else:
        label_w, bar_w = p(96), panel - p(96) - p(48)
        for label, weight in listed:
            y += row
            _text(out, label[:14], x0, y - p(3), 0.35 * u, _DIM)
            length = round(bar_w * float(weight) / max(top, 1e-12))
            cv2.rectangle(
                out, (x0 + label_w, y - p(11)), (x0 + label_w + length, y - p(3)), _BAR, -1
            )
            _text(out, f"{float(weight):.1%}", x0 + label_w + bar_w + 2, y - p(3), 0.35 * u)
    y += p(20)
    for line in (
        f"step {text.step}",
        f"action {text.action}",
        f"speed {text.speed:5.1f} m/s",
        f"reward {text.reward:+.2f}",
        f"return {text.episode_return:+.2f}",
        *([f"light {text.light}"] if text.light is not None else []),
    ):
        _text(out, line, x0, y, 0.4 * u)
        y += p(16)
    if legend:
        _text(out, "attention by road element", x0, y, 0.35 * u, _DIM)
        for line in legend:
            y += p(14)
            _text(out, line, x0, y, 0.35 * u)
    return out


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple
