"""Attention-relevance agreement: does the agent look at what decides the situation?

Per frame with a non-empty relevant set (:mod:`agent.policies.relevance`: the objects whose
removal, or the light whose flip, changes the teacher's decision):

- **object tokens**: the most-attended ``objects.<k>`` sensor token among those holding an
  object (``info["object_slots"]`` ties each token to its traffic slot) is a relevant object
  (``hit``), against ``chance``: the share of those tokens that are relevant, what a uniformly
  random choice among them would hit;
- **camera patches**: the most-attended patch covers a pixel of a relevant object
  (``info["object_ids"]``, the slot drawn at each pixel; a relevant light: its pixels,
  ``traffic_light`` in the road labels), against the share of patches that do.

Ties for the most attended are split evenly (a uniform map scores exactly the chance rate). A
frame counts for a part only where a relevant object is there to be found (among the tokens, or
in the camera's view); how many frames that leaves is reported as ``frames``. Rates are means
over episodes (the episode is the unit) with 95% t-intervals, and ``ratio`` = hit / chance with
a percentile-bootstrap interval over episodes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from drive_attention import envs
from drive_attention.agent.evaluate.attribution import patch_pixels
from drive_attention.agent.evaluate.intervals import interval
from drive_attention.agent.policies.relevance import Relevance, relevance
from drive_attention.agent.policies.teacher import Teacher
from drive_attention.envs.batched.core import BatchedDrive
from drive_attention.envs.batched.planning import PlanningBatch
from drive_attention.envs.contract import CLASS_ID

PARTS = ("tokens", "patches")
TIE = 1e-6  # relative: weights this close to the largest tie for the most attended
BOOTSTRAP = 2000


def top_hit(weights: np.ndarray, relevant: np.ndarray) -> float:
    """The share of the most-attended entries of ``weights`` (1-D, ties split evenly) that are
    ``relevant`` (1-D bool)."""
    top = weights >= weights.max() - TIE * max(abs(float(weights.max())), 1e-12)
    return float(relevant[top].mean())


def token_score(
    token_weights: np.ndarray, token_slots: np.ndarray, relevant_slots: Sequence[int]
) -> tuple[float, float] | None:
    """(hit, chance) of the object tokens in one frame, or None where no token holds a relevant
    object. ``token_weights``: (K,) attention on the ``objects.<k>`` tokens; ``token_slots``:
    (K,) the slot each describes (-1: empty)."""
    present = token_slots >= 0
    relevant = np.isin(token_slots, list(relevant_slots)) & present
    if not relevant.any():
        return None
    return top_hit(token_weights[present], relevant[present]), float(relevant[present].mean())


def relevant_pixels(
    object_ids: np.ndarray,
    relevant_slots: Sequence[int],
    labels: np.ndarray | None = None,
    light: bool = False,
) -> np.ndarray:
    """(H, W) bool: the pixels of the relevant objects, and of the lights where the light is
    relevant (``labels``: the road labels)."""
    mask = np.isin(object_ids, list(relevant_slots)) & (object_ids >= 0)
    if light and labels is not None:
        mask |= labels == CLASS_ID["traffic_light"]
    return mask


def patch_score(
    camera_map: np.ndarray, mask: np.ndarray, cell: tuple[int, int] | None = None
) -> tuple[float, float] | None:
    """(hit, chance) of the camera patches in one frame, or None where no patch covers a
    relevant pixel. ``camera_map``: (gh, gw) attention; ``mask``: (H, W) relevant pixels;
    ``cell``: pixels per patch (:func:`agent.evaluate.attribution.patch_pixels`)."""
    index = patch_pixels(camera_map.shape, *mask.shape, cell)
    inside = (index >= 0) & mask
    covers = np.zeros(camera_map.size, dtype=bool)
    covers[np.unique(index[inside])] = True
    if not covers.any():
        return None
    return top_hit(camera_map.ravel(), covers), float(covers.mean())


@dataclass
class Agreement:
    """Agreement accumulated over frames, grouped by episode (see the module)."""

    seed: int = 0
    episodes: list[dict[str, list[tuple[float, float]]]] = field(default_factory=list)
    relevant_frames: int = 0  # frames with a non-empty relevant set
    frames: int = 0  # frames whose relevance was computed
    seconds: float = 0.0  # relevance's cost

    def start_episode(self) -> None:
        self.episodes.append({part: [] for part in PARTS})

    def add(
        self,
        relevant_slots: Sequence[int],
        light: bool,
        token_weights: np.ndarray | None,
        token_slots: np.ndarray | None,
        camera_map: np.ndarray | None,
        object_ids: np.ndarray | None,
        labels: np.ndarray | None = None,
        cell: tuple[int, int] | None = None,
    ) -> dict[str, tuple[float, float] | None]:
        """One frame's relevance and attention; returns its (hit, chance) per part."""
        if not self.episodes:
            self.start_episode()
        self.frames += 1
        scores: dict[str, tuple[float, float] | None] = {part: None for part in PARTS}
        if not relevant_slots and not light:
            return scores
        self.relevant_frames += 1
        if token_weights is not None and token_slots is not None and len(token_slots):
            scores["tokens"] = token_score(token_weights, token_slots, relevant_slots)
        if camera_map is not None and object_ids is not None:
            mask = relevant_pixels(object_ids, relevant_slots, labels, light)
            scores["patches"] = patch_score(camera_map, mask, cell)
        for part, score in scores.items():
            if score is not None:
                self.episodes[-1][part].append(score)
        return scores

    def summary(self) -> dict[str, Any]:
        """Per part: ``hit`` and ``chance`` (mean over episodes, ``ci95`` half-widths),
        ``ratio`` with its bootstrap ``low``/``high``, ``frames`` and ``episodes`` counted;
        and the frame counts and relevance's cost."""
        out: dict[str, Any] = {
            "frames": self.frames,
            "relevant_frames": self.relevant_frames,
            "relevance_seconds_per_frame": self.seconds / self.frames if self.frames else None,
        }
        for part in PARTS:
            per_episode = [np.array(e[part]) for e in self.episodes if e[part]]
            hits = [float(x[:, 0].mean()) for x in per_episode]
            chances = [float(x[:, 1].mean()) for x in per_episode]
            hit, chance = interval(hits), interval(chances)
            low, high = _ratio_interval(hits, chances, self.seed)
            out[part] = {
                "hit": hit["mean"],
                "hit_ci95": hit["ci95"],
                "chance": chance["mean"],
                "chance_ci95": chance["ci95"],
                "ratio": _ratio(hits, chances),
                "ratio_low": low,
                "ratio_high": high,
                "frames": int(sum(len(x) for x in per_episode)),
                "episodes": len(per_episode),
            }
        return out


