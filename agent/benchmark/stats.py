"""The study's statistics: means with 95% Student-t intervals over seeds (the seed is the unit),
interquartile means with percentile-bootstrap intervals over runs (the ``rliable`` convention,
Agarwal et al. 2021), learning-curve bands, and :func:`aggregate`, which turns the job results
into the study's numbers."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from drive_attention.agent.benchmark.config import EVAL_METRICS, METRICS, BenchmarkConfig
from drive_attention.agent.evaluate.intervals import interval, t95

BOOTSTRAP_SAMPLES = 2000


def iqm(values: Sequence[float]) -> float:
    """Interquartile mean: the mean of the runs left after cutting ``floor(n / 4)`` from each end
    of the sorted scores (``scipy.stats.trim_mean(x, 0.25)``, as ``rliable`` computes it)."""
    x = np.sort(np.asarray(values, dtype=np.float64))
    cut = int(len(x) * 0.25)
    kept = x[cut : len(x) - cut]
    return float(kept.mean()) if len(kept) else math.nan


def iqm_interval(
    values: Sequence[float], samples: int = BOOTSTRAP_SAMPLES, seed: int = 0
) -> dict[str, Any]:
    """IQM over runs and its 95% percentile-bootstrap interval (runs resampled with replacement;
    seeded, so a report is reproducible). ``low``/``high`` are NaN with fewer than 2 runs."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if len(x) == 0:
        return {"iqm": math.nan, "low": math.nan, "high": math.nan, "n": 0}
    if len(x) < 2:
        return {"iqm": iqm(x), "low": math.nan, "high": math.nan, "n": 1}
    rng = np.random.default_rng(seed)
    draws = x[rng.integers(0, len(x), size=(samples, len(x)))]
    stats = np.array([iqm(row) for row in draws])
    low, high = np.percentile(stats, [2.5, 97.5])
    return {"iqm": iqm(x), "low": float(low), "high": float(high), "n": len(x)}


SMOOTHING = 10  # logged points in the trailing mean of the per-update success curve


def smooth(values: Sequence[float], window: int = SMOOTHING) -> np.ndarray:
    """Trailing mean over ``window`` points, ignoring NaN (a point with no finished episode)."""
    x = np.asarray(values, dtype=np.float64)
    out = np.full(len(x), np.nan)
    for i in range(len(x)):
        tail = x[max(0, i - window + 1) : i + 1]
        tail = tail[~np.isnan(tail)]
        if len(tail):
            out[i] = tail.mean()
    return out


def at_equal_time(runs_by_arm: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, Any]:
    """Training success of every arm at one wall time: when the arm that ends soonest ended
    (the mean over its runs of their curves' last logged time). Per run, the smoothed success
    of its training episodes and the steps it had trained by then (a run that ended sooner: its
    last point; before its first known success: unknown); mean and 95% t-interval over seeds.
    Runs with no logged point are left out. Success on training episodes, not the evaluation's:
    a run is only evaluated at its end. Wall times compare only where the runs shared the
    machine alike (the same ``jobs``, the same kind of node)."""
    curves = {
        arm: [r["curve"] for r in runs if r["curve"]["seconds"]]
        for arm, runs in runs_by_arm.items()
    }
    curves = {arm: found for arm, found in curves.items() if found}
    if not curves:
        return {}
    seconds = min(float(np.mean([c["seconds"][-1] for c in found])) for found in curves.values())
    out: dict[str, Any] = {"seconds": seconds, "arms": {}}
    for arm, found in curves.items():
        success, steps = [], []
        for curve in found:
            at = min(seconds, curve["seconds"][-1])
            steps.append(float(np.interp(at, curve["seconds"], curve["steps"])))
            ys = smooth(curve.get("success", []))
            known = ~np.isnan(ys)
            if len(ys) == len(curve["seconds"]) and known.any():
                xs = np.asarray(curve["seconds"], float)[known]
                success.append(float(np.interp(at, xs, ys[known], left=np.nan)))
        out["arms"][arm] = {"success": interval(success), "steps": interval(steps)}
    return out


