"""``rls3 captions``: a captioned dataset of random valid simulator scenes.

    rls3 captions --n 1000 --out data/captions --seed 0 --size 224

Each scene seed ``seed + k`` is reset, then ``--moves-per-reset`` random valid moves
(an active object placed on a random support surface, or swapped with a container
object; invalid moves are undone by the simulator and not counted) each yield one more
sample, so samples are the random agent's distribution. Every sample is captioned by the
oracle (all eligible pairs unless ``--max-pairs``); samples without any caption are
skipped. Writes the dataset format of ``rls3_ros.captions.dataset`` plus
``stats.json`` / ``stats.md`` / ``stats.png`` (term statistics) and ``example.png`` (one
image with its captions) into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Iterator, List, Optional

import numpy as np

from rls3_ros.captions.dataset import DatasetWriter
from rls3_ros.captions.oracle import CaptionOracle, OracleConfig
from rls3_ros.core.scene import Sample


def random_valid_samples(backend, oracle: CaptionOracle, n: int, seed: int, moves_per_reset: int,
                         max_pairs: int = 0, max_attempts_per_move: int = 20, stats: Optional[dict] = None
                         ) -> Iterator[Sample]:
    """Yield ``n`` captioned samples of random valid scenes (see module docstring)."""
    from rls3_ros.sim.backend import PLACE, SWAP, MoveAction

    rng = np.random.default_rng(seed)
    stats = stats if stats is not None else {}
    stats.setdefault("resets", 0)
    stats.setdefault("moves_tried", 0)
    stats.setdefault("moves_invalid", {})
    stats.setdefault("uncaptioned", 0)
    made = 0
    k = 0
    while made < n:
        scene_seed = seed + k
        k += 1
        try:
            backend.reset(seed=scene_seed)
        except RuntimeError as e:  # a seed whose objects cannot be placed validly
            stats.setdefault("reset_failures", []).append(f"{scene_seed}: {e}")
            continue
        stats["resets"] += 1
        render = backend.render()
        scene = backend.state()
        for m in range(moves_per_reset + 1):
            if m > 0:
                for _ in range(max_attempts_per_move):
                    objs = scene.active_objects() or scene.objects
                    oid = objs[int(rng.integers(len(objs)))].id
                    kind = SWAP if (rng.random() < 0.3 and scene.container_ids) else PLACE
                    res = backend.apply(MoveAction(kind, oid, yaw=float(rng.uniform(-np.pi, np.pi))))
                    stats["moves_tried"] += 1
                    if res.valid:
                        render, scene = res.render, res.scene
                        break
                    r = res.reason.split(":")[0]
                    stats["moves_invalid"][r] = stats["moves_invalid"].get(r, 0) + 1
                else:
                    break  # this scene is stuck; next reset
            rels = oracle.caption_scene(scene, max_pairs=max_pairs, rng=rng)
            if not rels:
                stats["uncaptioned"] += 1
                continue
            scene.stamp_ns = 0  # wall-clock stamps make datasets non-reproducible
            yield Sample(
                sample_id=f"{scene.scene_id}-m{m}",
                image=np.asarray(render.rgb, dtype=np.uint8),
                scene=scene,
                relations=rels,
                valid=True,
                episode=scene_seed,
                step=m,
                segmentation=render.segmentation,
            )
            made += 1
            if made >= n:
                return


def cli_captions(argv: List[str]) -> int:
    p = argparse.ArgumentParser(prog="rls3 captions", description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=100, help="number of captioned samples (default 100)")
    p.add_argument("--out", required=True, help="dataset directory (created; must not hold a dataset)")
    p.add_argument("--seed", type=int, default=0, help="first scene seed and move seed (default 0)")
    p.add_argument("--size", type=int, default=224, help="image width = height in pixels (default 224)")
    p.add_argument("--backend", default="mujoco", help="simulator backend (default mujoco)")
    p.add_argument("--moves-per-reset", type=int, default=4, help="random valid moves after each reset (default 4)")
    p.add_argument("--max-pairs", type=int, default=0, help="captions per image, 0 = all eligible pairs")
    p.add_argument("--margin", type=float, default=0.0, help="skip pairs within this many deg of a boundary")
    p.add_argument("--no-segmentation", action="store_true", help="do not store segmentation PNGs")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    a = p.parse_args(argv)
    if a.n < 1 or a.moves_per_reset < 0 or a.max_pairs < 0:
        p.error("--n must be >= 1, --moves-per-reset and --max-pairs >= 0")
    out = Path(a.out)
    if (out / "samples.jsonl").exists():
        p.error(f"{out} already holds a dataset; choose another --out")
    try:
        oracle = CaptionOracle(OracleConfig(boundary_margin_deg=a.margin))
    except ValueError as e:
        p.error(str(e))

    from tqdm import tqdm

    from rls3_ros.captions.figure import caption_figure
    from rls3_ros.captions.statistics import plot_statistics, relation_statistics, statistics_markdown
    from rls3_ros.sim.factory import make_backend

    try:
        backend = make_backend(a.backend, image_size=a.size, seed=a.seed)
    except (ValueError, ImportError) as e:
        print(f"rls3 captions: {e}", file=sys.stderr)
        return 2
    gen_stats: dict = {}
    samples_meta = []
    example: Optional[Sample] = None
    t0 = time.monotonic()
    try:
        with DatasetWriter(out, write_segmentation=not a.no_segmentation) as w, \
                tqdm(total=a.n, desc="captioned samples", unit="img", disable=a.quiet, file=sys.stderr) as bar:
            for s in random_valid_samples(backend, oracle, a.n, a.seed, a.moves_per_reset, a.max_pairs, stats=gen_stats):
                w.add(s)
                samples_meta.append(Sample(s.sample_id, np.zeros((1, 1, 3), np.uint8), s.scene, s.relations))
                if example is None and len(s.relations) >= 3:
                    example = s
                bar.update(1)
    finally:
        backend.close()
    elapsed = time.monotonic() - t0
    st = relation_statistics(samples_meta)
    st["generation"] = dict(gen_stats, seconds=round(elapsed, 1), size=a.size, seed=a.seed,
                            moves_per_reset=a.moves_per_reset, backend=a.backend)
    (out / "stats.json").write_text(json.dumps(st, indent=2))
    md = statistics_markdown(st)
    (out / "stats.md").write_text(md)
    plot_statistics(st, out / "stats.png", title=f"{st['relations']} relations in {len(samples_meta)} samples")
    if example is not None:
        caption_figure(example, out / "example.png")
    print(md)
    print(f"wrote {len(samples_meta)} samples to {out} in {elapsed:.1f} s "
          f"({gen_stats.get('resets', 0)} resets, {gen_stats.get('moves_tried', 0)} moves tried, "
          f"invalid: {gen_stats.get('moves_invalid', {})})")
    return 0


if __name__ == "__main__":
    sys.exit(cli_captions(sys.argv[1:]))
