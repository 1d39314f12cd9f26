"""What an evaluation reports: one row per episode, the summary's documented keys (``mean_return``,
``std_return``, ``success_rate``, ``collision_rate``, ``mean_speed``, ``mean_length``, plus
``episodes``), the printed table and the map-faithfulness verdict."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from drive_attention.agent.run.files import write_text

SUMMARY_KEYS: tuple[str, ...] = (
    "mean_return",
    "std_return",
    "success_rate",
    "collision_rate",
    "mean_speed",
    "mean_length",
)
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
        (:class:`agent.run.files.UnsafePathError`)."""
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
