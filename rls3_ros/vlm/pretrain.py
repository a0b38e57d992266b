"""``rls3 pretrain``: build and cache the embedded base VLM.

Corpus: scenes from the SAME MuJoCo simulator the RL loop uses (``make_backend("mujoco")``),
a reset and a few random ``place`` moves per scene, captioned by the real caption oracle
(with its hard negatives). It is deliberately imbalanced, as real caption corpora are: every
relation whose terms are only left/right is kept, a relation containing any other term
(in front, behind, above, below, on, under) only with probability ``--rare-keep`` (default
0.07). A separate held-out set from other scene seeds keeps every relation (all terms
represented) for the per-term report.

Training: the dual loss (hard-negative + InfoNCE) on the fusion layers of
``SpatialMatchModel`` over cached frozen EfficientNet-Lite0 / MiniLM features, AdamW with a
cosine schedule over a wall-clock budget (``--minutes``).

Output: ``<model dir>/embedded`` (``rls3_ros.vlm.factory.embedded_base_dir``): the
``save_pretrained`` files plus ``pretrain_metrics.json`` (times, corpus term counts, held-out
accuracy overall and per term with the multiple-choice chance level). Skipped when present
unless ``--force``.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from rls3_ros.core.scene import Sample

from rls3_ros.captions.imbalance import COMMON_TERMS, imbalance, term_counts  # noqa: F401 (re-exported)


def _caption_sample(oracle, scene, rgb, sid: str, rng: np.random.Generator) -> Optional[Sample]:
    try:
        rels = oracle.caption_scene(scene, rng=int(rng.integers(1 << 30)))
    except ValueError:
        return None
    if not rels:
        return None
    return Sample(sample_id=sid, image=np.ascontiguousarray(rgb), scene=scene, relations=rels)


def captioned_renders(n_images: int, seed: int, image_size: int, backend: str = "mujoco", moves_per_scene: int = 8,
                      render_depth: bool = False) -> Iterator[Tuple[Sample, Any]]:
    """The corpus's renders, one (captioned sample, the backend's render) at a time until ``n_images``:
    per scene seed a reset and ``moves_per_scene`` random ``place`` moves, each valid render captioned by
    the oracle (all relations kept). ``render_depth``: the render carries the depth image too."""
    from rls3_ros.captions.oracle import CaptionOracle
    from rls3_ros.sim.backend import PLACE, MoveAction
    from rls3_ros.sim.factory import make_backend

    rng = np.random.default_rng(seed)
    oracle = CaptionOracle()
    sim = make_backend(backend, image_size=image_size, seed=seed, **({"render_depth": True} if render_depth else {}))
    made = 0
    try:
        scene_seed = seed * 100003
        while made < n_images:
            scene_seed += 1
            try:
                scene = sim.reset(seed=scene_seed)
            except (RuntimeError, ValueError):  # the backend could not build this seed: take the next
                continue
            render = sim.render()
            s = _caption_sample(oracle, scene, render.rgb, f"{backend}-{scene_seed}-0", rng)
            if s is not None:
                made += 1
                yield s, render
            for k in range(moves_per_scene):
                if made >= n_images:
                    break
                act = scene.active_objects() or scene.objects
                res = sim.apply(MoveAction(PLACE, act[int(rng.integers(len(act)))].id, yaw=float(rng.uniform(-3.14, 3.14))))
                if not res.valid:
                    continue
                scene = res.scene
                s = _caption_sample(oracle, scene, res.render.rgb, f"{backend}-{scene_seed}-{k + 1}", rng)
                if s is not None:
                    made += 1
                    yield s, res.render
    finally:
        sim.close()


def render_corpus(n_images: int, seed: int, image_size: int, backend: str = "mujoco", moves_per_scene: int = 8,
                  desc: str = "corpus") -> List[Sample]:
    """``n_images`` captioned samples (all relations kept) from ``backend`` ("mujoco" or "standin")."""
    from tqdm import tqdm

    bar = tqdm(total=n_images, desc=desc, unit="img", file=sys.stderr, mininterval=2.0)
    try:
        if backend == "standin":
            from rls3_ros.vlm.standin import make_samples

            out = make_samples(n_images, seed=seed, image_size=image_size, max_pairs=0)
            bar.update(len(out))
            return out
        out = []
        for s, _ in captioned_renders(n_images, seed, image_size, backend, moves_per_scene):
            out.append(s)
            bar.update(1)
        return out
    finally:
        bar.close()


def chance_per_term(samples: Sequence[Sample]) -> Tuple[float, Dict[str, float]]:
    """Multiple-choice chance: mean of 1 / (1 + #negatives), overall and per term."""
    from rls3_ros.captions.negatives import relation_candidates

    per: Dict[str, List[float]] = collections.defaultdict(list)
    allc: List[float] = []
    for s in samples:
        for r in s.relations:
            c = 1.0 / len(relation_candidates(r))
            allc.append(c)
            for t in r.terms:
                per[t].append(c)
    return float(np.mean(allc)), {t: float(np.mean(v)) for t, v in per.items()}


def evaluation_report(vlm, samples: Sequence[Sample]) -> Dict[str, object]:
    ev = vlm.evaluate(samples)
    chance, per_chance = chance_per_term(samples)
    return {
        "accuracy": ev.accuracy, "chance": chance, "n": ev.n, "mean_loss": ev.mean_loss,
        "per_term": {t: {"accuracy": ev.per_term[t], "chance": per_chance[t], "n": ev.counts[t]}
                     for t in sorted(ev.per_term, key=lambda t: -ev.counts[t])},
    }


def format_report(rep: Dict[str, object], with_loss: bool = False) -> str:
    """An ``evaluation_report`` as text: overall line (with the mean loss if ``with_loss``), then one line per term."""
    loss = f", loss {rep['mean_loss']:.3f}" if with_loss else ""
    lines = [f"accuracy {rep['accuracy']:.3f} (chance {rep['chance']:.3f}, n={rep['n']}{loss})"]
    for t, d in rep["per_term"].items():  # type: ignore[union-attr]
        lines.append(f"  {t:9s} {d['accuracy']:.3f}  chance {d['chance']:.3f}  n={d['n']}")
    return "\n".join(lines)


def pretrain(out_dir: Path, minutes: float = 4.0, n_train: int = 2400, n_test: int = 400, image_size: int = 160,
             seed: int = 0, rare_keep: float = 0.07, backend: str = "mujoco", hidden_size: int = 96,
             num_layers: int = 2, batch_size: int = 32, lr: float = 3e-3, image_stage: str = "stride16",
             infonce_weight: float = 1.0, log=print) -> Dict[str, object]:
    import torch

    from rls3_ros.vlm.contrastive import EmbeddedVLM
    from rls3_ros.vlm.embedded import SpatialMatchConfig, SpatialMatchModel

    t_start = time.monotonic()
    torch.manual_seed(seed)
    full = render_corpus(n_train, seed, image_size, backend, desc="render train corpus")
    test = render_corpus(n_test, seed + 7919, image_size, backend, desc="render held-out set")
    train = imbalance(full, rare_keep, seed)
    t_render = time.monotonic() - t_start
    log(f"rendered {len(full)} + {len(test)} images in {t_render:.0f} s; kept {len(train)} training images")
    log(f"train terms (imbalanced): {term_counts(train)}")
    log(f"held-out terms: {term_counts(test)}")

    cfg = SpatialMatchConfig(image_size=image_size, image_stage=image_stage, hidden_size=hidden_size, num_heads=4, num_layers=num_layers,
                             intermediate_size=2 * hidden_size)
    model = SpatialMatchModel(cfg)
    vlm = EmbeddedVLM(model, base_spec="embedded:pretraining", infonce_batch=8, infonce_weight=infonce_weight,
                      seed=seed)
    t0 = time.monotonic()
    vlm.encoders.image_features([s.image for s in train + test])
    t_feat = time.monotonic() - t0
    log(f"frozen features for {len(train) + len(test)} images in {t_feat:.0f} s")

    params = list(model.parameters())
    for p in params:
        p.requires_grad_(True)
    from tqdm import tqdm

    budget = max(10.0, minutes * 60.0)
    bar = tqdm(desc="pretrain", unit="step", file=sys.stderr, mininterval=2.0)

    def progress(step, total, loss):
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}", refresh=False)

    t0 = time.monotonic()
    res = vlm.train_steps(train, 1_000_000, params, lr=lr, batch_size=batch_size, progress=progress,
                          weight_decay=0.01, warmup=50, time_budget=budget)
    bar.close()
    t_train = time.monotonic() - t0
    for p in params:
        p.requires_grad_(False)
    model.eval()
    log(f"trained {res.steps} steps ({res.samples_used} relations) in {t_train:.0f} s, final loss {res.final_loss:.3f}")
    t0 = time.monotonic()
    rep = evaluation_report(vlm, test)
    t_eval = time.monotonic() - t0
    log("held-out (all relations):\n" + format_report(rep))
    metrics = {
        "command": "rls3 pretrain " + " ".join(sys.argv[2:]) if len(sys.argv) > 2 else "rls3 pretrain",
        "seed": seed, "backend": backend, "image_size": image_size, "rare_keep": rare_keep,
        "n_rendered": len(full), "n_train_images": len(train), "n_test_images": len(test),
        "train_term_counts": term_counts(train), "test_term_counts": term_counts(test),
        "seconds": {"render": t_render, "features": t_feat, "train": t_train, "eval": t_eval,
                    "total": time.monotonic() - t_start},
        "steps": res.steps, "relations_seen": res.samples_used, "final_loss": res.final_loss,
        "train_relations_per_s": res.samples_used / max(t_train, 1e-9),
        "heldout": rep, "torch_threads": torch.get_num_threads(),
    }
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".embedded.tmp-", dir=out_dir.parent))
    model.save_pretrained(tmp)
    (tmp / "pretrain_metrics.json").write_text(json.dumps(metrics, indent=1))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.rename(tmp, out_dir)
    log(f"saved {out_dir} ({sum(f.stat().st_size for f in out_dir.iterdir()) / 1e6:.1f} MB)")
    return metrics


