"""Fit ``depth_centre.CentreSettings`` on calibration renders (scene seeds no training or test set uses):

    python -m rls3_ros.vlm.depth_centre_fit [--n 300] [--sizes 160 224] [--out runs/depth_centre_fit.json]

Renders ``render_corpus(n, CALIBRATION_SEED, size)`` with the renderer's depth at each size; for every
object a relation names, its TRUE box (the model-independent part of the method) and its true 3-D
centre (scene state, camera optical frame). Grid search over the inner fraction, the cluster gap and
share and the surface percentile; for each, the surface -> centre offset (``offset_m`` +
``offset_per_width`` * metric width) by least squares on the along-ray distance to the centre. The
settings with the lowest median 3-D error (all sizes pooled) are printed (and written with --out);
they are the defaults of ``CentreSettings``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from rls3_ros.vlm import depth_centre as D
from rls3_ros.vlm import grounding as G

GRID = {"inner": (0.5, 0.7, 0.9), "cluster_gap_m": (0.05, 0.1, 0.2), "min_cluster_share": (0.1, 0.25),
        "percentile": (10.0, 25.0, 50.0), "centroid_margin_m": (0.0, 0.1)}


def calibration_objects(items) -> List[Tuple[np.ndarray, G.Intrinsics, Tuple[float, ...], np.ndarray]]:
    """(depth, intrinsics, true box, true centre [camera frame]) of every object a relation names."""
    from rls3_ros.vlm.served_eval import intrinsics, object_centre

    out = []
    for s, depth in items:
        named = {r.subject_id for r in s.relations} | {r.reference_id for r in s.relations}
        for o in s.scene.objects:
            x0, y0, x1, y1 = o.bbox
            if o.id in named and x1 > x0 and y1 > y0:
                out.append((depth, intrinsics(s.scene), tuple(float(v) for v in o.bbox),
                            np.asarray(object_centre(s.scene, o))))
    return out


def fit_offset(objs, settings: D.CentreSettings) -> Tuple[D.CentreSettings, float]:
    """``settings`` with the least-squares offset for its surface rule, and the median 3-D error."""
    rows = []
    for depth, k, box, truth in objs:
        c = D.object_centre(depth, box, ((box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0), k,
                            replace(settings, offset_m=0.0, offset_per_width=0.0))
        if c is None:
            continue
        p = np.asarray(c.point)
        r = p / np.linalg.norm(p)
        rows.append((p, r, truth, (box[2] - box[0]) * c.surface_depth / k.fx))
    if not rows:
        return settings, float("inf")
    along = np.array([(t - p) @ r for p, r, t, _ in rows])
    X = np.stack([np.ones(len(rows)), np.array([w for *_, w in rows])], 1)
    (b, a), *_ = np.linalg.lstsq(X, along, rcond=None)
    errs = [np.linalg.norm(p + (b + a * w) * r - t) for p, r, t, w in rows]
    return replace(settings, offset_m=round(float(b), 4), offset_per_width=round(float(a), 4)), float(np.median(errs))


def fit(objs) -> Tuple[D.CentreSettings, float, List[Dict[str, Any]]]:
    """The grid's best settings, their median error [m] and every candidate's."""
    tried = []
    for vals in itertools.product(*GRID.values()):
        s, err = fit_offset(objs, replace(D.DEFAULT_CENTRE, **dict(zip(GRID, vals))))
        tried.append({**s.to_dict(), "median_error_m": round(err, 4)})
    best = min(tried, key=lambda t: t["median_error_m"])
    settings = D.CentreSettings(**{k: v for k, v in best.items() if k != "median_error_m"})
    return settings, best["median_error_m"], tried


def main(argv: Optional[List[str]] = None) -> int:
    from rls3_ros.vlm.served_eval import render_heldout

    p = argparse.ArgumentParser(prog="python -m rls3_ros.vlm.depth_centre_fit", description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=300, help="calibration images per size (default 300)")
    p.add_argument("--sizes", type=int, nargs="+", default=[160, 224])
    p.add_argument("--out", type=Path, default=None, help="write the fit (and every candidate) here as JSON")
    a = p.parse_args(argv)
    objs = []
    for size in a.sizes:
        objs += calibration_objects([(it.sample, it.depth) for it in render_heldout(a.n, D.CALIBRATION_SEED, size)])
    settings, err, tried = fit(objs)
    doc = {"settings": settings.to_dict(), "median_error_m": err, "objects": len(objs), "images_per_size": a.n,
           "sizes": a.sizes, "seed": D.CALIBRATION_SEED, "tried": tried,
           "command": " ".join(["python -m rls3_ros.vlm.depth_centre_fit", *(argv if argv is not None else sys.argv[1:])])}
    if a.out is not None:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"best ({len(objs)} objects, median error {err:.4f} m): {json.dumps(settings.to_dict())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
