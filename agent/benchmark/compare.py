"""A few runs side by side (``scripts/plot.py``): their learning curves from ``metrics.jsonl``
and their final evaluations in one table, for ad-hoc runs that no study groups.

Curves: the training episodes' return (SB3's mean over the last 100) and success (smoothed as
the study smooths it), and the periodic evaluations' success, against environment steps and
against wall time (resumed segments joined: :func:`agent.benchmark.execution.learning_curve`).
Table: each run's ``eval/final.json`` (the trained policy and the reference policies beside it,
the same episodes); a run without one (still training, or ``final_eval_episodes: 0``) gets its
last periodic evaluation, marked as such.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from drive_attention.agent.benchmark.execution import learning_curve
from drive_attention.agent.benchmark.stats import smooth
from drive_attention.agent.run.config import ConfigError
from drive_attention.agent.run.files import write_atomic

METRICS = "metrics.jsonl"
COLUMNS = ("run", "policy", "step", "episodes", "success", "collision", "speed m/s", "return")


def check_runs(runs: Sequence[Path]) -> None:
    """:class:`ConfigError` unless every path is a run folder with a ``metrics.jsonl``, and no
    run is named twice."""
    if not runs:
        raise ConfigError("give at least one run folder, e.g. runs/default")
    for run in runs:
        if not (Path(run) / METRICS).is_file():
            raise ConfigError(
                f"{run}: not a run folder (no {METRICS}); give folders that scripts/train.py "
                "wrote, e.g. runs/default"
            )
    names = [label(r) for r in runs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"runs named twice: {', '.join(twice)}; give each run once")


def label(run: Path) -> str:
    return Path(run).resolve().name


def evaluations(run: Path) -> dict[str, list[float]]:
    """The periodic evaluations of a run: ``steps`` and ``success`` (``eval/success_rate``)."""
    steps: list[float] = []
    success: list[float] = []
    for line in (Path(run) / METRICS).read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a hard kill
            continue
        if "eval/success_rate" in row:
            steps.append(float(row["global_step"]))
            success.append(float(row["eval/success_rate"]))
    return {"steps": steps, "success": success}


def final_rows(run: Path) -> list[dict[str, Any]]:
    """Table rows of one run: its final evaluation (every policy in it), else its last
    periodic evaluation (policy ``trained (step N)``), else nothing."""
    final = Path(run) / "eval" / "final.json"
    if final.is_file():
        data = json.loads(final.read_text())
        policies = [k for k, v in data.items() if isinstance(v, dict) and "success_rate" in v]
        return [
            _row(label(run), name, data.get("step"), data.get("episodes"), data[name])
            for name in policies
        ]
    last: dict[str, Any] | None = None
    for line in (Path(run) / METRICS).read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "eval/success_rate" in row:
            last = row
    if last is None:
        return []
    figures = {k.removeprefix("eval/"): v for k, v in last.items() if k.startswith("eval/")}
    step = int(last["global_step"])
    return [_row(label(run), f"trained (evaluation at step {step})", step, None, figures)]


def _row(run: str, policy: str, step: Any, episodes: Any, f: dict[str, Any]) -> dict[str, Any]:
    return {
        "run": run,
        "policy": policy,
        "step": step,
        "episodes": episodes,
        "success": f.get("success_rate"),
        "collision": f.get("collision_rate"),
        "speed m/s": f.get("mean_speed"),
        "return": f.get("mean_return"),
    }


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    def cell(key: str, value: Any) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        if key in ("success", "collision"):
            return f"{value:.0%}"
        if isinstance(value, float):
            return f"{value:.2f}" if key == "return" else f"{value:.1f}"
        return str(value)

    lines = ["| " + " | ".join(COLUMNS) + " |", "| --- | --- |" + " ---: |" * (len(COLUMNS) - 2)]
    lines += ["| " + " | ".join(cell(k, r[k]) for k in COLUMNS) + " |" for r in rows]
    return "\n".join(lines)


def plot_runs(runs: Sequence[Path], out: Path) -> Path:
    """One PNG: return (top) and success (bottom) against steps (left) and minutes (right), a
    colour per run; the periodic evaluations' success as markers on the steps panel."""
    import matplotlib  # imported on first use: slow, and picking its backend is process-wide

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharex="col")
    for run in runs:
        curve = learning_curve(Path(run) / METRICS)
        minutes = [s / 60 for s in curve["seconds"]]
        (line,) = axes[0, 0].plot(curve["steps"], curve["return"], label=label(run))
        color = line.get_color()
        axes[0, 1].plot(minutes, curve["return"], color=color)
        success = smooth(curve["success"])
        axes[1, 0].plot(curve["steps"], success, color=color)
        axes[1, 1].plot(minutes, success, color=color)
        evals = evaluations(run)
        if evals["steps"]:
            axes[1, 0].plot(evals["steps"], evals["success"], "o", color=color, markersize=4)
    axes[0, 0].set_ylabel("training return (last 100 episodes)")
    axes[1, 0].set_ylabel("success (training, smoothed; dots: evaluations)")
    axes[1, 0].set_xlabel("environment steps")
    axes[1, 1].set_xlabel("wall time [min]")
    for ax in axes[1]:
        ax.set_ylim(-0.02, 1.02)
    axes[0, 0].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    try:  # through a temporary file, never through a link at ``out``
        write_atomic(out, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    finally:
        plt.close(fig)
    return out
