"""Paired statistics over seeds for the learning benchmark (pure numpy).

Curves are lists of ``(renders, accuracy)`` points, the base model at 0 renders first. Every
sampler runs with the same seeds (same training scenes, same base, same fixed test sets), so
samplers are compared by the per-seed difference and its Student-t 95 % interval.
"""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

# two-sided 95 % Student-t quantiles t_{0.975, df}
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
         11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
         20: 2.086, 25: 2.060, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}

Curve = Sequence[Tuple[float, float]]


def t975(df: int) -> float:
    if df < 1:
        return float("nan")
    keys = sorted(_T975)
    for k in keys:
        if df <= k:
            return _T975[k]
    return 1.960


def mean_ci(values: Sequence[Optional[float]]) -> Dict[str, float]:
    """Mean, 95 % interval (Student t) and n of the finite values."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if v.size == 0:
        return {"mean": float("nan"), "lo": float("nan"), "hi": float("nan"), "n": 0}
    m = float(v.mean())
    if v.size < 2:
        return {"mean": m, "lo": float("nan"), "hi": float("nan"), "n": int(v.size)}
    h = t975(v.size - 1) * float(v.std(ddof=1)) / math.sqrt(v.size)
    return {"mean": m, "lo": m - h, "hi": m + h, "n": int(v.size)}


def value_at(curve: Curve, renders: float) -> float:
    """Accuracy at ``renders`` by linear interpolation (the last value beyond the curve's end)."""
    xs = np.asarray([p[0] for p in curve], dtype=float)
    ys = np.asarray([p[1] for p in curve], dtype=float)
    if xs.size == 0:
        return float("nan")
    return float(np.interp(renders, xs, ys))


def renders_to_reach(curve: Curve, target: float) -> Optional[float]:
    """First render count at which the curve reaches ``target`` (interpolated between evaluation
    points; the base point does not count); None if it never does."""
    prev = None
    for i, (x, y) in enumerate(curve):
        if i > 0 and y >= target:
            if prev is None or prev[1] >= target:
                return float(x)
            x0, y0 = prev
            return float(x0 + (target - y0) / (y - y0) * (x - x0)) if y != y0 else float(x)
        prev = (x, y)
    return None


def auc(curve: Curve, budget: float) -> float:
    """Mean accuracy over renders 0..budget (area under the curve / budget)."""
    xs = [p[0] for p in curve if p[0] < budget] + [budget]
    ys = [p[1] for p in curve if p[0] < budget] + [value_at(curve, budget)]
    if len(xs) < 2:
        return float("nan")
    x, y = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0) / budget)


def paired(a: Sequence[Optional[float]], b: Sequence[Optional[float]]) -> Dict[str, float]:
    """Mean and 95 % interval of the per-seed difference a - b (seeds where both exist)."""
    d: List[float] = [x - y for x, y in zip(a, b) if x is not None and y is not None
                      and math.isfinite(x) and math.isfinite(y)]
    return mean_ci(d)
