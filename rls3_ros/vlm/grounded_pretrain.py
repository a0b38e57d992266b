"""Pretrain the grounded spatial VLM (``rls3_ros.vlm.grounded``) on MuJoCo renders.

Corpus: the same as ``rls3 pretrain`` (``rls3_ros.vlm.pretrain.render_corpus`` / ``imbalance``):
MuJoCo scenes, a reset and random ``place`` moves per scene, captioned by the caption oracle
with its hard negatives; deliberately imbalanced (relations whose terms are only left/right
are all kept, any other relation with probability ``--rare-keep``, default 0.0: the base never
sees a rare term, see models/grounded/README.md). A held-out
set from other scene seeds keeps every relation; the per-term report is on it, with the
multiple-choice chance level (1 / number of candidates).

Training: all parameters of ``GroundedRelationModel`` (frozen EfficientNet features cached
once), AdamW, warm-up + cosine over ``--steps`` optimiser steps (default 600; ``--steps 0``:
over the wall-clock budget ``--minutes`` instead), 1 torch thread.

Run: ``rls3 pretrain`` (defaults = the committed base in models/grounded; ``--out DIR``, ``--force``)
Output: ``config.json``, ``model.safetensors``, ``pretrain_metrics.json`` in ``--out``
(default ``$RLS3_MODEL_DIR/grounded``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from rls3_ros.captions.imbalance import imbalance, term_counts
from rls3_ros.core.scene import Sample
from rls3_ros.vlm.pretrain import evaluation_report, format_report, render_corpus


def _render(n: int, seed: int, image_size: int, backend: str, moves: int, desc: str) -> List[Sample]:
    return render_corpus(n, seed, image_size, backend, moves_per_scene=moves, desc=desc)


def pretrain_grounded(out_dir: Optional[Path] = None, minutes: float = 2.0, n_train: int = 1200, n_test: int = 300,
                      image_size: int = 160, seed: int = 0, rare_keep: float = 0.07, backend: str = "mujoco",
                      moves_per_scene: int = 8, lr: float = 3e-3, batch_size: int = 32, dim: int = 64,
                      hidden: int = 128, grounding_weight: float = 0.5, threads: int = 1, stage: str = "stride16",
                      box_hidden: int = 0, box_weight: float = 1.0, relation_boxes: bool = False,
                      corpus: Optional[Tuple[List[Sample], List[Sample]]] = None, max_steps: int = 1_000_000,
                      log=print) -> Dict[str, object]:
    """Render (or take ``corpus`` = (full train, held-out)), train, evaluate, save to ``out_dir`` (if given)."""
    import torch

    from rls3_ros.vlm.grounded import GroundedConfig, GroundedRelationModel, GroundedVLM, save_model

    torch.set_num_threads(max(1, int(threads)))
    torch.manual_seed(seed)
    t_start = time.monotonic()
    if corpus is None:
        full = _render(n_train, seed, image_size, backend, moves_per_scene, "render train corpus")
        test = _render(n_test, seed + 7919, image_size, backend, moves_per_scene, "render held-out set")
    else:
        full, test = list(corpus[0]), list(corpus[1])
    train = imbalance(full, rare_keep, seed)
    t_render = time.monotonic() - t_start
    log(f"corpus: {len(full)} + {len(test)} images in {t_render:.0f} s; kept {len(train)} training images")
    log(f"train terms (imbalanced): {term_counts(train)}")
    log(f"held-out terms: {term_counts(test)}")

    cfg = GroundedConfig(image_size=image_size, image_stage=stage, dim=dim, hidden=hidden, box_hidden=box_hidden,
                         relation_boxes=relation_boxes)
    model = GroundedRelationModel(cfg)
    vlm = GroundedVLM(model, base_spec="grounded:pretraining", grounding_weight=grounding_weight, seed=seed,
                      box_weight=box_weight)
    if vlm.features.capacity < len(train) + len(test):
        vlm.features.capacity = len(train) + len(test) + 100
    t0 = time.monotonic()
    feats = vlm.features([s.image for s in train])  # float16: each batch is cast in keys_values (half the memory)
    vlm.features([s.image for s in test])
    t_feat = time.monotonic() - t0
    log(f"frozen EfficientNet features for {len(train) + len(test)} images in {t_feat:.0f} s")

    items = vlm.prepare(train)
    params = list(model.parameters())
    for p in params:
        p.requires_grad_(True)
    from tqdm import tqdm

    bar = tqdm(desc="pretrain grounded", unit="step", file=sys.stderr, mininterval=2.0)

    def progress(step, total, loss):
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}", refresh=False)

    t0 = time.monotonic()
    res = vlm.train_steps(feats, items, max_steps, params, lr=lr, batch_size=batch_size, progress=progress,
                          time_budget=max(5.0, minutes * 60.0) if minutes > 0 else 0.0, warmup=50)
    bar.close()
    t_train = time.monotonic() - t0
    for p in params:
        p.requires_grad_(False)
    model.eval()
    log(f"trained {res.steps} steps ({res.samples_used} relations) in {t_train:.0f} s, "
        f"loss {np.mean(res.losses[:20]):.3f} -> {res.final_loss:.3f}")

    t0 = time.monotonic()
    rep_test = evaluation_report(vlm, test)
    rep_train = evaluation_report(vlm, train[: min(len(train), 200)])
    t_eval = time.monotonic() - t0
    log("held-out (other scene seeds, every relation): " + format_report(rep_test, with_loss=True))
    log(f"training-set accuracy (first 200 images): {rep_train['accuracy']:.3f}")
    metrics = {
        "command": " ".join(sys.argv), "seed": seed, "minutes": minutes, "n_train_rendered": len(full),
        "n_train_kept": len(train), "n_test": len(test), "rare_keep": rare_keep, "image_size": image_size,
        "lr": lr, "batch_size": batch_size, "grounding_weight": grounding_weight, "threads": threads,
        "stage": stage, "grid": cfg.grid, "dim": dim, "hidden": hidden, "box_hidden": box_hidden,
        "box_weight": box_weight, "relation_boxes": relation_boxes,
        "train_terms": term_counts(train), "test_terms": term_counts(test),
        "steps": res.steps, "first_loss": float(np.mean(res.losses[:20])) if res.losses else None,
        "final_loss": res.final_loss, "times_s": {"render": t_render, "features": t_feat, "train": t_train,
                                                  "eval": t_eval, "total": time.monotonic() - t_start},
        "held_out": rep_test, "train_accuracy": rep_train["accuracy"],
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    if out_dir is not None:
        path = save_model(model, Path(out_dir), metrics)
        log(f"saved {path}")
    metrics["vlm"] = vlm
    return metrics


def cli_grounded_pretrain(argv: Sequence[str]) -> int:
    from rls3_ros.vlm.model_dirs import default_dirs

    p = argparse.ArgumentParser(prog="rls3 pretrain-grounded", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(default_dirs("grounded")[0]), help="output model directory (default: %(default)s)")
    p.add_argument("--minutes", type=float, default=2.0, help="training wall-clock budget (default: %(default)s)")
    p.add_argument("--steps", type=int, default=600,
                   help="optimiser steps, the schedule follows them (0 = train for --minutes of wall clock instead); a "
                        "step budget makes the result independent of the machine's load (default: %(default)s)")
    p.add_argument("--n-train", type=int, default=1600, help="training images rendered before imbalance")
    p.add_argument("--n-test", type=int, default=300, help="held-out images (other scene seeds)")
    p.add_argument("--image-size", type=int, default=160)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rare-keep", type=float, default=0.0,
                   help="keep probability of relations with a term other than left/right (default: %(default)s)")
    p.add_argument("--backend", default="mujoco", choices=["mujoco", "standin"])
    p.add_argument("--moves-per-scene", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--grounding-weight", type=float, default=0.5, help="box-supervised attention loss weight")
    p.add_argument("--stage", default="stride16", choices=["stride16", "stride8", "stride8+16"],
                   help="frozen EfficientNet-Lite0 feature grid: stride16 (10 x 10 at 160 px), stride8 (20 x 20) or "
                        "stride8+16 (20 x 20, the stride-16 map upsampled beside it) (default: %(default)s)")
    p.add_argument("--dim", type=int, default=64, help="attention / feature width (default: %(default)s)")
    p.add_argument("--hidden", type=int, default=128, help="relation head width (default: %(default)s)")
    p.add_argument("--box-hidden", type=int, default=0,
                   help="box head width; 0 = no box head (a fixed-size box around the attention peak) (default: %(default)s)")
    p.add_argument("--box-weight", type=float, default=1.0, help="box head loss weight (L1 + 1 - GIoU)")
    p.add_argument("--relation-boxes", action="store_true",
                   help="the relation head also sees both objects' predicted boxes (needs --box-hidden > 0)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared CPU)")
    p.add_argument("--force", action="store_true", help="rebuild even if --out already holds a model")
    a = p.parse_args(list(argv))
    out = Path(a.out)
    if (out / "config.json").is_file() and not a.force:
        print(f"grounded model already in {out} (use --force to rebuild)")
        return 0
    if a.steps < 0:
        p.error("--steps must be >= 0")
    for name, v in (("--minutes", a.minutes), ("--n-train", a.n_train), ("--n-test", a.n_test), ("--lr", a.lr)):
        if v <= 0:
            p.error(f"{name} must be > 0")
    if not 0 <= a.rare_keep <= 1:
        p.error("--rare-keep must be in [0, 1]")
    from rls3_ros.vlm.grounded import GroundedConfig

    try:  # the configuration's own checks, before minutes of rendering
        GroundedConfig(image_size=a.image_size, image_stage=a.stage, box_hidden=a.box_hidden,
                       relation_boxes=a.relation_boxes)
    except ValueError as e:
        p.error(str(e))
    # with --steps the learning-rate schedule follows the steps, not the clock
    pretrain_grounded(out, minutes=0.0 if a.steps > 0 else a.minutes, n_train=a.n_train, n_test=a.n_test,
                      image_size=a.image_size,
                      seed=a.seed, rare_keep=a.rare_keep, backend=a.backend, moves_per_scene=a.moves_per_scene,
                      lr=a.lr, batch_size=a.batch_size, grounding_weight=a.grounding_weight, threads=a.threads,
                      stage=a.stage, dim=a.dim, hidden=a.hidden, box_hidden=a.box_hidden, box_weight=a.box_weight,
                      relation_boxes=a.relation_boxes, max_steps=a.steps if a.steps > 0 else 1_000_000)
    return 0


if __name__ == "__main__":
    sys.exit(cli_grounded_pretrain(sys.argv[1:]))
