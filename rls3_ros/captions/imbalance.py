"""The deliberate term imbalance of the embedded models' pre-training data (pure Python).

Real caption corpora are rich in left/right and poor in front/behind and above/below; the
embedded bases are pre-trained on such a corpus so that the RLS3 loop has something to fix.
The same filter makes the loop's replay pool look like the base's data (``eval.replay_rare_keep``).
"""

from __future__ import annotations

import collections
from typing import Dict, List, Sequence

import numpy as np

from rls3_ros.core.scene import Sample

COMMON_TERMS = ("left", "right")


def is_common(relation) -> bool:
    """True when every term of the relation is a common (left/right) term."""
    return all(t in COMMON_TERMS for t in relation.terms)


def imbalance(samples: Sequence[Sample], rare_keep: float, seed: int) -> List[Sample]:
    """Keep left/right-only relations, others with probability ``rare_keep``; drop emptied samples."""
    rng = np.random.default_rng(seed)
    out = []
    for s in samples:
        rels = [r for r in s.relations if is_common(r) or rng.random() < rare_keep]
        if rels:
            out.append(Sample(sample_id=s.sample_id, image=s.image, scene=s.scene, relations=rels, valid=s.valid,
                              episode=s.episode, step=s.step))
    return out


def term_counts(samples: Sequence[Sample]) -> Dict[str, int]:
    """Relations per term, most frequent first."""
    c = collections.Counter(t for s in samples for r in s.relations for t in r.terms)
    return dict(sorted(c.items(), key=lambda kv: -kv[1]))
