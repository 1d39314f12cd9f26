"""Means with 95% Student-t intervals: over seeds in the benchmark study, over episodes in the
attention-relevance agreement (the unit is what is resampled by nature: a seed, an episode)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

# two-sided 95% quantiles of Student's t, by degrees of freedom (scipy is not a dependency)
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306}
_T95.update({9: 2.262, 10: 2.228, 11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131})
_T95.update({16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093, 20: 2.086, 25: 2.060, 30: 2.042})
_T95.update({40: 2.021, 60: 2.000, 120: 1.980})


def t95(df: int) -> float:
    """The quantile at ``df``, or at the nearest tabulated smaller ``df`` (a wider interval)."""
    if df < 1:
        return math.nan
    return _T95[max(d for d in _T95 if d <= df)]


def interval(values: Sequence[float]) -> dict[str, Any]:
    """Mean and the half-width of its 95% t-interval over ``values`` (one per unit: a seed, an
    episode); unknown values (None, NaN) are left out."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    n = len(x)  # unknown values (None, NaN) are left out
    if n == 0:
        return {"mean": math.nan, "ci95": math.nan, "n": 0, "values": []}
    half = t95(n - 1) * float(x.std(ddof=1)) / math.sqrt(n) if n > 1 else math.nan
    return {"mean": float(x.mean()), "ci95": half, "n": n, "values": [float(v) for v in x]}