def _ratio(hits: Sequence[float], chances: Sequence[float]) -> float:
    c = float(np.mean(chances)) if len(chances) else math.nan
    return float(np.mean(hits)) / c if c > 0 else math.nan


def _ratio_interval(
    hits: Sequence[float], chances: Sequence[float], seed: int
) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the ratio of means, episodes resampled."""
    n = len(hits)
    if n < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, n, size=(BOOTSTRAP, n))
    h, c = np.asarray(hits)[pick].mean(1), np.asarray(chances)[pick].mean(1)
    ratios = h[c > 0] / c[c > 0]
    if not len(ratios):
        return math.nan, math.nan
    low, high = np.percentile(ratios, [2.5, 97.5])
    return float(low), float(high)


def format_agreement(summary: dict[str, Any]) -> str:
    """Lines for the printed attention report."""
    lines = [
        f"attention on what matters: {summary['relevant_frames']} of {summary['frames']} frames "
        "have relevant objects (the teacher's choice changes without them)"
    ]
    names = {"tokens": "object tokens", "patches": "camera patches"}
    for part in PARTS:
        s = summary[part]
        if not s["frames"]:
            lines.append(f"  {names[part]}: no frame with a relevant object to find")
            continue
        lines.append(
            f"  {names[part]}: top-attended on a relevant object {s['hit']:.2f} "
            f"(chance {s['chance']:.2f}), ratio {s['ratio']:.2f} "
            f"[{s['ratio_low']:.2f}, {s['ratio_high']:.2f}] over {s['frames']} frames, "
            f"{s['episodes']} episodes"
        )
    return "\n".join(lines)


def relevance_env(env_id: str) -> str | None:
    """The batched id relevance is measured on for ``env_id``: itself if batched, the batched
    version of a highway-env scenario, or None (CARLA, scenarios with no batched version)."""
    if env_id in envs.BATCHED_IDS:
        return env_id
    scenario = envs.HIGHWAY_IDS.get(env_id)
    twin = envs.env_id(scenario, batched=True) if scenario else None
    return twin if twin in envs.BATCHED_IDS else None


class RelevanceJudge:
    """The teacher's relevance for the one environment of a batched Gymnasium env, read as the
    frame sees it: per decision, the relevant slots and light, and their pixels."""

    def __init__(self, core: BatchedDrive, radius: float | None = None) -> None:
        self.teacher = Teacher(core)
        self.radius = radius
        self.seconds = 0.0
        self.frames = 0

    @classmethod
    def attach(cls, env: gym.Env) -> RelevanceJudge | None:
        """A judge for ``env``, or None where there is no teacher to ask (not a one-env batched
        env with discrete meta-actions)."""
        core = getattr(env.unwrapped, "core", None)
        if not isinstance(core, BatchedDrive) or not core.discrete or core.num_envs != 1:
            return None
        return cls(core)

    def snapshot(self) -> PlanningBatch:
        """A copy of the environment as it stands, to judge later (:meth:`now`)."""
        return self.teacher.core.planning_batch(1)

    def now(self, state: PlanningBatch | None = None) -> Relevance:
        """The relevance of the environment as it stands (before the policy acts), or of a
        :meth:`snapshot` taken earlier."""
        out = relevance(self.teacher, self.radius, state=state)
        self.seconds += out.seconds
        self.frames += 1
        return out

    @staticmethod
    def mask(rel: Relevance, info: dict[str, Any]) -> np.ndarray | None:
        """(H, W) bool: the relevant objects' pixels of the frame ``info`` describes (and the
        lights', where the light is relevant); None without ``object_ids`` in ``info``."""
        if "object_ids" not in info:
            return None
        return relevant_pixels(
            info["object_ids"], rel.slots(0), info.get("road_labels"), bool(rel.light[0])
        )