def cli_pretrain_embedded(argv: List[str]) -> int:
    """``rls3 pretrain --model embedded [--force] [--minutes M] ...``"""
    from rls3_ros.vlm.model_dirs import model_dir

    ap = argparse.ArgumentParser(prog="rls3 pretrain --model embedded", description=__doc__.split("\n\n")[0])
    ap.add_argument("--force", action="store_true", help="rebuild even if a pretrained base exists")
    ap.add_argument("--minutes", type=float, default=3.0, help="training wall-clock budget (default 3)")
    ap.add_argument("--out", default="", help="output directory (default: $RLS3_MODEL_DIR/embedded or "
                                              "~/.cache/rls3_ros/models/embedded)")
    ap.add_argument("--images", type=int, default=1600, help="training images rendered before filtering")
    ap.add_argument("--test-images", type=int, default=300)
    ap.add_argument("--image-size", type=int, default=160)
    ap.add_argument("--rare-keep", type=float, default=0.07,
                    help="probability of keeping a relation with a term other than left/right")
    ap.add_argument("--backend", default="mujoco", help="mujoco (default) or standin (drawn shapes, no simulator)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--image-stage", default="stride16", choices=["stride8", "stride16", "stride32"],
                    help="EfficientNet feature map fed to the fusion model (stride16: 10x10 at 160 px)")
    ap.add_argument("--infonce-weight", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: the small fusion model gains nothing from more, and on a "
                         "shared CPU extra OpenMP threads made steps 30x slower; 0 = torch default)")
    a = ap.parse_args(argv)
    out = Path(a.out).expanduser() if a.out else model_dir() / "embedded"
    if (out / "config.json").is_file() and not a.force:
        print(f"pretrained embedded base already at {out} (use --force to rebuild)")
        m = out / "pretrain_metrics.json"
        if m.is_file():
            print(format_report(json.loads(m.read_text())["heldout"]))
        return 0
    if not 0.0 <= a.rare_keep <= 1.0:
        ap.error("--rare-keep must be in [0, 1]")
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if a.backend == "mujoco":
        os.environ.setdefault("MUJOCO_GL", "egl")
    pretrain(out, minutes=a.minutes, n_train=a.images, n_test=a.test_images, image_size=a.image_size, seed=a.seed,
             rare_keep=a.rare_keep, backend=a.backend, image_stage=a.image_stage, infonce_weight=a.infonce_weight)
    return 0
