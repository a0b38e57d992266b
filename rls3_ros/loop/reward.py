"""The extrinsic reward J2 from the VLM's scores, and its baseline against the current adapter
(pure Python, no ROS). The env (``rls3_ros.loop.env``) adds it to the intrinsic validity reward.

- ``j2_from_scores``: mean per-relation loss [nats], clipped so a few ambiguous near-boundary
  samples cannot dominate (``metric="loss"``), or 1 - accuracy (``"error"``). A worse VLM gives a
  higher reward (the paper's "VLM performance down = reward up").
- ``AdapterBaseline``: J2 minus the running mean of the episodes scored by the same adapter, so the
  target stops moving as the VLM learns (``env.j2_baseline: iteration``).
"""

from __future__ import annotations

from typing import Dict, List, Sequence

import numpy as np

from rls3_ros.vlm.interface import RelationScore


def j2_from_scores(scores: Sequence[RelationScore], metric: str = "loss", clip: float = 5.0) -> float:
    """Extrinsic reward from the VLM's scores: mean clipped loss, or 1 - accuracy."""
    if not scores:
        return 0.0
    if metric == "loss":
        return float(np.mean([min(float(s.loss), clip) for s in scores]))
    if metric == "error":
        return float(1.0 - np.mean([bool(s.correct) for s in scores]))
    raise ValueError(f"unknown j2_metric {metric!r} (loss | error)")


def per_sample_loss(scores: Sequence[RelationScore], clip: float = 5.0) -> Dict[str, float]:
    acc: Dict[str, List[float]] = {}
    for s in scores:
        acc.setdefault(s.sample_id, []).append(min(float(s.loss), clip))
    return {k: float(np.mean(v)) for k, v in acc.items()}


class AdapterBaseline:
    """Running mean of raw J2 per adapter (fine-tune iteration): ``relative(j2, iteration)`` is J2
    minus the mean of the earlier episodes of that adapter (0 for its first), then updates it."""

    def __init__(self) -> None:
        self._iteration, self._n, self._mean = -1, 0, 0.0

    def relative(self, j2: float, iteration: int) -> float:
        if iteration != self._iteration:
            self._iteration, self._n, self._mean = iteration, 0, 0.0
        out = j2 - self._mean if self._n else 0.0
        self._n += 1
        self._mean += (j2 - self._mean) / self._n
        return out
