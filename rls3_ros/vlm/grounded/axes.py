"""The relation head's output layout: three independent axes of terms in 11 columns.

vertical {none, above, below, on, under}, depth {none, in front, behind}, lateral {none, left,
right}; index 0 of an axis = no term on that axis. log p(term set | image, A, B) = sum of the
axis log-probs of the set's columns.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import torch

from rls3_ros.captions import terms as T

# Axes of the relation head (index 0 = no term on that axis).
VERTICAL = ("", T.ABOVE, T.BELOW, T.ON, T.UNDER)
DEPTH = ("", T.IN_FRONT, T.BEHIND)
LATERAL = ("", T.LEFT, T.RIGHT)
AXES = (VERTICAL, DEPTH, LATERAL)
AXIS_SLICES = ((0, 5), (5, 8), (8, 11))
N_OUT = 11
TERM_AXIS = {t: (a, i) for a, ax in enumerate(AXES) for i, t in enumerate(ax) if t}  # term -> (axis, index)


def axis_log_probs(logits: torch.Tensor) -> torch.Tensor:
    """(N, 11) logits -> per-axis log-softmax, same layout."""
    return torch.cat([torch.log_softmax(logits[:, a:b], -1) for a, b in AXIS_SLICES], 1)


def term_indices(terms: Sequence[str]) -> Tuple[int, int, int]:
    """Column (in the 11-wide layout) of each axis' class for a term set."""
    cls = [0, 0, 0]
    for t in terms:
        a, i = TERM_AXIS[t]
        cls[a] = i
    return tuple(AXIS_SLICES[a][0] + cls[a] for a in range(3))  # type: ignore[return-value]


def term_of_column(col: int) -> str:
    """The term of a column of the 11-wide axis layout ('' for an axis' "none" class)."""
    for a, (lo, hi) in enumerate(AXIS_SLICES):
        if lo <= col < hi:
            return AXES[a][col - lo]
    return ""

