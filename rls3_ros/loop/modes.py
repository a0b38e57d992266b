"""Generation modes: a handful of named regions of the env's action box (pure Python, no ROS).

The env's action ``Box(-1, 1, (6,))`` (see :mod:`rls3_ros.loop.env`) decodes into a swap, a
placement at (x, y, height) or a stack. A *mode* is one region of that box, sampled uniformly
inside: what a teacher chooses between ("stack something", "put something high") instead of
six continuous numbers. Every action of any sampler falls into exactly one mode
(:func:`mode_of`), so the same statistics describe SAC, random and the mode samplers.

| mode | a[1] (move kind) | a[4] (place: target height) |
| --- | --- | --- |
| ``swap`` | < -0.5 | – |
| ``place_low`` | [-0.5, 0.5) | < -1/3 (floor, low furniture) |
| ``place_mid`` | [-0.5, 0.5) | [-1/3, 1/3) |
| ``place_high`` | [-0.5, 0.5) | >= 1/3 (furniture tops, high shelves) |
| ``stack`` | >= 0.5 | (which other object to stack on) |

A uniform random action lands in the modes with probabilities 0.25 / 0.167 / 0.167 / 0.167 /
0.25 (:data:`UNIFORM_SHARE`): the random baseline is the mode mixture with those weights.
"""

from __future__ import annotations

from typing import Dict, Sequence, Tuple

import numpy as np


ACTION_DIM = 6  # the env's action box (rls3_ros.loop.env module docstring)
MODES: Tuple[str, ...] = ("swap", "place_low", "place_mid", "place_high", "stack")

# (a[1] range, a[4] range) per mode; the other dimensions are uniform in [-1, 1]
_REGIONS: Dict[str, Tuple[Tuple[float, float], Tuple[float, float]]] = {
    "swap": ((-1.0, -0.5), (-1.0, 1.0)),
    "place_low": ((-0.5, 0.5), (-1.0, -1.0 / 3.0)),
    "place_mid": ((-0.5, 0.5), (-1.0 / 3.0, 1.0 / 3.0)),
    "place_high": ((-0.5, 0.5), (1.0 / 3.0, 1.0)),
    "stack": ((0.5, 1.0), (-1.0, 1.0)),
}

UNIFORM_SHARE: Dict[str, float] = {m: (r[0][1] - r[0][0]) / 2.0 * (r[1][1] - r[1][0]) / 2.0
                                   for m, r in _REGIONS.items()}


def mode_action(mode: str, rng: np.random.Generator) -> np.ndarray:
    """A uniform random action inside ``mode``'s region of the box."""
    if mode not in _REGIONS:
        raise ValueError(f"unknown mode {mode!r} (modes: {', '.join(MODES)})")
    a = rng.uniform(-1.0, 1.0, ACTION_DIM)
    (k0, k1), (h0, h1) = _REGIONS[mode]
    a[1] = rng.uniform(k0, k1)
    a[4] = rng.uniform(h0, h1)
    if mode == "stack":  # keep a[1] strictly inside [0.5, 1]: the decoder's stack test is a[1] >= 0.5
        a[1] = max(a[1], 0.5)
    return np.clip(a, -1.0, 1.0).astype(np.float32)


def mode_of(action: Sequence[float]) -> str:
    """The mode an action of the box falls into (the decoder's own thresholds)."""
    a = np.clip(np.asarray(action, dtype=float).reshape(-1), -1.0, 1.0)
    if a[1] < -0.5:
        return "swap"
    if a[1] >= 0.5:
        return "stack"
    if a[4] < -1.0 / 3.0:
        return "place_low"
    if a[4] < 1.0 / 3.0:
        return "place_mid"
    return "place_high"
