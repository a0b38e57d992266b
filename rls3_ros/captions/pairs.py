"""Which (A, B) pairs of an image get captions (pure Python).

Rules (parameters in ``OracleConfig``):
1. Eligible objects: ``visible`` (``require_visible``), a non-empty description that is
   unique in the scene (case-insensitive, counted over *all* scene objects, so a caption
   can never refer to two objects), and a finite position.
2. Pairs: unordered pairs of eligible objects, in scene order; with ``require_active``
   a pair must contain at least one active object whenever some eligible object is
   active (the RL agent moves active objects, so their relations are what it changes).
3. Each pair is captioned once; the subject is the earlier object in scene order, or a
   random one of the two when an ``rng`` is given (the inverse relation carries no new
   information: it is always the inverse terms, see ``terms.INVERSE``).
4. Degenerate pairs (too close, no term) and, with ``boundary_margin_deg`` > 0, pairs
   within that margin of a decision boundary are skipped as ambiguous.
5. With ``max_pairs`` > 0 at most that many pairs are kept (a random subset with an rng,
   else the first ones).
"""

from __future__ import annotations

import math
import random
from collections import Counter
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from rls3_ros.core.scene import ObjectState, SceneState, SpatialRelation

RngLike = Union[None, int, random.Random, np.random.Generator]


class PairRng:
    """Uniform wrapper over random.Random / numpy Generator / int seed."""

    def __init__(self, rng: RngLike) -> None:
        if isinstance(rng, (int, np.integer)):
            rng = np.random.default_rng(int(rng))
        self.rng = rng

    def coin(self) -> bool:
        if isinstance(self.rng, np.random.Generator):
            return bool(self.rng.random() < 0.5)
        return self.rng.random() < 0.5

    def shuffle(self, items: list) -> None:
        if isinstance(self.rng, np.random.Generator):
            order = self.rng.permutation(len(items))
            items[:] = [items[i] for i in order]
        else:
            self.rng.shuffle(items)


def _key(desc: str) -> str:
    return " ".join(desc.lower().split())


def eligible_objects(scene: SceneState, require_visible: bool = True) -> List[ObjectState]:
    """Objects that may appear in a caption (visible, unique description, finite position)."""
    counts = Counter(_key(o.description) for o in scene.objects)
    out = []
    for o in scene.objects:
        if require_visible and not o.visible:
            continue
        if not o.description.strip() or counts[_key(o.description)] != 1:
            continue
        if len(o.position) != 3 or not all(math.isfinite(float(c)) for c in o.position):
            continue
        out.append(o)
    return out


def candidate_pairs(scene: SceneState, require_visible: bool = True, require_active: bool = True) -> List[Tuple[str, str]]:
    """Unordered eligible pairs (ids, scene order) before geometry filters."""
    objs = eligible_objects(scene, require_visible)
    any_active = any(o.active for o in objs)
    pairs = []
    for i in range(len(objs)):
        for j in range(i + 1, len(objs)):
            if require_active and any_active and not (objs[i].active or objs[j].active):
                continue
            pairs.append((objs[i].id, objs[j].id))
    return pairs
