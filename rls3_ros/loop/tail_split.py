"""The tail split: pre-registered hard cases from a scene generator of its own (no ROS).

Why: the balanced test split is made by uniform random actions through the env's own action
decoder, so it holds what the random sampler makes; selection can only win where random is
poor. The tail split is fixed before any sampler runs and is produced without the env's
decoder or any sampler's policy: per scene, ``moves`` moves drawn by this module — stack an
active object on another one (offset anywhere over its top, 40 %), place it on a support
surface chosen uniformly among the scene's surfaces (floor, furniture tops, shelf levels;
50 %), or swap it with the container (10 %).

A relation enters the split (pre-registered, not tuned on results) when at least one holds:
- it has a vertical term (above, below, on, under): stacked and height-separated pairs;
- it has three terms (diagonal sector + vertical);
- its horizontal bearing lies within ``BOUNDARY_DEG`` of a sector boundary (22.5 + k*45 deg);
- subject or reference is partly occluded (visible fraction < ``OCCLUDED_BELOW``).
Relations are then balanced per term combination (at most ``per_combo`` each, rarest first), so
no combination dominates. Seeds start at 1.3e9 (test) / 1.4e9 (validation): disjoint from the
training scenes (< 1e9) and from the other fixed splits.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from rls3_ros.captions.terms import VERTICAL_TERMS
from rls3_ros.loop.env import SimSource
from rls3_ros.core.scene import Sample, SceneState, SpatialRelation
from rls3_ros.sim.backend import PLACE, SWAP, MoveAction
from rls3_ros.vlm.interface import combo_key

TAIL_SEEDS = {"tail": 1_300_000_000, "val_tail": 1_400_000_000}
BOUNDARY_DEG = 6.0
OCCLUDED_BELOW = 0.7


def is_tail(rel: SpatialRelation, scene: SceneState) -> bool:
    """The split's pre-registered membership rule (module docstring)."""
    if any(t in VERTICAL_TERMS for t in rel.terms) or len(rel.terms) >= 3:
        return True
    deg = math.degrees(rel.horizontal_angle) % 45.0
    if abs(deg - 22.5) < BOUNDARY_DEG:
        return True
    vis = {o.id: o.visible_fraction for o in scene.objects}
    return min(vis.get(rel.subject_id, 1.0), vis.get(rel.reference_id, 1.0)) < OCCLUDED_BELOW


def _receptacles(source: SimSource):
    """The source's support surfaces (``SimSource.receptacles``). Every source must give the ones
    its simulator has: the generator reads only a source's interface, so a backend in-process and
    the loop's worker processes draw the same moves (it used to read ``source.backend``, which the
    worker-process source does not have, and drew from bounds instead: another tail split than the
    one registered). ``sim_bridge`` does not serve its surfaces, so over ROS the generator draws
    from bounds: a graph run's tail split is not the in-process one."""
    try:
        return list(source.receptacles())
    except Exception:  # noqa: BLE001 - a source without surfaces: fall back to the bounds
        return []


def tail_move(scene: SceneState, source: SimSource, rng: np.random.Generator) -> Optional[MoveAction]:
    """One move of the tail generator (module docstring)."""
    active = scene.active_objects()
    if not active:
        return None
    obj = active[int(rng.integers(len(active)))]
    yaw = float(rng.uniform(-math.pi, math.pi))
    u = float(rng.uniform())
    others = [o for o in active if o.id != obj.id]
    if u < 0.4 and others:
        ref = others[int(rng.integers(len(others)))]
        dx, dy = (float(rng.uniform(-0.5, 0.5)) * ref.size[0], float(rng.uniform(-0.5, 0.5)) * ref.size[1])
        z = ref.position[2] + ref.size[2] / 2.0 + obj.size[2] / 2.0
        return MoveAction(PLACE, obj.id, position=(ref.position[0] + dx, ref.position[1] + dy, z), yaw=yaw,
                          receptacle_id=ref.id)
    if u < 0.9:
        recs = [r for r in _receptacles(source) if r[0] not in {o.id for o in active}]
        if recs:
            rid, top, lo, hi = recs[int(rng.integers(len(recs)))]
            x, y = float(rng.uniform(lo[0], hi[0])), float(rng.uniform(lo[1], hi[1]))
            return MoveAction(PLACE, obj.id, position=(x, y, top + obj.size[2] / 2.0), yaw=yaw, receptacle_id=rid)
        lo, hi = source.placement_bounds(scene)
        pos = tuple(float(rng.uniform(lo[i], hi[i])) for i in range(3))
        return MoveAction(PLACE, obj.id, position=pos, yaw=yaw)  # type: ignore[arg-type]
    return MoveAction(SWAP, obj.id, yaw=yaw)


def balance_combos(samples: Sequence[Sample], per_combo: int) -> List[Sample]:
    """Keep at most ``per_combo`` relations of each term combination, in generation order."""
    kept: Dict[str, int] = {}
    out: List[Sample] = []
    for s in samples:
        rels = []
        for r in s.relations:
            c = combo_key(r.terms)
            if kept.get(c, 0) < per_combo:
                kept[c] = kept.get(c, 0) + 1
                rels.append(r)
        if rels:
            out.append(Sample(sample_id=s.sample_id, image=s.image, scene=s.scene, relations=rels, valid=True,
                              episode=s.episode, step=s.step))
    return out


def generate_tail(source: SimSource, captioner: Callable[[SceneState], List[SpatialRelation]], split: str,
                  n_scenes: int, moves: int = 6, per_combo: int = 60,
                  scene_types: Optional[Sequence[str]] = None) -> List[Sample]:
    """Valid samples whose relations pass :func:`is_tail`, balanced per combination."""
    if split not in TAIL_SEEDS:
        raise ValueError(f"tail split must be one of {sorted(TAIL_SEEDS)} (got {split!r})")
    base = TAIL_SEEDS[split]
    types = list(scene_types or source.scene_types) or [None]
    rng = np.random.default_rng([base, 13])
    out: List[Sample] = []
    for i in range(int(n_scenes)):
        try:
            step = source.reset(base + i, types[i % len(types)])
        except (RuntimeError, ValueError):
            continue
        scene = step.scene
        for k in range(int(moves)):
            move = tail_move(scene, source, rng)
            if move is None:
                break
            res = source.apply(move)
            if not res.valid:
                continue
            scene = res.scene
            rels = [r for r in captioner(scene) if is_tail(r, scene)]
            if rels:
                out.append(Sample(sample_id=f"{split}-{i}-{k}", image=res.image, scene=scene, relations=rels,
                                  valid=True, episode=i, step=k))
    return balance_combos(out, per_combo)
