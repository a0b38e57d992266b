"""Where-exact of the served model by each relation's distance from the caption oracle's nearest
decision boundary (docs/results.md, "Why the image alone stops near 0.75").

    .venv/bin/python tools/where_margins.py [--n 1000] [--size 160] [--model grounded:serving]

Held-out images: ``render_corpus(n, seed 7919, size)`` (the set of ``rls3 bench where`` / ``served``);
answers as the ``spatial_query`` node gives them from the image alone (``where_metric.where_pairs``);
margin = ``CaptionOracle.boundary_margin_deg`` of the true pair geometry (infinite for on/under).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np


def main(argv=None) -> int:
    import torch

    from rls3_ros.captions.oracle import CaptionOracle, pair_geometry
    from rls3_ros.vlm.answers import load_model
    from rls3_ros.vlm.pretrain import render_corpus
    from rls3_ros.vlm.where_metric import where_pairs

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--size", type=int, default=160)
    p.add_argument("--model", default="grounded:serving")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    model, oracle = load_model(a.model), CaptionOracle()
    samples = render_corpus(a.n, 7919, a.size, "mujoco", desc="held-out")
    ok = np.array([set(t) == set(ans) for t, ans in where_pairs(model, samples)])
    margins = []
    for s in samples:
        objs = {o.id: o for o in s.scene.objects}
        for r in s.relations:
            sub, ref = objs[r.subject_id], objs[r.reference_id]
            margins.append(oracle.boundary_margin_deg(pair_geometry(s.scene, sub, ref), r.terms,
                                                      oracle.vertically_separated(sub, ref)))
    m = np.array(margins)
    print("| margin to the nearest boundary | share of relations | where-exact | share of all errors |")
    print("| --- | --- | --- | --- |")
    for lo, hi, label in ((0, 2, "< 2°"), (2, 5, "2-5°"), (5, 10, "5-10°"), (10, 20, "10-20°"),
                          (20, np.inf, ">= 20°"), (np.inf, None, "on/under (no angular boundary)")):
        sel = np.isinf(m) if hi is None else (m >= lo) & (m < hi)
        if sel.any():
            print(f"| {label} | {sel.mean():.2f} | {ok[sel].mean():.2f} | {(~ok & sel).sum() / max(1, (~ok).sum()):.2f} |")
    print(f"\n{len(ok)} relations, where-exact {ok.mean():.3f}, model {a.model}, {a.n} images at {a.size} px")
    return 0


if __name__ == "__main__":
    sys.exit(main())
