"""'Where' answers of the grounded bases, scored the way a robot sees them.

    rls3 bench where [--n 300] [--models grounded grounded:serving] [--out results/where_accuracy.json]

Images: the pretraining held-out set (``render_corpus(n, seed 7919, 160 px)``: MuJoCo scenes of
other seeds than any training image, every relation the caption oracle states). For every
relation the model is asked "where is <subject> relative to <reference>?" exactly as the
``spatial_query`` node answers it (``rls3_ros.vlm.answers.answer_query``: per axis the term
with probability >= 0.5). Scores per model:

- ``exact``: the answer's term set equals the oracle's;
- ``per_term[t]``: among relations whose truth contains t, the fraction answered with t;
- ``per_axis[a]``: the answer's term on axis a (vertical / depth / lateral, "none" included)
  equals the truth's.

This differs from the multiple-choice accuracy of ``pretrain_metrics.json`` (true caption among
its hard negatives): an open answer must get every axis right at once.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import List, Optional

from rls3_ros.vlm.where_metric import score_answers, where_pairs


def cli_bench_where(argv: Optional[List[str]] = None) -> int:
    import torch

    from rls3_ros.vlm.answers import load_model
    from rls3_ros.vlm.pretrain import render_corpus

    p = argparse.ArgumentParser(prog="rls3 bench where", description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=300, help="held-out images (default 300 = the whole set)")
    p.add_argument("--models", nargs="+", default=["grounded", "grounded:serving"])
    p.add_argument("--out", default="results/where_accuracy.json")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.monotonic()
    samples = render_corpus(a.n, 7919, 160, "mujoco", moves_per_scene=8, desc="held-out images")
    t_render = time.monotonic() - t0
    res = {"images": len(samples), "relations": sum(len(s.relations) for s in samples),
           "held_out": "render_corpus(n, seed 7919, 160 px): the pretraining held-out set", "models": {}}
    for spec in a.models:
        t = time.monotonic()
        model = load_model(spec)
        sc = score_answers(where_pairs(model, samples))
        sc["seconds"] = round(time.monotonic() - t, 1)
        res["models"][spec] = sc
        print(f"{spec}: exact {sc['exact']:.3f} (n={sc['n']}); per axis "
              + ", ".join(f"{k} {v:.3f}" for k, v in sc["per_axis"].items()) + "; per term "
              + ", ".join(f"{t} {d['accuracy']:.2f}" for t, d in sc["per_term"].items()))
    res["render_s"] = round(t_render, 1)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {a.out}")
    return 0