def curve_band(
    curves: Sequence[tuple[Sequence[float], Sequence[float]]], grid: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and 95% half-width over runs of curves interpolated onto ``grid`` (NaN outside)."""
    rows = []
    for xs, ys in curves:
        xs_a, ys_a = np.asarray(xs, float), np.asarray(ys, float)
        row = np.full(len(grid), np.nan)
        if len(xs_a):
            inside = (grid >= xs_a[0]) & (grid <= xs_a[-1])
            row[inside] = np.interp(grid[inside], xs_a, ys_a)
        rows.append(row)
    data = np.array(rows)
    n = np.sum(~np.isnan(data), axis=0)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: NaN, as wanted
        mean = np.nanmean(data, axis=0)
        std = np.nanstd(data, axis=0, ddof=1)
    half = np.array([t95(int(k) - 1) for k in n]) * std / np.sqrt(np.maximum(n, 1))
    mean[n < len(curves)] = np.nan  # only where every run has data
    return mean, half


def aggregate(
    config: BenchmarkConfig, results: Sequence[dict[str, Any]], references: dict[str, Any]
) -> dict[str, Any]:
    """The study's numbers: per scenario and arm, means and 95% intervals over seeds."""
    finished = [r for r in results if r.get("status") == "finished"]
    expected = {
        (s, a, seed) for seed in config.seeds for s in config.scenarios for a in config.arms
    }
    present = {(r["scenario"], r["arm"], r["seed"]) for r in results}
    missing = sorted(expected - present)
    table: dict[str, Any] = {}
    equal_time: dict[str, Any] = {}  # per scenario: training success at one wall time
    speed: dict[str, float] = {}  # attention / CombinedExtractor training steps/s
    for scenario in config.scenarios:
        table[scenario] = {}
        for arm in config.arms:
            runs = [r for r in finished if r["scenario"] == scenario and r["arm"] == arm]
            if not runs:
                continue
            row: dict[str, Any] = {"seeds": [r["seed"] for r in runs]}
            for backend in ("batched", "reference"):
                row[backend] = {
                    # .get: studies recorded before speed was kept have no speed
                    m: interval([r["evaluation"][backend].get(m) for r in runs])
                    for m in EVAL_METRICS
                }
                for m in SIGNAL_METRICS:  # the signalised scenario's infractions
                    if all(m in r["evaluation"][backend] for r in runs):
                        row[backend][m] = interval([r["evaluation"][backend][m] for r in runs])
            row["iqm"] = {
                m: iqm_interval([r["evaluation"]["reference"].get(m) for r in runs])
                for m in EVAL_METRICS
            }
            modes = [m for m in runs[0].get("robustness", {}) if m != "intact"]
            row["robustness"] = {
                mode: {m: interval([r["robustness"][mode][m] for r in runs]) for m in METRICS}
                for mode in ["intact", *modes]
                if all(mode in r.get("robustness", {}) for r in runs)
            }
            tp = [r["throughput"] for r in runs]
            row["throughput"] = {
                "train_steps_per_s": interval([t["train_steps_per_s"] for t in tp]),
                "env_steps_per_s": interval([t["env_steps_per_s"] for t in tp]),
                "train_over_env": interval(
                    [
                        t["train_steps_per_s"] / t["env_steps_per_s"]
                        for t in tp
                        if t["train_steps_per_s"] and t["env_steps_per_s"]
                    ]
                ),
            }
            if all("attention" in r for r in runs):
                row["attention"] = {
                    "class_mass": _per_class([r["attention"]["class_mass"] for r in runs]),
                    "class_lift": _per_class([r["attention"]["class_lift"] for r in runs]),
                    "class_share": _per_class([r["attention"]["class_share"] for r in runs]),
                    "camera_share": interval([r["attention"]["camera_share"] for r in runs]),
                    "occlusion_ratio": interval([r["attention"]["occlusion_ratio"] for r in runs]),
                    # per run, in the order of "seeds" (None where a run has no ratio)
                    "occlusion_runs": [r["attention"]["occlusion_ratio"] for r in runs],
                }
            relevance = [(r.get("attention") or {}).get("relevance") for r in runs]
            if relevance and all(relevance):
                row["relevance"] = _relevance(relevance)
            if all("situations" in r.get("attention", {}) for r in runs):
                row["signals"] = _signals([r["attention"] for r in runs])
            table[scenario][arm] = row
        arms = table[scenario]
        equal_time[scenario] = at_equal_time(
            {
                arm: [r for r in finished if r["scenario"] == scenario and r["arm"] == arm]
                for arm in arms
            }
        )
        if "attention" in arms and "combined" in arms:
            att = arms["attention"]["throughput"]["train_steps_per_s"]["mean"]
            comb = arms["combined"]["throughput"]["train_steps_per_s"]["mean"]
            speed[scenario] = att / comb if comb > 0 else math.nan
    return {
        "name": config.name,
        "config": asdict(config),
        "results": table,
        "attention_over_combined_speed": speed,
        "at_equal_time": equal_time,
        "references": references,
        "runs": [{k: v for k, v in r.items() if k != "curve"} for r in results],
        "not_finished": [r for r in results if r.get("status") != "finished"],
        "missing": [{"scenario": s, "arm": a, "seed": seed} for s, a, seed in missing],
    }


SIGNAL_METRICS = ("red_light_rate", "pedestrian_collision_rate")
"""Episode shares the signalised scenario adds to an evaluation
(:class:`agent.evaluate.episodes.EvalReport`)."""


def _signals(attention: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Intervals over runs of the signalised scenario's attribution: per situation, the mass
    and lift on the light and on pedestrians (runs that saw the situation), and the light test's
    figures per light state and condition."""
    out: dict[str, Any] = {"situations": {}, "light_test": {}}
    names = {name for a in attention for name in a["situations"]}
    for name in sorted(names):
        rows = [a["situations"][name] for a in attention if name in a["situations"]]
        keys = {k for r in rows for k in r if k != "frames"}
        out["situations"][name] = {
            "frames": int(sum(r["frames"] for r in rows)),
            **{k: interval([r.get(k) for r in rows]) for k in sorted(keys)},
        }
    for state in ("red", "green"):
        tests = [a["light_test"][state] for a in attention if state in a.get("light_test", {})]
        if not tests:
            continue
        block: dict[str, Any] = {"runs": len(tests), "frames": int(sum(t["frames"] for t in tests))}
        for condition in ("as_is", "blanked", "swapped", "control"):
            keys = {k for t in tests for k in t[condition]}
            block[condition] = {
                k: interval([t[condition].get(k) for t in tests]) for k in sorted(keys)
            }
        block["shown_as"] = tests[0].get("shown_as")
        out["light_test"][state] = block
    return out


def _relevance(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Intervals over runs of the attention-relevance agreement (agent.evaluate.agreement):
    per part (object tokens, camera patches), the hit rate, the chance rate and their ratio, of
    the runs that had frames to score."""
    out: dict[str, Any] = {}
    for part in ("tokens", "patches"):
        rows = [r[part] for r in runs if r.get(part, {}).get("frames")]
        out[part] = {
            "runs": len(rows),
            "frames": int(sum(r["frames"] for r in rows)),
            **{key: interval([r[key] for r in rows]) for key in ("hit", "chance", "ratio")},
        }
    return out


def _per_class(rows: Sequence[Mapping[str, float]]) -> dict[str, Any]:
    names = [k for k in rows[0] if all(k in r for r in rows)]
    return {k: interval([r[k] for r in rows]) for k in names}
