"""Fixed evaluation sets and the base replay pool for the loop (pure Python, no ROS).

- ``test`` / ``val``: generated once from fixed scene seeds (disjoint from every training
  seed: training scenes use seeds < 1e9, see ``RLS3Env.scene_seed``), scene types taken in
  turn, a few random moves per scene (including stacking, so vertical terms occur), then
  relations kept greedily so that every term gets about the same number of relations
  (``balance_relations``). Cached on disk (pickle) under a key naming the source, image size,
  seeds and sizes, so every run and every sampler evaluates on exactly the same set.
- ``replay``: base-like data mixed into every fine-tune by the scheduler (``replay_fraction``) so
  the strong relations are not forgotten: random moves, then the pre-training corpus's term
  imbalance (``replay_pool``, ``rare_keep``: left/right relations kept, the others with that
  probability; 1.0 = the natural distribution). A replay pool rich in the rare terms would teach
  them to every sampler alike and hide what the samplers' own data does.

The same generator runs on any :class:`~rls3_ros.loop.env.SimSource`, in-process or over ROS.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import tempfile
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from rls3_ros.captions.imbalance import term_counts  # noqa: F401 - part of this module's API
from rls3_ros.core.scene import Sample
from rls3_ros.loop.config import EnvConfig
from rls3_ros.loop.env import RLS3Env, SimSource

SPLIT_SEEDS = {"test": 1_000_000_000, "val": 1_100_000_000, "replay": 1_200_000_000}
# the generator's env: every relation the oracle gives is kept (rewards and the J2 settings play no part:
# no scorer, random moves)
GENERATOR_ENV = EnvConfig(max_relations=0)


def default_cache_dir() -> str:
    return os.environ.get("RLS3_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "rls3_ros"))


def generate_samples(
    source: SimSource,
    captioner: Callable,
    split: str,
    n_scenes: int,
    moves_per_scene: int = 4,
    scene_types: Optional[Sequence[str]] = None,
    seed_offset: int = 0,
) -> List[Sample]:
    """Valid captioned samples from ``n_scenes`` scenes with fixed seeds for ``split``."""
    base = SPLIT_SEEDS[split] + seed_offset
    env = RLS3Env.from_config(GENERATOR_ENV, source, captioner, None, T=moves_per_scene, T0=moves_per_scene,
                              scene_types=scene_types, run_id=split)
    env.scene_seed = lambda ep: base + ep  # type: ignore[assignment]
    rng = np.random.default_rng([base, 11])
    out: List[Sample] = []
    for _ in range(n_scenes):
        env.reset()
        done = False
        while not done:
            a = rng.uniform(-1.0, 1.0, env.action_space.shape).astype(np.float32)
            _, _, done, _, info = env.step(a)
            if done:
                out.extend(info["episode_record"].samples)
    return out


def balance_relations(samples: Sequence[Sample], per_term: int) -> List[Sample]:
    """Keep relations so every term reaches ``per_term`` relations if possible, rarest first.

    A relation is kept while one of its terms is still below ``per_term``; samples left
    without relations are dropped. Terms that never reach the target keep all they have.
    """
    counts: Dict[str, int] = {}
    total: Dict[str, int] = {}
    for s in samples:
        for r in s.relations:
            for t in r.terms:
                total[t] = total.get(t, 0) + 1
    # visit relations with rare terms first so they are not crowded out
    order = []
    for si, s in enumerate(samples):
        for ri, r in enumerate(s.relations):
            rarity = min(total[t] for t in r.terms) if r.terms else 0
            order.append((rarity, si, ri))
    order.sort()
    keep: Dict[int, List[int]] = {}
    for _, si, ri in order:
        r = samples[si].relations[ri]
        if r.terms and min(counts.get(t, 0) for t in r.terms) < per_term:
            keep.setdefault(si, []).append(ri)
            for t in r.terms:
                counts[t] = counts.get(t, 0) + 1
    out = []
    for si in sorted(keep):
        s = samples[si]
        rels = [s.relations[ri] for ri in sorted(keep[si])]
        out.append(Sample(sample_id=s.sample_id, image=s.image, scene=s.scene, relations=rels, valid=True,
                          episode=s.episode, step=s.step))
    return out


def _atomic_pickle(obj, path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    with os.fdopen(fd, "wb") as f:
        pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, path)


def cached_split(
    source: SimSource,
    captioner: Callable,
    split: str,
    n_scenes: int,
    source_key: str,
    moves_per_scene: int = 4,
    per_term: int = 0,
    scene_types: Optional[Sequence[str]] = None,
    cache_dir: Optional[str] = None,
    log: Callable[[str], None] = lambda m: None,
) -> List[Sample]:
    """``generate_samples`` (+ ``balance_relations`` when ``per_term`` > 0), cached on disk."""
    key = json.dumps({"v": 1, "split": split, "n": n_scenes, "moves": moves_per_scene, "per_term": per_term,
                      "source": source_key, "scene_types": list(scene_types or [])}, sort_keys=True)

    def make():
        samples = generate_samples(source, captioner, split, n_scenes, moves_per_scene, scene_types)
        return balance_relations(samples, per_term) if per_term else samples

    return _cached(split, key, n_scenes, make, cache_dir, log)


def cached_tail(source: SimSource, captioner: Callable, split: str, n_scenes: int, source_key: str,
                per_combo: int = 60, scene_types: Optional[Sequence[str]] = None, cache_dir: Optional[str] = None,
                log: Callable[[str], None] = lambda m: None) -> List[Sample]:
    """The tail split (``rls3_ros.loop.tail_split``), generated once and cached like the others."""
    from rls3_ros.loop.tail_split import generate_tail

    # v2: v1 sets made through the loop's worker processes drew from bounds, not surfaces (another
    # split under the same key); "surfaces": whether the source serves its support surfaces at all
    # (a sim_bridge does not: a graph run's tail split is its own, cached apart)
    surfaces = type(source).receptacles is not SimSource.receptacles
    key = json.dumps({"v": 2, "split": split, "n": n_scenes, "per_combo": per_combo, "source": source_key,
                      "scene_types": list(scene_types or []), "surfaces": surfaces}, sort_keys=True)
    return _cached(split, key, n_scenes,
                   lambda: generate_tail(source, captioner, split, n_scenes, per_combo=per_combo,
                                         scene_types=scene_types), cache_dir, log)


def _cached(split: str, key: str, n_scenes: int, make: Callable[[], List[Sample]], cache_dir: Optional[str],
            log: Callable[[str], None]) -> List[Sample]:
    h = hashlib.sha1(key.encode()).hexdigest()[:16]
    path = os.path.join(cache_dir or default_cache_dir(), "evalsets", f"{split}-{h}.pkl")
    if os.path.exists(path):
        try:
            with open(path, "rb") as f:
                data = pickle.load(f)
            if data.get("key") == key:
                return data["samples"]
        except Exception as e:  # corrupt cache: rebuild
            log(f"cache {path} unreadable ({e}); rebuilding")
    log(f"generating the {split} set ({n_scenes} scenes) once; cached at {path}")
    samples = make()
    _atomic_pickle({"key": key, "samples": samples}, path)
    return samples


def replay_pool(
    source: SimSource,
    captioner: Callable,
    n_scenes: int,
    source_key: str,
    moves_per_scene: int = 4,
    rare_keep: float = 0.0,
    scene_types: Optional[Sequence[str]] = None,
    log: Callable[[str], None] = lambda m: None,
) -> List[Sample]:
    """The base-like replay pool: the cached ``replay`` split with the pre-training imbalance."""
    from rls3_ros.captions.imbalance import imbalance

    samples = cached_split(source, captioner, "replay", n_scenes, source_key, moves_per_scene, 0, scene_types,
                           log=log)
    return samples if rare_keep >= 1.0 else imbalance(samples, rare_keep, seed=SPLIT_SEEDS["replay"] % (1 << 31))
