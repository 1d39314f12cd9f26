"""Measure what a policy attends to, and whether it matters.

- **Attribution**: the policy query's camera attention (per layer, averaged over heads) is spread
  over the pixels of its patches and summed within each road-element class of the frame's label
  map: attention *mass* per class, and *lift* = mass / the class's share of the image area
  (1.0 = no preference). Also the mass on the vehicle ahead in the ego lane, the split between
  camera and sensor tokens, and the mass per sensor group.
- **Faithfulness**: blank the top-k% most-attended camera patches, as many random patches, and
  the least-attended ones; compare how much the policy's action distribution (KL) and value move.
  ``occlusion_ratio`` = change(top) / change(random); a faithful map gives well above 1.
- **Modality reliance**: :class:`ModalityAblation` blanks the camera, zeroes the sensors or adds
  sensor noise, for evaluating the same policy under a failing modality.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import gymnasium as gym
import numpy as np
import torch
from torch.distributions import Distribution, kl_divergence

from drive_attention.envs.contract import ROAD_CLASSES

EPS = 1e-8
CHANGE_FLOOR = 1e-6  # [nats] or value units: changes below this count as none (float noise)


# ----------------------------------------------------------------------------- attribution
def patch_pixels(
    grid: tuple[int, int], height: int, width: int, cell: tuple[int, int] | None = None
) -> np.ndarray:
    """(H, W) index of the patch (row-major on ``grid``) each pixel belongs to, -1 for none.

    With ``cell`` = (ph, pw) pixels per patch, patch ``(i, j)`` covers rows
    ``[i * ph, (i + 1) * ph)`` and columns ``[j * pw, (j + 1) * pw)``, as a strided convolution
    stem tiles the frame (pixels past ``gh * ph`` or ``gw * pw`` are in no patch). Without it,
    the grid is spread over the whole frame (row ``r`` is in patch row ``r * gh // H``).
    """
    gh, gw = grid
    if cell is None:
        rows = np.arange(height) * gh // height  # (H,)
        cols = np.arange(width) * gw // width  # (W,)
    else:
        rows = np.arange(height) // cell[0]
        cols = np.arange(width) // cell[1]
        rows[rows >= gh] = -1
        cols[cols >= gw] = -1
    index = rows[:, None] * gw + cols[None, :]
    index[(rows[:, None] < 0) | (cols[None, :] < 0)] = -1
    return index


def attention_to_pixels(
    grid_map: np.ndarray, height: int, width: int, cell: tuple[int, int] | None = None
) -> np.ndarray:
    """Spread a patch-grid attention map (gh, gw) over an (H, W) frame, preserving each patch's
    mass: every pixel gets its patch's weight divided by the patch's pixel count (0 outside the
    grid's area)."""
    return _spread(grid_map, patch_pixels(grid_map.shape, height, width, cell))


def _spread(grid_map: np.ndarray, index: np.ndarray) -> np.ndarray:
    """:func:`attention_to_pixels` for a precomputed :func:`patch_pixels` index."""
    inside = index >= 0
    counts = np.bincount(index[inside], minlength=grid_map.size)  # pixels per patch
    per_pixel = grid_map.ravel() / np.maximum(counts, 1)
    return np.where(inside, per_pixel[np.maximum(index, 0)], 0.0)


def class_mass(pixel_map: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """(C,) attention summed within each label class, normalised to sum to 1."""
    mass = np.bincount(labels.ravel(), weights=pixel_map.ravel(), minlength=n_classes)
    return mass[:n_classes] / max(mass.sum(), EPS)


def class_share(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """(C,) fraction of the given pixels (a label map, or a selection of one) in each class."""
    return np.bincount(labels.ravel(), minlength=n_classes)[:n_classes] / labels.size


@dataclass
class Attribution:
    """Attention attribution accumulated over frames (mass and share averaged over frames)."""

    class_names: tuple[str, ...] = ROAD_CLASSES
    frames: int = 0

    def __post_init__(self) -> None:
        n = len(self.class_names)
        self._mass = np.zeros(n)
        self._share = np.zeros(n)
        self._lead_mass = 0.0
        self._lead_share = 0.0
        self._lead_frames = 0
        self._camera = 0.0
        self._groups: dict[str, float] = {}
        self.per_frame: list[dict[str, float]] = []

    def add(
        self,
        camera_map: np.ndarray,
        labels: np.ndarray,
        lead_mask: np.ndarray | None = None,
        camera_total: float | None = None,
        sensor_map: np.ndarray | None = None,
        sensor_token_names: Sequence[str] = (),
        cell: tuple[int, int] | None = None,
    ) -> dict[str, float]:
        """Add one frame; returns its per-class mass (for a video legend).

        ``camera_map``: (gh, gw) query attention over patches (any total; normalised here);
        ``labels``: (H, W) class ids; ``lead_mask``: (H, W) bool of the vehicle ahead;
        ``camera_total``: the query's total mass on camera tokens (vs sensors);
        ``sensor_map``: (S,) query attention over sensor tokens named ``sensor_token_names``;
        ``cell``: pixels per patch (see :func:`patch_pixels`).
        """
        n = len(self.class_names)
        index = patch_pixels(camera_map.shape, *labels.shape, cell)  # (H, W)
        pixels = _spread(camera_map, index)
        pixels = pixels / max(pixels.sum(), EPS)
        mass = class_mass(pixels, labels, n)
        self._mass += mass
        # area shares over the pixels the patch grid covers (all of them unless ``cell`` leaves
        # a remainder), so that lift compares like with like
        covered = index >= 0
        self._share += class_share(labels[covered], n)
        if lead_mask is not None and lead_mask[covered].any():
            self._lead_mass += float(pixels[lead_mask].sum())
            self._lead_share += float(lead_mask[covered].mean())
            self._lead_frames += 1
        if camera_total is not None:
            self._camera += camera_total
        if sensor_map is not None and len(sensor_token_names):
            total = max(float(sensor_map.sum()), EPS)
            for name, weight in zip(sensor_token_names, sensor_map):
                group = name.split(".", 1)[0]
                self._groups[group] = self._groups.get(group, 0.0) + float(weight) / total
        self.frames += 1
        row = dict(zip(self.class_names, mass.tolist()))
        self.per_frame.append(row)
        return row

    def summary(self) -> dict[str, Any]:
        """Mean mass per class, lift (mean mass / mean area share; classes never seen are left
        out), lead-vehicle mass and lift, camera share of the query, mass per sensor group."""
        if not self.frames:
            return {"frames": 0, "class_mass": {}, "class_lift": {}}
        mass = self._mass / self.frames
        share = self._share / self.frames
        seen = share > 0
        out: dict[str, Any] = {
            "frames": self.frames,
            "class_mass": {c: float(m) for c, m, s in zip(self.class_names, mass, seen) if s},
            "class_share": {c: float(a) for c, a, s in zip(self.class_names, share, seen) if s},
            "class_lift": {
                c: float(m / a) for c, m, a, s in zip(self.class_names, mass, share, seen) if s
            },
            "camera_share": self._camera / self.frames,
            "sensor_group_mass": {g: v / self.frames for g, v in self._groups.items()},
        }
        if self._lead_frames:
            lead_mass = self._lead_mass / self._lead_frames
            out["lead_vehicle_mass"] = lead_mass
            out["lead_vehicle_lift"] = lead_mass / max(self._lead_share / self._lead_frames, EPS)
            out["lead_vehicle_frames"] = self._lead_frames
        return out


# ----------------------------------------------------------------------------- faithfulness
class PolicyProbe(Protocol):
    """What the faithfulness check needs from a policy."""

    def outputs(self, obs: dict[str, np.ndarray]) -> tuple[Distribution, torch.Tensor]:
        """Action distribution (batch shape (B,) or (B, A)) and value (B,) for a batch."""
        ...


class SB3Probe:
    """:class:`PolicyProbe` of an SB3 actor-critic policy (PPO)."""

    def __init__(self, policy: Any) -> None:
        self.policy = getattr(policy, "policy", policy)

    @torch.no_grad()
    def outputs(self, obs: dict[str, np.ndarray]) -> tuple[Distribution, torch.Tensor]:
        was_training = self.policy.training
        self.policy.set_training_mode(False)
        try:
            obs_tensor, _ = self.policy.obs_to_tensor(obs)
            distribution = self.policy.get_distribution(obs_tensor).distribution
            value = self.policy.predict_values(obs_tensor).reshape(-1)
        finally:
            self.policy.set_training_mode(was_training)
        return distribution, value


def blank_patches(
    camera: np.ndarray,
    grid: tuple[int, int],
    patches: np.ndarray,
    cell: tuple[int, int] | None = None,
) -> np.ndarray:
    """Copy of ``camera`` (B, H, W, C) with the given patches of each frame set to 0.

    ``patches``: (B, k) row-major patch indices on ``grid``; ``cell`` as in :func:`patch_pixels`.
    """
    height, width = camera.shape[1:3]
    index = patch_pixels(grid, height, width, cell)  # (H, W)
    hit = (index[None, :, :, None] == patches[:, None, None, :]).any(-1)  # (B, H, W)
    out = camera.copy()
    out[hit] = 0
    return out


def _change(probe: PolicyProbe, obs: dict[str, np.ndarray], base: tuple) -> tuple[float, float]:
    """Mean KL(base || occluded) of the action distribution and mean |value change|."""
    dist, value = probe.outputs(obs)
    kl = kl_divergence(base[0], dist)
    if kl.dim() > 1:
        kl = kl.sum(-1)  # independent action dimensions
    kl = kl.clamp(min=0.0)  # float round-off can make a tiny KL negative
    return float(kl.mean()), float((value - base[1]).abs().mean())


def occlusion_test(
    probe: PolicyProbe,
    obs: dict[str, np.ndarray],
    camera_maps: np.ndarray,
    fraction: float = 0.1,
    random_draws: int = 5,
    seed: int = 0,
    cell: tuple[int, int] | None = None,
) -> dict[str, float]:
    """Blank the top ``fraction`` of patches by attention, as many random and the least-attended;
    report the mean change of action distribution (KL) and value for each, and the ratios
    top / random (``occlusion_ratio``, on the action) and top / random on the value.

    ``obs``: a batch (camera (B, H, W, C) channel-last, sensors (B, D));
    ``camera_maps``: (B, gh, gw) attention of those frames.
    """
    batch, gh, gw = camera_maps.shape
    n_patches = gh * gw
    k = max(1, round(fraction * n_patches))
    order = np.argsort(-camera_maps.reshape(batch, n_patches), axis=1, kind="stable")
    rng = np.random.default_rng(seed)
    base = probe.outputs(obs)

    def change(patches: np.ndarray) -> tuple[float, float]:
        blanked = dict(obs, camera=blank_patches(obs["camera"], (gh, gw), patches, cell))
        return _change(probe, blanked, base)

    top = change(order[:, :k])
    least = change(order[:, -k:])
    draws = [
        change(np.argsort(rng.random((batch, n_patches)), 1)[:, :k]) for _ in range(random_draws)
    ]
    random_kl = float(np.mean([d[0] for d in draws]))
    random_value = float(np.mean([d[1] for d in draws]))
    return {
        "patches_blanked": k,
        "top_kl": top[0],
        "random_kl": random_kl,
        "least_kl": least[0],
        "top_value_change": top[1],
        "random_value_change": random_value,
        "least_value_change": least[1],
        "occlusion_ratio": (top[0] + CHANGE_FLOOR) / (random_kl + CHANGE_FLOOR),
        "occlusion_ratio_value": (top[1] + CHANGE_FLOOR) / (random_value + CHANGE_FLOOR),
    }


# ----------------------------------------------------------------------------- modality reliance
AblationMode = Literal["camera_blanked", "sensors_zeroed", "sensor_noise"]
ABLATIONS: tuple[str, ...] = ("camera_blanked", "sensors_zeroed", "sensor_noise")


class ModalityAblation(gym.ObservationWrapper):
    """Simulates a failing modality: a black camera, dead sensors, or noisy sensors
    (Gaussian noise of ``noise_std``, clipped to [-1, 1]).

    It acts on the env's raw observation, as a failing device would: a policy trained with
    sensor normalisation sees a zeroed sensor as ``-mean / std``, like a real dead sensor."""

    def __init__(
        self, env: gym.Env, mode: AblationMode, noise_std: float = 0.3, seed: int = 0
    ) -> None:
        super().__init__(env)
        if mode not in ABLATIONS:
            raise ValueError(f"unknown ablation {mode!r}; use one of {', '.join(ABLATIONS)}")
        self.mode = mode
        self.noise_std = noise_std
        self._rng = np.random.default_rng(seed)

    def observation(self, observation: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        obs = dict(observation)
        if self.mode == "camera_blanked":
            obs["camera"] = np.zeros_like(obs["camera"])
        elif self.mode == "sensors_zeroed":
            obs["sensors"] = np.zeros_like(obs["sensors"])
        else:
            noise = self._rng.normal(0.0, self.noise_std, obs["sensors"].shape)
            obs["sensors"] = np.clip(obs["sensors"] + noise, -1.0, 1.0).astype(np.float32)
        return obs


# ----------------------------------------------------------------------------- signals
SITUATIONS: tuple[str, ...] = (
    "light_red",
    "light_amber",
    "light_green",
    "pedestrian_ahead",
    "pedestrian_elsewhere",
)
"""The situations of the signalised intersection that attribution is split by: the ego before
its stop line with the light (in view) red, amber or green; a pedestrian in view walking on a
crossing on the ego's path within 40 m, or pedestrians in view but none there."""


def situations(info: dict[str, Any], labels: np.ndarray) -> list[str]:
    """The :data:`SITUATIONS` a frame is in, from the env's ``info`` (``light_state``,
    ``pedestrian_ahead``) and its road labels (what is in view)."""
    out = []
    light = labels == ROAD_CLASSES.index("traffic_light")
    state = info.get("light_state")
    if state in ("red", "amber", "green") and light.any():
        out.append(f"light_{state}")
    if "pedestrian_ahead" in info and (labels == ROAD_CLASSES.index("pedestrian")).any():
        out.append("pedestrian_ahead" if info["pedestrian_ahead"] else "pedestrian_elsewhere")
    return out


def _recolour(camera: np.ndarray, mask: np.ndarray, colour: Any) -> np.ndarray:
    """Copy of ``camera`` (B, H, W, C) with the pixels of ``mask`` (B, H, W) in its newest
    frame (last 3 channels) set to ``colour``."""
    out = camera.copy()
    newest = out[..., -3:]
    newest[mask] = colour
    out[..., -3:] = newest
    return out


def light_test(
    probe: PolicyProbe,
    obs: dict[str, np.ndarray],
    labels: np.ndarray,
    swap_to: Any,
    seed: int = 0,
    stop_action: int | None = None,
) -> dict[str, Any]:
    """Does the policy act on the light? Over a batch of frames with the light in view
    (``labels`` (B, H, W) their road labels), compare the policy on the frames as they are with:

    - ``blanked``: the light's pixels set to 0 (as the occlusion test blanks patches);
    - ``swapped``: the light's pixels in the colour ``swap_to`` (red frames shown green, ...);
    - ``control``: as many pixels set to 0 elsewhere on the road, a square block at a random
      place that is all road (as the stop bar is), else as many road pixels scattered
      (``control_blocks``: the share of frames that got a block).

    Only the newest frame of a frame stack is changed (``labels`` are its labels): with
    ``frame_stack`` > 1 the older frames still show the light.

    Each gives the mean KL(as is || changed) of the action distribution, the share of frames
    whose most likely action changes, and, with ``stop_action`` (a discrete policy's
    ``slower``), the mean probability of that action.
    """
    rng = np.random.default_rng(seed)
    light = labels == ROAD_CLASSES.index("traffic_light")  # (B, H, W)
    road = labels == ROAD_CLASSES.index("road")
    b, h, w = light.shape
    control = np.zeros_like(light)
    blocks = 0
    for i in range(b):
        count = int(light[i].sum())
        side = max(1, round(float(np.sqrt(count))))
        for _ in range(200):  # a block of road
            r, c = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
            if road[i, r : r + side, c : c + side].all():
                control[i, r : r + side, c : c + side] = True
                blocks += 1
                break
        else:  # as many road pixels, scattered
            cells = np.flatnonzero(road[i])
            chosen = rng.choice(cells, min(count, len(cells)), replace=False)
            control[i].flat[chosen] = True
    base = probe.outputs(obs)

    def figures(dist: Distribution, reference: Distribution | None) -> dict[str, float]:
        out: dict[str, float] = {}
        probs = getattr(dist, "probs", None)
        if probs is not None:
            out["greedy"] = probs.argmax(-1)
            if stop_action is not None:
                out["stop_probability"] = float(probs[..., stop_action].mean())
        if reference is not None:
            kl = kl_divergence(reference, dist)
            kl = kl.sum(-1) if kl.dim() > 1 else kl
            out["kl"] = float(kl.clamp(min=0.0).mean())
        return out

    result: dict[str, Any] = {
        "frames": b,
        "light_pixels": float(light.sum(axis=(1, 2)).mean()),
        "control_blocks": blocks / max(b, 1),
    }
    as_is = figures(base[0], None)
    greedy = as_is.pop("greedy", None)
    result["as_is"] = as_is
    for name, mask, colour in (
        ("blanked", light, 0),
        ("swapped", light, swap_to),
        ("control", control, 0),
    ):
        changed = dict(obs, camera=_recolour(obs["camera"], mask, colour))
        row = figures(probe.outputs(changed)[0], base[0])
        new_greedy = row.pop("greedy", None)
        if greedy is not None and new_greedy is not None:
            row["action_changed"] = float((new_greedy != greedy).float().mean())
        result[name] = row
    return result
