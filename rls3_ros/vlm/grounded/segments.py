"""Softmax within segments of a flat vector (each relation's candidate captions), as one batched op."""

from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np
import torch


def padded_segments(counts: Sequence[int]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Rows of ``len(counts)`` consecutive segments of a flat vector as a padded (R, K) index into it
    and its mask (K = the longest segment): a per-segment softmax becomes one batched op."""
    c = np.asarray(counts, dtype=np.int64)
    k = int(c.max()) if len(c) else 0
    cols = np.arange(k)
    mask = cols[None, :] < c[:, None]
    index = np.where(mask, (np.cumsum(c) - c)[:, None] + cols[None, :], 0)
    return torch.from_numpy(index), torch.from_numpy(mask)


def segment_log_softmax(values: torch.Tensor, counts: Sequence[int]) -> Tuple[torch.Tensor, torch.Tensor]:
    """log-softmax within each segment of the flat ``values`` -> padded (R, K) log-probs (-inf where
    padded) and the padded raw values (-inf where padded)."""
    index, mask = padded_segments(counts)
    raw = values[index].masked_fill(~mask, float("-inf"))
    return torch.log_softmax(raw, 1), raw

