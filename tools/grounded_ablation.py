"""Small-scale comparison of grounded model configurations (issue 27: box head, feature grid).

    # one configuration: train on the pretraining corpus (seed 0), measure on the held-out set (seed 7919)
    .venv/bin/python tools/grounded_ablation.py run NAME [--stage stride8+16] [--box-hidden 64] [--n-train 2400]
        [--steps 1500] [--dim 64] [--hidden 128] [--box-weight 1.0] [--cache DIR] [--out DIR]
    # the table of every run in DIR -> results/grounded_ablation.json and .md
    .venv/bin/python tools/grounded_ablation.py table [--out DIR]

Every run: ``pretrain_grounded`` with rare-keep 1.0 on ``render_corpus(n_train, 0, 160)`` (cached as a
pickle in ``--cache`` so configurations share the same images), then on the held-out renders
``render_corpus(300, 7919, 160 | 224)`` (the set of ``rls3 bench where`` / ``rls3 bench served``):
multiple choice, where-exact and per term (``where_metric``, answered as the ``spatial_query`` node
answers), pointing (attention peak and, with a box head, the box centre inside the true box) and the
share of located boxes with IoU >= 0.5 (and of the fixed-size box around the peak, for comparison).
No locator calibration is fitted here (default settings), so no ECE.
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def corpus(n: int, seed: int, size: int, cache: Path):
    from rls3_ros.vlm.pretrain import render_corpus

    path = cache / f"corpus_{n}_{seed}_{size}.pkl"
    if path.is_file():
        return pickle.loads(path.read_bytes())
    s = render_corpus(n, seed, size, "mujoco", moves_per_scene=8, desc=path.name)
    cache.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(s, protocol=4))
    return s


def geometry(vlm, samples):
    """Pointing (peak, box centre), IoU >= 0.5 share of the located and of the fixed-size boxes."""
    from rls3_ros.vlm import grounding as G
    from rls3_ros.vlm.locator_fit import located_objects

    by = {}
    for i, o in located_objects(samples):
        by.setdefault(i, []).append(o)
    hits = {"peak": [], "box": []}
    ious, fixed = [], []
    for i, objs in by.items():
        im = samples[i].image
        h, w = im.shape[:2]
        desc = [o.description for o in objs]
        for src in ("peak", "box"):
            vlm.point_source = src
            for o, loc in zip(objs, vlm.locate_many(im, desc)):
                hits[src].append(G.point_in_box(loc.point, o.bbox))
                if src == "peak":
                    ious.append(G.box_iou(loc.box, o.bbox))
        for o, a in zip(objs, vlm.attention_maps(im, desc)):
            fixed.append(G.box_iou(G.locate_in_attention(a, vlm.config.grid, w, h).box, o.bbox))
    vlm.point_source = "peak"
    return {"pointing_peak": float(np.mean(hits["peak"])),
            "pointing_box": float(np.mean(hits["box"])) if vlm.config.box_hidden else None,
            "iou50": float(np.mean(np.array(ious) >= 0.5)), "iou_mean": float(np.mean(ious)),
            "iou50_fixed": float(np.mean(np.array(fixed) >= 0.5)), "n_objects": len(ious)}


def run(a) -> int:
    import torch

    from rls3_ros.vlm.grounded_pretrain import pretrain_grounded
    from rls3_ros.vlm.where_metric import score_answers, where_pairs

    torch.set_num_threads(1)
    train = corpus(a.n_train, 0, a.image_size, a.cache)
    test = {size: corpus(300, 7919, size, a.cache) for size in (160, 224)}
    t0 = time.monotonic()
    m = pretrain_grounded(None, minutes=0.0, n_train=len(train), n_test=len(test[160]), seed=0, rare_keep=1.0,
                          corpus=(train, test[a.image_size] if a.image_size in test else test[160]),
                          image_size=a.image_size, max_steps=a.steps, dim=a.dim, hidden=a.hidden, stage=a.stage,
                          box_hidden=a.box_hidden, box_weight=a.box_weight,
                          relation_boxes=a.relation_boxes, log=lambda *x: None)
    vlm = m.pop("vlm")
    res = {"name": a.name, "args": {k: v for k, v in vars(a).items() if k not in ("cache", "out", "func")},
           "mc": m["held_out"]["accuracy"], "times": m["times_s"], "params": m["parameters"]}
    for size, samples in test.items():
        w = score_answers(where_pairs(vlm, samples))
        res[str(size)] = {"mc": vlm.evaluate(samples).accuracy, "where_exact": w["exact"],
                          "per_term": {t: round(d["accuracy"], 3) for t, d in w["per_term"].items()},
                          **geometry(vlm, samples)}
    res["total_s"] = time.monotonic() - t0
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / f"res_{a.name}.json").write_text(json.dumps(res, indent=1))
    print(json.dumps(res))
    return 0


def table(a) -> int:
    runs = [json.loads(p.read_text()) for p in sorted(a.out.glob("res_*.json"))]
    runs = [r for r in runs if r["name"] in a.names] if a.names else runs
    lines = ["| run | stage | box head | n train | steps | size | MC | where-exact | weakest term | pointing peak / box "
             "| IoU>=0.5 (fixed box) |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in runs:
        g = dict(r["args"])
        g.setdefault("n_train", 2400)  # runs of the tool's first version recorded the corpus file instead
        for size in ("160", "224"):
            d = dict(r[size])
            d.setdefault("mc", r["mc"])  # ... and the 160 px multiple choice only as the pretraining held-out figure
            worst = min(d["per_term"].items(), key=lambda kv: kv[1])
            pb = "–" if d["pointing_box"] is None else f"{d['pointing_box']:.3f}"
            lines.append(f"| {r['name']} | {g['stage']} | {g['box_hidden'] or '–'} | {g['n_train']} | {g['steps']} | {size} "
                         f"| {d['mc']:.3f} | {d['where_exact']:.3f} | {worst[0]} {worst[1]:.3f} | "
                         f"{d['pointing_peak']:.3f} / {pb} | {d['iou50']:.3f} ({d['iou50_fixed']:.3f}) |")
    n = runs[0]["160"]["n_objects"] if runs else 0
    cmds = []
    for r in runs:
        g = r["args"]
        opts = " ".join(f"--{k.replace('_', '-')} {g[k]}" for k in ("stage", "box_hidden", "dim", "hidden", "steps")
                        if k in g)
        if g.get("relation_boxes"):
            opts += " --relation-boxes"
        if g.get("image_size", 160) != 160:
            opts += f" --image-size {g['image_size']}"
        first = " (the tool's first version: same training and measures, corpus read from a pickle)" if "train" in g else ""
        cmds.append(f"- {r['name']}: `tools/grounded_ablation.py run {r['name']} {opts}`{first}")
    md = ("# Grounded model configurations at small scale (issue 27)\n\n<!-- Written by tools/grounded_ablation.py "
          "table: do not edit. -->\n\nSame seed, same corpus, same held-out set (300 images of seed 7919 at 160 and "
          f"224 px, {n} located objects); multiple choice and where-exact over every held-out relation; "
          "pointing = the located point inside the true box; IoU>=0.5 = share of located boxes (in brackets: the "
          "fixed-size box around the attention peak, default locator settings).\n\n" + "\n".join(lines) + "\n\n"
          + "\n".join(cmds) + "\n")
    out = ROOT / "results" / "grounded_ablation"
    out.with_suffix(".json").write_text(json.dumps(runs, indent=1))
    out.with_suffix(".md").write_text(md)
    print(md)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(required=True)
    r = sub.add_parser("run")
    r.add_argument("name")
    r.add_argument("--stage", default="stride16", choices=["stride16", "stride8", "stride8+16"])
    r.add_argument("--box-hidden", type=int, default=0)
    r.add_argument("--box-weight", type=float, default=1.0)
    r.add_argument("--relation-boxes", action="store_true")
    r.add_argument("--image-size", type=int, default=160, help="the model's input size; the corpus is rendered at it")
    r.add_argument("--dim", type=int, default=64)
    r.add_argument("--hidden", type=int, default=128)
    r.add_argument("--n-train", type=int, default=2400)
    r.add_argument("--steps", type=int, default=1500)
    r.add_argument("--cache", type=Path, default=ROOT / "runs" / "ablation_cache")
    r.add_argument("--out", type=Path, default=ROOT / "runs" / "ablation")
    r.set_defaults(func=run)
    t = sub.add_parser("table")
    t.add_argument("--out", type=Path, default=ROOT / "runs" / "ablation")
    t.add_argument("names", nargs="*", help="runs to include (default: all in --out)")
    t.set_defaults(func=table)
    a = p.parse_args(argv)
    return a.func(a)


if __name__ == "__main__":
    sys.exit(main())
